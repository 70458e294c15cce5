"""Exported files are durable, get the usual permissions, and a failed set keeps the primary."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import tifffile

import napari_connecto as nc
from napari_connecto.export._atomic import ExportError, atomic_files, write_text_atomic
from napari_connecto.export.figure import export_region
from napari_connecto.geometry import BBox
from tests.export._data import em_and_ids, write_ome

BOX = BBox.of((440.0, 48.0, 32.0), (560.0, 200.0, 220.0))


@pytest.fixture
def volumes(tmp_path):
    image, labels = em_and_ids()
    path = write_ome(tmp_path / "em.zarr", image, labels)
    return nc.open_volume(str(path)), nc.open_volume(f"{path}/labels/cells")


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _record(monkeypatch) -> list[tuple[str, str]]:
    """Log ``("fsync", path)`` and ``("replace", destination)`` as they happen."""
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged_replace(src, dst) -> None:
        replace(src, dst)
        events.append(("replace", str(dst)))

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    return events


def test_every_file_is_synced_before_its_rename_and_the_folder_after(
    volumes, tmp_path, monkeypatch
):
    events = _record(monkeypatch)
    out = tmp_path / "fig.tif"
    paths = export_region(out, box=BOX, image=volumes[0], labels=volumes[1]).paths
    names = [Path(p).name for p in paths]
    assert names == ["fig.tif", "fig_em.tif", "fig_ids.tif"]
    synced = [Path(p).name for kind, p in events if kind == "fsync"]
    renamed = [Path(p).name for kind, p in events if kind == "replace"]
    first_rename = next(i for i, (kind, _) in enumerate(events) if kind == "replace")
    # every temporary file's data reached the disk before anything was renamed
    parts = [Path(p).name for kind, p in events[:first_rename] if kind == "fsync"]
    assert len(parts) == 3 and all(".part" in n for n in parts)
    # the companions first, the primary file last, each rename followed by a folder fsync
    assert renamed == ["fig_em.tif", "fig_ids.tif", "fig.tif"]
    assert events[-1] == ("fsync", str(tmp_path))
    assert synced.count(tmp_path.name) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["em.zarr", *names])


def test_a_failed_rename_keeps_the_old_primary_file(volumes, tmp_path, monkeypatch):
    out = tmp_path / "fig.tif"
    out.write_bytes(b"old figure")
    replace = os.replace

    def fail_on_ids(src, dst) -> None:
        if Path(dst).name == "fig_ids.tif":
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_ids)
    with pytest.raises(ExportError, match="No space left"):
        export_region(out, box=BOX, image=volumes[0], labels=volumes[1])
    assert out.read_bytes() == b"old figure"  # never a new figure beside missing ids
    assert not any(".part" in p.name for p in tmp_path.iterdir())


@pytest.mark.usefixtures("umask_027")
def test_files_get_the_mode_of_a_plain_new_file(volumes, tmp_path):
    paths = export_region(tmp_path / "fig.tif", box=BOX, image=volumes[0]).paths
    assert tifffile.imread(paths[0]).ndim == 3
    text = write_text_atomic(tmp_path / "state.json", "{}\n")
    for path in (*paths, text):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~umask, not 0o600


def test_a_failing_body_leaves_nothing_and_a_missing_folder_is_typed(tmp_path):
    with pytest.raises(ValueError, match="boom"), atomic_files([tmp_path / "a.txt"]) as (tmp,):
        tmp.write_text("half")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="does not exist"):
        write_text_atomic(tmp_path / "missing" / "a.txt", "x")
