"""A docked browser of a DVID server: repositories, version DAGs and data instances.

Like DVID's web console: connect to ``host:port``; the tree lists each repository with
its version nodes nested parent over child (a padlock for locked nodes, the commit note
as tooltip), and under each node a folder of the repository's data instances. Details of
the selection show below; an instance's block size and extents at that node are fetched
in the background. Double-click an instance (or Open) to add it as a streamed image,
labels or points layer, exactly as File > Open does with ``dvid://host:port/<uuid>/<name>``.

Threading: every network call (server info, repositories, instance info, and opening,
which reads metadata) runs on the widget's thread pool. Each finished future travels to
the main thread through a Qt signal emitted by the worker over a queued connection; only
that slot touches widgets, the viewer or layers. Failures become a red status line.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_connecto._qt.dvid_tree import (
    InstanceEntry,
    NodeEntry,
    RepoEntry,
    instance_html,
    instance_source,
    node_html,
    parse_repos,
    repo_html,
    server_address,
    server_summary,
)
from napari_connecto.dvid.client import DvidClient
from napari_connecto.errors import ConnectoError
from napari_connecto.viewer.streaming import controller_for

if TYPE_CHECKING:
    import napari
    from qtpy.QtGui import QCloseEvent

    from napari_connecto.layers import LayerData

__all__ = ["ENV_SERVER", "DvidBrowser"]

logger = logging.getLogger(__name__)

ENV_SERVER = "NAPARI_CONNECTO_DVID"
"""Environment variable with the server the field starts with."""
WORKERS = 4
"""Threads for network calls (a connect, instance infos and an open may overlap)."""
ERROR_STYLE = "color: #ff3b30;"
MAX_EXPANDED_HEADS = 8
"""Leaf nodes whose instance folder is expanded after connecting."""
MIN_WIDTH = 400
"""The panel's narrowest width in pixels (name, branch and lock state side by side)."""
MAX_NAME_WIDTH = 240
"""Widest the name column grows to fit its contents (wider by dragging)."""
_EXPECTED = (ConnectoError, OSError, ValueError, LookupError, TypeError)
_ROLE = Qt.ItemDataRole.UserRole


@dataclass(frozen=True, slots=True)
class _Ref:
    """What a tree item stands for."""

    kind: str  # "repo" | "node" | "data" | "instance"
    repo: RepoEntry
    node: NodeEntry | None = None
    instance: InstanceEntry | None = None


class _Relay(QObject):
    """Carries ``(task, token, future)`` of finished calls from workers to the main thread."""

    done = Signal(object)


def _padlock(locked: bool) -> QIcon:
    """A 16 px padlock, closed (amber) or open (green), drawn without image files."""
    pixmap = QPixmap(16, 16)
    pixmap.fill(QColor(0, 0, 0, 0))
    color = QColor("#ffb020" if locked else "#34c759")
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(color, 1.6))
    left = 3.0 if locked else 9.0  # an open shackle swings up and to the right
    painter.drawArc(QRectF(left, 1.5, 6, 6), 0, 180 * 16)
    painter.drawLine(QPointF(left, 4.5), QPointF(left, 8))
    painter.drawLine(QPointF(left + 6, 4.5), QPointF(left + 6, 8 if locked else 6))
    painter.setBrush(color)
    painter.drawRoundedRect(QRectF(1.5, 8, 9, 7), 1.5, 1.5)
    painter.end()
    return QIcon(pixmap)


def _fetch_server(server: str) -> tuple[str, dict[str, Any], list[RepoEntry]]:
    """Worker: server info and every repository."""
    client = DvidClient(server)
    info = client.server_info()
    if not isinstance(info, dict):
        raise ValueError(f"server info is not a JSON object: {info!r:.80}")
    return server, info, parse_repos(client.repos())


def _fetch_layers(source: str) -> list[LayerData]:
    """Worker: the layer data of a source (reads its metadata over the network)."""
    from napari_connecto.viewer.layers import napari_layer_data

    return napari_layer_data(source, streaming=True)


class DvidBrowser(QWidget):
    """Browse a DVID server and open its data instances in the viewer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer instances open in (napari injects it).
    parent : QWidget, optional
        Parent widget.

    Attributes
    ----------
    server_edit : QLineEdit
        The server, ``host:port`` or ``http://host:port``; Enter connects.
    connect_button : QPushButton
        Connects (disabled while connecting).
    server_label : QLabel
        DVID version and storage backend of the connected server.
    status_label : QLabel
        What is happening (``Connecting…``, ``Opening…``) or, in red, what failed.
    tree : QTreeWidget
        Repositories > version nodes (children under their parent) > data instances.
    details : QTextBrowser
        Details of the selected repository, node or instance.
    supervoxels_check : QCheckBox
        Open labelmaps as supervoxels (``?supervoxels=true``).
    open_button : QPushButton
        Opens the selected instance at its node.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = napari_viewer
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="connecto-dvid-browser")
        self._relay = _Relay(self)
        self._relay.done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._server: str | None = None
        self._connect_token = 0
        self._busy: set[str] = set()
        self._infos: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._info_pending: set[tuple[str, str, str]] = set()
        self._closed = False
        self._icons = {True: _padlock(True), False: _padlock(False)}
        self._build()
        self.setMinimumWidth(MIN_WIDTH)
        self._update_buttons()

    def _build(self) -> None:
        """Create the controls and lay them out."""
        self.server_edit = QLineEdit(os.environ.get(ENV_SERVER, ""))
        self.server_edit.setPlaceholderText("host:port or http://host:port")
        self.server_edit.returnPressed.connect(self.connect_server)
        self.connect_button = QPushButton("Connect")
        self.connect_button.clicked.connect(lambda *_: self.connect_server())
        self.server_label = QLabel("Not connected")
        self.server_label.setWordWrap(True)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.hide()
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Name", "Branch / type", "State"])
        self.tree.setUniformRowHeights(True)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.tree.currentItemChanged.connect(self._on_current)
        self.tree.itemDoubleClicked.connect(self._on_double_click)
        self.tree.itemExpanded.connect(self._fill_data_folder)
        self.details = QTextBrowser()
        self.details.setOpenLinks(False)
        self.details.setPlaceholderText("Select a repository, version or data instance")
        self.supervoxels_check = QCheckBox("Supervoxels")
        self.supervoxels_check.setToolTip("Open labelmaps as supervoxels, not agglomerated")
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Open the selected instance at its version (read-only)")
        self.open_button.clicked.connect(lambda *_: self.open_selected())
        top = QHBoxLayout()
        top.addWidget(QLabel("Server:"))
        top.addWidget(self.server_edit, 1)
        top.addWidget(self.connect_button)
        bottom = QHBoxLayout()
        bottom.addWidget(self.supervoxels_check)
        bottom.addStretch(1)
        bottom.addWidget(self.open_button)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.tree)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.server_label)
        layout.addWidget(splitter, 1)
        layout.addLayout(bottom)
        layout.addWidget(self.status_label)

    # -- state ---------------------------------------------------------------------------
    @property
    def server(self) -> str | None:
        """Base URL of the connected server (``None`` before a connection succeeds)."""
        return self._server

    @property
    def busy(self) -> bool:
        """Whether a connect or an open is under way."""
        return bool(self._busy)

    @property
    def repos(self) -> list[RepoEntry]:
        """The repositories shown in the tree."""
        root = self.tree.invisibleRootItem()
        return [root.child(i).data(0, _ROLE).repo for i in range(root.childCount())]

    def _status(self, text: str, *, error: bool = False) -> None:
        """Show ``text`` in the status line (red for errors); hide the line when empty."""
        self.status_label.setText(text)
        self.status_label.setStyleSheet(ERROR_STYLE if error else "")
        self.status_label.setVisible(bool(text))

    def _update_buttons(self) -> None:
        """Enable the buttons that can act now."""
        self.connect_button.setEnabled("connect" not in self._busy)
        ref = self._current_ref()
        kind = ref.instance.layer_kind if ref is not None and ref.instance is not None else None
        self.open_button.setEnabled(kind is not None and "open" not in self._busy)
        self.supervoxels_check.setEnabled(kind == "labels")

    def _submit(self, task: str, token: Any, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` on a worker; its future arrives in :meth:`_on_done`."""
        relay = self._relay

        def deliver(future: Future[Any]) -> None:
            try:
                relay.done.emit((task, token, future))
            except RuntimeError:  # the widget was deleted meanwhile: nobody to tell
                logger.debug("dvid browser gone; dropping the %s result", task)

        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # executor shut down (widget closing)
            self._busy.discard(task)
            return
        future.add_done_callback(deliver)

    # -- connecting --------------------------------------------------------------------
    def connect_server(self, server: str | None = None) -> None:
        """List the repositories of ``server`` (default the field's text) in the background.

        Parameters
        ----------
        server : str, optional
            ``host:port`` or ``http://host:port``; also put into the field.
        """
        if server is not None:
            self.server_edit.setText(server)
        if "connect" in self._busy:
            return
        try:
            url = server_address(self.server_edit.text())
        except ValueError as exc:
            self._status(str(exc), error=True)
            return
        self._connect_token += 1
        self._busy.add("connect")
        self._server = None
        self._infos.clear()
        self.tree.clear()
        self.details.clear()
        self.server_label.setText("Not connected")
        self._status(f"Connecting to {url}…")
        self._update_buttons()
        self._submit("connect", self._connect_token, _fetch_server, url)

    def _connect_done(self, token: int, value: tuple[str, dict[str, Any], list[RepoEntry]]) -> None:
        server, info, repos = value
        self._server = server
        self.server_label.setText(f"{server} — {server_summary(info)}")
        self.server_label.setToolTip("\n".join(f"{k}: {v}" for k, v in info.items()))
        self._fill_tree(repos)
        count = len(repos)
        self._status(f"{count} repositor{'y' if count == 1 else 'ies'}")

    def _fill_tree(self, repos: list[RepoEntry]) -> None:
        """One item per repository with its nodes nested by the DAG."""
        heads: list[QTreeWidgetItem] = []
        for repo in repos:
            name = " — ".join(t for t in (repo.alias or "(no alias)", repo.description) if t)
            repo_item = QTreeWidgetItem([name, "repository", repo.short])
            repo_item.setData(0, _ROLE, _Ref("repo", repo))
            repo_item.setToolTip(0, f"{name}\nroot {repo.root}")
            self.tree.addTopLevelItem(repo_item)
            items: dict[str, QTreeWidgetItem] = {}
            for node, parent in repo.layout():
                item = self._node_item(repo, node)
                items.get(parent or "", repo_item).addChild(item)
                items[node.uuid] = item
                if not node.children:
                    heads.append(item.child(0))
            repo_item.setExpanded(True)
            for item in items.values():
                item.setExpanded(True)
        for folder in heads[:MAX_EXPANDED_HEADS]:
            folder.setExpanded(True)
        for column in range(self.tree.columnCount()):
            self.tree.resizeColumnToContents(column)
        self.tree.setColumnWidth(0, min(self.tree.columnWidth(0), MAX_NAME_WIDTH))

    def _node_item(self, repo: RepoEntry, node: NodeEntry) -> QTreeWidgetItem:
        """A version node, with an (empty until expanded) folder of the data instances."""
        item = QTreeWidgetItem([node.short, node.branch_name, node.state])
        item.setData(0, _ROLE, _Ref("node", repo, node))
        item.setIcon(0, self._icons[node.locked])
        tip = node.note or "(no note)"
        for column in range(3):
            item.setToolTip(column, f"{node.uuid}\n{node.state}\n{tip}")
        folder = QTreeWidgetItem([f"data instances ({len(repo.instances)})", "", ""])
        folder.setData(0, _ROLE, _Ref("data", repo, node))
        folder.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator)
        item.addChild(folder)
        return item

    def _fill_data_folder(self, folder: QTreeWidgetItem) -> None:
        """Add the instance items of a node's folder the first time it is expanded."""
        ref = folder.data(0, _ROLE)
        if not isinstance(ref, _Ref) or ref.kind != "data" or folder.childCount():
            return
        for instance in ref.repo.instances:
            kind = instance.layer_kind
            item = QTreeWidgetItem([instance.name, instance.typename, kind or "—"])
            item.setData(0, _ROLE, _Ref("instance", ref.repo, ref.node, instance))
            tip = f"double-click to open as {kind}" if kind else "not viewable in napari"
            item.setToolTip(0, f"{instance.name} ({instance.typename}): {tip}")
            if kind is None:
                item.setForeground(0, QColor("gray"))
            folder.addChild(item)
        folder.setChildIndicatorPolicy(
            QTreeWidgetItem.ChildIndicatorPolicy.DontShowIndicatorWhenChildless
        )

    # -- selection and details ---------------------------------------------------------
    def _current_ref(self) -> _Ref | None:
        item = self.tree.currentItem()
        ref = item.data(0, _ROLE) if item is not None else None
        return ref if isinstance(ref, _Ref) else None

    def _on_current(self, current: QTreeWidgetItem | None, *_: Any) -> None:
        self._show_details()
        self._update_buttons()

    def _current_key(self) -> tuple[str, str, str] | None:
        """``(server, node uuid, instance)`` of the selected instance."""
        ref = self._current_ref()
        if ref is None or ref.instance is None or ref.node is None or not self._server:
            return None
        return (self._server, ref.node.uuid, ref.instance.name)

    def _show_details(self, error: str = "") -> None:
        """Render the selected item; fetch an instance's info unless known or failed."""
        ref, key = self._current_ref(), self._current_key()
        if ref is None:
            self.details.clear()
        elif ref.kind == "repo":
            self.details.setHtml(repo_html(ref.repo))
        elif ref.node is not None and ref.instance is None:
            self.details.setHtml(node_html(ref.repo, ref.node))
        elif key is not None and ref.node is not None and ref.instance is not None:
            info = self._infos.get(key)
            self.details.setHtml(instance_html(ref.instance, ref.node, info, error=error))
            if info is None and not error and key not in self._info_pending:
                self._info_pending.add(key)
                client = DvidClient(key[0])
                self._submit("info", key, client.instance_info, key[1], key[2])

    def _info_done(self, key: tuple[str, str, str], info: Any) -> None:
        if not isinstance(info, dict):
            raise ValueError(f"instance info is not a JSON object: {info!r:.80}")
        self._infos[key] = info
        if key == self._current_key():
            self._show_details()

    # -- opening -------------------------------------------------------------------------
    def _on_double_click(self, item: QTreeWidgetItem, column: int) -> None:
        ref = item.data(0, _ROLE)
        if isinstance(ref, _Ref) and ref.kind == "instance":
            self.tree.setCurrentItem(item)
            self.open_selected()

    def open_selected(self) -> str | None:
        """Open the selected instance at its node in the viewer, in the background.

        Returns
        -------
        str or None
            The source being opened (``dvid://host:port/<uuid>/<name>``), or ``None``
            if nothing openable is selected or an open is under way.
        """
        ref = self._current_ref()
        if ref is None or ref.instance is None or ref.node is None or not self._server:
            return None
        if ref.instance.layer_kind is None:
            self._status(f"{ref.instance.typename} instances cannot be shown", error=True)
            return None
        if "open" in self._busy:
            return None
        supervoxels = ref.instance.layer_kind == "labels" and self.supervoxels_check.isChecked()
        source = instance_source(
            self._server, ref.node.uuid, ref.instance.name, supervoxels=supervoxels
        )
        controller_for(getattr(self._viewer, "__wrapped__", self._viewer))
        self._busy.add("open")
        lock = "locked node, read-only" if ref.node.locked else "open node"
        self._status(f"Loading {ref.instance.name} at {ref.node.short} ({lock})…")
        self._update_buttons()
        token = (source, ref.instance.name, ref.node.short, lock)
        self._submit("open", token, _fetch_layers, source)
        return source

    def _open_done(self, token: tuple[str, str, str, str], layers: list[LayerData]) -> None:
        _, name, short, lock = token
        kinds = []
        for data, meta, kind in layers:
            getattr(self._viewer, f"add_{kind}")(data, **meta)
            kinds.append(kind)
        self._status(f"Opened {name} at {short} ({lock}) as {', '.join(kinds) or 'nothing'}")

    # -- results -------------------------------------------------------------------------
    def _on_done(self, done: tuple[str, Any, Future[Any]]) -> None:
        """Main thread: apply a finished call, or show why it failed."""
        task, token, future = done
        if self._closed or (task == "connect" and token != self._connect_token):
            return  # closed, or a newer connect superseded it
        self._info_pending.discard(token)
        if task in ("connect", "open"):
            self._busy.discard(task)
        try:
            getattr(self, f"_{task}_done")(token, future.result())
        except CancelledError:
            pass
        except _EXPECTED as exc:
            self._failed(task, token, exc)
        except Exception as exc:  # a Qt slot: nothing may escape into the event loop
            logger.exception("DVID browser: %s failed", task)
            self._failed(task, token, exc)
        finally:
            self._update_buttons()

    def _failed(self, task: str, token: Any, exc: BaseException) -> None:
        """Show a failure in red (and in the details pane for instance info)."""
        message = str(exc) or type(exc).__name__
        if task == "connect":
            self._status(f"Cannot connect: {message}", error=True)
        elif task == "open":
            self._status(f"Cannot open {token[0]}: {message}", error=True)
        else:  # shown in the details pane; selecting the instance again retries
            if token == self._current_key():
                self._show_details(error=message)
            self._status(f"Cannot read instance info: {message}", error=True)

    # -- lifetime ------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the workers (running calls finish; their results are dropped)."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Stop the workers when the panel closes."""
        self.shutdown()
        super().closeEvent(event)
