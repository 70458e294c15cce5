"""The storage-agnostic volume: scales, reads and writes indexed in nm or voxels, processors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.errors import ReadOnlyError, RegionError
from napari_connecto.geometry import BBox, Vec3
from napari_connecto.volume.level import LevelArray

if TYPE_CHECKING:
    from napari_connecto.backends.base import Kind, VolumeBackend
    from napari_connecto.source import Source
    from napari_connecto.volume.processors import Processor
    from napari_connecto.volume.scale import Index3, Scale

__all__ = ["DEFAULT_MAX_READ_BYTES", "Volume"]

DEFAULT_MAX_READ_BYTES = 4 * 2**30
"""Largest single read a volume will allocate (4 GiB) unless told otherwise."""


class Volume:
    """A multiscale 3D volume in z, y, x order, positioned in nanometres.

    Open one with :func:`napari_connecto.open_volume`. Nothing is read until a
    region is asked for; reads outside the volume are padded with the fill value.

    Parameters
    ----------
    backend : VolumeBackend
        The opened storage backend.
    read_processors : sequence of Processor
        Applied, in order, to every block read.
    write_processors : sequence of Processor
        Applied, in order, to every block before it is written.
    max_read_bytes : int
        Largest single read to allocate; larger requests raise :class:`RegionError`.
    """

    def __init__(
        self,
        backend: VolumeBackend,
        read_processors: Sequence[Processor] = (),
        write_processors: Sequence[Processor] = (),
        *,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    ) -> None:
        self._backend = backend
        self.read_processors = tuple(read_processors)
        self.write_processors = tuple(write_processors)
        self.max_read_bytes = max_read_bytes
        dtype = np.dtype(backend.scales[0].dtype)
        for proc in self.read_processors:
            dtype = proc.output_dtype(dtype)
        self._dtype = dtype

    # -- description ---------------------------------------------------------------
    @property
    def backend(self) -> VolumeBackend:
        """The storage backend (format-specific; prefer the volume's own methods)."""
        return self._backend

    @property
    def source(self) -> Source:
        """Where the volume was opened from."""
        return self._backend.source

    @property
    def format(self) -> str:
        """Registry name of the storage format."""
        return self._backend.name

    @property
    def name(self) -> str:
        """Display name."""
        return self._backend.source.name

    @property
    def kind(self) -> Kind:
        """``"image"`` or ``"segmentation"``."""
        return self._backend.kind

    @property
    def scales(self) -> tuple[Scale, ...]:
        """Every level, finest first."""
        return self._backend.scales

    @property
    def dtype(self) -> np.dtype:
        """Data type of what :meth:`read` returns (after processors)."""
        return self._dtype

    @property
    def shape(self) -> Index3:
        """Shape of the finest scale, voxels."""
        return self.scales[0].shape

    @property
    def resolution(self) -> Vec3:
        """Voxel size of the finest scale, nm."""
        return self.scales[0].resolution

    @property
    def bbox(self) -> BBox:
        """Region covered by the finest scale, nm."""
        return self.scales[0].bbox

    @property
    def writable(self) -> bool:
        """Whether :meth:`write` is allowed."""
        return self._backend.writable

    @property
    def levels(self) -> list[LevelArray]:
        """One lazy array per scale, finest first (napari's multiscale input)."""
        return [LevelArray(self, i) for i in range(len(self.scales))]

    def level(self, scale: int) -> LevelArray:
        """The lazy array of one scale."""
        self._check_scale(scale)
        return LevelArray(self, scale)

    def scale_for(self, resolution: Vec3 | Sequence[float]) -> int:
        """Index of the scale whose voxel size is ``resolution`` (nm, z, y, x).

        Raises
        ------
        RegionError
            If no scale has that resolution (compared with a relative tolerance of 1e-6).
        """
        want = Vec3.of(resolution)
        for i, sc in enumerate(self.scales):
            if np.allclose(sc.resolution.as_tuple(), want.as_tuple(), rtol=1e-6):
                return i
        known = ", ".join(str(sc.resolution.as_tuple()) for sc in self.scales)
        raise RegionError(f"no scale has resolution {want.as_tuple()} nm; scales: {known}")

    def with_processors(
        self, read: Sequence[Processor] = (), write: Sequence[Processor] = ()
    ) -> Volume:
        """A new volume over the same backend with extra processors appended."""
        return Volume(
            self._backend,
            self.read_processors + tuple(read),
            self.write_processors + tuple(write),
            max_read_bytes=self.max_read_bytes,
        )

    # -- reading -------------------------------------------------------------------
    def read(
        self, region: BBox, *, scale: int | None = None, resolution: Sequence[float] | None = None
    ) -> np.ndarray:
        """Read every voxel overlapping ``region`` (nm) at one scale.

        Parameters
        ----------
        region : BBox
            The region in nm, z, y, x.
        scale : int, optional
            Scale index; default the finest (0).
        resolution : sequence of float, optional
            Pick the scale by its voxel size in nm instead of its index.

        Returns
        -------
        numpy.ndarray
            z, y, x voxels; parts outside the volume hold the fill value.
        """
        index = self.scale_for(resolution) if resolution is not None else (scale or 0)
        self._check_scale(index)
        sc = self.scales[index]
        start, stop = region.to_voxels(sc.resolution, sc.origin_nm)
        return self.read_voxels(index, start, stop)

    def read_voxels(self, scale: int, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """Read voxels ``[start, stop)`` (indices of that scale, z, y, x); blocking.

        Raises
        ------
        RegionError
            If the region is inverted or larger than ``max_read_bytes``.
        ChunkError
            If a chunk inside the region cannot be decoded.
        """
        self._check_scale(scale)
        sc = self.scales[scale]
        start_t = tuple(int(v) for v in start)
        stop_t = tuple(int(v) for v in stop)
        if len(start_t) != 3 or len(stop_t) != 3:
            raise RegionError(f"regions are z, y, x: got {start_t} .. {stop_t}")
        if any(b < a for a, b in zip(start_t, stop_t, strict=True)):
            raise RegionError(f"inverted region {start_t} .. {stop_t}")
        out_shape = tuple(b - a for a, b in zip(start_t, stop_t, strict=True))
        nbytes = math.prod(out_shape) * sc.dtype.itemsize
        if nbytes > self.max_read_bytes:
            raise RegionError(
                f"region {start_t}..{stop_t} is {nbytes} bytes, over the limit of "
                f"{self.max_read_bytes}; read it in pieces"
            )
        lo = tuple(max(0, a) for a in start_t)
        hi = tuple(min(n, b) for b, n in zip(stop_t, sc.shape, strict=True))
        if all(a == 0 for a in out_shape) or any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
            block = np.full(out_shape, self._backend.fill_value, dtype=sc.dtype)
        elif lo == start_t and hi == stop_t:
            block = self._backend.read(scale, lo, hi)  # type: ignore[arg-type]
        else:
            block = np.full(out_shape, self._backend.fill_value, dtype=sc.dtype)
            inner = self._backend.read(scale, lo, hi)  # type: ignore[arg-type]
            block[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start_t, strict=True))] = (
                inner
            )
        for proc in self.read_processors:
            block = proc(block)
        return block

    # -- writing -------------------------------------------------------------------
    def write(self, data: np.ndarray, *, at: Sequence[int], scale: int = 0) -> None:
        """Write ``data`` with its first voxel at index ``at`` of one scale.

        Raises
        ------
        ReadOnlyError
            If the volume was opened read-only or the format cannot be written.
        RegionError
            If the block does not fit inside the volume.
        """
        self._check_writable()
        start, block = self._prepare_write(scale, at, data)
        self._backend.write(scale, start, block)

    def write_batch(self, writes: Sequence[tuple[int, Sequence[int], np.ndarray]]) -> None:
        """Write many blocks, possibly at several scales, as one unit.

        Every block is checked and passed through the write processors before
        anything is stored, so a bad block stores nothing; then the backend
        stores them with one :meth:`VolumeBackend.write_batch` call (atomic as
        a whole for HDF5; per chunk file for zarr, N5 and precomputed).

        Parameters
        ----------
        writes : sequence of (int, sequence of int, numpy.ndarray)
            ``(scale, start, data)`` per block: the scale index, the z, y, x
            index of the block's first voxel at that scale, and a z, y, x block.

        Raises
        ------
        ReadOnlyError
            If the volume was opened read-only or the format cannot be written.
        RegionError
            If a scale does not exist or a block does not fit inside its scale.
        ChunkError
            If the backend fails to store the batch.
        """
        self._check_writable()
        prepared = []
        for scale, at, data in writes:
            start, block = self._prepare_write(scale, at, data)
            prepared.append((scale, start, block))
        if prepared:
            self._backend.write_batch(prepared)

    def refresh(self) -> None:
        """Re-open the backend's file handles so reads see data written by others.

        Needed after another process (or another handle) replaced or rewrote
        the stored files, e.g. an HDF5 file rewritten by copy-on-write.
        """
        self._backend.refresh()

    def _check_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.source} was opened read-only; open it with mode='r+'")

    def _prepare_write(
        self, scale: int, at: Sequence[int], data: np.ndarray
    ) -> tuple[Index3, np.ndarray]:
        """Check that a block fits one scale; apply write processors and cast to its dtype."""
        self._check_scale(scale)
        sc = self.scales[scale]
        data = np.asarray(data)
        start = tuple(int(v) for v in at)
        if data.ndim != 3 or len(start) != 3:
            raise RegionError("writes take a z, y, x block and a z, y, x start")
        stop = tuple(a + n for a, n in zip(start, data.shape, strict=True))
        if any(a < 0 for a in start) or any(b > n for b, n in zip(stop, sc.shape, strict=True)):
            raise RegionError(f"block {start}..{stop} does not fit in {sc.shape}")
        for proc in self.write_processors:
            data = proc(data)
        return start, data.astype(sc.dtype, copy=False)  # type: ignore[return-value]

    def close(self) -> None:
        """Release the backend's file handles."""
        self._backend.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what ``napari-connecto info`` prints)."""
        return {
            "source": str(self.source),
            "format": self.format,
            "kind": self.kind,
            "dtype": str(self.dtype),
            "scales": [
                {
                    "key": sc.key,
                    "shape_zyx": list(sc.shape),
                    "resolution_nm_zyx": list(sc.resolution.as_tuple()),
                    "chunk_zyx": list(sc.chunk_shape),
                    "voxel_offset_zyx": list(sc.voxel_offset),
                    "origin_nm_zyx": list(sc.origin_nm.as_tuple()),
                    "encoding": sc.encoding,
                    "nbytes": sc.nbytes,
                }
                for sc in self.scales
            ],
            **self._backend.describe(),
        }

    def _check_scale(self, scale: int) -> None:
        if not 0 <= scale < len(self.scales):
            raise RegionError(f"scale {scale} does not exist; {self} has {len(self.scales)}")

    def __repr__(self) -> str:
        return f"<Volume {self.format} {str(self.source)!r} {self.kind} {self.shape} {self.dtype}>"
