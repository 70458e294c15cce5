"""The volume core with an in-memory backend: indexing, nm reads, guards, processors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import napari_connecto as nc
from napari_connecto.backends.base import VolumeBackend
from napari_connecto.errors import ReadOnlyError, RegionError
from napari_connecto.geometry import BBox, Vec3
from napari_connecto.source import Source
from napari_connecto.volume import LevelArray, NormalizeIntensity, RemapIds, Scale, Volume

TRUTH = np.arange(5 * 7 * 9, dtype=np.uint64).reshape(5, 7, 9) * np.uint64(2**40)


class MemoryBackend(VolumeBackend):
    """A real backend over numpy arrays (the contract suite covers the file formats)."""

    name = "memory"
    supports_writes = True

    def __init__(self, arrays, resolution=(40.0, 4.0, 4.0), offset=(0, 0, 0), writable=False):
        self.source = Source("memory://test")
        self.kind = "segmentation"
        self.arrays = arrays
        self.writable = writable
        self.reads = []
        self.scales = tuple(
            Scale(a.shape, Vec3.of(resolution) * (1, 2**i, 2**i), (2, 4, 4), a.dtype, offset)
            for i, a in enumerate(arrays)
        )

    @classmethod
    def sniff(cls, source):
        return False

    @classmethod
    def open(cls, source, mode="r"):  # pragma: no cover - not registered
        raise NotImplementedError

    def read(self, scale, start, stop):
        self.reads.append((scale, start, stop))
        return self.arrays[scale][tuple(slice(a, b) for a, b in zip(start, stop))].copy()

    def write(self, scale, start, data):
        self.arrays[scale][tuple(slice(a, a + n) for a, n in zip(start, data.shape))] = data


@pytest.fixture
def volume():
    return Volume(MemoryBackend([TRUTH.copy(), TRUTH[:, ::2, ::2].copy()]))


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(
        *(
            st.one_of(
                st.integers(-n, n - 1),
                st.slices(n),
            )
            for n in TRUTH.shape
        )
    )
)
def test_level_indexing_matches_numpy(key):
    level = Volume(MemoryBackend([TRUTH])).level(0)
    try:
        want = TRUTH[key]
    except IndexError:
        with pytest.raises(IndexError):
            level[key]
        return
    if any(isinstance(k, slice) and (k.step or 1) < 0 for k in key):
        with pytest.raises(IndexError):
            level[key]
        return
    np.testing.assert_array_equal(np.asarray(level[key]), want)


def test_level_array_protocol(volume):
    level = volume.levels[1]
    assert isinstance(level, LevelArray)
    assert level.shape == (5, 4, 5) and level.ndim == 3 and level.size == 100
    assert level.dtype == np.uint64 and level.chunks == (2, 4, 4)
    np.testing.assert_array_equal(np.asarray(level), TRUTH[:, ::2, ::2])


def test_nothing_is_read_until_indexed():
    backend = MemoryBackend([TRUTH])
    vol = Volume(backend)
    levels = vol.levels
    assert backend.reads == []
    levels[0][2, 1:3, 4]
    assert backend.reads == [(0, (2, 1, 4), (3, 3, 5))]


def test_read_in_nm_with_offset():
    vol = Volume(MemoryBackend([TRUTH], offset=(1, 2, 3)))
    assert vol.bbox.start.as_tuple() == (40.0, 8.0, 12.0)
    box = BBox.of((40 + 40, 8 + 4, 12 + 8), (40 + 120, 8 + 12, 12 + 20))
    np.testing.assert_array_equal(vol.read(box), TRUTH[1:3, 1:3, 2:5])
    np.testing.assert_array_equal(vol.read(box, resolution=(40, 4, 4)), TRUTH[1:3, 1:3, 2:5])
    with pytest.raises(RegionError):
        vol.read(box, resolution=(1, 1, 1))


def test_padding_outside_and_empty_regions(volume):
    got = volume.read_voxels(0, (-1, 5, 8), (1, 9, 10))
    assert got.shape == (2, 4, 2)
    assert (got[0] == 0).all() and (got[1, 2:] == 0).all()
    np.testing.assert_array_equal(got[1, :2, :1], TRUTH[0, 5:7, 8:9])
    assert volume.read_voxels(0, (10, 10, 10), (11, 11, 11)).tolist() == [[[0]]]
    assert volume.read_voxels(0, (1, 1, 1), (1, 4, 4)).shape == (0, 3, 3)


def test_guards_against_huge_and_inverted_regions(volume):
    with pytest.raises(RegionError, match="inverted"):
        volume.read_voxels(0, (3, 0, 0), (1, 1, 1))
    with pytest.raises(RegionError, match="over the limit"):
        volume.read_voxels(0, (0, 0, 0), (10**6, 10**6, 10**6))
    with pytest.raises(RegionError, match="scale 5"):
        volume.read_voxels(5, (0, 0, 0), (1, 1, 1))


def test_huge_level_refuses_asarray():
    huge = Volume(MemoryBackend([TRUTH]), max_read_bytes=100)
    with pytest.raises(RegionError, match="index a region"):
        np.asarray(huge.level(0))


def test_writes_need_mode_and_fit():
    backend = MemoryBackend([TRUTH.copy()], writable=True)
    vol = Volume(backend)
    vol.write(np.full((1, 2, 2), 7, np.uint64), at=(4, 5, 7))
    assert (backend.arrays[0][4, 5:7, 7:9] == 7).all()
    with pytest.raises(RegionError):
        vol.write(np.zeros((1, 3, 3), np.uint64), at=(4, 5, 7))
    with pytest.raises(ReadOnlyError):
        Volume(MemoryBackend([TRUTH.copy()])).write(np.zeros((1, 1, 1)), at=(0, 0, 0))


def test_remap_processor_is_uint64_exact():
    big = np.uint64(2**63 + 12345)
    vol = Volume(
        MemoryBackend([TRUTH.copy()]), [RemapIds.from_mapping({int(TRUTH[1, 2, 3]): int(big)})]
    )
    got = vol.read_voxels(0, (0, 0, 0), TRUTH.shape)
    want = TRUTH.copy()
    want[1, 2, 3] = big
    np.testing.assert_array_equal(got, want)
    only = RemapIds.from_mapping({int(TRUTH[0, 0, 1]): 5}, default=0)
    assert only(TRUTH[0, 0, :3]).tolist() == [0, 5, 0]


def test_write_processors_apply_before_storage():
    backend = MemoryBackend([np.zeros((2, 4, 4), np.uint64)], writable=True)
    vol = Volume(backend, write_processors=[RemapIds.from_mapping({1: 2**60})])
    vol.write(np.ones((1, 1, 2), np.uint64), at=(0, 0, 0))
    assert backend.arrays[0][0, 0, :2].tolist() == [2**60, 2**60]


def test_normalize_changes_dtype_and_range():
    data = np.array([[[0, 50, 100, 200]]], dtype=np.uint8)
    backend = MemoryBackend([data])
    vol = Volume(backend).with_processors(read=[NormalizeIntensity(50, 150)])
    assert vol.dtype == np.float32 and vol.level(0).dtype == np.float32
    assert vol.read_voxels(0, (0, 0, 0), (1, 1, 4)).ravel().tolist() == [0.0, 0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        NormalizeIntensity(3, 3)


def test_describe_round_trips_json(volume):
    info = json.loads(json.dumps(volume.describe()))
    assert info["scales"][1]["resolution_nm_zyx"] == [40.0, 8.0, 8.0]
    assert info["dtype"] == "uint64"


def test_public_api_exports():
    for name in nc.__all__:
        assert hasattr(nc, name), name
