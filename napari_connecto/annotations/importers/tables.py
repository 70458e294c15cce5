"""Synapse or neuron tables in CSV/TSV (optionally gzipped) or Parquet, with a header row.

Columns are matched to the normalised ones by common names or an explicit ``mapping``
(see :mod:`.columns`). Id columns are read as text (CSV) or as integers (Parquet), never
through float, so ids above 2**53 keep every digit. Positions are nm unless
``resolution`` (z, y, x nm per voxel) is given. A ``valid`` column (CAVE) drops the rows
that are not valid (the count is logged).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from napari_connecto.annotations.frames import ImportBatch
from napari_connecto.annotations.importers.batch import (
    checked_resolution,
    file_rows,
    make_batch,
    normalized_neurons,
    normalized_synapses,
)
from napari_connecto.annotations.importers.columns import (
    ID_TARGETS,
    build_frame,
    guess_kind,
    resolve_columns,
    valid_mask,
)
from napari_connecto.annotations.importers.registry import (
    Importer,
    Kind,
    ReadOptions,
    read_head,
)
from napari_connecto.errors import ImportFormatError

__all__ = [
    "IMPORTER",
    "TEXT_SUFFIXES",
    "delimiter",
    "filter_valid",
    "first_line",
    "is_parquet",
    "read_rows",
    "read_table",
    "sniff_table",
    "split_header",
    "table_batch",
]

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
"""Names of delimited text tables."""
_PARQUET_SUFFIXES = (".parquet", ".pq")
_PARQUET_MAGIC = b"PAR1"
_READ_ERRORS = (OSError, ValueError, UnicodeDecodeError, EOFError, pd.errors.ParserError)


def is_parquet(path: Path, head: bytes) -> bool:
    """Whether ``path`` is a Parquet file (its magic number)."""
    return head[:4] == _PARQUET_MAGIC


def _is_text(path: Path) -> bool:
    return path.name.lower().endswith(TEXT_SUFFIXES)


def first_line(head: bytes) -> str:
    """The first line of a text file's head ("" if it is not text)."""
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        return ""
    return text.splitlines()[0] if text else ""


def delimiter(line: str) -> str:
    """The delimiter of a header line: tab, comma, or runs of whitespace."""
    if "\t" in line:
        return "\t"
    if "," in line:
        return ","
    return r"\s+"


def split_header(line: str) -> list[str]:
    """The fields of one delimited line."""
    sep = delimiter(line)
    if sep == r"\s+":
        return line.split()
    return [f.strip() for f in next(csv.reader([line], delimiter=sep))]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def sniff_table(path: Path, head: bytes) -> bool:
    """Parquet, or delimited text whose first line is a header (not all numbers)."""
    if is_parquet(path, head):
        return True
    if not _is_text(path):
        return False
    fields = split_header(first_line(head))
    return len(fields) >= 2 and not all(_is_number(f) for f in fields if f)


def read_rows(path: Path, head: bytes, id_columns: set[str] | None = None) -> pd.DataFrame:
    """Every row of a text or Parquet table, id columns exact.

    Parameters
    ----------
    path : Path
        The table.
    head : bytes
        Its first bytes (see :func:`.registry.read_head`).
    id_columns : set of str, optional
        Columns to read as exact integers; ``None`` reads every text column as text.

    Raises
    ------
    ImportFormatError
        If the file cannot be parsed.
    """
    try:
        if is_parquet(path, head):
            return _read_parquet(path, id_columns or set())
        line = first_line(head)
        columns = split_header(line)
        dtype = dict.fromkeys(columns if id_columns is None else id_columns, str)
        return pd.read_csv(path, sep=delimiter(line), dtype=dtype, skipinitialspace=True)
    except _READ_ERRORS as exc:
        raise ImportFormatError(str(path), f"cannot read the table ({exc})") from exc


def _read_parquet(path: Path, id_columns: set[str]) -> pd.DataFrame:
    """A Parquet table; integer id columns without nulls as numpy, others as Python ints."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    out: dict[str, object] = {}
    for name in table.column_names:
        column = table.column(name)
        if name in id_columns and pa.types.is_integer(column.type) and column.null_count == 0:
            out[name] = pd.Series(column.to_numpy())
        elif name in id_columns or pa.types.is_list(column.type):
            out[name] = pd.Series(column.to_pylist(), dtype=object)
        else:
            out[name] = column.to_pandas()
    return pd.DataFrame(out)


def table_batch(
    raw: pd.DataFrame,
    path: str,
    kind: Kind,
    resolved: dict[str, str],
    resolution: tuple[float, float, float] | None,
    *,
    rows: np.ndarray | None = None,
) -> ImportBatch:
    """Normalise the rows of a table (its own columns) into a batch.

    Parameters
    ----------
    raw : pandas.DataFrame
        The file's rows (already filtered).
    path : str
        The file, for errors.
    kind : {"synapses", "neurons"}
        What the rows are.
    resolved : dict
        Target -> file column (see :func:`.columns.resolve_columns`).
    resolution : tuple of float, optional
        z, y, x nm per voxel of the positions, ``None`` for nm.
    rows : numpy.ndarray, optional
        The file's 0-based data row of each row of ``raw``.

    Raises
    ------
    ImportFormatError, ConflictError
        On malformed values or conflicting duplicate ids.
    """
    with file_rows(rows):
        frame, names = build_frame(raw, resolved, path, resolution)
    if kind == "synapses":
        synapses = normalized_synapses(frame, path, rows=rows, columns=names)
        return make_batch(path, synapses=synapses)
    neurons = normalized_neurons(frame, path, rows=rows, columns=names)
    return make_batch(path, neurons=neurons)


def filter_valid(raw: pd.DataFrame, path: str) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Drop rows whose ``valid`` column is false; also return the kept rows' numbers."""
    column = next((c for c in raw.columns if str(c).lower() == "valid"), None)
    if column is None:
        return raw, None
    keep = valid_mask(raw[column], path, str(column))
    if keep.all():
        return raw, None
    logger.info("%s: skipped %d rows that are not valid", path, int((~keep).sum()))
    return raw[keep], np.flatnonzero(keep)


def read_table(path: Path, options: ReadOptions) -> ImportBatch:
    """Read a CSV/TSV/Parquet table of synapses or neurons (see the module docstring).

    Raises
    ------
    ImportFormatError
        On a malformed file, naming the row and column; or if it is neither synapses
        nor neurons.
    ConflictError
        If one id appears with two different rows.
    """
    where = str(path)
    resolution = checked_resolution(options.resolution, where)
    head = read_head(path)
    columns = _column_names(path, head)
    kind = options.kind or guess_kind(columns, options.mapping, where)
    resolved = resolve_columns(columns, kind, options.mapping, where)
    if "id" not in resolved and kind == "neurons":
        raise ImportFormatError(where, "no neuron id column", column="id")
    ids = {resolved[t] for t in ID_TARGETS if t in resolved}
    raw, rows = filter_valid(read_rows(path, head, ids), where)
    return table_batch(raw, where, kind, resolved, resolution, rows=rows)


def _column_names(path: Path, head: bytes) -> list[str]:
    """The table's column names, without reading its rows."""
    if is_parquet(path, head):
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except _READ_ERRORS as exc:
            raise ImportFormatError(str(path), f"cannot read the Parquet schema ({exc})") from exc
    columns = split_header(first_line(head))
    if not columns:
        raise ImportFormatError(str(path), "empty table: no header row")
    return columns


IMPORTER = Importer(
    name="table",
    sniff=sniff_table,
    read=read_table,
    description="CSV/TSV/Parquet table of synapses or neurons with a header row",
)
"""The ``"table"`` importer."""
