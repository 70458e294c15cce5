"""The ``info`` file of a precomputed volume, validated so that errors name the file and field.

Checks the volume type, data type, channels, every scale (size, resolution, offset,
chunk sizes, encoding and the data types it allows, compressed_segmentation blocks,
sharding) and, for local scales, whether chunk files are CloudVolume's ``.gz`` ones.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_connecto.backends._meta import (
    MAX_AXIS,
    check_chunk,
    check_dtype,
    check_positive_ints,
    check_resolution,
    load_json,
    safe_join,
)
from napari_connecto.backends._precomputed_codecs import NATIVE_ENCODINGS, scan_suffixes
from napari_connecto.backends.base import Kind
from napari_connecto.errors import MetadataError, UnsupportedEncodingError
from napari_connecto.geometry import Vec3
from napari_connecto.volume.scale import Index3, Scale

__all__ = ["VOLUME_TYPE", "Info", "Level", "check_chunk_files", "check_voxel_offset", "read_info"]

logger = logging.getLogger(__name__)

VOLUME_TYPE = "neuroglancer_multiscale_volume"
_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")
_ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation", "compresso", "jxl")
_UNREADABLE = {"compresso": "compresso", "jxl": "JPEG XL"}
_ENCODING_DTYPES = {
    "jpeg": ("uint8",),
    "png": ("uint8", "uint16"),
    "compressed_segmentation": ("uint32", "uint64"),
}
_SHARDING_TYPE = "neuroglancer_uint64_sharded_v1"
_SHARD_HASHES = ("identity", "murmurhash3_x86_128")
_SHARD_BITS = {"preshift_bits": 64, "minishard_bits": 32, "shard_bits": 64}
_MAX_CHANNELS = 4096


@dataclass(frozen=True, slots=True)
class Level:
    """One validated scale of ``info`` and how it is read."""

    scale: Scale
    """The scale, z, y, x."""
    index: int
    """Position in ``info["scales"]`` (tensorstore's ``scale_index``)."""
    directory: Path
    """Resolved scale directory inside the dataset root."""
    chunk_sizes: tuple[Index3, ...]
    """Every chunk size listed (x, y, z); the first is used."""
    block: Index3 | None
    """compressed_segmentation block size, z, y, x."""
    sharding: dict[str, Any] | None
    """The sharding spec, if sharded."""
    gzip_files: bool = False
    """Chunk files are CloudVolume-style ``*.gz`` (read natively)."""


@dataclass(frozen=True, slots=True)
class Info:
    """A validated ``info`` document."""

    path: Path
    kind: Kind
    dtype: np.dtype
    num_channels: int
    levels: tuple[Level, ...]


# -- info validation -------------------------------------------------------------------
def read_info(root: Path) -> Info:
    """Load and validate ``root/info``; raise typed errors naming the field."""
    path = root / "info"
    where = str(path)
    try:
        doc = load_json(path) or {}
    except RecursionError:
        raise MetadataError(where, "", "JSON nested too deeply") from None
    at_type = doc.get("@type", VOLUME_TYPE)
    if at_type != VOLUME_TYPE:
        raise UnsupportedEncodingError(where, "@type", f"{at_type!r} is not a volume")
    kind = doc.get("type")
    if kind not in ("image", "segmentation"):
        raise MetadataError(where, "type", f"expected 'image' or 'segmentation', got {kind!r}")
    if "data_type" not in doc:
        raise MetadataError(where, "data_type", "missing")
    dtype = check_dtype(where, "data_type", doc["data_type"])
    if dtype.name not in _DTYPES:
        raise UnsupportedEncodingError(where, "data_type", f"{dtype} is not a precomputed type")
    (channels,) = check_positive_ints(
        where, "num_channels", [doc.get("num_channels", 1)], 1, limit=_MAX_CHANNELS
    )
    if "scales" not in doc:
        raise MetadataError(where, "scales", "missing")
    scales = doc["scales"]
    if not isinstance(scales, list) or not scales:
        raise MetadataError(where, "scales", f"expected a non-empty list, got {scales!r}")
    levels = tuple(
        _check_scale(root, where, i, s, dtype=dtype, channels=channels)
        for i, s in enumerate(scales)
    )
    return Info(path, kind, dtype, channels, levels)


def _check_scale(
    root: Path, where: str, i: int, doc: Any, *, dtype: np.dtype, channels: int
) -> Level:
    """Validate ``scales[i]`` and turn it into a z, y, x :class:`Scale`."""
    f = f"scales[{i}]"
    if not isinstance(doc, dict):
        raise MetadataError(where, f, f"expected an object, got {doc!r}")
    for name in ("key", "size", "resolution", "chunk_sizes", "encoding"):
        if name not in doc:
            raise MetadataError(where, f"{f}.{name}", "missing")
    directory = safe_join(root, doc["key"], path=where, field=f"{f}.key")
    size = check_positive_ints(where, f"{f}.size", doc["size"], 3)
    resolution = check_resolution(where, f"{f}.resolution", doc["resolution"])
    offset = check_voxel_offset(where, f"{f}.voxel_offset", doc.get("voxel_offset", [0, 0, 0]))
    chunk_sizes = doc["chunk_sizes"]
    if not isinstance(chunk_sizes, list) or not chunk_sizes:
        raise MetadataError(where, f"{f}.chunk_sizes", f"expected a list, got {chunk_sizes!r}")
    itemsize = dtype.itemsize * channels
    chunks = tuple(
        check_chunk(where, f"{f}.chunk_sizes[{j}]", c, 3, itemsize)
        for j, c in enumerate(chunk_sizes)
    )
    encoding = _check_encoding(where, f, doc["encoding"], dtype)
    block = None
    if encoding == "compressed_segmentation":
        name = "compressed_segmentation_block_size"
        if name not in doc:
            raise MetadataError(where, f"{f}.{name}", "missing (required by this encoding)")
        block = check_positive_ints(where, f"{f}.{name}", doc[name], 3, limit=1024)[::-1]
    sharding = _check_sharding(where, f"{f}.sharding", doc.get("sharding"))
    scale = Scale(
        shape=size[::-1],  # type: ignore[arg-type]
        resolution=Vec3.from_xyz(resolution),
        chunk_shape=chunks[0][::-1],  # type: ignore[arg-type]
        dtype=dtype,
        voxel_offset=offset[::-1],  # type: ignore[arg-type]
        encoding=encoding,
        key=doc["key"],
    )
    return Level(scale, i, directory, chunks, block, sharding)  # type: ignore[arg-type]


def check_voxel_offset(where: str, field: str, value: Any) -> tuple[int, ...]:
    """Validate ``voxel_offset``: three integers, possibly negative, within ``MAX_AXIS``."""
    if not isinstance(value, list) or len(value) != 3:
        raise MetadataError(where, field, f"expected 3 integers, got {value!r:.200}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise MetadataError(where, field, f"expected integers, got {value!r:.200}")
        if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
            raise MetadataError(where, field, f"expected finite integers, got {value!r:.200}")
        if abs(v) > MAX_AXIS:
            raise MetadataError(where, field, f"value {v} is outside -{MAX_AXIS}..{MAX_AXIS}")
        out.append(int(v))
    return tuple(out)


def _check_encoding(where: str, f: str, encoding: Any, dtype: np.dtype) -> str:
    """Validate a scale's ``encoding`` against the known ones and the data type."""
    if encoding not in _ENCODINGS:
        raise UnsupportedEncodingError(
            where, f"{f}.encoding", f"unknown encoding {encoding!r}; known: {', '.join(_ENCODINGS)}"
        )
    if encoding in _UNREADABLE:
        raise UnsupportedEncodingError(
            where, f"{f}.encoding", f"{_UNREADABLE[encoding]} chunks cannot be decoded here"
        )
    allowed = _ENCODING_DTYPES.get(encoding)
    if allowed is not None and dtype.name not in allowed:
        raise UnsupportedEncodingError(
            where, f"{f}.encoding", f"{encoding} cannot hold {dtype} (only {', '.join(allowed)})"
        )
    return encoding


def _check_sharding(where: str, field: str, spec: Any) -> dict[str, Any] | None:
    """Validate a sharding spec (type, hash, bit counts, encodings)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise MetadataError(where, field, f"expected an object, got {spec!r}")
    if spec.get("@type") != _SHARDING_TYPE:
        raise UnsupportedEncodingError(
            where, f"{field}.@type", f"unknown sharding {spec.get('@type')!r}"
        )
    if spec.get("hash") not in _SHARD_HASHES:
        raise UnsupportedEncodingError(
            where, f"{field}.hash", f"unknown hash {spec.get('hash')!r}; known: {_SHARD_HASHES}"
        )
    for name, limit in _SHARD_BITS.items():
        v = spec.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
            raise MetadataError(where, f"{field}.{name}", f"expected an integer 0..{limit}")
    if spec["minishard_bits"] + spec["shard_bits"] > 64:
        raise MetadataError(where, field, "minishard_bits + shard_bits exceeds 64")
    for name in ("minishard_index_encoding", "data_encoding"):
        if spec.get(name, "raw") not in ("raw", "gzip"):
            raise UnsupportedEncodingError(
                where, f"{field}.{name}", f"unknown encoding {spec.get(name)!r}"
            )
    return spec


def check_chunk_files(info: Info, level: Level) -> Level:
    """Detect compressed chunk file names (``*.gz``) tensorstore would not find."""
    if level.sharding is not None:
        return level
    suffixes = scan_suffixes(level.directory)
    if not suffixes:
        return level
    field = f"scales[{level.index}].encoding"
    if suffixes != {".gz"}:
        raise UnsupportedEncodingError(
            str(level.directory), "", f"chunk files compressed as {sorted(suffixes)}"
        )
    if level.scale.encoding not in NATIVE_ENCODINGS:
        raise UnsupportedEncodingError(
            str(info.path), field, f"gzip'd {level.scale.encoding} chunk files are not supported"
        )
    logger.info("%s: gzip'd chunk files, reading them natively", level.directory)
    return replace(level, gzip_files=True)
