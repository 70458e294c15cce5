"""Decoded chunks of 2 MiB and more: huge-page backed where offered, plain arrays otherwise."""

from __future__ import annotations

import errno
import mmap
import re
import sys

import numpy as np
import pytest

from napari_connecto.backends import _assemble
from napari_connecto.backends import _large_arrays as large
from napari_connecto.backends import _precomputed_codecs as codecs


def _offered_by(monkeypatch, tmp_path, setting: str) -> None:
    path = tmp_path / "enabled"
    path.write_text(setting)
    monkeypatch.setattr(large, "_SETTING", path)
    large.huge_pages_offered.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_setting():
    large.huge_pages_offered.cache_clear()
    yield
    large.huge_pages_offered.cache_clear()


@pytest.mark.parametrize(
    "setting", ["always [madvise] never\n", "[always] madvise never\n", "always madvise [never]\n"]
)
def test_a_large_array_is_writable_memory_of_its_own_whatever_the_setting(
    monkeypatch, tmp_path, setting
):
    _offered_by(monkeypatch, tmp_path, setting)
    expect_mapping = "[never]" not in setting and sys.platform.startswith("linux")
    a = large.empty((1, 64, 64, 64), np.dtype(np.uint64))  # 2 MiB
    assert a.shape == (1, 64, 64, 64) and a.dtype == np.uint64
    assert a.flags.writeable and a.flags.c_contiguous
    assert (a.base is not None) == expect_mapping  # its own mapping, or numpy's memory
    a[...] = np.arange(a.size, dtype=np.uint64).reshape(a.shape)
    assert int(a[0, 63, 63, 63]) == a.size - 1
    # a decoded chunk can be handed out as the region itself, without a copy
    assert _assemble._owned(a[0], (64, 64, 64), np.dtype(np.uint64))


def test_small_arrays_and_machines_without_the_setting_get_numpy_arrays(monkeypatch, tmp_path):
    small = large.empty((8, 8, 8), np.dtype(np.uint64))
    assert small.base is None
    monkeypatch.setattr(large, "_SETTING", tmp_path / "missing")
    large.huge_pages_offered.cache_clear()
    assert not large.huge_pages_offered()
    assert large.empty((1, 64, 64, 64), np.dtype(np.uint64)).base is None


def _mapping_of(address: int) -> str:
    """This process's ``/proc/self/smaps`` entry of the mapping holding ``address``."""
    with open("/proc/self/smaps", encoding="ascii") as smaps:
        entries = re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", smaps.read())
    for entry in entries:
        low, high = (int(v, 16) for v in entry.split()[0].split("-"))
        if low <= address < high:
            return entry
    raise AssertionError("no mapping holds the array")


@pytest.mark.skipif(not large.huge_pages_offered(), reason="no transparent huge pages here")
def test_a_large_array_starts_on_a_huge_page_in_memory_advised_for_them():
    a = large.empty((1, 64, 64, 64), np.dtype(np.uint64))
    assert a.ctypes.data % large.HUGE_PAGE == 0  # the kernel can back it with one huge page
    assert re.search(r"THPeligible:\s+1", _mapping_of(a.ctypes.data))


def test_without_room_for_a_mapping_numpy_memory_is_used(monkeypatch, tmp_path):
    _offered_by(monkeypatch, tmp_path, "always [madvise] never\n")

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", refuse)
    a = large.empty((1, 64, 64, 64), np.dtype(np.uint64))
    assert a.base is None and a.shape == (1, 64, 64, 64)
    a[...] = 7
    assert int(a.sum()) == 7 * a.size


def test_a_2_mib_segmentation_chunk_decodes_to_the_encoded_voxels():
    compressed_segmentation = pytest.importorskip("compressed_segmentation")
    rng = np.random.default_rng(5)
    data = rng.choice(np.array([0, 3, 2**40 + 1, 2**63 + 7], np.uint64), size=(64, 64, 64))
    xyz = np.asfortranarray(data.transpose(2, 1, 0))
    encoded = compressed_segmentation.compress(xyz, block_size=(8, 8, 8), order="F")
    decoded = codecs.decode_compressed_segmentation(
        encoded, (64, 64, 64), np.dtype(np.uint64), 1, (8, 8, 8)
    )
    np.testing.assert_array_equal(decoded[0], data)
    decoded[0, 0, 0, 0] = 99  # the caller owns it
    assert decoded[0, 0, 0, 0] == 99
