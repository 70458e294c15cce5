"""Merge, cleave and undo of a DVID labelmap in a real viewer: the server's labels show."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from napari_connecto._qt.proofreading_panel import ProofreadingPanel
from napari_connecto.testing.dvid_server import DvidServer
from napari_connecto.viewer.launch import add_sources, go_to
from napari_connecto.viewer.streaming import wait_until_loaded

pytestmark = pytest.mark.gui

SHAPE = (64, 128, 192)
RES = 8.0


@pytest.fixture
def labelmap():
    z, y, x = np.indices(SHAPE)
    svs = (x // 64 + 1).astype(np.uint64)  # supervoxels 1, 2, 3 side by side
    with DvidServer() as server:
        uuid = server.create_repo("edits", "")
        server.create_instance(uuid, "labelmap", "seg", MaxDownresLevel=1)
        server.put_voxels(uuid, "seg", (0, 0, 0), svs)
        yield f"dvid://{server.url.removeprefix('http://')}/{uuid}/seg"


def _settle(viewer, session) -> None:
    session.wait_idle()
    assert session.proofreader.commit(timeout=30)
    session.wait_idle()
    for _ in range(30):
        QApplication.processEvents()
        time.sleep(0.01)
    assert wait_until_loaded(viewer, timeout=30)
    QApplication.processEvents()


def _shown(layer, voxel_zyx) -> int:
    value = layer.get_value(tuple(np.asarray(voxel_zyx) * RES), world=True)
    return int(value[1] if isinstance(value, tuple) else value)


def _proofread(make_napari_viewer, labelmap, tmp_path):
    """A viewer on the labelmap, zoomed onto its three segments, with proofreading started."""
    viewer = make_napari_viewer(show=True)
    (seg,) = add_sources(viewer, [labelmap])
    seg.opacity = 1.0
    go_to(viewer, (32 * RES, 64 * RES, 96 * RES))
    viewer.scene.camera.zoom = 600 / (192 * RES)
    panel = ProofreadingPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Proofreading")
    assert panel.start(str(tmp_path / "edits.db"), seg, confirm=lambda text: True)
    return viewer, seg, panel


def test_merge_and_cleave_on_dvid_show_in_the_viewer(make_napari_viewer, labelmap, tmp_path):
    viewer, seg, panel = _proofread(make_napari_viewer, labelmap, tmp_path)
    session = panel.session
    at1, at2, at3 = (32, 64, 30), (32, 64, 100), (32, 64, 160)
    _settle(viewer, session)
    assert [_shown(seg, p) for p in (at1, at2, at3)] == [1, 2, 3]
    before = viewer.screenshot(canvas_only=True, flash=False)

    session.merge(1, 2)
    _settle(viewer, session)
    assert [_shown(seg, p) for p in (at1, at2, at3)] == [1, 1, 3]  # the server merged them
    assert session.proofreader.history().iloc[0]["writeback"] == "done"

    session.cleave(1, [2])  # split mode's Finish: cut supervoxel 2 off again
    _settle(viewer, session)
    new = _shown(seg, at2)
    assert new not in (1, 2, 3)
    assert _shown(seg, at1) == 1

    session.undo()
    session.undo()
    _settle(viewer, session)
    assert [_shown(seg, p) for p in (at1, at2, at3)] == [1, 2, 3]  # the ids of before
    after = viewer.screenshot(canvas_only=True, flash=False)
    np.testing.assert_array_equal(after, before)
    panel.stop()


def test_painting_on_dvid_through_the_canvas_writes_the_server(
    make_napari_viewer, labelmap, tmp_path, qtbot
):
    import napari_connecto as nc
    from napari_connecto.viewer.paint_canvas import PaintCanvas

    viewer, seg, panel = _proofread(make_napari_viewer, labelmap, tmp_path)
    assert panel.paint_button.isEnabled()
    session = panel.session
    _settle(viewer, session)
    PaintCanvas.open(session, depth=1).result(10)
    qtbot.waitUntil(lambda: session.canvas is not None, timeout=10000)
    canvas = session.canvas
    label = int(canvas.layer.selected_label)  # a new id, reserved on the server
    assert label > 3
    z = 32 - canvas.start[0]
    canvas.layer.brush_size = 10
    for x in (40, 60, 80):  # across supervoxels 1 and 2 and the block edge at x = 64
        canvas.layer.paint((z, 64 - canvas.start[1], x - canvas.start[2]), label)
    _settle(viewer, session)
    for _ in range(40):  # the sync timer journals anything napari did not announce
        QApplication.processEvents()
        time.sleep(0.02)
    _settle(viewer, session)
    assert not session.errors, session.errors
    painted = np.count_nonzero(np.asarray(canvas.layer.data) == label)
    assert painted > 100
    labels = nc.open_volume(labelmap).read_voxels(0, (0, 0, 0), SHAPE)
    svs = nc.open_volume(labelmap + "?supervoxels=true").read_voxels(0, (0, 0, 0), SHAPE)
    assert np.count_nonzero(labels == label) == painted  # the server reads the stroke
    assert np.count_nonzero(svs == label) == painted  # written as supervoxel `label`
    canvas.close()
    _settle(viewer, session)
    assert _shown(seg, (32, 64, 60)) == label
    session.undo()
    session.undo()
    session.undo()
    _settle(viewer, session)
    assert not np.any(nc.open_volume(labelmap).read_voxels(0, (0, 0, 0), SHAPE) == label)
    panel.stop()
