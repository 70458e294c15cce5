"""``napari-connecto export`` through its argparse parser and handler."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_connecto import _cli_export
from napari_connecto.errors import RegionError
from tests.export._data import em_and_ids, write_ome

BOX = ["440", "48", "32", "560", "200", "220"]  # voxels z 1..4, y 2..40, x 3..50


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="napari-connecto")
    _cli_export.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def dataset(tmp_path):
    image, labels = em_and_ids()
    return write_ome(tmp_path / "em.zarr", image, labels), image, labels


def test_export_tif_with_labels_writes_three_stacks(dataset, tmp_path, capsys):
    path, image, labels = dataset
    out = tmp_path / "fig.tif"
    args = _parse(
        ["export", str(path), "--labels", f"{path}/labels/cells", "--box", *BOX, "--out", str(out)]
    )
    assert args.opacity == 0.5 and args.scale is None
    assert _cli_export.run(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(tmp_path / "fig_em.tif"), str(tmp_path / "fig_ids.tif")]
    np.testing.assert_array_equal(tifffile.imread(printed[1]), image[1:4, 2:40, 3:50])
    np.testing.assert_array_equal(tifffile.imread(printed[2]), labels[1:4, 2:40, 3:50])


def test_export_png_prefix_and_coarser_scale(dataset, tmp_path):
    path, image, _ = dataset
    out = tmp_path / "planes.png"
    args = _parse(["export", str(path), "--box", *BOX, "--scale", "1", "--out", str(out)])
    assert _cli_export.run(args) == 0
    pngs = sorted(tmp_path.glob("planes_z*.png"))
    assert [p.name for p in pngs] == ["planes_z0001.png", "planes_z0002.png", "planes_z0003.png"]
    got = np.asarray(Image.open(pngs[0]))
    np.testing.assert_array_equal(got, image[1, ::2, ::2][1:20, 1:25])


def test_segmentation_alone_exports_ids(dataset, tmp_path):
    path, _, labels = dataset
    out = tmp_path / "ids.tif"
    assert (
        _cli_export.run(
            _parse(["export", f"{path}/labels/cells", "--box", *BOX, "--out", str(out)])
        )
        == 0
    )
    np.testing.assert_array_equal(tifffile.imread(out), labels[1:4, 2:40, 3:50])


@pytest.mark.parametrize(
    "extra",
    [
        ["--opacity", "1.5"],
        ["--opacity", "x"],
        ["--fps", "0"],
        ["--scale", "0", "--resolution", "40,4,4"],
    ],
)
def test_bad_arguments_exit_2(extra, tmp_path):
    with pytest.raises(SystemExit) as exc:
        _parse(["export", "x.zarr", "--box", *BOX, "--out", str(tmp_path / "a.tif"), *extra])
    assert exc.value.code == 2


def test_box_outside_the_volume_is_a_region_error(dataset, tmp_path):
    path, _, _ = dataset
    args = _parse(
        [
            "export",
            str(path),
            "--box",
            "0",
            "0",
            "0",
            "10",
            "10",
            "10",
            "--out",
            str(tmp_path / "a.tif"),
        ]
    )
    with pytest.raises(RegionError, match="outside"):
        _cli_export.run(args)
    nan_box = ["nan", "0", "0", "10", "10", "10"]
    with pytest.raises(RegionError):
        _cli_export.run(
            _parse(["export", str(path), "--box", *nan_box, "--out", str(tmp_path / "a.tif")])
        )
    assert not (tmp_path / "a.tif").exists()
