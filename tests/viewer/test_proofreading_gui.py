"""Proofreading in a real viewer over the generated sample (OME-Zarr written to tmp_path).

The segmentation is drawn opaque and alone, so the colours on screen are the segments:
a merged-away segment's colour disappears, a cleaved-off one's appears, a painted
square shows in the new segment's colour, also after closing and reopening.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_connecto._qt.proofreading_panel import ProofreadingPanel
from napari_connecto.annotations import AnnotationStore
from napari_connecto.annotations.importers import read_annotations
from napari_connecto.opening import open_volume
from napari_connecto.sample import generate_sample
from napari_connecto.sample.write import write_sample
from napari_connecto.viewer.annotations import attach_annotations
from napari_connecto.viewer.launch import add_sources, go_to
from napari_connecto.viewer.paint_canvas import PaintCanvas
from napari_connecto.viewer.streaming import wait_until_loaded

pytestmark = pytest.mark.gui

SHAPE = (6, 256, 256)
SCREENSHOT = os.environ.get("CONNECTO_PROOFREADING_PNG", "/tmp/proofreading.png")


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("proofreading")
    return write_sample(directory, generate_sample(SHAPE, seed=3))


@pytest.fixture
def dataset(sample_dir, tmp_path):
    """A private copy of the sample (edits write into it) and a store with its synapses."""
    import shutil

    zarr_copy = tmp_path / "sample.zarr"
    shutil.copytree(sample_dir.ome_zarr, zarr_copy)
    db = tmp_path / "annotations.db"
    with AnnotationStore.open(db) as store:
        store.import_batch(read_annotations(sample_dir.cremi, format="cremi"))
    return zarr_copy, db


def _process(seconds: float = 0.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def _open(make_napari_viewer, zarr_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    layers = add_sources(viewer, [zarr_path])
    image = next(lay for lay in layers if lay._type_string == "image")
    seg = next(lay for lay in layers if lay._type_string == "labels")
    image.visible = False
    seg.opacity = 1.0
    z = SHAPE[0] // 2 * 40.0
    go_to(viewer, (z, 128 * 4.0, 128 * 4.0))
    viewer.scene.camera.zoom = 700 / (256 * 4.0)
    return viewer, seg


def _settle(viewer, session=None) -> None:
    if session is not None:
        session.wait_idle()
        session.proofreader.commit(timeout=30)
        session.wait_idle()
    _process(0.3)
    assert wait_until_loaded(viewer, timeout=30)
    _process(0.3)


def _distinct(layer, *labels: int) -> bool:
    """Whether ``labels`` get clearly different colours (napari's colour cycle repeats)."""
    colours = [np.asarray(layer.get_color(int(label)))[:3] for label in labels]
    return all(np.abs(a - b).max() > 0.1 for i, a in enumerate(colours) for b in colours[i + 1 :])


def _colour_pixels(viewer, layer, label: int) -> int:
    """Screen pixels showing ``label``'s colour."""
    shot = _shot(viewer)
    colour = np.round(np.asarray(layer.get_color(label))[:3] * 255).astype(int)
    return int(np.count_nonzero(np.abs(shot - colour).max(axis=-1) <= 3))


def _shot(viewer) -> np.ndarray:
    """The canvas without the mode banner (so only the data is compared)."""
    overlay = viewer.canvas.overlays.text
    shown, overlay.visible = overlay.visible, False
    try:
        return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    finally:
        overlay.visible = shown


def _changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(np.abs(a - b).max(axis=-1) > 3))


def _shown(layer, position_nm) -> int:
    """The id the layer draws at a position (what the viewer sliced, public API)."""
    value = layer.get_value(tuple(position_nm), world=True)
    return int(value[1] if isinstance(value, tuple) else value)  # multiscale: (level, value)


def _start(viewer, seg, db):
    panel = ProofreadingPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Proofreading")
    assert panel.start(
        db if isinstance(db, AnnotationStore) else str(db), seg, confirm=lambda text: True
    )
    return panel


def _two_touching_segments(volume, layer) -> tuple[int, int]:
    """Two touching segments in the middle section; the second has a colour of its own."""
    z = SHAPE[0] // 2
    plane = volume.read_voxels(0, (z, 0, 0), (z + 1, *SHAPE[1:]))[0]
    left, right = plane[:, :-1], plane[:, 1:]
    pairs, counts = np.unique(
        np.stack([left[left != right], right[left != right]], axis=1), axis=0, return_counts=True
    )
    shown = [int(v) for v in np.unique(plane)]
    for k in np.argsort(counts)[::-1]:
        a, b = (int(v) for v in pairs[k])
        if all(_distinct(layer, b, other) for other in shown if other != b):
            return a, b
    raise AssertionError("no two touching segments with different colours")


def test_merge_shows_two_segments_as_one_and_cleave_separates_them(
    make_napari_viewer, dataset, qtbot
):
    zarr_path, db = dataset
    viewer, seg = _open(make_napari_viewer, zarr_path)
    panel = _start(viewer, seg, db)
    session = panel.session
    volume = session.proofreader.volume
    keep, absorb = _two_touching_segments(volume, seg)
    at_keep, at_absorb = _inside(volume, keep), _inside(volume, absorb)
    _settle(viewer, session)
    assert (_shown(seg, at_keep), _shown(seg, at_absorb)) == (keep, absorb)
    before = _shot(viewer)
    panel.set_mode("merge")
    overlay = viewer.canvas.overlays.text
    assert overlay.visible and "MERGE" in overlay.text
    session.merge(keep, absorb)
    _settle(viewer, session)
    assert _shown(seg, at_absorb) == keep
    merged = _shot(viewer)
    assert _changed_pixels(before, merged) > 200  # redrawn in the kept segment's colour
    viewer.screenshot(SCREENSHOT, canvas_only=False)
    # split them again by cutting the absorbed fragment off
    panel.set_mode("split")
    session.cleave(keep, [absorb])
    _settle(viewer, session)
    entry = session.proofreader.history(1).iloc[0]
    assert entry["kind"] == "cleave"
    new_id = _shown(seg, at_absorb)
    assert new_id not in (keep, absorb)
    assert _shown(seg, at_keep) == keep
    assert int(session.proofreader.segment_at(at_absorb)[0]) == new_id
    # Ctrl+Z through napari's key handling: the cleave is undone, one segment again
    canvas = viewer.window._qt_viewer.canvas.native
    viewer.layers.selection.active = seg
    QTest.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClick(canvas, Qt.Key.Key_Control)  # Qt keeps Ctrl held otherwise (later tests)
    _settle(viewer, session)
    assert _shown(seg, at_absorb) == keep
    assert _changed_pixels(merged, _shot(viewer)) < 50
    panel.stop()


def _inside(volume, label: int) -> np.ndarray:
    z = SHAPE[0] // 2
    plane = volume.read_voxels(0, (z, 0, 0), (z + 1, *SHAPE[1:]))[0]
    ys, xs = np.nonzero(plane == np.uint64(label))
    k = len(ys) // 2
    sc = volume.scales[0]
    return (np.array([z, ys[k], xs[k]]) + 0.5) * np.asarray(sc.resolution.as_tuple()) + np.asarray(
        sc.origin_nm.as_tuple()
    )


def test_paint_stroke_is_persisted_and_shows_after_reopening(make_napari_viewer, dataset, qtbot):
    zarr_path, db = dataset
    viewer, seg = _open(make_napari_viewer, zarr_path)
    panel = _start(viewer, seg, db)
    session = panel.session
    _settle(viewer, session)
    future = PaintCanvas.open(session, depth=1)
    future.result(10)
    qtbot.waitUntil(lambda: session.canvas is not None, timeout=10000)
    canvas = session.canvas
    label = int(canvas.layer.selected_label)
    z = SHAPE[0] // 2 - canvas.start[0]
    canvas.layer.brush_size = 40
    for y in range(100, 160, 10):
        canvas.layer.paint((z, y - canvas.start[1], 128 - canvas.start[2]), label)
        _process(0.05)
    _settle(viewer, session)
    _process(0.5)  # the sync timer also journals anything napari did not announce
    _settle(viewer, session)
    assert not session.errors, session.errors
    history = session.proofreader.history(20)
    assert (history["kind"] == "paint").sum() >= 3
    painted = np.count_nonzero(np.asarray(canvas.layer.data) == label)
    volume = open_volume(zarr_path / "labels" / "segmentation")
    stored = volume.read_voxels(0, canvas.start, canvas.stop)
    assert painted > 1000
    assert np.count_nonzero(stored == label) == painted  # every stroke reached the volume
    assert canvas.pending == 0
    canvas.close()
    _settle(viewer, session)
    inside = np.asarray(seg.translate) + (np.array([SHAPE[0] // 2, 130, 128]) + 0.5) * np.asarray(
        seg.scale
    )
    assert _shown(seg, inside) == label
    panel.stop()
    viewer.close()
    # a fresh viewer on the same files shows the stroke
    again, seg2 = _open(make_napari_viewer, zarr_path)
    _settle(again)
    assert _shown(seg2, inside) == label


def test_synapse_edits_show_in_the_tables(make_napari_viewer, dataset, qtbot):
    zarr_path, db = dataset
    viewer, seg = _open(make_napari_viewer, zarr_path)
    store = AnnotationStore.open(db, create=False)
    tables = attach_annotations(viewer, store, labels_layer=seg)
    panel = _start(viewer, seg, store)
    session = panel.session
    pr = session.proofreader
    volume = pr.volume
    a, b = _two_touching_segments(volume, seg)
    pre, post = _inside(volume, a), _inside(volume, b)
    assert tables.select_neuron(a) or True
    before = store.count_synapses(a, include_self=True)
    session.add_synapse(pre, [post])
    _settle(viewer, session)
    assert store.count_synapses(a, include_self=True) == before + 1
    tables.select_neuron(a)
    _process(0.2)
    new_id = int(store.synapses(a, include_self=True)["id"].max())
    assert new_id in tables.synapse_table.visible_ids()
    tables.synapse_table.select_synapse(new_id)
    _process(0.2)
    tables.review("verified", [new_id])
    _settle(viewer, session)
    assert store.synapse(new_id)["status"] == "verified"
    session.undo()
    _settle(viewer, session)
    assert store.synapse(new_id)["status"] == "unreviewed"
    panel.delete_synapses([new_id])
    _settle(viewer, session)
    _process(0.3)
    assert new_id not in tables.synapse_table.visible_ids()
    assert store.count_synapses(a, include_self=True) == before
    panel.stop()
    tables.detach()
    store.close()


def test_restart_and_closing_the_dock_stop_cleanly(make_napari_viewer, dataset, qtbot):
    zarr_path, db = dataset
    viewer, seg = _open(make_napari_viewer, zarr_path)
    panel = _start(viewer, seg, db)
    first = panel.session
    volume = first.proofreader.volume
    keep, absorb = _two_touching_segments(volume, seg)
    at_absorb = _inside(volume, absorb)
    first.merge(keep, absorb)
    _settle(viewer, first)
    assert _shown(seg, at_absorb) == keep
    # Start again: the old session stops, the new one shows the same (journaled) state
    assert panel.start(str(db), seg, confirm=lambda text: True)
    second = panel.session
    assert second is not first and first._closed
    _settle(viewer, second)
    assert _shown(seg, at_absorb) == keep
    second.undo()
    _settle(viewer, second)
    assert _shown(seg, at_absorb) == absorb  # no stale table of the first session left
    # closing the dock (napari takes the widget out of it) stops proofreading
    viewer.window.remove_dock_widget(panel)
    _process(0.2)
    assert panel.session is None and second._closed
    assert not second._timer.isActive()


def test_a_click_anywhere_on_a_drawn_voxel_picks_that_voxel(make_napari_viewer, dataset, qtbot):
    zarr_path, db = dataset
    viewer, seg = _open(make_napari_viewer, zarr_path)
    panel = _start(viewer, seg, db)
    res = np.asarray(seg.scale)
    origin = np.asarray(seg.translate)
    voxel = np.array([3, 100, 57])
    drawn_centre = origin + voxel * res  # napari centres voxel i on translate + i * scale
    for offset in (-0.45, 0.0, 0.45):
        picked = panel.session._voxel_centre(drawn_centre + offset * res)
        assert np.array_equal(np.floor((picked - origin) / res).astype(int), voxel)
    panel.stop()
