"""One resolution level of a volume."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_connecto.geometry import BBox, Vec3

_ZERO = Vec3(0.0, 0.0, 0.0)

__all__ = ["Index3", "Scale"]

Index3 = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Scale:
    """Shape, resolution and chunking of one pyramid level, all in z, y, x order."""

    shape: Index3
    """Size in voxels."""
    resolution: Vec3
    """Voxel size in nm."""
    chunk_shape: Index3
    """Storage chunk (block) size in voxels."""
    dtype: np.dtype
    """Stored data type."""
    voxel_offset: Index3 = (0, 0, 0)
    """Voxel coordinate of index 0 (precomputed ``voxel_offset``), in voxels of this scale."""
    encoding: str = "raw"
    """Chunk encoding or compression, as the format names it."""
    key: str = ""
    """Where the level lives inside its dataset (a path or key)."""
    translation_nm: Vec3 = _ZERO
    """Extra translation in nm from metadata (OME-Zarr ``translation``, HDF5 ``offset``)."""

    @property
    def origin_nm(self) -> Vec3:
        """Position in nm of voxel index 0."""
        return Vec3.of(self.voxel_offset) * self.resolution + self.translation_nm

    @property
    def bbox(self) -> BBox:
        """The region covered, in nm."""
        origin = self.origin_nm
        return BBox(origin, origin + Vec3.of(self.shape) * self.resolution)

    @property
    def grid_shape(self) -> Index3:
        """Number of chunks along each axis."""
        return tuple(  # type: ignore[return-value]
            -(-s // c) for s, c in zip(self.shape, self.chunk_shape, strict=True)
        )

    @property
    def nbytes(self) -> int:
        """Declared size in bytes (may be far beyond memory; never allocate it)."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def chunk_bounds(self, chunk: Index3) -> tuple[Index3, Index3]:
        """Voxel ``(start, stop)`` of one chunk, truncated at the volume edge."""
        start = tuple(g * c for g, c in zip(chunk, self.chunk_shape, strict=True))
        stop = tuple(
            min(s + c, n) for s, c, n in zip(start, self.chunk_shape, self.shape, strict=True)
        )
        return start, stop  # type: ignore[return-value]
