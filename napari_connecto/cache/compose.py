"""Assemble a display region of one level from cached blocks, filling gaps from coarser levels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_connecto.cache.pyramid import LevelGeometry
    from napari_connecto.volume.scale import Index3

__all__ = ["BlockLookup", "compose_region", "hatch", "paste"]

BlockLookup = Callable[[int, "Index3"], "np.ndarray | None"]
"""``lookup(level, block)`` -> the decoded block if it is at hand, else ``None``."""

HATCH_PERIOD = 8
"""Stripe width, in display voxels, of the pattern drawn over failed chunks."""


def paste(
    out: np.ndarray, out_start: Sequence[int], block: np.ndarray, start: Sequence[int]
) -> None:
    """Copy the part of ``block`` (placed at ``start``) inside ``out`` (placed at ``out_start``)."""
    src, dst = [], []
    for o, n_out, b, n_b in zip(out_start, out.shape, start, block.shape, strict=True):
        lo, hi = max(o, b), min(o + n_out, b + n_b)
        if hi <= lo:
            return
        src.append(slice(lo - b, hi - b))
        dst.append(slice(lo - o, hi - o))
    out[tuple(dst)] = block[tuple(src)]


def _intersect(
    a_start: Sequence[int], a_stop: Sequence[int], b_start: Sequence[int], b_stop: Sequence[int]
) -> tuple[Index3, Index3] | None:
    lo = tuple(max(a, b) for a, b in zip(a_start, b_start, strict=True))
    hi = tuple(min(a, b) for a, b in zip(a_stop, b_stop, strict=True))
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        return None
    return lo, hi  # type: ignore[return-value]


def _from_coarser(
    levels: Sequence[LevelGeometry],
    level: int,
    start: Index3,
    stop: Index3,
    *,
    lookup: BlockLookup,
    dtype: np.dtype,
    fill: float,
) -> np.ndarray | None:
    """Display region ``[start, stop)`` of ``level`` upsampled (nearest) from a coarser level."""
    here = levels[level]
    if not here.aligned:
        return None
    for coarse in levels[level + 1 :]:
        if not coarse.aligned:
            continue
        if any(c % h for c, h in zip(coarse.factor, here.factor, strict=True)):
            continue
        ratio = tuple(c // h for c, h in zip(coarse.factor, here.factor, strict=True))
        c_start = tuple(a // r for a, r in zip(start, ratio, strict=True))
        c_stop = tuple(-(-b // r) for b, r in zip(stop, ratio, strict=True))
        blocks = coarse.blocks_for(c_start, c_stop)  # type: ignore[arg-type]
        found = [lookup(coarse.scale, b) for b in blocks]
        if not blocks or any(f is None for f in found):
            continue
        small = np.full(
            tuple(b - a for a, b in zip(c_start, c_stop, strict=True)), fill, dtype=dtype
        )
        for block, data in zip(blocks, found, strict=True):
            paste(small, c_start, data, coarse.block_display_bounds(block)[0])  # type: ignore[arg-type]
        for axis, r in enumerate(ratio):
            if r > 1:
                small = np.repeat(small, r, axis=axis)
        crop = tuple(
            slice(a - ca * r, a - ca * r + (b - a))
            for a, b, ca, r in zip(start, stop, c_start, ratio, strict=True)
        )
        return small[crop]
    return None


def compose_region(
    levels: Sequence[LevelGeometry],
    level: int,
    start: Index3,
    stop: Index3,
    *,
    lookup: BlockLookup,
    dtype: np.dtype,
    fill: float,
) -> tuple[np.ndarray, list[Index3]]:
    """Display region ``[start, stop)`` of one level from whatever blocks are at hand.

    Returns
    -------
    numpy.ndarray
        The region: exact where the level's blocks are at hand, upsampled from
        the finest coarser level that covers a missing block, else ``fill``.
    list of tuple
        The blocks of ``level`` that were not at hand.
    """
    geom = levels[level]
    out = np.full(tuple(b - a for a, b in zip(start, stop, strict=True)), fill, dtype=dtype)
    missing: list[Index3] = []
    for block in geom.blocks_for(start, stop):
        data = lookup(level, block)
        if data is None:
            missing.append(block)
        else:
            paste(out, start, data, geom.block_display_bounds(block)[0])
    for block in missing:
        b_start, b_stop = geom.block_display_bounds(block)
        part = _intersect(b_start, b_stop, start, stop)
        if part is None:
            continue
        upsampled = _from_coarser(
            levels, level, part[0], part[1], lookup=lookup, dtype=dtype, fill=fill
        )
        if upsampled is not None:
            paste(out, start, upsampled, part[0])
    return out, missing


def hatch(
    out: np.ndarray,
    out_start: Sequence[int],
    start: Sequence[int],
    stop: Sequence[int],
    *,
    low: float,
    high: float,
) -> None:
    """Draw diagonal stripes of ``low`` and ``high`` over ``[start, stop)`` (a failed chunk)."""
    out_stop = [o + n for o, n in zip(out_start, out.shape, strict=True)]
    part = _intersect(start, stop, out_start, out_stop)
    if part is None:
        return
    lo, hi = part
    y = np.arange(lo[1], hi[1])[:, None]
    x = np.arange(lo[2], hi[2])[None, :]
    stripes = ((x + y) // HATCH_PERIOD) % 2 == 0
    plane = np.where(stripes, high, low).astype(out.dtype)
    region = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, out_start, strict=True))
    out[region] = plane[None, :, :]
