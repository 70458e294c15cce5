"""Neuroglancer states in a real viewer: export the view, clear it, import it, same picture."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from qtpy.QtWidgets import QApplication

import napari_connecto as nc
from napari_connecto.geometry import Vec3
from napari_connecto.interop.ngstate import (
    LayerState,
    SynapseAnnotation,
    ViewState,
    to_ng_state,
    validate_state,
)
from napari_connecto.viewer.launch import go_to
from napari_connecto.viewer.ngstate import (
    POST_COLOR,
    PRE_COLOR,
    capture_view_state,
    export_ng_state,
    export_ng_state_dialog,
    open_ng_state,
    open_ng_state_dialog,
)
from napari_connecto.viewer.streaming import stream_of, wait_until_loaded
from napari_connecto.volume.processors import RemapIds

pytestmark = pytest.mark.gui

CELL = 2**60 + 5
AT = (480.0, 300.0, 200.0)  # z index 2, y index 65, x index 45 of em.zarr (translated)
ZOOM = 2.0


def _settled_shot(viewer) -> np.ndarray:
    for _ in range(5):
        QApplication.processEvents()
    assert wait_until_loaded(viewer, 60)
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)


def _synapse_points(viewer):
    """A points layer like the synapse overlay's: one synapse, pre and post sites (nm)."""
    features = pd.DataFrame(
        {"synapse": np.array([77, 77], np.uint64), "site": ["pre", "post"], "status": ["", ""]}
    )
    data = np.array([[480.0, 290.0, 190.0], [480.0, 320.0, 230.0]])
    return viewer.add_points(
        data, features=features, name="synapses", size=48.0, border_color="white",
        face_color=[PRE_COLOR, POST_COLOR], units=("nm", "nm", "nm"),
    )  # fmt: skip


@pytest.fixture
def shown(make_napari_viewer, ome_dataset):
    path, _, _ = ome_dataset
    viewer = make_napari_viewer(show=True)
    nc.view(path, viewer=viewer)
    cells = viewer.layers["cells"]
    cells.selected_label = CELL
    cells.show_selected_label = True
    cells.opacity = 0.6
    _synapse_points(viewer)
    go_to(viewer, AT, zoom=ZOOM)
    return viewer


def test_export_clear_import_shows_the_same_view(shown, tmp_path):
    viewer = shown
    before = _settled_shot(viewer)
    viewer.screenshot("/tmp/ngstate_original.png", canvas_only=True, flash=False)
    result, url = export_ng_state(viewer, tmp_path / "state.json")
    state = json.loads((tmp_path / "state.json").read_text())
    validate_state(state)
    assert state == result.state and url.endswith(result.url().split("/#!", 1)[1])
    assert [(lay["type"], lay["name"]) for lay in state["layers"]] == [
        ("image", "em.zarr"), ("segmentation", "cells"), ("annotation", "synapses"),
    ]  # fmt: skip
    assert state["layers"][1]["segments"] == [str(CELL)]
    # OME-Zarr: Neuroglancer puts voxel centres at translation / scale + index.
    assert state["position"] == pytest.approx([20 / 4 + 45, 40 / 4 + 65, 400 / 40 + 2])
    (line,) = state["layers"][2]["annotations"]
    assert line["type"] == "line" and line["id"] == "77"

    viewer.layers.clear()
    viewer.scene.camera.center, viewer.scene.camera.zoom = (0.0, 0.0), 0.1
    open_ng_state(viewer, str(tmp_path / "state.json"))
    assert [(type(lay).__name__, lay.name) for lay in viewer.layers] == [
        ("Image", "em.zarr"), ("Labels", "cells"), ("Points", "synapses"),
    ]  # fmt: skip
    cells = viewer.layers["cells"]
    assert cells.selected_label == CELL and cells.show_selected_label
    assert cells.opacity == pytest.approx(0.6)
    assert viewer.dims.point[0] == pytest.approx(AT[0])
    assert viewer.scene.camera.center[-2:] == pytest.approx(AT[1:])
    assert viewer.scene.camera.zoom == pytest.approx(ZOOM)
    points = viewer.layers["synapses"]
    np.testing.assert_allclose(points.data, [[480.0, 290.0, 190.0], [480.0, 320.0, 230.0]])
    assert list(points.features["site"]) == ["pre", "post"]

    after = _settled_shot(viewer)
    viewer.screenshot(str(tmp_path / "after.png"), canvas_only=True, flash=False)
    shutil.copy(tmp_path / "after.png", "/tmp/ngstate_reimported.png")
    assert before.shape == after.shape
    same = (np.abs(before - after).sum(axis=-1) <= 12).mean()
    assert same > 0.98, f"only {same:.1%} of the re-imported view matches the original"
    # The view shows something: grey EM, white EM and the selected cell's colour.
    assert len(np.unique(after.reshape(-1, 3), axis=0)) >= 3


def test_capture_reads_an_explicit_segment_list_and_3d(shown):
    viewer = shown
    viewer.dims.ndisplay = 3
    view = capture_view_state(viewer, segments={"cells": [CELL, 9]})
    assert view.ndisplay == 3
    assert view.layers[1].segments == (CELL, 9)
    assert view.layers[0].source.endswith("em.zarr")


def test_menu_actions_copy_the_url_and_open_it(shown, make_napari_viewer, tmp_path, monkeypatch):
    url = export_ng_state_dialog(shown, path=str(tmp_path / "s.json"))
    assert url is not None and url.startswith("https://neuroglancer-demo.appspot.com/#!")
    assert QApplication.clipboard().text() == url
    other = make_napari_viewer()
    state = open_ng_state_dialog(other, text=url)
    assert state is not None
    assert [lay.name for lay in other.layers] == ["em.zarr", "cells", "synapses"]
    # Cancelling the question opens nothing; a bad paste is a warning, not a crash.
    from qtpy.QtWidgets import QInputDialog

    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("", False))
    assert open_ng_state_dialog(other) is None
    assert open_ng_state_dialog(other, text="https://x.org/#!%7Bbroken") is None
    assert len(other.layers) == 3


def test_cli_opens_a_state_and_saves_a_screenshot(ome_dataset, tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    from napari_connecto.cli import main

    path, _, _ = ome_dataset
    state = tmp_path / "state.json"
    at = ["480", "300", "200"]
    args = ["--at", *at, "--zoom", "2", "--segments", str(CELL), "--out", str(state)]
    assert main(["ng-state", "export", str(path), *args]) == 0
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [sys.executable, "-m", "napari_connecto.cli", "ng-state", "open", str(state),
         "--screenshot", str(shot)],
        capture_output=True, text=True, env=dict(os.environ), timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shutil.copy(shot, "/tmp/ngstate_cli_open.png")
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # Zoomed in (2 px/nm) on x index 45: the EM's grey (60) half fills the left of the
    # canvas, the white half (x index >= 64) the right, both under the selected cell.
    grey = (np.abs(image - 60).sum(axis=-1) < 12).mean()
    white = (image.min(axis=-1) > 245).mean()
    assert grey > 0.05 and white > 0.02, (grey, white)


def test_point_annotations_and_odd_ids_survive_a_round_trip(
    make_napari_viewer, ome_dataset, tmp_path
):
    """POINTs come back as POINTs; an id that is not a number never merges with one that is."""
    path, _, _ = ome_dataset
    line = SynapseAnnotation("77", Vec3(480.0, 290.0, 190.0), Vec3(480.0, 320.0, 230.0))
    named = SynapseAnnotation("cell-body", Vec3(520.0, 100.0, 60.0))  # index 1
    one = SynapseAnnotation("1", Vec3(560.0, 140.0, 100.0))  # a real id 1
    view = ViewState(
        layers=(
            LayerState("em.zarr", "image", str(path)),
            LayerState("synapses", "annotation", annotations=(line, named, one)),
        ),
        position=Vec3(*AT),
        resolution=Vec3(40.0, 4.0, 4.0),
        zoom=ZOOM,
        voxel_shift=0.0,
    )
    first = to_ng_state(view).state
    (tmp_path / "in.json").write_text(json.dumps(first))
    viewer = make_napari_viewer()
    open_ng_state(viewer, str(tmp_path / "in.json"))
    assert len(viewer.layers["synapses"].data) == 4
    result, _ = export_ng_state(viewer, tmp_path / "out.json")
    again = {a["id"]: a for a in result.state["layers"][-1]["annotations"]}
    before = {a["id"]: a for a in first["layers"][-1]["annotations"]}
    assert again.keys() == before.keys() == {"77", "cell-body", "1"}
    for ident, ann in before.items():
        assert again[ident]["type"] == ann["type"]
        for key in ("point", "pointA", "pointB"):
            if key in ann:
                assert again[ident][key] == pytest.approx(ann[key]), (ident, key)


def test_proofread_segments_are_flagged_in_the_exported_state(shown, tmp_path):
    """Segment ids read through a local remap are not what Neuroglancer's source holds."""
    result, _ = export_ng_state(shown, tmp_path / "plain.json")
    assert not any("proofread segments" in w for w in result.warnings)
    stream = stream_of(shown.layers["cells"])
    remap = RemapIds(np.array([CELL], np.uint64), np.array([900], np.uint64))
    stream.volume.volume = stream.volume.volume.with_processors(read=[remap])
    result, _ = export_ng_state(shown, tmp_path / "proofread.json")
    (warning,) = [w for w in result.warnings if "proofread segments" in w]
    assert warning.startswith("cells:") and "Neuroglancer" in warning
