"""The neuron table's Qt model over the annotation store, lazy for millions of neurons.

:class:`NeuronTableModel` asks the store for the ids of the matching neurons once per
filter or sort (one query returning a uint64 array) and fetches the rows the view paints
in pages of :data:`PAGE_SIZE`, keeping a few pages in a small LRU. The view only ever
asks for the rows on screen, so a million neurons open as fast as their ids load. The
smaller tables use :class:`~napari_connecto._qt.frame_model.FrameTableModel`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt

from napari_connecto._qt.table_columns import (
    ALIGN,
    DISPLAY,
    TOOLTIP,
    Column,
    alignment,
    format_value,
    header_data,
)

if TYPE_CHECKING:
    from napari_connecto.annotations.store import AnnotationStore

__all__ = [
    "NEURON_COLUMNS",
    "PAGE_SIZE",
    "ExtraFetch",
    "NeuronTableModel",
]

PAGE_SIZE = 256
"""Neuron rows fetched from the store at a time."""
MAX_PAGES = 16
"""Pages of neuron rows kept in memory (least recently used dropped first)."""

ExtraFetch = Callable[[np.ndarray], Mapping[str, Sequence[Any]]]
"""Values of extra columns for one page: ``fetch(ids) -> {key: values aligned with ids}``."""


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

    def data(self, index: QModelIndex, role: int = DISPLAY) -> Any:
        """Cell text (display/tooltip) and alignment; rows are fetched on demand."""
        if not index.isValid() or not 0 <= index.row() < self._ids.size:
            return None
        column = self.columns[index.column()]
        if role == ALIGN:
            return alignment(column)
        if role not in (DISPLAY, TOOLTIP):
            return None
        text = format_value(self._row(index.row())[index.column()], column)
        if role == TOOLTIP:
            return text if column.kind == "text" and len(text) > 30 else None
        return text

    def headerData(self, section: int, orientation: Any, role: int = DISPLAY) -> Any:  # noqa: N802 - Qt override
        """Column titles."""
        return header_data(self.columns, section, orientation, role)
