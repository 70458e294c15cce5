"""Where each pyramid level sits relative to level 0, and how it is cut into cache blocks.

napari places level ``k`` of a multiscale layer by the ratio of level shapes, not by
the levels' resolutions and offsets. So every level is presented in a *display index
space* aligned to level 0: display voxel ``i`` of level ``k`` starts at
``origin_0 + i * resolution_k`` nm. Level 0 is padded (with the fill value) to a
multiple of the coarsest downsampling factor so that ``shape_0 / shape_k`` equals the
true factor exactly. Storage voxel ``j = i - shift_k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_connecto.volume.scale import Index3, Scale

__all__ = ["MAX_BLOCK_BYTES", "LevelGeometry", "block_shape_for", "plan_pyramid"]

MAX_BLOCK_BYTES = 16 * 2**20
"""Largest cache block; bigger storage chunks (HDF5 contiguous data) are read in parts."""


@dataclass(frozen=True, slots=True)
class LevelGeometry:
    """One level in display index space, and its cache block grid."""

    scale: int
    """Index of the storage scale."""
    shape: Index3
    """Display shape (what napari sees)."""
    factor: Index3
    """Level-0 voxels per voxel of this level, per axis; 0 when not an integer."""
    shift: Index3
    """Storage index = display index - ``shift``."""
    storage_shape: Index3
    """Shape of the stored level."""
    block: Index3
    """Cache block shape, aligned to the storage grid."""

    @property
    def aligned(self) -> bool:
        """Whether the factor to level 0 is an integer on every axis."""
        return all(f > 0 for f in self.factor)

    def blocks_for(self, start: Index3, stop: Index3) -> list[Index3]:
        """Block indices overlapping display region ``[start, stop)`` inside the storage."""
        ranges = []
        for a, b, s, n, bs in zip(
            start, stop, self.shift, self.storage_shape, self.block, strict=True
        ):
            lo, hi = max(a - s, 0), min(b - s, n)
            if hi <= lo:
                return []
            ranges.append(range(lo // bs, (hi - 1) // bs + 1))
        return [(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]]

    def block_bounds(self, block: Index3) -> tuple[Index3, Index3]:
        """Storage ``(start, stop)`` of one block, truncated at the level's edge."""
        start = tuple(b * s for b, s in zip(block, self.block, strict=True))
        stop = tuple(
            min(a + s, n) for a, s, n in zip(start, self.block, self.storage_shape, strict=True)
        )
        return start, stop  # type: ignore[return-value]

    def block_display_bounds(self, block: Index3) -> tuple[Index3, Index3]:
        """Display ``(start, stop)`` of one block."""
        start, stop = self.block_bounds(block)
        shift = self.shift
        return (
            tuple(a + s for a, s in zip(start, shift, strict=True)),  # type: ignore[return-value]
            tuple(b + s for b, s in zip(stop, shift, strict=True)),
        )


def block_shape_for(chunk: Index3, itemsize: int, limit: int = MAX_BLOCK_BYTES) -> Index3:
    """The storage chunk, halved along its longest axis until it is at most ``limit`` bytes."""
    block = list(chunk)
    while math.prod(block) * itemsize > limit and max(block) > 1:
        axis = int(np.argmax(block))
        block[axis] = -(-block[axis] // 2)
    return tuple(block)  # type: ignore[return-value]


def _integer_factor(ratio: float) -> int:
    rounded = round(ratio)
    return rounded if rounded >= 1 and abs(ratio - rounded) < 1e-6 * max(1, rounded) else 0


def plan_pyramid(scales: tuple[Scale, ...], itemsize: int) -> list[LevelGeometry]:
    """Display geometry of every level of a volume, finest first.

    Parameters
    ----------
    scales : tuple of Scale
        The volume's levels, finest first.
    itemsize : int
        Bytes per voxel (to size cache blocks).
    """
    base = scales[0]
    factors = [
        tuple(
            _integer_factor(r / r0)
            for r, r0 in zip(sc.resolution.as_tuple(), base.resolution.as_tuple(), strict=True)
        )
        for sc in scales
    ]
    coarsest = factors[-1]
    nested = all(f > 0 for fs in factors for f in fs) and all(
        c % f == 0 for fs in factors for c, f in zip(coarsest, fs, strict=True)
    )
    if nested:
        padded = tuple(-(-n // c) * c for n, c in zip(base.shape, coarsest, strict=True))
    else:
        padded = base.shape
    origin0 = np.asarray(base.origin_nm.as_tuple())
    levels = []
    for i, (sc, fs) in enumerate(zip(scales, factors, strict=True)):
        if nested:
            shape = tuple(p // f for p, f in zip(padded, fs, strict=True))
            offset_nm = np.asarray(sc.origin_nm.as_tuple()) - origin0
            shift = tuple(
                round(o / r) for o, r in zip(offset_nm, sc.resolution.as_tuple(), strict=True)
            )
        else:
            shape, shift = sc.shape, (0, 0, 0)
        levels.append(
            LevelGeometry(
                scale=i,
                shape=shape,  # type: ignore[arg-type]
                factor=fs,  # type: ignore[arg-type]
                shift=shift,  # type: ignore[arg-type]
                storage_shape=sc.shape,
                block=block_shape_for(sc.chunk_shape, itemsize),
            )
        )
    return levels
