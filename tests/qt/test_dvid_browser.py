"""The DVID browser docked in a real viewer, against the loopback DVID test server.

The server holds one repository: a committed root node (note "first") and an open child
where two supervoxels of the labelmap are merged. The browser must list both nodes as a
DAG, show instance details fetched in the background, and open instances at the child
through the streaming path with exact voxels; no request may run on the main thread.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_connecto._qt import dvid_browser as browser_module
from napari_connecto._qt.dvid_browser import ENV_SERVER, ERROR_STYLE, DvidBrowser
from napari_connecto._qt.dvid_tree import (
    instance_html,
    instance_source,
    parse_repo,
    server_address,
)
from napari_connecto.dvid import DvidClient
from napari_connecto.errors import RemoteError, ServerBusyError
from napari_connecto.remote.http import HttpClient
from napari_connecto.testing.dvid_server import DvidServer
from napari_connecto.viewer.streaming import controller_for, wait_until_loaded

SCREENSHOT = os.environ.get("CONNECTO_DVID_BROWSER_PNG", "/tmp/dvid_browser.png")
SHAPE = (64, 64, 64)
VOXEL_NM = 8.0
A = 2**63 + 5  # supervoxel ids above 2**63: uint64 all the way
B = 2**62 + 9
BAD = "Bad API call (no such data instance)"
THROTTLED = "Server already running 1 throttled operations (max = 1)"
SYNAPSES = [
    {"Pos": [10, 20, 30], "Kind": "PreSyn", "Tags": [], "Prop": {}, "Rels": []},
    {"Pos": [40, 50, 12], "Kind": "PostSyn", "Tags": [], "Prop": {}, "Rels": []},
]


def _gray() -> np.ndarray:
    return np.random.default_rng(7).integers(1, 256, SHAPE, dtype=np.uint8)


def _supervoxels() -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint64)
    seg[:, :32, :] = A
    seg[:, 32:, 32:] = B  # [:, 32:, :32] stays background
    return seg


@pytest.fixture(scope="module")
def dvid():
    """The server, the root UUID (committed) and the child UUID (open, A and B merged)."""
    with DvidServer() as server:
        root = server.create_repo("demo", "browser test")
        server.create_instance(root, "uint8blk", "grayscale")
        server.create_instance(root, "labelmap", "segmentation", MaxDownresLevel=1)
        server.create_instance(root, "annotation", "synapses", sync="segmentation")
        server.create_instance(root, "keyvalue", "notes")
        server.put_voxels(root, "grayscale", (0, 0, 0), _gray())
        server.put_voxels(root, "segmentation", (0, 0, 0), _supervoxels())
        server.put_elements(root, "synapses", SYNAPSES)
        server.commit(root, note="first")
        child = server.new_version(root)
        server.merge(child, "segmentation", A, [B])
        yield server, root, child


@pytest.fixture
def network_threads(monkeypatch):
    """Whether each HTTP request ran on the main thread."""
    calls: list[bool] = []
    original = HttpClient.request

    def recording(self, *args, **kwargs):
        calls.append(threading.current_thread() is threading.main_thread())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HttpClient, "request", recording)
    return calls


@pytest.fixture
def thread_errors(monkeypatch):
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


def _children(item) -> list:
    return [item.child(i) for i in range(item.childCount())]


def _find(items, text: str):
    found = [it for it in items if it.text(0) == text]
    assert len(found) == 1, f"{text!r} not in {[it.text(0) for it in items]}"
    return found[0]


def _value(layer, zyx) -> int:
    value = layer.get_value(tuple(v * VOXEL_NM for v in zyx), world=True)
    return int(value[1] if isinstance(value, tuple) else value)


def _open(qtbot, viewer, widget, item, name: str, *, double_click: bool):
    before = len(viewer.layers)
    widget.tree.setCurrentItem(item)
    if double_click:
        widget.tree.scrollToItem(item)
        centre = widget.tree.visualItemRect(item).center()
        viewport = widget.tree.viewport()
        qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=centre)  # press, then
        qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=centre)  # the double
    else:
        assert widget.open_button.isEnabled()
        qtbot.mouseClick(widget.open_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(viewer.layers) > before, timeout=10_000)
    assert widget.status_label.styleSheet() != ERROR_STYLE, widget.status_label.text()
    layer = viewer.layers[-1]
    assert layer.name.startswith(name)
    return layer


def _look_at_z(viewer, z: int) -> None:
    viewer.dims.set_point(0, z * VOXEL_NM)
    assert wait_until_loaded(viewer, 20)


def test_browse_the_dag_and_open_instances_at_the_child(
    make_napari_viewer, qtbot, dvid, network_threads, thread_errors
):
    server, root, child = dvid
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-connecto", "DVID browser")
    assert isinstance(widget, DvidBrowser)
    widget.server_edit.setText(server.url.removeprefix("http://"))  # host:port
    qtbot.keyClick(widget.server_edit, Qt.Key.Key_Return)
    assert widget.busy and not widget.connect_button.isEnabled()
    assert widget.status_label.text().startswith("Connecting")
    qtbot.waitUntil(lambda: widget.server is not None, timeout=10_000)
    assert widget.server == server.url
    assert widget.connect_button.isEnabled()
    assert "v1.0.0-napari-connecto-testserver" in widget.server_label.text()
    assert "in-memory" in widget.server_label.text()

    # repo > root node (locked, note as tooltip) > child node (open), instances in folders
    (repo_item,) = _children(widget.tree.invisibleRootItem())
    assert repo_item.text(0) == "demo — browser test"
    assert repo_item.text(2) == root[:8]
    (root_item,) = _children(repo_item)
    assert (root_item.text(0), root_item.text(1), root_item.text(2)) == (
        root[:8],
        "master",
        "locked",
    )
    assert "first" in root_item.toolTip(0)
    root_folder, child_item = _children(root_item)
    assert (child_item.text(0), child_item.text(2)) == (child[:8], "open")
    assert not root_item.icon(0).isNull()
    (child_folder,) = _children(child_item)
    assert child_folder.isExpanded(), "the leaf's instances are shown after connecting"
    listed = {it.text(0): (it.text(1), it.text(2)) for it in _children(child_folder)}
    assert listed == {
        "grayscale": ("uint8blk", "image"),
        "segmentation": ("labelmap", "labels"),
        "synapses": ("annotation", "points"),
        "notes": ("keyvalue", "—"),
    }
    assert root_folder.childCount() == 0
    root_folder.setExpanded(True)  # filled on first expansion
    assert [it.text(0) for it in _children(root_folder)] == list(listed)

    widget.tree.setCurrentItem(root_item)
    assert "first" in widget.details.toPlainText()
    assert "locked" in widget.details.toPlainText()
    assert not widget.open_button.isEnabled()
    widget.tree.setCurrentItem(_find(_children(child_folder), "notes"))
    assert not widget.open_button.isEnabled(), "a keyvalue has nothing to show"

    # details of an instance at the child, fetched in the background
    gray_item = _find(_children(child_folder), "grayscale")
    widget.tree.setCurrentItem(gray_item)
    assert "Loading instance info" in widget.details.toPlainText()
    qtbot.waitUntil(lambda: "Block size" in widget.details.toPlainText(), timeout=10_000)
    details = widget.details.toPlainText()
    assert "32 \u00d7 32 \u00d7 32 voxels" in details
    assert "[0, 0, 0] to [63, 63, 63]" in details
    assert "64 \u00d7 64 \u00d7 64 voxels" in details
    assert child in details

    # double-click: streamed image with the stored voxels
    image = _open(qtbot, viewer, widget, gray_item, "grayscale", double_click=True)
    assert type(image).__name__ == "Image"
    assert image.metadata["connecto_source"] == f"dvid://{server.url[7:]}/{child}/grayscale"
    gray = _gray()
    for z in (5, 40):
        _look_at_z(viewer, z)
        for y, x in ((0, 0), (13, 57), (31, 32), (63, 63), (48, 7)):
            assert _value(image, (z, y, x)) == gray[z, y, x], (z, y, x)

    # labelmap at the child: agglomerated (B merged into A), then supervoxels
    seg_item = _find(_children(child_folder), "segmentation")
    labels = _open(qtbot, viewer, widget, seg_item, "segmentation", double_click=False)
    assert type(labels).__name__ == "Labels"
    widget.supervoxels_check.setChecked(True)
    raw = _open(qtbot, viewer, widget, seg_item, "segmentation", double_click=False)
    assert raw.metadata["connecto_source"].endswith("?supervoxels=true")
    _look_at_z(viewer, 20)
    for zyx, merged, supervoxel in (
        ((20, 10, 10), A, A),
        ((20, 50, 50), A, B),
        ((20, 50, 10), 0, 0),
    ):
        assert _value(labels, zyx) == merged
        assert _value(raw, zyx) == supervoxel

    # annotation: a points layer at the element positions (z, y, x nm)
    points = _open(qtbot, viewer, widget, _find(_children(child_folder), "synapses"), "syn",
                   double_click=True)  # fmt: skip
    assert type(points).__name__ == "Points"
    expected = sorted([e["Pos"][::-1] for e in SYNAPSES])
    got = sorted((np.asarray(points.data) / VOXEL_NM).round().astype(int).tolist())
    assert got == expected

    assert "at " + child[:8] in widget.status_label.text()
    assert network_threads, "no request was recorded"
    assert not any(network_threads), "a request ran on the main thread"
    assert not thread_errors
    viewer.reset_view()
    viewer.layers.selection.active = image
    _look_at_z(viewer, 32)
    widget.tree.setCurrentItem(seg_item)
    qtbot.waitUntil(lambda: "Down-res levels" in widget.details.toPlainText(), timeout=10_000)
    viewer.screenshot(SCREENSHOT, canvas_only=False, flash=False)
    assert os.path.getsize(SCREENSHOT) > 10_000
    controller_for(viewer).close()


def test_errors_are_shown_and_the_widget_stays_usable(
    make_napari_viewer, qtbot, dvid, network_threads, monkeypatch
):
    server, _, _ = dvid
    viewer = make_napari_viewer()
    monkeypatch.setenv(ENV_SERVER, "emdata.example.org:7900")
    widget = DvidBrowser(viewer)
    viewer.window.add_dock_widget(widget, name="DVID browser")
    assert widget.server_edit.text() == "emdata.example.org:7900"
    widget.server_edit.clear()
    qtbot.mouseClick(widget.connect_button, Qt.MouseButton.LeftButton)
    assert widget.status_label.styleSheet() == ERROR_STYLE
    assert "enter a DVID server" in widget.status_label.text()

    widget.connect_server("http://127.0.0.1:9")  # nothing listens on the discard port
    qtbot.waitUntil(lambda: not widget.busy, timeout=20_000)
    assert widget.server is None
    assert widget.status_label.styleSheet() == ERROR_STYLE
    assert widget.status_label.text().startswith("Cannot connect")
    assert "127.0.0.1:9" in widget.status_label.text()
    assert widget.connect_button.isEnabled()
    assert widget.tree.topLevelItemCount() == 0

    widget.connect_server(server.url)
    qtbot.waitUntil(lambda: widget.server is not None, timeout=10_000)
    assert widget.status_label.styleSheet() != ERROR_STYLE
    assert [r.alias for r in widget.repos] == ["demo"]
    assert not any(network_threads)

    # DVID's 400 text for the instance info, a 503 while opening: shown, then usable again
    def refuse(self, uuid, name):
        raise RemoteError(f"{self.server}/api/node/{uuid}/{name}/info", BAD, status=400)

    def busy(source):
        raise ServerBusyError(source, THROTTLED, status=503)

    originals = DvidClient.instance_info, browser_module._fetch_layers
    monkeypatch.setattr(DvidClient, "instance_info", refuse)
    monkeypatch.setattr(browser_module, "_fetch_layers", busy)
    (repo_item,) = _children(widget.tree.invisibleRootItem())
    folder = _children(_children(_children(repo_item)[0])[1])[0]  # the child node's
    gray = _find(_children(folder), "grayscale")
    widget.tree.setCurrentItem(gray)
    qtbot.waitUntil(lambda: "unavailable" in widget.details.toPlainText(), timeout=10_000)
    assert BAD in widget.details.toPlainText()
    assert widget.status_label.styleSheet() == ERROR_STYLE
    assert "HTTP 400" in widget.status_label.text()
    qtbot.mouseClick(widget.open_button, Qt.MouseButton.LeftButton)
    assert not widget.open_button.isEnabled()
    qtbot.waitUntil(widget.open_button.isEnabled, timeout=10_000)
    assert widget.status_label.text().startswith("Cannot open dvid://")
    assert THROTTLED in widget.status_label.text()
    assert len(viewer.layers) == 0
    monkeypatch.setattr(DvidClient, "instance_info", originals[0])
    monkeypatch.setattr(browser_module, "_fetch_layers", originals[1])
    widget.tree.setCurrentItem(folder)
    widget.tree.setCurrentItem(gray)  # selecting it again retries
    qtbot.waitUntil(lambda: "Block size" in widget.details.toPlainText(), timeout=10_000)
    assert not any(network_threads)
    widget.close()


# -- the pure model ---------------------------------------------------------------------------
def _node(uuid: str, version: int, parents=(), children=(), **extra) -> dict:
    return {
        "UUID": uuid,
        "VersionID": version,
        "Branch": extra.get("branch", ""),
        "Note": extra.get("note", ""),
        "Locked": extra.get("locked", True),
        "Parents": list(parents),
        "Children": list(children),
    }


def test_dag_layout_follows_version_ids():
    # root 1 -> 2 (master) and 3 (branch "fix"); 4 merges 2 and 3; 5 names an unknown parent
    doc = {
        "Root": "a" * 32,
        "Alias": "r",
        "DAG": {
            "Nodes": {
                "a" * 32: _node("a" * 32, 1, children=[2, 3]),
                "b" * 32: _node("b" * 32, 2, parents=[1], children=[4]),
                "c" * 32: _node("c" * 32, 3, parents=[1], children=[4], branch="fix"),
                "d" * 32: _node("d" * 32, 4, parents=[2, 3], locked=False, note="merged"),
                "e" * 32: _node("e" * 32, 5, parents=[99]),
            }
        },
        "DataInstances": {"z": {"Base": {"TypeName": "labelmap"}}, "g": {"Base": {}}},
    }
    repo = parse_repo(doc)
    layout = [(n.uuid[0], p[0] if p else None) for n, p in repo.layout()]
    assert layout == [("a", None), ("b", "a"), ("d", "b"), ("c", "a"), ("e", None)]
    merged = repo.node("d" * 32)
    assert merged.parents == ("b" * 32, "c" * 32)
    assert (merged.state, merged.note, merged.branch_name) == ("open", "merged", "master")
    assert repo.node("c" * 32).branch_name == "fix"
    assert [(i.name, i.typename, i.layer_kind) for i in repo.instances] == [
        ("g", "unknown", None),
        ("z", "labelmap", "labels"),
    ]


def test_server_addresses_and_sources():
    assert server_address(" localhost:8000 ") == "http://localhost:8000"
    assert server_address("http://emdata:7900/") == "http://emdata:7900"
    assert server_address("https://dvid.example.org") == "https://dvid.example.org"
    assert server_address("dvid://host:1/abc/grayscale") == "http://host:1"
    for bad in ("", "   ", "ftp://host:1"):
        with pytest.raises(ValueError):
            server_address(bad)
    assert instance_source("http://h:1", "abc", "seg") == "dvid://h:1/abc/seg"
    assert (
        instance_source("http://h:1", "abc", "seg", supervoxels=True)
        == "dvid://h:1/abc/seg?supervoxels=true"
    )


def test_instance_details_escape_and_show_empty_extents():
    repo = parse_repo({"Root": "r" * 32, "DAG": {"Nodes": {"r" * 32: _node("r" * 32, 1)}}})
    node = repo.nodes[0]
    from napari_connecto._qt.dvid_tree import InstanceEntry

    info = {"Base": {"TypeName": "labelmap"}, "Extended": {"MinPoint": None, "MaxPoint": None}}
    html = instance_html(InstanceEntry("<b>x</b>", "labelmap"), node, info)
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "empty (no voxels stored yet)" in html
    assert "unavailable: boom" in instance_html(InstanceEntry("x", "labelmap"), node, error="boom")
