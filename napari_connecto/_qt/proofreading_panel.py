"""The proofreading dock: modes, painting, merge and split, synapse edits, undo history.

*Plugins > napari-connecto > Proofreading*: pick the segmentation layer and the
annotation store, Start. Then:

- **Paint here** puts an editable full-resolution canvas over the view (napari's paint,
  fill and erase tools; a new segment id is selected); each stroke is journaled at once
  and written back in the background;
- **Merge** / **Split** / **Synapse** modes act on shift-clicks (the mode is shown on the
  canvas); **Finish** (Enter) cleaves the picked fragments or adds the synapse;
- **Undo** / **Redo** (Ctrl+Z / Ctrl+Shift+Z) walk one history of every kind of edit,
  kept in the store, so it survives a restart;
- the history list shows the latest edits, their write-back state and other people's
  edits as they arrive (about three times a second).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from sqlalchemy.exc import SQLAlchemyError

from napari_connecto.errors import ConnectoError, ReadOnlyError
from napari_connecto.viewer.proofreading import MODES, ProofreadingSession

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

    from napari_connecto.annotations.store import AnnotationStore
    from napari_connecto.proofreading.journal import JournalEntry

__all__ = ["ProofreadingPanel", "panel_for"]

logger = logging.getLogger(__name__)

HISTORY_ROWS = 60
_PANELS: weakref.WeakValueDictionary[int, ProofreadingPanel] = weakref.WeakValueDictionary()


def panel_for(viewer: napari.Viewer) -> ProofreadingPanel | None:
    """The proofreading panel docked in ``viewer``, if any."""
    return _PANELS.get(id(viewer))


class ProofreadingPanel(QWidget):
    """Docked proofreading controls for one viewer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari injects it when the panel opens from the menu).
    parent : QWidget, optional
        Parent widget.
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session: ProofreadingSession | None = None
        self._store: AnnotationStore | None = None
        self._owns_store = False
        self._build()
        _PANELS[id(viewer)] = self
        viewer.layers.events.inserted.connect(self._fill_layers)
        viewer.layers.events.removed.connect(self._fill_layers)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self._fill_layers()

    # -- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        self.layer_box = QComboBox()
        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("SQLite file or postgresql:// URL")
        self.start_button = QPushButton("Start proofreading")
        self.start_button.clicked.connect(lambda *_: self.start())
        self.mode_group = QButtonGroup(self)
        modes = QHBoxLayout()
        self.mode_buttons: dict[str, QRadioButton] = {}
        for mode in MODES:
            button = QRadioButton(mode.capitalize())
            self.mode_group.addButton(button)
            button.toggled.connect(lambda on, m=mode: on and self.set_mode(m))
            modes.addWidget(button)
            self.mode_buttons[mode] = button
        self.mode_buttons["navigate"].setChecked(True)
        self.finish_button = QPushButton("Finish (Enter)")
        self.finish_button.setShortcut("Return")
        self.finish_button.clicked.connect(lambda *_: self.session and self.session.finish())
        self.depth_spin = QSpinBox()
        self.depth_spin.setRange(1, 64)
        self.depth_spin.setValue(1)
        self.depth_spin.setSuffix(" sections")
        self.paint_button = QPushButton("Paint here")
        self.paint_button.clicked.connect(lambda *_: self.paint_here())
        self.new_id_button = QPushButton("New id")
        self.new_id_button.setToolTip("Paint with a segment id never used before")
        self.new_id_button.clicked.connect(lambda *_: self.new_id())
        self.done_button = QPushButton("Close canvas")
        self.done_button.clicked.connect(lambda *_: self.close_canvas())
        self.undo_button = QPushButton("Undo (Ctrl+Z)")
        self.undo_button.clicked.connect(lambda *_: self.session and self.session.undo())
        self.redo_button = QPushButton("Redo (Ctrl+Shift+Z)")
        self.redo_button.clicked.connect(lambda *_: self.session and self.session.redo())
        self.synapse_edit = QLineEdit()
        self.synapse_edit.setPlaceholderText("synapse id(s), comma separated")
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(lambda *_: self.delete_synapses())
        self.history = QListWidget()
        self.status = QLabel("Pick the segmentation layer and the store, then Start.")
        self.status.setWordWrap(True)
        self._lay_out(modes)
        self._enable(False)

    def _lay_out(self, modes: QHBoxLayout) -> None:
        form = QFormLayout()
        form.addRow("Segmentation:", self.layer_box)
        form.addRow("Store:", self.store_edit)
        paint_row = QHBoxLayout()
        for w in (self.paint_button, self.depth_spin, self.new_id_button, self.done_button):
            paint_row.addWidget(w)
        undo_row = QHBoxLayout()
        for w in (self.undo_button, self.redo_button):
            undo_row.addWidget(w)
        syn_row = QHBoxLayout()
        syn_row.addWidget(self.synapse_edit, 1)
        syn_row.addWidget(self.delete_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.start_button)
        layout.addLayout(modes)
        layout.addWidget(self.finish_button)
        layout.addLayout(paint_row)
        layout.addLayout(undo_row)
        layout.addWidget(QLabel("Synapses:"))
        layout.addLayout(syn_row)
        layout.addWidget(QLabel("History (newest first):"))
        layout.addWidget(self.history, 1)
        layout.addWidget(self.status)

    def _enable(self, on: bool) -> None:
        for w in (
            *self.mode_buttons.values(), self.finish_button, self.paint_button, self.new_id_button,
            self.done_button, self.undo_button, self.redo_button, self.delete_button,
        ):  # fmt: skip
            w.setEnabled(on)

    def _on_layer_removed(self, event: Any) -> None:
        session = self.session
        if session is not None and event.value is session.layer:
            self.stop()
            self.message("The segmentation layer was removed: proofreading stopped.")

    def event(self, event: QEvent) -> bool:
        """Stop when napari takes the panel out of its dock (the dock's X button).

        napari removes a closed dock by re-parenting its widget to nothing, without a
        close event; a dock merely tabbed away keeps its parent.
        """
        if event.type() == QEvent.Type.ParentChange and self.parentWidget() is None:
            self.stop()
        return super().event(event)

    def _fill_layers(self, event: Any = None) -> None:
        from napari.layers import Labels

        current = self.layer_box.currentText()
        self.layer_box.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and not layer.name.endswith(" (paint)"):
                self.layer_box.addItem(layer.name)
        if current:
            self.layer_box.setCurrentText(current)

    # -- start ----------------------------------------------------------------------------
    def start(
        self,
        store: AnnotationStore | str | None = None,
        layer: Labels | None = None,
        **session_options: Any,
    ) -> bool:
        """Start proofreading ``layer`` with ``store``; return success (errors are shown)."""
        from napari_connecto.annotations.store import AnnotationStore
        from napari_connecto.opening import open_volume
        from napari_connecto.proofreading.proofreader import Proofreader

        if layer is None:
            name = self.layer_box.currentText()
            layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        source = layer.metadata.get("connecto_source") if layer is not None else None
        if layer is None or not source:
            self.message("Pick a segmentation layer opened by napari-connecto.", error=True)
            return False
        target = store if store is not None else self.store_edit.text().strip()
        if not isinstance(target, AnnotationStore) and not target:
            self.message("Give the annotation store (a SQLite file).", error=True)
            return False
        self.stop()  # the running session (and a store it opened) first
        try:
            if isinstance(target, AnnotationStore):
                self._store, self._owns_store = target, False
            else:
                self._store, self._owns_store = AnnotationStore.open(target), True
            try:
                volume = open_volume(source, mode="r+")
            except ReadOnlyError:
                volume = open_volume(source)
            proofreader = Proofreader(self._store, volume)
        except (ConnectoError, OSError, SQLAlchemyError) as exc:
            self.message(f"Cannot start: {exc}", error=True)
            self._release_store()
            return False
        self.session = ProofreadingSession(
            self.viewer, layer, proofreader, notify=self.message, **session_options
        )
        self.session.changed.append(self._on_changed)
        self.session.written.append(self._refresh_history)
        self.store_edit.setText(self._store.where)
        self._enable(True)
        self.paint_button.setEnabled(volume.writable)
        self._attach_tables()
        note = "" if volume.writable else " (read-only volume: painting is off)"
        self.message(f"Proofreading {layer.name} as {proofreader.author}{note}")
        self._refresh_history()
        return True

    def _attach_tables(self) -> None:
        from napari_connecto._qt.annotation_panel import panel_of_viewer

        tables = panel_of_viewer(self.viewer)
        if tables is not None and self.session is not None:
            tables.set_proofreading(self.session)

    def stop(self) -> None:
        """End the session (queued edits finish; the canvas closes)."""
        if self.session is None:
            return
        session, self.session = self.session, None
        session.close()
        session.proofreader.close()
        self._release_store()
        self._enable(False)

    def _release_store(self) -> None:
        if self._owns_store and self._store is not None:
            self._store.close()
        self._store, self._owns_store = None, False

    # -- actions --------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """Switch the session's mode (and the radio button)."""
        if self.session is None:
            return
        self.session.set_mode(mode)
        button = self.mode_buttons[mode]
        if not button.isChecked():
            button.setChecked(True)

    def paint_here(self) -> None:
        """Open a paint canvas over the view."""
        from napari_connecto.viewer.paint_canvas import PaintCanvas

        if self.session is not None:
            PaintCanvas.open(self.session, depth=self.depth_spin.value())

    def new_id(self) -> None:
        """Select a never-used segment id on the paint canvas."""
        session = self.session
        if session is None or session.canvas is None:
            self.message("Open a canvas first (Paint here).", error=True)
            return
        canvas = session.canvas

        def chosen(label: int) -> None:
            canvas.layer.selected_label = label
            self.message(f"new segment id {label}")

        session._submit(session.proofreader.new_id, chosen, what="new id")

    def close_canvas(self) -> None:
        """Remove the paint canvas (every stroke is journaled already)."""
        if self.session is not None and self.session.canvas is not None:
            self.session.canvas.close()

    def delete_synapses(self, ids: list[int] | None = None) -> None:
        """Delete the synapses named in the field (or ``ids``)."""
        if self.session is None:
            return
        if ids is None:
            try:
                ids = [int(t) for t in self.synapse_edit.text().replace(",", " ").split()]
            except ValueError:
                self.message("synapse ids are whole numbers", error=True)
                return
        if ids:
            self.session.edit(lambda pr: pr.delete_synapses(ids), "deleted")

    # -- feedback -------------------------------------------------------------------------
    def message(self, text: str, error: bool = False) -> None:
        """Show a status line (red for errors)."""
        self.status.setText(text)
        self.status.setStyleSheet("color: #ff6b6b;" if error else "")
        self.viewer.status = text

    def _on_changed(self, entries: list[JournalEntry]) -> None:
        self._refresh_history()

    def _refresh_history(self) -> None:
        session = self.session
        if session is None:
            return
        pr = session.proofreader
        session._submit(
            lambda: (pr.history(HISTORY_ROWS, everyone=True), pr.pending()), self._show_history
        )

    def _show_history(self, result: tuple[Any, int]) -> None:
        frame, pending = result
        self.history.clear()
        me = self.session.proofreader.author if self.session else ""
        for row in frame.itertuples(index=False):
            state = "" if row.state in ("applied", "marker") else f" [{row.state}]"
            wb = {"pending": " (writing…)", "failed": f" (FAILED: {row.error})"}.get(
                row.writeback, ""
            )
            who = "" if row.author == me else f" — {row.author}"
            item = QListWidgetItem(f"{row.seq}: {row.summary}{state}{wb}{who}")
            if row.state in ("undone", "discarded"):
                item.setForeground(QColor("gray"))
            if row.writeback == "failed":
                item.setForeground(QColor("#ff6b6b"))
            item.setData(Qt.ItemDataRole.UserRole, int(row.seq))
            self.history.addItem(item)
        if pending:
            self.status.setText(f"{pending} edit(s) being written to the volume…")
        elif self.status.text().endswith("being written to the volume…"):
            self.status.setText("Every edit is written to the volume.")

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """Stop the session when the dock closes."""
        self.stop()
        super().closeEvent(event)
