"""The synapse table: the input and output synapses of the selected neurons, to review."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QItemSelectionModel, QModelIndex, QTimer, Signal
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QVBoxLayout, QWidget

from napari_connecto._qt.frame_model import FrameTableModel
from napari_connecto._qt.neuron_table import (
    FILTER_DEBOUNCE_MS,
    FILTER_HELP,
    fit_id_columns,
    make_table_view,
    show_filter_error,
)
from napari_connecto._qt.table_columns import Column
from napari_connecto.annotations.filters import FilterError, parse_filter, to_mask

__all__ = ["SYNAPSE_FILTER_COLUMNS", "SYNAPSE_TABLE_COLUMNS", "SynapseTable"]

SYNAPSE_TABLE_COLUMNS: tuple[Column, ...] = (
    Column("id", "synapse", "id"),
    Column("neuron", "neuron", "id", tooltip="The selected neuron this synapse belongs to"),
    Column("direction", "dir", tooltip="out: the neuron is presynaptic; in: postsynaptic"),
    Column("partner", "partner", "id"),
    Column("partner_name", "partner name"),
    Column("confidence", "conf.", "float", 2),
    Column("status", "status"),
    Column("reviewer", "reviewer"),
    Column("z", "z (nm)", "float"),
    Column("y", "y (nm)", "float"),
    Column("x", "x (nm)", "float"),
)
"""Columns of the synapse table (keys of the panel's synapse frame)."""

SYNAPSE_FILTER_COLUMNS = {
    "id": "id", "neuron": "id", "partner": "id", "direction": "text", "partner_name": "text",
    "partner_type": "text", "status": "text", "reviewer": "text", "confidence": "number",
    "z": "number", "y": "number", "x": "number",
}  # fmt: skip
"""Columns the synapse filter knows, and their kinds."""

STATUS_CHOICES = ("all", "unreviewed", "verified", "rejected")
DIRECTION_CHOICES = (("in and out", ""), ("inputs", "in"), ("outputs", "out"))


def empty_synapse_frame() -> pd.DataFrame:
    """A synapse frame with no rows and every column the table needs."""
    frame = pd.DataFrame({key: pd.Series(dtype=object) for key in SYNAPSE_FILTER_COLUMNS})
    for key in ("id", "neuron", "partner"):
        frame[key] = frame[key].astype(np.uint64)
    for key in ("confidence", "z", "y", "x"):
        frame[key] = frame[key].astype(np.float64)
    return frame


class SynapseTable(QWidget):
    """Synapses of the selected neurons with a text filter and status/direction choices.

    Parameters
    ----------
    parent : QWidget, optional
        Parent widget.

    Attributes
    ----------
    filter_edit : QLineEdit
        Filter text over :data:`SYNAPSE_FILTER_COLUMNS` (red when it does not parse).
    status_combo, direction_combo : QComboBox
        Only synapses of one review status / one direction.
    view : QTableView
        The table; single click (or the arrow keys) makes a synapse current.
    model : FrameTableModel
        Its model.
    """

    synapseActivated = Signal(object)  # noqa: N815 - Qt signal
    """A synapse became current or was double-clicked: its id as a Python int."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = FrameTableModel(SYNAPSE_TABLE_COLUMNS, self)
        self.model.set_frame(empty_synapse_frame())
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter synapses: confidence > 0.5 partner=123 …")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setToolTip(FILTER_HELP)
        self.status_combo = QComboBox()
        self.status_combo.addItems(list(STATUS_CHOICES))
        self.status_combo.setToolTip("Only synapses with this review status")
        self.direction_combo = QComboBox()
        for text, value in DIRECTION_CHOICES:
            self.direction_combo.addItem(text, value)
        self.view = make_table_view(self)
        self.view.setModel(self.model)
        fit_id_columns(self.view, SYNAPSE_TABLE_COLUMNS)
        self._current: int | None = None
        self._restoring = False
        self._mask = np.ones(0, dtype=bool)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(FILTER_DEBOUNCE_MS)
        self._timer.timeout.connect(self.apply_filter)
        self.filter_edit.textEdited.connect(lambda _text: self._timer.start())
        self.filter_edit.returnPressed.connect(self.apply_filter)
        self.filter_edit.textChanged.connect(lambda text: text or self.apply_filter())
        self.status_combo.currentIndexChanged.connect(lambda _i: self.apply_filter())
        self.direction_combo.currentIndexChanged.connect(lambda _i: self.apply_filter())
        self.view.selectionModel().currentRowChanged.connect(self._on_current_row)
        self.view.activated.connect(self._on_activated)
        self.model.layoutChanged.connect(self._restore_current)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.direction_combo)
        top.addWidget(self.status_combo)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)

    # -- contents ------------------------------------------------------------------------
    def set_synapses(self, frame: pd.DataFrame) -> None:
        """Show ``frame`` (columns of :data:`SYNAPSE_FILTER_COLUMNS`); keep the current synapse."""
        frame = frame.reset_index(drop=True)
        self._mask = self._filter_mask(frame, fallback=np.ones(len(frame), dtype=bool))
        self.model.set_frame(frame, self._mask)
        several = frame["neuron"].nunique() > 1 if len(frame) else False
        self.view.setColumnHidden(1, not several)
        if self._current is not None and self.row(self._current) is None:
            self._current = None
        self._restore_current()

    def apply_filter(self) -> bool:
        """Apply the filter field and choices now; return whether the text parsed."""
        self._timer.stop()
        frame = self.model.frame
        try:
            mask = self._filter_mask(frame)
        except FilterError as exc:
            show_filter_error(self.filter_edit, str(exc))
            return False
        show_filter_error(self.filter_edit, None)
        self._mask = mask
        self.model.set_mask(mask)
        self._restore_current()
        return True

    def _filter_mask(self, frame: pd.DataFrame, fallback: np.ndarray | None = None) -> np.ndarray:
        """Rows passing the text filter, status and direction (``fallback`` on a bad text)."""
        try:
            terms = parse_filter(self.filter_edit.text(), SYNAPSE_FILTER_COLUMNS)
        except FilterError:
            if fallback is None:
                raise
            terms = []
        mask = to_mask(terms, frame, SYNAPSE_FILTER_COLUMNS) if len(frame) else np.ones(0, bool)
        status = self.status_combo.currentText()
        if status != "all" and len(frame):
            mask &= frame["status"].to_numpy() == status
        direction = self.direction_combo.currentData()
        if direction and len(frame):
            mask &= frame["direction"].to_numpy() == direction
        return mask

    def set_status(self, synapse_ids: list[int], status: str, reviewer: str = "") -> None:
        """Show a new review status for synapses (the store was already updated)."""
        self.model.set_values("status", "id", synapse_ids, status)
        self.model.set_values("reviewer", "id", synapse_ids, reviewer)
        if self.status_combo.currentText() != "all":
            self.apply_filter()

    # -- current synapse ------------------------------------------------------------------
    def current_synapse(self) -> int | None:
        """The current synapse id (it may be hidden by the filter now), or ``None``."""
        return self._current

    def visible_ids(self) -> list[int]:
        """Ids of the synapses shown, in display order."""
        return [int(v) for v in self.model.visible()["id"].tolist()]

    def selected_ids(self) -> list[int]:
        """Ids of the selected rows (the current synapse if none is selected)."""
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        ids = [int(self.model.value(r, "id")) for r in rows]
        return ids or ([self._current] if self._current is not None else [])

    def row(self, synapse_id: int) -> pd.Series | None:
        """The frame row of a synapse shown or hidden, or ``None``."""
        frame = self.model.frame
        if not len(frame):
            return None
        hits = np.flatnonzero(frame["id"].to_numpy() == np.uint64(int(synapse_id)))
        return frame.iloc[int(hits[0])] if hits.size else None

    def select_synapse(self, synapse_id: int | None, *, emit: bool = True) -> bool:
        """Make a synapse current (announced if ``emit``); return whether it is shown."""
        row = None if synapse_id is None else self.model.find("id", int(synapse_id))
        if row is None:
            return False
        synapse = int(synapse_id)  # type: ignore[arg-type]
        self._restoring = True
        try:
            self._set_row(row)
        finally:
            self._restoring = False
        self._current = synapse
        if emit:
            self.synapseActivated.emit(synapse)
        return True

    def step(self, delta: int) -> int | None:
        """Make the synapse ``delta`` rows below (above if negative) current; return it.

        With no current synapse the first (or last) row becomes current. At either end
        the current synapse stays and ``None`` is returned.
        """
        count = self.model.rowCount()
        if count == 0:
            return None
        row = None if self._current is None else self.model.find("id", self._current)
        if row is None:
            target = 0 if delta > 0 else count - 1
        else:
            target = row + delta
            if not 0 <= target < count:
                return None
        self._set_row(target)
        return self._current

    def upcoming_locations(self, count: int) -> np.ndarray:
        """Centres (N, 3 nm) of the next ``count`` synapses after the current one."""
        visible = self.model.visible()
        row = None if self._current is None else self.model.find("id", self._current)
        start = 0 if row is None else row + 1
        return visible[["z", "y", "x"]].iloc[start : start + count].to_numpy(dtype=np.float64)

    def _set_row(self, row: int) -> None:
        index = self.model.index(row, 0)
        flags = (
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows
        )
        self.view.selectionModel().setCurrentIndex(index, flags)
        self.view.scrollTo(index)

    def _restore_current(self) -> None:
        """After a reset or re-sort, show the current synapse as current again (silently)."""
        if self._current is None:
            return
        row = self.model.find("id", self._current)
        if row is None:
            return
        self._restoring = True
        try:
            self._set_row(row)
        finally:
            self._restoring = False

    def _on_current_row(self, current: QModelIndex, _previous: Any = None) -> None:
        if self._restoring or not current.isValid():
            return
        synapse = int(self.model.value(current.row(), "id"))
        if synapse != self._current:
            self._current = synapse
            self.synapseActivated.emit(synapse)

    def _on_activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self._current = int(self.model.value(index.row(), "id"))
            self.synapseActivated.emit(self._current)
