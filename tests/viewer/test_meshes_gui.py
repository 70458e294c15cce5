"""Segment meshes in a real viewer over the sample written as OME-Zarr."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from scipy import ndimage

from napari_connecto.annotations import AnnotationStore
from napari_connecto.objects.mesh_io import read_ply
from napari_connecto.sample import generate_sample
from napari_connecto.sample.write import write_sample
from napari_connecto.viewer.annotations import attach_annotations
from napari_connecto.viewer.launch import add_sources, go_to
from napari_connecto.viewer.meshes import attach_meshes, mesh_controller_of

pytestmark = pytest.mark.gui

SHAPE = (8, 128, 128)
SCREENSHOT = os.environ.get("CONNECTO_MESH_PNG", "/tmp/meshes_3d.png")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    data = generate_sample(SHAPE, seed=5)
    paths = write_sample(tmp_path_factory.mktemp("meshes") / "s", data)
    return data, paths


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def viewer(make_napari_viewer, sample, cache):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1000, 800)
    add_sources(viewer, [str(sample[1].ome_zarr / "labels" / "segmentation")])
    return viewer


def _labels(viewer):
    return next(layer for layer in viewer.layers if layer._type_string == "labels")


def _interior_point(segmentation, segment, z):
    """The nm position (z, y, x) of the voxel deepest inside a segment on slice ``z``."""
    depth = ndimage.distance_transform_edt(segmentation[z] == segment)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return np.array([z, y, x])


def _big_segments(segmentation, n):
    ids, counts = np.unique(segmentation, return_counts=True)
    return [int(i) for i in ids[np.argsort(counts)[::-1][:n]]]


def _colour_mask(shot, rgb):
    """Pixels whose colour is a shade of ``rgb`` (lit or shaded), not background."""
    px = shot[..., :3].astype(np.float64)
    bright = px.sum(axis=-1) > 60
    unit = px / np.maximum(np.linalg.norm(px, axis=-1, keepdims=True), 1e-9)
    target = np.asarray(rgb[:3], np.float64) / np.linalg.norm(rgb[:3])
    return bright & (unit @ target > 0.995)


def test_mesh_shows_in_3d_where_the_segment_is(viewer, sample, qtbot):
    data, _ = sample
    labels = _labels(viewer)
    controller = attach_meshes(viewer, labels)
    segment = _big_segments(data.segmentation, 1)[0]
    idx = np.argwhere(data.segmentation == segment)
    centre = tuple(tuple(labels.translate) + (idx.min(0) + idx.max(0)) / 2 * data.resolution)
    labels.visible = False  # only meshes on the canvas
    viewer.dims.ndisplay = 3
    viewer.scene.camera.angles = (0.0, 0.0, 90.0)  # looking down z, y down, x right
    go_to(viewer, centre, zoom=viewer.canvas.size[1] / 700.0)
    colour = np.asarray(labels.get_color(segment)) * 255
    before = viewer.screenshot(canvas_only=True, flash=False)
    assert _colour_mask(before, colour).sum() == 0

    controller.show(segment)
    assert segment in controller.loading
    qtbot.waitUntil(lambda: controller.layer_of(segment) is not None, timeout=30000)
    layer = controller.layer_of(segment)
    assert layer.name == f"mesh {segment}"
    assert tuple(layer.units) == tuple(labels.units)
    after = viewer.screenshot(canvas_only=True, flash=False)
    from imageio.v3 import imwrite

    imwrite(SCREENSHOT, after)
    mask = _colour_mask(after, colour)
    assert mask.sum() > 500
    # the mesh is drawn around the canvas centre, where the camera looks at the segment
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    assert abs(ys.mean() - h / 2) < h * 0.15 and abs(xs.mean() - w / 2) < w * 0.15
    # its nm extent is the segment's voxel extent (half a voxel beyond the centres)
    vmin, vmax = layer.data[0].min(0), layer.data[0].max(0)
    lo = np.asarray(labels.translate) + idx.min(0) * data.resolution
    np.testing.assert_allclose(vmin, lo - np.asarray(data.resolution) / 2, atol=1e-3)
    assert np.all(vmax > vmin)

    controller.hide(segment)
    assert f"mesh {segment}" not in [lay.name for lay in viewer.layers]
    assert _colour_mask(viewer.screenshot(canvas_only=True, flash=False), colour).sum() == 0


def test_ctrl_click_toggles_the_mesh_under_the_cursor(viewer, sample, qtbot, tmp_path):
    data, _ = sample
    labels = _labels(viewer)
    controller = attach_meshes(viewer, labels)
    assert mesh_controller_of(labels) is controller
    assert attach_meshes(viewer, labels) is controller
    segment = _big_segments(data.segmentation, 1)[0]
    z = SHAPE[0] // 2
    at = np.asarray(labels.translate) + _interior_point(data.segmentation, segment, z) * np.asarray(
        data.resolution
    )
    go_to(viewer, at, zoom=viewer.canvas.size[1] / 600.0)
    viewer.layers.selection.active = labels
    canvas = viewer.window._qt_viewer.canvas.native
    centre = QPoint(canvas.width() // 2, canvas.height() // 2)
    qtbot.waitUntil(lambda: controller.segment_at(at) == segment, timeout=10000)

    QTest.mouseClick(canvas, Qt.LeftButton, Qt.NoModifier, centre)
    assert controller.shown == frozenset()  # a plain click does nothing
    QTest.mouseClick(canvas, Qt.LeftButton, Qt.ControlModifier, centre)
    assert controller.shown == {segment}
    qtbot.waitUntil(lambda: controller.layer_of(segment) is not None, timeout=30000)
    # export what is shown; the file holds the same geometry in x, y, z
    out = controller.export(segment, tmp_path / "seg.ply")
    np.testing.assert_allclose(read_ply(out).vertices, controller.layer_of(segment).data[0])
    obj = controller.export(segment, tmp_path / "seg.obj")
    assert f"o segment {segment}" in obj.read_text()
    viewer.layers.selection.active = labels
    QTest.mouseClick(canvas, Qt.LeftButton, Qt.ControlModifier, centre)
    assert controller.shown == frozenset()
    assert not [lay for lay in viewer.layers if lay.name.startswith("mesh ")]


def test_neuron_table_selection_shows_and_hides_meshes(viewer, sample, qtbot, tmp_path):
    data, _ = sample
    labels = _labels(viewer)
    a, b = _big_segments(data.segmentation, 2)
    neurons = pd.DataFrame(
        {
            "id": np.array([a, b], dtype=np.uint64),
            "name": ["a", "b"],
            "type": ["KC", "PN"],
            "z": [0.0, 0.0],
            "y": [0.0, 0.0],
            "x": [0.0, 0.0],
        }
    )
    with AnnotationStore.open(str(tmp_path / "n.db")) as store:
        store.add_neurons(neurons)
    store = AnnotationStore.open(str(tmp_path / "n.db"), create=False)
    panel = attach_annotations(viewer, store)
    try:
        controller = attach_meshes(viewer, labels, panel)
        panel.neuron_table.select_ids([a])
        qtbot.waitUntil(lambda: controller.layer_of(a) is not None, timeout=30000)
        assert controller.shown == {a}
        panel.neuron_table.select_ids([b])
        qtbot.waitUntil(lambda: controller.layer_of(b) is not None, timeout=30000)
        assert controller.shown == {b}
        names = [lay.name for lay in viewer.layers]
        assert f"mesh {b}" in names and f"mesh {a}" not in names
    finally:
        panel.detach()
        store.close()


def test_failures_go_to_the_status_not_an_exception(viewer, qtbot):
    labels = _labels(viewer)
    controller = attach_meshes(viewer, labels)
    controller.show(424242)  # not in the volume
    qtbot.waitUntil(lambda: not controller.loading, timeout=30000)
    assert controller.errors and controller.errors[-1][0] == 424242
    assert "424242" in viewer.status and "failed" in viewer.status
    assert controller.layer_of(424242) is None
    controller.show(0)
    assert controller.shown == frozenset()  # background is never meshed


def test_a_mesh_hidden_while_loading_never_appears(viewer, sample, qtbot):
    data, _ = sample
    controller = attach_meshes(viewer, _labels(viewer))
    segment = _big_segments(data.segmentation, 1)[0]
    with qtbot.waitSignal(controller.loaded, timeout=30000):
        controller.show(segment)
        controller.hide(segment)
    qtbot.wait(50)
    assert controller.layer_of(segment) is None and controller.shown == frozenset()
    assert not [lay for lay in viewer.layers if lay.name.startswith("mesh ")]
    # removing the labels layer stops the controller
    viewer.layers.remove(_labels(viewer))
    assert mesh_controller_of(controller.labels_layer) is None


def test_a_huge_stored_mesh_is_shown_coarser_and_exported_finest(viewer, qtbot, tmp_path):
    from napari_connecto.objects.mesh_source import MeshSource
    from napari_connecto.objects.precomputed_meshes import LocalKeys, PrecomputedMeshes
    from tests.objects._mesh_data import write_multires
    from tests.objects.test_mesh_precomputed import TRANSFORM, _two_cube_lods

    lods, chunk = _two_cube_lods()  # level 0: 24 triangles, level 1: 12
    write_multires(tmp_path / "mesh", 42, lods, chunk=chunk, transform=TRANSFORM)
    meshes = PrecomputedMeshes.open(LocalKeys(tmp_path / "mesh"))
    controller = attach_meshes(viewer, _labels(viewer))
    controller._source = MeshSource(meshes)
    controller.max_mesh_bytes = meshes.lod_bytes(42)[0] - 1  # level 0 does not fit
    controller.show(42)
    qtbot.waitUntil(lambda: controller.layer_of(42) is not None, timeout=30000)
    assert controller.layer_of(42).data[1].shape == (12, 3)  # the coarser level is shown
    out = controller.export(42, tmp_path / "m.ply")
    assert read_ply(out).faces.shape == (24, 3)  # the file gets the finest level
    controller.hide(42)
    controller.max_mesh_bytes = None
    controller.show(42)
    qtbot.waitUntil(lambda: controller.layer_of(42) is not None, timeout=30000)
    assert controller.layer_of(42).data[1].shape == (24, 3)
