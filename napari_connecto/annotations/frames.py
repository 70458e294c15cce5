"""The normalised DataFrames every importer produces and the store accepts.

Neurons: ``id`` (uint64), ``name``, ``type``, ``status``, ``notes`` (str) and a keypoint
``z``, ``y``, ``x`` in nm (NaN when unknown).

Synapses: ``id`` (uint64; 0 = let the store assign one), ``pre_id`` and ``post_id``
(uint64; 0 = unknown neuron), ``pre_z/pre_y/pre_x``, ``post_z/post_y/post_x`` and the
centre ``z/y/x`` in nm, ``confidence`` (float, NaN when unknown), ``status`` (one of
:data:`SYNAPSE_STATUSES`), ``reviewer`` (str, ``""`` when nobody), ``created`` and
``updated`` (seconds since the epoch, UTC).

Ids are uint64 end to end: they are parsed from text or integers, never through float,
so root ids above 2**53 keep every digit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_connecto.errors import ConflictError, ImportFormatError

__all__ = [
    "NEURON_COLUMNS",
    "SYNAPSE_COLUMNS",
    "SYNAPSE_STATUSES",
    "ImportBatch",
    "as_uint64",
    "drop_identical_duplicates",
    "normalize_neurons",
    "normalize_synapses",
]

SYNAPSE_STATUSES = ("unreviewed", "verified", "rejected")
"""Review states of a synapse."""

NEURON_TEXT = ("name", "type", "status", "notes")
POSITION = ("z", "y", "x")
PRE = ("pre_z", "pre_y", "pre_x")
POST = ("post_z", "post_y", "post_x")

NEURON_COLUMNS = ("id", *NEURON_TEXT, *POSITION)
"""Columns of a normalised neuron frame, in order."""
SYNAPSE_COLUMNS = (
    "id",
    "pre_id",
    "post_id",
    *PRE,
    *POST,
    *POSITION,
    "confidence",
    "status",
    "reviewer",
    "created",
    "updated",
)
"""Columns of a normalised synapse frame, in order."""

_EXACT_FLOAT = 2**53


@dataclass(frozen=True, slots=True)
class ImportBatch:
    """What one import file holds, normalised; imported in one transaction."""

    source: str
    """The file (or URL) it came from, for messages."""
    neurons: pd.DataFrame | None = None
    """Normalised neuron rows (see :func:`normalize_neurons`), or ``None``."""
    synapses: pd.DataFrame | None = None
    """Normalised synapse rows (see :func:`normalize_synapses`), or ``None``."""


def as_uint64(values: Iterable[object] | pd.Series, *, path: str, column: str) -> np.ndarray:
    """Convert ids to uint64 exactly; raise naming the first bad row.

    Accepts integers, integer-valued strings and integral floats below 2**53 (larger
    floats have already lost digits, so they are refused).

    Parameters
    ----------
    values : iterable
        The ids, one per row.
    path, column : str
        Named in the error.

    Returns
    -------
    numpy.ndarray
        uint64 ids.

    Raises
    ------
    ImportFormatError
        On a missing, negative, fractional, too large or non-numeric id.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    kind = series.dtype.kind
    if kind == "u":
        return series.to_numpy(dtype=np.uint64)
    if kind == "i":
        arr = series.to_numpy(dtype=np.int64)
        bad = np.flatnonzero(arr < 0)
        if bad.size:
            raise ImportFormatError(
                path, f"negative id {arr[bad[0]]}", row=int(bad[0]), column=column
            )
        return arr.astype(np.uint64)
    out = np.empty(len(series), dtype=np.uint64)
    for row, value in enumerate(series.tolist()):
        out[row] = _one_uint64(value, path=path, column=column, row=row)
    return out


def _one_uint64(value: object, *, path: str, column: str, row: int) -> int:
    """One id to an exact int in [0, 2**64)."""
    number: int | None = None
    if isinstance(value, bool | np.bool_):
        number = None
    elif isinstance(value, int | np.integer):
        number = int(value)
    elif isinstance(value, float | np.floating):
        if np.isfinite(value) and float(value).is_integer() and abs(value) < _EXACT_FLOAT:
            number = int(value)
    elif isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        text = text.strip()
        if text.endswith(".0"):
            text = text[:-2]
        if text.lstrip("+").isdigit():
            number = int(text)
    if number is None or not 0 <= number < 2**64:
        raise ImportFormatError(path, f"not a uint64 id: {value!r}", row=row, column=column)
    return number


def _floats(frame: pd.DataFrame, column: str, path: str, *, finite: bool) -> np.ndarray:
    """A float column, with the first non-numeric (or non-finite) row named."""
    raw = frame[column]
    converted = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(converted) & raw.notna().to_numpy()
    if finite:
        bad |= ~np.isfinite(converted)
    else:
        bad |= np.isinf(converted)
    rows = np.flatnonzero(bad)
    if rows.size:
        row = int(rows[0])
        raise ImportFormatError(
            path, f"not a finite number: {raw.iloc[row]!r}", row=row, column=column
        )
    return converted


def _text(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A text column with missing values as ``""``."""
    if column not in frame:
        return np.full(len(frame), "", dtype=object)
    values = frame[column].astype(object)
    return values.where(values.notna(), "").map(str).to_numpy(dtype=object)


def normalize_neurons(frame: pd.DataFrame, path: str) -> pd.DataFrame:
    """Validate and complete a neuron frame (see the module docstring).

    Parameters
    ----------
    frame : pandas.DataFrame
        Needs ``id``; every other column is optional.
    path : str
        The import file, named in errors.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`NEURON_COLUMNS`, a fresh 0..N-1 index.

    Raises
    ------
    ImportFormatError
        Naming the row and column of the first bad value.
    """
    if "id" not in frame:
        raise ImportFormatError(path, "no neuron id column", column="id")
    out = pd.DataFrame({"id": as_uint64(frame["id"], path=path, column="id")})
    for column in NEURON_TEXT:
        out[column] = _text(frame, column)
    for column in POSITION:
        present = column in frame
        out[column] = _floats(frame, column, path, finite=False) if present else np.nan
    zero = np.flatnonzero(out["id"].to_numpy() == 0)
    if zero.size:
        raise ImportFormatError(path, "neuron id 0 is background", row=int(zero[0]), column="id")
    return out


def normalize_synapses(frame: pd.DataFrame, path: str, *, now: float | None = None) -> pd.DataFrame:
    """Validate and complete a synapse frame (see the module docstring).

    Needs ``pre_id`` and ``post_id`` and at least one location: the centre ``z/y/x``
    or both ``pre_*`` and ``post_*``. A missing centre is the midpoint of pre and post;
    missing pre or post locations are the centre.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows to import.
    path : str
        The import file, named in errors.
    now : float, optional
        Timestamp for missing ``created``/``updated`` (default: the current time).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SYNAPSE_COLUMNS`, a fresh 0..N-1 index.

    Raises
    ------
    ImportFormatError
        Naming the row and column of the first bad value.
    """
    for column in ("pre_id", "post_id"):
        if column not in frame:
            raise ImportFormatError(path, "missing column", column=column)
    has = {
        name: all(c in frame for c in cols)
        for name, cols in (("ctr", POSITION), ("pre", PRE), ("post", POST))
    }
    if not has["ctr"] and not (has["pre"] and has["post"]):
        raise ImportFormatError(path, "synapses need z/y/x or both pre_* and post_* locations")
    n = len(frame)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    if "id" in frame:
        out["id"] = as_uint64(frame["id"], path=path, column="id")
    else:
        out["id"] = np.zeros(n, dtype=np.uint64)
    out["pre_id"] = as_uint64(frame["pre_id"], path=path, column="pre_id")
    out["post_id"] = as_uint64(frame["post_id"], path=path, column="post_id")
    points = {
        name: np.stack([_floats(frame, c, path, finite=True) for c in cols], axis=1)
        for name, cols in (("ctr", POSITION), ("pre", PRE), ("post", POST))
        if has[name]
    }
    ctr = points.get("ctr")
    if ctr is None:
        ctr = (points["pre"] + points["post"]) / 2
    for name, cols in (("pre", PRE), ("post", POST)):
        values = points.get(name, ctr)
        for i, column in enumerate(cols):
            out[column] = values[:, i]
    for i, column in enumerate(POSITION):
        out[column] = ctr[:, i]
    out["confidence"] = (
        _floats(frame, "confidence", path, finite=False) if "confidence" in frame else np.nan
    )
    out["status"] = _statuses(frame, path)
    out["reviewer"] = _text(frame, "reviewer")
    stamp = time.time() if now is None else now
    for column in ("created", "updated"):
        out[column] = _timestamps(frame, column, path, stamp)
    return out[list(SYNAPSE_COLUMNS)]


def _statuses(frame: pd.DataFrame, path: str) -> np.ndarray:
    """The review status column, ``unreviewed`` where missing."""
    values = _text(frame, "status")
    values = np.where(values == "", "unreviewed", values).astype(object)
    values = np.array([v.strip().lower() for v in values], dtype=object)
    bad = np.flatnonzero(~np.isin(values, SYNAPSE_STATUSES))
    if bad.size:
        row = int(bad[0])
        raise ImportFormatError(
            path, f"status must be one of {', '.join(SYNAPSE_STATUSES)}", row=row, column="status"
        )
    return values


def _timestamps(frame: pd.DataFrame, column: str, path: str, default: float) -> np.ndarray:
    """Epoch seconds from numbers or date strings; ``default`` where missing."""
    if column not in frame:
        return np.full(len(frame), default)
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
    else:
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy() & raw.notna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise ImportFormatError(path, f"not a date: {raw.iloc[row]!r}", row=row, column=column)
        # seconds since the epoch whatever the datetime unit (pandas 3 parses to us)
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        values = pd.Series(seconds).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(values), default, values)


def drop_identical_duplicates(frame: pd.DataFrame, table: str, path: str) -> pd.DataFrame:
    """Drop rows repeated exactly; raise on ids repeated with different contents.

    Parameters
    ----------
    frame : pandas.DataFrame
        A normalised frame with an ``id`` column (0 ids are never duplicates).
    table : str
        ``"neurons"`` or ``"synapses"``, for the message.
    path : str
        The import file, for the message.

    Returns
    -------
    pandas.DataFrame
        ``frame`` without exact repeats.

    Raises
    ------
    ConflictError
        If one id appears with two different rows.
    """
    ids = frame["id"].to_numpy()
    keyed = ids != 0
    if not keyed.any() or np.unique(ids[keyed]).size == keyed.sum():
        return frame
    compare = [c for c in frame.columns if c not in ("created", "updated")]
    unique_rows = frame[keyed].drop_duplicates(subset=compare)
    repeated = unique_rows["id"].duplicated(keep=False)
    if repeated.any():
        bad = np.unique(unique_rows.loc[repeated, "id"].to_numpy())
        raise ConflictError(table, bad.tolist(), f"within {path}")
    kept = pd.concat([unique_rows, frame[~keyed]]).sort_index()
    return kept.reset_index(drop=True)
