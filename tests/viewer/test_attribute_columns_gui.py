"""Segment attributes in a real viewer: computed in the background, shown as columns, go to id.

The generated sample is written as OME-Zarr (ome-zarr-py) and opened through the
plugin, so its Labels layer names its source. Half of the segments are neurons in the
annotation store; the others exist only in the segmentation and are reached through
their representative voxel.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_connecto import open_volume
from napari_connecto.annotations import AnnotationStore
from napari_connecto.objects.attributes import read_table
from napari_connecto.sample import generate_sample
from napari_connecto.sample.write import CACHE_ENV, write_sample
from napari_connecto.viewer.annotations import attach_annotations
from napari_connecto.viewer.launch import add_sources

pytestmark = pytest.mark.gui

SCREENSHOT = os.environ.get("CONNECTO_ATTRIBUTES_PNG", "/tmp/attribute_columns.png")
SHAPE = (6, 256, 256)


@pytest.fixture(scope="module")
def sample():
    return generate_sample(SHAPE, seed=2)


@pytest.fixture
def dataset(sample, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    paths = write_sample(tmp_path / "data", sample)
    ids = np.unique(sample.segmentation)
    neurons = ids[::2]
    with AnnotationStore(str(tmp_path / "a.db")) as db:
        db.add_neurons(
            pd.DataFrame({"id": neurons, "name": [f"cell {i}" for i in range(neurons.size)]})
        )
    store = AnnotationStore.open(str(tmp_path / "a.db"), create=False)
    yield paths, ids, store
    store.close()


@pytest.fixture
def viewer(make_napari_viewer, dataset):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 950)
    add_sources(viewer, [str(dataset[0].ome_zarr)])
    return viewer


def _labels_layer(viewer):
    return next(
        layer
        for layer in viewer.layers
        if layer.metadata.get("connecto_background_label") is not None
    )


def _compute(panel, qtbot) -> None:
    qtbot.mouseClick(panel.attributes_bar.button, Qt.MouseButton.LeftButton)
    assert panel.attributes_bar.worker is not None
    qtbot.waitUntil(lambda: panel.attributes is not None, timeout=60_000)
    qtbot.waitUntil(lambda: panel.attributes_bar.worker is None, timeout=10_000)


def _sample_of(panel) -> np.ndarray:
    """The segmentation the panel's attributes were computed from, read back whole."""
    volume = open_volume(panel.segmentation_source())
    return volume.read_voxels(0, (0, 0, 0), volume.shape)


def _cells(panel, row: int) -> dict[str, str]:
    model = panel.neuron_table.model
    return {
        c.key: model.data(model.index(row, k), Qt.ItemDataRole.DisplayRole)
        for k, c in enumerate(model.columns)
    }


def test_columns_show_brute_force_values(viewer, dataset, sample, qtbot):
    paths, ids, store = dataset
    labels = _labels_layer(viewer)
    panel = attach_annotations(viewer, store)
    assert panel.attributes is None  # nothing cached yet
    assert panel.segmentation_source() == labels.metadata["connecto_source"]
    _compute(panel, qtbot)
    assert len(panel.attributes) == ids.size
    assert panel.attributes_bar.label.text() == f"{ids.size:,} segments"
    seg = sample.segmentation
    res = np.asarray(sample.resolution)
    origin = np.asarray(labels.translate)
    for row in range(0, panel.neuron_table.model.rowCount(), 5):
        neuron = panel.neuron_table.model.id_at(row)
        cells = _cells(panel, row)
        where = np.argwhere(seg == np.uint64(neuron))
        assert cells["seg_voxels"] == str(len(where))
        assert float(cells["seg_um3"]) == pytest.approx(len(where) * res.prod() / 1e9, abs=1e-4)
        lo, hi = where.min(axis=0), where.max(axis=0) + 1
        assert cells["seg_bbox"] == " ".join(f"{a}:{b}" for a, b in zip(lo, hi, strict=True))
        point = np.array([float(v) for v in cells["seg_point"].split(",")])
        index = np.round((point - origin) / res).astype(int)
        assert seg[tuple(index)] == neuron  # the point is inside the neuron's segment
    panel.detach()
    # a new panel finds the cached attributes at once, without computing
    again = attach_annotations(viewer, store)
    assert again.attributes is not None and again.attributes_bar.worker is None
    assert again.neuron_table.model.columns[-1].key == "seg_point"
    again.detach()


def test_go_to_a_segment_that_is_not_a_neuron(viewer, dataset, sample, qtbot):
    paths, ids, store = dataset
    panel = attach_annotations(viewer, store)
    others = [int(i) for i in ids[1::2]]
    assert panel.go_to_id(str(others[0])) is None
    assert "compute attributes" in panel.message_label.text()
    _compute(panel, qtbot)
    labels = _labels_layer(viewer)
    res = np.asarray(sample.resolution)
    origin = np.asarray(labels.translate)
    for segment in (others[0], others[-1], max(others)):
        assert panel.go_to_id(str(segment)) == "segment"
        QApplication.processEvents()
        centre = np.array([viewer.dims.point[0], *viewer.scene.camera.center[-2:]])
        index = np.round((centre - origin) / res).astype(int)
        assert sample.segmentation[tuple(index)] == np.uint64(segment)
        assert labels.selected_label == segment and labels.show_selected_label
        assert (
            panel.neuron_table.selected_ids() == []
            or segment not in panel.neuron_table.selected_ids()
        )
    assert panel.go_to_id(str(int(ids[0]))) == "neuron"  # neurons still win
    assert panel.go_to_id("12") is None
    assert "No neuron or synapse 12 or segment" in panel.message_label.text()
    panel.detach()


def test_imported_properties_and_screenshot(viewer, dataset, qtbot, tmp_path):
    _paths, ids, store = dataset
    panel = attach_annotations(viewer, store)
    _compute(panel, qtbot)
    table = pd.DataFrame({"segment": ids[::2][:3], "cell_type": ["KC", "PN", "MBON"]})
    table.to_csv(tmp_path / "types.csv", index=False)
    panel.add_properties(read_table(tmp_path / "types.csv", id_column="segment"))
    assert panel.neuron_table.model.columns[-1].title == "cell_type"
    assert [_cells(panel, row)["prop:cell_type"] for row in range(4)] == ["KC", "PN", "MBON", ""]
    assert _cells(panel, 0)["seg_voxels"] == str(int((_sample_of(panel) == ids[0]).sum()))
    view = panel.neuron_table.view
    first = [c.key for c in panel.neuron_table.model.columns].index("seg_voxels")
    view.horizontalScrollBar().setValue(view.horizontalHeader().sectionPosition(first))
    panel.go_to_id(str(int(ids[1])))
    for _ in range(20):
        QApplication.processEvents()
    QTest.qWait(300)
    viewer.screenshot(SCREENSHOT, canvas_only=False, flash=False)
    panel.grab().save(SCREENSHOT.replace(".png", "_panel.png"))
    assert os.path.getsize(SCREENSHOT) > 10_000
    panel.detach()


def test_cancelling_a_computation_keeps_nothing(viewer, dataset, qtbot, monkeypatch):
    """The first block waits until Cancel was clicked; the worker then stops, nothing cached."""
    import threading

    from napari_connecto.objects import attribute_compute

    release = threading.Event()
    reduce_block = attribute_compute._reduce_block

    def held(*args):
        release.wait(30)
        return reduce_block(*args)

    monkeypatch.setattr(attribute_compute, "_reduce_block", held)
    _paths, _ids, store = dataset
    panel = attach_annotations(viewer, store)
    bar = panel.attributes_bar
    qtbot.mouseClick(bar.button, Qt.MouseButton.LeftButton)
    assert not bar.progress.isHidden() and not bar.cancel_button.isHidden()
    assert not bar.button.isEnabled()
    qtbot.mouseClick(bar.cancel_button, Qt.MouseButton.LeftButton)
    release.set()
    qtbot.waitUntil(lambda: bar.worker is None, timeout=30_000)
    assert panel.attributes is None and bar.label.text() == "cancelled"
    assert bar.button.isEnabled() and bar.progress.isHidden()
    source = panel.segmentation_source()
    assert attribute_compute.cached_attributes(open_volume(source)) is None
    panel.detach()
