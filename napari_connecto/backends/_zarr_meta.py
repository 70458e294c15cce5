"""Parse and validate zarr v2/v3 array metadata and OME-Zarr multiscales, without reading chunks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_connecto.backends._meta import (
    check_chunk,
    check_dtype,
    check_offset,
    check_positive_ints,
    check_resolution,
    check_vector_nm,
    load_json,
)
from napari_connecto.errors import MetadataError, UnsafeDataError, UnsupportedEncodingError

__all__ = [
    "ArrayMeta",
    "OmeLevel",
    "node_kind",
    "ome_attrs",
    "read_array_meta",
    "read_attributes",
    "read_ome",
]

logger = logging.getLogger(__name__)

_UNIT_NM = {
    "nanometer": 1.0, "nm": 1.0, "micrometer": 1e3, "micron": 1e3, "um": 1e3, "µm": 1e3,
    "millimeter": 1e6, "mm": 1e6, "meter": 1e9, "m": 1e9, "angstrom": 0.1, "picometer": 1e-3,
}  # fmt: skip
_REFUSED_CODECS = {"pickle", "json2", "msgpack2", "vlen-utf8", "vlen-bytes", "vlen-array"}
_TS_V3_CODECS = {"bytes", "gzip", "blosc", "zstd", "crc32c", "transpose", "sharding_indexed"}
_TS_V2_COMPRESSORS = {"blosc", "zlib", "gzip", "bz2", "zstd"}


@dataclass(frozen=True, slots=True)
class ArrayMeta:
    """What the project needs of one zarr array's metadata."""

    path: Path
    """The array directory."""
    zarr_format: int
    """2 or 3."""
    shape: tuple[int, ...]
    """Array shape, in stored axis order."""
    chunks: tuple[int, ...]
    """Read granularity: the chunk, or the inner chunk of a sharded v3 array."""
    dtype: np.dtype
    """Element type."""
    encoding: str
    """Compressor / codec chain, for display."""
    dimension_names: tuple[str | None, ...] | None
    """v3 ``dimension_names``, if present."""
    tensorstore_ok: bool
    """Whether tensorstore can decode it (else zarr-python is used)."""
    shard_shape: tuple[int, ...] | None = None
    """Outer shard shape of a sharded v3 array."""


@dataclass(frozen=True, slots=True)
class OmeLevel:
    """One dataset of an OME-Zarr multiscale, spatial parts in z, y, x nm."""

    path: str
    """Dataset path relative to the group."""
    scale_nm: tuple[float, float, float]
    """Voxel size, nm."""
    translation_nm: tuple[float, float, float]
    """Translation, nm."""


def node_kind(path: Path) -> tuple[str, int] | None:
    """``("array"|"group", zarr_format)`` for a local zarr node, or ``None``; never raises."""
    try:
        if (path / ".zarray").is_file():
            return "array", 2
        if (path / ".zgroup").is_file() or (path / ".zattrs").is_file():
            return "group", 2
        meta = path / "zarr.json"
        if meta.is_file():
            doc = load_json(meta)
            node = doc.get("node_type") if doc else None
            return (node, 3) if node in ("array", "group") else None
    except (OSError, MetadataError):
        return None
    return None


def read_attributes(path: Path, zarr_format: int) -> dict[str, Any]:
    """User attributes of a node (``.zattrs`` or ``zarr.json`` ``attributes``)."""
    if zarr_format == 2:
        return load_json(path / ".zattrs", required=False) or {}
    doc = load_json(path / "zarr.json") or {}
    attrs = doc.get("attributes", {})
    if not isinstance(attrs, dict):
        raise MetadataError(str(path / "zarr.json"), "attributes", "expected an object")
    return attrs


def read_array_meta(path: Path) -> ArrayMeta:
    """Validate one array's metadata (v2 ``.zarray`` or v3 ``zarr.json``).

    Raises
    ------
    MetadataError, UnsafeDataError, UnsupportedEncodingError
        Naming the metadata file and field.
    """
    if (path / ".zarray").is_file():
        return _read_v2(path)
    return _read_v3(path)


def _read_v2(path: Path) -> ArrayMeta:
    file = path / ".zarray"
    where = str(file)
    doc = load_json(file) or {}
    for key in ("shape", "chunks", "dtype"):
        if key not in doc:
            raise MetadataError(where, key, "missing")
    if not isinstance(doc["dtype"], str):
        raise UnsupportedEncodingError(
            where, "dtype", f"structured dtypes are not supported: {doc['dtype']!r}"
        )
    if doc["dtype"].lstrip("<>|=") in ("O", "O8"):
        raise UnsafeDataError(where, "dtype", "object arrays are refused (they need pickle)")
    dtype = check_dtype(where, "dtype", doc["dtype"])
    ndim = len(doc["shape"]) if isinstance(doc["shape"], list) else -1
    if not 1 <= ndim <= 5:
        raise MetadataError(where, "shape", f"expected 1 to 5 dimensions, got {doc['shape']!r}")
    shape = check_positive_ints(where, "shape", doc["shape"], ndim)
    chunks = check_chunk(where, "chunks", doc["chunks"], ndim, dtype.itemsize)
    _check_fill_value(where, doc.get("fill_value"), dtype)
    filters = doc.get("filters")
    if filters is None:
        filters = []
    if not isinstance(filters, list) or not all(isinstance(f, dict) for f in filters):
        raise MetadataError(
            where, "filters", f"expected null or a list of objects: {filters!r:.200}"
        )
    compressor = doc.get("compressor")
    if compressor is not None and not isinstance(compressor, dict):
        raise MetadataError(where, "compressor", f"expected null or an object: {compressor!r:.200}")
    codec_ids = [f.get("id") for f in filters]
    if compressor is not None:
        codec_ids.append(compressor.get("id"))
    _refuse_unsafe(where, "filters" if compressor is None else "filters/compressor", codec_ids)
    ts_ok = not filters and (compressor is None or compressor["id"] in _TS_V2_COMPRESSORS)
    if doc.get("order", "C") not in ("C", "F"):
        raise MetadataError(where, "order", f"expected 'C' or 'F', got {doc.get('order')!r}")
    encoding = "+".join(str(c) for c in codec_ids) or "raw"
    return ArrayMeta(path, 2, shape, chunks, dtype, encoding, None, ts_ok)


def _read_v3(path: Path) -> ArrayMeta:
    file = path / "zarr.json"
    where = str(file)
    doc = load_json(file) or {}
    if doc.get("node_type") != "array":
        raise MetadataError(where, "node_type", f"expected 'array', got {doc.get('node_type')!r}")
    for key in ("shape", "data_type", "chunk_grid", "codecs"):
        if key not in doc:
            raise MetadataError(where, key, "missing")
    dtype = check_dtype(where, "data_type", doc["data_type"])
    ndim = len(doc["shape"]) if isinstance(doc["shape"], list) else -1
    if not 1 <= ndim <= 5:
        raise MetadataError(where, "shape", f"expected 1 to 5 dimensions, got {doc['shape']!r}")
    shape = check_positive_ints(where, "shape", doc["shape"], ndim)
    grid = doc["chunk_grid"]
    try:
        outer = grid["configuration"]["chunk_shape"]
    except (KeyError, TypeError):
        raise MetadataError(
            where, "chunk_grid", "expected a regular grid with chunk_shape"
        ) from None
    chunks = check_chunk(where, "chunk_grid.chunk_shape", outer, ndim, dtype.itemsize)
    _check_fill_value(where, doc.get("fill_value"), dtype)
    codecs = doc["codecs"]
    if not isinstance(codecs, list) or not codecs:
        raise MetadataError(where, "codecs", f"expected a non-empty list, got {codecs!r:.200}")
    names = _codec_names(where, "codecs", codecs)
    shard_shape = None
    if "sharding_indexed" in names:
        field = "codecs.sharding_indexed"
        conf = codecs[names.index("sharding_indexed")]
        conf = conf.get("configuration") if isinstance(conf, dict) else None
        if not isinstance(conf, dict):
            raise MetadataError(where, f"{field}.configuration", "expected an object")
        shard_shape = chunks
        chunks = check_chunk(
            where, f"{field}.chunk_shape", conf.get("chunk_shape"), ndim, dtype.itemsize
        )
        if any(s % c for s, c in zip(shard_shape, chunks, strict=True)):
            raise MetadataError(
                where, f"{field}.chunk_shape", f"{chunks} does not divide the shard {shard_shape}"
            )
        inner = conf.get("codecs")
        if not isinstance(inner, list) or not inner:
            raise MetadataError(
                where, f"{field}.codecs", f"expected a non-empty list: {inner!r:.200}"
            )
        names = names + _codec_names(where, f"{field}.codecs", inner)
    ts_ok = all(n in _TS_V3_CODECS for n in names)
    dim_names = _dimension_names(where, doc.get("dimension_names"), ndim)
    encoding = "+".join(str(n) for n in names if n != "bytes") or "raw"
    return ArrayMeta(path, 3, shape, chunks, dtype, encoding, dim_names, ts_ok, shard_shape)


def _check_fill_value(where: str, value: Any, dtype: np.dtype) -> None:
    """Refuse a numeric ``fill_value`` the data type cannot hold (zarr-python overflows on it).

    Strings (``"NaN"``, hex or base64 encodings), bools and nulls are left to the decoder,
    which refuses malformed ones itself.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        integral = isinstance(value, int) or value.is_integer()
        if not integral or not info.min <= value <= info.max:
            raise MetadataError(where, "fill_value", f"{value!r:.40} is not a {dtype} value")
    elif dtype.kind == "f" and isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            raise MetadataError(
                where, "fill_value", f"{value!r:.40} is beyond the range of {dtype}"
            ) from None


def _codec_names(where: str, field: str, codecs: list[Any]) -> list[str]:
    """Names of a v3 codec list (objects with a ``name``, or bare names), unsafe ones refused."""
    names = [c.get("name") if isinstance(c, dict) else c for c in codecs]
    _refuse_unsafe(where, field, names)
    for c in codecs:
        conf = c.get("configuration", {}) if isinstance(c, dict) else {}
        if not isinstance(conf, dict):
            raise MetadataError(where, f"{field}.{c['name']}.configuration", "expected an object")
    return names


def _dimension_names(where: str, dims: Any, ndim: int) -> tuple[str | None, ...] | None:
    """v3 ``dimension_names``: ``ndim`` strings or nulls (absent: ``None``)."""
    if dims is None:
        return None
    if (
        not isinstance(dims, list)
        or len(dims) != ndim
        or not all(d is None or isinstance(d, str) for d in dims)
    ):
        raise MetadataError(
            where, "dimension_names", f"expected {ndim} strings or nulls, got {dims!r:.200}"
        )
    named = [d for d in dims if d]
    if len(set(named)) != len(named):
        raise MetadataError(where, "dimension_names", f"names repeat: {dims!r:.200}")
    return tuple(dims)


def _refuse_unsafe(where: str, field: str, codec_ids: list[Any]) -> None:
    for cid in codec_ids:
        if not isinstance(cid, str):
            raise MetadataError(where, field, f"malformed codec entry {cid!r:.200}")
        if cid.lower() in _REFUSED_CODECS:
            raise UnsafeDataError(where, field, f"codec {cid!r} is refused (it can execute code)")


def ome_attrs(path: Path, attrs: dict[str, Any]) -> dict[str, Any]:
    """The OME metadata of a node's attributes: ``attrs["ome"]`` (0.5) or ``attrs`` (0.4).

    Raises
    ------
    MetadataError
        If ``ome`` is present but not an object.
    """
    ome = attrs.get("ome", attrs)
    if not isinstance(ome, dict):
        where = str(path / ("zarr.json" if (path / "zarr.json").exists() else ".zattrs"))
        raise MetadataError(where, "ome", f"expected an object, got {ome!r:.200}")
    return ome


def read_ome(path: Path, attrs: dict[str, Any]) -> tuple[list[str], list[OmeLevel]] | None:
    """Parse an OME-Zarr 0.4/0.5 ``multiscales`` from a group's attributes.

    Returns
    -------
    tuple or None
        ``(axis_names, levels)``, or ``None`` when the group is not a multiscale image.
    """
    multiscales = ome_attrs(path, attrs).get("multiscales")
    if multiscales is None:
        return None
    where = str(path / ("zarr.json" if (path / "zarr.json").exists() else ".zattrs"))
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise MetadataError(where, "multiscales", "expected a non-empty list of objects")
    ms = multiscales[0]
    axes = ms.get("axes")
    if not isinstance(axes, list) or not 2 <= len(axes) <= 5:
        raise MetadataError(where, "multiscales[0].axes", f"expected 2 to 5 axes, got {axes!r}")
    names = [a.get("name") if isinstance(a, dict) else a for a in axes]
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    if not all(isinstance(n, str) and n for n in names):
        raise MetadataError(
            where, "multiscales[0].axes", f"axis names must be non-empty strings: {axes!r:.200}"
        )
    if len({n.lower() for n in names}) != len(names):
        raise MetadataError(where, "multiscales[0].axes", f"axis names repeat: {names!r}")
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise MetadataError(where, "multiscales[0].datasets", "expected a non-empty list")
    global_scale, global_shift = _transforms(where, "multiscales[0]", ms, len(names))
    levels = []
    for i, ds in enumerate(datasets):
        field = f"multiscales[0].datasets[{i}]"
        if not isinstance(ds, dict) or not isinstance(ds.get("path"), str):
            raise MetadataError(where, field, "expected an object with a 'path'")
        scale, shift = _transforms(where, field, ds, len(names))
        scale = [a * b for a, b in zip(scale, global_scale, strict=True)]
        shift = [a * g + b for a, g, b in zip(shift, global_scale, global_shift, strict=True)]
        res_nm, shift_nm = _spatial_nm(names, units, scale, shift)
        res_nm = check_vector_nm(where, f"{field}.scale", res_nm, positive=True)
        shift_nm = check_vector_nm(where, f"{field}.translation", shift_nm, positive=False)
        levels.append(OmeLevel(ds["path"], res_nm, shift_nm))  # type: ignore[arg-type]
    return names, levels


def _transforms(
    where: str, field: str, node: dict[str, Any], ndim: int
) -> tuple[list[float], list[float]]:
    scale, shift = [1.0] * ndim, [0.0] * ndim
    transforms = node.get("coordinateTransformations")
    if transforms is None:
        return scale, shift
    if not isinstance(transforms, list):
        raise MetadataError(
            where, f"{field}.coordinateTransformations", f"expected a list, got {transforms!r:.200}"
        )
    for t in transforms:
        kind = t.get("type") if isinstance(t, dict) else None
        if not isinstance(kind, str):
            raise MetadataError(
                where, f"{field}.coordinateTransformations", f"malformed {t!r:.200}"
            )
        if kind not in ("scale", "translation"):
            continue
        values = t.get(kind)
        if kind == "scale":
            scale = list(check_resolution(where, f"{field}.scale", values, ndim))
        else:
            shift = list(check_offset(where, f"{field}.translation", values, ndim))
    return scale, shift


def _spatial_nm(
    names: list[str], units: list[Any], scale: list[float], shift: list[float]
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    res: dict[str, float] = {"z": 1.0, "y": 1.0, "x": 1.0}
    off: dict[str, float] = {"z": 0.0, "y": 0.0, "x": 0.0}
    for name, unit, s, t in zip(names, units, scale, shift, strict=True):
        key = name.lower()
        if key not in res:
            continue
        factor = _UNIT_NM.get(str(unit).lower(), 1.0) if unit else 1.0
        res[key], off[key] = s * factor, t * factor
    return (res["z"], res["y"], res["x"]), (off["z"], off["y"], off["x"])
