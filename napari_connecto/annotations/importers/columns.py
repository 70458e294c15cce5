"""Column mapping for tables: common names, explicit mappings, position vectors, ``valid``.

A table's columns are matched (case-insensitively) against the aliases below, first alias
first; an explicit ``mapping`` (file column -> normalised column) wins over them. Besides
the normalised columns of :mod:`~napari_connecto.annotations.frames` there are three
*vector* targets, ``position``, ``pre_position`` and ``post_position``: one column holding
``x, y, z`` as text (``"[x y z]"``, ``"(x, y, z)"``) or a list, in that order (as CAVE
and neuroglancer write them). Split ``z/y/x`` columns win over a vector column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from napari_connecto.annotations.importers.registry import Kind
from napari_connecto.errors import ImportFormatError

__all__ = [
    "ID_TARGETS",
    "NEURON_ALIASES",
    "SYNAPSE_ALIASES",
    "VECTOR_TARGETS",
    "build_frame",
    "guess_kind",
    "numbers",
    "parse_vectors",
    "resolve_columns",
    "timestamps",
    "valid_mask",
]


def _xyz(prefixes: Iterable[str], axis: str) -> tuple[str, ...]:
    """Names ``{prefix}{axis}`` for every prefix."""
    return tuple(f"{p}{axis}" for p in prefixes)


_CTR = ("", "ctr_", "ctr_pt_", "ctr_pt_position_", "center_", "centre_")
_PRE = ("pre_", "pre_pt_", "pre_pt_position_", "pre_position_")
_POST = ("post_", "post_pt_", "post_pt_position_", "post_position_")
_NEURON_POINT = ("", "pt_", "pt_position_", "soma_", "keypoint_")

SYNAPSE_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "synapse_id", "syn_id"),
    "pre_id": (
        "pre_id", "pre", "pre_root_id", "pre_pt_root_id", "pre_body_id", "pre_body",
        "bodyid_pre", "pre_segment_id", "pre_neuron_id", "pre_neuron", "presynaptic",
    ),
    "post_id": (
        "post_id", "post", "post_root_id", "post_pt_root_id", "post_body_id", "post_body",
        "bodyid_post", "post_segment_id", "post_neuron_id", "post_neuron", "postsynaptic",
    ),
    **{axis: _xyz(_CTR, axis) for axis in "zyx"},
    **{f"pre_{axis}": _xyz(_PRE, axis) for axis in "zyx"},
    **{f"post_{axis}": _xyz(_POST, axis) for axis in "zyx"},
    "position": ("ctr_pt_position", "ctr_position", "position"),
    "pre_position": ("pre_pt_position", "pre_position"),
    "post_position": ("post_pt_position", "post_position"),
    "confidence": ("confidence", "score", "conf", "probability", "prob"),
    "status": ("status",),
    "reviewer": ("reviewer",),
    "created": ("created",),
    "updated": ("updated",),
}  # fmt: skip
"""Synapse column -> the file column names recognised for it, in order of preference."""

NEURON_ALIASES: dict[str, tuple[str, ...]] = {
    "id": (
        "pt_root_id", "root_id", "neuron_id", "body_id", "bodyid", "segment_id", "segid", "id",
    ),
    "name": ("name", "instance", "cell_name", "neuron_name"),
    "type": ("type", "cell_type", "celltype", "classification"),
    "status": ("status",),
    "notes": ("notes", "note", "comment", "comments", "description"),
    **{axis: _xyz(_NEURON_POINT, axis) for axis in "zyx"},
    "position": ("pt_position", "position", "soma_position", "keypoint"),
}  # fmt: skip
"""Neuron column -> the file column names recognised for it, in order of preference.

Root ids come before ``id``: in a CAVE cell-type table ``id`` is the annotation's id and
``pt_root_id`` the neuron's."""

VECTOR_TARGETS: dict[str, tuple[str, str, str]] = {
    "position": ("z", "y", "x"),
    "pre_position": ("pre_z", "pre_y", "pre_x"),
    "post_position": ("post_z", "post_y", "post_x"),
}
"""Vector targets and the z, y, x columns they fill."""
ID_TARGETS = ("id", "pre_id", "post_id")
"""Targets read as exact integers (never through float)."""
_POSITIONS = frozenset(c for cols in VECTOR_TARGETS.values() for c in cols)
_SEPARATORS = str.maketrans("[](),", "     ")
_TRUE = frozenset({"t", "true", "1", "y", "yes"})
_FALSE = frozenset({"f", "false", "0", "n", "no"})


def _aliases(kind: Kind) -> dict[str, tuple[str, ...]]:
    return SYNAPSE_ALIASES if kind == "synapses" else NEURON_ALIASES


def guess_kind(columns: Sequence[str], mapping: Mapping[str, str] | None, path: str) -> Kind:
    """``"synapses"`` if the columns name pre and post neurons, else ``"neurons"``.

    Raises
    ------
    ImportFormatError
        If the columns name neither (no partners and no neuron id).
    """
    targets = set((mapping or {}).values())
    lowered = {c.lower() for c in columns}
    found = {t for t in ("pre_id", "post_id") if lowered & set(SYNAPSE_ALIASES[t])}
    if {"pre_id", "post_id"} <= targets | found:
        return "synapses"
    if "id" in targets or lowered & set(NEURON_ALIASES["id"]):
        return "neurons"
    raise ImportFormatError(
        path,
        "cannot tell synapses from neurons: no pre/post id columns and no neuron id column "
        f"(columns: {', '.join(columns)}); pass mapping= or kind=",
    )


def resolve_columns(
    columns: Sequence[str], kind: Kind, mapping: Mapping[str, str] | None, path: str
) -> dict[str, str]:
    """Normalised (or vector) column -> the file column that fills it.

    Parameters
    ----------
    columns : sequence of str
        The file's column names.
    kind : {"synapses", "neurons"}
        What the rows are.
    mapping : mapping, optional
        File column -> target, applied first; the aliases fill the remaining targets.
    path : str
        The file, for errors.

    Raises
    ------
    ImportFormatError
        If ``mapping`` names a column the file lacks or a target that does not exist.
    """
    aliases = _aliases(kind)
    resolved: dict[str, str] = {}
    for source, target in (mapping or {}).items():
        if source not in columns:
            raise ImportFormatError(
                path,
                f"mapped column not in the file (columns: {', '.join(columns)})",
                column=source,
            )
        if target not in aliases:
            raise ImportFormatError(
                path,
                f"unknown {kind} column {target!r}; known: {', '.join(aliases)}",
                column=source,
            )
        resolved[target] = source
    used = set(resolved.values())
    by_lower: dict[str, str] = {}
    for c in columns:
        by_lower.setdefault(c.lower(), c)
    for target, names in aliases.items():
        if target in resolved:
            continue
        hit = next((by_lower[n] for n in names if n in by_lower and by_lower[n] not in used), None)
        if hit is not None:
            resolved[target] = hit
            used.add(hit)
    return resolved


def numbers(values: pd.Series | Sequence[object], path: str, column: str) -> np.ndarray:
    """float64 values, NaN where empty; the first non-numeric or infinite row is named.

    Raises
    ------
    ImportFormatError
        On a non-numeric or infinite value.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    converted = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isinf(converted) | (np.isnan(converted) & series.notna().to_numpy()))
    if bad.size:
        row = int(bad[0])
        problem = f"not a number: {series.iloc[row]!r}"
        raise ImportFormatError(path, problem, row=row, column=column)
    return converted


def _is_missing(value: object) -> bool:
    """An empty cell (NaN, None, "")."""
    if isinstance(value, list | tuple | np.ndarray):
        return False
    return value is None or value == "" or bool(pd.isna(value))  # type: ignore[arg-type]


def _fast_vectors(texts: list[str]) -> np.ndarray | None:
    """``(N, 3)`` floats if every text is exactly three finite numbers, else ``None``."""
    tokens = (" ; ".join(texts) + " ;").translate(_SEPARATORS).split()
    if len(tokens) != 4 * len(texts) or any(t != ";" for t in tokens[3::4]):
        return None
    del tokens[3::4]
    try:
        values = np.array(tokens, dtype=np.float64).reshape(-1, 3)
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None


def parse_vectors(values: pd.Series, path: str, column: str) -> np.ndarray:
    """``(N, 3)`` floats, in the file's order, from ``"[x y z]"``/``"(x, y, z)"`` or lists.

    Empty cells give NaN (a neuron without keypoint; synapses are checked later).

    Raises
    ------
    ImportFormatError
        Naming the row of the first value that is not three finite numbers.
    """
    out = np.full((len(values), 3), np.nan)
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
        empty = (values.isna() | (values == "")).to_numpy(dtype=bool)
    else:
        empty = np.array([_is_missing(v) for v in values.tolist()], dtype=bool)
    present = np.flatnonzero(~empty)
    if present.size == 0:
        return out
    texts = values.iloc[present]
    strings = texts.tolist()
    if all(isinstance(v, str) for v in strings):
        fast = _fast_vectors(strings)
        if fast is not None:
            out[present] = fast
            return out
    for row, value in zip(present.tolist(), values.iloc[present].tolist(), strict=True):
        if isinstance(value, list | tuple | np.ndarray):
            parts = list(np.asarray(value, dtype=object).ravel())
        else:
            parts = [p for p in re.split(r"[\s,\[\]()]+", str(value)) if p]
        try:
            xyz = [float(p) for p in parts]
        except (TypeError, ValueError):
            xyz = []
        if len(xyz) != 3 or not all(math.isfinite(v) for v in xyz):
            problem = f"not an x, y, z position: {value!r}"
            raise ImportFormatError(path, problem, row=row, column=column)
        out[row] = xyz
    return out


def timestamps(values: pd.Series, path: str, column: str) -> np.ndarray:
    """Seconds since the epoch (UTC) from numbers or date text; NaN where empty.

    Raises
    ------
    ImportFormatError
        Naming the first value that is neither a number nor a date.
    """
    series = values.reset_index(drop=True)
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().sum() == series.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy() & series.notna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise ImportFormatError(path, f"not a date: {series.iloc[row]!r}", row=row, column=column)
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.float64, na_value=np.nan)


def valid_mask(values: pd.Series, path: str, column: str) -> np.ndarray:
    """Which rows are valid: ``t``/``true``/``1`` (any case) or True; ``f``/``false``/``0`` not.

    Raises
    ------
    ImportFormatError
        Naming the first value that is neither.
    """
    out = np.zeros(len(values), dtype=bool)
    for row, value in enumerate(values.tolist()):
        if isinstance(value, bool | np.bool_):
            out[row] = bool(value)
            continue
        text = str(value).strip().lower()
        if text.endswith(".0"):
            text = text[:-2]
        if text in _TRUE:
            out[row] = True
        elif text not in _FALSE:
            raise ImportFormatError(path, f"not a boolean: {value!r}", row=row, column=column)
    return out


def build_frame(
    raw: pd.DataFrame,
    resolved: Mapping[str, str],
    path: str,
    resolution: Sequence[float] | None,
    *,
    vectors_zyx: bool = False,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The frame with normalised column names, positions in nm (z, y, x).

    Parameters
    ----------
    raw : pandas.DataFrame
        The file's rows, its own column names.
    resolved : mapping
        Target -> file column (see :func:`resolve_columns`).
    path : str
        The file, for errors.
    resolution : sequence of float, optional
        z, y, x nm per voxel when the positions are voxel coordinates; ``None`` = nm.
    vectors_zyx : bool
        Whether vector columns are already z, y, x (default x, y, z).

    Returns
    -------
    tuple
        The frame (ids untouched, positions as float64 nm) and target -> file column,
        for naming columns in errors.

    Raises
    ------
    ImportFormatError
        On a malformed position, naming the row and the file's column.
    """
    scale = np.ones(3) if resolution is None else np.asarray(resolution, dtype=np.float64)
    frame = pd.DataFrame(index=pd.RangeIndex(len(raw)))
    names: dict[str, str] = {}
    for target, source in resolved.items():
        if target in VECTOR_TARGETS:
            continue
        names[target] = source
        if target in _POSITIONS:
            axis = "zyx".index(target[-1])
            frame[target] = numbers(raw[source].reset_index(drop=True), path, source) * scale[axis]
        elif target in ("created", "updated"):
            frame[target] = timestamps(raw[source], path, source)
        else:
            frame[target] = raw[source].reset_index(drop=True)
    for target, cols in VECTOR_TARGETS.items():
        source = resolved.get(target)
        if source is None or any(c in frame for c in cols):
            continue
        xyz = parse_vectors(raw[source].reset_index(drop=True), path, source)
        zyx = xyz if vectors_zyx else xyz[:, ::-1]
        for i, column in enumerate(cols):
            frame[column] = zyx[:, i] * scale[i]
            names[column] = source
    return frame, names
