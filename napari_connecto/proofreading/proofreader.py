"""The proofreading API: every edit the GUI makes, for scripts and notebooks too.

>>> pr = Proofreader("annotations.db", "seg.zarr")          # doctest: +SKIP
>>> pr.merge(17, 42)                                        # doctest: +SKIP
>>> pr.undo(); pr.redo(); pr.commit()                       # doctest: +SKIP

Each edit is committed to the journal first (that is the moment it is acknowledged),
then applied: store rows in the same transaction, voxels by the write-back thread.
"""

from __future__ import annotations

import getpass
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto import _killpoints
from napari_connecto.annotations.ids import to_db, to_db_one
from napari_connecto.annotations.store import AnnotationStore
from napari_connecto.errors import EditError
from napari_connecto.opening import open_volume
from napari_connecto.proofreading import assignments
from napari_connecto.proofreading.ids import allocate_ids, next_id, volume_max_id
from napari_connecto.proofreading.journal import Journal, JournalEntry
from napari_connecto.proofreading.paint import VoxelFrame
from napari_connecto.proofreading.priority import ForegroundGate
from napari_connecto.proofreading.server_api import ServerEditing
from napari_connecto.proofreading.synapse_api import SynapseEditing
from napari_connecto.proofreading.voxel_api import VoxelEditing
from napari_connecto.proofreading.writeback import Region, WriteBack
from napari_connecto.volume.processors import RemapIds

if TYPE_CHECKING:
    import os

    import pandas as pd
    from sqlalchemy import Connection

    from napari_connecto.source import SourceLike
    from napari_connecto.volume.volume import Volume

__all__ = ["Proofreader"]

logger = logging.getLogger(__name__)

Point = Sequence[float]


class Proofreader(VoxelEditing, SynapseEditing, ServerEditing):
    """Edits of one segmentation and its annotation store, journaled, with undo and redo.

    Parameters
    ----------
    store : AnnotationStore, str or os.PathLike
        The annotation store (a SQLite path or ``postgresql://`` URL).
    volume : Volume or SourceLike, optional
        The segmentation (opened ``r+`` when given as a path). Without one, only
        synapse edits are possible.
    author : str, optional
        Whose undo history this is (default: the login name).
    background : bool
        Write voxels back on a worker thread (default) or before each call returns.
    auto_sync : bool
        Take in other sessions' edits before each edit (scripts). The viewer syncs on a
        timer instead, so an edit made on a stale view is reported as a conflict.
    """

    def __init__(
        self,
        store: AnnotationStore | str | os.PathLike[str],
        volume: Volume | SourceLike | None = None,
        *,
        author: str | None = None,
        background: bool = True,
        auto_sync: bool = True,
    ) -> None:
        self._own_store = not isinstance(store, AnnotationStore)
        self.store = AnnotationStore.open(store) if self._own_store else store  # type: ignore[arg-type]
        if volume is not None and not hasattr(volume, "read_voxels"):
            volume = open_volume(volume, mode="r+")  # type: ignore[arg-type]
        self.volume: Volume | None = volume  # type: ignore[assignment]
        self.key = str(volume.source) if volume is not None else ""
        self.journal = Journal(self.store, author or _login())
        self.auto_sync = auto_sync
        self.seen = self.journal.high_water()
        self._mapping: RemapIds | None = None
        self._listeners: list[Callable[[list[JournalEntry]], None]] = []
        self._written: list[Callable[[list[Region]], None]] = []
        self._relabelled: list[Callable[[list[int]], None]] = []
        self._gate = ForegroundGate()
        self._writeback = (
            WriteBack(
                self.journal,
                volume,  # type: ignore[arg-type]
                self.key,
                self._on_written,
                on_relabelled=self._on_relabelled,
                gate=self._gate,
            )
            if volume is not None
            else None
        )
        self.server = self._writeback.server if self._writeback is not None else None
        """The server that keeps the segmentation's agglomeration (DVID), if any."""
        self._background = background
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        if self._writeback is not None and background:
            self._thread = threading.Thread(
                target=self._write_loop, name="connecto-writeback", daemon=True
            )
            self._thread.start()
            self._wake.set()  # replay what a previous run left pending
        elif self._writeback is not None:
            self._writeback.run_pending()

    # -- life cycle ---------------------------------------------------------------------
    @property
    def author(self) -> str:
        """Whose history undo and redo walk."""
        return self.journal.author

    def close(self) -> None:
        """Finish pending write-backs (up to 30 s), stop the worker, close what was opened."""
        self.commit(timeout=30.0)
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Proofreader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_change(self, callback: Callable[[list[JournalEntry]], None]) -> None:
        """Call ``callback(entries)`` after own edits and after :meth:`sync` found others'."""
        self._listeners.append(callback)

    def on_written(self, callback: Callable[[list[Region]], None]) -> None:
        """Call ``callback(regions)`` (on the write-back thread) after voxels were written."""
        self._written.append(callback)

    def _on_written(self, regions: list[Region]) -> None:
        for callback in list(self._written):
            callback(regions)

    @property
    def stored_volume(self) -> Volume:
        """The segmentation as edits write it (DVID: its supervoxels)."""
        if self._writeback is None:
            raise EditError("this proofreader has no segmentation volume")
        return self._writeback.stored

    def on_relabelled(self, callback: Callable[[list[int]], None]) -> None:
        """Call ``callback(labels)`` (write-back thread) after a server merge or cleave."""
        self._relabelled.append(callback)

    def _on_relabelled(self, labels: list[int]) -> None:
        for callback in list(self._relabelled):
            callback(labels)

    def _write_loop(self) -> None:
        assert self._writeback is not None
        while True:
            retry_at = self._writeback.retry_at  # a server that did not answer: ask again
            self._wake.wait(None if retry_at is None else max(0.05, retry_at - time.monotonic()))
            self._wake.clear()
            if self._closing:
                return
            self._idle.clear()
            try:
                self._writeback.run_pending()
            except Exception:  # the worker must survive to retry later
                logger.exception("write-back stopped; it is retried on the next edit")
            if not self._wake.is_set():
                self._idle.set()

    def _kick(self) -> None:
        if self._writeback is None:
            return
        _killpoints.reach("between-store-and-volume")
        if self._background:
            self._idle.clear()
            self._wake.set()
        else:
            self._writeback.run_pending()

    def commit(self, timeout: float | None = None) -> bool:
        """Wait until every pending voxel edit of this volume is written; ``False`` on timeout."""
        if self._writeback is None:
            return True
        if not self._background:
            self._writeback.run_pending()
            return not self.journal.pending(self.key)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.journal.pending(self.key):
            self._kick()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._idle.wait(0.05 if left is None else min(0.05, left))
        return True

    def pending(self) -> int:
        """Voxel edits of this volume not yet written back."""
        return len(self.journal.pending(self.key)) if self._writeback is not None else 0

    # -- sync ---------------------------------------------------------------------------
    def sync(self) -> list[JournalEntry]:
        """Take in edits other sessions committed since the last sync; return them."""
        entries = self.journal.entries_since(self.seen)
        if entries:
            self.seen = entries[-1].seq
        foreign = [e for e in entries if e.session != self.journal.session]
        if any(e.volume == self.key and e.kind != "paint" for e in foreign):
            self._mapping = None
        if self.volume is not None and any(
            e.volume == self.key and e.writeback != "none" for e in foreign
        ):
            self.volume.refresh()  # another process may have replaced the file (HDF5)
        if foreign:
            self._notify(foreign)
        return foreign

    def _notify(self, entries: list[JournalEntry]) -> None:
        for callback in list(self._listeners):
            callback(entries)

    def _commit(
        self, build: Callable[[Connection], Any], *, voxels: bool = False, synced: bool = False
    ) -> int:
        with self._gate.foreground():
            if self.auto_sync and not synced:
                self.sync()
            seq = self.journal.commit(build, seen=self.seen)
        _killpoints.reach("after-journal-commit")
        self._after_edit(seq, voxels)
        return seq

    def _after_edit(self, seq: int, voxels: bool) -> None:
        last = self.journal.last_committed
        entry = last if last is not None and last.seq == seq else self.journal.entry(seq)
        if entry.volume == self.key and entry.kind not in ("paint",):
            self._mapping = None
        if voxels or entry.writeback == "pending":
            self._kick()
        self._notify([entry])

    # -- segments -----------------------------------------------------------------------
    def _need_volume(self) -> Volume:
        if self.volume is None:
            raise EditError("this proofreader has no segmentation volume")
        return self.volume

    def _need_local_agglomeration(self) -> Volume:
        """The volume, if its segments are ours to edit (not a server's, like DVID's)."""
        volume = self._need_volume()
        if volume.backend.server_agglomeration:
            raise EditError(
                f"{volume.source}: the server keeps this segmentation's agglomeration "
                f"({volume.format}); merge and cleave go to the server, but painting and "
                "the seeded split are not supported there"
            )
        return volume

    def mapping(self) -> RemapIds:
        """Fragment -> segment lookup table of the volume (cached until an edit changes it)."""
        if self._mapping is None:
            self._mapping = assignments.load_mapping(self.store, self.key)
        return self._mapping

    def frame(self) -> VoxelFrame:
        """The finest scale's voxel -> nm mapping."""
        sc = self._need_volume().scales[0]
        return VoxelFrame(sc.resolution.as_tuple(), sc.origin_nm.as_tuple())

    def fragment_at(self, positions_nm: np.ndarray | Point) -> np.ndarray:
        """Fragment ids (uint64) at ``(N, 3)`` nm positions (DVID: supervoxels)."""
        return self._stored_at(positions_nm, supervoxels=self.server is not None)

    def segment_at(self, positions_nm: np.ndarray | Point) -> np.ndarray:
        """Segment ids (uint64) shown at ``(N, 3)`` nm positions."""
        if self.server is not None:  # the server's agglomerated labels, as read
            return self._stored_at(positions_nm)
        return self.mapping()(self._stored_at(positions_nm))

    def _stored_at(self, positions_nm: np.ndarray | Point, supervoxels: bool = False) -> np.ndarray:
        """Voxel values read at nm positions (0 outside), or the server's supervoxels."""
        volume = self._need_volume()
        pos = np.asarray(positions_nm, dtype=np.float64).reshape(-1, 3)
        voxels = self.frame().to_voxels(pos)
        out = np.zeros(len(pos), dtype=np.uint64)
        inside = np.all((voxels >= 0) & (voxels < np.asarray(volume.scales[0].shape)), axis=1)
        if supervoxels and self.server is not None:  # one request for all of them
            if inside.any():
                out[inside] = self.server.supervoxels_at(voxels[inside])
            return out
        for i in np.flatnonzero(inside):
            v = voxels[i]
            out[i] = np.uint64(volume.read_voxels(0, tuple(v), tuple(v + 1)).reshape(-1)[0])
        return out

    def fragments_of(self, segment: int) -> np.ndarray:
        """Fragment ids (uint64) of a segment (DVID: its supervoxels, asked of the server)."""
        if self.server is not None:
            return np.asarray(self.server.supervoxels(int(segment)), dtype=np.uint64)
        frags = self.store.run_read(
            lambda c: assignments.fragments_of(c, self.key, to_db_one(segment))
        )
        return np.asarray(frags, dtype=np.int64).view(np.uint64)

    def new_id(self, count: int = 1) -> int:
        """A segment id never used before (the first of ``count`` consecutive ones).

        On DVID the ids are reserved on the server (``nextlabel``).
        """
        volume = self._need_volume()
        if self.server is not None:
            return self.server.new_label(count)
        floor = 0
        if next_id(self.journal, self.key) is None:
            floor = volume_max_id(volume)
        return allocate_ids(self.journal, self.key, count, floor=floor)[0]

    def _new_ids(self, count: int) -> list[int]:
        first = self.new_id(count)
        return list(range(first, first + count))

    def merge(self, keep: int, absorb: int) -> int:
        """Merge segment ``absorb`` into ``keep``; return the journal seq.

        On a DVID labelmap the merge is journaled here and sent to the server by the
        write-back (``POST merge``); :meth:`commit` waits for it.
        """
        if self.server is not None:
            return self._server_merge(self.server, keep, absorb)
        self._need_local_agglomeration()
        k, a = to_db_one(keep), to_db_one(absorb)
        return self._commit(lambda c: assignments.merge_record(c, self.key, k, a, time.time()))

    def cleave(self, segment: int, fragments: Sequence[int]) -> tuple[int, int]:
        """Move ``fragments`` of ``segment`` to a new segment; return ``(seq, new id)``.

        On a DVID labelmap the fragments are supervoxels, the new id is reserved on the
        server (``nextlabel``) and the write-back cleaves there.
        """
        if self.server is not None:
            return self._server_cleave(self.server, segment, fragments)
        self._need_local_agglomeration()
        self.commit()  # synapse sites are looked up in the voxels earlier edits wrote
        new = self.new_id()
        frags = [int(f) for f in to_db(np.asarray(fragments, dtype=np.uint64))]
        seg = to_db_one(segment)
        seq = self._commit(
            lambda c: assignments.cleave_record(
                c,
                self.key,
                seg,
                frags,
                to_db_one(new),
                fragment_at=self.fragment_at,
                now=time.time(),
            )
        )
        return seq, new

    # -- history ------------------------------------------------------------------------
    def undo(self) -> int | None:
        """Undo this author's latest edit (any kind); return its seq, ``None`` if none."""
        return self._flip(self.journal.undo)

    def redo(self) -> int | None:
        """Redo the most recently undone edit; return its seq, ``None`` if none."""
        return self._flip(self.journal.redo)

    def _flip(self, action: Callable[[], int | None]) -> int | None:
        with self._gate.foreground():
            if self.auto_sync:
                self.sync()
            seq = action()
        if seq is not None:
            marker = self.journal.marker_of(seq)
            self._after_edit(seq if marker is None else marker.seq, False)
        return seq

    def history(self, limit: int = 200, *, everyone: bool = False) -> pd.DataFrame:
        """The latest journal rows (this author's unless ``everyone``), newest first."""
        return self.journal.history(author=None if everyone else self.author, limit=limit)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
