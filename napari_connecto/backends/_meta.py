"""Validation shared by backends: metadata is checked before anything is allocated from it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_connecto.errors import (
    MetadataError,
    SourceNotFoundError,
    UnsafeDataError,
    UnsupportedEncodingError,
)

__all__ = [
    "MAX_AXIS",
    "guess_kind",
    "MAX_CHUNK_BYTES",
    "check_dtype",
    "check_positive_ints",
    "check_resolution",
    "load_json",
    "safe_join",
]

MAX_AXIS = 2**32
"""Largest extent accepted per axis (voxels): far beyond any real dataset, far below absurd."""
MAX_METADATA_BYTES = 64 * 2**20
"""Largest metadata document read (bytes); real ones are kilobytes."""
MAX_CHUNK_BYTES = 2**31
"""Largest single chunk accepted (bytes); one chunk must fit in memory."""
_DTYPES = {
    "bool", "uint8", "int8", "uint16", "int16", "uint32", "int32",
    "uint64", "int64", "float32", "float64",
}  # fmt: skip


_SEGMENTATION_NAME = re.compile(
    r"label|seg|neuron|cleft|(?:^|[_\-./])ids?(?:$|[_\-./])", re.IGNORECASE
)


def guess_kind(names: str | Sequence[str], dtype: np.dtype) -> Literal["image", "segmentation"]:
    """Whether a volume without explicit metadata is an image or a segmentation.

    Float and bool data are images; 32/64-bit integers are segment ids; other
    integers are ids only when a name (dataset, group) says so (``labels``,
    ``seg``, ``neuron_ids``, ``clefts``, ``ids``).
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return "image"
    if dtype.itemsize >= 4:
        return "segmentation"
    names = [names] if isinstance(names, str) else list(names)
    return "segmentation" if any(_SEGMENTATION_NAME.search(n) for n in names) else "image"


def load_json(path: Path, *, required: bool = True) -> dict[str, Any] | None:
    """Read a JSON object from ``path``.

    Raises
    ------
    SourceNotFoundError
        If the file is missing and ``required``.
    MetadataError
        If the file is not a JSON object.
    """
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise MetadataError(str(path), "", f"larger than {MAX_METADATA_BYTES} bytes")
        text = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise SourceNotFoundError(str(path)) from None
        return None
    except IsADirectoryError:
        raise MetadataError(str(path), "", "is a directory, expected a JSON file") from None
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetadataError(str(path), "", f"not valid JSON ({exc})") from None
    except RecursionError:
        raise MetadataError(str(path), "", "JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise MetadataError(str(path), "", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def check_positive_ints(
    path: str, field: str, value: Any, ndim: int, *, limit: int = MAX_AXIS
) -> tuple[int, ...]:
    """Validate a list of ``ndim`` positive integers no larger than ``limit``."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != ndim:
        raise MetadataError(path, field, f"expected {ndim} integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
            raise MetadataError(path, field, f"expected integers, got {value!r}")
        if not 0 < v <= limit:
            raise MetadataError(path, field, f"value {v} is outside 1..{limit}")
        out.append(int(v))
    return tuple(out)


def check_chunk(path: str, field: str, value: Any, ndim: int, itemsize: int) -> tuple[int, ...]:
    """Validate a chunk shape: positive integers whose chunk fits in memory."""
    chunk = check_positive_ints(path, field, value, ndim)
    if math.prod(chunk) * itemsize > MAX_CHUNK_BYTES:
        raise MetadataError(path, field, f"chunk {chunk} is larger than {MAX_CHUNK_BYTES} bytes")
    return chunk


def check_resolution(path: str, field: str, value: Any, ndim: int = 3) -> tuple[float, ...]:
    """Validate a list of ``ndim`` finite, positive voxel sizes."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != ndim:
        raise MetadataError(path, field, f"expected {ndim} numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise MetadataError(path, field, f"expected positive numbers, got {value!r}")
        out.append(float(v))
    return tuple(out)


def check_dtype(path: str, field: str, value: Any) -> np.dtype:
    """Turn a dtype name into a numpy dtype, refusing object, string and unknown types."""
    if isinstance(value, str) and value.lower() in _DTYPES:
        return np.dtype(value.lower())
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError):
        raise UnsupportedEncodingError(path, field, f"unknown data type {value!r}") from None
    if dtype.hasobject:
        raise UnsafeDataError(path, field, "object data types are refused (they need pickle)")
    if dtype.kind not in "biuf":
        raise UnsupportedEncodingError(path, field, f"unsupported data type {value!r}")
    return dtype


def safe_join(root: Path, key: str, *, path: str, field: str) -> Path:
    """Join ``key`` below ``root``, refusing anything that escapes it."""
    if not isinstance(key, str) or not key or "\x00" in key:
        raise MetadataError(path, field, f"invalid key {key!r}")
    candidate = (root / key).resolve()
    base = root.resolve()
    if candidate != base and base not in candidate.parents:
        raise UnsafeDataError(path, field, f"key {key!r} escapes the dataset root {root}")
    return candidate
