"""The neuron table: a filter field over a lazy table of every neuron in the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qtpy.QtCore import QItemSelection, QItemSelectionModel, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_connecto._qt.table_model import Column, NeuronTableModel
from napari_connecto.annotations.filters import FilterError

if TYPE_CHECKING:
    from napari_connecto.annotations.store import AnnotationStore

__all__ = [
    "ERROR_STYLE",
    "FILTER_DEBOUNCE_MS",
    "FILTER_HELP",
    "NeuronTable",
    "fit_id_columns",
    "make_table_view",
]

FILTER_DEBOUNCE_MS = 250
"""A filter applies this long after the last keystroke (or at once on Enter)."""
ERROR_STYLE = "QLineEdit { border: 1px solid #ff3b30; background: rgba(255, 59, 48, 40); }"
FILTER_HELP = (
    "Terms all must hold: column op value (ops = != < <= > >= ~, ~ means contains) "
    "or a bare word (any text column contains it, or the id equals it).\n"
    "Example: n_post > 10 type=KC status != done"
)


def make_table_view(parent: QWidget | None = None) -> QTableView:
    """A row-selecting, sortable table view with fixed row heights (cheap for huge models)."""
    view = QTableView(parent)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    view.setSortingEnabled(True)
    view.setWordWrap(False)
    view.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
    rows = view.verticalHeader()
    rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    rows.setDefaultSectionSize(view.fontMetrics().height() + 6)
    rows.hide()
    columns = view.horizontalHeader()
    columns.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    columns.setStretchLastSection(True)
    columns.setHighlightSections(False)
    return view


def fit_id_columns(view: QTableView, columns: Sequence[Column]) -> None:
    """Make id columns wide enough for every uint64 (20 digits), others a sensible width."""
    digits = view.fontMetrics().horizontalAdvance("0" * 20) + 16
    for i, column in enumerate(columns):
        if column.kind == "id":
            view.setColumnWidth(i, digits)
        elif column.kind in ("int", "float"):
            view.setColumnWidth(i, max(60, view.fontMetrics().horizontalAdvance(column.title) + 28))


def show_filter_error(field: QLineEdit, message: str | None) -> None:
    """Mark ``field`` red with ``message`` as tooltip, or restore it (``None``)."""
    field.setStyleSheet(ERROR_STYLE if message else "")
    field.setToolTip(message or FILTER_HELP)


class NeuronTable(QWidget):
    """Every neuron of a store: filter, sort, select (lazy: millions of rows are fine).

    Parameters
    ----------
    store : AnnotationStore, optional
        Where the neurons are; see :meth:`set_store`.
    parent : QWidget, optional
        Parent widget.

    Attributes
    ----------
    filter_edit : QLineEdit
        The filter text (red, with the reason as tooltip, when it does not parse).
    count_label : QLabel
        ``"12 of 1,000,000 neurons"``.
    view : QTableView
        The table.
    model : NeuronTableModel
        Its model.
    """

    selectionChanged = Signal(object)  # noqa: N815 - Qt signal
    """The selected neuron ids changed: a list of Python ints, in display order."""

    def __init__(self, store: AnnotationStore | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = NeuronTableModel(parent=self)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter neurons: n_post > 10 type=KC …")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip(FILTER_HELP)
        self.count_label = QLabel()
        self.view = make_table_view(self)
        self.view.setModel(self.model)
        fit_id_columns(self.view, self.model.columns)
        self.view.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        self._selected: list[int] = []
        self._before_reset: list[int] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(FILTER_DEBOUNCE_MS)
        self._timer.timeout.connect(self.apply_filter)
        self.filter_edit.textEdited.connect(lambda _text: self._timer.start())
        self.filter_edit.returnPressed.connect(self.apply_filter)
        self.filter_edit.textChanged.connect(self._on_text_changed)
        self.model.modelAboutToBeReset.connect(self._remember_selection)
        self.model.modelReset.connect(self._after_reset)
        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.count_label)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        self.set_store(store)

    # -- store and filter --------------------------------------------------------------
    def set_store(self, store: AnnotationStore | None) -> None:
        """Show the neurons of ``store`` (``None``: an empty table)."""
        self.view.clearSelection()
        self.model.set_store(store)

    def apply_filter(self) -> bool:
        """Apply the filter field now; return whether it parsed (else it turns red)."""
        self._timer.stop()
        try:
            self.model.set_filter(self.filter_edit.text())
        except FilterError as exc:
            show_filter_error(self.filter_edit, str(exc))
            return False
        show_filter_error(self.filter_edit, None)
        return True

    def _on_text_changed(self, text: str) -> None:
        if not text:  # the clear button: apply at once
            self.apply_filter()

    def refresh(self) -> None:
        """Re-read ids and rows from the store (after an import or an edit)."""
        self.model.refresh()

    def _update_count(self) -> None:
        shown, total = self.model.rowCount(), self.model.total
        noun = "neuron" if total == 1 else "neurons"
        text = f"{total:,} {noun}" if shown == total else f"{shown:,} of {total:,} {noun}"
        self.count_label.setText(text)

    # -- selection -----------------------------------------------------------------------
    def selected_ids(self) -> list[int]:
        """The selected neuron ids (Python ints), in display order."""
        rows = sorted({index.row() for index in self.view.selectionModel().selectedRows()})
        return [self.model.id_at(row) for row in rows]

    def select_ids(self, neuron_ids: list[int], *, clear_filter: bool = True) -> bool:
        """Select neurons and scroll to the first; return whether all of them are shown.

        Neurons hidden by the filter are shown by clearing it if ``clear_filter``.
        """
        rows = [self.model.row_of(n) for n in neuron_ids]
        if None in rows and clear_filter and self.model.filter_text:
            self.filter_edit.setText("")
            self.apply_filter()
            rows = [self.model.row_of(n) for n in neuron_ids]
        found = [r for r in rows if r is not None]
        self._select_rows(found)
        return len(found) == len(neuron_ids)

    def _select_rows(self, rows: list[int]) -> None:
        selection = QItemSelection()
        last = self.model.columnCount() - 1
        for row in rows:
            selection.select(self.model.index(row, 0), self.model.index(row, last))
        flags = (
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows
        )
        selector = self.view.selectionModel()
        selector.select(selection, flags)
        if rows:
            selector.setCurrentIndex(
                self.model.index(rows[0], 0), QItemSelectionModel.SelectionFlag.NoUpdate
            )
            self.view.scrollTo(self.model.index(rows[0], 0))

    def _remember_selection(self) -> None:
        self._before_reset = self.selected_ids()

    def _after_reset(self) -> None:
        self._update_count()
        kept = [r for r in map(self.model.row_of, self._before_reset) if r is not None]
        self._select_rows(kept)
        self._emit_selection()

    def _on_selection(self, *_args: object) -> None:
        self._emit_selection()

    def _emit_selection(self) -> None:
        ids = self.selected_ids()
        if ids != self._selected:
            self._selected = ids
            self.selectionChanged.emit(ids)
