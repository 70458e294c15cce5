"""Display-space geometry of pyramid levels: padding, shifts from origins, cache blocks."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from napari_connecto.cache.pyramid import MAX_BLOCK_BYTES, block_shape_for, plan_pyramid
from napari_connecto.geometry import Vec3
from napari_connecto.volume.scale import Scale


def scale(
    shape,
    resolution,
    *,
    chunk=(8, 32, 32),
    offset=(0, 0, 0),
    translation=(0.0, 0.0, 0.0),
    dtype=np.uint8,
) -> Scale:
    return Scale(
        shape=tuple(shape),
        resolution=Vec3.of(resolution),
        chunk_shape=tuple(chunk),
        dtype=np.dtype(dtype),
        voxel_offset=tuple(offset),
        translation_nm=Vec3.of(translation),
    )


def ome_pyramid(shape=(10, 101, 103), levels=3, base=(40.0, 4.0, 4.0)) -> tuple[Scale, ...]:
    """OME-Zarr style: level k is 2^k coarser in y, x, translated by (f - 1) / 2 level-0 voxels."""
    scales = []
    for k in range(levels):
        f = 2**k
        res = (base[0], base[1] * f, base[2] * f)
        translation = (0.0, (f - 1) / 2 * base[1], (f - 1) / 2 * base[2])
        level_shape = (shape[0], -(-shape[1] // f), -(-shape[2] // f))
        scales.append(scale(level_shape, res, translation=translation))
    return tuple(scales)


def test_ome_half_voxel_translations_need_no_shift() -> None:
    levels = plan_pyramid(ome_pyramid(), itemsize=1)
    assert [g.shift for g in levels] == [(0, 0, 0)] * 3
    assert [g.factor for g in levels] == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert all(g.aligned for g in levels)
    assert [g.scale for g in levels] == [0, 1, 2]


def test_non_divisible_shape_is_padded_so_napari_ratios_are_exact() -> None:
    levels = plan_pyramid(ome_pyramid(shape=(10, 101, 103)), itemsize=1)
    assert [g.shape for g in levels] == [(10, 104, 104), (10, 52, 52), (10, 26, 26)]
    assert [g.storage_shape for g in levels] == [(10, 101, 103), (10, 51, 52), (10, 26, 26)]
    base = levels[0].shape
    for g in levels:
        # napari derives each level's scale from the shape ratio: it must be the true factor
        assert all(b % s == 0 for b, s in zip(base, g.shape))
        assert tuple(b // s for b, s in zip(base, g.shape)) == g.factor
        # padding only ever adds: every stored voxel stays reachable
        assert all(s >= n for s, n in zip(g.shape, g.storage_shape))


def test_precomputed_voxel_offsets_become_shifts() -> None:
    scales = (
        scale((8, 200, 200), (40, 4, 4), offset=(3, 100, 200)),
        scale((8, 100, 100), (40, 8, 8), offset=(3, 50, 100)),  # same origin: no shift
        scale((8, 50, 50), (40, 16, 16), offset=(3, 27, 50)),  # 2 level-2 voxels lower in y
    )
    levels = plan_pyramid(scales, itemsize=1)
    assert [g.shift for g in levels] == [(0, 0, 0), (0, 0, 0), (0, 2, 0)]
    coarse = levels[2]
    # display rows 0 and 1 of level 2 lie before its first stored voxel
    assert coarse.blocks_for((0, 0, 0), (1, 2, 1)) == []
    assert coarse.blocks_for((0, 2, 0), (1, 3, 1)) == [(0, 0, 0)]
    start, stop = coarse.block_display_bounds((0, 0, 0))
    assert start == (0, 2, 0)
    assert stop == (8, 34, 32)


def test_non_integer_factors_fall_back_to_storage_shapes() -> None:
    scales = (
        scale((8, 90, 90), (40, 4, 4)),
        scale((8, 60, 60), (40, 6, 6), offset=(0, 5, 5)),  # factor 1.5
    )
    levels = plan_pyramid(scales, itemsize=1)
    assert levels[1].factor == (1, 0, 0)
    assert not levels[1].aligned
    assert [g.shape for g in levels] == [(8, 90, 90), (8, 60, 60)]
    assert [g.shift for g in levels] == [(0, 0, 0), (0, 0, 0)]


def test_non_nested_integer_factors_fall_back() -> None:
    scales = (
        scale((8, 91, 91), (40, 4, 4)),
        scale((8, 46, 46), (40, 8, 8)),
        scale((8, 31, 31), (40, 12, 12)),  # 3 is not a multiple of 2
    )
    levels = plan_pyramid(scales, itemsize=1)
    assert [g.shape for g in levels] == [s.shape for s in scales]
    assert [g.factor for g in levels] == [(1, 1, 1), (1, 2, 2), (1, 3, 3)]


def test_blocks_for_and_bounds_tile_each_level_exactly() -> None:
    levels = plan_pyramid(ome_pyramid(shape=(10, 101, 103)), itemsize=1)
    for g in levels:
        blocks = g.blocks_for((0, 0, 0), g.shape)
        total = 0
        seen = np.zeros(g.storage_shape, dtype=np.int8)
        for b in blocks:
            start, stop = g.block_bounds(b)
            total += math.prod(e - s for s, e in zip(start, stop))
            seen[tuple(slice(s, e) for s, e in zip(start, stop))] += 1
        assert total == math.prod(g.storage_shape)
        assert (seen == 1).all()  # no gaps, no overlaps
        # a region outside the stored data touches no block
        assert g.blocks_for((0, 0, g.storage_shape[2]), g.shape) == []


def test_block_shape_keeps_small_chunks() -> None:
    assert block_shape_for((8, 64, 64), 1) == (8, 64, 64)
    assert block_shape_for((1, 1, 1), 8) == (1, 1, 1)


def test_block_shape_caps_huge_chunks() -> None:
    # an HDF5 dataset stored contiguously is one "chunk" of 1 GiB
    block = block_shape_for((1024, 1024, 1024), 1)
    assert math.prod(block) <= MAX_BLOCK_BYTES
    assert math.prod(block) > MAX_BLOCK_BYTES // 8  # not needlessly small
    assert all(1024 % b == 0 for b in block)  # blocks tile the chunk
    block64 = block_shape_for((1024, 1024, 1024), 8)
    assert math.prod(block64) * 8 <= MAX_BLOCK_BYTES


def test_plan_pyramid_caps_blocks() -> None:
    big = (scale((512, 4096, 4096), (40, 4, 4), chunk=(512, 4096, 4096), dtype=np.uint64),)
    (g,) = plan_pyramid(big, itemsize=8)
    assert math.prod(g.block) * 8 <= MAX_BLOCK_BYTES
    assert g.shape == (512, 4096, 4096)


@given(
    chunk=st.tuples(*[st.integers(1, 5000)] * 3),
    itemsize=st.sampled_from([1, 2, 4, 8]),
    limit=st.integers(1, 2**24),
)
def test_block_shape_property(chunk, itemsize, limit) -> None:
    block = block_shape_for(chunk, itemsize, limit)
    assert all(1 <= b <= c for b, c in zip(block, chunk))
    if max(block) > 1:
        assert math.prod(block) * itemsize <= limit
    if math.prod(chunk) * itemsize <= limit:
        assert block == chunk
