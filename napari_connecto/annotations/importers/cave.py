"""CAVE static table exports (cortical-tools ``TableExportClient``).

Layout: ``.../v{version}/{table}.csv.gz`` with the column names in the sibling
``{table}_header.csv`` (one name per line). Whether the data file repeats the header as
its first row is not documented (cortical-tools reads one), so a first row made mostly
of the header's names is skipped. Without a
header file, a data file whose first row names the CAVE synapse columns is accepted too.

Synapse tables (``pre_pt_root_id``, ``post_pt_root_id``, ``*_pt_position``, ...) become
synapses with ``id`` = the annotation id, ``pre_id``/``post_id`` = the root ids (exact,
also above 2**53) and pre/post/centre locations from ``pre_pt_position``,
``post_pt_position`` and ``ctr_pt_position``. Tables with a ``pt_root_id`` (cell types,
nuclei) become neurons: ``id`` = the root id, keypoint = ``pt_position``, ``type`` =
``cell_type`` (or ``classification``).

Positions are text like ``"[x y z]"`` or ``"(x, y, z)"`` in the table's *voxel* units, x, y,
z order; they are converted to z, y, x nm with ``resolution`` (z, y, x nm per voxel,
default :data:`DEFAULT_RESOLUTION` = (40, 4, 4), the MICrONS and FlyWire voxel size).
Only rows whose ``valid`` is true (``t``, ``True``, ``1``) are imported. ``created`` is
kept; ``superceded_id``, the supervoxel ids and ``size`` (cleft size in voxels, not a
confidence) are not imported.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from napari_connecto.annotations.frames import ImportBatch
from napari_connecto.annotations.importers.batch import checked_resolution
from napari_connecto.annotations.importers.columns import resolve_columns, valid_mask
from napari_connecto.annotations.importers.registry import Importer, ReadOptions
from napari_connecto.annotations.importers.tables import (
    first_line,
    split_header,
    table_batch,
)
from napari_connecto.errors import ImportFormatError

__all__ = ["DEFAULT_RESOLUTION", "IMPORTER", "header_path", "read_cave", "sniff_cave"]

logger = logging.getLogger(__name__)

DEFAULT_RESOLUTION = (40.0, 4.0, 4.0)
"""z, y, x nm per voxel assumed for CAVE positions when none is given."""
_SYNAPSE_MARKERS = frozenset({"pre_pt_root_id", "post_pt_root_id", "valid"})
_NEURON_MARKERS = frozenset({"pt_root_id", "pt_position", "valid"})
_READ_ERRORS = (OSError, ValueError, UnicodeDecodeError, EOFError, pd.errors.ParserError)


def _stem(path: Path) -> str:
    """``synapses`` for ``synapses.csv.gz`` / ``synapses.csv``."""
    name = path.name
    for suffix in (".csv.gz", ".csv"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def header_path(path: Path) -> Path:
    """The sibling ``{table}_header.csv`` of a data file."""
    return path.with_name(f"{_stem(path)}_header.csv")


def sniff_cave(path: Path, head: bytes) -> bool:
    """A ``.csv(.gz)`` with a sibling header file, or whose first row names CAVE columns."""
    name = path.name.lower()
    if not name.endswith((".csv", ".csv.gz")) or name.endswith("_header.csv"):
        return False
    if header_path(path).is_file():
        return True
    fields = {f.lower() for f in split_header(first_line(head))}
    return fields.issuperset(_SYNAPSE_MARKERS) or fields.issuperset(_NEURON_MARKERS)


def _header(path: Path) -> list[str] | None:
    """Column names from the sibling header file, or ``None`` if there is none."""
    sibling = header_path(path)
    if not sibling.is_file():
        return None
    try:
        names = [line.strip().strip('"') for line in sibling.read_text("utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFormatError(str(sibling), f"unreadable header file ({exc})") from exc
    names = [n for n in names if n]
    if not names:
        raise ImportFormatError(str(sibling), "empty header file")
    return names


def _is_header_row(values: list[object], names: list[str]) -> bool:
    """Whether a first data row is a header: most of its cells are column names."""
    known = {n.strip().lower() for n in names}
    cells = [str(v).strip().strip('"').lower() for v in values]
    return sum(c in known for c in cells) * 2 >= len(known)


def _read_rows(path: Path) -> pd.DataFrame:
    """Every data row, as text, with the header's column names."""
    where = str(path)
    names = _header(path)
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raw = pd.DataFrame()
    except _READ_ERRORS as exc:
        raise ImportFormatError(where, f"cannot read the CAVE export ({exc})") from exc
    if names is None:  # the data file's own first row is the header
        if raw.empty:
            raise ImportFormatError(where, "empty file without a header")
        names = [str(v) for v in raw.iloc[0]]
        raw = raw.iloc[1:]
    elif len(raw) and _is_header_row(raw.iloc[0].tolist(), names):
        raw = raw.iloc[1:]
    if raw.shape[1] == 0:
        raw = pd.DataFrame(columns=names)
    if raw.shape[1] != len(names):
        raise ImportFormatError(
            where, f"{raw.shape[1]} columns but the header names {len(names)}: {', '.join(names)}"
        )
    raw.columns = names
    return raw.reset_index(drop=True)


def read_cave(path: Path, options: ReadOptions) -> ImportBatch:
    """Read a CAVE static table export (see the module docstring).

    Raises
    ------
    ImportFormatError
        On a malformed file or value, naming the data row (0-based, header not
        counted) and column; also if the table holds neither synapses nor root ids.
    ConflictError
        If one id appears with two different rows.
    """
    where = str(path)
    resolution = checked_resolution(options.resolution, where) or DEFAULT_RESOLUTION
    raw = _read_rows(path)
    columns = [str(c) for c in raw.columns]
    lowered = {c.lower() for c in columns}
    if options.kind is not None:
        kind = options.kind
    elif {"pre_pt_root_id", "post_pt_root_id"} <= lowered:
        kind = "synapses"
    elif "pt_root_id" in lowered:
        kind = "neurons"
    else:
        raise ImportFormatError(
            where, f"neither a synapse table nor a root-id table (columns: {', '.join(columns)})"
        )
    mapping = dict(options.mapping or {})
    resolved = resolve_columns(columns, kind, mapping, where)
    if kind == "neurons" and "id" not in mapping.values() and resolved.get("id") == "id":
        # "id" is the annotation's id, not a neuron's
        raise ImportFormatError(where, "no root id column for the neurons", column="pt_root_id")
    keep = np.ones(len(raw), dtype=bool)
    valid = next((c for c in columns if c.lower() == "valid"), None)
    if valid is not None:
        keep = valid_mask(raw[valid], where, valid)
        if not keep.all():
            logger.info("%s: skipped %d rows that are not valid", where, int((~keep).sum()))
    rows = np.flatnonzero(keep)
    return table_batch(raw[keep], where, kind, resolved, resolution, rows=rows)


IMPORTER = Importer(
    name="cave",
    sniff=sniff_cave,
    read=read_cave,
    description="CAVE static table export ({table}.csv.gz + {table}_header.csv)",
)
"""The ``"cave"`` importer."""
