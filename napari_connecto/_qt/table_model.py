"""Qt table models over the annotation store: lazy for millions of neurons, frames for the rest.

:class:`NeuronTableModel` asks the store for the ids of the matching neurons once per
filter or sort (one query returning a uint64 array) and fetches the rows the view paints
in pages of :data:`PAGE_SIZE`, keeping a few pages in a small LRU. The view only ever
asks for the rows on screen, so a million neurons open as fast as their ids load.

:class:`FrameTableModel` shows a small DataFrame (the synapses or partners of the
selected neurons, the bookmarks) with sorting done in pandas and an optional row mask
for filters.

Ids are uint64 and may exceed 2**63: they are shown as text (``str(int(v))``) and handed
out as Python ints, never through float or a Qt integer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt

if TYPE_CHECKING:
    from napari_connecto.annotations.store import AnnotationStore

__all__ = [
    "NEURON_COLUMNS",
    "PAGE_SIZE",
    "Column",
    "ExtraFetch",
    "FrameTableModel",
    "NeuronTableModel",
    "format_value",
]

PAGE_SIZE = 256
"""Neuron rows fetched from the store at a time."""
MAX_PAGES = 16
"""Pages of neuron rows kept in memory (least recently used dropped first)."""

ExtraFetch = Callable[[np.ndarray], Mapping[str, Sequence[Any]]]
"""Values of extra columns for one page: ``fetch(ids) -> {key: values aligned with ids}``."""

_DISPLAY = Qt.ItemDataRole.DisplayRole
_EDIT = Qt.ItemDataRole.EditRole
_TOOLTIP = Qt.ItemDataRole.ToolTipRole
_ALIGN = Qt.ItemDataRole.TextAlignmentRole
_NUMBER_KINDS = frozenset({"id", "int", "float"})


def _flag_value(flag: Any) -> int:
    """A Qt enum or flag as an int, on PyQt5 (int subclasses) and PyQt6 (Python enums)."""
    return int(getattr(flag, "value", flag))


_RIGHT = _flag_value(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_LEFT = _flag_value(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table: which frame column it shows and how."""

    key: str
    """Column of the DataFrame (or of the store's neuron frame)."""
    title: str
    """Header text."""
    kind: str = "text"
    """``"id"`` (uint64, shown exactly), ``"int"``, ``"float"`` or ``"text"``."""
    decimals: int = 0
    """Digits after the point for ``"float"`` columns."""
    editable: bool = False
    """Whether the cell may be edited in place (text columns only)."""
    tooltip: str = ""
    """Header tooltip."""
    sortable: bool = True
    """Whether clicking the header sorts by it (extra columns of a neuron table do not)."""


NEURON_COLUMNS: tuple[Column, ...] = (
    Column("id", "id", "id"),
    Column("name", "name"),
    Column("type", "type"),
    Column("status", "status"),
    Column("n_pre", "outputs", "int", tooltip="Synapses where the neuron is presynaptic"),
    Column("n_post", "inputs", "int", tooltip="Synapses where the neuron is postsynaptic"),
    Column("notes", "notes"),
)
"""Columns of the neuron table (every key is a column the store can sort by)."""


def format_value(value: Any, column: Column) -> str:
    """The text a cell shows: ids exact, floats rounded, missing values empty.

    Parameters
    ----------
    value : object
        The cell's value from the frame.
    column : Column
        How to show it.

    Returns
    -------
    str
        The display text.
    """
    if value is None:
        return ""
    if column.kind in _NUMBER_KINDS:
        if isinstance(value, float | np.floating) and not np.isfinite(value):
            return ""
        if column.kind == "float":
            return f"{float(value):.{column.decimals}f}"
        return str(int(value))
    return "" if isinstance(value, float) and np.isnan(value) else str(value)


def _header(columns: Sequence[Column], section: int, orientation: Any, role: int) -> Any:
    """Header text and tooltips for both model kinds."""
    if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(columns):
        return None
    column = columns[section]
    if role == _DISPLAY:
        return column.title
    if role == _TOOLTIP:
        return column.tooltip or None
    return None


class NeuronTableModel(QAbstractTableModel):
    """Neurons of an annotation store, filtered and sorted in SQL, rows fetched lazily.

    Parameters
    ----------
    store : AnnotationStore, optional
        Where the neurons are; none shows an empty table until :meth:`set_store`.
    columns : sequence of Column
        What to show; default :data:`NEURON_COLUMNS`.
    page_size : int
        Rows per fetch.
    max_pages : int
        Pages kept in memory.
    parent : QObject, optional
        Qt parent.
    """

    def __init__(
        self,
        store: AnnotationStore | None = None,
        *,
        columns: Sequence[Column] = NEURON_COLUMNS,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.columns = tuple(columns)
        self._base_columns = self.columns
        self._extra_fetch: ExtraFetch | None = None
        self.page_size = int(page_size)
        self.max_pages = int(max_pages)
        self.pages_fetched = 0
        """How many pages were read from the store (for tests and benchmarks)."""
        self._store: AnnotationStore | None = None
        self._ids = np.empty(0, dtype=np.uint64)
        self._filter = ""
        self._order_by = "id"
        self._descending = False
        self._total = 0
        self._pages: OrderedDict[int, list[tuple[Any, ...]]] = OrderedDict()
        if store is not None:
            self.set_store(store)

    # -- state -------------------------------------------------------------------------
    @property
    def store(self) -> AnnotationStore | None:
        """The store shown, if any."""
        return self._store

    @property
    def filter_text(self) -> str:
        """The filter in force (the last one that parsed)."""
        return self._filter

    @property
    def order(self) -> tuple[str, bool]:
        """``(column key, descending)`` of the current sort."""
        return self._order_by, self._descending

    @property
    def total(self) -> int:
        """How many neurons the store holds, filter or not."""
        return self._total

    @property
    def ids(self) -> np.ndarray:
        """The uint64 ids of the rows, in display order (read-only)."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    def set_store(self, store: AnnotationStore | None) -> None:
        """Show the neurons of ``store`` (keeping the filter if it still parses)."""
        self._store = store
        try:
            self._requery(self._filter, self._order_by, self._descending)
        except ValueError:
            self._requery("", self._order_by, self._descending)

    def set_extra_columns(self, columns: Sequence[Column], fetch: ExtraFetch | None) -> None:
        """Append columns whose values come from ``fetch`` (per page of ids), not the store.

        They cannot be filtered or sorted in SQL, so their headers do not sort. ``fetch``
        gets the uint64 ids of one page and returns one sequence per column key (``None``
        for a blank cell). No columns (or ``fetch=None``) removes them.
        """
        self.beginResetModel()
        self._extra_fetch = fetch if columns else None
        self.columns = self._base_columns + (tuple(columns) if fetch is not None else ())
        self._pages.clear()
        self.endResetModel()

    def set_filter(self, text: str) -> None:
        """Show only neurons matching ``text`` (the language of :mod:`.annotations.filters`).

        Parameters
        ----------
        text : str
            The filter; empty for every neuron.

        Raises
        ------
        FilterError
            The text does not parse; the rows shown stay as they were.
        """
        self._requery(text.strip(), self._order_by, self._descending)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort by a column in SQL (Qt calls this when a header is clicked)."""
        if not 0 <= column < len(self.columns) or not self.columns[column].sortable:
            return
        descending = order == Qt.SortOrder.DescendingOrder
        self._requery(self._filter, self.columns[column].key, descending)

    def refresh(self) -> None:
        """Query the ids again and forget cached rows (after the store changed)."""
        self._requery(self._filter, self._order_by, self._descending)

    def _requery(self, text: str, order_by: str, descending: bool) -> None:
        """Fetch the ids for a filter and sort; on a bad filter raise before any change."""
        store = self._store
        if store is None:
            ids, total = np.empty(0, dtype=np.uint64), 0
        else:
            ids = store.neuron_ids(text, order_by=order_by, descending=descending)
            if order_by == "id":  # SQL orders ids >= 2**63 first (stored as negative int64)
                ids = np.sort(np.asarray(ids, dtype=np.uint64))
                ids = ids[::-1].copy() if descending else ids
            total = store.count_neurons()
        self.beginResetModel()
        self._ids = np.asarray(ids, dtype=np.uint64)
        self._filter, self._order_by, self._descending = text, order_by, descending
        self._total = total
        self._pages.clear()
        self.endResetModel()

    def invalidate(self) -> None:
        """Forget cached rows (their contents changed, not their order) and repaint."""
        self._pages.clear()
        if self.rowCount():
            last = self.index(self.rowCount() - 1, len(self.columns) - 1)
            self.dataChanged.emit(self.index(0, 0), last)

    # -- lookups -------------------------------------------------------------------------
    def id_at(self, row: int) -> int:
        """The neuron id shown in ``row``, as a Python int."""
        return int(self._ids[row])

    def row_of(self, neuron_id: int) -> int | None:
        """The row showing ``neuron_id``, or ``None`` if it is filtered out or unknown."""
        if not 0 <= int(neuron_id) < 2**64:
            return None
        hits = np.flatnonzero(self._ids == np.uint64(int(neuron_id)))
        return int(hits[0]) if hits.size else None

    def row_values(self, row: int) -> dict[str, Any]:
        """The values of one row, by column key (fetching its page if needed)."""
        values = self._row(row)
        return {c.key: v for c, v in zip(self.columns, values, strict=True)}

    def _row(self, row: int) -> tuple[Any, ...]:
        page_index, offset = divmod(row, self.page_size)
        page = self._pages.get(page_index)
        if page is None:
            page = self._fetch_page(page_index)
        else:
            self._pages.move_to_end(page_index)
        return page[offset]

    def _fetch_page(self, page_index: int) -> list[tuple[Any, ...]]:
        """Read one page of rows from the store (rows deleted meanwhile show their id only)."""
        start = page_index * self.page_size
        wanted = self._ids[start : start + self.page_size]
        assert self._store is not None
        frame = self._store.neurons(wanted)
        keys = [c.key for c in self._base_columns]
        rows = list(zip(*(frame[k].tolist() for k in keys), strict=True)) if len(frame) else []
        if len(rows) != len(wanted):  # some were deleted since the ids were read
            found = dict(zip(frame["id"].tolist(), rows, strict=True))
            rows = [
                found.get(i) or tuple(i if k == "id" else None for k in keys)
                for i in map(int, wanted.tolist())
            ]
        if self._extra_fetch is not None:
            rows = self._with_extra(rows, wanted, self._extra_fetch)
        self._pages[page_index] = rows
        self.pages_fetched += 1
        while len(self._pages) > self.max_pages:
            self._pages.popitem(last=False)
        return rows

    def _with_extra(
        self, rows: list[tuple[Any, ...]], ids: np.ndarray, fetch: ExtraFetch
    ) -> list[tuple[Any, ...]]:
        """Rows with the extra columns' values appended (one ``fetch`` per page)."""
        values = fetch(ids)
        extra = [values[c.key] for c in self.columns[len(self._base_columns) :]]
        return [row + tuple(col[k] for col in extra) for k, row in enumerate(rows)]

    # -- Qt model interface -------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 - Qt override
        """Rows: one per matching neuron (none under a valid parent: this is a table)."""
        if parent is not None and parent.isValid():
            return 0
        return int(self._ids.size)

    def columnCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802 - Qt override
        """Columns shown."""
        if parent is not None and parent.isValid():
            return 0
        return len(self.columns)

    def data(self, index: QModelIndex, role: int = _DISPLAY) -> Any:
        """Cell text (display/tooltip) and alignment; rows are fetched on demand."""
        if not index.isValid() or not 0 <= index.row() < self._ids.size:
            return None
        column = self.columns[index.column()]
        if role == _ALIGN:
            return _RIGHT if column.kind in _NUMBER_KINDS else _LEFT
        if role not in (_DISPLAY, _TOOLTIP):
            return None
        text = format_value(self._row(index.row())[index.column()], column)
        if role == _TOOLTIP:
            return text if column.kind == "text" and len(text) > 30 else None
        return text

    def headerData(self, section: int, orientation: Any, role: int = _DISPLAY) -> Any:  # noqa: N802 - Qt override
        """Column titles."""
        return _header(self.columns, section, orientation, role)


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

    def data(self, index: QModelIndex, role: int = _DISPLAY) -> Any:
        """Cell text, edit text and alignment."""
        if not index.isValid() or not 0 <= index.row() < self._rows.size:
            return None
        column = self.columns[index.column()]
        if role == _ALIGN:
            return _RIGHT if column.kind in _NUMBER_KINDS else _LEFT
        if role not in (_DISPLAY, _EDIT, _TOOLTIP):
            return None
        text = format_value(self.value(index.row(), column.key), column)
        if role == _TOOLTIP:
            return text if column.kind == "text" and len(text) > 30 else None
        return text

    def headerData(self, section: int, orientation: Any, role: int = _DISPLAY) -> Any:  # noqa: N802 - Qt override
        """Column titles."""
        return _header(self.columns, section, orientation, role)

    def flags(self, index: QModelIndex) -> Any:
        """Selectable rows; editable cells where the column says so."""
        flags = super().flags(index)
        if index.isValid() and self.columns[index.column()].editable and self.on_edit:
            flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    def setData(self, index: QModelIndex, value: Any, role: int = _EDIT) -> bool:  # noqa: N802 - Qt override
        """Store an edit through ``on_edit``; the cell changes only if that succeeds."""
        if role != _EDIT or not index.isValid() or self.on_edit is None:
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
