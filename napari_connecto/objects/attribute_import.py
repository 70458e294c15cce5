"""Imported per-segment properties: neuroglancer ``segment_properties`` and CSV/Parquet tables.

:func:`read_segment_properties` reads the inline form of neuroglancer's precomputed
segment properties (``{"@type": "neuroglancer_segment_properties", "inline": {"ids":
[...], "properties": [...]}}``), from a local directory or an ``http(s)://`` URL,
either the properties directory itself or a precomputed segmentation whose ``info``
names it (``"segment_properties": "<dir>"``). ``label``, ``description`` and ``string``
properties become text columns, ``number`` properties numeric columns of their
``data_type``, and ``tags`` a text column of space-separated tag names.

:func:`read_table` reads a CSV or Parquet file with an id column. Ids are parsed
exactly as uint64 (also above 2**63): never through float.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_connecto.errors import ImportFormatError, MetadataError, SourceNotFoundError
from napari_connecto.objects.attribute_store import AttributeStore

__all__ = [
    "NUMBER_TYPES",
    "PROPERTIES_TYPE",
    "parse_segment_properties",
    "read_segment_properties",
    "read_table",
]

logger = logging.getLogger(__name__)

PROPERTIES_TYPE = "neuroglancer_segment_properties"
"""The ``@type`` of a segment properties ``info``."""
NUMBER_TYPES = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32"})
"""``data_type`` values allowed for ``number`` properties."""
_TEXT_TYPES = frozenset({"label", "description", "string"})
_UINT64_MAX = 2**64 - 1


# -- segment properties ----------------------------------------------------------------------
def read_segment_properties(source: str | os.PathLike[str]) -> AttributeStore:
    """Segment properties as an :class:`AttributeStore` (one column per property).

    Parameters
    ----------
    source : str or path
        A properties directory (holding ``info``), its ``info`` file, or a precomputed
        segmentation whose ``info`` has ``"segment_properties"``; local or ``http(s)://``.

    Returns
    -------
    AttributeStore
        Columns named by property ``id``; ``meta["properties"]`` keeps each property's
        type and description.

    Raises
    ------
    SourceNotFoundError
        No ``info`` at ``source``.
    MetadataError
        An ``info`` that is not JSON or does not follow the format.
    RemoteError
        An HTTP request that failed for good.
    """
    text = str(source).rstrip("/")
    if text.endswith("/info"):
        text = text[: -len("/info")]
    where, info = text, _read_info(text)
    if info.get("@type") != PROPERTIES_TYPE and "segment_properties" in info:
        name = info["segment_properties"]
        if not isinstance(name, str) or not name or name.startswith("/") or ".." in name:
            raise MetadataError(f"{text}/info", "segment_properties", "must be a relative path")
        where = f"{text}/{name.strip('/')}"
        info = _read_info(where)
    return parse_segment_properties(info, f"{where}/info")


def _read_info(location: str) -> dict[str, Any]:
    """The ``info`` JSON object under ``location`` (directory or URL)."""
    path = f"{location}/info"
    if location.startswith(("http://", "https://")):
        from napari_connecto.remote.store import HttpStore

        raw = HttpStore(location).get("info")
        if raw is None:
            raise SourceNotFoundError(path)
    else:
        try:
            raw = Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise SourceNotFoundError(path) from exc
    try:
        info = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetadataError(path, "", f"not valid JSON: {exc}") from exc
    if not isinstance(info, dict):
        raise MetadataError(path, "", "must be a JSON object")
    return info


def parse_segment_properties(info: dict[str, Any], where: str = "info") -> AttributeStore:
    """An already-parsed segment properties ``info`` as an :class:`AttributeStore`.

    Raises
    ------
    MetadataError
        The document does not follow the format (named field at fault).
    """
    if info.get("@type") != PROPERTIES_TYPE:
        raise MetadataError(where, "@type", f"must be {PROPERTIES_TYPE!r}")
    inline = info.get("inline")
    if not isinstance(inline, dict):
        raise MetadataError(where, "inline", "missing (only inline properties are supported)")
    raw_ids = inline.get("ids")
    if not isinstance(raw_ids, list):
        raise MetadataError(where, "inline.ids", "must be a list of base-10 strings")
    ids = _parse_ids(raw_ids, where)
    props = inline.get("properties", [])
    if not isinstance(props, list):
        raise MetadataError(where, "inline.properties", "must be a list")
    columns: dict[str, np.ndarray] = {}
    described: list[dict[str, str]] = []
    for k, prop in enumerate(props):
        field = f"inline.properties[{k}]"
        if not isinstance(prop, dict) or not isinstance(prop.get("id"), str) or not prop["id"]:
            raise MetadataError(where, field, "each property needs a string 'id'")
        name = prop["id"]
        if name in columns:
            raise MetadataError(where, field, f"duplicate property id {name!r}")
        columns[name] = _property_values(prop, len(ids), where, field)
        described.append(
            {"id": name, "type": str(prop["type"]), "description": str(prop.get("description", ""))}
        )
    try:
        return AttributeStore(ids, columns, {"source": where, "properties": described})
    except ValueError as exc:
        raise MetadataError(where, "inline.ids", str(exc)) from exc


def _parse_ids(raw: Sequence[Any], where: str) -> np.ndarray:
    """Base-10 id strings as uint64, exactly."""
    values = []
    for k, item in enumerate(raw):
        if not isinstance(item, str) or not item.isdigit() or int(item) > _UINT64_MAX:
            raise MetadataError(where, f"inline.ids[{k}]", f"not a uint64 base-10 string: {item!r}")
        values.append(int(item))
    return np.array(values, dtype=np.uint64)


def _property_values(prop: dict[str, Any], n: int, where: str, field: str) -> np.ndarray:
    """The values of one property as a column of ``n`` rows."""
    kind = prop.get("type")
    values = prop.get("values")
    if kind == "tags":
        return _tag_values(prop, n, where, field)
    if not isinstance(values, list) or len(values) != n:
        raise MetadataError(where, f"{field}.values", f"must be a list of {n} values")
    if kind in _TEXT_TYPES:
        if not all(isinstance(v, str) for v in values):
            raise MetadataError(where, f"{field}.values", f"{kind} values must be strings")
        return np.asarray(values, dtype=str) if n else np.empty(0, dtype="<U1")
    if kind == "number":
        dtype = prop.get("data_type")
        if dtype not in NUMBER_TYPES:
            raise MetadataError(
                where, f"{field}.data_type", f"must be one of {sorted(NUMBER_TYPES)}"
            )
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise MetadataError(where, f"{field}.values", "number values must be numbers")
        array = np.asarray(values, dtype=np.float64)
        if dtype != "float32":
            info = np.iinfo(dtype)
            if np.any(array != np.round(array)) or np.any((array < info.min) | (array > info.max)):
                raise MetadataError(where, f"{field}.values", f"values do not fit {dtype}")
        return array.astype(dtype)
    raise MetadataError(where, f"{field}.type", f"unknown property type {kind!r}")


def _tag_values(prop: dict[str, Any], n: int, where: str, field: str) -> np.ndarray:
    """Tags as space-separated tag names per segment."""
    tags = prop.get("tags")
    values = prop.get("values")
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise MetadataError(where, f"{field}.tags", "must be a list of tag names")
    if not isinstance(values, list) or len(values) != n:
        raise MetadataError(where, f"{field}.values", f"must be a list of {n} index lists")
    out = []
    for k, item in enumerate(values):
        if not isinstance(item, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(tags) for i in item
        ):
            raise MetadataError(where, f"{field}.values[{k}]", "must list valid tag indices")
        out.append(" ".join(tags[i] for i in item))
    return np.asarray(out, dtype=str) if n else np.empty(0, dtype="<U1")


# -- tables ----------------------------------------------------------------------------------
def read_table(path: str | os.PathLike[str], id_column: str = "id") -> AttributeStore:
    """A CSV or Parquet file with one row per segment as an :class:`AttributeStore`.

    Parameters
    ----------
    path : str or path
        ``.csv`` (or ``.tsv``) or ``.parquet`` file.
    id_column : str
        The column holding segment ids (non-negative integers < 2**64).

    Returns
    -------
    AttributeStore
        Every other column (numbers stay numbers, anything else becomes text).

    Raises
    ------
    SourceNotFoundError
        The file does not exist.
    ImportFormatError
        Unreadable file, no id column, an id that is not a uint64, or duplicate ids.
    """
    file = Path(path)
    if not file.is_file():
        raise SourceNotFoundError(str(file))
    frame = _read_frame(file, id_column)
    if id_column not in frame.columns:
        raise ImportFormatError(str(file), f"no id column {id_column!r}", column=id_column)
    ids = _table_ids(frame[id_column], str(file), id_column)
    columns = {str(name): _table_column(frame[name]) for name in frame.columns if name != id_column}
    try:
        return AttributeStore(ids, columns, {"source": str(file), "id_column": id_column})
    except ValueError as exc:
        raise ImportFormatError(str(file), str(exc), column=id_column) from exc


def _read_frame(file: Path, id_column: str) -> pd.DataFrame:
    """The file's rows, ids of text files kept as text."""
    suffix = file.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(file).to_pandas()
        sep = "\t" if suffix == ".tsv" else ","
        return pd.read_csv(file, sep=sep, dtype={id_column: str}, keep_default_na=False,
                           na_values=[""])  # fmt: skip
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ImportFormatError(str(file), f"unreadable table: {exc}") from exc


def _table_ids(values: pd.Series, where: str, column: str) -> np.ndarray:
    """An id column as exact uint64 (text, unsigned or non-negative signed integers)."""
    if pd.api.types.is_unsigned_integer_dtype(values.dtype):
        return values.to_numpy(dtype=np.uint64)
    if pd.api.types.is_signed_integer_dtype(values.dtype):
        array = values.to_numpy(dtype=np.int64)
        bad = np.flatnonzero(array < 0)
        if bad.size:
            raise ImportFormatError(where, "negative id", row=int(bad[0]), column=column)
        return array.astype(np.uint64)
    out = np.empty(len(values), dtype=np.uint64)
    for row, item in enumerate(values.tolist()):
        text = str(item).strip() if item is not None else ""
        if not text.isdigit() or int(text) > _UINT64_MAX:
            raise ImportFormatError(where, f"not a uint64 id: {item!r}", row=row, column=column)
        out[row] = int(text)
    return out


def _table_column(values: pd.Series) -> np.ndarray:
    """Numbers as numbers (integers with gaps become float), everything else as text."""
    if pd.api.types.is_bool_dtype(values.dtype) and not values.hasnans:
        return values.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(values.dtype):
        if isinstance(values.dtype, np.dtype) and not values.hasnans:
            return values.to_numpy()
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(["" if pd.isna(v) else str(v) for v in values.tolist()], dtype=str)
