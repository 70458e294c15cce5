"""Neuroglancer precomputed volumes on local disk.

The ``info`` file is validated by :mod:`._precomputed_info`, so that errors name the
file and the field; chunks are decoded by tensorstore's ``neuroglancer_precomputed``
driver (raw, jpeg, png, compressed_segmentation, sharded or not). Conventions:

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
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from napari_connecto.backends._precomputed_codecs import ChunkGrid, read_native
from napari_connecto.backends._precomputed_info import (
    VOLUME_TYPE,
    Info,
    Level,
    check_chunk_files,
    read_info,
)
from napari_connecto.backends._tensorstore import open_store, read_region, write_region
from napari_connecto.backends.base import Entry, VolumeBackend
from napari_connecto.errors import (
    MetadataError,
    ReadOnlyError,
    SourceNotFoundError,
)
from napari_connecto.volume.scale import Index3

if TYPE_CHECKING:
    from napari_connecto.source import Source

__all__ = ["PrecomputedBackend"]

logger = logging.getLogger(__name__)

_WRITABLE = ("raw", "png", "compressed_segmentation")
_CHANNEL = re.compile(r"c(\d+)")


def _root(source: Source) -> Path:
    """The dataset directory (a path to its ``info`` file is accepted too)."""
    path = Path(source.location)
    return path.parent if path.name == "info" and path.is_file() else path


def chunk_grid(info: Info, level: Level, directory: Path | None) -> ChunkGrid:
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
        doc is not None and "scales" in doc and ("type" in doc or doc.get("@type") == VOLUME_TYPE)
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


def _write_refusal(level: Level) -> str | None:
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
        self, source: Source, info: Info, levels: tuple[Level, ...], channel: int, mode: str
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

    def _open_level(self, level: Level, mode: str) -> Any:
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
            and ("type" in doc or doc.get("@type") == VOLUME_TYPE)
        )

    @classmethod
    def contents(cls, source: Source) -> list[Entry]:
        """One entry, or one per channel (inner path ``c{N}``) for multi-channel volumes."""
        info = read_info(cls._dataset_root(source))
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
        info = read_info(cls._dataset_root(source))
        channel = _channel(source, info.num_channels)
        if source.is_remote:
            return cls._open_remote(source, info, channel, mode)
        levels = tuple(check_chunk_files(info, lv) for lv in info.levels)
        if mode == "r+" and (reason := _write_refusal(levels[0])) is not None:
            raise ReadOnlyError(f"{source} cannot be written: {reason}")
        return cls(source, info, levels, channel, mode)

    @classmethod
    def _open_remote(cls, source: Source, info: Info, channel: int, mode: str) -> Any:
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

    def _grid(self, level: Level) -> ChunkGrid:
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
