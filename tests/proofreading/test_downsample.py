"""Labels / image downsampling and pyramid updates after scale-0 edits, on real stores."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import napari_connecto as nc
from napari_connecto.proofreading.downsample import (
    mean_downsample,
    mode_downsample,
    pyramid_factor,
    update_pyramid,
)
from napari_connecto.sample.generate import generate_sample
from napari_connecto.sample.write import write_sample

HIGH = np.array([0, 1, 7, 2**63, 2**63 + 1, 2**64 - 1], dtype=np.uint64)


def blocks_of(shape: tuple[int, ...], factor: tuple[int, ...]):
    """(output index, slices) of every factor-block of ``shape``, edge blocks cut short."""
    out = tuple(-(-n // f) for n, f in zip(shape, factor, strict=True))
    for idx in np.ndindex(out):
        yield idx, tuple(slice(i * f, (i + 1) * f) for i, f in zip(idx, factor, strict=True))


def brute_mode(block: np.ndarray, factor: tuple[int, ...]) -> np.ndarray:
    out = np.empty(tuple(-(-n // f) for n, f in zip(block.shape, factor, strict=True)), block.dtype)
    for idx, sl in blocks_of(block.shape, factor):
        ids, counts = np.unique(block[sl], return_counts=True)  # ids sorted: argmax = smallest tie
        out[idx] = ids[np.argmax(counts)]
    return out


def brute_mean(block: np.ndarray, factor: tuple[int, ...]) -> np.ndarray:
    out = np.empty(tuple(-(-n // f) for n, f in zip(block.shape, factor, strict=True)), block.dtype)
    for idx, sl in blocks_of(block.shape, factor):
        mean = block[sl].astype(np.float64).mean()
        out[idx] = np.round(mean) if block.dtype.kind in "iu" else mean
    return out


shapes = st.tuples(*[st.integers(1, 9)] * 3)
factors = st.tuples(*[st.integers(1, 4)] * 3)


@settings(max_examples=300, deadline=None)
@given(shape=shapes, factor=factors, seed=st.integers(0, 2**32 - 1), n_ids=st.integers(1, 6))
def test_mode_matches_brute_force(shape, factor, seed, n_ids):
    rng = np.random.default_rng(seed)
    block = HIGH[rng.integers(0, n_ids, shape)]  # few ids: many ties, ids above 2**63
    got = mode_downsample(block, factor)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, brute_mode(block, factor))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.int64, bool])
def test_mode_other_dtypes(dtype):
    rng = np.random.default_rng(3)
    block = rng.integers(0, 3, (7, 10, 5)).astype(dtype)
    np.testing.assert_array_equal(mode_downsample(block, (2, 3, 2)), brute_mode(block, (2, 3, 2)))


def test_mode_ties_and_exact_big_ids():
    big = np.uint64(2**64 - 1)
    block = np.array([[[big, 3, big, 3], [2**63, 2**63, 5, 5]]], dtype=np.uint64)
    assert mode_downsample(block, (1, 1, 4)).ravel().tolist() == [3, 5]
    near = np.array([[[2**63 + 1, 2**63 + 1, 2**63 + 2]]], dtype=np.uint64)  # equal as float64
    assert mode_downsample(near, (1, 1, 3)).ravel().tolist() == [2**63 + 1]
    assert mode_downsample(block[:, :, :0], (1, 1, 2)).shape == (1, 2, 0)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, factor=factors, seed=st.integers(0, 2**32 - 1))
def test_mean_matches_brute_force(shape, factor, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, shape).astype(np.uint8)
    np.testing.assert_array_equal(mean_downsample(image, factor), brute_mean(image, factor))
    floats = rng.random(shape).astype(np.float32)
    got = mean_downsample(floats, factor)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, brute_mean(floats, factor), rtol=1e-6)


def test_mean_rounds_half_to_even_and_keeps_the_range():
    assert mean_downsample(np.array([[[1, 2, 2, 3]]], np.uint8), (1, 1, 2)).tolist() == [[[2, 2]]]
    assert mean_downsample(np.full((2, 2, 2), 255, np.uint8), (2, 2, 2)).tolist() == [[[255]]]


@pytest.mark.parametrize("factor", [(0, 1, 1), (1, 1), (1, -2, 1)])
def test_bad_factors(factor):
    with pytest.raises(ValueError, match="factor"):
        mode_downsample(np.zeros((2, 2, 2), np.uint8), factor)
    with pytest.raises(ValueError, match="factor"):
        mean_downsample(np.zeros((2, 2, 2), np.uint8), factor)


# -- update_pyramid on real stores ------------------------------------------------------------
def snapshot(vol: nc.Volume) -> list[np.ndarray]:
    return [vol.read_voxels(i, (0, 0, 0), sc.shape) for i, sc in enumerate(vol.scales)]


def footprint(lo, hi, factors):
    """The coarse regions covering ``[lo, hi)`` of scale 0, one per coarser scale."""
    out = []
    for f, shape in factors:
        lo = tuple(a // v for a, v in zip(lo, f, strict=True))
        hi = tuple(min(-(-b // v), n) for b, v, n in zip(hi, f, shape, strict=True))
        out.append((lo, hi))
    return out


def check_pyramid(vol, before, regions, lo, hi, *, labels: bool) -> None:
    """Every coarser scale: recomputed inside its region, untouched outside, region as expected."""
    reduce = mode_downsample if labels else mean_downsample
    after = snapshot(vol)
    assert regions[0] == (0, tuple(lo), tuple(hi))
    factors = [
        (pyramid_factor(vol.scales[k - 1], vol.scales[k]), vol.scales[k].shape)
        for k in range(1, len(vol.scales))
    ]
    expected_regions = footprint(lo, hi, factors)
    assert [r[1:] for r in regions[1:]] == expected_regions
    for k in range(1, len(vol.scales)):
        scale, c_lo, c_hi = regions[k]
        assert scale == k
        f = factors[k - 1][0]
        full = reduce(after[k - 1], f)[tuple(slice(0, n) for n in vol.scales[k].shape)]
        inside = tuple(slice(a, b) for a, b in zip(c_lo, c_hi, strict=True))
        np.testing.assert_array_equal(after[k][inside], full[inside])
        outside = np.ones(vol.scales[k].shape, bool)
        outside[inside] = False
        np.testing.assert_array_equal(after[k][outside], before[k][outside])


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The project's own sample: OME-Zarr raw (centred levels) and labels (corner levels)."""
    return write_sample(
        tmp_path_factory.mktemp("s") / "s", generate_sample((8, 64, 64), 2)
    ).ome_zarr


@pytest.fixture
def sample_copy(sample, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(sample, tmp_path / "sample.zarr"))


@pytest.mark.parametrize(("lo", "hi"), [((2, 5, 9), (5, 23, 30)), ((0, 50, 57), (8, 64, 64))])
def test_update_pyramid_labels_on_sample_ome_zarr(sample_copy, lo, hi):
    vol = nc.open_volume(str(sample_copy / "labels" / "segmentation"), mode="r+")
    assert len(vol.scales) == 3
    before = snapshot(vol)
    paint = np.full([b - a for a, b in zip(lo, hi, strict=True)], 2**64 - 3, np.uint64)
    paint[:, ::3, ::2] = 2**63 + 11
    vol.write(paint, at=lo)
    regions = update_pyramid(vol, lo, hi, labels=True)
    check_pyramid(vol, before, regions, lo, hi, labels=True)
    again = nc.open_volume(str(sample_copy / "labels" / "segmentation"))
    for mine, theirs in zip(snapshot(vol), snapshot(again), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_update_pyramid_image_on_sample_ome_zarr(sample_copy):
    vol = nc.open_volume(str(sample_copy), mode="r+")
    assert vol.scales[1].origin_nm.as_tuple() != vol.scales[0].origin_nm.as_tuple()  # centred
    before = snapshot(vol)
    lo, hi = (1, 13, 7), (4, 31, 40)
    vol.write(np.full((3, 18, 33), 250, np.uint8), at=lo)
    regions = update_pyramid(vol, lo, hi, labels=False)
    check_pyramid(vol, before, regions, lo, hi, labels=False)


def write_odd_pyramid(path: Path, levels: list[np.ndarray], res: list[list[float]]) -> None:
    """An OME-Zarr 0.4 multiscale written by ome-zarr-py with explicit transforms."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscale

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    transforms = [[{"type": "scale", "scale": r}] for r in res]
    write_multiscale(
        levels,
        root,
        fmt=FormatV04(),
        axes=[{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        coordinate_transformations=transforms,
        storage_options={"chunks": (2, 8, 8)},
    )


@pytest.mark.parametrize("rounding", ["ceil", "floor"])
def test_partial_edge_blocks_and_anisotropic_factors(tmp_path, rounding):
    rng = np.random.default_rng(5)
    s0 = HIGH[rng.integers(0, 4, (7, 37, 41))]
    cut = (lambda n, f: -(-n // f)) if rounding == "ceil" else (lambda n, f: n // f)
    s1_shape = (7, cut(37, 2), cut(41, 2))
    s2_shape = (cut(7, 2), cut(s1_shape[1], 3), cut(s1_shape[2], 3))
    levels = [s0, HIGH[rng.integers(0, 4, s1_shape)], HIGH[rng.integers(0, 4, s2_shape)]]
    res = [[40.0, 4.0, 4.0], [40.0, 8.0, 8.0], [80.0, 24.0, 24.0]]
    write_odd_pyramid(tmp_path / "odd.zarr", levels, res)
    vol = nc.open_volume(str(tmp_path / "odd.zarr"), mode="r+")
    assert [sc.shape for sc in vol.scales] == [s0.shape, s1_shape, s2_shape]
    before = snapshot(vol)
    lo, hi = (3, 20, 25), (7, 37, 41)  # reaches the far edges
    vol.write(np.full((4, 17, 16), 2**63 + 1, np.uint64), at=lo)
    regions = update_pyramid(vol, lo, hi, labels=True)
    check_pyramid(vol, before, regions, lo, hi, labels=True)


def test_region_is_clipped_and_empty_regions_write_nothing(sample_copy):
    vol = nc.open_volume(str(sample_copy / "labels" / "segmentation"), mode="r+")
    before = snapshot(vol)
    assert update_pyramid(vol, (0, 70, 0), (8, 90, 64), labels=True) == []
    regions = update_pyramid(vol, (-5, -5, 60), (100, 3, 100), labels=True)
    assert regions[0] == (0, (0, 0, 60), (8, 3, 64))
    for mine, old in zip(snapshot(vol), before, strict=True):  # nothing painted: nothing changes
        np.testing.assert_array_equal(mine[:, :1, -1:], old[:, :1, -1:])


def test_read_only_volume_is_refused(sample):
    vol = nc.open_volume(str(sample / "labels" / "segmentation"))
    with pytest.raises(nc.ConnectoError, match="read-only"):
        update_pyramid(vol, (0, 0, 0), (1, 1, 1), labels=True)


def test_misaligned_scale_is_skipped_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(8)
    levels = [HIGH[rng.integers(0, 3, (4, 24, 24))], np.zeros((4, 16, 16), np.uint64)]
    levels.append(np.zeros((4, 6, 6), np.uint64))
    res = [[40.0, 4.0, 4.0], [40.0, 6.0, 6.0], [40.0, 16.0, 16.0]]  # 1.5 then 4 from scale 0
    write_odd_pyramid(tmp_path / "mis.zarr", levels, res)
    vol = nc.open_volume(str(tmp_path / "mis.zarr"), mode="r+")
    vol.write(np.full((4, 24, 24), 9, np.uint64), at=(0, 0, 0))
    with caplog.at_level(logging.WARNING, logger="napari_connecto.proofreading.downsample"):
        regions = update_pyramid(vol, (0, 0, 0), (4, 24, 24), labels=True)
    assert "not an integer" in caplog.text and "scale 1 not recomputed" in caplog.text
    assert [r[0] for r in regions] == [0, 2]  # scale 2 recomputed from scale 0 (factor 4)
    assert (vol.read_voxels(1, (0, 0, 0), (4, 16, 16)) == 0).all()
    assert (vol.read_voxels(2, (0, 0, 0), (4, 6, 6)) == 9).all()


def test_shifted_origin_is_refused():
    from napari_connecto.geometry import Vec3
    from napari_connecto.volume.scale import Scale

    fine = Scale((4, 8, 8), Vec3(40.0, 4.0, 4.0), (4, 8, 8), np.dtype(np.uint8))
    corner = Scale((4, 4, 4), Vec3(40.0, 8.0, 8.0), (4, 8, 8), np.dtype(np.uint8))
    centred = Scale((4, 2, 2), Vec3(40.0, 16.0, 16.0), (4, 8, 8), np.dtype(np.uint8),
                    translation_nm=Vec3(0.0, 6.0, 6.0))  # fmt: skip
    shifted = Scale((4, 4, 4), Vec3(40.0, 8.0, 8.0), (4, 8, 8), np.dtype(np.uint8),
                    translation_nm=Vec3(0.0, 1.0, 0.0))  # fmt: skip
    assert pyramid_factor(fine, corner) == (1, 2, 2)
    assert pyramid_factor(fine, centred) == (1, 4, 4)
    assert pyramid_factor(fine, shifted) is None


def test_stored_ids_are_used_not_processed_ones(sample_copy):
    path = str(sample_copy / "labels" / "segmentation")
    plain = nc.open_volume(path, mode="r+")
    remap = nc.RemapIds.from_mapping({}, default=1)  # reads would turn every id into 1
    vol = plain.with_processors(read=[remap])
    plain.write(np.full((8, 8, 8), 2**63 + 7, np.uint64), at=(0, 0, 0))
    update_pyramid(vol, (0, 0, 0), (8, 8, 8), labels=True)
    assert (plain.read_voxels(2, (0, 0, 0), (8, 2, 2)) == 2**63 + 7).all()


def test_hdf5_pyramid_is_updated_in_one_commit(tmp_path, monkeypatch):
    from napari_connecto.backends import _hdf5_write

    path = tmp_path / "pyr.h5"
    rng = np.random.default_rng(2)
    with h5py.File(path, "w") as f:
        for i, shape in enumerate([(4, 32, 32), (4, 16, 16), (4, 8, 8)]):
            ds = f.create_dataset(
                f"seg/s{i}",
                data=HIGH[rng.integers(0, 5, shape)],
                chunks=(2, 8, 8),
                compression="gzip",
            )
            ds.attrs["resolution"] = [40.0, 4.0 * 2**i, 4.0 * 2**i]
    vol = nc.open_volume(f"{path}#seg", mode="r+")
    before = snapshot(vol)
    vol.write(np.full((2, 11, 7), 2**64 - 1, np.uint64), at=(1, 3, 20))
    commits = []
    real = _hdf5_write.commit_blocks

    def counting(*args, **kwargs):
        commits.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr("napari_connecto.backends.hdf5.commit_blocks", counting)
    regions = update_pyramid(vol, (1, 3, 20), (3, 14, 27), labels=True)
    assert commits == [2]
    check_pyramid(vol, before, regions, (1, 3, 20), (3, 14, 27), labels=True)
