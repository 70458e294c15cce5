"""Assemble a display region of one level from cached blocks, filling gaps from coarser levels."""

from __future__ import annotations

import itertools
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


_Segment = tuple[int, slice, slice, int, int]
"""Along one axis: block index, slice of the block, slice of the region, region start/stop."""


def _segments(lo: int, hi: int, shift: int, size: int, block: int) -> list[_Segment]:
    """The blocks of one axis overlapping display ``[lo, hi)``, with where each part goes."""
    a, b = max(lo - shift, 0), min(hi - shift, size)  # storage coordinates
    out = []
    for k in range(a // block, (b - 1) // block + 1) if b > a else ():
        s0 = k * block
        c0, c1 = max(s0, a), min(s0 + block, size, b)
        out.append((k, slice(c0 - s0, c1 - s0), slice(c0 + shift - lo, c1 + shift - lo),
                    c0 + shift, c1 + shift))  # fmt: skip
    return out


def _grid(geom: LevelGeometry, start: Sequence[int], stop: Sequence[int]) -> list[list[_Segment]]:
    return [
        _segments(lo, hi, sh, n, bs)
        for lo, hi, sh, n, bs in zip(
            start, stop, geom.shift, geom.storage_shape, geom.block, strict=True
        )
    ]


def _upsample(small: np.ndarray, ratio: Index3) -> np.ndarray:
    """Nearest upsampling of ``small`` by ``ratio`` (one copy per axis that grows)."""
    for axis, r in enumerate(ratio):
        if r > 1:
            small = np.repeat(small, r, axis=axis)
    return small


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
    present: list[tuple[np.ndarray, tuple[slice, ...], tuple[slice, ...]]] = []
    missing: list[Index3] = []
    footprints: list[tuple[int, int, int, int, int, int]] = []
    zs, ys, xs = _grid(geom, start, stop)
    for bz, sz, dz, z0, z1 in zs:
        for by, sy, dy, y0, y1 in ys:
            for bx, sx, dx, x0, x1 in xs:
                block = (bz, by, bx)
                data = lookup(level, block)
                if data is None:
                    missing.append(block)
                    footprints.append((z0, y0, x0, z1, y1, x1))
                else:
                    present.append((data, (sz, sy, sx), (dz, dy, dx)))
    uncovered = missing
    if missing:
        uncovered = _paint_stand_ins(
            out, levels, level, start, missing=missing, footprints=footprints, lookup=lookup
        )
    for data, src, dst in present:
        out[dst] = data[src]
    return Composed(out, missing, uncovered)


def _paint_stand_ins(
    out: np.ndarray,
    levels: Sequence[LevelGeometry],
    level: int,
    start: Index3,
    *,
    missing: list[Index3],
    footprints: list[tuple[int, int, int, int, int, int]],
    lookup: BlockLookup,
) -> list[Index3]:
    """Paint coarser cached blocks over the missing blocks; return the missing left uncovered.

    Every voxel of a missing block shows the finest coarser level that has it cached
    (painted coarsest first, finer over coarser), from the finest level covering all of
    them on. A missing block is *covered* when one level's cached blocks cover all of it.
    """
    geom = levels[level]
    feet = np.asarray(footprints, dtype=np.int64).reshape(-1, 2, 3)  # (n, lo/hi, zyx)
    lo, hi = feet[:, 0].min(axis=0), feet[:, 1].max(axis=0)
    covered = np.zeros(len(missing), dtype=bool)
    painters: list[tuple[Index3, list[list[_Segment]], list[np.ndarray | None]]] = []
    for coarse in levels[level + 1 :]:
        ratio = _ratio(coarse, geom)
        if ratio is None:
            continue
        r = np.asarray(ratio, dtype=np.int64)
        c_lo, c_hi = lo // r, -(-hi // r)
        grid = _grid(coarse, c_lo.tolist(), c_hi.tolist())
        if not all(grid):
            continue
        found = [
            lookup(coarse.scale, (bz, by, bx))
            for bz, *_ in grid[0]
            for by, *_ in grid[1]
            for bx, *_ in grid[2]
        ]  # looked up once: a block evicted meanwhile stays painted from this copy
        have = np.array([d is not None for d in found]).reshape([len(g) for g in grid])
        if not have.any():
            continue
        painters.append((ratio, grid, found))
        covered |= _covers(have, grid, coarse, feet, r)
        if have.all():
            break  # coarser levels would be painted over everywhere
    for ratio, grid, found in reversed(painters):  # coarsest first
        _paint_level(out, start, (lo, hi), ratio=ratio, grid=grid, found=found)
    return [b for b, done in zip(missing, covered.tolist(), strict=True) if not done]


def _covers(
    have: np.ndarray,
    grid: list[list[_Segment]],
    coarse: LevelGeometry,
    feet: np.ndarray,
    ratio: np.ndarray,
) -> np.ndarray:
    """For each footprint (fine display voxels), whether cached blocks of ``coarse`` cover it."""
    first = np.array([g[0][0] for g in grid], dtype=np.int64)
    block = np.asarray(coarse.block, dtype=np.int64)
    shift = np.asarray(coarse.shift, dtype=np.int64)
    size = np.asarray(coarse.storage_shape, dtype=np.int64)
    c_lo = np.maximum(feet[:, 0] // ratio - shift, 0)  # coarse storage voxels
    c_hi = np.minimum(-(-feet[:, 1] // ratio) - shift, size)
    inside = (c_hi > c_lo).all(axis=1)
    b_lo = np.clip(c_lo // block - first, 0, None)
    b_hi = np.maximum((c_hi - 1) // block + 1 - first, b_lo)
    counts = np.zeros([n + 1 for n in have.shape], dtype=np.int64)  # summed-area table
    counts[1:, 1:, 1:] = have.cumsum(0).cumsum(1).cumsum(2)
    total = np.zeros(len(feet), dtype=np.int64)
    for corner in range(8):
        pick = [b_hi[:, i] if corner >> i & 1 else b_lo[:, i] for i in range(3)]
        sign = (-1) ** (3 - bin(corner).count("1"))
        total += sign * counts[pick[0], pick[1], pick[2]]
    return inside & (total == np.prod(b_hi - b_lo, axis=1))


def _paint_level(
    out: np.ndarray,
    start: Index3,
    box: tuple[np.ndarray, np.ndarray],
    *,
    ratio: Index3,
    grid: list[list[_Segment]],
    found: list[np.ndarray | None],
) -> None:
    """Paint the ``found`` blocks of one coarser level, upsampled, over fine display ``box``.

    ``found`` holds the block (or ``None``) of every cell of ``grid``, z, y, x order.
    """
    zs, ys, xs = grid
    cells = [
        (data, (sz, sy, sx), (z0, y0, x0), (z1, y1, x1))
        for data, ((_, sz, _, z0, z1), (_, sy, _, y0, y1), (_, sx, _, x0, x1)) in zip(
            found, itertools.product(zs, ys, xs), strict=True
        )
    ]
    if all(data is not None for data, *_ in cells):  # one piece: upsample it once
        c_lo = [zs[0][3], ys[0][3], xs[0][3]]
        c_hi = [zs[-1][4], ys[-1][4], xs[-1][4]]
        small = np.empty([b - a for a, b in zip(c_lo, c_hi, strict=True)], dtype=out.dtype)
        for data, src, a, b in cells:
            dst = tuple(slice(u - o, v - o) for u, v, o in zip(a, b, c_lo, strict=True))
            small[dst] = data[src]  # type: ignore[index]
        _paste_upsampled(out, start, box, small, small_start=c_lo, ratio=ratio)
        return
    for data, src, a, _ in cells:
        if data is not None:
            _paste_upsampled(out, start, box, data[src], small_start=a, ratio=ratio)


def _paste_upsampled(
    out: np.ndarray,
    start: Sequence[int],
    box: tuple[np.ndarray, np.ndarray],
    small: np.ndarray,
    *,
    small_start: Sequence[int],
    ratio: Index3,
) -> None:
    """Paint ``small`` (coarse, placed at ``small_start``) upsampled, inside fine ``box``."""
    lo, hi = box
    f_lo = [max(a * r, int(b)) for a, r, b in zip(small_start, ratio, lo, strict=True)]
    f_hi = [
        min((a + n) * r, int(b))
        for a, n, r, b in zip(small_start, small.shape, ratio, hi, strict=True)
    ]
    if any(b <= a for a, b in zip(f_lo, f_hi, strict=True)):
        return
    # only the coarse voxels that land inside, then upsample and crop
    k_lo = [a // r - s for a, r, s in zip(f_lo, ratio, small_start, strict=True)]
    k_hi = [-(-b // r) - s for b, r, s in zip(f_hi, ratio, small_start, strict=True)]
    piece = small[tuple(slice(a, b) for a, b in zip(k_lo, k_hi, strict=True))]
    up = _upsample(piece, ratio)
    crop = tuple(
        slice(a - (k + s) * r, b - (k + s) * r)
        for a, b, k, s, r in zip(f_lo, f_hi, k_lo, small_start, ratio, strict=True)
    )
    target = tuple(slice(a - o, b - o) for a, b, o in zip(f_lo, f_hi, start, strict=True))
    out[target] = up[crop]


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
