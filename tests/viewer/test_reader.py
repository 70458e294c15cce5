"""The plugin in a real napari viewer: reader, layers in nm, pixels on screen, view()."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.writer import write_multiscale

import napari_connecto as nc
from napari_connecto._reader import get_reader
from napari_connecto.cache import StreamingLevel
from napari_connecto.viewer.streaming import wait_until_loaded
from tests.viewer.conftest import AXES

pytestmark = pytest.mark.gui


def test_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "missing.zarr")) is None
    assert get_reader([]) is None


def test_viewer_open_through_plugin(make_napari_viewer, ome_dataset):
    path, image, labels = ome_dataset
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-connecto")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    img, seg = layers
    assert img.name == "em.zarr" and seg.name == "cells"
    for layer in layers:
        assert layer.multiscale
        np.testing.assert_allclose(layer.scale, (40.0, 4.0, 4.0))
        np.testing.assert_allclose(layer.translate, (400.0, 40.0, 20.0))
        assert isinstance(layer.data[0], StreamingLevel)
        assert layer.data[0].stream.streaming  # inside a viewer, reads never wait
    assert wait_until_loaded(viewer, 30)
    assert img.contrast_limits == [0.0, 255.0]
    assert seg.data[0].dtype == np.uint64
    # The id under a world position is the exact uint64 stored (no float, no uint32).
    value = seg.get_value((400.0 + 40.0 * 2, 40.0 + 4.0 * 64, 20.0 + 4.0 * 64), world=True)
    assert value == (0, 2**60 + 5)  # (level, id) for multiscale labels


def screen_footprint(shot: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The data's footprint on a screenshot (non-black box), resampled to ``shape``."""
    gray = shot[..., :3].astype(float).mean(axis=-1)
    rows, cols = np.nonzero(gray > 20)
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    ri = ((np.arange(shape[0]) + 0.5) * crop.shape[0] / shape[0]).astype(int)
    ci = ((np.arange(shape[1]) + 0.5) * crop.shape[1] / shape[1]).astype(int)
    return crop[np.ix_(ri, ci)]


def test_screenshot_shows_the_stored_pixels(make_napari_viewer, ome_dataset, tmp_path):
    path, image, _ = ome_dataset
    viewer = make_napari_viewer(show=True)
    nc.view(path, viewer=viewer)
    viewer.layers["cells"].visible = False
    viewer.reset_view()
    assert wait_until_loaded(viewer, 30)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    seen = screen_footprint(shot, image.shape[1:])
    close = np.abs(seen - image[0].astype(float)) <= 12
    assert close.mean() > 0.97, f"only {close.mean():.1%} of pixels match the stored image"


def test_view_centres_on_nm_position(make_napari_viewer, ome_dataset):
    path, _, _ = ome_dataset
    viewer = make_napari_viewer()
    nc.view(path, at=(480.0, 300.0, 200.0), viewer=viewer)
    assert viewer.dims.point[0] == pytest.approx(480.0)
    assert viewer.scene.camera.center[-2:] == pytest.approx((300.0, 200.0))


def test_viewer_reads_only_the_displayed_plane(make_napari_viewer, tmp_path):
    """napari cuts the window out of the whole level first: that must not read every section.

    Without a streaming controller (a script adding the layer) reads block the
    caller, but still fetch only the chunks holding the displayed section.
    """
    from napari_connecto.layers import volume_layer_data

    data = np.arange(64 * 256 * 256, dtype=np.uint32).reshape(64, 256, 256) % 251
    root = zarr.group(store=parse_url(str(tmp_path / "deep.zarr"), mode="w").store)
    write_multiscale(
        [data, data[:, ::2, ::2], data[:, ::4, ::4]],
        root,
        axes=AXES,
        coordinate_transformations=[
            [{"type": "scale", "scale": [40.0, 4.0 * f, 4.0 * f]}] for f in (1, 2, 4)
        ],
        storage_options={"chunks": (4, 128, 128)},
    )
    vol = nc.open_volume(tmp_path / "deep.zarr")
    reads = []
    original = vol.backend.read

    def counting_read(scale, start, stop):
        reads.append((scale, start, stop))
        return original(scale, start, stop)

    vol.backend.read = counting_read
    viewer = make_napari_viewer()
    levels, meta, _ = volume_layer_data(vol)
    meta.pop("units", None)
    layer = viewer.add_image(levels, **meta)
    assert not layer.data[0].stream.streaming
    reads.clear()
    viewer.dims.set_point(0, 40.0 * 37)
    assert reads, "moving to a section read nothing"
    # Only the chunks holding section 37 (z 36..40), at the displayed and thumbnail levels.
    assert {(start[0], stop[0]) for _, start, stop in reads} == {(36, 40)}
    assert layer.data_level in {scale for scale, _, _ in reads}
    assert np.array_equal(np.asarray(layer.data[layer.data_level][37, :8, :8]), data[37, :8, :8])
    # 3D display uses the coarsest level, read whole through the same lazy views.
    reads.clear()
    viewer.dims.ndisplay = 3
    assert {scale for scale, _, _ in reads} == {len(levels) - 1}
    assert np.array_equal(np.asarray(layer.data[-1]), data[:, ::4, ::4])
