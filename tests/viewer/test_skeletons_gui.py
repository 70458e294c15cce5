"""Skeletons in a real viewer: aligned in nm, click a node to jump there, visible on screen."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QApplication, QWidget

import napari_connecto as nc
from napari_connecto.objects.precomputed_skeletons import read_skeleton
from napari_connecto.objects.skeleton import Skeleton
from napari_connecto.viewer.skeletons import add_skeleton, show_segment_skeleton
from napari_connecto.viewer.streaming import wait_until_loaded

pytestmark = pytest.mark.gui

ORIGIN = np.array([400.0, 40.0, 20.0])  # the ome_dataset fixture's translation
RES = np.array([40.0, 4.0, 4.0])
INDICES = np.array([[1, 20, 20], [1, 20, 100], [1, 100, 100], [2, 100, 20], [1, 60, 60]])
SCREENSHOT = "/tmp/skeleton_gui_2d.png"
SCREENSHOT_3D = "/tmp/skeleton_gui_3d.png"


def _skeleton() -> Skeleton:
    """Nodes at the centres of voxels INDICES of the ome_dataset volume, a path plus a spur."""
    return Skeleton(
        ORIGIN + INDICES * RES,
        [[0, 1], [1, 2], [2, 3], [2, 4]],
        {"radius": np.full(5, 8.0, np.float32)},
        segment_id=5,
    )


@pytest.fixture
def viewer(make_napari_viewer, ome_dataset):
    path, _, _ = ome_dataset
    viewer = make_napari_viewer(show=True)
    nc.view(path, viewer=viewer)
    viewer.layers["cells"].visible = False
    return viewer


def test_layers_hold_the_nm_positions(viewer) -> None:
    sk = _skeleton()
    ctl = add_skeleton(viewer, sk, color="red")
    assert ctl.nodes.name == "skeleton 5" and ctl.edges.name == "skeleton 5 edges"
    np.testing.assert_allclose(ctl.nodes.scale, viewer.layers[0].scale)
    world = np.array([ctl.nodes.data_to_world(p) for p in ctl.nodes.data])
    np.testing.assert_allclose(world, sk.vertices, rtol=1e-6)
    # every edge is drawn from both ends, each from one node to the other
    starts = np.array([ctl.edges.data_to_world(v[0]) for v in ctl.edges.data])
    ends = np.array([ctl.edges.data_to_world(v[0] + v[1]) for v in ctl.edges.data])
    pairs = {tuple(sorted((tuple(a), tuple(b)))) for a, b in zip(starts, ends, strict=True)}
    expected = {tuple(sorted((tuple(sk.vertices[a]), tuple(sk.vertices[b])))) for a, b in sk.edges}
    assert len(ctl.edges.data) == 2 * len(sk.edges)
    assert {tuple(np.round(np.ravel(p), 3)) for p in pairs} == {
        tuple(np.round(np.ravel(p), 3)) for p in expected
    }
    assert ctl.nodes.features["radius_nm"].tolist() == [8.0] * 5
    viewer.dims.ndisplay = 3
    ctl.jump_to(3)
    np.testing.assert_allclose(viewer.scene.camera.center, sk.vertices[3], atol=1e-3)


def _canvas_widget() -> QWidget:
    """The vispy canvas' Qt widget."""
    found = [
        w
        for w in QApplication.allWidgets()
        if type(w).__name__ == "CanvasBackendDesktop" and w.isVisible()
    ]
    assert len(found) == 1
    return found[0]


def _screen_pixel(viewer, widget: QWidget, world_yx) -> QPoint:
    """Canvas pixel of a world (y, x) position in the 2-D view."""
    cy, cx = viewer.scene.camera.center[-2:]
    zoom = viewer.scene.camera.zoom
    x = widget.width() / 2 + (world_yx[1] - cx) * zoom
    y = widget.height() / 2 + (world_yx[0] - cy) * zoom
    return QPoint(round(x), round(y))


def test_clicking_a_node_jumps_there(viewer, qtbot) -> None:
    sk = _skeleton()
    ctl = add_skeleton(viewer, sk)
    target = sk.vertices[1]
    viewer.dims.set_point(0, float(target[0]))
    # view centred on node 0, zoomed so that node 1 is on screen
    viewer.scene.camera.center = tuple(sk.vertices[0][1:])
    viewer.scene.camera.zoom = 0.8
    zoom = viewer.scene.camera.zoom
    widget = _canvas_widget()
    qtbot.wait(50)
    pixel = _screen_pixel(viewer, widget, target[1:])
    assert 0 < pixel.x() < widget.width() and 0 < pixel.y() < widget.height()
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=pixel)
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=pixel)
    qtbot.waitUntil(lambda: ctl.jumps == [1], timeout=3000)
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], target[1:], atol=1e-3)
    assert viewer.dims.point[0] == pytest.approx(target[0])
    assert viewer.scene.camera.zoom == pytest.approx(zoom)  # the zoom is kept
    assert "skeleton node 1" in viewer.status
    # a click beside every node does nothing
    empty = _screen_pixel(viewer, widget, target[1:] + 100)
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=empty)
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=empty)
    qtbot.wait(50)
    assert ctl.jumps == [1]


def _red(shot: np.ndarray) -> np.ndarray:
    rgb = shot[..., :3].astype(int)
    return (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)


def test_screenshot_shows_the_skeleton_where_it_is(viewer) -> None:
    from imageio.v3 import imwrite

    sk = _skeleton()
    add_skeleton(viewer, sk, color="red")
    viewer.dims.set_point(0, float(sk.vertices[0][0]))
    viewer.reset_view()
    assert wait_until_loaded(viewer, 30)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    imwrite(SCREENSHOT, shot)
    red = _red(shot)
    assert red.any(), "no skeleton colour on screen"
    gray = shot[..., :3].astype(float).mean(axis=-1)
    rows, cols = np.nonzero(gray > 20)
    top, left = rows.min(), cols.min()
    height, width = rows.max() - top + 1, cols.max() - left + 1

    def red_near(r: float, c: float) -> bool:
        """Red within 3 screen pixels of the centre of image pixel (r, c)."""
        y = round(top + (r + 0.5) * height / 128)
        x = round(left + (c + 0.5) * width / 128)
        return bool(red[y - 3 : y + 4, x - 3 : x + 4].any())

    for r, c in ((20, 20), (20, 100), (100, 100), (60, 60)):  # the nodes of section 1
        assert red_near(r, c), f"no skeleton at image pixel {(r, c)}"
    assert red_near(20, 60) and red_near(60, 100) and red_near(80, 80)  # along edges
    assert red_near(100, 60)  # edge 2-3, drawn from node 2 towards node 3 (section 2)
    for r, c in ((60, 20), (100, 120), (30, 30), (5, 5), (120, 60)):  # off the skeleton
        assert not red_near(r, c), f"skeleton colour at image pixel {(r, c)}"
    # in 3-D the whole skeleton is drawn, node 3 of section 2 included
    viewer.layers[0].visible = False
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    shot3 = viewer.screenshot(canvas_only=True, flash=False)
    imwrite(SCREENSHOT_3D, shot3)
    red3 = _red(shot3)
    assert red3.sum() > red.sum() // 2


def test_show_segment_skeleton_loads_off_thread(make_napari_viewer, qtbot, tmp_path) -> None:
    from tests.objects.test_skeleton_precomputed import _skeletons, _write_volume

    root = tmp_path / "seg"
    vol = _write_volume(root)
    vol.skeleton.meta.commit_info()
    vol.skeleton.upload(_skeletons())
    viewer = make_napari_viewer()
    viewer.open(f"precomputed://file://{root}", plugin="napari-connecto")
    done: list = []
    worker = show_segment_skeleton(viewer, root, 7, color="cyan", on_done=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=10000)
    ctl = done[0]
    assert ctl is not None and ctl.nodes in viewer.layers
    expected = read_skeleton(root, 7).vertices
    world = np.array([ctl.nodes.data_to_world(p) for p in ctl.nodes.data])
    np.testing.assert_allclose(world, expected, rtol=1e-6)
    np.testing.assert_allclose(ctl.nodes.scale, viewer.layers[0].scale)
    worker.quit()
    # a segment without a skeleton: no layer, a message in the status bar
    done.clear()
    show_segment_skeleton(viewer, root, 424242, on_done=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=10000)
    assert done == [None]
    assert "424242" in viewer.status
    assert [layer.name for layer in viewer.layers].count("skeleton 7") == 1


def test_nodes_are_drawn_at_their_radius(viewer) -> None:
    """A node of radius 60 nm is drawn three times as wide as one of 20 nm."""
    from imageio.v3 import imwrite

    sk = Skeleton(
        ORIGIN + np.array([[1, 40, 30], [1, 40, 90], [1, 90, 60]]) * RES,
        [[0, 1]],
        {"radius": np.array([20.0, 60.0, np.nan], np.float32)},  # the last has none
        segment_id=7,
    )
    viewer.layers[0].visible = False
    ctl = add_skeleton(viewer, sk, color="red")
    ctl.edges.visible = False
    viewer.dims.set_point(0, float(sk.vertices[0][0]))
    viewer.reset_view()
    assert wait_until_loaded(viewer, 30)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    imwrite("/tmp/skeleton_gui_radius.png", shot)
    red = _red(shot)
    zoom = viewer.scene.camera.zoom  # screen pixels per nm

    def width_at(vertex: int) -> int:
        """Red pixels in one run across the node's centre on screen."""
        cy, cx = viewer.scene.camera.center[-2:]
        y = round(shot.shape[0] / 2 + (sk.vertices[vertex][1] - cy) * zoom)
        x = round(shot.shape[1] / 2 + (sk.vertices[vertex][2] - cx) * zoom)
        row = red[y]
        assert row[x], f"node {vertex} is not drawn at its position"
        left, right = x, x
        while left > 0 and row[left - 1]:
            left -= 1
        while right + 1 < row.size and row[right + 1]:
            right += 1
        return right - left + 1

    small, large, plain = width_at(0), width_at(1), width_at(2)
    assert small == pytest.approx(40 * zoom, abs=3)  # diameter 40 nm
    assert large == pytest.approx(120 * zoom, abs=3)
    assert 3 <= plain <= 26  # no radius: the default marker size
