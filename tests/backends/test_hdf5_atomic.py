"""HDF5 writes are copy-on-write: all blocks of a batch or none, even under SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import napari_connecto as nc
from napari_connecto.backends import _hdf5_write
from napari_connecto.backends._hdf5_write import (
    TEMP_SUFFIX,
    is_temp_file,
    remove_stale_temp_files,
    temp_path,
)
from napari_connecto.errors import ChunkError, MetadataError, ReadOnlyError, RegionError

BIG = np.uint64(2**63 + 5)
SHAPES = {"s0": (6, 40, 48), "s1": (6, 20, 24)}
PROJECT = Path(__file__).resolve().parents[2]


def base(shape: tuple[int, ...]) -> np.ndarray:
    """Distinct uint64 ids above 2**63 (a batch adds the same step to all of them)."""
    return BIG + np.arange(int(np.prod(shape)), dtype=np.uint64).reshape(shape)


def write_file(path: Path) -> dict[str, np.ndarray]:
    """A chunked, gzip'd multiscale uint64 volume plus a 2D plane, written by h5py."""
    arrays = {name: base(shape) for name, shape in SHAPES.items()}
    with h5py.File(path, "w") as f:
        f.attrs["note"] = "written by h5py"
        for name, data in arrays.items():
            ds = f.create_dataset(f"seg/{name}", data=data, chunks=(3, 8, 8), compression="gzip")
            ds.attrs["resolution"] = [40.0, 4.0, 4.0] if name == "s0" else [40.0, 8.0, 8.0]
        f.create_dataset("plane", data=np.zeros((10, 12), np.uint16), chunks=(5, 6))
    return arrays


def temp_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX))


@pytest.fixture
def h5file(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "seg.h5"
    return path, write_file(path)


def test_write_batch_round_trip_and_new_file(h5file):
    path, arrays = h5file
    before = os.stat(path)
    os.chmod(path, 0o640)
    vol = nc.open_volume(f"{path}#seg", mode="r+")
    a = np.full((2, 9, 10), 7, np.uint64)
    b = np.full((1, 3, 4), 2**64 - 1, np.uint64)
    c = np.full((3, 20, 24), 11, np.uint64)
    vol.write_batch([(0, (1, 5, 30), a), (0, (5, 37, 44), b), (1, (3, 0, 0), c)])
    want0, want1 = arrays["s0"].copy(), arrays["s1"].copy()
    want0[1:3, 5:14, 30:40] = 7
    want0[5:6, 37:40, 44:48] = 2**64 - 1
    want1[3:6] = 11
    after = os.stat(path)
    assert (after.st_ino, after.st_dev) != (before.st_ino, before.st_dev)
    assert after.st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), SHAPES["s0"]), want0)
    np.testing.assert_array_equal(vol.read_voxels(1, (0, 0, 0), SHAPES["s1"]), want1)
    assert vol.describe()["hdf5"]["writes"] == "copy-on-write: temp copy, fsync, rename"
    vol.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["seg/s0"][...], want0)
        np.testing.assert_array_equal(f["seg/s1"][...], want1)
        assert f["seg/s0"].compression == "gzip" and f["seg/s0"].chunks == (3, 8, 8)
        assert f.attrs["note"] == "written by h5py"
    assert temp_files(path.parent) == []


def test_single_write_and_planar_dataset(h5file):
    path, _ = h5file
    with nc.open_volume(f"{path}#plane", mode="r+") as vol:
        vol.write(np.full((1, 2, 3), 9, np.uint16), at=(0, 4, 5))
        assert vol.read_voxels(0, (0, 4, 5), (1, 6, 8)).tolist() == [[[9, 9, 9], [9, 9, 9]]]
    with h5py.File(path, "r") as f:
        assert (f["plane"][4:6, 5:8] == 9).all() and f["plane"][...].sum() == 9 * 6


def test_other_handles_in_this_process_see_the_commit(h5file):
    path, arrays = h5file
    reader = nc.open_volume(f"{path}#seg")
    assert reader.read_voxels(0, (0, 0, 0), (1, 1, 1))[0, 0, 0] == arrays["s0"][0, 0, 0]
    with nc.open_volume(f"{path}#seg", mode="r+") as writer:
        writer.write(np.full((1, 1, 1), 3, np.uint64), at=(0, 0, 0))
    assert reader.read_voxels(0, (0, 0, 0), (1, 1, 1))[0, 0, 0] == 3
    reader.close()


def test_reads_see_a_file_replaced_by_another_writer(h5file, tmp_path):
    path, arrays = h5file
    vol = nc.open_volume(f"{path}#seg")
    np.testing.assert_array_equal(
        vol.read_voxels(0, (0, 0, 0), (1, 1, 4)), arrays["s0"][:1, :1, :4]
    )
    other = tmp_path / "other.h5"
    write_file(other)
    with h5py.File(other, "r+") as f:
        f["seg/s0"][0, 0, :4] = np.arange(4, dtype=np.uint64)
    os.replace(other, path)  # what another process's commit does (a new inode)
    assert vol.read_voxels(0, (0, 0, 0), (1, 1, 4)).ravel().tolist() == [0, 1, 2, 3]
    vol.refresh()  # explicit refresh works too
    assert vol.read_voxels(0, (0, 0, 0), (1, 1, 4)).ravel().tolist() == [0, 1, 2, 3]
    vol.close()


def test_refresh_of_a_file_that_lost_the_volume_closes_it(h5file):
    path, _ = h5file
    vol = nc.open_volume(f"{path}#seg")
    with h5py.File(path.with_name("x.h5"), "w") as f:
        f["seg/s0"] = np.zeros((2, 2, 2), np.uint64)
    os.replace(path.with_name("x.h5"), path)
    with pytest.raises(ChunkError, match="changed"):
        vol.refresh()
    with pytest.raises(ChunkError, match="closed"):
        vol.read_voxels(0, (0, 0, 0), (1, 1, 1))


def _assert_untouched(path: Path, blob: bytes) -> None:
    assert path.read_bytes() == blob
    assert temp_files(path.parent) == []


def test_block_that_does_not_fit_writes_nothing(h5file):
    path, _ = h5file
    blob = path.read_bytes()
    vol = nc.open_volume(f"{path}#seg", mode="r+")
    good = (0, (0, 0, 0), np.zeros((1, 2, 2), np.uint64))
    with pytest.raises(ChunkError, match="does not fit"):
        vol.backend.write_batch([good, (1, (5, 0, 0), np.zeros((2, 2, 2), np.uint64))])
    with pytest.raises(RegionError):
        vol.write_batch([good, (1, (5, 0, 0), np.zeros((2, 2, 2), np.uint64))])
    with pytest.raises(RegionError):
        vol.write_batch([good, (2, (0, 0, 0), np.zeros((1, 1, 1), np.uint64))])
    _assert_untouched(path, blob)
    vol.close()


def test_failed_rename_leaves_the_original(h5file, monkeypatch):
    path, arrays = h5file
    blob = path.read_bytes()
    vol = nc.open_volume(f"{path}#seg", mode="r+")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_hdf5_write.os, "replace", refuse)
    with pytest.raises(ChunkError, match="No space left"):
        vol.write_batch([(0, (0, 0, 0), np.zeros((2, 2, 2), np.uint64))])
    _assert_untouched(path, blob)
    np.testing.assert_array_equal(
        vol.read_voxels(0, (0, 0, 0), (1, 1, 3)), arrays["s0"][:1, :1, :3]
    )
    vol.close()


def test_failure_mid_batch_leaves_the_original(h5file, monkeypatch):
    path, _ = h5file
    blob = path.read_bytes()
    vol = nc.open_volume(f"{path}#seg", mode="r+")
    real = _hdf5_write._write_block
    calls = []

    def flaky(h5, block):
        calls.append(block.region)
        if len(calls) == 2:
            raise OSError("disk went away")
        real(h5, block)

    monkeypatch.setattr(_hdf5_write, "_write_block", flaky)
    blocks = [(0, (0, 0, 0), np.zeros((1, 2, 2), np.uint64))] * 2 + [
        (1, (0, 0, 0), np.zeros((1, 2, 2), np.uint64))
    ]
    with pytest.raises(ChunkError, match="disk went away") as err:
        vol.write_batch(blocks)
    assert err.value.scale == 0 and len(calls) == 2
    _assert_untouched(path, blob)
    vol.close()


def test_interrupt_mid_batch_removes_the_copy(h5file, monkeypatch):
    path, _ = h5file
    blob = path.read_bytes()
    vol = nc.open_volume(f"{path}#seg", mode="r+")

    def interrupted(h5, block):
        raise KeyboardInterrupt

    monkeypatch.setattr(_hdf5_write, "_write_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vol.write_batch([(0, (0, 0, 0), np.zeros((1, 2, 2), np.uint64))])
    _assert_untouched(path, blob)
    vol.close()


def test_read_only_and_closed(h5file):
    path, _ = h5file
    with nc.open_volume(f"{path}#seg") as vol:
        with pytest.raises(ReadOnlyError):
            vol.write_batch([(0, (0, 0, 0), np.zeros((1, 1, 1), np.uint64))])
        with pytest.raises(ReadOnlyError):
            vol.backend.write_batch([(0, (0, 0, 0), np.zeros((1, 1, 1), np.uint64))])
    vol = nc.open_volume(f"{path}#seg", mode="r+")
    vol.close()
    with pytest.raises(ChunkError, match="closed"):
        vol.write_batch([(0, (0, 0, 0), np.zeros((1, 1, 1), np.uint64))])


def test_write_through_a_symlink_replaces_the_target(h5file, tmp_path):
    path, _ = h5file
    link = tmp_path / "link.h5"
    link.symlink_to(path)
    with nc.open_volume(f"{link}#seg", mode="r+") as vol:
        vol.write(np.full((1, 1, 1), 5, np.uint64), at=(0, 0, 0))
    assert link.is_symlink()
    with h5py.File(path, "r") as f:
        assert f["seg/s0"][0, 0, 0] == 5


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_remove_stale_temp_files(tmp_path):
    data = tmp_path / "data.h5"
    data.write_bytes(b"x")
    hexa = "0123456789abcdef" * 2
    dead = tmp_path / f".data.h5.{_dead_pid()}-{hexa}{TEMP_SUFFIX}"
    alive = tmp_path / f".data.h5.{os.getpid()}-{hexa}{TEMP_SUFFIX}"
    old = tmp_path / f".data.h5.{os.getpid()}-{'f' * 32}{TEMP_SUFFIX}"
    others = [
        tmp_path / f".other.h5.{_dead_pid()}-{hexa}{TEMP_SUFFIX}",  # another file's copy
        tmp_path / f".data.h5.1-xyz{TEMP_SUFFIX}",  # not the exact pattern
        tmp_path / f"data.h5.{_dead_pid()}-{hexa}{TEMP_SUFFIX}",  # no leading dot
        tmp_path / f".data.h5.{_dead_pid()}-{hexa}{TEMP_SUFFIX}.bak",
    ]
    for p in [dead, alive, old, *others]:
        p.write_bytes(b"partial")
    past = time.time() - 3600
    os.utime(old, (past, past))
    removed = remove_stale_temp_files(data)
    assert sorted(removed) == sorted([dead, old])
    assert alive.exists() and data.exists() and all(p.exists() for p in others)
    assert remove_stale_temp_files(data, max_age_s=-1) == [alive]
    assert is_temp_file(temp_path(data)) and not is_temp_file(data)


def test_a_temporary_copy_is_never_opened_as_data(h5file):
    path, _ = h5file
    copy = temp_path(path)
    copy.write_bytes(path.read_bytes())
    for source in (f"{copy}#seg", f"hdf5://{copy}#seg"):
        with pytest.raises(MetadataError, match="temporary copy"):
            nc.open_volume(source)


def test_opening_for_writing_removes_copies_of_dead_writers(h5file):
    path, _ = h5file
    stale = path.with_name(f".{path.name}.{_dead_pid()}-{'a' * 32}{TEMP_SUFFIX}")
    stale.write_bytes(path.read_bytes()[:100])
    nc.open_volume(f"{path}#seg").close()
    assert stale.exists()  # read-only opens leave the directory alone
    nc.open_volume(f"{path}#seg", mode="r+").close()
    assert not stale.exists()


WRITER = """
import os, sys
import numpy as np
import napari_connecto as nc

path, log = sys.argv[1], sys.argv[2]
big = np.uint64({big})
SH = {shapes!r}.items()
bases = {{k: big + np.arange(int(np.prod(s)), dtype=np.uint64).reshape(s) for k, s in SH}}
vol = nc.open_volume(path + "#seg", mode="r+")
step = int(vol.read_voxels(0, (0, 0, 0), (1, 1, 1))[0, 0, 0] - bases["s0"][0, 0, 0])
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
print("ready", flush=True)
while True:
    step += 1
    vol.write_batch([
        (0, (0, 0, 0), bases["s0"][:3] + np.uint64(step)),
        (1, (0, 0, 0), bases["s1"] + np.uint64(step)),
        (0, (3, 0, 0), bases["s0"][3:] + np.uint64(step)),
    ])
    os.write(fd, b"%d\\n" % step)
"""


def _state(path: Path) -> int:
    """The one step every voxel of both datasets is at (fails on a mix or a broken file)."""
    with h5py.File(path, "r") as f:
        steps = {
            name: np.unique(f[f"seg/{name}"][...] - base(shape)) for name, shape in SHAPES.items()
        }
    assert all(len(s) == 1 for s in steps.values()), steps
    assert steps["s0"][0] == steps["s1"][0], steps
    return int(steps["s0"][0])


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_mix(h5file, tmp_path):
    path, _ = h5file
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(big=int(BIG), shapes=SHAPES))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
    }
    rng = random.Random(1234)
    state, commits, leftovers = 0, 0, 0
    for _ in range(30):
        log = tmp_path / "log.txt"
        log.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(log)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        done = [int(v) for v in log.read_text().split()] if log.exists() else []
        last = done[-1] if done else state
        state = _state(path)
        assert state in (last, last + 1), (state, last)
        commits += len(done)
        leftovers += len(temp_files(path.parent))
        with nc.open_volume(f"{path}#seg", mode="r+") as vol:  # removes the dead writer's copy
            assert (
                int(vol.read_voxels(1, (5, 19, 23), (6, 20, 24))[0, 0, 0])
                == int(base(SHAPES["s1"])[5, 19, 23]) + state
            )
        assert temp_files(path.parent) == []
    assert commits > 30  # the kills landed inside running write loops ...
    assert leftovers > 0  # ... and some of them in the middle of a commit
