"""Write journaled voxel edits back to the volume, in journal order, until done.

Every row of the journal with ``writeback = 'pending'`` for a volume is applied in seq
order: a paint or redo writes the patch's *after* voxels, an undo its *before* voxels,
only where the edit changed them (so a replay after a crash is harmless), then the
coarser scales of the region are recomputed and the row is marked done. Chunk files are
replaced atomically by the backends. A lock file serialises writers of one volume across
processes, so read-modify-write of one chunk never interleaves.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto import _killpoints
from napari_connecto.errors import ConnectoError, EditError
from napari_connecto.proofreading.downsample import update_pyramid
from napari_connecto.proofreading.server_edits import agglomeration_of, apply_server_edit
from napari_connecto.volume.volume import Volume

if TYPE_CHECKING:
    from napari_connecto.proofreading.journal import Journal, JournalEntry
    from napari_connecto.proofreading.patches import Direction, VoxelPatch
    from napari_connecto.volume.scale import Index3

__all__ = ["Region", "WriteBack", "lock_path_for"]

logger = logging.getLogger(__name__)

Region = tuple[int, "Index3", "Index3"]
"""``(scale, start, stop)`` of voxels written."""

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def lock_path_for(volume: Volume) -> Path | None:
    """The lock file serialising writers of a local volume (``None`` for remote ones)."""
    source = volume.source
    if source.is_remote:
        return None
    path = Path(source.location)
    if path.is_dir():
        return path / ".connecto-writeback.lock"
    return path.with_name(f".{path.name}.connecto-writeback.lock")


@contextlib.contextmanager
def _volume_lock(key: str, path: Path | None) -> Iterator[None]:
    with _LOCKS_GUARD:
        local = _LOCKS.setdefault(key, threading.Lock())
    with local:
        if path is None:
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock (a killed process releases it too)


class WriteBack:
    """Applies the pending voxel edits of one volume.

    Parameters
    ----------
    journal : Journal
        The edit journal.
    volume : Volume
        The segmentation, opened writable.
    key : str
        The volume's key in the journal.
    on_written : callable, optional
        Called with the regions written (every scale) after each edit is done; runs on
        the thread that wrote (the viewer turns it into a cache invalidation).
    pyramid : bool
        Recompute the coarser scales of each edited region (default). Turn it off only
        for a volume whose pyramid is rebuilt afterwards as a whole.
    on_relabelled : callable, optional
        Called with the labels whose voxels read differently after a server-side merge
        or cleave (DVID) was written back.
    """

    def __init__(
        self,
        journal: Journal,
        volume: Volume,
        key: str,
        on_written: Callable[[list[Region]], None] | None = None,
        *,
        pyramid: bool = True,
        on_relabelled: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.journal = journal
        self.volume = volume
        self.key = key
        self.on_written = on_written
        self.on_relabelled = on_relabelled
        self.pyramid = pyramid
        self.server = agglomeration_of(volume)
        """Where merges and cleaves are written back, if a server keeps the agglomeration."""
        self._lock_path = lock_path_for(volume)
        self._raw = (
            Volume(volume.backend, max_read_bytes=volume.max_read_bytes)
            if volume.read_processors or volume.write_processors
            else volume
        )

    def run_pending(self) -> int:
        """Write back every pending edit of the volume, oldest first; return how many.

        An edit whose write-back fails is marked ``failed`` with the reason (shown in
        the history) and the rest go on; the failure is logged.
        """
        done = 0
        with _volume_lock(self.key, self._lock_path):
            # after the lock: another process may have finished some of them meanwhile
            for entry in self.journal.pending(self.key):
                try:
                    regions = self._apply(entry)
                except (ConnectoError, OSError) as exc:
                    logger.error("write-back of edit %d failed: %s", entry.seq, exc)
                    self.journal.set_writeback(entry.seq, "failed", str(exc))
                    continue
                _killpoints.reach("after-volume-write")
                self.journal.set_writeback(entry.seq, "done")
                done += 1
                if self.on_written is not None and regions:
                    self.on_written(regions)
        return done

    def _apply(self, entry: JournalEntry) -> list[Region]:
        source = entry.ref if entry.kind in ("undo", "redo") else entry.seq
        if source is None:
            raise EditError(f"journal row {entry.seq} ({entry.kind}) points at no edit")
        direction: Direction = "undo" if entry.kind == "undo" else "do"
        if entry.kind in ("undo", "redo", "merge", "cleave") and self.server is not None:
            payload = self.journal.payload(source)
            if payload.get("server"):
                kind = entry.kind if entry.ref is None else self.journal.entry(source).kind
                labels = apply_server_edit(self.server, kind, payload, direction)
                if self.on_relabelled is not None:
                    self.on_relabelled(labels)
                return []
        patch = self.journal.patch(source)
        if patch is None:
            return []
        return self.write_patch(patch, direction)

    def write_patch(self, patch: VoxelPatch, direction: Direction) -> list[Region]:
        """Write one patch and refresh the coarser scales of its region.

        Voxels are read and written as stored (the volume's processors, e.g. a
        fragment -> segment display mapping, are not applied). The coarser scales are
        recomputed even when the finest one already holds the patch: a writer killed
        between the two leaves them stale, and the replay must mend them.

        Raises
        ------
        EditError
            If the patch is not at the finest scale, or its box does not fit it.
        """
        if patch.scale != 0:
            raise EditError(f"voxel edits are written at scale 0, this one is at {patch.scale}")
        raw = self._raw
        raw.refresh()
        current = raw.read_voxels(0, patch.start, patch.stop)
        wanted = patch.apply(current, direction)
        if not np.array_equal(wanted, current):
            raw.write_batch([(0, patch.start, wanted)])
        _killpoints.reach("before-pyramid")
        if not self.pyramid:
            return [(0, patch.start, patch.stop)]
        return update_pyramid(raw, patch.start, patch.stop, labels=True)
