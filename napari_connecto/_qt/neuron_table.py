"""The neuron table: a filter field over a lazy table of every neuron in the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QItemSelection, QItemSelectionModel, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_connecto._qt.table_columns import Column
from napari_connecto._qt.table_model import NeuronTableModel
from napari_connecto.annotations.filters import FilterError
from napari_connecto.errors import ConnectoError
from napari_connecto.objects.attribute_compute import Progress, attribute_job

if TYPE_CHECKING:
    from collections.abc import Generator

    from napari_connecto.annotations.store import AnnotationStore
    from napari_connecto.objects.attribute_store import AttributeStore

__all__ = [
    "ERROR_STYLE",
    "FILTER_DEBOUNCE_MS",
    "FILTER_HELP",
    "SEGMENT_COLUMNS",
    "NeuronTable",
    "SegmentAttributesBar",
    "attribute_columns",
    "attribute_fetch",
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


_NOT_SORTABLE = " (not sortable: looked up per page, outside the database)"
SEGMENT_COLUMNS: tuple[Column, ...] = (
    Column("seg_voxels", "voxels", "int", tooltip="Segment size in voxels" + _NOT_SORTABLE,
           sortable=False),
    Column("seg_um3", "µm³", "float", 4, tooltip="Segment volume in µm³" + _NOT_SORTABLE,
           sortable=False),
    Column("seg_bbox", "bbox (voxels)", tooltip="Bounding box, voxel index ranges z, y, x"
           + _NOT_SORTABLE, sortable=False),
    Column("seg_point", "point (nm)", tooltip="A voxel inside the segment, z, y, x nm"
           + _NOT_SORTABLE, sortable=False),
)  # fmt: skip
"""Columns shown from computed segment attributes (:mod:`napari_connecto.objects.attributes`)."""
_WIDTH_SAMPLES = {"seg_bbox": "00:00 0000:0000 0000:0000", "seg_point": "00000, 000000, 000000"}
_COMPUTED = frozenset(
    ["size_voxels", "size_nm3"]
    + [f"{p}_{a}" for p in ("bbox_start", "bbox_stop", "centroid", "rep") for a in "zyx"]
)


def attribute_columns(attributes: AttributeStore) -> tuple[Column, ...]:
    """Table columns for a store: the segment columns if computed, then imported properties."""
    columns = list(SEGMENT_COLUMNS) if "size_voxels" in attributes.columns else []
    for name in attributes.columns:
        if name in _COMPUTED:
            continue
        kind = attributes.column(name).dtype.kind
        shown = "int" if kind in "iu" else "float" if kind == "f" else "text"
        columns.append(
            Column(
                f"prop:{name}",
                name,
                shown,
                3,
                tooltip=f"Imported {name!r}" + _NOT_SORTABLE,
                sortable=False,
            )
        )
    return tuple(columns)


def attribute_fetch(attributes: AttributeStore) -> Any:
    """``fetch(ids) -> {column key: values}`` for :meth:`NeuronTableModel.set_extra_columns`.

    One binary search per page of ids (:meth:`AttributeStore.lookup`); ids that are not
    segments give blank cells.
    """
    origin = np.asarray(attributes.meta.get("origin_nm", (0.0, 0.0, 0.0)), dtype=float)
    res = np.asarray(attributes.meta.get("resolution_nm", (1.0, 1.0, 1.0)), dtype=float)

    def fetch(ids: np.ndarray) -> dict[str, list[Any]]:
        found = attributes.lookup(ids)
        cols, hit = found.columns, found.found
        out: dict[str, list[Any]] = {}
        if "size_voxels" in cols:
            out.update(_segment_cells(cols, hit, origin, res))
        for name, values in cols.items():
            if name not in _COMPUTED:
                out[f"prop:{name}"] = [
                    v if h else None for v, h in zip(values.tolist(), hit, strict=True)
                ]
        return out

    return fetch


def _segment_cells(
    cols: dict[str, np.ndarray], hit: np.ndarray, origin: np.ndarray, res: np.ndarray
) -> dict[str, list[Any]]:
    """Display values of the computed segment columns for one page."""
    voxels: list[Any] = []
    um3: list[Any] = []
    bbox: list[Any] = []
    point: list[Any] = []
    rep = np.stack([cols[f"rep_{a}"] for a in "zyx"], axis=1) * res + origin
    for k, found in enumerate(hit.tolist()):
        if not found:
            for cells in (voxels, um3, bbox, point):
                cells.append(None)
            continue
        voxels.append(int(cols["size_voxels"][k]))
        um3.append(float(cols["size_nm3"][k]) / 1e9)
        bbox.append(" ".join(
            f"{int(cols[f'bbox_start_{a}'][k])}:{int(cols[f'bbox_stop_{a}'][k])}" for a in "zyx"
        ))  # fmt: skip
        point.append(", ".join(f"{v:g}" for v in rep[k]))
    return {"seg_voxels": voxels, "seg_um3": um3, "seg_bbox": bbox, "seg_point": point}


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
        self._sort_indicator = (0, Qt.SortOrder.AscendingOrder)
        self.view.horizontalHeader().sortIndicatorChanged.connect(self._on_sort_indicator)
        self.attributes: AttributeStore | None = None
        """Segment attributes shown as extra columns, if any (see :meth:`set_attributes`)."""
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

    def set_attributes(self, attributes: AttributeStore | None) -> None:
        """Show segment attributes (and imported properties) as columns; ``None`` hides them.

        Values are looked up by binary search for the rows of each fetched page only.
        The columns do not sort (the order comes from SQL); their headers ignore clicks.
        """
        self.attributes = attributes
        if attributes is None:
            self.model.set_extra_columns((), None)
        else:
            self.model.set_extra_columns(attribute_columns(attributes), attribute_fetch(attributes))
        fit_id_columns(self.view, self.model.columns)
        metrics = self.view.fontMetrics()
        for i, column in enumerate(self.model.columns):
            sample = _WIDTH_SAMPLES.get(column.key)
            if sample is not None:
                self.view.setColumnWidth(i, metrics.horizontalAdvance(sample) + 16)
        column, order = self._sort_indicator
        self.view.horizontalHeader().setSortIndicator(column, order)

    def _on_sort_indicator(self, column: int, order: Qt.SortOrder) -> None:
        """Keep the indicator on the last sortable column when an extra column is clicked."""
        columns = self.model.columns
        if 0 <= column < len(columns) and not columns[column].sortable:
            header = self.view.horizontalHeader()
            header.blockSignals(True)
            header.setSortIndicator(*self._sort_indicator)
            header.blockSignals(False)
            return
        self._sort_indicator = (column, order)

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


class SegmentAttributesBar(QWidget):
    """A button computing segment attributes on a worker thread, with progress and cancel.

    Attributes
    ----------
    button, cancel_button : QPushButton
        Start and stop.
    progress : QProgressBar
        Blocks done (shown while computing).
    label : QLabel
        How many segments are known, or what is going on.
    worker : object or None
        The napari worker while one runs.
    """

    attributesReady = Signal(object)  # noqa: N815 - Qt signal
    """An :class:`~napari_connecto.objects.attribute_store.AttributeStore` was loaded."""
    failed = Signal(str)
    """Loading or computing failed: the message to show."""
    computeRequested = Signal()  # noqa: N815 - Qt signal
    """The button was clicked (the owner calls :meth:`compute` with its source)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.button = QPushButton("Compute segment attributes")
        self.button.setToolTip(
            "Size, bounding box and a point inside every segment of the segmentation layer "
            "(read blockwise in the background, then cached)"
        )
        self.button.clicked.connect(lambda *_: self.computeRequested.emit())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda *_: self.cancel())
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.label = QLabel("not computed")
        self.worker: Any = None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.button, self.progress, self.cancel_button):
            layout.addWidget(widget)
        layout.addWidget(self.label, 1)
        self._busy(False)

    def show_count(self, attributes: AttributeStore | None) -> None:
        """Say how many segments ``attributes`` holds."""
        self.label.setText(
            "not computed" if attributes is None else f"{len(attributes):,} segments"
        )

    def load_cached(self, source: str) -> None:
        """Emit the cached attributes of ``source`` if there are any (on this thread)."""
        try:
            cached = _finish(attribute_job(source, cache_only=True))
        except (ConnectoError, OSError) as exc:
            self.failed.emit(f"Segment attributes unavailable: {exc}")
            return
        if cached is not None:
            self.attributesReady.emit(cached)

    def compute(self, source: str) -> None:
        """Load (from cache) or compute the attributes of ``source`` on a worker thread."""
        from napari.qt.threading import create_worker

        self.cancel()
        worker = create_worker(attribute_job, source, _start_thread=False)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self.attributesReady.emit)
        worker.errored.connect(lambda exc: self.failed.emit(f"Segment attributes failed: {exc}"))
        worker.finished.connect(lambda: self._on_finished(worker))
        self.worker = worker
        self.progress.setValue(0)
        self.progress.setFormat("reading…")
        self.label.setText(source.rstrip("/").rsplit("/", 1)[-1])
        self._busy(True)
        worker.start()

    def cancel(self) -> None:
        """Stop a running computation (nothing is cached)."""
        if self.worker is not None:
            self.worker.quit()
            self.label.setText("cancelled")

    def _busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.button.setEnabled(not busy)

    def _on_progress(self, step: Progress) -> None:
        self.progress.setValue(round(1000 * step.done / max(step.total, 1)))
        self.progress.setFormat(f"{step.done:,} / {step.total:,} blocks")

    def _on_finished(self, worker: object) -> None:
        if self.worker is worker:
            self.worker = None
            self._busy(False)


def _finish(job: Generator[Progress, None, AttributeStore | None]) -> AttributeStore | None:
    """Run a job generator to its end on this thread and return its value."""
    try:
        while True:
            next(job)
    except StopIteration as stop:
        return stop.value
