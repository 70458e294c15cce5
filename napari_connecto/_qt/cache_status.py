"""A docked panel with the streaming chunk statistics and the cache settings.

Like Neuroglancer's chunk statistics panel: how many chunks are queued, loading, failed
and fetched, how much of the byte budget the cache uses, and a button to retry the
failed chunks. Below, the settings of the process-wide streaming service, applied live.
Everything runs on the main thread: a ``QTimer`` polls
:meth:`~napari_connecto.viewer.streaming.StreamingController.status` while the panel
is shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_connecto.viewer.streaming import controller_for

if TYPE_CHECKING:
    import napari
    from qtpy.QtGui import QCloseEvent, QHideEvent, QShowEvent

    from napari_connecto.cache.service import CacheSettings
    from napari_connecto.viewer.streaming import StreamingStatus

__all__ = ["UPDATE_INTERVAL_MS", "CacheStatusWidget", "format_bytes"]

UPDATE_INTERVAL_MS = 250
"""How often the panel polls the statistics while it is shown."""
MIB = 2**20
MAX_BUDGET_MIB = 2**20
"""Largest budget the spin box offers: 1 TiB."""
COUNTS = ("queued", "loading", "failed", "fetched")
ERROR_STYLE = "color: #ff3b30;"


def format_bytes(nbytes: int) -> str:
    """A byte count for people: ``"312 MiB"``, ``"2.0 GiB"``.

    Parameters
    ----------
    nbytes : int
        The number of bytes.

    Returns
    -------
    str
        Whole bytes, KiB or MiB below a GiB; GiB or TiB with one decimal above.
    """
    if nbytes < 2**10:
        return f"{nbytes} B"
    if nbytes < 2**30:
        unit, size = ("KiB", 2**10) if nbytes < MIB else ("MiB", MIB)
        return f"{round(nbytes / size)} {unit}"
    unit, size = ("GiB", 2**30) if nbytes < 2**40 else ("TiB", 2**40)
    return f"{nbytes / size:.1f} {unit}"


def _spin(low: int, high: int, tip: str, suffix: str = "") -> QSpinBox:
    """A spin box that reports a value only when editing is done (not per keystroke)."""
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSuffix(suffix)
    spin.setToolTip(tip)
    spin.setKeyboardTracking(False)
    return spin


class CacheStatusWidget(QWidget):
    """Chunk statistics, cache use and cache settings of a viewer's streamed layers.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose streaming controller to show (napari injects it).
    parent : QWidget, optional
        Parent widget.

    Attributes
    ----------
    count_labels : dict of str to QLabel
        The ``queued``, ``loading``, ``failed`` and ``fetched`` counts.
    usage_label : QLabel
        Cache use against the budget, e.g. ``"312 MiB of 2.0 GiB"``.
    usage_bar : QProgressBar
        The same as a bar.
    retry_button : QPushButton
        Fetches the failed chunks again; enabled while any failed.
    budget_spin, workers_spin, preview_spin : QSpinBox
        Cache budget in MiB, fetch workers, preview levels.
    prefetch_check : QCheckBox
        Whether to prefetch around the view.
    failure_label : QLabel
        Why the latest failed chunk failed (e.g. "server busy"), while any is failed.
    message_label : QLabel
        The outcome of the last action: a retry count, or why a setting was refused.
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller_for(viewer)
        self._shown_settings: CacheSettings | None = None
        self.count_labels = {name: QLabel("0") for name in COUNTS}
        self.usage_label = QLabel()
        self.usage_bar = QProgressBar()
        self.usage_bar.setRange(0, 1000)
        self.usage_bar.setFormat("%p%")
        self.failure_label = QLabel()
        self.failure_label.setObjectName("connecto_failure")
        self.failure_label.setWordWrap(True)
        self.failure_label.setStyleSheet(ERROR_STYLE)
        self.failure_label.hide()
        self.retry_button = QPushButton("Retry failed")
        self.retry_button.setToolTip("Fetch every failed chunk in view again now")
        self.retry_button.clicked.connect(self._on_retry)
        self.budget_spin = _spin(1, MAX_BUDGET_MIB, "Most memory for decoded chunks", " MiB")
        self.budget_spin.setSingleStep(256)
        self.workers_spin = _spin(1, 256, "Chunk fetches in flight across all sources")
        self.preview_spin = _spin(0, 8, "Levels coarser to fetch a quick preview from first")
        self.prefetch_check = QCheckBox("Prefetch around the view")
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.hide()
        self._build_layout()
        self._show_settings(self._controller.service.settings)
        self.budget_spin.valueChanged.connect(self._on_budget)
        self.workers_spin.valueChanged.connect(self._on_workers)
        self.preview_spin.valueChanged.connect(self._on_preview)
        self.prefetch_check.toggled.connect(self._on_prefetch)
        self._timer = QTimer(self)
        self._timer.setInterval(UPDATE_INTERVAL_MS)
        self._timer.timeout.connect(self.refresh)
        self.refresh()

    def _build_layout(self) -> None:
        """Group the controls: chunks, cache, settings."""
        chunks = QFormLayout()
        for name, label in self.count_labels.items():
            label.setObjectName(f"connecto_{name}")
            chunks.addRow(f"{name.capitalize()}:", label)
        chunks.addRow(self.failure_label)
        chunks.addRow(self.retry_button)
        cache = QVBoxLayout()
        cache.addWidget(self.usage_label)
        cache.addWidget(self.usage_bar)
        settings = QFormLayout()
        settings.addRow("Budget:", self.budget_spin)
        settings.addRow("Fetch workers:", self.workers_spin)
        settings.addRow("Preview levels:", self.preview_spin)
        settings.addRow(self.prefetch_check)
        layout = QVBoxLayout(self)
        for title, inner in (("Chunks", chunks), ("Cache", cache), ("Settings", settings)):
            box = QGroupBox(title)
            box.setLayout(inner)
            layout.addWidget(box)
        layout.addWidget(self.message_label)
        layout.addStretch(1)

    # -- statistics ----------------------------------------------------------------------
    @property
    def polling(self) -> bool:
        """Whether the update timer is running (only while the panel is shown)."""
        return self._timer.isActive()

    def refresh(self) -> StreamingStatus:
        """Show the controller's statistics now and return them.

        Returns
        -------
        StreamingStatus
            The statistics shown.
        """
        status = self._controller.status()
        for name, label in self.count_labels.items():
            label.setText(f"{getattr(status, name):,}")
        used, budget = status.cache_bytes, status.budget_bytes
        self.usage_label.setText(f"{format_bytes(used)} of {format_bytes(budget)}")
        self.usage_bar.setValue(min(1000, round(1000 * used / budget)) if budget > 0 else 0)
        self.retry_button.setEnabled(status.failed > 0)
        failed_label = self.count_labels["failed"]
        style = ERROR_STYLE if status.failed else ""
        if failed_label.styleSheet() != style:  # setting it again repaints (and recomposes)
            failed_label.setStyleSheet(style)
        reason = status.last_error if status.failed else ""
        self.failure_label.setText(f"Last failure: {_shorten(reason)}" if reason else "")
        self.failure_label.setToolTip(reason)
        self.failure_label.setVisible(bool(reason))
        settings = self._controller.service.settings
        if settings != self._shown_settings:
            self._show_settings(settings)  # changed elsewhere (a script, another panel)
        return status

    # -- settings --------------------------------------------------------------------------
    def _show_settings(self, settings: CacheSettings) -> None:
        """Put ``settings`` into the controls without applying them again."""
        controls = (self.budget_spin, self.workers_spin, self.preview_spin, self.prefetch_check)
        for control in controls:
            control.blockSignals(True)
        self.budget_spin.setValue(max(1, round(settings.budget_bytes / MIB)))
        self.workers_spin.setValue(settings.workers)
        self.preview_spin.setValue(settings.preview_levels)
        self.prefetch_check.setChecked(settings.prefetch)
        for control in controls:
            control.blockSignals(False)
        self._shown_settings = settings

    def _apply(self, **changes: int | bool) -> None:
        """Configure the service; show a refusal instead of raising."""
        service = self._controller.service
        try:
            settings = service.configure(**changes)
        except ValueError as exc:
            self._message(f"Setting not applied: {exc}", error=True)
            self._show_settings(service.settings)
            return
        self._show_settings(settings)
        self._message("")
        self.refresh()

    def _on_budget(self, mib: int) -> None:
        self._apply(budget_bytes=int(mib) * MIB)

    def _on_workers(self, workers: int) -> None:
        self._apply(workers=int(workers))

    def _on_preview(self, levels: int) -> None:
        self._apply(preview_levels=int(levels))

    def _on_prefetch(self, checked: bool) -> None:
        self._apply(prefetch=bool(checked))

    def _on_retry(self) -> None:
        count = self._controller.retry_failed()
        self._message(f"Retrying {count} chunk{'s' if count != 1 else ''}")
        self.refresh()

    def _message(self, text: str, *, error: bool = False) -> None:
        """Show ``text`` under the settings (red for errors); hide the line when empty."""
        self.message_label.setText(text)
        self.message_label.setStyleSheet(ERROR_STYLE if error else "")
        self.message_label.setVisible(bool(text))

    # -- lifetime --------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        """Start polling when the panel appears."""
        super().showEvent(event)
        self.refresh()
        self._timer.start()

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802 - Qt override
        """Stop polling while the panel is hidden (or removed from the window)."""
        self._timer.stop()
        super().hideEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Stop polling for good."""
        self._timer.stop()
        super().closeEvent(event)


def _shorten(text: str, limit: int = 160) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
