"""Proofreading in the viewer: segment display, modes, clicks, live edits and undo keys.

A :class:`ProofreadingSession` ties one :class:`~napari_connecto.proofreading.Proofreader`
to the segmentation layer it edits:

- the layer shows *segments*: its streamed volume gets a :class:`DisplayRemap` read
  processor (run on the fetch workers) that is swapped after merges and splits, and
  only cached blocks showing a changed id are read again;
- every proofreader call runs on one worker thread, in order; results come back to the
  main thread through a queued Qt signal; nothing here waits on the database or storage;
- a timer takes in other sessions' edits (``Proofreader.sync``) about three times a
  second, so a second viewer sees them within a second;
- modes: *merge* (shift-click two segments), *split* (shift-click the fragments to cut
  off, then cleave), *synapse* (click the pre site, shift-click post sites, finish);
  the mode is shown on the canvas;
- Ctrl+Z / Ctrl+Shift+Z undo and redo every kind of edit through the journal.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from sqlalchemy.exc import SQLAlchemyError

from napari_connecto.errors import ConnectoError
from napari_connecto.proofreading.display import DisplayRemap
from napari_connecto.proofreading.server_edits import server_labels
from napari_connecto.viewer.proofreading_modes import MODES, EditModes
from napari_connecto.viewer.streaming import stream_of
from napari_connecto.volume.processors import RemapIds

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

    from napari_connecto._qt.proofreading_panel import ProofreadingPanel
    from napari_connecto.annotations.store import AnnotationStore
    from napari_connecto.proofreading.journal import JournalEntry
    from napari_connecto.proofreading.proofreader import Proofreader
    from napari_connecto.proofreading.writeback import Region

__all__ = ["MODES", "SYNC_INTERVAL_MS", "ProofreadingSession", "attach_proofreading"]

logger = logging.getLogger(__name__)

SYNC_INTERVAL_MS = 300
"""How often other sessions' edits are taken in."""
LARGE_SEGMENT_FRAGMENTS = 50
"""Merging a segment with more fragments than this asks for confirmation."""


class _Bridge(QObject):
    """Runs callables on the main thread (queued signal from worker threads)."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(lambda fn: fn())


Confirm = Callable[[str], bool]
Notify = Callable[[str, bool], None]


class ProofreadingSession(EditModes):
    """Proofreading of one segmentation layer in one viewer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    layer : napari.layers.Labels
        The (streamed, multiscale) segmentation layer.
    proofreader : Proofreader
        Edits of the layer's volume and the annotation store (``auto_sync=False``).
    confirm : callable, optional
        Asks yes/no before large merges (default: a dialog).
    notify : callable, optional
        Shows messages ``(text, is_error)`` (default: the viewer status bar).
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        layer: Labels,
        proofreader: Proofreader,
        *,
        confirm: Confirm | None = None,
        notify: Notify | None = None,
    ) -> None:
        self._viewer = weakref.ref(viewer)
        self.layer = layer
        self.proofreader = proofreader
        proofreader.auto_sync = False
        self.confirm: Confirm = confirm or _ask
        self.notify: Notify = notify or self._status
        self.mode = "navigate"
        self.picks: list[tuple[int, np.ndarray]] = []
        """Segment/fragment ids picked in the current mode, with their positions (nm)."""
        self.synapse_sites: list[np.ndarray] = []
        self.canvas: Any = None
        self.changed: list[Callable[[list[JournalEntry]], None]] = []
        """Called on the main thread after own or others' edits (tables refresh)."""
        self.written: list[Callable[[], None]] = []
        """Called on the main thread after voxels reached the volume."""
        self.errors: list[str] = []
        self._bridge = _Bridge()
        self._ops = ThreadPoolExecutor(1, thread_name_prefix="connecto-edits")
        self._closed = False
        self._stream = stream_of(layer)
        self.remap = DisplayRemap(RemapIds(np.zeros(0, np.uint64), np.zeros(0, np.uint64)))
        self._plain_volume = None
        if self._stream is not None:
            sv = self._stream.volume
            self._plain_volume = sv.volume
            sv.volume = sv.volume.with_processors(read=[self.remap])
        self._remap_changed()  # the store's table is loaded on the edit thread
        proofreader.on_written(self._on_written)
        proofreader.on_relabelled(self._on_relabelled)
        self._timer = QTimer()
        self._timer.setInterval(SYNC_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()
        self._foreign_pending: set[int] = set()
        self._unbind = self._bind_keys(layer)
        layer.mouse_drag_callbacks.append(self._on_click)

    # -- plumbing -----------------------------------------------------------------------
    @property
    def viewer(self) -> napari.Viewer | None:
        """The viewer, while it exists."""
        return self._viewer()

    def _submit(
        self,
        work: Callable[[], Any],
        done: Callable[[Any], None] | None = None,
        *,
        what: str = "",
    ) -> Future[Any]:
        """Run ``work`` on the edit thread; ``done(result)`` then runs on the main thread."""

        def run() -> Any:
            try:
                result = work()
            except (ConnectoError, OSError, ValueError, SQLAlchemyError) as exc:
                text = f"{what} failed: {exc}" if what else str(exc)
                self._bridge.call.emit(lambda: self._closed or self._error(text))
                return None
            except Exception as exc:
                logger.exception("%s failed", what or "proofreading task")
                text = f"{what or 'task'} failed unexpectedly: {exc!r}"
                self._bridge.call.emit(lambda: self._closed or self._error(text))
                return None
            if done is not None:
                self._bridge.call.emit(lambda: self._closed or done(result))
            return result

        if self._closed:
            finished: Future[Any] = Future()
            finished.set_result(None)
            return finished
        return self._ops.submit(run)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until queued edits ran (tests and scripts; the GUI never calls it)."""
        self._ops.submit(lambda: None).result(timeout)

    def _error(self, text: str) -> None:
        logger.warning("%s", text)
        self.errors.append(text)
        self.notify(text, True)

    def _status(self, text: str, error: bool) -> None:
        viewer = self.viewer
        if viewer is not None:
            viewer.status = text

    def _redraw(self, _result: object = None) -> None:
        if self._stream is not None:
            self._stream.mark_dirty()

    # -- display ------------------------------------------------------------------------
    def _remap_changed(self) -> None:
        """After an assignment change: swap the table, re-read blocks showing changed ids."""
        pr, sv = self.proofreader, self._stream.volume if self._stream else None
        canvas = self.canvas
        snapshot = canvas.raw.copy() if canvas is not None else None

        def work() -> np.ndarray | None:
            mapping = pr.mapping()
            changed = self.remap.update(mapping)
            if sv is not None:
                sv.reload_containing(changed)
            # the canvas is remapped here too, not on the main thread
            return None if snapshot is None else self.remap(snapshot)

        def done(shown: np.ndarray | None) -> None:
            self._redraw()
            self._refresh_meshes()  # after the swap: meshes of the segments now shown
            if self.canvas is not None and self.canvas is canvas and shown is not None:
                self.canvas.show_remapped(snapshot, shown, self.remap)

        self._submit(work, done)

    def _on_written(self, regions: list[Region]) -> None:
        """Write-back thread: voxels changed on disk; re-read those cached blocks."""
        sv = self._stream.volume if self._stream else None
        if sv is None or self._closed:
            return
        sv.volume.refresh()
        for scale, start, stop in regions:
            sv.reload_region(scale, start, stop)
        self._bridge.call.emit(self._after_write)

    def _on_relabelled(self, labels: list[int]) -> None:
        """Write-back thread: the server merged or cleaved these labels; re-read their blocks."""
        sv = self._stream.volume if self._stream else None
        if sv is None or self._closed or not labels:
            return
        sv.reload_containing(np.asarray(labels, dtype=np.uint64))
        self._bridge.call.emit(self._after_write)

    def _after_write(self) -> None:
        self._redraw()
        self._refresh_meshes()
        for callback in list(self.written):
            callback()

    def _refresh_meshes(self) -> None:
        """Shown meshes of this segmentation follow its edits."""
        from napari_connecto.viewer.meshes import mesh_controller_of

        controller = mesh_controller_of(self.layer)
        if controller is not None and controller.shown:
            controller.refresh()

    # -- live edits -----------------------------------------------------------------------
    def _poll(self) -> None:
        from qtpy.QtWidgets import QApplication

        if self.canvas is not None and QApplication.mouseButtons() == Qt.MouseButton.NoButton:
            self.canvas.flush()  # never mid-stroke: one stroke is one edit
        if self._ops._work_queue.qsize():
            return
        self._submit(self._sync_work, self._synced)

    def _sync_work(self) -> tuple[list[JournalEntry], list[Region], list[Any]]:
        pr = self.proofreader
        foreign = pr.sync()
        regions: list[Region] = []
        patches = []  # others' voxel edits, for the paint canvas
        for entry in foreign:
            if entry.volume != pr.key or entry.writeback == "none":
                continue
            patch = pr.journal.patch(entry.ref if entry.ref is not None else entry.seq)
            if patch is not None:
                patches.append((patch, "undo" if entry.kind == "undo" else "do"))
        relabelled: list[int] = []
        done = [e for e in foreign if e.volume == pr.key and e.writeback != "none"]
        self._foreign_pending.update(e.seq for e in done if e.writeback == "pending")
        done = [e for e in done if e.writeback != "pending"]
        for seq in sorted(self._foreign_pending):
            entry = pr.journal.entry(seq)
            if entry.writeback != "pending":
                self._foreign_pending.discard(seq)
                done.append(entry)
        for entry in done:  # written back already: read those blocks again now
            source = entry.ref if entry.ref is not None else entry.seq
            patch = pr.journal.patch(source)
            if patch is not None:
                regions.append((patch.scale, patch.start, patch.stop))
            elif pr.server is not None:
                relabelled += server_labels(pr.journal.payload(source))
        if relabelled:
            self._on_relabelled(relabelled)
        return foreign, regions, patches

    def _synced(self, result: tuple[list[JournalEntry], list[Region], list[Any]]) -> None:
        foreign, regions, patches = result
        if self.canvas is not None:
            for patch, direction in patches:
                self.canvas.apply_patch(patch, direction)
        if regions:
            self._submit(lambda: self._on_written(_with_pyramid(self, regions)))
        if not foreign:
            return
        if any(e.volume == self.proofreader.key and e.kind != "paint" for e in foreign):
            self._remap_changed()
        authors = sorted({e.author for e in foreign})
        self.notify(f"{len(foreign)} edit(s) by {', '.join(authors)} taken in", False)
        self._changed(foreign)

    def _changed(self, entries: list[JournalEntry]) -> None:
        for callback in list(self.changed):
            callback(entries)

    # -- edits ------------------------------------------------------------------------------
    def _submit_edit(self, call: Callable[[], int | None], what: str) -> Future[Any]:
        """Run an edit on the edit thread; report it (and redraw) on the main thread."""
        pr = self.proofreader

        def work() -> JournalEntry | None:
            seq = call()
            return None if seq is None else pr.journal.entry(int(seq))

        return self._submit(work, lambda entry: self._edited(entry, what), what=what)

    def _edited(self, entry: JournalEntry | None, what: str) -> None:
        """Main thread, after an own edit committed."""
        if entry is None:
            return
        if entry.volume == self.proofreader.key and entry.kind in (
            "merge",
            "cleave",
            "undo",
            "redo",
        ):
            self._remap_changed()
        self.notify(f"{what}: {entry.summary}", False)
        self._changed([entry])

    def merge(self, keep: int, absorb: int) -> Future[Any]:
        """Merge segment ``absorb`` into ``keep`` (asks first if ``absorb`` is large)."""
        pr = self.proofreader

        def asked(size: int) -> None:
            if size > LARGE_SEGMENT_FRAGMENTS and not self.confirm(
                f"Segment {absorb} has {size} fragments. Merge it into {keep}?"
            ):
                self.notify("merge cancelled", False)
                return
            self._submit_edit(lambda: pr.merge(keep, absorb), "merged")

        return self._submit(lambda: len(pr.fragments_of(absorb)), asked, what="merge")

    def cleave(self, segment: int, fragments: list[int]) -> Future[Any]:
        """Cut ``fragments`` off ``segment`` into a new segment."""
        pr = self.proofreader
        return self._submit_edit(lambda: pr.cleave(segment, fragments)[0], "split")

    def add_synapse(self, pre: np.ndarray, posts: list[np.ndarray]) -> Future[Any]:
        """Add a synapse; partners are the segments at the sites."""
        pr = self.proofreader
        return self._submit_edit(lambda: pr.add_synapse(pre, posts), "synapse added")

    def edit(self, call: Callable[[Proofreader], int | None], what: str) -> Future[Any]:
        """Run any proofreader edit (``call(proofreader) -> seq``) on the edit thread."""
        pr = self.proofreader
        return self._submit_edit(lambda: call(pr), what)

    def undo(self) -> Future[Any]:
        """Undo the latest edit of this author (any kind)."""
        return self._flip(self.proofreader.undo, "undone")

    def redo(self) -> Future[Any]:
        """Redo the most recently undone edit."""
        return self._flip(self.proofreader.redo, "redone")

    def _flip(self, action: Callable[[], int | None], what: str) -> Future[Any]:
        pr = self.proofreader

        def work() -> tuple[int | None, Any, Any]:
            seq = action()
            if seq is None:
                return None, None, None
            marker = pr.journal.marker_of(seq)
            return seq, marker, pr.journal.patch(seq)

        def done(result: tuple[int | None, Any, Any]) -> None:
            seq, marker, patch = result
            if seq is None:
                self.notify(f"nothing to {'undo' if what == 'undone' else 'redo'}", False)
                return
            if patch is not None and self.canvas is not None:
                self.canvas.apply_patch(patch, "undo" if what == "undone" else "do")
            self._edited(marker, what)

        return self._submit(work, done, what=what[:-1])

    # -- life cycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop syncing, finish queued edits, unbind keys and mouse callbacks."""
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # Qt deleted it already (app quitting)
            self._timer.stop()
        if self.canvas is not None:
            self.canvas.close()  # journals what is left on it first
        self._ops.shutdown(wait=True)
        self._closed = True
        if self._stream is not None and self._plain_volume is not None:
            sv = self._stream.volume
            sv.volume = self._plain_volume  # the layer shows stored ids again
            sv.reload_where(lambda *_: True)
            self._stream.mark_dirty()
        self._unbind()
        if self._on_click in self.layer.mouse_drag_callbacks:
            self.layer.mouse_drag_callbacks.remove(self._on_click)
        self.set_mode("navigate")


def attach_proofreading(
    viewer: napari.Viewer,
    store: AnnotationStore,
    layer: Labels,
    *,
    area: str = "right",
) -> ProofreadingPanel:
    """Dock the proofreading panel and start proofreading ``layer`` with ``store``.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    store : AnnotationStore
        Where edits are journaled (and synapses live).
    layer : napari.layers.Labels
        The segmentation layer (opened by napari-connecto).
    area : str
        Dock area.

    Returns
    -------
    ProofreadingPanel
        The docked panel (its status line says why if proofreading could not start).
    """
    from napari_connecto._qt.proofreading_panel import ProofreadingPanel

    panel = ProofreadingPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Proofreading", area=area, tabify=True)
    panel.start(store, layer)
    return panel


def _with_pyramid(session: ProofreadingSession, regions: list[Region]) -> list[Region]:
    """Scale-0 regions another process wrote, with the coarser regions it recomputed."""
    from napari_connecto.proofreading.downsample import pyramid_regions

    volume = session.proofreader.volume
    if volume is None:
        return regions
    out: list[Region] = []
    for scale, start, stop in regions:
        out += pyramid_regions(volume, start, stop) if scale == 0 else [(scale, start, stop)]
    return out


def _ask(text: str) -> bool:
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(None, "napari-connecto", text)
    return answer == QMessageBox.StandardButton.Yes
