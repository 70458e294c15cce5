"""Annotation store at connectome scale: import 1M neurons + 10M synapses, time the tables' queries.

For SQLite (a file in a temporary directory) and PostgreSQL (a fresh schema, dropped at
the end) this prints:

- import time of the whole batch through ``AnnotationStore.import_batch`` (one transaction);
- synapses of one neuron, ``store.synapses(n)``, p50/p99 over random neurons (target 5 ms),
  and, for information, over the busiest 1% of neurons;
- synapses in a proofreading view, ``store.synapses_in_box(box)``, 4 x 4 um x 3 sections at
  random places (target 10 ms), and a zoomed-out 12 x 12 um x 3 sections box (information);
- opening the neuron table: ``count_neurons()`` + ``neuron_ids(order_by=...)`` +
  ``neurons(ids[:256])``, by id, by ``n_post`` descending and by ``name`` (target 1 s);
- partners of a neuron, ``store.partners(n)`` (no target was set; 10 ms assumed).

The data: neurons at random places in a 40 x 40 x 40 um volume (z in 40 nm sections), ids
above 2**53 like CAVE root ids, 30 % with a name and type; each synapse's presynaptic and
postsynaptic neurons drawn with Pareto-distributed weights (a few neurons have thousands
of synapses, most have a handful), placed around its presynaptic neuron (sd 6 um).

Run: ``python bench/annotations.py [--neurons 1000000] [--synapses 10000000]
[--queries 1000] [--skip-postgres] [--profile]``. PostgreSQL is
``$NAPARI_CONNECTO_TEST_POSTGRES`` (default: the role and database ``.ci/install`` makes).
Other processes on the machine (test suites) inflate the figures; the load average is
printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg

from napari_connecto.annotations import AnnotationStore, ImportBatch
from napari_connecto.annotations.frames import NEURON_COLUMNS, SYNAPSE_COLUMNS
from napari_connecto.geometry import BBox

VOLUME_NM = np.array([40_000.0, 40_000.0, 40_000.0])  # z, y, x
SECTION_NM = 40.0
ID_BASE = 720575940_600000000  # CAVE-like root ids, above 2**53
SPREAD_NM = 6_000.0
VIEW_NM = (3 * SECTION_NM, 4_000.0, 4_000.0)
WIDE_VIEW_NM = (3 * SECTION_NM, 12_000.0, 12_000.0)
PAGE = 256
TYPES = np.array(["pyramidal", "basket", "chandelier", "martinotti", "stellate", "glia",
                  "bipolar", "neurogliaform", "double_bouquet", "unknown"])  # fmt: skip
POSTGRES_DEFAULT = "postgresql://connecto:connecto@127.0.0.1:5432/connecto_test"

TARGET_SYNAPSES_MS = 5.0
TARGET_BOX_MS = 10.0
TARGET_TABLE_S = 1.0
TARGET_PARTNERS_MS = 10.0  # not set by the issue; assumed


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured line of the report."""

    name: str
    p50: float
    p99: float | None
    unit: str
    target: float | None
    rows: str = ""

    def verdict(self) -> str:
        if self.target is None:
            return "info"
        worst = self.p99 if self.p99 is not None else self.p50
        return "PASS" if worst <= self.target else "MISS"


# -- data ------------------------------------------------------------------------------
def generate(n_neurons: int, n_synapses: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalised neuron and synapse frames (see the module docstring)."""
    rng = np.random.default_rng(seed)
    ids = ID_BASE + np.sort(rng.choice(8 * n_neurons, n_neurons, replace=False)).astype(np.uint64)
    centres = rng.random((n_neurons, 3)) * VOLUME_NM
    centres[:, 0] = np.floor(centres[:, 0] / SECTION_NM) * SECTION_NM
    named = rng.random(n_neurons) < 0.3
    types = np.where(named, TYPES[rng.integers(0, len(TYPES), n_neurons)], "").astype(object)
    names = np.full(n_neurons, "", dtype=object)
    names[named] = [f"{t}_{i}" for t, i in zip(types[named], np.flatnonzero(named), strict=True)]
    neurons = pd.DataFrame({"id": ids, "name": names, "type": types,
                            "status": np.full(n_neurons, "", dtype=object),
                            "notes": np.full(n_neurons, "", dtype=object),
                            "z": centres[:, 0], "y": centres[:, 1], "x": centres[:, 2]})  # fmt: skip

    out_weight = rng.pareto(1.3, n_neurons) + 1.0
    in_weight = out_weight * rng.lognormal(0.0, 0.5, n_neurons)
    pre = _weighted(rng, out_weight, n_synapses)
    post = _weighted(rng, in_weight, n_synapses)
    centre = np.mod(centres[pre] + rng.normal(0.0, SPREAD_NM, (n_synapses, 3)), VOLUME_NM)
    centre[:, 0] = np.floor(centre[:, 0] / SECTION_NM) * SECTION_NM
    centre[:, 1:] = np.round(centre[:, 1:])
    offset = rng.normal(0.0, 1.0, (n_synapses, 3))
    offset *= 30.0 / np.linalg.norm(offset, axis=1, keepdims=True)
    offset[:, 0] = np.round(offset[:, 0] / SECTION_NM) * SECTION_NM
    now = time.time()
    data = {"id": np.arange(1, n_synapses + 1, dtype=np.uint64),
            "pre_id": ids[pre], "post_id": ids[post]}  # fmt: skip
    for i, axis in enumerate("zyx"):
        data[f"pre_{axis}"] = centre[:, i] + offset[:, i]
    for i, axis in enumerate("zyx"):
        data[f"post_{axis}"] = centre[:, i] - offset[:, i]
    for i, axis in enumerate("zyx"):
        data[axis] = centre[:, i]
    data["confidence"] = rng.random(n_synapses)
    data["status"] = np.full(n_synapses, "unreviewed", dtype=object)
    data["reviewer"] = np.full(n_synapses, "", dtype=object)
    data["created"] = np.full(n_synapses, now)
    data["updated"] = np.full(n_synapses, now)
    synapses = pd.DataFrame(data)
    assert tuple(synapses.columns) == SYNAPSE_COLUMNS
    assert tuple(neurons.columns) == NEURON_COLUMNS
    return neurons, synapses


def _weighted(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with probability proportional to ``weights``."""
    cumulative = np.cumsum(weights)
    return np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")


# -- stores ----------------------------------------------------------------------------
@contextlib.contextmanager
def sqlite_target(keep: bool) -> Iterator[str]:
    """A SQLite file in a temporary directory, removed afterwards unless ``keep``."""
    if keep:
        folder = tempfile.mkdtemp(prefix="bench_annotations_")
        print(f"[sqlite] keeping the store: {folder}/annotations.db", flush=True)
        yield str(Path(folder) / "annotations.db")
        return
    with tempfile.TemporaryDirectory(prefix="bench_annotations_") as folder:
        yield str(Path(folder) / "annotations.db")


@contextlib.contextmanager
def postgres_target(server: str, keep: bool) -> Iterator[str]:
    """A URL into a fresh schema of ``server``, dropped afterwards unless ``keep``."""
    plain = server.replace("postgresql+psycopg://", "postgresql://")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    if keep:
        print(f"[postgresql] keeping the store: schema {name} (DROP SCHEMA {name} CASCADE)")
    glue = "&" if "?" in server else "?"
    try:
        yield f"{server}{glue}options={quote(f'-csearch_path={name}', safe='')}"
    finally:
        if not keep:
            with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def store_size(store: AnnotationStore, target: str) -> str:
    if store.dialect == "sqlite":
        size = sum(p.stat().st_size for p in Path(target).parent.glob("annotations.db*"))
    else:
        with store._engine.connect() as conn:  # a benchmark may peek
            size = conn.exec_driver_sql(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            ).scalar()
    return f"{int(size) / 2**30:.2f} GiB"


# -- measures --------------------------------------------------------------------------
def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


BUDGET_S = 60.0
"""Time given to one figure's repeats; a slow query is sampled fewer times (and says so)."""


def percentiles(
    name: str, actions: list[Callable[[], object]], target: float | None, count: Callable
) -> Figure:
    for action in actions[:3]:  # warm the connection pool and the statement caches
        action()
    times, rows = [], []
    spent = 0.0
    for action in actions:
        seconds, result = timed(action)
        times.append(seconds * 1000)
        rows.append(count(result))
        spent += seconds
        if spent > BUDGET_S:
            break
    p50, p99 = np.percentile(times, [50, 99])
    return progress(Figure(name, float(p50), float(p99), "ms", target,
                           f"n={len(times)}, rows mean {np.mean(rows):.0f}, max {max(rows)}"))  # fmt: skip


def progress(figure: Figure) -> Figure:
    """Print a figure as soon as it is measured (a full run takes a while)."""
    print(
        f"  ... {figure.name}: {figure.p50:.3f} / {figure.p99 or 0:.3f} {figure.unit}", flush=True
    )
    return figure


def open_table(store: AnnotationStore, order_by: str, descending: bool) -> tuple[int, int]:
    total = store.count_neurons()
    ids = store.neuron_ids(order_by=order_by, descending=descending)
    page = store.neurons(ids[:PAGE])
    assert len(page) == min(PAGE, total) and len(ids) == total
    return total, len(page)


def table_figure(store: AnnotationStore, label: str, order_by: str, descending: bool) -> Figure:
    times = [timed(lambda: open_table(store, order_by, descending))[0] for _ in range(3)]
    return progress(Figure(f"neuron table open, {label}", times[0], float(np.median(times[1:])),
                           "s", TARGET_TABLE_S, "first / median of 2 more"))  # fmt: skip


def raw_sql(store: AnnotationStore, where: object, *, order: bool) -> str:
    """The store's own query for ``where`` as literal SQL, for the raw-driver baseline."""
    from sqlalchemy import select

    from napari_connecto.annotations import schema

    query = select(*schema.synapses.c).where(where)
    if order:
        query = query.order_by(schema.synapses.c.id)
    dialect = store._reader.dialect
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def raw_runner(store: AnnotationStore) -> Callable[[str], list]:
    """Execute SQL on one raw DBAPI connection and fetch tuples: the database's floor."""
    connection = store._reader.raw_connection()
    cursor = connection.cursor()

    def run(sql: str) -> list:
        cursor.execute(sql)
        return cursor.fetchall()

    return run


def measure(
    store: AnnotationStore, neurons: pd.DataFrame, synapses: pd.DataFrame, queries: int, seed: int
) -> list[Figure]:
    rng = np.random.default_rng(seed + 1)
    ids = neurons["id"].to_numpy()
    picked = [int(i) for i in rng.choice(ids, min(queries, len(ids)), replace=False)]
    counts = pd.concat([synapses["pre_id"], synapses["post_id"]]).value_counts()
    busiest = counts.index.to_numpy()[: max(1, len(ids) // 100)]
    busy = [
        int(i) for i in rng.choice(busiest, min(queries // 5 or 1, len(busiest)), replace=False)
    ]
    from napari_connecto.annotations import queries as store_queries

    raw = raw_runner(store)
    neuron_sql = [raw_sql(store, store_queries.synapse_clause(n), order=True) for n in picked]
    figures = [
        percentiles("synapses(n), random neurons", [lambda n=n: store.synapses(n) for n in picked],
                    TARGET_SYNAPSES_MS, len),
        percentiles("  baseline: same SQL, raw driver, tuples", [lambda q=q: raw(q) for q in neuron_sql],
                    None, len),
        percentiles("synapses(n), busiest 1% neurons", [lambda n=n: store.synapses(n) for n in busy],
                    None, len),
    ]  # fmt: skip
    for size, target, label in ((VIEW_NM, TARGET_BOX_MS, "4x4 um x 3 sections"),
                                (WIDE_VIEW_NM, None, "12x12 um x 3 sections")):  # fmt: skip
        boxes = [_box(rng, size) for _ in range(queries)]
        figures.append(percentiles(f"synapses_in_box, {label}",
                                   [lambda b=b: store.synapses_in_box(b) for b in boxes], target, len))  # fmt: skip
        box_sql = [
            raw_sql(
                store, store_queries.synapse_clause(None, include_self=True, bbox=b), order=False
            )
            for b in boxes
        ]
        figures.append(percentiles("  baseline: same SQL, raw driver, tuples",
                                   [lambda q=q: raw(q) for q in box_sql], None, len))  # fmt: skip
    figures.append(table_figure(store, "by id", "id", False))
    figures.append(table_figure(store, "by n_post desc", "n_post", True))
    figures.append(table_figure(store, "by name", "name", False))
    figures.append(percentiles("partners(n), random neurons",
                               [lambda n=n: store.partners(n) for n in picked[: max(1, queries // 2)]],
                               TARGET_PARTNERS_MS, len))  # fmt: skip
    return figures


def _box(rng: np.random.Generator, size: tuple[float, float, float]) -> BBox:
    extent = np.array(size)
    start = rng.random(3) * (VOLUME_NM - extent)
    start[0] = np.floor(start[0] / SECTION_NM) * SECTION_NM
    return BBox.of(start, start + extent)


def run_backend(
    label: str, target: str, neurons: pd.DataFrame, synapses: pd.DataFrame, args: argparse.Namespace
) -> list[Figure]:
    with AnnotationStore.open(target) as store:
        batch = ImportBatch("bench", neurons=neurons, synapses=synapses)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        seconds, summary = timed(lambda: store.import_batch(batch))
        if profiler:
            profiler.disable()
            _print_profile(label, profiler)
        print(f"[{label}] imported in {seconds:.1f} s: {summary}", flush=True)
        figures = [Figure(f"import {len(neurons):,} neurons + {len(synapses):,} synapses",
                          seconds, None, "s", None, store_size(store, target))]  # fmt: skip
        figures += measure(store, neurons, synapses, args.queries, args.seed)
        extra = synapses.iloc[: max(1, len(synapses) // 100)].copy()
        extra["id"] = extra["id"] + np.uint64(len(synapses))
        seconds, _ = timed(lambda: store.add_synapses(extra))
        figures.append(Figure(f"import {len(extra):,} more synapses into the full store",
                              seconds, None, "s", None))  # fmt: skip
        seconds, again = timed(lambda: store.add_synapses(extra))
        figures.append(Figure(f"re-import of the same {len(extra):,} (all unchanged)",
                              seconds, None, "s", None, f"unchanged {again.synapses_unchanged:,}"))  # fmt: skip
    return figures


def _print_profile(label: str, profiler: cProfile.Profile) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    print(f"[{label}] import profile (cumulative):\n{out.getvalue()}", flush=True)


def report(results: dict[str, list[Figure]]) -> None:
    head = f"{'backend':<11}{'figure':<52}{'p50 / first':>13}{'p99 / median':>14}{'target':>10}  result  rows"
    print(head)
    print("-" * len(head))
    for backend, figures in results.items():
        for f in figures:
            p99 = "" if f.p99 is None else f"{f.p99:.1f} {f.unit}"
            if f.unit == "s" and f.p99 is not None:
                p99 = f"{f.p99:.3f} s"
            p50 = f"{f.p50:.3f} s" if f.unit == "s" and f.target else f"{f.p50:.1f} {f.unit}"
            target = "" if f.target is None else f"<= {f.target:g} {f.unit}"
            print(
                f"{backend:<11}{f.name:<52}{p50:>13}{p99:>14}{target:>10}  {f.verdict():<6}  {f.rows}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=1_000_000)
    parser.add_argument("--synapses", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=1000, help="random neurons/boxes per figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the import")
    parser.add_argument("--keep", action="store_true", help="keep the stores (to EXPLAIN)")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    seconds, (neurons, synapses) = timed(lambda: generate(args.neurons, args.synapses, args.seed))
    print(f"generated {len(neurons):,} neurons and {len(synapses):,} synapses in {seconds:.1f} s",
          flush=True)  # fmt: skip
    results: dict[str, list[Figure]] = {}
    if not args.skip_sqlite:
        with sqlite_target(args.keep) as target:
            results["sqlite"] = run_backend("sqlite", target, neurons, synapses, args)
    if not args.skip_postgres:
        server = os.environ.get("NAPARI_CONNECTO_TEST_POSTGRES", "").strip() or POSTGRES_DEFAULT
        with postgres_target(server, args.keep) as target:
            results["postgresql"] = run_backend("postgresql", target, neurons, synapses, args)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    report(results)


if __name__ == "__main__":
    main()
