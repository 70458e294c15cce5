"""The annotation panel: neurons, their synapses and partners, bookmarks and review progress.

A proofreader picks a neuron in the (lazy, filterable) neuron table; its input and
output synapses and its partners fill the tables below and the view jumps to it with
the neuron highlighted. Clicking a synapse (or stepping with ``.`` / ``,``) centres the
view on it; ``K`` / ``J`` / ``U`` mark it verified / rejected / unreviewed and move on;
``Shift+B`` bookmarks the view. The bars show how much of the selected neurons' synapses
and of all synapses is reviewed. The viewer side lives in
:mod:`napari_connecto.viewer.annotations`.
"""

from __future__ import annotations

import getpass
import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from sqlalchemy.exc import SQLAlchemyError

from napari_connecto._qt.bookmarks import BookmarkTable, NotePrompt
from napari_connecto._qt.neuron_table import NeuronTable, SegmentAttributesBar
from napari_connecto._qt.partner_table import PartnerTable, merge_partners
from napari_connecto._qt.synapse_review import SynapseReview, progress_bar
from napari_connecto._qt.synapse_table import SynapseTable, empty_synapse_frame
from napari_connecto.annotations.store import AnnotationStore, ReviewProgress
from napari_connecto.errors import ConnectoError
from napari_connecto.objects.attribute_compute import representative_nm
from napari_connecto.objects.attribute_store import AttributeStore
from napari_connecto.viewer.annotations import REVIEW_KEYS, AnnotationNavigator, bind_review_keys

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels
    from qtpy.QtGui import QCloseEvent

    from napari_connecto.viewer.proofreading import ProofreadingSession

__all__ = [
    "MAX_SELECTED_NEURONS", "PREFETCH_AHEAD", "AnnotationPanel", "PathPrompt", "panel_of_viewer",
]  # fmt: skip

PathPrompt = Callable[[QWidget], "str | None"]
"""Asks which annotation database to open: ``prompt(parent) -> path`` or ``None``."""
MAX_SELECTED_NEURONS = 50
"""Synapses and partners are loaded for at most this many selected neurons."""
MIN_WIDTH = 460
"""The panel's narrowest width in pixels (ids have 20 digits)."""
PREFETCH_AHEAD = 3
"""Synapses after the current one whose surroundings are prefetched."""
ERROR_STYLE = "color: #ff3b30;"
KEY_HELP = "Keys in the viewer: " + " · ".join(
    f"{REVIEW_KEYS[name]} {what}"
    for name, what in (
        ("next", "next synapse"),
        ("previous", "previous"),
        ("verify", "verify"),
        ("reject", "reject"),
        ("unreview", "unreviewed"),
        ("bookmark", "bookmark"),
    )
)


def ask_database(parent: QWidget) -> str | None:
    """Ask for an annotation database file in a dialog; ``None`` if cancelled."""
    path, _ = QFileDialog.getOpenFileName(
        parent, "Open annotation database", "", "SQLite (*.db *.sqlite *.sqlite3);;All files (*)"
    )
    return str(path) or None


def _reviewer() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment
        return ""


_PANELS: weakref.WeakValueDictionary[int, AnnotationPanel] = weakref.WeakValueDictionary()


def panel_of_viewer(viewer: napari.Viewer) -> AnnotationPanel | None:
    """The annotation panel docked in ``viewer``, if any."""
    return _PANELS.get(id(viewer))


class AnnotationPanel(SynapseReview, QWidget):
    """Docked tables over an annotation store, wired to a viewer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer to navigate (napari injects it when the panel opens from the menu).
    store : AnnotationStore, optional
        The annotations; without one the panel offers to open a database.
    labels_layer : napari.layers.Labels, optional
        Where to highlight neurons; default the first Labels layer.
    note_prompt : callable, optional
        Asks for bookmark notes (default a dialog).
    path_prompt : callable, optional
        Asks for a database to open (default a file dialog).
    reviewer : str, optional
        Stored with each review; default the login name.
    parent : QWidget, optional
        Parent widget.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        store: AnnotationStore | None = None,
        *,
        labels_layer: Labels | None = None,
        note_prompt: NotePrompt | None = None,
        path_prompt: PathPrompt | None = None,
        reviewer: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setMinimumWidth(MIN_WIDTH)
        self.viewer = viewer
        self.reviewer = _reviewer() if reviewer is None else reviewer
        self.path_prompt: PathPrompt = path_prompt or ask_database
        self.advance_after_review = True
        """Whether marking the current synapse moves on to the next one."""
        self.navigator = AnnotationNavigator(viewer, None, labels_layer=labels_layer)
        self._store: AnnotationStore | None = None
        self._owns_store = False
        self._neurons: list[int] = []
        self._overall = ReviewProgress(0, 0, 0)
        self._build(note_prompt)
        unbind = bind_review_keys(
            viewer,
            {
                "next": self.next_synapse,
                "previous": self.previous_synapse,
                "verify": lambda: self.review("verified"),
                "reject": lambda: self.review("rejected"),
                "unreview": lambda: self.review("unreviewed"),
                "bookmark": self.add_bookmark,
            },
        )
        self._unbind: Callable[[], None] | None = unbind
        self.destroyed.connect(partial(_released, self.navigator, unbind))
        self.proofreading: ProofreadingSession | None = None
        """Edits go through this session's journal (undoable) while it is set."""
        self.attributes: AttributeStore | None = None
        """Attributes of the segmentation layer's segments (columns, go to segment)."""
        _PANELS[id(viewer)] = self
        self.set_store(store)
        self._load_cached_attributes()

    # -- layout ----------------------------------------------------------------------------
    def _build(self, note_prompt: NotePrompt | None) -> None:
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("SQLite file or postgresql:// URL")
        self.path_edit.returnPressed.connect(lambda: self.open_store(self.path_edit.text()))
        self.open_button = QPushButton("Open annotation database…")
        self.open_button.clicked.connect(lambda *_: self.open_store())
        self.goto_edit = QLineEdit()
        self.goto_edit.setPlaceholderText("Neuron, synapse or segment id, Enter to go")
        self.goto_edit.returnPressed.connect(lambda: self.go_to_id(self.goto_edit.text()))
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.hide()
        self.selected_progress = progress_bar()
        self.overall_progress = progress_bar()
        self.neuron_table = NeuronTable(parent=self)
        self.synapse_table = SynapseTable(self)
        self.partner_table = PartnerTable(self)
        self.bookmark_table = BookmarkTable(self, note_prompt=note_prompt)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._synapse_tab(), "Synapses")
        self.tabs.addTab(self.partner_table, "Partners")
        self.tabs.addTab(self.bookmark_table, "Bookmarks")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.neuron_table)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        store_row = QHBoxLayout()
        store_row.addWidget(QLabel("Database:"))
        store_row.addWidget(self.path_edit, 1)
        store_row.addWidget(self.open_button)
        form = QFormLayout()
        form.addRow("Go to:", self.goto_edit)
        form.addRow("Segments:", self._attributes_bar())
        form.addRow("Selected:", self.selected_progress)
        form.addRow("All:", self.overall_progress)
        help_label = QLabel(KEY_HELP)
        help_label.setWordWrap(True)
        help_label.setStyleSheet("color: gray;")
        layout = QVBoxLayout(self)
        layout.addLayout(store_row)
        layout.addLayout(form)
        layout.addWidget(self.message_label)
        layout.addWidget(splitter, 1)
        layout.addWidget(help_label)
        self.neuron_table.selectionChanged.connect(self._on_neurons_selected)
        self.synapse_table.synapseActivated.connect(self._on_synapse)
        self.partner_table.partnerActivated.connect(self.select_neuron)
        self.bookmark_table.addRequested.connect(self.add_bookmark)
        self.bookmark_table.jumpRequested.connect(self.navigator.go_to)

    def _attributes_bar(self) -> SegmentAttributesBar:
        self.attributes_bar = SegmentAttributesBar(self)
        self.attributes_bar.attributesReady.connect(self.set_attributes)
        self.attributes_bar.failed.connect(lambda text: self._message(text, error=True))
        self.attributes_bar.computeRequested.connect(self.compute_attributes)
        return self.attributes_bar

    def _synapse_tab(self) -> QWidget:
        tab = QWidget()
        buttons = QHBoxLayout()
        for text, status, key in (
            ("Verify", "verified", "verify"),
            ("Reject", "rejected", "reject"),
            ("Unreviewed", "unreviewed", "unreview"),
        ):
            button = QPushButton(f"{text} ({REVIEW_KEYS[key]})")
            button.setToolTip(f"Mark the selected synapses {status}")
            button.clicked.connect(
                lambda _c=False, s=status: self.review(s, self.synapse_table.selected_ids())
            )
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(tab)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.synapse_table, 1)
        layout.addLayout(buttons)
        return tab

    # -- store -----------------------------------------------------------------------------
    @property
    def store(self) -> AnnotationStore | None:
        """The store shown, if any."""
        return self._store

    def set_store(self, store: AnnotationStore | None, *, owned: bool = False) -> None:
        """Show ``store`` (closing a store the panel opened itself before)."""
        if self._owns_store and self._store is not None and self._store is not store:
            self._store.close()
        self._store, self._owns_store = store, owned
        self.path_edit.setText(store.where if store is not None else "")
        self.path_edit.setCursorPosition(0)
        self.navigator.set_store(store)
        self._overall = store.review_progress() if store is not None else ReviewProgress(0, 0, 0)
        self.neuron_table.set_store(store)
        self.bookmark_table.set_store(store)
        self._on_neurons_selected(self.neuron_table.selected_ids())

    def open_store(self, target: str | None = None) -> bool:
        """Open a database (asking for it if ``target`` is not given); return success."""
        target = (target or "").strip() or self.path_prompt(self)
        if not target:
            return False
        try:
            store = AnnotationStore.open(target, create=False)
        except (ConnectoError, OSError, SQLAlchemyError) as exc:
            self._message(f"Cannot open {target}: {exc}", error=True)
            return False
        self.set_store(store, owned=True)
        self._message(f"Opened {store.where}")
        return True

    def set_proofreading(self, session: ProofreadingSession | None) -> None:
        """Route reviews through ``session`` (journaled, undoable) and follow its edits."""
        self.proofreading = session
        if session is not None:
            session.changed.append(lambda _entries: self.refresh_all())

    def refresh_all(self) -> None:
        """Query everything shown again (after edits, own or another session's)."""
        if self._store is None:
            return
        self._overall = self._store.review_progress()
        self.neuron_table.refresh()
        self._on_neurons_selected(self.neuron_table.selected_ids())
        if self.navigator.overlay is not None:
            self.navigator.overlay.refresh()

    # -- neurons ---------------------------------------------------------------------------
    def selected_neurons(self) -> list[int]:
        """The selected neuron ids."""
        return list(self._neurons)

    def select_neuron(self, neuron: int) -> bool:
        """Select one neuron (clearing a filter hiding it); return whether it exists."""
        return self.neuron_table.select_ids([int(neuron)])

    def _on_neurons_selected(self, neurons: list[int]) -> None:
        self._neurons = [int(n) for n in neurons]
        store = self._store
        chosen = self._neurons[:MAX_SELECTED_NEURONS]
        if store is None or not chosen:
            synapses, partners = empty_synapse_frame(), merge_partners([])
        else:
            partners = merge_partners([store.partners(n) for n in chosen])
            synapses = self._synapse_frame(store, chosen, partners)
        self.synapse_table.set_synapses(synapses)
        self.partner_table.set_partners(partners, neurons=len(chosen))
        self.update_progress()
        if len(self._neurons) == 1:
            self.navigator.neuron(self._neurons[0])
        else:
            self.navigator.highlight(self._neurons[0] if self._neurons else None)

    @staticmethod
    def _synapse_frame(
        store: AnnotationStore, neurons: list[int], partners: pd.DataFrame
    ) -> pd.DataFrame:
        """The synapses of ``neurons`` with the neuron, partner name and type of each."""
        frames = []
        for neuron in neurons:
            frame = store.synapses_of(neuron)
            frame.insert(1, "neuron", np.full(len(frame), neuron, dtype=np.uint64))
            frames.append(frame)
        frame = pd.concat(frames, ignore_index=True) if frames else empty_synapse_frame()
        names = partners[["partner", "name", "type"]].rename(
            columns={"name": "partner_name", "type": "partner_type"}
        )
        frame = frame.merge(names, on="partner", how="left")
        frame[["partner_name", "partner_type"]] = frame[["partner_name", "partner_type"]].fillna("")
        return frame

    # -- synapses --------------------------------------------------------------------------
    def current_synapse(self) -> int | None:
        """The synapse being reviewed, if any."""
        return self.synapse_table.current_synapse()

    def select_synapse(self, synapse: int) -> bool:
        """Make a synapse of the selected neurons current and go to it."""
        return self.synapse_table.select_synapse(int(synapse))

    def next_synapse(self) -> int | None:
        """Go to the next synapse in the table; return it (``None`` at the end)."""
        return self.synapse_table.step(1)

    def previous_synapse(self) -> int | None:
        """Go to the previous synapse in the table; return it (``None`` at the start)."""
        return self.synapse_table.step(-1)

    def _on_synapse(self, synapse: int) -> None:
        row = self.synapse_table.row(synapse)
        neuron = int(row["neuron"]) if row is not None else None
        self.navigator.synapse(synapse, neuron=neuron)
        self.navigator.prefetch(self.synapse_table.upcoming_locations(PREFETCH_AHEAD))

    # -- places ----------------------------------------------------------------------------
    def add_bookmark(self, note: str | None = None) -> int | None:
        """Bookmark the view centre (asking for a note unless given); return its id."""
        from napari_connecto.viewer.annotations import view_position

        return self.bookmark_table.add_at(view_position(self.viewer).as_tuple(), note)

    def go_to_id(self, text: str) -> str | None:
        """Select the neuron, or go to the synapse, with this id; return what it was."""
        store = self._store
        try:
            value = int(text.strip())
            if not 0 < value < 2**64:
                raise ValueError
        except ValueError:
            self._message(f"Not an id: {text!r}", error=True)
            return None
        if store is not None and store.has_neurons([value])[0]:
            self.select_neuron(value)
            self._message("")
            return "neuron"
        if store is not None and store.has_synapses([value])[0]:
            pre, post = store.synapse_neurons(value)
            owner = next((n for n in (pre, post) if n and store.has_neurons([n])[0]), None)
            if owner is not None:
                self.select_neuron(owner)
            if not self.synapse_table.select_synapse(value):
                self.navigator.synapse(value)
            self._message("")
            return "synapse"
        at = representative_nm(self.attributes, value) if self.attributes is not None else None
        if at is not None:
            self.navigator.go_to(at)
            self.navigator.highlight(value)
            self._message(f"Segment {value} (not a neuron in the database)")
            return "segment"
        hint = "or segment" if self.attributes is not None else "(segments: compute attributes)"
        self._message(f"No neuron or synapse {value} {hint}", error=True)
        return None

    # -- segment attributes ----------------------------------------------------------------
    def segmentation_source(self) -> str | None:
        """Source of the segmentation layer (the first Labels layer opened by the plugin)."""
        from napari.layers import Labels

        layers = [self.navigator.labels_layer, *self.viewer.layers]
        for layer in layers:
            if isinstance(layer, Labels) and layer.metadata.get("connecto_source"):
                return str(layer.metadata["connecto_source"])
        return None

    def set_attributes(self, attributes: AttributeStore | None) -> None:
        """Use ``attributes`` for the neuron table's columns and for going to segments."""
        self.attributes = attributes
        self.neuron_table.set_attributes(attributes)
        self.attributes_bar.show_count(attributes)

    def add_properties(self, properties: AttributeStore) -> None:
        """Show imported per-segment properties (joined by id) next to the attributes.

        ``properties`` comes from :func:`~napari_connecto.objects.attributes.read_table` or
        :func:`~napari_connecto.objects.attributes.read_segment_properties`; columns it
        shares with the attributes shown replace theirs.
        """
        current = self.attributes
        if current is None:
            self.set_attributes(properties)
            return
        kept = [c for c in current.columns if c not in properties.columns]
        base = AttributeStore(current.ids, {c: current.column(c) for c in kept}, current.meta)
        self.set_attributes(base.merge(properties, how="left"))

    def _load_cached_attributes(self) -> None:
        """Show cached attributes of a local segmentation layer at once (no computing)."""
        source = self.segmentation_source()
        if source is not None and "://" not in source:
            self.attributes_bar.load_cached(source)

    def compute_attributes(self, source: str | None = None) -> bool:
        """Load or compute the segmentation's attributes on a worker thread; False if none."""
        source = source or self.segmentation_source()
        if source is None:
            self._message("No segmentation layer opened by napari-connecto", error=True)
            return False
        self.attributes_bar.compute(source)
        return True

    def _message(self, text: str, *, error: bool = False) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet(ERROR_STYLE if error else "")
        self.message_label.setVisible(bool(text))

    # -- lifetime --------------------------------------------------------------------------
    def detach(self) -> None:
        """Unbind the keys, remove the synapse layer and close a store the panel opened."""
        if self._unbind is not None:
            self._unbind()
            self._unbind = None
            self.navigator.close()
            self.attributes_bar.cancel()
        if self._owns_store and self._store is not None:
            self._store.close()
            self._owns_store = False

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Detach from the viewer when closed."""
        self.detach()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        """Detach when napari takes the panel out of its dock (``remove_dock_widget``)."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.detach()
        return super().event(event)


def _released(navigator: AnnotationNavigator, unbind: Callable[[], None], *_args: object) -> None:
    """The panel was deleted with its window without :meth:`detach`: stop following the view."""
    unbind()
    navigator.close(remove_layer=False)
