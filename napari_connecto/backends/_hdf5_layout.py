"""HDF5 layout: finding volumes and multiscale levels in a file, reading their scales.

Used by :class:`~napari_connecto.backends.hdf5.HDF5Backend`: a dataset's voxel size
and offset (CREMI-style ``resolution``/``offset`` attributes), the ``s0, s1, ...``
levels of a multiscale group, the volumes below a group (bounded walk, external links
never followed), and attributes made JSON-safe for ``describe``.
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from napari_connecto.backends._meta import (
    check_chunk,
    check_dtype,
    check_positive_ints,
    check_resolution,
    check_vector_nm,
    guess_kind,
)
from napari_connecto.backends.cremi import (
    check_offset,
)
from napari_connecto.errors import (
    MetadataError,
    SourceNotFoundError,
    UnsafeDataError,
    UnsupportedEncodingError,
)
from napari_connecto.geometry import Vec3
from napari_connecto.volume.scale import Scale

if TYPE_CHECKING:
    from napari_connecto.backends.base import Kind
    from napari_connecto.source import Source
    from napari_connecto.volume.scale import Index3

__all__ = [
    "DEFAULT_PLANE",
    "MAX_WALK_DEPTH",
    "MAX_WALK_OBJECTS",
    "READ_ERRORS",
    "dataset_scale",
    "dtype_of",
    "find_volumes",
    "json_attrs",
    "json_safe",
    "kind_for",
    "level_scales",
    "multiscale_levels",
    "read_attr",
    "resolve",
]

logger = logging.getLogger(__name__)

DEFAULT_PLANE = 512
"""Contiguous datasets are read in ``(1, 512, 512)`` blocks (their rows are contiguous)."""
MAX_WALK_OBJECTS = 10_000
"""Largest number of objects inspected when listing a file's volumes."""
MAX_WALK_DEPTH = 8
"""Deepest group nesting inspected when listing a file's volumes."""
_LEVEL_NAME = re.compile(r"^(s?)(\d+)$")
READ_ERRORS = (OSError, ValueError, RuntimeError, TypeError, KeyError)


def resolve(h5: h5py.File, inner: str, source: Source) -> h5py.Group | h5py.Dataset:
    """The object at ``inner`` in ``h5``, refusing external links.

    Raises
    ------
    SourceNotFoundError
        If nothing is at ``inner``.
    UnsafeDataError
        If the path crosses an external link (into another file).
    """
    obj: h5py.Group | h5py.Dataset = h5
    for part in [p for p in inner.split("/") if p]:
        if not isinstance(obj, h5py.Group):
            raise SourceNotFoundError(str(source), f"{obj.name!r} is a dataset, not a group")
        try:
            link = obj.get(part, getlink=True)
            external = isinstance(link, h5py.ExternalLink)
            child = obj.get(part) if link is not None and not external else None
        except READ_ERRORS as exc:
            raise MetadataError(f"{source.location}#{inner}", part, f"unreadable: {exc}") from exc
        if external:
            raise UnsafeDataError(f"{source.location}#{inner}", part, "external links are refused")
        if child is None:
            raise SourceNotFoundError(str(source), f"no {inner!r} inside {source.location}")
        obj = child
    if obj.file.filename != h5.filename:
        raise UnsafeDataError(f"{source.location}#{inner}", "", "leads into another file")
    return obj


def read_attr(obj: h5py.HLObject, name: str, where: str) -> Any:
    """Attribute ``name`` of ``obj`` as plain Python values, or ``None`` if absent."""
    try:
        if name not in obj.attrs:
            return None
        value = obj.attrs[name]
    except READ_ERRORS as exc:
        raise MetadataError(where, name, f"unreadable attribute ({exc})") from exc
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def kind_for(path: str, dtype: np.dtype) -> Kind:
    """``"segmentation"`` for integer label dtypes or label-like names, else ``"image"``."""
    return guess_kind(path.split("/"), dtype)


def multiscale_levels(group: h5py.Group) -> list[str]:
    """Names of the level datasets (``s0, s1, ...`` or ``0, 1, ...``) of a multiscale group."""
    if not isinstance(group, h5py.Group):
        return []
    levels: dict[str, list[tuple[int, str]]] = {"": [], "s": []}
    try:
        for name in itertools.islice(group, MAX_WALK_OBJECTS):
            match = _LEVEL_NAME.match(name)
            if match is None or not isinstance(group.get(name, getlink=True), h5py.HardLink):
                continue
            if group.get(name, getclass=True) is h5py.Dataset:
                levels[match.group(1)].append((int(match.group(2)), name))
    except READ_ERRORS:
        return []
    for found in levels.values():
        if found and min(found)[0] == 0:
            return [name for _, name in sorted(found)]
    return []


def find_volumes(group: h5py.Group) -> list[str]:
    """Paths of every 3D numeric dataset and multiscale group below ``group`` (bounded walk).

    Only hard links are followed; at most :data:`MAX_WALK_OBJECTS` objects and
    :data:`MAX_WALK_DEPTH` levels are inspected; unreadable objects are skipped.
    """
    found: list[str] = []
    todo: list[tuple[h5py.Group, str, int]] = [(group, group.name.strip("/"), 0)]
    budget = MAX_WALK_OBJECTS
    while todo and budget > 0:
        current, prefix, depth = todo.pop(0)
        try:
            names = list(itertools.islice(current, budget))
        except READ_ERRORS as exc:
            logger.warning("cannot list %s: %s", prefix or "/", exc)
            continue
        budget -= len(names)
        for name in names:
            path = f"{prefix}/{name}".lstrip("/")
            try:
                child = _walk_child(current, name)
            except READ_ERRORS as exc:
                logger.warning("skipping unreadable %s: %s", path, exc)
                continue
            if isinstance(child, h5py.Dataset):
                if child.ndim == 3 and child.dtype.kind in "biuf":
                    found.append(path)
            elif multiscale_levels(child):
                found.append(path)
            elif isinstance(child, h5py.Group) and depth < MAX_WALK_DEPTH:
                todo.append((child, path, depth + 1))
    if budget <= 0:
        logger.warning("stopped listing %s after %d objects", group.file.filename, MAX_WALK_OBJECTS)
    return found


def _walk_child(group: h5py.Group, name: str) -> h5py.Group | h5py.Dataset | None:
    """The object ``name`` in ``group`` if it is a hard link, else ``None``."""
    if not isinstance(group.get(name, getlink=True), h5py.HardLink):
        return None
    return group.get(name)


def _vector_attr(ds: h5py.Dataset, name: str, where: str, pad: float) -> Vec3 | None:
    """A z, y, x ``resolution`` or ``offset`` attribute (y, x accepted on 2D datasets)."""
    value = read_attr(ds, name, where)
    if value is None:
        return None
    n = 2 if ds.ndim == 2 and isinstance(value, list) and len(value) == 2 else 3
    check = check_resolution if name == "resolution" else check_offset
    values = check(where, name, value, n)
    return Vec3.of((pad, *values) if n == 2 else values)


def _filters(ds: h5py.Dataset, where: str) -> list[str]:
    """Names of the dataset's filters, refusing any this HDF5 library cannot decode."""
    plist = ds.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        code, _flags, _values, raw_name = plist.get_filter(i)
        name = raw_name.decode("utf-8", "replace") or f"filter-{code}"
        if not h5py.h5z.filter_avail(code):
            raise UnsupportedEncodingError(
                where, "filters", f"HDF5 filter {name!r} (id {code}) is not available"
            )
        names.append(name)
    return names


def _chunk_shape(ds: h5py.Dataset, shape: Index3, where: str) -> Index3:
    if ds.chunks is None:
        chunk = (1, min(shape[1], DEFAULT_PLANE), min(shape[2], DEFAULT_PLANE))
    else:
        chunk = tuple(ds.chunks) if ds.ndim == 3 else (1, *ds.chunks)
    return check_chunk(where, "chunks", list(chunk), 3, ds.dtype.itemsize)  # type: ignore[return-value]


def dataset_scale(ds: h5py.Dataset, where: str, default_res: Vec3 | None = None) -> Scale:
    """The :class:`Scale` of one 2D or 3D dataset, its metadata validated.

    Raises
    ------
    MetadataError
        If the shape, chunks, ``resolution`` or ``offset`` are malformed.
    UnsupportedEncodingError, UnsafeDataError
        If the dtype or a filter cannot be decoded.
    """
    if ds.ndim not in (2, 3):
        raise UnsupportedEncodingError(where, "shape", f"expected a 2D or 3D dataset: {ds.shape}")
    dtype = check_dtype(where, "dtype", ds.dtype).newbyteorder("=")
    raw_shape = check_positive_ints(where, "shape", list(ds.shape), ds.ndim)
    shape: Index3 = (1, *raw_shape) if ds.ndim == 2 else raw_shape  # type: ignore[assignment]
    resolution = _vector_attr(ds, "resolution", where, 1.0) or default_res or Vec3(1, 1, 1)
    translation = _vector_attr(ds, "offset", where, 0.0) or Vec3(0.0, 0.0, 0.0)
    return Scale(
        shape=shape,
        resolution=resolution,
        chunk_shape=_chunk_shape(ds, shape, where),
        dtype=dtype,
        encoding="+".join(_filters(ds, where)) or "raw",
        key=ds.name.lstrip("/"),
        translation_nm=translation,
    )


def level_scales(group: h5py.Group, names: list[str], where: str) -> list[Scale]:
    """One scale per level of a multiscale group; missing resolutions follow the shapes."""
    base = read_attr(group, "resolution", where)
    base_res = Vec3.of(check_resolution(where, "resolution", base)) if base is not None else None
    scales: list[Scale] = []
    rank = group[names[0]].ndim if names else 0
    for name in names:
        ds = group[name]
        level = f"{where}/{name}"
        default = base_res
        if scales:
            if ds.ndim != rank:
                raise MetadataError(
                    level, "shape", f"level {name} has {ds.ndim} dimensions, {names[0]} has {rank}"
                )
            first = scales[0]
            shape = check_positive_ints(level, "shape", list(_shape3(ds)), 3)
            ratio = [max(1, round(a / b)) for a, b in zip(first.shape, shape, strict=True)]
            default = Vec3.of(
                check_vector_nm(level, "resolution", first.resolution * ratio, positive=True)
            )
        scale = dataset_scale(ds, level, default)
        if scales and scale.dtype != scales[0].dtype:
            raise MetadataError(f"{where}/{name}", "dtype", "levels of one volume differ in dtype")
        scales.append(scale)
    return scales


def _shape3(ds: h5py.Dataset) -> tuple[int, ...]:
    return tuple(ds.shape) if ds.ndim == 3 else (1, *ds.shape)


def json_safe(value: Any) -> Any:
    """An attribute value as JSON can hold it (numpy scalars and small arrays as lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"<array {value.shape} {value.dtype}>"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


def json_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """The attributes of ``obj`` as JSON-serialisable values (unreadable ones named so)."""
    out: dict[str, Any] = {}
    for name in obj.attrs:
        try:
            out[name] = json_safe(obj.attrs[name])
        except READ_ERRORS:
            out[name] = "<unreadable>"
    return out


def dtype_of(obj: h5py.Dataset | h5py.Group) -> np.dtype:
    """The dtype of a dataset, or of the first level of a multiscale group."""
    if isinstance(obj, h5py.Dataset):
        return obj.dtype
    return obj[multiscale_levels(obj)[0]].dtype
