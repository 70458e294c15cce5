"""A small DataFrame as a Qt table: the synapses and partners of the selected neurons, bookmarks.

Sorting is done in pandas; an optional row mask hides rows for filters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt

from napari_connecto._qt.table_columns import (
    ALIGN,
    DISPLAY,
    EDIT,
    TOOLTIP,
    Column,
    alignment,
    format_value,
    header_data,
)

__all__ = ["FrameTableModel"]


class FrameTableModel(QAbstractTableModel):
    """A small DataFrame as a sortable, filterable table.

    Parameters
    ----------
    columns : sequence of Column
        What to show; each key must be a column of the frames given.
    parent : QObject, optional
        Qt parent.
    on_edit : callable, optional
        ``on_edit(row, key, text) -> bool`` for editable columns: ``row`` is the frame's
        row (a Series); return whether the edit was stored (the cell then changes).
    """

    def __init__(
        self,
        columns: Sequence[Column],
        parent: QObject | None = None,
        *,
        on_edit: Callable[[pd.Series, str, str], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self.columns = tuple(columns)
        self.on_edit = on_edit
        self._frame = pd.DataFrame({c.key: [] for c in self.columns})
        self._mask: np.ndarray | None = None
        self._sort: tuple[str, bool] | None = None
        self._order = np.empty(0, dtype=np.intp)
        self._rows = np.empty(0, dtype=np.intp)

    # -- contents ------------------------------------------------------------------------
    @property
    def frame(self) -> pd.DataFrame:
        """Every row given (also those the mask hides), in the order given."""
        return self._frame

    def set_frame(self, frame: pd.DataFrame, mask: np.ndarray | None = None) -> None:
        """Show ``frame`` (sorted as before), optionally only the rows where ``mask`` holds."""
        self.beginResetModel()
        self._frame = frame.reset_index(drop=True)
        self._mask = None if mask is None else np.asarray(mask, dtype=bool)
        self._order = self._sorted_order()
        self._rows = self._visible_rows()
        self.endResetModel()

    def set_mask(self, mask: np.ndarray | None) -> None:
        """Show only the rows of the frame where ``mask`` holds (``None``: all)."""
        self.beginResetModel()
        self._mask = None if mask is None else np.asarray(mask, dtype=bool)
        self._rows = self._visible_rows()
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the rows by a column (stable; missing values last)."""
        if not 0 <= column < len(self.columns):
            return
        self.layoutAboutToBeChanged.emit()
        self._sort = (self.columns[column].key, order == Qt.SortOrder.DescendingOrder)
        self._order = self._sorted_order()
        self._rows = self._visible_rows()
        self.layoutChanged.emit()

    def _sorted_order(self) -> np.ndarray:
        n = len(self._frame)
        if self._sort is None or self._sort[0] not in self._frame or n == 0:
            return np.arange(n, dtype=np.intp)
        key, descending = self._sort
        values = self._frame[key]
        if not pd.api.types.is_numeric_dtype(values):
            values = values.fillna("").astype(str).str.lower()
        ordered = values.sort_values(ascending=not descending, kind="stable", na_position="last")
        return ordered.index.to_numpy(dtype=np.intp)

    def _visible_rows(self) -> np.ndarray:
        if self._mask is None or self._mask.size != len(self._frame):
            return self._order
        return self._order[self._mask[self._order]]

    # -- lookups -------------------------------------------------------------------------
    def frame_row(self, row: int) -> int:
        """The frame position shown in table ``row``."""
        return int(self._rows[row])

    def row(self, row: int) -> pd.Series:
        """The frame row shown in table ``row``."""
        return self._frame.iloc[int(self._rows[row])]

    def value(self, row: int, key: str) -> Any:
        """One value of the row shown in table ``row``."""
        return self._frame[key].iat[int(self._rows[row])]

    def visible(self) -> pd.DataFrame:
        """The rows shown, in display order."""
        return self._frame.iloc[self._rows]

    def find(self, key: str, value: int | str) -> int | None:
        """The table row whose ``key`` equals ``value`` (ids compared exactly), or ``None``."""
        if key not in self._frame or not len(self._rows):
            return None
        column = self._frame[key].to_numpy()[self._rows]
        if column.dtype.kind == "u":
            if not 0 <= int(value) < 2**64:
                return None
            hits = np.flatnonzero(column == np.uint64(int(value)))
        else:
            hits = np.flatnonzero(column == value)
        return int(hits[0]) if hits.size else None

    def set_values(self, key: str, match_key: str, matches: Sequence[int], value: Any) -> None:
        """Set ``key`` to ``value`` on the frame rows whose ``match_key`` is in ``matches``."""
        if not len(self._frame):
            return
        wanted = np.asarray([int(m) for m in matches], dtype=np.uint64)
        hit = np.isin(self._frame[match_key].to_numpy(dtype=np.uint64), wanted)
        self.layoutAboutToBeChanged.emit()
        self._frame.loc[hit, key] = value
        if self._sort and self._sort[0] == key:
            self._order = self._sorted_order()
            self._rows = self._visible_rows()
        self.layoutChanged.emit()

    # -- Qt model interface -------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 - Qt override
        """Rows shown."""
        if parent is not None and parent.isValid():
            return 0
        return int(self._rows.size)

    def columnCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 - Qt override
        """Columns shown."""
        if parent is not None and parent.isValid():
            return 0
        return len(self.columns)

    def data(self, index: QModelIndex, role: int = DISPLAY) -> Any:
        """Cell text, edit text and alignment."""
        if not index.isValid() or not 0 <= index.row() < self._rows.size:
            return None
        column = self.columns[index.column()]
        if role == ALIGN:
            return alignment(column)
        if role not in (DISPLAY, EDIT, TOOLTIP):
            return None
        text = format_value(self.value(index.row(), column.key), column)
        if role == TOOLTIP:
            return text if column.kind == "text" and len(text) > 30 else None
        return text

    def headerData(self, section: int, orientation: Any, role: int = DISPLAY) -> Any:  # noqa: N802 - Qt override
        """Column titles."""
        return header_data(self.columns, section, orientation, role)

    def flags(self, index: QModelIndex) -> Any:
        """Selectable rows; editable cells where the column says so."""
        flags = super().flags(index)
        if index.isValid() and self.columns[index.column()].editable and self.on_edit:
            flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    def setData(self, index: QModelIndex, value: Any, role: int = EDIT) -> bool:  # noqa: N802 - Qt override
        """Store an edit through ``on_edit``; the cell changes only if that succeeds."""
        if role != EDIT or not index.isValid() or self.on_edit is None:
            return False
        column = self.columns[index.column()]
        if not column.editable:
            return False
        position = self.frame_row(index.row())
        if not self.on_edit(self._frame.iloc[position], column.key, str(value)):
            return False
        self._frame.iat[position, self._frame.columns.get_loc(column.key)] = str(value)
        self.dataChanged.emit(index, index)
        return True
