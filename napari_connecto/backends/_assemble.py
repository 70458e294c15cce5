"""Assembling a region from the chunks of a regular grid, whatever decodes them."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from napari_connecto.errors import ChunkError

if TYPE_CHECKING:
    from napari_connecto.volume.scale import Index3

__all__ = ["ChunkLoader", "Grid", "assemble"]


class Grid(Protocol):
    """A regular chunk grid over one scale (z, y, x)."""

    chunk: Index3
    """Chunk size in voxels."""
    dtype: np.dtype
    """Voxel data type."""

    def bounds(self, grid: Index3) -> tuple[Index3, Index3]:
        """Scale-relative ``(start, stop)`` of one chunk, truncated at the edge."""
        ...

    def name(self, grid: Index3) -> str:
        """The chunk's name in messages (its file or key)."""
        ...


ChunkLoader = Callable[["Index3", str, "Index3"], "np.ndarray | None"]
"""Loads the chunk of a grid index, name and shape as ``(c, z, y, x)``, or ``None`` if
it does not exist; raises :class:`OSError` or :class:`ValueError` if it cannot be read."""


def assemble(
    grid: Grid,
    start: Index3,
    stop: Index3,
    channel: int,
    load: ChunkLoader,
    *,
    where: str,
    scale: int,
) -> np.ndarray:
    """Voxels ``[start, stop)`` (scale-relative, z, y, x) of one channel, chunk by chunk.

    A chunk ``load`` does not find reads as zeros (precomputed's and N5's convention).

    Raises
    ------
    ChunkError
        Naming the chunk, if one is unreadable, truncated, corrupt or too large.
    """
    size = tuple(b - a for a, b in zip(start, stop, strict=True))
    ranges = [range(a // c, -(-b // c)) for a, b, c in zip(start, stop, grid.chunk, strict=True)]
    loaded: dict[Index3, np.ndarray | None] = {}
    if all(len(r) == 1 for r in ranges):  # one chunk: hand it over whole if it is the region
        index: Index3 = tuple(r.start for r in ranges)  # type: ignore[assignment]
        chunk = loaded[index] = _load(grid, index, channel, load, where, scale)
        if chunk is None:
            return np.zeros(size, dtype=grid.dtype)
        if grid.bounds(index) == (start, stop) and _owned(chunk, size, grid.dtype):
            return chunk
    out = np.zeros(size, dtype=grid.dtype)
    for index in itertools.product(*ranges):  # type: ignore[assignment]
        lo, hi = grid.bounds(index)
        if index in loaded:
            chunk = loaded[index]
        else:
            chunk = _load(grid, index, channel, load, where, scale)
        if chunk is None:
            continue
        src = tuple(
            slice(max(a, s) - a, min(b, e) - a)
            for a, b, s, e in zip(lo, hi, start, stop, strict=True)
        )
        dst = tuple(
            slice(max(a, s) - s, min(b, e) - s)
            for a, b, s, e in zip(lo, hi, start, stop, strict=True)
        )
        out[dst] = chunk[src]
    return out


def _load(  # noqa: PLR0917 - private
    grid: Grid, index: Index3, channel: int, load: ChunkLoader, where: str, scale: int
) -> np.ndarray | None:
    """One channel of one chunk (``None`` if missing); failures named as :class:`ChunkError`."""
    name = grid.name(index)
    lo, hi = grid.bounds(index)
    shape = tuple(b - a for a, b in zip(lo, hi, strict=True))
    try:
        found = load(index, name, shape)  # type: ignore[arg-type]
        return None if found is None else found[channel]
    except (OSError, ValueError) as exc:
        raise ChunkError(where, scale, name, str(exc)) from None


def _owned(chunk: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether a decoded chunk can be handed out as the region itself, not copied.

    It must be exactly the region (shape, type), writable, C-contiguous, and all
    of the memory it keeps alive (no other channels riding along).
    """
    flags = chunk.flags
    whole = chunk.base is None or getattr(chunk.base, "nbytes", -1) == chunk.nbytes
    return (
        chunk.shape == shape
        and chunk.dtype == dtype
        and flags.writeable
        and flags.c_contiguous
        and whole
    )
