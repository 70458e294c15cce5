"""Assemble a display region of one level from cached blocks, filling gaps from coarser levels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from napari_connecto.cache.pyramid import LevelGeometry
    from napari_connecto.volume.scale import Index3

__all__ = ["BlockLookup", "Composed", "compose_region", "hatch", "paste"]

BlockLookup = Callable[[int, "Index3"], "np.ndarray | None"]
"""``lookup(level, block)`` -> the decoded block if it is at hand, else ``None``."""


class Composed(NamedTuple):
    """What :func:`compose_region` assembled."""

    data: np.ndarray
    """The region."""
    missing: list[Index3]
    """Blocks of the level that were not at hand."""
    uncovered: list[Index3]
    """Missing blocks that no coarser cached block stood in for (fully)."""


_StandIn = tuple["LevelGeometry", "Index3", "Index3", np.ndarray]
"""A cached coarser block: its level, ratio to the target level, index and data."""

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


def _ratio(coarse: LevelGeometry, here: LevelGeometry) -> Index3 | None:
    """Voxels of ``here`` per voxel of ``coarse``, if both are aligned and it is an integer."""
    if not (here.aligned and coarse.aligned):
        return None
    if any(c % h for c, h in zip(coarse.factor, here.factor, strict=True)):
        return None
    return tuple(c // h for c, h in zip(coarse.factor, here.factor, strict=True))  # type: ignore[return-value]


def _upsample(
    small: np.ndarray, ratio: Index3, small_start: Index3, start: Index3, stop: Index3
) -> np.ndarray:
    """Nearest upsampling of ``small`` (placed at ``small_start``) cropped to ``[start, stop)``."""
    for axis, r in enumerate(ratio):
        if r > 1:
            small = np.repeat(small, r, axis=axis)
    crop = tuple(
        slice(a - ca * r, b - ca * r)
        for a, b, ca, r in zip(start, stop, small_start, ratio, strict=True)
    )
    return small[crop]


def _paint_block(
    out: np.ndarray, out_start: Index3, bbox: tuple[Index3, Index3], stand_in: _StandIn
) -> None:
    """Paint one coarser block, upsampled, over its footprint inside ``bbox``."""
    coarse, ratio, block, data = stand_in
    b_start = coarse.block_display_bounds(block)[0]
    lo = tuple(
        max((s + o) * r, a) for s, o, r, a in zip(b_start, (0, 0, 0), ratio, bbox[0], strict=True)
    )
    hi = tuple(
        min((s + n) * r, b) for s, n, r, b in zip(b_start, data.shape, ratio, bbox[1], strict=True)
    )
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        return
    c_lo = tuple(a // r for a, r in zip(lo, ratio, strict=True))
    c_hi = tuple(-(-b // r) for b, r in zip(hi, ratio, strict=True))
    piece = data[tuple(slice(a - s, b - s) for a, b, s in zip(c_lo, c_hi, b_start, strict=True))]
    target = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, out_start, strict=True))
    out[target] = _upsample(piece, ratio, c_lo, lo, hi)  # type: ignore[arg-type]


def compose_region(
    levels: Sequence[LevelGeometry],
    level: int,
    start: Index3,
    stop: Index3,
    *,
    lookup: BlockLookup,
    dtype: np.dtype,
    fill: float,
) -> Composed:
    """Display region ``[start, stop)`` of one level from whatever blocks are at hand.

    Where a block of ``level`` is missing, the region shows the finest coarser level
    that has a cached block there (upsampled, nearest), else ``fill``.

    Returns
    -------
    Composed
        The region, the blocks of ``level`` that were missing, and those of them that
        no coarser cached block stood in for.
    """
    geom = levels[level]
    out = np.full(tuple(b - a for a, b in zip(start, stop, strict=True)), fill, dtype=dtype)
    present: list[tuple[Index3, np.ndarray]] = []
    missing: list[Index3] = []
    for block in geom.blocks_for(start, stop):
        data = lookup(level, block)
        if data is None:
            missing.append(block)
        else:
            present.append((block, data))
    uncovered = missing
    if missing:
        uncovered = _paint_stand_ins(out, levels, level, (start, stop), missing, lookup=lookup)
    for block, data in present:
        paste(out, start, data, geom.block_display_bounds(block)[0])
    return Composed(out, missing, uncovered)


def _paint_stand_ins(
    out: np.ndarray,
    levels: Sequence[LevelGeometry],
    level: int,
    region: tuple[Index3, Index3],
    missing: list[Index3],
    *,
    lookup: BlockLookup,
) -> list[Index3]:
    """Paint coarser cached blocks over each missing block; return the missing left uncovered.

    Each missing block is painted once from the finest level whose cached blocks cover
    it, with any finer partial cover painted over that; a block no level covers gets
    whatever partial cover exists, coarsest first.
    """
    geom = levels[level]
    start, stop = region
    candidates = [
        (coarse, ratio) for coarse in levels[level + 1 :] if (ratio := _ratio(coarse, geom))
    ]
    memo: dict[tuple[int, Index3], np.ndarray | None] = {}

    def cached(coarse: LevelGeometry, block: Index3) -> np.ndarray | None:
        key = (coarse.scale, block)
        if key not in memo:
            memo[key] = lookup(coarse.scale, block)
        return memo[key]

    if _paint_from_one_level(out, start, missing, geom, candidates=candidates, cached=cached):
        return []
    uncovered = []
    for block in missing:
        part = _intersect(*geom.block_display_bounds(block), start, stop)
        if part is None:
            continue
        layers: list[list[_StandIn]] = []  # finest first
        covered = False
        for coarse, ratio in candidates:
            blocks = coarse.blocks_for(*_scaled(*part, ratio))  # type: ignore[arg-type]
            found = [(coarse, ratio, b, d) for b in blocks if (d := cached(coarse, b)) is not None]
            if found:
                layers.append(found)  # type: ignore[arg-type]
            if found and len(found) == len(blocks):
                covered = True
                break
        for stand_ins in reversed(layers):
            for stand_in in stand_ins:
                _paint_block(out, start, part, stand_in)
        if not covered:
            uncovered.append(block)
    return uncovered


def _paint_from_one_level(
    out: np.ndarray,
    start: Index3,
    missing: list[Index3],
    geom: LevelGeometry,
    *,
    candidates: list[tuple[LevelGeometry, Index3]],
    cached: Callable[[LevelGeometry, Index3], np.ndarray | None],
) -> bool:
    """The common case (just zoomed in): the next cached level covers every gap at once."""
    stop = tuple(a + n for a, n in zip(start, out.shape, strict=True))
    bounds = [geom.block_display_bounds(b) for b in missing]
    lo = tuple(max(min(b[0][i] for b in bounds), start[i]) for i in range(3))
    hi = tuple(min(max(b[1][i] for b in bounds), stop[i]) for i in range(3))
    for coarse, ratio in candidates:
        blocks = coarse.blocks_for(*_scaled(lo, hi, ratio))  # type: ignore[arg-type]
        found = [(coarse, ratio, b, d) for b in blocks if (d := cached(coarse, b)) is not None]
        if not found:
            continue  # nothing here: a coarser level may cover it all
        if len(found) < len(blocks):
            return False
        for stand_in in found:
            _paint_block(out, start, (lo, hi), stand_in)  # type: ignore[arg-type]
        return True
    return False


def _scaled(start: Index3, stop: Index3, ratio: Index3) -> tuple[Index3, Index3]:
    """A region of a finer level in the coordinates of a level ``ratio`` times coarser."""
    return (
        tuple(a // r for a, r in zip(start, ratio, strict=True)),  # type: ignore[return-value]
        tuple(-(-b // r) for b, r in zip(stop, ratio, strict=True)),
    )


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
