"""Bookmarks: places in the volume with a note, stored in the annotation store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pandas as pd
from qtpy.QtCore import QModelIndex, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_connecto._qt.frame_model import FrameTableModel
from napari_connecto._qt.neuron_table import fit_id_columns, make_table_view
from napari_connecto._qt.table_columns import Column

if TYPE_CHECKING:
    from napari_connecto.annotations.store import AnnotationStore

__all__ = ["BOOKMARK_COLUMNS", "BookmarkTable", "NotePrompt", "ask_note"]

NotePrompt = Callable[[QWidget, str], "str | None"]
"""Asks for a bookmark note: ``prompt(parent, initial) -> note`` or ``None`` to cancel."""

BOOKMARK_COLUMNS: tuple[Column, ...] = (
    Column("id", "#", "int"),
    Column("note", "note", editable=True, tooltip="Double-click to edit"),
    Column("tags", "tags", editable=True, tooltip="Comma-separated; double-click to edit"),
    Column("z", "z (nm)", "float"),
    Column("y", "y (nm)", "float"),
    Column("x", "x (nm)", "float"),
    Column("when", "created"),
)
"""Columns of the bookmark table."""


def ask_note(parent: QWidget, initial: str = "") -> str | None:
    """Ask for a note in a modal dialog; ``None`` if cancelled.

    Parameters
    ----------
    parent : QWidget
        The dialog's parent.
    initial : str
        Text to start from.

    Returns
    -------
    str or None
        The note.
    """
    text, ok = QInputDialog.getText(
        parent, "Bookmark", "Note for this place:", QLineEdit.EchoMode.Normal, initial
    )
    return str(text) if ok else None


class BookmarkTable(QWidget):
    """List, add, jump to, edit and delete bookmarks.

    Parameters
    ----------
    parent : QWidget, optional
        Parent widget.
    note_prompt : callable, optional
        Asks for the note of a new bookmark (default :func:`ask_note`, a dialog);
        tests pass a function returning the note.

    Attributes
    ----------
    view : QTableView
        The bookmarks; double-click a note or tags to edit them, elsewhere to jump.
    model : FrameTableModel
        Its model.
    add_button, jump_button, delete_button : QPushButton
        Add the current view, go to the selected bookmark, delete the selected ones.
    """

    addRequested = Signal()  # noqa: N815 - Qt signal
    """The user asked to bookmark the current view (the panel knows where that is)."""
    jumpRequested = Signal(object)  # noqa: N815 - Qt signal
    """Go to a bookmark: ``(z, y, x)`` in nm."""

    def __init__(
        self, parent: QWidget | None = None, *, note_prompt: NotePrompt | None = None
    ) -> None:
        super().__init__(parent)
        self.note_prompt: NotePrompt = note_prompt or ask_note
        self._store: AnnotationStore | None = None
        self.model = FrameTableModel(BOOKMARK_COLUMNS, self, on_edit=self._store_edit)
        self.view = make_table_view(self)
        self.view.setModel(self.model)
        fit_id_columns(self.view, BOOKMARK_COLUMNS)
        self.view.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.view.activated.connect(self._on_activated)
        self.add_button = QPushButton("Bookmark view…")
        self.add_button.setToolTip("Bookmark the current view centre with a note (Shift+B)")
        self.jump_button = QPushButton("Go to")
        self.delete_button = QPushButton("Delete")
        self.add_button.clicked.connect(self.addRequested.emit)
        self.jump_button.clicked.connect(self.jump_to_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        buttons = QHBoxLayout()
        for button in (self.add_button, self.jump_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.view, 1)
        self.reload()

    def set_store(self, store: AnnotationStore | None) -> None:
        """Show the bookmarks of ``store``."""
        self._store = store
        self.reload()

    def reload(self) -> pd.DataFrame:
        """Read the bookmarks from the store again; return them."""
        frame = self._store.bookmarks() if self._store is not None else None
        if frame is None:
            frame = pd.DataFrame({c.key: [] for c in BOOKMARK_COLUMNS})
        else:
            stamps = pd.to_datetime(frame["created"], unit="s", utc=True).dt.tz_convert(None)
            frame["when"] = stamps.dt.strftime("%Y-%m-%d %H:%M").fillna("")
        self.model.set_frame(frame)
        enabled = self._store is not None
        for button in (self.add_button, self.jump_button, self.delete_button):
            button.setEnabled(enabled)
        return frame

    def add_at(self, position_nm: Sequence[float], note: str | None = None) -> int | None:
        """Bookmark ``position_nm`` (z, y, x); ask for the note unless given.

        Returns
        -------
        int or None
            The new bookmark's id; ``None`` without a store or if the prompt was cancelled.
        """
        if self._store is None:
            return None
        if note is None:
            note = self.note_prompt(self, "")
            if note is None:
                return None
        bookmark = self._store.add_bookmark(tuple(float(v) for v in position_nm), note)
        self.reload()
        row = self.model.find("id", bookmark)
        if row is not None:
            self.view.selectRow(row)
            self.view.scrollTo(self.model.index(row, 0))
        return bookmark

    def selected_ids(self) -> list[int]:
        """Ids of the selected bookmarks."""
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [int(self.model.value(r, "id")) for r in rows]

    def delete_selected(self) -> int:
        """Delete the selected bookmarks; return how many were deleted."""
        if self._store is None:
            return 0
        deleted = sum(self._store.delete_bookmark(b) for b in self.selected_ids())
        self.reload()
        return deleted

    def jump_to_selected(self) -> bool:
        """Ask to go to the first selected bookmark; return whether one was selected."""
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        if not rows:
            return False
        self._jump(rows[0])
        return True

    def _jump(self, row: int) -> None:
        place = self.model.row(row)
        self.jumpRequested.emit((float(place["z"]), float(place["y"]), float(place["x"])))

    def _on_activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self._jump(index.row())

    def _store_edit(self, row: pd.Series, key: str, text: str) -> bool:
        """Write an edited note or tags to the store."""
        if self._store is None:
            return False
        try:
            self._store.update_bookmark(int(row["id"]), **{key: text})
        except KeyError:  # deleted elsewhere
            self.reload()
            return False
        return True
