"""The ``import`` and ``synapses`` subcommands, and opening an annotation store for a command."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from napari_connecto.errors import AnnotationError

if TYPE_CHECKING:
    import pandas as pd

    from napari_connecto.annotations import AnnotationStore, ImportSummary

__all__ = [
    "add_annotation_commands",
    "neuron_id",
    "open_store",
    "run_import",
    "run_synapses",
    "summary_line",
]


def _resolution(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected Z,Y,X nm per voxel (> 0), got {text!r}")
    return values  # type: ignore[return-value]


def neuron_id(text: str) -> int:
    """A uint64 id, parsed exactly (never through float) (an ``argparse`` type)."""
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if not 0 < value < 2**64:
        raise argparse.ArgumentTypeError(
            f"expected a neuron id (integer, 1 to 2**64-1), got {text!r}"
        )
    return value


def _column_map(text: str) -> tuple[str, str]:
    file_column, sep, column = text.partition("=")
    if not sep or not file_column.strip() or not column.strip():
        raise argparse.ArgumentTypeError(f"expected FILECOL=COL, got {text!r}")
    return file_column.strip(), column.strip()


def add_annotation_commands(sub: Any) -> None:
    """The ``import`` and ``synapses`` subcommands."""
    imp = sub.add_parser(
        "import",
        help="import neurons and synapses from a file into an annotation store",
        description="Read SOURCE and import it into DB in one transaction: new rows are "
        "added, rows already stored exactly so are unchanged, conflicts import nothing.",
    )
    imp.add_argument(
        "source",
        help="CREMI .h5, CSV/Parquet table, CAVE export, arrays, or dvid://host:port/UUID/ANNOTATIONS",
    )
    imp.add_argument("--db", required=True, help="SQLite file (created) or postgresql:// URL")
    imp.add_argument(
        "--format", help="cremi, cave, arrays or table (default: sniffed from the file)"
    )
    imp.add_argument("--kind", choices=("synapses", "neurons"), help="what a table's rows are")
    imp.add_argument(
        "--resolution", type=_resolution, metavar="Z,Y,X", help="nm per voxel of the positions"
    )
    imp.add_argument(
        "--segmentation", metavar="SEG", help="segmentation volume for neuron ids and keypoints"
    )
    imp.add_argument(
        "--map",
        type=_column_map,
        action="append",
        default=[],
        metavar="FILECOL=COL",
        help="read file column FILECOL as COL (e.g. pre_pt_root_id=pre_id); repeatable",
    )

    syn = sub.add_parser(
        "synapses",
        help="write the synapses of a neuron to stdout (CSV or JSON)",
        description="Synapses of one neuron, ordered by id, with direction (out/in) and "
        "partner columns; ids are exact integers.",
    )
    syn.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    syn.add_argument("--neuron", required=True, type=neuron_id, metavar="ID")
    side = syn.add_mutually_exclusive_group()
    side.add_argument(
        "--pre", action="store_true", help="only synapses where the neuron is presynaptic"
    )
    side.add_argument(
        "--post", action="store_true", help="only synapses where the neuron is postsynaptic"
    )
    syn.add_argument("--include-self", action="store_true", help="keep autapses")
    syn.add_argument("--format", choices=("csv", "json"), default="csv")


@contextlib.contextmanager
def open_store(db: str, *, create: bool) -> Iterator[AnnotationStore]:
    """An open store; database-driver failures become one-line :class:`AnnotationError`."""
    from sqlalchemy.exc import SQLAlchemyError

    from napari_connecto.annotations import AnnotationStore

    where = _redact(db)
    try:
        store = AnnotationStore.open(db, create=create)
    except SQLAlchemyError as exc:
        raise AnnotationError(f"cannot open annotation database {where}: {_reason(exc)}") from None
    try:
        yield store
    except SQLAlchemyError as exc:
        raise AnnotationError(f"annotation database {where}: {_reason(exc)}") from None
    finally:
        store.close()


def _redact(db: str) -> str:
    """A database path or URL with any password hidden."""
    if "://" not in db:
        return db
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(db).render_as_string(hide_password=True)
    except ArgumentError:
        return db.rpartition("@")[2]


def _reason(exc: Exception) -> str:
    """The driver's message, first line only."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_import(args: argparse.Namespace) -> int:
    from napari_connecto.annotations.importers import read_annotations

    batch = read_annotations(  # read (and validate) before touching the database
        args.source,
        format=args.format,
        mapping=dict(args.map) or None,
        resolution=args.resolution,
        segmentation=args.segmentation,
        kind=args.kind,
    )
    with open_store(args.db, create=True) as store:
        summary = store.import_batch(batch)
        sys.stdout.write(summary_line(summary, store.where) + "\n")
    return 0


def summary_line(summary: ImportSummary, where: str) -> str:
    return (
        f"{summary.source} -> {where}: synapses {summary.synapses_added} added, "
        f"{summary.synapses_unchanged} unchanged; neurons {summary.neurons_added} added, "
        f"{summary.neurons_filled} filled, {summary.neurons_unchanged} unchanged"
    )


def run_synapses(args: argparse.Namespace) -> int:
    with open_store(args.db, create=False) as store:
        if not bool(store.has_neurons([args.neuron])[0]):
            raise AnnotationError(f"no neuron {args.neuron} in {store.where}")
        frame = store.synapses_of(
            args.neuron, pre=not args.post, post=not args.pre, include_self=args.include_self
        )
    if args.format == "json":
        _write_json(frame, sys.stdout)
    else:
        frame.to_csv(sys.stdout, index=False, lineterminator="\n")
    return 0


def _write_json(frame: pd.DataFrame, out: Any) -> None:
    """Rows as a JSON array of objects: ids as JSON integers (exact), NaN as null."""
    columns = {name: _json_column(frame[name]) for name in frame.columns}
    out.write("[")
    for i, row in enumerate(zip(*columns.values(), strict=True)):
        out.write(",\n" if i else "\n")
        out.write(json.dumps(dict(zip(columns, row, strict=True)), allow_nan=False))
    out.write("\n]\n" if len(frame) else "]\n")


def _json_column(series: pd.Series) -> list[Any]:
    """Python values of one column: ints from integer dtypes (never floats), None for NaN."""
    kind = series.dtype.kind
    values = series.to_numpy().tolist()
    if kind == "f":
        return [None if math.isnan(v) else v for v in values]
    if kind in "iub":
        return values
    return [None if v is None else str(v) for v in values]
