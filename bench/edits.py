"""Proofreading edits: latency to the journal commit, and voxel write-back throughput.

Latency (target p99 <= 20 ms): the time a :class:`Proofreader` call takes to return, which
it does right after the edit's journal commit (voxels are written back on the worker
thread, ``background=True``, as in the viewer). Measured on SQLite (a file in a temporary
folder) and on PostgreSQL (a fresh schema, dropped at the end; skipped with a note if the
server does not answer), over ``--edits`` edits of each kind on a zarr segmentation:

- ``paint stroke``: ``pr.paint(start, disk, label)``, a one-section disk of radius 8 px at
  a random place (its *before* voxels are read from the volume with the pending
  write-backs laid over them), two figures: ``write-back idle`` (the previous stroke's
  write-back finished, untimed, before the stroke) and ``back-to-back`` (strokes as fast
  as the call returns, write-back running meanwhile);
- ``canvas stroke``: what the viewer's paint canvas does per stroke, ``pr.paint_patch``
  of a patch it built from its own copy of the voxels, back-to-back;
- ``merge``: ``pr.merge(keep, absorb)`` of two random fragments' segments;
- ``synapse edit``: ``add_synapse``, ``set_status`` and ``move_synapse`` in turn.

Write-back throughput, per format (zarr v2 and N5 through tensorstore, HDF5 through
copy-on-write): ``--patches`` disk patches are committed to the journal (pending) and then
written by ``WriteBack.run_pending()`` (journal read, read-modify-write of scale 0, coarser
scales recomputed, row marked done), with and without the pyramid update. The baseline,
``raw``, writes the same boxes (the patches' *after* voxels) straight into scale 0 with
tensorstore (h5py for HDF5, in place): no journal, no read-back, no pyramid. MB/s counts
the scale-0 chunks the patches touch (decoded bytes, 10^6), chunks/s the same chunks;
``ratio`` is write-back time over raw time (lower is better).

Run: ``python bench/edits.py [--edits 500] [--patches 200] [--shape 64,512,512]
[--formats zarr,n5,hdf5] [--skip-postgres] [--stores sqlite,postgresql]``
(an empty ``--formats`` or ``--stores`` skips that part). PostgreSQL is
``$NAPARI_CONNECTO_TEST_POSTGRES`` (default: the role and database ``.ci/install`` makes).
Other processes on the machine inflate the figures; the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np
import psycopg
import tensorstore as ts

from napari_connecto.annotations import AnnotationStore
from napari_connecto.opening import open_volume
from napari_connecto.proofreading.downsample import mode_downsample
from napari_connecto.proofreading.journal import Journal
from napari_connecto.proofreading.paint import VoxelFrame, paint_record
from napari_connecto.proofreading.patches import VoxelPatch
from napari_connecto.proofreading.proofreader import Proofreader
from napari_connecto.proofreading.voxels import current_voxels
from napari_connecto.proofreading.writeback import WriteBack

POSTGRES_DEFAULT = "postgresql://connecto:connecto@127.0.0.1:5432/connecto_test"
CHUNK = (32, 64, 64)
FACTOR = (1, 2, 2)
LEVELS = 3
RESOLUTION = (40.0, 8.0, 8.0)
BRUSH_RADIUS = 8
TARGET_MS = 20.0


@dataclass(frozen=True, slots=True)
class Latency:
    """One latency line."""

    store: str
    name: str
    times_ms: np.ndarray

    def line(self) -> str:
        p50, p99 = np.percentile(self.times_ms, [50, 99]).tolist()
        top = float(self.times_ms.max())
        verdict = "PASS" if p99 <= TARGET_MS else "MISS"
        return (f"{self.store:<11} {self.name:<36} {len(self.times_ms):>5} {p50:>8.2f} "
                f"{p99:>8.2f} {top:>8.2f}  {verdict}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Throughput:
    """One throughput line."""

    fmt: str
    name: str
    seconds: float
    chunks: int
    chunk_bytes: int
    baseline: float | None

    def line(self) -> str:
        mb = self.chunks * self.chunk_bytes / 1e6
        ratio = f"{self.seconds / self.baseline:6.2f}x" if self.baseline else "   ref"
        return (f"{self.fmt:<6} {self.name:<44} {self.seconds:>8.2f} {mb / self.seconds:>9.1f} "
                f"{self.chunks / self.seconds:>9.1f} {ratio}")  # fmt: skip


# -- data ------------------------------------------------------------------------------
def labels(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Blocky fragments (8 x 16 x 16 voxel cells with random ids, edges jittered)."""
    rng = np.random.default_rng(seed)
    cells = [-(-n // c) + 1 for n, c in zip(shape, (8, 16, 16), strict=True)]
    ids = rng.choice(
        np.arange(1, 50 * np.prod(cells), dtype=np.uint64), np.prod(cells), replace=False
    )
    grid = ids.reshape(cells)
    index = [
        np.clip((np.arange(n) + rng.integers(0, c // 2, n)) // c, 0, k - 1)
        for n, c, k in zip(shape, (8, 16, 16), cells, strict=True)
    ]
    return grid[np.ix_(*index)]


def pyramid(finest: np.ndarray) -> list[np.ndarray]:
    """Mode-downsampled levels, finest first."""
    levels = [finest]
    for _ in range(1, LEVELS):
        levels.append(mode_downsample(levels[-1], FACTOR))
    return levels


def _res(level: int) -> list[float]:
    return [r * f**level for r, f in zip(RESOLUTION, FACTOR, strict=True)]


def write_volume(folder: Path, fmt: str, levels: list[np.ndarray]) -> str:
    """Write the pyramid in ``fmt`` with the reference writer; return the source to open."""
    if fmt == "hdf5":
        path = folder / "seg.h5"
        with h5py.File(path, "w") as h5:
            for k, data in enumerate(levels):
                chunks = tuple(min(c, n) for c, n in zip(CHUNK, data.shape, strict=True))
                ds = h5.create_dataset(f"seg/s{k}", data=data, chunks=chunks, compression="gzip")
                ds.attrs["resolution"] = _res(k)
        return f"{path}/seg"
    path = folder / f"seg.{fmt}"
    for k, data in enumerate(levels):
        store = ts.open(_ts_spec(path, fmt, k, data.shape), create=True, open=True).result()
        store[...] = data.T if fmt == "n5" else data
    if fmt == "n5":
        attrs = {"n5": "2.3.0", "resolution": list(RESOLUTION[::-1]), "units": ["nm"] * 3}
        (path / "attributes.json").write_text(json.dumps(attrs))
    else:
        axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
        sets = [{"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": _res(k)}]}
                for k in range(len(levels))]  # fmt: skip
        ms = [{"version": "0.4", "name": "seg", "axes": axes, "datasets": sets}]
        (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (path / ".zattrs").write_text(json.dumps({"multiscales": ms}))
    return str(path)


def _ts_spec(path: Path, fmt: str, level: int, shape: tuple[int, ...]) -> dict:
    if fmt == "n5":
        meta = {"dimensions": list(shape[::-1]), "blockSize": list(CHUNK[::-1]),
                "dataType": "uint64", "compression": {"type": "gzip"},
                "downsamplingFactors": [f**level for f in FACTOR[::-1]]}  # fmt: skip
        return {"driver": "n5", "kvstore": {"driver": "file", "path": f"{path}/s{level}/"},
                "metadata": meta}  # fmt: skip
    meta = {"shape": list(shape), "chunks": list(CHUNK), "dtype": "<u8",
            "compressor": {"id": "zlib", "level": 1}, "fill_value": 0}  # fmt: skip
    return {"driver": "zarr", "kvstore": {"driver": "file", "path": f"{path}/{level}/"},
            "metadata": meta}  # fmt: skip


def disk(radius: int) -> np.ndarray:
    """A one-section brush mask."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2 <= radius**2)[None]


def random_start(
    rng: np.random.Generator, shape: tuple[int, ...], box: tuple[int, ...]
) -> list[int]:
    """A random corner for ``box`` inside ``shape``."""
    return [int(rng.integers(0, n - b + 1)) for n, b in zip(shape, box, strict=True)]


# -- stores -------------------------------------------------------------------------------
@contextlib.contextmanager
def postgres_schema(server: str) -> Iterator[str]:
    """A URL into a fresh schema of ``server``, dropped afterwards."""
    plain = server.replace("postgresql+psycopg://", "postgresql://")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    glue = "&" if "?" in server else "?"
    try:
        yield f"{server}{glue}options={quote(f'-csearch_path={name}', safe='')}"
    finally:
        with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def postgres_reachable(server: str) -> str | None:
    """``None`` if the server answers, else why not."""
    try:
        with psycopg.connect(server.replace("+psycopg", ""), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


# -- latency ------------------------------------------------------------------------------
def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def latencies(label: str, store: str, source: str, n: int, seed: int) -> list[Latency]:
    """Edit -> journal commit latencies of one store."""
    rng = np.random.default_rng(seed)
    pr = Proofreader(store, source, author="bench", background=True)
    try:
        shape = pr.volume.shape
        fragments = np.unique(pr.volume.read_voxels(0, (0, 0, 0), (1, *shape[1:])))
        mask = disk(BRUSH_RADIUS)
        for _ in range(5):  # warm the connections and statement caches
            pr.paint(random_start(rng, shape, mask.shape), mask, int(rng.choice(fragments)))
        pr.commit()

        def stroke(wait: bool) -> float:
            if wait:
                pr.commit()
            start = random_start(rng, shape, mask.shape)
            seqs: list[int | None] = []
            ms = _timed(lambda: seqs.append(pr.paint(start, mask, int(rng.choice(fragments)))))
            noops[0] += seqs[0] is None
            return ms

        noops = [0]

        idle = np.array([stroke(True) for _ in range(n)])
        back = np.array([stroke(False) for _ in range(n)])
        canvas = []
        for _ in range(n):
            start = random_start(rng, shape, mask.shape)
            stop = tuple(a + m for a, m in zip(start, mask.shape, strict=True))
            before = current_voxels(pr.journal, pr.volume, pr.key, start, stop)
            after = before.copy()
            after[mask] = np.uint64(rng.choice(fragments))
            patch = VoxelPatch.from_change(start, before, after)
            if patch is not None:
                canvas.append(_timed(lambda p=patch: pr.paint_patch(p)))
        pr.commit()
        if noops[0]:
            print(f"  ({noops[0]} of {2 * n} strokes changed nothing: no journal row)")
        merges = []
        while len(merges) < n:
            keep, absorb = (int(v) for v in pr.mapping()(rng.choice(fragments, 2)))
            if keep != absorb:
                merges.append(_timed(lambda k=keep, a=absorb: pr.merge(k, a)))
        synapse = []
        bounds = np.asarray(shape) * np.asarray(RESOLUTION)
        sid = None
        for i in range(n):
            pos = rng.uniform(0, 1, (2, 3)) * bounds
            if i % 3 == 0 or sid is None:
                synapse.append(_timed(lambda p=pos: pr.add_synapse(p[0], [p[1]])))
                sid = int(pr.journal.payload(pr.journal.high_water())["synapses"][0])
            elif i % 3 == 1:
                synapse.append(_timed(lambda s=sid: pr.set_status(s, "verified")))
            else:
                synapse.append(_timed(lambda s=sid, p=pos: pr.move_synapse(s, post=p[1])))
        pr.commit()
    finally:
        pr.close()
    return [
        Latency(label, "paint stroke (write-back idle)", idle),
        Latency(label, "paint stroke (back-to-back)", back),
        Latency(label, "canvas stroke (back-to-back)", np.array(canvas)),
        Latency(label, "merge", np.array(merges)),
        Latency(label, "synapse edit (add/status/move)", np.array(synapse)),
    ]


# -- throughput ---------------------------------------------------------------------------
def make_patches(finest: np.ndarray, n: int, seed: int) -> list[VoxelPatch]:
    """``n`` disk strokes painted one after the other (each patch's *before* is current)."""
    rng = np.random.default_rng(seed)
    current = finest.copy()
    ids = np.unique(finest)
    mask = disk(BRUSH_RADIUS)
    out = []
    while len(out) < n:
        start = random_start(rng, current.shape, mask.shape)
        box = tuple(slice(a, a + m) for a, m in zip(start, mask.shape, strict=True))
        before = current[box].copy()
        after = before.copy()
        after[mask] = rng.choice(ids)
        patch = VoxelPatch.from_change(tuple(start), before, after)
        if patch is not None:
            current[box] = after
            out.append(patch)
    return out


def chunks_touched(patches: list[VoxelPatch]) -> int:
    """Scale-0 chunks the patches' boxes intersect (counted once per patch)."""
    total = 0
    for p in patches:
        spans = [range(a // c, (b - 1) // c + 1)
                 for a, b, c in zip(p.start, p.stop, CHUNK, strict=True)]  # fmt: skip
        total += len(list(itertools.product(*spans)))
    return total


def writeback_seconds(store: str, source: str, patches: list[VoxelPatch], pyramid: bool) -> float:
    """Commit the patches to the journal (pending), then time ``run_pending``."""
    volume = open_volume(source, mode="r+")
    st = AnnotationStore.open(store)
    try:
        key = str(volume.source)
        journal = Journal(st, "bench")
        sc = volume.scales[0]
        frame = VoxelFrame(sc.resolution.as_tuple(), sc.origin_nm.as_tuple())
        for p in patches:
            journal.commit(lambda c, p=p: paint_record(c, key, p, frame, now=time.time(), label="bench"),
                           seen=journal.high_water())  # fmt: skip
        writer = WriteBack(journal, volume, key, pyramid=pyramid)
        start = time.perf_counter()
        done = writer.run_pending()
        seconds = time.perf_counter() - start
        assert done == len(patches), (done, len(patches))
        return seconds
    finally:
        st.close()
        volume.close()


def raw_seconds(fmt: str, source: str, patches: list[VoxelPatch]) -> float:
    """Write the patches' *after* boxes straight into scale 0 (no journal, no pyramid)."""
    if fmt == "hdf5":
        path, _, inner = source.rpartition(".h5/")
        start = time.perf_counter()
        with h5py.File(f"{path}.h5", "r+") as h5:
            ds = h5[f"{inner}/s0"]
            for p in patches:
                ds[tuple(slice(a, b) for a, b in zip(p.start, p.stop, strict=True))] = p.after
        return time.perf_counter() - start
    shape = tuple(open_volume(source).scales[0].shape)
    spec = _ts_spec(Path(source), fmt, 0, shape)
    spec.pop("metadata")
    store = ts.open(spec, open=True).result()
    view = store.T if fmt == "n5" else store
    start = time.perf_counter()
    for p in patches:
        view[tuple(slice(a, b) for a, b in zip(p.start, p.stop, strict=True))].write(
            p.after
        ).result()
    return time.perf_counter() - start


def throughput(
    fmt: str, folder: Path, levels: list[np.ndarray], n: int, seed: int
) -> list[Throughput]:
    """Write-back with and without the pyramid, and raw writes, of the same patches."""
    patches = make_patches(levels[0], n, seed)
    chunks = chunks_touched(patches)
    chunk_bytes = int(np.prod(CHUNK)) * 8
    times = {}
    for name in ("raw", "pyramid", "scale 0 only"):
        sub = folder / f"{fmt}-{name.replace(' ', '_')}"
        sub.mkdir()
        source = write_volume(sub, fmt, levels)
        store = str(sub / "annotations.db")
        if name == "raw":
            times[name] = raw_seconds(fmt, source, patches)
        else:
            times[name] = writeback_seconds(store, source, patches, pyramid=name == "pyramid")
    raw = times["raw"]
    return [
        Throughput(
            fmt, "raw writes (tensorstore/h5py, same boxes)", raw, chunks, chunk_bytes, None
        ),
        Throughput(
            fmt, "write-back, scale 0 only", times["scale 0 only"], chunks, chunk_bytes, raw
        ),
        Throughput(
            fmt, "write-back + pyramid (default)", times["pyramid"], chunks, chunk_bytes, raw
        ),
    ]


# -- report --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=500, help="edits of each kind")
    parser.add_argument("--patches", type=int, default=200, help="patches written back")
    parser.add_argument("--shape", default="64,512,512", help="z,y,x of the finest scale")
    parser.add_argument("--formats", default="zarr,n5,hdf5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--stores", default="sqlite,postgresql", help="latency on these stores ('' for none)"
    )
    args = parser.parse_args()
    stores = [s for s in args.stores.split(",") if s]
    shape = tuple(int(v) for v in args.shape.split(","))

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    levels = pyramid(labels(shape, args.seed))  # type: ignore[arg-type]
    print(f"segmentation {shape} uint64, chunks {CHUNK}, {LEVELS} scales (factor {FACTOR})")
    lat: list[Latency] = []
    tput: list[Throughput] = []
    with tempfile.TemporaryDirectory(prefix="bench_edits_") as tmp:
        folder = Path(tmp)
        for name in ("sqlite", "postgresql"):
            (folder / name).mkdir()
        if "sqlite" in stores:
            print("measuring latency on sqlite ...", flush=True)
            source = write_volume(folder / "sqlite", "zarr", levels)
            db = str(folder / "sqlite" / "a.db")
            lat += latencies("sqlite", db, source, args.edits, args.seed)
        server = os.environ.get("NAPARI_CONNECTO_TEST_POSTGRES", "").strip() or POSTGRES_DEFAULT
        skip = args.skip_postgres or "postgresql" not in stores
        why = "--skip-postgres" if skip else postgres_reachable(server)
        if why is None:
            print("measuring latency on postgresql ...", flush=True)
            source = write_volume(folder / "postgresql", "zarr", levels)
            with postgres_schema(server) as url:
                lat += latencies("postgresql", url, source, args.edits, args.seed)
        else:
            print(f"note: PostgreSQL skipped ({why})")
        for fmt in [f for f in args.formats.split(",") if f]:
            print(f"measuring write-back throughput on {fmt} ...", flush=True)
            tput += throughput(fmt, folder, levels, args.patches, args.seed)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)

    print(f"\nEdit -> journal commit latency, ms (target p99 <= {TARGET_MS:g} ms)")
    print(f"{'store':<11} {'edit':<36} {'n':>5} {'median':>8} {'p99':>8} {'max':>8}")
    for row in lat:
        print(row.line())
    print(f"\nWrite-back of {args.patches} brush strokes (disk r={BRUSH_RADIUS}, "
          f"{tput[0].chunks if tput else 0} scale-0 chunk writes of {np.prod(CHUNK) * 8 / 2**20:.0f} MiB)")  # fmt: skip
    print(f"{'format':<6} {'path':<44} {'seconds':>8} {'MB/s':>9} {'chunks/s':>9} {'vs raw':>7}")
    for row in tput:
        print(row.line())


if __name__ == "__main__":
    main()
