"""The partner table: neurons connected to the selected ones, most synapses first."""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import QModelIndex, Qt, Signal
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from napari_connecto._qt.frame_model import FrameTableModel
from napari_connecto._qt.neuron_table import fit_id_columns, make_table_view
from napari_connecto._qt.table_columns import Column

__all__ = ["PARTNER_COLUMNS", "PartnerTable", "merge_partners"]

PARTNER_COLUMNS: tuple[Column, ...] = (
    Column("partner", "partner", "id"),
    Column("name", "name"),
    Column("type", "type"),
    Column("outgoing", "out", "int", tooltip="Synapses from the selected neurons onto it"),
    Column("incoming", "in", "int", tooltip="Synapses from it onto the selected neurons"),
    Column("total", "total", "int"),
)
"""Columns of the partner table (those of :meth:`AnnotationStore.partners`)."""


def merge_partners(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Sum the partner frames of several neurons into one (counts added per partner).

    Parameters
    ----------
    frames : list of pandas.DataFrame
        :meth:`AnnotationStore.partners` results.

    Returns
    -------
    pandas.DataFrame
        One row per partner, most synapses first, ids uint64.
    """
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(
            {
                "partner": np.empty(0, np.uint64),
                **{k: np.empty(0, object) for k in ("name", "type")},
                **{k: np.empty(0, np.int64) for k in ("outgoing", "incoming", "total")},
            }
        )
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    joined = pd.concat(frames, ignore_index=True)
    counts = joined.groupby("partner", sort=False)[["outgoing", "incoming", "total"]].sum()
    names = joined.drop_duplicates("partner").set_index("partner")[["name", "type"]]
    merged = counts.join(names).reset_index()
    merged["partner"] = merged["partner"].astype(np.uint64)
    merged = merged.sort_values(["total", "partner"], ascending=[False, True], kind="stable")
    return merged[["partner", "name", "type", "outgoing", "incoming", "total"]].reset_index(
        drop=True
    )


class PartnerTable(QWidget):
    """Partners of the selected neurons with synapse counts each way.

    Parameters
    ----------
    parent : QWidget, optional
        Parent widget.

    Attributes
    ----------
    summary_label : QLabel
        ``"14 partners, 120 synapses"``.
    view : QTableView
        The table; double-click (or Enter) on a partner selects that neuron.
    model : FrameTableModel
        Its model.
    """

    partnerActivated = Signal(object)  # noqa: N815 - Qt signal
    """A partner was double-clicked (or Enter pressed): its id as a Python int."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = FrameTableModel(PARTNER_COLUMNS, self)
        self.summary_label = QLabel("No neuron selected")
        self.view = make_table_view(self)
        self.view.setModel(self.model)
        fit_id_columns(self.view, PARTNER_COLUMNS)
        self.view.horizontalHeader().setSortIndicator(5, Qt.SortOrder.DescendingOrder)
        self.view.activated.connect(self._on_activated)
        self.view.setToolTip("Double-click a partner to select that neuron")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.view, 1)
        self.set_partners(merge_partners([]))

    def set_partners(self, frame: pd.DataFrame, *, neurons: int = 0) -> None:
        """Show a partner frame (see :func:`merge_partners`) of ``neurons`` selected neurons."""
        self.model.set_frame(frame)
        if not neurons:
            self.summary_label.setText("No neuron selected")
            return
        synapses = int(frame["total"].sum()) if len(frame) else 0
        plural = "" if len(frame) == 1 else "s"
        self.summary_label.setText(f"{len(frame):,} partner{plural}, {synapses:,} synapses")

    def partner_ids(self) -> list[int]:
        """Partner ids in display order."""
        return [int(v) for v in self.model.visible()["partner"].tolist()]

    def _on_activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self.partnerActivated.emit(int(self.model.value(index.row(), "partner")))
