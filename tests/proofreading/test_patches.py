"""Voxel patches: the smallest box of a change, idempotent do/undo, safe journal blobs."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest

from napari_connecto.errors import EditError
from napari_connecto.proofreading.patches import MAX_PATCH_BYTES, VoxelPatch

BIG = np.uint64(2**64 - 2)
HIGH = np.uint64(2**63 + 12345)


def changed_block() -> tuple[np.ndarray, np.ndarray]:
    before = np.full((4, 10, 12), HIGH, dtype=np.uint64)
    after = before.copy()
    after[1, 2, 3] = BIG
    after[2, 5, 7] = 7
    return before, after


def test_from_change_keeps_the_smallest_box_of_changed_voxels() -> None:
    before, after = changed_block()
    patch = VoxelPatch.from_change((10, 20, 30), before, after)
    assert patch is not None
    assert patch.start == (11, 22, 33)
    assert patch.shape == (2, 4, 5) and patch.stop == (13, 26, 38)
    assert patch.changed_voxels == 2
    assert patch.after[0, 0, 0] == BIG and patch.after[1, 3, 4] == 7
    assert np.array_equal(patch.before, before[1:3, 2:6, 3:8])
    assert sorted(patch.ids().tolist()) == [7, int(HIGH), int(BIG)]
    assert VoxelPatch.from_change((0, 0, 0), before, before.copy()) is None


def test_apply_do_and_undo_touch_only_the_changed_voxels_and_repeat_safely() -> None:
    before, after = changed_block()
    patch = VoxelPatch.from_change((0, 0, 0), before, after)
    assert patch is not None
    box = tuple(slice(a, b) for a, b in zip(patch.start, patch.stop))
    stored = before[box].copy()
    stored[0, 3, 0] = 99  # someone else's voxel inside the box, not changed by the patch
    done = patch.apply(stored, "do")
    assert np.array_equal(patch.apply(done, "do"), done)  # a replay changes nothing
    assert done[0, 0, 0] == BIG and done[1, 3, 4] == 7 and done[0, 3, 0] == 99
    undone = patch.apply(done, "undo")
    assert np.array_equal(patch.apply(undone, "undo"), undone)
    assert np.array_equal(undone, stored)
    with pytest.raises(EditError, match="patch box"):
        patch.apply(stored[:, :2], "do")


def test_patches_need_two_blocks_of_one_shape_and_dtype() -> None:
    a = np.zeros((1, 2, 2), np.uint64)
    with pytest.raises(EditError, match="one shape"):
        VoxelPatch((0, 0, 0), a, np.zeros((1, 2, 3), np.uint64))
    with pytest.raises(EditError, match="dtypes differ"):
        VoxelPatch((0, 0, 0), a, a.astype(np.uint32))


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32, np.uint8, np.int64, np.float32])
def test_blob_round_trip_is_exact(dtype: type, no_pickle: None) -> None:
    rng = np.random.default_rng(3)
    before = rng.integers(0, 200, (3, 5, 7)).astype(dtype)
    after = before.copy()
    after[1:, 2:, 3:] += 1
    if dtype is np.uint64:
        after[0, 0, 0] = BIG  # uint64 above 2**63 survive bit for bit
        before[2, 4, 6] = HIGH
    patch = VoxelPatch((5, 6, 7), before, after, scale=0)
    back = VoxelPatch.from_row(patch.to_row())
    assert back.start == (5, 6, 7) and back.scale == 0
    assert back.before.dtype == np.dtype(dtype) and back.after.dtype == np.dtype(dtype)
    assert np.array_equal(back.before, before) and np.array_equal(back.after, after)
    assert back.after.flags.writeable


def test_big_endian_blocks_come_back_in_native_order() -> None:
    before = np.arange(8, dtype=">u8").reshape(2, 2, 2)
    after = (before + 1).astype(">u8")
    back = VoxelPatch.from_row(VoxelPatch((0, 0, 0), before, after).to_row())
    assert back.before.dtype == np.dtype("=u8")
    assert back.after.tolist() == after.tolist()


def row_of() -> dict[str, object]:
    before, after = changed_block()
    return VoxelPatch((0, 0, 0), before, after).to_row()


def flipped(blob: bytes, at: int) -> bytes:
    data = bytearray(blob)
    data[at] ^= 0x40
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("after", lambda b: b[: len(b) // 2]),  # truncated
        ("before", lambda b: b[:-2]),  # checksum cut off: the data may be all there
        ("after", lambda b: flipped(b, len(b) // 2)),  # bit flip
        ("after", lambda b: flipped(b, len(b) - 1)),  # checksum flip
        ("before", lambda b: b + b"junk"),  # trailing bytes
        ("before", lambda b: b""),
        ("after", lambda b: b"not zlib at all"),
        ("after", lambda b: zlib.compress(b"\0" * (4 * 10 * 12 * 8 + 1))),  # one byte too many
        ("after", lambda b: zlib.compress(b"\0" * (4 * 10 * 12 * 8 - 8))),  # one voxel short
    ],
)
def test_corrupt_blobs_are_edit_errors(name: str, mutate: object) -> None:
    row = row_of()
    row[name] = mutate(row[name])  # type: ignore[operator]
    with pytest.raises(EditError, match="journal patch"):
        VoxelPatch.from_row(row)


def test_a_decompression_bomb_is_stopped_at_the_declared_size() -> None:
    row = row_of()
    row["after"] = zlib.compress(b"\0" * (64 * 2**20), 9)  # 64 MiB of zeros, ~64 kB
    started = time.perf_counter()
    with pytest.raises(EditError, match=r"holds 3841\+ bytes, expected 3840"):
        VoxelPatch.from_row(row)
    assert time.perf_counter() - started < 0.5  # inflated 3841 bytes, not 64 MiB


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("size_y", -1, "empty or over"),
        ("size_x", 0, "empty or over"),
        ("size_z", MAX_PATCH_BYTES, "empty or over"),
        ("dtype", "|O", "not a voxel type"),
        ("dtype", "<U4", "not a voxel type"),
        ("dtype", "no such type", "unknown dtype"),
    ],
)
def test_absurd_patch_rows_are_edit_errors(field: str, value: object, match: str) -> None:
    row = row_of()
    row[field] = value
    with pytest.raises(EditError, match=match):
        VoxelPatch.from_row(row)
