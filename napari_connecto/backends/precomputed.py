"""Neuroglancer precomputed volumes on local disk.

The ``info`` file is validated here, so that errors name the file and the field;
chunks are decoded by tensorstore's ``neuroglancer_precomputed`` driver (raw,
jpeg, png, compressed_segmentation, sharded or not). Conventions:

- A chunk with no file reads as 0 (the precomputed convention for unwritten
  chunks); a truncated, oversized or corrupt chunk raises
  :class:`~napari_connecto.errors.ChunkError`.
- ``num_channels > 1``: each channel is its own volume, named by the inner path
  ``c{N}`` (``/data/vol#c2``); without one, channel 0 opens.
- CloudVolume writes local chunks gzip'd as ``*.gz`` files, which tensorstore
  silently reads as zeros. At open, the first entries of each unsharded scale
  directory are listed; a scale with ``.gz`` files is read by the native reader
  of :mod:`._precomputed_codecs` (raw and compressed_segmentation; plain and
  ``.gz`` names both found) and cannot be written. Other compressed names
  (``.br``, ``.zstd``, ...) are refused.
- Writes go through tensorstore (atomic per chunk file) for raw, png and
  compressed_segmentation; jpeg is lossy and never written.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
from napari_connecto.backends._precomputed_codecs import (
    NATIVE_ENCODINGS,
    ChunkGrid,
    read_native,
    scan_suffixes,
)
from napari_connecto.backends._tensorstore import open_store, read_region, write_region
from napari_connecto.backends.base import Entry, Kind, VolumeBackend
from napari_connecto.errors import (
    MetadataError,
    ReadOnlyError,
    SourceNotFoundError,
    UnsupportedEncodingError,
)
from napari_connecto.geometry import Vec3
from napari_connecto.volume.scale import Index3, Scale

if TYPE_CHECKING:
    from napari_connecto.source import Source

__all__ = ["PrecomputedBackend"]

logger = logging.getLogger(__name__)

_VOLUME_TYPE = "neuroglancer_multiscale_volume"
_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")
_ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation", "compresso", "jxl")
_UNREADABLE = {"compresso": "compresso", "jxl": "JPEG XL"}
_WRITABLE = ("raw", "png", "compressed_segmentation")
_ENCODING_DTYPES = {
    "jpeg": ("uint8",),
    "png": ("uint8", "uint16"),
    "compressed_segmentation": ("uint32", "uint64"),
}
_SHARDING_TYPE = "neuroglancer_uint64_sharded_v1"
_SHARD_HASHES = ("identity", "murmurhash3_x86_128")
_SHARD_BITS = {"preshift_bits": 64, "minishard_bits": 32, "shard_bits": 64}
_MAX_CHANNELS = 4096
_CHANNEL = re.compile(r"c(\d+)")


@dataclass(frozen=True, slots=True)
class _Level:
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
class _Info:
    """A validated ``info`` document."""

    path: Path
    kind: Kind
    dtype: np.dtype
    num_channels: int
    levels: tuple[_Level, ...]


# -- info validation -------------------------------------------------------------------
def _read_info(root: Path) -> _Info:
    """Load and validate ``root/info``; raise typed errors naming the field."""
    path = root / "info"
    where = str(path)
    try:
        doc = load_json(path) or {}
    except RecursionError:
        raise MetadataError(where, "", "JSON nested too deeply") from None
    at_type = doc.get("@type", _VOLUME_TYPE)
    if at_type != _VOLUME_TYPE:
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
    return _Info(path, kind, dtype, channels, levels)


def _check_scale(
    root: Path, where: str, i: int, doc: Any, *, dtype: np.dtype, channels: int
) -> _Level:
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
    offset = _check_offset(where, f"{f}.voxel_offset", doc.get("voxel_offset", [0, 0, 0]))
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
    return _Level(scale, i, directory, chunks, block, sharding)  # type: ignore[arg-type]


def _check_offset(where: str, field: str, value: Any) -> tuple[int, ...]:
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


def _check_chunk_files(info: _Info, level: _Level) -> _Level:
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


def _root(source: Source) -> Path:
    """The dataset directory (a path to its ``info`` file is accepted too)."""
    path = Path(source.location)
    return path.parent if path.name == "info" and path.is_file() else path


def chunk_grid(info: _Info, level: _Level, directory: Path | None) -> ChunkGrid:
    """Chunk layout of one scale, for the native decoder (``directory`` ``None`` if remote)."""
    sc = level.scale
    return ChunkGrid(
        directory=directory,
        shape=sc.shape,
        chunk=sc.chunk_shape,
        offset=sc.voxel_offset,
        dtype=sc.dtype,
        num_channels=info.num_channels,
        encoding=sc.encoding,
        block=level.block or (8, 8, 8),
    )


def _remote_root(location: str) -> str:
    """The dataset URL (a URL of its ``info`` file is accepted too)."""
    return location[: -len("/info")] if location.endswith("/info") else location


def _sniff_remote(location: str) -> bool:
    """Whether ``info`` below a URL describes a volume (one small GET)."""
    from napari_connecto.remote.store import HttpStore

    doc = HttpStore(_remote_root(location)).probe_json("info")
    return (
        doc is not None and "scales" in doc and ("type" in doc or doc.get("@type") == _VOLUME_TYPE)
    )


def _channel(source: Source, channels: int) -> int:
    """The channel an inner path ``c{N}`` names (0 if none)."""
    if not source.inner:
        return 0
    match = _CHANNEL.fullmatch(source.inner)
    if match is None or int(match[1]) >= channels:
        raise SourceNotFoundError(
            str(source), f"precomputed volumes hold channels c0..c{channels - 1} only"
        )
    return int(match[1])


def _write_refusal(level: _Level) -> str | None:
    """Why a scale cannot be written, or ``None`` if it can."""
    if level.gzip_files:
        return "its chunks are gzip'd .gz files, which are read natively and never written"
    if level.scale.encoding not in _WRITABLE:
        return f"{level.scale.encoding} is lossy or unsupported for writing"
    return None


class PrecomputedBackend(VolumeBackend):
    """Neuroglancer precomputed volumes (``info`` + chunk files, sharded or not), local disk."""

    name = "precomputed"
    supports_writes = True
    max_concurrency = 16

    def __init__(
        self, source: Source, info: _Info, levels: tuple[_Level, ...], channel: int, mode: str
    ) -> None:
        self.source = source
        self.kind = info.kind
        self.scales = tuple(lv.scale for lv in levels)
        self.writable = mode == "r+"
        self._info = info
        self._levels = levels
        self._channel = channel
        self._stores: list[Any] = [
            None if lv.gzip_files else self._open_level(lv, mode) for lv in levels
        ]

    def _open_level(self, level: _Level, mode: str) -> Any:
        """Open one scale with tensorstore (reads ``info`` only)."""
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": f"{self._info.path.parent}/"},
            "scale_index": level.index,
        }
        return open_store(spec, where=str(self._info.path), write=mode == "r+")

    # -- discovery -------------------------------------------------------------------
    @classmethod
    def sniff(cls, source: Source) -> bool:
        """A ``precomputed://`` source, or a local directory whose ``info`` describes a volume."""
        if source.format == "precomputed":
            return True
        if source.format is not None:
            return False
        if source.is_remote:
            return _sniff_remote(source.location)
        try:
            info = _root(source) / "info"
            if not info.is_file() or info.stat().st_size > 16 * 2**20:
                return False
            doc = json.loads(info.read_bytes())
        except (OSError, ValueError, RecursionError):
            return False
        return (
            isinstance(doc, dict)
            and "scales" in doc
            and ("type" in doc or doc.get("@type") == _VOLUME_TYPE)
        )

    @classmethod
    def contents(cls, source: Source) -> list[Entry]:
        """One entry, or one per channel (inner path ``c{N}``) for multi-channel volumes."""
        info = _read_info(cls._dataset_root(source))
        if info.num_channels == 1 or source.inner:
            _channel(source, info.num_channels)
            return [Entry(source, info.kind, source.name)]
        return [
            Entry(replace(source, inner=f"c{c}"), info.kind, f"{source.name} c{c}")
            for c in range(info.num_channels)
        ]

    @classmethod
    def _dataset_root(cls, source: Source) -> Path:
        """The dataset directory (a ``UrlPath`` if remote); typed errors otherwise."""
        if source.is_remote:
            from napari_connecto.remote.path import UrlPath

            return UrlPath(_remote_root(source.location))  # type: ignore[return-value]
        root = _root(source)
        if not root.exists():
            raise SourceNotFoundError(str(source))
        if not root.is_dir():
            raise MetadataError(str(root), "", "expected a precomputed directory holding 'info'")
        return root

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, source: Source, mode: Literal["r", "r+"] = "r") -> PrecomputedBackend:
        """Validate ``info`` and open every scale (metadata only, no chunk is read).

        Raises
        ------
        SourceNotFoundError
            If the directory, its ``info`` or the named channel does not exist.
        MetadataError
            If ``info`` is malformed (the error names the file and field);
            :class:`UnsafeDataError` if a scale key escapes the dataset root.
        UnsupportedEncodingError
            For data types, encodings, sharding or chunk file compression that
            cannot be decoded.
        ReadOnlyError
            If ``mode="r+"`` and the finest scale cannot be written.
        """
        info = _read_info(cls._dataset_root(source))
        channel = _channel(source, info.num_channels)
        if source.is_remote:
            return cls._open_remote(source, info, channel, mode)
        levels = tuple(_check_chunk_files(info, lv) for lv in info.levels)
        if mode == "r+" and (reason := _write_refusal(levels[0])) is not None:
            raise ReadOnlyError(f"{source} cannot be written: {reason}")
        return cls(source, info, levels, channel, mode)

    @classmethod
    def _open_remote(cls, source: Source, info: _Info, channel: int, mode: str) -> Any:
        """A :class:`RemotePrecomputedBackend` (read-only) over the ``info`` just validated."""
        from napari_connecto.backends.precomputed_remote import RemotePrecomputedBackend

        if mode != "r":
            raise ReadOnlyError(f"{source} is remote; remote precomputed volumes are read-only")
        return RemotePrecomputedBackend(source, info.path.store, info, channel)  # type: ignore[attr-defined]

    # -- data --------------------------------------------------------------------------
    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Decode one z, y, x region of one scale (indices from the scale's first voxel)."""
        level = self._levels[scale]
        where = str(self.source)
        if level.gzip_files:
            return read_native(
                self._grid(level), start, stop, self._channel, where=where, scale=scale
            )
        view, index = self._zyx(scale, start, stop)
        return np.ascontiguousarray(read_region(view, index, where=where, scale=scale))

    def write(self, scale: int, start: Index3, data: np.ndarray) -> None:
        """Write one z, y, x block of the opened channel (atomic per chunk file)."""
        if not self.writable:
            raise ReadOnlyError(f"{self.source} was opened read-only")
        level = self._levels[scale]
        if (reason := _write_refusal(level)) is not None:
            raise ReadOnlyError(f"scale {scale} of {self.source} cannot be written: {reason}")
        stop = tuple(a + n for a, n in zip(start, data.shape, strict=True))
        view, index = self._zyx(scale, start, stop)  # type: ignore[arg-type]
        block = np.asarray(data, dtype=level.scale.dtype)
        write_region(view, index, block, where=str(self.source), scale=scale)

    def _zyx(self, scale: int, start: Index3, stop: Index3) -> tuple[Any, tuple[slice, ...]]:
        """The z, y, x view of the opened channel and the index of a scale-relative region.

        Through the transposed view tensorstore does the x, y, z <-> z, y, x reordering
        itself, cheaper than a strided numpy copy.
        """
        offset = self._levels[scale].scale.voxel_offset
        view = self._stores[scale][..., self._channel].T
        index = tuple(slice(a + o, b + o) for a, b, o in zip(start, stop, offset, strict=True))
        return view, index

    def _grid(self, level: _Level) -> ChunkGrid:
        """Chunk layout of a natively read scale."""
        return chunk_grid(self._info, level, level.directory)

    def describe(self) -> dict[str, Any]:
        """Type, channels and, per scale, encoding, chunk sizes, sharding and reader."""
        return {
            "precomputed": {
                "info": str(self._info.path),
                "type": self.kind,
                "num_channels": self._info.num_channels,
                "channel": self._channel,
                "scales": [
                    {
                        "key": lv.scale.key,
                        "encoding": lv.scale.encoding,
                        "chunk_sizes_xyz": [list(c) for c in lv.chunk_sizes],
                        "sharding": lv.sharding,
                        "reader": "native (gzip files)" if lv.gzip_files else "tensorstore",
                    }
                    for lv in self._levels
                ],
            }
        }
