"""The napari-connecto command: info (text and JSON), errors, and view with a screenshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from napari_connecto.cli import main


@pytest.fixture
def seg_zarr(tmp_path):
    arr = zarr.create_array(
        store=str(tmp_path / "seg.zarr"),
        shape=(4, 64, 96),
        chunks=(2, 32, 32),
        dtype="uint64",
        attributes={"resolution": [40, 8, 8]},
    )
    arr[:] = np.uint64(2**60)
    return tmp_path / "seg.zarr"


def test_info_text(seg_zarr, capsys):
    assert main(["info", str(seg_zarr)]) == 0
    out = capsys.readouterr().out
    assert "format zarr, segmentation, uint64" in out
    assert "4x64x96 voxels (z,y,x) at 40x8x8 nm, chunks 2x32x32" in out


def test_info_json(seg_zarr, capsys):
    assert main(["info", str(seg_zarr), "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["scales"][0]["shape_zyx"] == [4, 64, 96]
    assert item["scales"][0]["nbytes"] == 4 * 64 * 96 * 8


def test_errors_are_one_clear_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hi")
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    assert "no such file or dataset" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the format" in err and "zarr" in err


def test_view_of_a_missing_source_fails_before_opening_a_window(tmp_path, capsys):
    assert main(["view", str(tmp_path / "missing.zarr")]) == 2
    assert "no such file or dataset" in capsys.readouterr().err


def test_cache_options_are_checked(seg_zarr, capsys):
    with pytest.raises(SystemExit):
        main(["view", str(seg_zarr), "--cache", "lots"])
    assert "2G" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="workers"):
        main(["view", str(seg_zarr), "--workers", "0"])


def test_bad_position_is_rejected(seg_zarr, capsys):
    with pytest.raises(SystemExit):
        main(["view", str(seg_zarr), "--at", "1,2"])
    assert "Z,Y,X" in capsys.readouterr().err


@pytest.mark.gui
def test_view_command_opens_a_window_and_saves_a_screenshot(seg_zarr, tmp_path):
    shot = tmp_path / "view.png"
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-m", "napari_connecto.cli", "view", str(seg_zarr), "--at", "80,256,384",
         "--screenshot", str(shot)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # A uint64 segmentation of one id fills the canvas with one label colour.
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    label_colour = colours[np.argmax(counts * (np.ptp(colours, axis=1) > 20))]
    assert np.ptp(label_colour) > 20, "no coloured label on screen"
    # 768 x 512 nm of data in a 512-voxel (4096 nm) field of view: a block of ~2% of the window.
    assert (np.abs(image - label_colour).sum(axis=-1) < 10).mean() > 0.01
