"""Backends for tests and benchmarks: procedural volumes of any size, and injected latency.

:class:`SyntheticBackend` computes every voxel from its coordinates, so a volume can be
declared terabytes large without storing anything, and the ground truth of any region is
one function call away. :class:`LatencyBackend` wraps any backend, sleeping before each
chunk read, counting reads and failing the ones a test chooses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from napari_connecto.backends.base import VolumeBackend
from napari_connecto.errors import ChunkError
from napari_connecto.geometry import Vec3
from napari_connecto.source import Source
from napari_connecto.volume.scale import Scale

if TYPE_CHECKING:
    from napari_connecto.backends.base import Kind
    from napari_connecto.volume.scale import Index3

__all__ = ["LatencyBackend", "SyntheticBackend", "synthetic_voxels"]

_PRIMES = np.array([73856093, 19349663, 83492791], dtype=np.int64)


def _hash(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    h = (z * _PRIMES[0]) ^ (y * _PRIMES[1]) ^ (x * _PRIMES[2])
    h ^= h >> 13
    return h * 1274126177 & 0x7FFFFFFF


def synthetic_voxels(
    kind: Kind, factor: Sequence[int], start: Sequence[int], stop: Sequence[int]
) -> np.ndarray:
    """Voxels ``[start, stop)`` of a level downsampled by ``factor`` (nearest) from level 0.

    Images are uint8 "cells" (64 x 64 voxel patches of one brightness) with a fine
    texture; segmentations are uint64 ids, one per 128 x 128 x 8 voxel cell, above 2^60
    so that float conversion would lose digits.
    """
    axes = [
        np.arange(a, b, dtype=np.int64) * f for a, b, f in zip(start, stop, factor, strict=True)
    ]
    z, y, x = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    if kind == "segmentation":
        cell = _hash(z >> 3, y >> 7, x >> 7)
        return (cell.astype(np.uint64) + np.uint64(1 << 60)).astype(np.uint64)
    cell = _hash(z >> 2, y >> 6, x >> 6) & 127
    texture = (x * 3 + y * 5 + z) & 63
    return (cell + texture + 32).astype(np.uint8)


class SyntheticBackend(VolumeBackend):
    """A procedural multiscale volume (never stored; any declared size).

    Parameters
    ----------
    shape : tuple of int
        Level-0 shape, z, y, x.
    levels : int
        Number of levels; each halves y and x (z kept).
    chunk : tuple of int
        Chunk shape of every level.
    kind : {"image", "segmentation"}
        uint8 image or uint64 segmentation.
    resolution : tuple of float
        Level-0 voxel size in nm.
    """

    name: ClassVar[str] = "synthetic"
    max_concurrency: ClassVar[int] = 32

    def __init__(
        self,
        shape: Index3 = (16, 32768, 32768),
        levels: int = 8,
        chunk: Index3 = (16, 128, 128),
        kind: Kind = "image",
        resolution: tuple[float, float, float] = (40.0, 4.0, 4.0),
    ) -> None:
        self.source = Source(f"synthetic://{kind}/{'x'.join(map(str, shape))}")
        self.kind = kind
        self.fill_value = 0
        dtype = np.dtype(np.uint64 if kind == "segmentation" else np.uint8)
        scales = []
        for k in range(levels):
            factor = (1, 2**k, 2**k)
            scales.append(
                Scale(
                    shape=tuple(-(-n // f) for n, f in zip(shape, factor, strict=True)),  # type: ignore[arg-type]
                    resolution=Vec3.of(resolution) * Vec3.of(factor),
                    chunk_shape=chunk,
                    dtype=dtype,
                    key=f"s{k}",
                )
            )
        self.scales = tuple(scales)
        if kind == "image":
            self.contrast_limits = (0.0, 255.0)

    @classmethod
    def sniff(cls, source: Source) -> bool:
        """Never claims a real source."""
        return False

    @classmethod
    def open(cls, source: Source, mode: Any = "r") -> VolumeBackend:
        """Synthetic volumes are constructed, not opened."""
        raise NotImplementedError("construct SyntheticBackend(...) directly")

    def factor(self, scale: int) -> Index3:
        """Level-0 voxels per voxel of ``scale``."""
        return (1, 2**scale, 2**scale)

    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Compute the voxels."""
        return synthetic_voxels(self.kind, self.factor(scale), start, stop)


class LatencyBackend(VolumeBackend):
    """Wrap a backend: sleep ``latency`` seconds per read, count reads, fail chosen ones.

    Parameters
    ----------
    inner : VolumeBackend
        The backend that answers.
    latency : float
        Seconds to sleep before every read (like a network round trip).
    concurrency : int, optional
        Reads worth running at once (the scheduler's per-source limit); default the
        inner backend's.
    """

    name: ClassVar[str] = "latency"

    def __init__(
        self, inner: VolumeBackend, latency: float = 0.0, concurrency: int | None = None
    ) -> None:
        self.inner = inner
        self.latency = latency
        self.source = inner.source
        self.kind = inner.kind
        self.scales = inner.scales
        self.fill_value = inner.fill_value
        self.contrast_limits = inner.contrast_limits
        self.background_label = inner.background_label
        self.max_concurrency = concurrency or inner.max_concurrency  # type: ignore[misc]
        self.fail: Callable[[int, Index3, Index3], bool] | None = None
        """``fail(scale, start, stop)`` -> whether this read raises :class:`ChunkError`."""
        self._lock = threading.Lock()
        self.reads: list[tuple[int, Index3, Index3]] = []
        self.read_threads: set[str] = set()
        self.bytes_read = 0

    @classmethod
    def sniff(cls, source: Source) -> bool:
        """Never claims a real source."""
        return False

    @classmethod
    def open(cls, source: Source, mode: Any = "r") -> VolumeBackend:
        """Latency wrappers are constructed, not opened."""
        raise NotImplementedError("construct LatencyBackend(inner, ...) directly")

    def reset(self) -> None:
        """Forget the recorded reads."""
        with self._lock:
            self.reads.clear()
            self.read_threads.clear()
            self.bytes_read = 0

    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Sleep, record, maybe fail, then read from the inner backend."""
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.reads.append((scale, start, stop))
            self.read_threads.add(threading.current_thread().name)
        if self.fail is not None and self.fail(scale, start, stop):
            region = ",".join(f"{a}:{b}" for a, b in zip(start, stop, strict=True))
            raise ChunkError(str(self.source), scale, region, "injected failure")
        data = self.inner.read(scale, start, stop)
        with self._lock:
            self.bytes_read += int(data.nbytes)
        return data
