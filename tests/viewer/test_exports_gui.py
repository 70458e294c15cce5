"""Figure exports from a real viewer: scale-bar screenshots and the region on screen."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

import napari_connecto as nc
from napari_connecto.export._atomic import ExportError
from napari_connecto.viewer.exports import (
    ask_export_choice,
    export_view_region,
    screenshot_with_scale_bar,
)
from napari_connecto.viewer.launch import go_to
from napari_connecto.viewer.streaming import stream_of, wait_until_loaded
from napari_connecto.volume.processors import RemapIds
from tests.export._data import em_and_ids, write_ome


@pytest.fixture
def shown(make_napari_viewer, tmp_path):
    image, labels = em_and_ids()
    path = write_ome(tmp_path / "em.zarr", image, labels)
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(900, 700)
    nc.view(path, viewer=viewer)
    go_to(viewer, (480.0, 131.0, 147.0), zoom=5.3)  # plane z=2, about 30 x 26 voxels
    assert wait_until_loaded(viewer, timeout=60)
    return viewer, image, labels


def _white_run(row: np.ndarray) -> int:
    best = run = 0
    for v in np.all(row[:, :3] == 255, axis=-1):
        run = run + 1 if v else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("scale", [1, 2])
def test_scale_bar_length_matches_its_label_at_the_zoom(shown, tmp_path, scale):
    viewer, _, _ = shown
    out = tmp_path / "shot.png"
    bar = screenshot_with_scale_bar(viewer, out, scale=scale)
    shot = np.asarray(Image.open(out))
    canvas_w = viewer.canvas.size[1]
    assert shot.shape[1] == pytest.approx(canvas_w * scale, abs=2)
    x0, y0, x1, y1 = bar.box
    measured = _white_run(shot[(y0 + y1) // 2, x0 - 3 : x1 + 3])
    number, unit = bar.label.split()
    label_nm = float(number) * {"nm": 1.0, "µm": 1e3, "um": 1e3}[unit]
    # screen pixels per nm is camera.zoom; the screenshot has shot_w / canvas_w pixels each
    want_px = label_nm * viewer.scene.camera.zoom * shot.shape[1] / canvas_w
    assert abs(measured - want_px) <= 1.0
    assert shot[..., :3].std() > 10  # the EM is there under the bar
    shutil.copy(out, f"/tmp/exports_gui_screenshot_x{scale}.png")


def _on_screen(viewer, layer, shape):
    """Voxel index ranges (y, x) whose footprint napari draws inside the canvas."""
    h, w = viewer.canvas.size
    zoom = viewer.scene.camera.zoom
    cy, cx = viewer.scene.camera.center[-2:]
    z = viewer.dims.point[-3]
    top = layer.world_to_data((z, cy - h / (2 * zoom), cx - w / (2 * zoom)))
    bottom = layer.world_to_data((z, cy + h / (2 * zoom), cx + w / (2 * zoom)))
    ranges = []
    for d0, d1, n in zip(top[1:], bottom[1:], shape[1:], strict=True):
        lo = max(0, math.floor(d0 - 0.5) + 1)  # footprint [i - 0.5, i + 0.5] overlaps
        hi = min(n, math.ceil(d1 + 0.5))
        ranges.append(slice(lo, hi))
    return round(layer.world_to_data((z, cy, cx))[0]), ranges


def test_export_view_region_equals_the_voxels_on_screen(shown, tmp_path, qtbot):
    viewer, image, labels = shown
    image_layer = next(lay for lay in viewer.layers if lay._type_string == "image")
    labels_layer = next(lay for lay in viewer.layers if lay._type_string == "labels")
    z, (ys, xs) = _on_screen(viewer, image_layer, image.shape)
    assert z == 2 and ys.start > 0 and xs.start > 0  # a window inside the volume
    future = export_view_region(viewer, tmp_path / "view.tif", opacity=0.6)
    qtbot.waitUntil(future.done, timeout=60000)
    result = future.result()
    assert [p.name for p in result.paths] == ["view.tif", "view_em.tif", "view_ids.tif"]
    em, ids = (tifffile.imread(p).reshape(-1, *image[z, ys, xs].shape) for p in result.paths[1:])
    np.testing.assert_array_equal(em, image[z : z + 1, ys, xs])
    np.testing.assert_array_equal(ids, labels[z : z + 1, ys, xs])
    # the colour view uses napari's colour for each segment
    colour = tifffile.imread(result.paths[0]).reshape(*ids.shape[1:], 3)
    ids = labels[z, ys, xs]
    y, x = np.argwhere(ids == np.uint64(2**60 + 5))[0]
    rgba = labels_layer.colormap.map(np.array([ids[y, x]], dtype=np.uint64))[0]
    want = image[z, ys, xs][y, x] * 0.4 + rgba[:3] * 255 * 0.6 * rgba[3]
    np.testing.assert_allclose(colour[y, x], want, atol=1.5)
    assert viewer.status.startswith("exported 3 file(s)")


def test_export_view_region_gif_over_a_z_range(shown, tmp_path, qtbot):
    viewer, image, _ = shown
    future = export_view_region(viewer, tmp_path / "sweep.gif", z_range=(400.0, 640.0), fps=2)
    qtbot.waitUntil(future.done, timeout=60000)
    with Image.open(future.result().paths[0]) as gif:
        assert gif.n_frames == 6 and gif.info["duration"] == 500


def test_export_failures_reach_the_future_and_status(shown, tmp_path, qtbot):
    viewer, _, _ = shown
    future = export_view_region(viewer, tmp_path / "missing" / "view.tif")
    qtbot.waitUntil(future.done, timeout=60000)
    with pytest.raises(ExportError, match="does not exist"):
        future.result()
    assert viewer.status.startswith("export failed")
    viewer.dims.ndisplay = 3
    with pytest.raises(ExportError, match="2-D"):
        screenshot_with_scale_bar(viewer, tmp_path / "shot.png")
    viewer.dims.ndisplay = 2
    for layer in viewer.layers:
        layer.visible = False
    with pytest.raises(ExportError, match="no napari-connecto"):
        export_view_region(viewer, tmp_path / "view.tif")


def test_export_dialog_form_defaults(qtbot):
    choice = ask_export_choice(accept=True)
    assert choice is not None and choice.path == "region.tif" and choice.planes == 1
    assert ask_export_choice(accept=False) is None


def test_export_during_proofreading_has_the_segments_on_screen(shown, tmp_path, qtbot):
    """A layer read through a remap (fragments -> segments) exports the segments, not fragments."""
    viewer, _, labels = shown
    labels_layer = next(lay for lay in viewer.layers if lay._type_string == "labels")
    image_layer = next(lay for lay in viewer.layers if lay._type_string == "image")
    keys = np.array([3, 2**60 + 5, 2**60 + 77], np.uint64)  # sorted fragment ids
    values = np.array([41, 900, 900], np.uint64)  # two fragments merged into segment 900
    sv = stream_of(labels_layer).volume
    sv.volume = sv.volume.with_processors(read=[RemapIds(keys, values)])  # as proofreading does
    z, (ys, xs) = _on_screen(viewer, image_layer, labels.shape)
    future = export_view_region(viewer, tmp_path / "view.tif", opacity=1.0)
    qtbot.waitUntil(future.done, timeout=60000)
    paths = future.result().paths
    ids = tifffile.imread(paths[-1]).reshape(labels[z, ys, xs].shape)
    np.testing.assert_array_equal(ids, RemapIds(keys, values)(labels[z, ys, xs]))
    assert 900 in ids and not np.isin(ids, keys).any()
    # and in napari's colour of the segment, not of either fragment
    colour = tifffile.imread(paths[0]).reshape(*ids.shape, 3)
    y, x = np.argwhere(ids == 900)[0]
    rgba = labels_layer.colormap.map(np.array([900], dtype=np.uint64))[0]
    np.testing.assert_allclose(colour[y, x], rgba[:3] * 255 * rgba[3], atol=1.5)
