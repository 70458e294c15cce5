"""Validation shared by backends: metadata is checked before anything is allocated from it."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_connecto.errors import (
    MetadataError,
    RemoteError,
    SourceNotFoundError,
    UnsafeDataError,
    UnsupportedEncodingError,
)

__all__ = [
    "MAX_AXIS",
    "MAX_VOXEL_SIZE",
    "guess_kind",
    "MAX_CHUNK_BYTES",
    "check_dtype",
    "check_offset",
    "check_positive_ints",
    "check_resolution",
    "check_vector_nm",
    "load_json",
    "safe_join",
]

MAX_AXIS = 2**32
"""Largest extent accepted per axis (voxels): far beyond any real dataset, far below absurd."""
MAX_METADATA_BYTES = 64 * 2**20
"""Largest metadata document read (bytes); real ones are kilobytes."""
MAX_CHUNK_BYTES = 2**31
"""Largest single chunk accepted (bytes); one chunk must fit in memory."""
MAX_VOXEL_SIZE = 1e12
"""Largest voxel size accepted (1 km in nm): with :data:`MAX_AXIS` voxels, every extent
and origin stays finite (``2**32 * 1e12`` is far below the float range)."""
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

    Only a regular file (symlinks followed) of at most :data:`MAX_METADATA_BYTES`
    is read: a device, FIFO or socket is refused without reading from it (it is
    opened non-blocking and checked with ``fstat``, so a FIFO cannot hang). The
    non-standard constants ``NaN``, ``Infinity`` and ``-Infinity`` and numbers
    that overflow to infinity (``1e400``) are refused.

    Raises
    ------
    SourceNotFoundError
        If the file is missing and ``required``.
    MetadataError
        If the file is not a regular file, unreadable, too large or not a JSON object.
    """
    where = str(path)
    try:
        text = _read_capped(path, where)
    except RemoteError:
        raise
    except (FileNotFoundError, NotADirectoryError):
        if required:
            raise SourceNotFoundError(where) from None
        return None
    except OSError as exc:
        raise MetadataError(where, "", f"cannot be read ({exc.strerror or exc})") from None
    try:
        doc = json.loads(
            text,
            parse_constant=functools.partial(_refuse_constant, where),
            parse_float=functools.partial(_finite_float, where),
        )
    except MetadataError:
        raise
    except RecursionError:
        raise MetadataError(where, "", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise MetadataError(where, "", f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MetadataError(where, "", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _read_capped(path: Path, where: str) -> bytes:
    """The bytes of the regular file ``path``, refusing others and anything too large."""
    if not isinstance(path, Path):  # a remote UrlPath: its body, fetched once
        text = path.read_bytes()
        if len(text) > MAX_METADATA_BYTES:
            raise MetadataError(where, "", f"larger than {MAX_METADATA_BYTES} bytes")
        return text
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise MetadataError(where, "", "is a directory, expected a JSON file") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise MetadataError(where, "", "is a directory, expected a JSON file")
        if not stat.S_ISREG(info.st_mode):
            raise MetadataError(where, "", "is not a regular file (device, FIFO or socket)")
        # Read what fstat announced, then in small blocks should the file grow meanwhile:
        # never more than the cap, never a cap-sized buffer for a small file.
        parts = [fh.read(min(info.st_size, MAX_METADATA_BYTES) + 1)]
        total = len(parts[0])
        while total <= MAX_METADATA_BYTES and (
            part := fh.read(min(2**20, MAX_METADATA_BYTES + 1 - total))
        ):
            parts.append(part)
            total += len(part)
    if total > MAX_METADATA_BYTES:
        raise MetadataError(where, "", f"larger than {MAX_METADATA_BYTES} bytes")
    return b"".join(parts)


def _refuse_constant(where: str, name: str) -> Any:
    raise MetadataError(where, "", f"{name} is not valid JSON (non-finite numbers are refused)")


def _finite_float(where: str, text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MetadataError(where, "", f"number {text[:40]} overflows to infinity")
    return value


def _is_number(v: Any) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _finite(v: Any) -> float | None:
    """``v`` as a finite float, or ``None`` if it is not a finite real number (or a bool)."""
    if not _is_number(v):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer beyond the float range
        return None
    return f if math.isfinite(f) else None


def _is_vector(value: Any, ndim: int) -> bool:
    """A list/tuple-like of length ``ndim``; strings and bytes are not vectors."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes | bytearray | memoryview)
        and len(value) == ndim
    )


def check_positive_ints(
    path: str, field: str, value: Any, ndim: int, *, limit: int = MAX_AXIS
) -> tuple[int, ...]:
    """Validate a list of ``ndim`` positive integers no larger than ``limit``.

    Integral floats (``4.0``) are accepted; bools, strings, bytes, NaN and
    infinities are not.
    """
    if not _is_vector(value, ndim):
        raise MetadataError(path, field, f"expected {ndim} integers, got {value!r:.200}")
    out = []
    for v in value:
        if isinstance(v, int | np.integer) and _is_number(v):
            n = int(v)
        elif (f := _finite(v)) is not None and f.is_integer():
            n = int(f)
        else:
            raise MetadataError(path, field, f"expected integers, got {value!r:.200}")
        if not 0 < n <= limit:
            raise MetadataError(path, field, f"value {n} is outside 1..{limit}")
        out.append(n)
    return tuple(out)


def check_chunk(path: str, field: str, value: Any, ndim: int, itemsize: int) -> tuple[int, ...]:
    """Validate a chunk shape: positive integers whose chunk fits in memory."""
    chunk = check_positive_ints(path, field, value, ndim)
    if math.prod(chunk) * itemsize > MAX_CHUNK_BYTES:
        raise MetadataError(path, field, f"chunk {chunk} is larger than {MAX_CHUNK_BYTES} bytes")
    return chunk


def check_resolution(path: str, field: str, value: Any, ndim: int = 3) -> tuple[float, ...]:
    """Validate a list of ``ndim`` finite, positive voxel sizes (at most :data:`MAX_VOXEL_SIZE`)."""
    if not _is_vector(value, ndim):
        raise MetadataError(path, field, f"expected {ndim} numbers, got {value!r:.200}")
    out = []
    for v in value:
        f = _finite(v)
        if f is None or not 0 < f <= MAX_VOXEL_SIZE:
            raise MetadataError(
                path,
                field,
                f"expected positive numbers up to {MAX_VOXEL_SIZE:g}, got {value!r:.200}",
            )
        out.append(f)
    return tuple(out)


def check_offset(path: str, field: str, value: Any, ndim: int = 3) -> tuple[float, ...]:
    """Validate a list of ``ndim`` finite numbers of any sign (an ``offset`` in nm)."""
    if not _is_vector(value, ndim):
        raise MetadataError(path, field, f"expected {ndim} numbers, got {value!r:.200}")
    out = tuple(_finite(v) for v in value)
    if any(f is None for f in out):
        raise MetadataError(path, field, f"expected finite numbers, got {value!r:.200}")
    return out  # type: ignore[return-value]


def check_vector_nm(path: str, field: str, value: Any, *, positive: bool) -> tuple[float, ...]:
    """Check a derived vector in nm (after unit or factor products).

    Products of valid numbers can still overflow (``1e300 um * 1e3``) or vanish
    (``1e-300 * 1e-300``). ``positive`` vectors are voxel sizes: positive and at
    most :data:`MAX_VOXEL_SIZE`; others (offsets) need only be finite.
    """
    values = tuple(float(v) for v in value)
    if positive:
        if not all(0 < v <= MAX_VOXEL_SIZE for v in values):  # NaN fails too
            raise MetadataError(
                path, field, f"expected voxel sizes in (0, {MAX_VOXEL_SIZE:g}] nm, got {values}"
            )
    elif not all(math.isfinite(v) for v in values):
        raise MetadataError(path, field, f"expected finite nm values, got {values}")
    return values


def check_dtype(path: str, field: str, value: Any) -> np.dtype:
    """Turn a dtype name into a numpy dtype, refusing object, string and unknown types."""
    if isinstance(value, str) and value.lower() in _DTYPES:
        return np.dtype(value.lower())
    if not isinstance(value, str | np.dtype):  # np.dtype(None) would be float64
        raise UnsupportedEncodingError(path, field, f"unknown data type {value!r:.200}")
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
    if not isinstance(root, Path):  # a remote UrlPath: keys may not climb or hold a scheme
        candidate = root / key
        if candidate.escapes_root() or "://" in key or key.startswith("/"):
            raise UnsafeDataError(path, field, f"key {key!r} escapes the dataset root {root}")
        return candidate
    candidate = (root / key).resolve()
    base = root.resolve()
    if candidate != base and base not in candidate.parents:
        raise UnsafeDataError(path, field, f"key {key!r} escapes the dataset root {root}")
    return candidate
