"""The annotation panel docked in a real viewer over the generated sample.

The sample's EM image and segmentation are in memory; its synapses (CREMI layout:
sites paired pre -> post) and every segment (keypoint: a voxel inside it) go into a
store in ``tmp_path``. Segment ids are uint64 and many are above 2**63.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_connecto._qt.annotation_panel import AnnotationPanel
from napari_connecto.annotations import AnnotationStore
from napari_connecto.sample import RESOLUTION, generate_sample
from napari_connecto.viewer.annotations import (
    OVERLAY_LAYER_NAME,
    REVIEW_KEYS,
    attach_annotations,
    view_box,
)
from napari_connecto.viewer.launch import go_to

pytestmark = pytest.mark.gui

SCREENSHOT = os.environ.get("CONNECTO_ANNOTATION_PNG", "/tmp/annotation_panel.png")
SHAPE = (10, 384, 384)
RES = np.array(RESOLUTION)


def _neurons(segmentation: np.ndarray) -> pd.DataFrame:
    """Every segment with a keypoint in its middle voxel (in scan order)."""
    flat = segmentation.ravel()
    order = np.argsort(flat, kind="stable")
    ids, starts, counts = np.unique(flat[order], return_index=True, return_counts=True)
    middle = order[starts + counts // 2]
    zyx = np.stack(np.unravel_index(middle, segmentation.shape), axis=1) * RES
    kinds = np.array(["KC", "PN", "MBON"], dtype=object)
    return pd.DataFrame(
        {
            "id": ids,
            "name": [f"cell {i}" for i in range(len(ids))],
            "type": kinds[np.arange(len(ids)) % 3],
            "z": zyx[:, 0],
            "y": zyx[:, 1],
            "x": zyx[:, 2],
        }
    )


def _synapses(sample) -> pd.DataFrame:
    """One synapse per CREMI partner pair, pre and post sites from the pair."""
    sites = sample.synapses
    where = {int(a): k for k, a in enumerate(sites.ids)}
    pre = np.array([where[int(a)] for a, _ in sites.partners])
    post = np.array([where[int(b)] for _, b in sites.partners])
    frame = pd.DataFrame(
        {
            "id": np.arange(1, len(pre) + 1, dtype=np.uint64),
            "pre_id": sites.neurons[pre].astype(np.uint64),
            "post_id": sites.neurons[post].astype(np.uint64),
            "confidence": np.linspace(0.5, 1.0, len(pre)),
        }
    )
    for k, axis in enumerate("zyx"):
        frame[f"pre_{axis}"] = sites.locations[pre, k]
        frame[f"post_{axis}"] = sites.locations[post, k]
    return frame


@pytest.fixture(scope="module")
def sample():
    data = generate_sample(SHAPE)
    return data, _neurons(data.segmentation), _synapses(data)


@pytest.fixture
def store_path(tmp_path, sample) -> str:
    path = str(tmp_path / "sample.db")
    with AnnotationStore.open(path) as store:
        store.add_neurons(sample[1])
        store.add_synapses(sample[2])
    return path


@pytest.fixture
def store(store_path):
    opened = AnnotationStore.open(store_path, create=False)
    yield opened
    opened.close()


@pytest.fixture
def viewer(make_napari_viewer, sample):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.add_image(sample[0].raw, scale=RESOLUTION, name="em")
    viewer.add_labels(sample[0].segmentation, scale=RESOLUTION, name="neurons")
    return viewer


@pytest.fixture
def notes():
    """The injected bookmark note prompt: returns the next queued note."""
    queued: list[str | None] = []
    return queued, lambda parent, initial: queued.pop(0) if queued else None


@pytest.fixture
def panel(viewer, store, notes):
    panel = attach_annotations(viewer, store, note_prompt=notes[1])
    yield panel
    panel.detach()


def _process(n: int = 5) -> None:
    for _ in range(n):
        QApplication.processEvents()


def _busiest_big_neuron(store: AnnotationStore) -> int:
    """The neuron with the most synapses among those with ids above 2**63."""
    ids = store.neuron_ids(order_by="n_pre", descending=True)
    frame = store.neurons(ids[:40])
    frame = frame[frame["id"] >= np.uint64(2**63)]
    frame = frame.assign(n=frame["n_pre"] + frame["n_post"]).sort_values("n", ascending=False)
    return int(frame["id"].iloc[0])


def _click_row(view, row: int, column: int = 0) -> None:
    index = view.model().index(row, column)
    view.scrollTo(index)
    QTest.mouseClick(
        view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(index).center()
    )
    _process()


def _press(viewer, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    canvas = viewer.window._qt_viewer.canvas.native  # real key events through napari
    QTest.keyClick(canvas, key, modifier)
    if modifier != Qt.KeyboardModifier.NoModifier:  # Qt keeps the last modifiers otherwise
        QTest.keyRelease(canvas, Qt.Key.Key_Shift)
    _process()


def _assert_view_at(viewer, at) -> None:
    z, y, x = at
    assert abs(viewer.dims.point[0] - z) <= RES[0] / 2, "dims z at the nearest section"
    assert np.allclose(viewer.scene.camera.center[-2:], (y, x))


def test_clicking_a_neuron_fills_its_synapses_and_partners_and_goes_there(viewer, panel, store):
    neuron = _busiest_big_neuron(store)
    assert neuron >= 2**63
    table = panel.neuron_table
    table.filter_edit.setText(str(neuron))
    assert table.apply_filter()
    assert table.model.rowCount() == 1
    assert table.model.data(table.model.index(0, 0)) == str(neuron)
    _click_row(table.view, 0)
    assert panel.selected_neurons() == [neuron]
    expected = store.synapses_of(neuron)
    assert sorted(panel.synapse_table.visible_ids()) == sorted(int(i) for i in expected["id"])
    shown = panel.synapse_table.model.visible()
    assert set(shown["direction"]) <= {"in", "out"}
    assert {int(p) for p in shown["partner"]} == {int(p) for p in expected["partner"]}
    partners = store.partners(neuron)
    assert panel.partner_table.partner_ids() == [int(p) for p in partners["partner"]]
    labels = viewer.layers["neurons"]
    assert labels.selected_label == neuron and labels.show_selected_label
    _assert_view_at(viewer, store.neuron_keypoint(neuron).as_tuple())
    assert panel.selected_progress.value() == 0
    assert f"0 / {len(expected)} reviewed" in panel.selected_progress.text()


def test_clicking_a_synapse_centres_it_and_highlights_the_neuron(viewer, panel, store):
    neuron = _busiest_big_neuron(store)
    panel.select_neuron(neuron)
    _process()
    labels = viewer.layers["neurons"]
    labels.selected_label = 1  # something else, to see the highlight come back
    synapses = panel.synapse_table
    _click_row(synapses.view, 1)
    synapse = synapses.current_synapse()
    assert synapse == synapses.visible_ids()[1]
    at = store.synapse_location(synapse)
    _assert_view_at(viewer, at.as_tuple())
    assert labels.selected_label == neuron and labels.show_selected_label
    zoom = viewer.scene.camera.zoom
    viewer.scene.camera.zoom = zoom * 2  # the user zooms in: later jumps keep it
    _click_row(synapses.view, 0)
    assert np.isclose(viewer.scene.camera.zoom, zoom * 2)
    _assert_view_at(viewer, store.synapse_location(synapses.visible_ids()[0]).as_tuple())


def test_review_keys_step_and_mark_synapses(viewer, panel, store):
    neuron = _busiest_big_neuron(store)
    panel.select_neuron(neuron)
    _process()
    order = panel.synapse_table.visible_ids()
    assert len(order) >= 3
    labels = viewer.layers["neurons"]
    viewer.layers.selection.active = labels  # a Labels layer's own keys must not interfere
    overall_before = panel.overall_progress.value()
    _press(viewer, Qt.Key.Key_Period)
    assert panel.current_synapse() == order[0]
    _assert_view_at(viewer, store.synapse_location(order[0]).as_tuple())
    _press(viewer, Qt.Key.Key_Period)
    assert panel.current_synapse() == order[1]
    _press(viewer, Qt.Key.Key_Comma)
    assert panel.current_synapse() == order[0]
    _press(viewer, Qt.Key.Key_K)  # verify, then move on
    assert store.synapse(order[0])["status"] == "verified"
    assert store.synapse(order[0])["reviewer"] == panel.reviewer
    assert panel.current_synapse() == order[1]
    value = panel.selected_progress.value()
    assert value == round(1000 / len(order))
    assert f"1 / {len(order)} reviewed" in panel.selected_progress.text()
    _press(viewer, Qt.Key.Key_J)  # reject
    assert store.synapse(order[1])["status"] == "rejected"
    assert panel.current_synapse() == order[2]
    assert panel.selected_progress.value() > value
    assert panel.overall_progress.value() > overall_before
    assert store.review_progress().reviewed == 2
    assert "2 / " in panel.overall_progress.text()
    _press(viewer, Qt.Key.Key_Comma)
    _press(viewer, Qt.Key.Key_U)  # back to unreviewed
    assert store.synapse(order[1])["status"] == "unreviewed"
    assert labels.visible and labels.selected_label == neuron, "no napari key fired"
    statuses = panel.synapse_table.model.frame.set_index("id")["status"]
    assert statuses[np.uint64(order[0])] == "verified"
    panel.select_synapse(order[0])  # the overlay's outlines show the stored status
    _process()
    features = viewer.layers[OVERLAY_LAYER_NAME].features
    for synapse, status in zip(features["synapse"], features["status"]):
        assert store.synapse(int(synapse))["status"] == status
    assert "verified" in set(features["status"])


def test_review_keys_are_free_in_napari_and_unbound_on_close(viewer, store):
    from napari.components import ViewerModel
    from napari.layers import Image, Labels, Points, Shapes, Surface, Tracks, Vectors
    from napari.utils.key_bindings import coerce_keybinding

    ours = {coerce_keybinding(k) for k in REVIEW_KEYS.values()}
    for owner in (ViewerModel, Image, Labels, Points, Shapes, Surface, Tracks, Vectors):
        taken = {coerce_keybinding(k) for k in owner.class_keymap}
        assert not ours & taken, f"{owner.__name__} already uses {ours & taken}"
    panel = attach_annotations(viewer, store)
    assert ours <= {coerce_keybinding(k) for k in viewer.keymap}
    assert OVERLAY_LAYER_NAME in viewer.layers
    viewer.window.remove_dock_widget(panel)  # napari's own close path
    _process()
    assert not ours & {coerce_keybinding(k) for k in viewer.keymap}
    assert OVERLAY_LAYER_NAME not in viewer.layers


def test_bookmarks_persist_across_a_reopened_store_and_a_new_panel(viewer, store_path, notes):
    queue, prompt = notes
    store = AnnotationStore.open(store_path, create=False)
    panel = attach_annotations(viewer, store, note_prompt=prompt)
    go_to(viewer, (200.0, 700.0, 900.0))
    _process()
    queue.append("odd membrane")
    _press(viewer, Qt.Key.Key_B, Qt.KeyboardModifier.ShiftModifier)
    assert panel.bookmark_table.model.rowCount() == 1
    queue.append(None)  # a cancelled prompt adds nothing
    panel.bookmark_table.add_button.click()
    assert panel.bookmark_table.model.rowCount() == 1
    viewer.window.remove_dock_widget(panel)
    store.close()
    reopened = AnnotationStore.open(store_path, create=False)
    try:
        again = attach_annotations(viewer, reopened, note_prompt=prompt)
        table = again.bookmark_table
        assert table.model.rowCount() == 1
        assert table.model.value(0, "note") == "odd membrane"
        z = viewer.dims.point[0]  # the slider snaps to a section
        assert (table.model.value(0, "y"), table.model.value(0, "x")) == (700.0, 900.0)
        assert table.model.value(0, "z") == z
        go_to(viewer, (0.0, 100.0, 100.0))
        table.view.selectRow(0)
        table.jump_button.click()
        _process()
        _assert_view_at(viewer, (z, 700.0, 900.0))
        again.detach()
    finally:
        reopened.close()


def test_the_points_layer_holds_only_synapses_near_the_view(viewer, panel, store, qtbot):
    overlay = panel.navigator.overlay
    layer = viewer.layers[OVERLAY_LAYER_NAME]
    all_synapses = store.synapses(include_self=True)
    first = all_synapses.iloc[0]
    go_to(viewer, (first["z"], first["y"], first["x"]), zoom=2.0)  # ~300 nm across
    queries = overlay.queries
    qtbot.waitUntil(lambda: overlay.queries > queries, timeout=3000)
    box = view_box(viewer, margin=overlay.margin)
    inside = all_synapses[
        np.all(
            [
                (all_synapses[a] >= lo) & (all_synapses[a] < hi)
                for a, lo, hi in zip("zyx", box.start, box.stop)
            ],
            axis=0,
        )
    ]
    shown = {int(i) for i in layer.features["synapse"]}
    assert shown == {int(i) for i in inside["id"]}
    assert 0 < len(shown) < len(all_synapses)
    assert len(layer.data) == 2 * len(shown)
    pre = layer.features["site"] == "pre"
    assert np.allclose(
        layer.data[pre.to_numpy()][0] * RES, inside[["pre_z", "pre_y", "pre_x"]].iloc[0]
    )
    far = all_synapses.iloc[
        np.argmax(np.hypot(all_synapses["y"] - first["y"], all_synapses["x"] - first["x"]))
    ]
    queries = overlay.queries
    viewer.dims.set_point(0, float(far["z"]))
    viewer.scene.camera.center = (float(far["y"]), float(far["x"]))
    qtbot.waitUntil(lambda: overlay.queries > queries, timeout=3000)
    moved = {int(i) for i in layer.features["synapse"]}
    assert moved != shown and int(far["id"]) in moved


def test_panel_from_the_plugin_menu_opens_a_database(viewer, store_path, tmp_path):
    dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-connecto", "Synapse and neuron tables"
    )
    try:
        assert isinstance(widget, AnnotationPanel)
        assert widget.store is None
        assert widget.neuron_table.model.rowCount() == 0
        assert not widget.open_store(str(tmp_path / "missing.db"))
        assert "Cannot open" in widget.message_label.text()
        widget.path_prompt = lambda parent: store_path
        widget.open_button.click()
        assert widget.store is not None
        assert widget.neuron_table.model.rowCount() == widget.store.count_neurons() > 0
        neuron = _busiest_big_neuron(widget.store)
        with warnings.catch_warnings():  # napari hands plugins a public-only proxy viewer
            warnings.simplefilter("error", FutureWarning)
            assert widget.select_neuron(neuron)
            _process()
            _press(viewer, Qt.Key.Key_Period)
        assert viewer.layers["neurons"].selected_label == neuron
        assert widget.current_synapse() == widget.synapse_table.visible_ids()[0]
        empty = AnnotationStore.open(tmp_path / "empty.db")
        widget.set_store(empty)  # closes the store the panel opened itself
        assert widget.neuron_table.model.rowCount() == 0
        assert widget.go_to_id("12") is None
        assert "No neuron or synapse 12" in widget.message_label.text()
        assert widget.review("verified") == 0 and widget.next_synapse() is None
        empty.close()
    finally:
        widget.detach()


def test_go_to_id_finds_neurons_and_synapses(viewer, panel, store):
    neuron = _busiest_big_neuron(store)
    assert panel.go_to_id(str(neuron)) == "neuron"
    assert panel.selected_neurons() == [neuron]
    synapse = int(store.synapses_of(neuron)["id"].iloc[-1])
    panel.neuron_table.view.clearSelection()
    assert panel.go_to_id(str(synapse)) == "synapse"
    assert panel.current_synapse() == synapse
    _assert_view_at(viewer, store.synapse_location(synapse).as_tuple())
    assert panel.go_to_id("not a number") is None


def test_screenshot_of_the_docked_panel(viewer, panel, store):
    neuron = _busiest_big_neuron(store)
    panel.select_neuron(neuron)
    _process()
    panel.next_synapse()
    panel.review("verified")
    _process(20)
    QTest.qWait(300)  # the overlay's debounce
    _process(5)
    viewer.screenshot(SCREENSHOT, canvas_only=False, flash=False)
    assert os.path.getsize(SCREENSHOT) > 10_000


def test_closing_the_viewer_with_the_panel_docked(make_napari_viewer, sample, store, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.add_labels(sample[0].segmentation, scale=RESOLUTION, name="neurons")
    panel = attach_annotations(viewer, store)
    overlay = panel.navigator.overlay
    destroyed = []
    panel.destroyed.connect(lambda *_: destroyed.append(True))
    viewer.scene.camera.center = (300.0, 300.0)  # starts the overlay's debounce timer
    queries = overlay.queries
    viewer.close()
    qtbot.waitUntil(lambda: bool(destroyed), timeout=3000)
    qtbot.wait(2 * 150)
    assert overlay.queries == queries, "no query after the window is gone"
    assert not set(REVIEW_KEYS.values()) & {str(k) for k in viewer.keymap}


def test_stepping_prefetches_the_next_synapses(viewer, panel, store, monkeypatch):
    from napari_connecto.viewer.streaming import controller_for

    calls = []
    monkeypatch.setattr(
        controller_for(viewer), "prefetch_locations", lambda p: calls.append(p) or len(p)
    )
    panel.select_neuron(_busiest_big_neuron(store))
    _process()
    order = panel.synapse_table.visible_ids()
    _press(viewer, Qt.Key.Key_Period)
    ahead = [store.synapse_location(s).as_tuple() for s in order[1:4]]
    assert np.allclose(calls[-1], ahead)
