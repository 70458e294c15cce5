"""Reviewing synapses in the annotation panel: marking them, and the progress bars.

Mixed into :class:`~napari_connecto._qt.annotation_panel.AnnotationPanel`: a review goes
through the proofreading session's journal while one is set (undoable), else straight
to the store; the overall counts are kept up to date without a query per review.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from qtpy.QtWidgets import QProgressBar

from napari_connecto.annotations.store import AnnotationStore, ReviewProgress

if TYPE_CHECKING:
    from napari_connecto._qt.synapse_table import SynapseTable
    from napari_connecto.viewer.annotations import AnnotationNavigator
    from napari_connecto.viewer.proofreading import ProofreadingSession

__all__ = ["SynapseReview", "progress_bar"]


class SynapseReview:
    """Marks synapses verified, rejected or unreviewed, and shows how much is reviewed."""

    synapse_table: SynapseTable
    navigator: AnnotationNavigator
    proofreading: ProofreadingSession | None
    reviewer: str
    advance_after_review: bool
    selected_progress: QProgressBar
    overall_progress: QProgressBar
    _store: AnnotationStore | None
    _neurons: list[int]
    _overall: ReviewProgress

    if TYPE_CHECKING:  # provided by AnnotationPanel

        def current_synapse(self) -> int | None: ...

    def review(self, status: str, synapses: list[int] | None = None) -> int:
        """Mark synapses (default: the current one) ``status``; return how many changed.

        Marking the current synapse moves on to the next one when
        :attr:`advance_after_review` is set.
        """
        current = self.current_synapse()
        ids = [int(s) for s in synapses] if synapses is not None else []
        if synapses is None and current is not None:
            ids = [current]
        if self._store is None or not ids:
            return 0
        order = self.synapse_table.visible_ids()
        before = [self.synapse_table.row(s) for s in ids]
        if self.proofreading is not None:
            self.proofreading.edit(lambda pr: pr.set_status(ids, status), status)
            changed = len(ids)
        else:
            changed = self._store.set_synapse_status(ids, status, self.reviewer)
        self._count_review([r["status"] for r in before if r is not None], status)
        self.synapse_table.set_status(ids, status, self.reviewer)
        self.update_progress()
        if self.navigator.overlay is not None:
            self.navigator.overlay.refresh()
        if self.advance_after_review and current in ids and current in order:
            shown = set(self.synapse_table.visible_ids())
            following = order[order.index(current) + 1 :]
            upcoming = next((s for s in following if s in shown), None)
            if upcoming is not None:
                self.synapse_table.select_synapse(upcoming)
        return changed

    def _count_review(self, old: list[str], new: str) -> None:
        """Update the overall counts for synapses that went from ``old`` to ``new``."""
        verified, rejected = self._overall.verified, self._overall.rejected
        for status in old:
            verified -= status == "verified"
            rejected -= status == "rejected"
        verified += len(old) * (new == "verified")
        rejected += len(old) * (new == "rejected")
        self._overall = ReviewProgress(self._overall.total, verified, rejected)

    def progress(self) -> tuple[ReviewProgress, ReviewProgress]:
        """Review progress of the selected neurons' synapses and of all synapses."""
        frame = self.synapse_table.model.frame
        unique = frame.drop_duplicates("id") if len(frame) else frame
        counts = unique["status"].value_counts() if len(unique) else pd.Series(dtype=int)
        selected = ReviewProgress(
            len(unique), int(counts.get("verified", 0)), int(counts.get("rejected", 0))
        )
        return selected, self._overall

    def update_progress(self) -> None:
        """Show the review progress in the bars."""
        selected, overall = self.progress()
        _show_progress(
            self.selected_progress, selected, None if self._neurons else "no neuron selected"
        )
        _show_progress(
            self.overall_progress, overall, None if self._store is not None else "no database"
        )


def progress_bar() -> QProgressBar:
    """A review progress bar: per mille, its text set by :meth:`SynapseReview.update_progress`."""
    bar = QProgressBar()
    bar.setRange(0, 1000)
    bar.setTextVisible(True)
    return bar


def _show_progress(bar: QProgressBar, progress: ReviewProgress, idle: str | None) -> None:
    """Per-mille value (totals may pass 2**31) and the counts as text (``idle`` if given)."""
    if idle is not None:
        bar.setValue(0)
        bar.setFormat(idle)
        bar.setToolTip("")
        return
    bar.setValue(round(1000 * progress.fraction) if progress.total else 0)
    text = (
        f"{progress.reviewed:,} / {progress.total:,} reviewed "
        f"({progress.verified:,} verified, {progress.rejected:,} rejected)"
    )
    bar.setFormat(text)
    bar.setToolTip(text)
