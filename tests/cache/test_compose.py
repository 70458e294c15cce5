"""Assembling a display region from cached blocks; coarser stand-ins; the failed-chunk hatch."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.cache.compose import HATCH_PERIOD, compose_region, hatch
from napari_connecto.cache.pyramid import LevelGeometry, plan_pyramid
from napari_connecto.testing.backends import SyntheticBackend, synthetic_voxels

FILL = 0
KIND = "image"


@pytest.fixture(scope="module")
def levels() -> list[LevelGeometry]:
    # non-divisible shape: level 0 is padded from (6, 61, 50) to (6, 64, 52)
    backend = SyntheticBackend(shape=(6, 61, 50), levels=3, chunk=(4, 16, 16))
    return plan_pyramid(backend.scales, itemsize=1)


def all_blocks(levels: list[LevelGeometry]) -> dict[tuple[int, tuple[int, int, int]], np.ndarray]:
    store = {}
    for g in levels:
        for b in g.blocks_for((0, 0, 0), g.shape):
            start, stop = g.block_bounds(b)
            store[g.scale, b] = synthetic_voxels(KIND, g.factor, start, stop)
    return store


def exact(g: LevelGeometry, start, stop) -> np.ndarray:
    """Ground truth of a display region of one level (fill outside the stored voxels)."""
    out = np.full([b - a for a, b in zip(start, stop)], FILL, dtype=np.uint8)
    lo = [max(a - s, 0) for a, s in zip(start, g.shift)]
    hi = [min(b - s, n) for b, s, n in zip(stop, g.shift, g.storage_shape)]
    if all(h > lo_ for lo_, h in zip(lo, hi)):
        dst = tuple(slice(a + s - o, b + s - o) for a, b, s, o in zip(lo, hi, g.shift, start))
        out[dst] = synthetic_voxels(KIND, g.factor, lo, hi)
    return out


def upsampled(fine: LevelGeometry, coarse: LevelGeometry, start, stop) -> np.ndarray:
    """Display region of ``fine`` shown with nearest-neighbour voxels of ``coarse``."""
    ratio = [c // f for c, f in zip(coarse.factor, fine.factor)]
    c_start = [a // r for a, r in zip(start, ratio)]
    c_stop = [-(-b // r) for b, r in zip(stop, ratio)]
    small = exact(coarse, c_start, c_stop)
    idx = [np.arange(a, b) // r - cs for a, b, r, cs in zip(start, stop, ratio, c_start)]
    return small[np.ix_(*idx)]


def lookup_from(store):
    return lambda level, block: store.get((level, block))


REGIONS = [
    ((0, 0, 0), (6, 64, 52)),  # the whole padded level 0
    ((1, 5, 7), (5, 40, 33)),  # unaligned interior
    ((2, 50, 40), (6, 64, 52)),  # across the stored edge into the padding
]


@pytest.mark.parametrize(("start", "stop"), REGIONS)
@pytest.mark.parametrize("level", [0, 1, 2])
def test_exact_where_every_block_is_cached(levels, level, start, stop) -> None:
    g = levels[level]
    start = tuple(min(a, n) for a, n in zip(start, g.shape))
    stop = tuple(min(b, n) for b, n in zip(stop, g.shape))
    store = all_blocks(levels)
    out, missing, uncovered = compose_region(
        levels, level, start, stop, lookup=lookup_from(store), dtype=np.uint8, fill=FILL
    )
    assert missing == []
    np.testing.assert_array_equal(out, exact(g, start, stop))
    assert out.dtype == np.uint8


def test_missing_blocks_are_upsampled_from_the_next_level(levels) -> None:
    store = all_blocks(levels)
    gone = [(0, 0, 0), (1, 2, 1), (0, 3, 3)]  # (0, 3, 3) is the ragged corner block
    for b in gone:
        del store[0, b]
    start, stop = (0, 0, 0), levels[0].shape
    out, missing, uncovered = compose_region(
        levels, 0, start, stop, lookup=lookup_from(store), dtype=np.uint8, fill=FILL
    )
    assert sorted(missing) == sorted(gone)
    assert uncovered == []  # every gap had a stand-in: no preview needs fetching
    expected = exact(levels[0], start, stop)
    for b in gone:
        b_start, b_stop = levels[0].block_display_bounds(b)
        sl = tuple(slice(a, e) for a, e in zip(b_start, b_stop))
        expected[sl] = upsampled(levels[0], levels[1], b_start, b_stop)
    np.testing.assert_array_equal(out, expected)
    # the stand-in is visibly coarser than the real data (the test is not vacuous)
    sl = tuple(slice(a, e) for a, e in zip(*levels[0].block_display_bounds((0, 0, 0))))
    assert not np.array_equal(out[sl], exact(levels[0], start, stop)[sl])


def test_finest_fully_cached_coarser_level_is_used(levels) -> None:
    store = all_blocks(levels)
    del store[0, (0, 1, 1)]
    b_start, b_stop = levels[0].block_display_bounds((0, 1, 1))
    sl = tuple(slice(a, e) for a, e in zip(b_start, b_stop))
    region = ((0, 0, 0), levels[0].shape)

    out, _, _ = compose_region(
        levels, 0, *region, lookup=lookup_from(store), dtype=np.uint8, fill=FILL
    )
    np.testing.assert_array_equal(out[sl], upsampled(levels[0], levels[1], b_start, b_stop))

    # level 1 only partly covers it now: fall through to level 2
    del store[1, (0, 0, 0)]
    out, _, _ = compose_region(
        levels, 0, *region, lookup=lookup_from(store), dtype=np.uint8, fill=FILL
    )
    from_2 = upsampled(levels[0], levels[2], b_start, b_stop)
    assert not np.array_equal(from_2, upsampled(levels[0], levels[1], b_start, b_stop))
    np.testing.assert_array_equal(out[sl], from_2)


def test_missing_coarse_level_block_upsampled_from_coarser_still(levels) -> None:
    store = all_blocks(levels)
    del store[1, (1, 1, 0)]
    start, stop = (0, 0, 0), levels[1].shape
    out, missing, uncovered = compose_region(
        levels, 1, start, stop, lookup=lookup_from(store), dtype=np.uint8, fill=FILL
    )
    assert missing == [(1, 1, 0)]
    b_start, b_stop = levels[1].block_display_bounds((1, 1, 0))
    sl = tuple(slice(a, e) for a, e in zip(b_start, b_stop))
    np.testing.assert_array_equal(out[sl], upsampled(levels[1], levels[2], b_start, b_stop))


def test_fill_where_nothing_is_cached(levels) -> None:
    start, stop = (1, 3, 5), (5, 40, 45)
    out, missing, uncovered = compose_region(
        levels, 0, start, stop, lookup=lambda lv, b: None, dtype=np.uint8, fill=7
    )
    assert (out == 7).all()
    assert out.shape == (4, 37, 40)
    assert sorted(missing) == sorted(levels[0].blocks_for(start, stop))
    assert len(missing) == 2 * 3 * 3
    assert sorted(uncovered) == sorted(missing)


def test_uncovered_lists_only_gaps_without_any_stand_in(levels) -> None:
    store = {key: value for key, value in all_blocks(levels).items() if key[0] == 1}
    del store[1, (0, 0, 0)]  # level 1 covers all of level 0 but one corner
    for key in [k for k in all_blocks(levels) if k[0] > 1]:
        store.pop(key, None)
    start, stop = (0, 0, 0), levels[0].shape
    out, missing, uncovered = compose_region(
        levels, 0, start, stop, lookup=lookup_from(store), dtype=np.uint8, fill=FILL
    )
    assert sorted(missing) == sorted(levels[0].blocks_for(start, stop))
    ratio = tuple(c // f for c, f in zip(levels[1].factor, levels[0].factor))
    corner = levels[1].block_display_bounds((0, 0, 0))
    under_corner = {
        b
        for b in levels[0].blocks_for(
            tuple(a * r for a, r in zip(corner[0], ratio)),
            tuple(e * r for e, r in zip(corner[1], ratio)),
        )
    }
    assert set(uncovered) == under_corner
    assert under_corner and len(uncovered) < len(missing)


def test_region_outside_the_data_is_fill_without_lookups(levels) -> None:
    calls = []

    def lookup(level, block):
        calls.append((level, block))

    out, missing, uncovered = compose_region(
        levels, 0, (0, 61, 50), (6, 64, 52), lookup=lookup, dtype=np.uint8, fill=3
    )
    assert (out == 3).all()
    assert missing == []
    assert calls == []


def test_shifted_level_composes_from_the_right_storage_voxels() -> None:
    g = LevelGeometry(
        scale=0,
        shape=(4, 40, 40),
        factor=(1, 1, 1),
        shift=(0, 3, -2),
        storage_shape=(4, 32, 32),
        block=(4, 16, 16),
    )
    store = {}
    for b in g.blocks_for((0, 0, 0), g.shape):
        start, stop = g.block_bounds(b)
        store[0, b] = synthetic_voxels(KIND, (1, 1, 1), start, stop)
    out, missing, uncovered = compose_region(
        [g], 0, (0, 0, 0), g.shape, lookup=lookup_from(store), dtype=np.uint8, fill=FILL
    )
    assert missing == []
    np.testing.assert_array_equal(out, exact(g, (0, 0, 0), g.shape))
    # display (y, x) = storage (y + 3, x - 2)
    np.testing.assert_array_equal(
        out[:, 3:35, 0:30], synthetic_voxels(KIND, (1, 1, 1), (0, 0, 2), (4, 32, 32))
    )
    assert (out[:, :3] == FILL).all()
    assert (out[:, :, 30:] == FILL).all()


# -- hatch ------------------------------------------------------------------------------------


def test_hatch_draws_stripes_only_inside_the_failed_block() -> None:
    out = np.full((4, 20, 30), 50, dtype=np.uint8)
    out_start = (0, 5, 5)
    hatch(out, out_start, (1, 8, 8), (3, 60, 60), low=10, high=200)
    inside = (slice(1, 3), slice(3, 20), slice(3, 30))
    region = out[inside]
    assert set(np.unique(region)) == {10, 200}
    # diagonal stripes in display coordinates, the same on every plane
    y = np.arange(8, 25)[:, None]
    x = np.arange(8, 35)[None, :]
    expected = np.where(((x + y) // HATCH_PERIOD) % 2 == 0, 200, 10)
    for plane in region:
        np.testing.assert_array_equal(plane, expected)
    untouched = np.ones(out.shape, dtype=bool)
    untouched[inside] = False
    assert (out[untouched] == 50).all()


def test_hatch_is_continuous_across_tiles() -> None:
    whole = np.zeros((1, 32, 64), dtype=np.uint8)
    hatch(whole, (0, 0, 0), (0, 0, 0), (1, 32, 64), low=1, high=2)
    left = np.zeros((1, 32, 21), dtype=np.uint8)
    right = np.zeros((1, 32, 43), dtype=np.uint8)
    hatch(left, (0, 0, 0), (0, 0, 0), (1, 32, 64), low=1, high=2)
    hatch(right, (0, 0, 21), (0, 0, 0), (1, 32, 64), low=1, high=2)
    np.testing.assert_array_equal(np.concatenate([left, right], axis=2), whole)


def test_hatch_outside_the_output_changes_nothing() -> None:
    out = np.full((2, 8, 8), 5, dtype=np.uint8)
    hatch(out, (0, 0, 0), (0, 8, 0), (2, 16, 8), low=0, high=255)
    assert (out == 5).all()
