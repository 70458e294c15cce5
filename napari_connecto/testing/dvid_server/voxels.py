"""Block-chunked, versioned voxel storage shared by ``uint8blk`` and ``labelmap``.

Voxels live in blocks (``BlockSize``, default 32^3 for ``uint8blk`` and 64^3
for ``labelmap``), keyed ``(scale, bz, by, bx)`` in a
:class:`~napari_connecto.testing.dvid_server.versioned.VersionedStore`, so a
child version copies only the blocks it overwrites. Arrays are z, y, x (DVID's
x-fastest byte order); missing blocks read as zeros.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from napari_connecto.testing.dvid_server.versioned import VersionedStore

__all__ = ["Block", "BlockGrid", "BlockKey"]

BlockKey = tuple[int, int, int, int]
"""``(scale, bz, by, bx)``."""


class Block:
    """One stored block: a read-only z, y, x array and cached label counts."""

    __slots__ = ("_counts", "data")

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.ascontiguousarray(data)
        self.data.flags.writeable = False
        self._counts: dict[int, int] | None = None

    def counts(self) -> dict[int, int]:
        """Voxel count of every non-zero value in the block."""
        if self._counts is None:
            values, counts = np.unique(self.data, return_counts=True)
            self._counts = {int(v): int(c) for v, c in zip(values, counts, strict=True) if v}
        return self._counts


class BlockGrid:
    """Versioned blocks of one data instance.

    Parameters
    ----------
    block_zyx : sequence of int
        Block shape, z, y, x.
    dtype : numpy dtype
        Voxel type.
    """

    def __init__(self, block_zyx: Sequence[int], dtype: np.dtype[Any] | type) -> None:
        self.block = tuple(int(b) for b in block_zyx)
        self.dtype = np.dtype(dtype)
        self.store: VersionedStore[BlockKey, Block] = VersionedStore()

    def aligned(self, offset_zyx: Sequence[int], shape_zyx: Sequence[int]) -> bool:
        """Whether a box starts and ends on block boundaries."""
        return all(
            o % b == 0 and s % b == 0
            for o, s, b in zip(offset_zyx, shape_zyx, self.block, strict=True)
        )

    def block_range(
        self, offset_zyx: Sequence[int], shape_zyx: Sequence[int]
    ) -> Iterator[tuple[int, int, int]]:
        """Block coordinates (z, y, x) overlapping a box, in z, y, x order."""
        ranges = [
            range(o // b, (o + s - 1) // b + 1) if s > 0 else range(0)
            for o, s, b in zip(offset_zyx, shape_zyx, self.block, strict=True)
        ]
        return itertools.product(*ranges)

    def get(self, ancestry: Sequence[int], scale: int, bzyx: Sequence[int]) -> Block | None:
        """The block visible at ``ancestry[0]``, or ``None``."""
        return self.store.get((scale, *bzyx), ancestry)

    def read(
        self,
        ancestry: Sequence[int],
        scale: int,
        offset_zyx: Sequence[int],
        shape_zyx: Sequence[int],
    ) -> np.ndarray:
        """Voxels of a box (any alignment); missing blocks read as 0."""
        out = np.zeros(tuple(shape_zyx), self.dtype)
        for bzyx in self.block_range(offset_zyx, shape_zyx):
            block = self.get(ancestry, scale, bzyx)
            if block is None:
                continue
            src, dst = self._overlap(bzyx, offset_zyx, shape_zyx)
            out[dst] = block.data[src]
        return out

    def values_at(
        self, ancestry: Sequence[int], scale: int, points_zyx: Sequence[Sequence[int]]
    ) -> np.ndarray:
        """Voxel values at individual points (0 where no block is stored)."""
        out = np.zeros(len(points_zyx), self.dtype)
        for i, point in enumerate(points_zyx):
            bzyx = tuple(int(p) // b for p, b in zip(point, self.block, strict=True))
            block = self.get(ancestry, scale, bzyx)
            if block is not None:
                local = tuple(
                    int(p) - bi * b for p, bi, b in zip(point, bzyx, self.block, strict=True)
                )
                out[i] = block.data[local]
        return out

    def _overlap(
        self, bzyx: Sequence[int], offset_zyx: Sequence[int], shape_zyx: Sequence[int]
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        src, dst = [], []
        for bi, b, o, s in zip(bzyx, self.block, offset_zyx, shape_zyx, strict=True):
            lo, hi = max(bi * b, o), min((bi + 1) * b, o + s)
            src.append(slice(lo - bi * b, hi - bi * b))
            dst.append(slice(lo - o, hi - o))
        return tuple(src), tuple(dst)

    def write(
        self, version: int, scale: int, offset_zyx: Sequence[int], array: np.ndarray
    ) -> list[tuple[int, int, int]]:
        """Store a block-aligned array in ``version``; returns the blocks written."""
        written = []
        for bzyx in self.block_range(offset_zyx, array.shape):
            sel = tuple(
                slice(bi * b - o, (bi + 1) * b - o)
                for bi, b, o in zip(bzyx, self.block, offset_zyx, strict=True)
            )
            self.put(version, scale, bzyx, array[sel])
            written.append(tuple(bzyx))
        return written

    def put(self, version: int, scale: int, bzyx: Sequence[int], data: np.ndarray) -> None:
        """Store one whole block."""
        if data.shape != self.block:
            raise ValueError(f"block of shape {data.shape}, expected {self.block}")
        self.store.put((scale, *(int(b) for b in bzyx)), version, Block(data.astype(self.dtype)))

    def blocks(
        self, ancestry: Sequence[int], scale: int
    ) -> list[tuple[tuple[int, int, int], Block]]:
        """Every visible block of a scale, sorted z, y, x."""
        found = [(key[1:], block) for key, block in self.store.items(ancestry) if key[0] == scale]
        return sorted(found, key=lambda kv: kv[0])
