"""The objects' menu actions in a real viewer: listed in napari's menus, and working."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtWidgets import QMenu

from napari_connecto.errors import UnsupportedEncodingError
from napari_connecto.objects import mesh_io
from napari_connecto.objects.mesh_io import read_mesh
from napari_connecto.viewer.launch import add_sources
from napari_connecto.viewer.object_actions import export_mesh_dialog

pytestmark = pytest.mark.gui

SEGMENT = 2**60 + 5  # the ome_dataset's one segment: voxels [:, 32:96, 32:96]


def _menu_texts(menu: QMenu) -> list[str]:
    texts = []
    for action in menu.actions():
        texts.append(action.text().replace("&", ""))
        if action.menu() is not None:
            texts += _menu_texts(action.menu())
    return texts


def test_menus_list_the_actions_and_meshes_show_from_the_menu(
    make_napari_viewer, ome_dataset, qtbot, tmp_path, monkeypatch
):
    from napari._app_model import get_app_model

    path, _image, _labels = ome_dataset
    viewer = make_napari_viewer()
    layers = add_sources(viewer, [path])
    labels = next(lay for lay in layers if lay._type_string == "labels")
    menubar = viewer.window._qt_window.menuBar()
    texts = [t for a in menubar.actions() if a.menu() for t in _menu_texts(a.menu())]
    for title in (
        "Export view as Neuroglancer state/URL...",
        "Open Neuroglancer state/URL...",
        "Export region on screen (TIFF/PNG/GIF)...",
        "Screenshot with scale bar...",
        "Import SWC skeleton...",
        "Segment meshes (Ctrl+click a segment, or select neurons)",
        "Show skeleton of the selected segment",
    ):
        assert any(title in t for t in texts), title

    labels.selected_label = SEGMENT
    viewer.layers.selection.active = labels
    get_app_model().commands.execute_command("napari-connecto.enable_meshes").result()
    qtbot.waitUntil(lambda: f"mesh {SEGMENT}" in viewer.layers, timeout=30000)
    surface = viewer.layers[f"mesh {SEGMENT}"]
    vertices = np.asarray(surface.data[0])
    # the segment spans y, x voxels 32..95 at 4 nm (translate 40, 20): within half a voxel
    assert vertices[:, 1].min() == pytest.approx(40 + 32 * 4 - 2, abs=0.01)
    assert vertices[:, 2].max() == pytest.approx(20 + 95 * 4 + 2, abs=0.01)

    writers = []
    real_write = mesh_io.write_mesh

    def recording_write(*args, **kwargs):
        writers.append(threading.current_thread())
        return real_write(*args, **kwargs)

    monkeypatch.setattr(mesh_io, "write_mesh", recording_write)
    future = export_mesh_dialog(viewer, str(tmp_path / "seg.ply"))
    qtbot.waitUntil(future.done, timeout=30000)
    written = future.result()
    assert writers and writers[0] is not threading.main_thread()  # the viewer never waits
    assert f"written to {written.name}" in viewer.status
    mesh = read_mesh(written)
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(vertices, axis=0), atol=1e-3)

    failing = export_mesh_dialog(viewer, str(tmp_path / "seg.stl"))  # not a mesh format we write
    qtbot.waitUntil(failing.done, timeout=30000)
    assert isinstance(failing.exception(), UnsupportedEncodingError)
    assert "no mesh written" in viewer.status and not (tmp_path / "seg.stl").exists()


def test_the_skeleton_action_reports_a_segmentation_without_skeletons(
    make_napari_viewer, ome_dataset, qtbot, caplog
):
    from napari._app_model import get_app_model

    path, _image, _labels = ome_dataset
    viewer = make_napari_viewer()
    add_sources(viewer, [path])
    worker = get_app_model().commands.execute_command("napari-connecto.show_skeleton").result()
    qtbot.waitUntil(lambda: "no skeleton for segment" in caplog.text, timeout=30000)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    assert "labels/cells/info" in caplog.text  # the file it looked for is named
    assert not any("skeleton" in lay.name for lay in viewer.layers)
