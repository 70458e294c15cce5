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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto import _killpoints
from napari_connecto.errors import ChunkError, ConnectoError, EditError, RemoteError
from napari_connecto.proofreading.downsample import pyramid_regions, update_pyramid
from napari_connecto.proofreading.priority import ForegroundGate
from napari_connecto.proofreading.server_edits import (
    agglomeration_of,
    aligned_box,
    apply_server_edit,
    supervoxel_volume,
    write_block,
)
from napari_connecto.proofreading.voxels import overlay_patch
from napari_connecto.volume.generation import bump_generation
from napari_connecto.volume.sidecar import sidecar_path
from napari_connecto.volume.volume import Volume

if TYPE_CHECKING:
    from napari_connecto.proofreading.journal import Journal, JournalEntry
    from napari_connecto.proofreading.patches import Direction, VoxelPatch
    from napari_connecto.volume.scale import Index3

__all__ = ["Region", "WriteBack", "lock_path_for"]

logger = logging.getLogger(__name__)

Region = tuple[int, "Index3", "Index3"]
"""``(scale, start, stop)`` of voxels written."""

RETRY_FIRST_S = 1.0
"""Wait before asking a server that did not answer again (doubling up to RETRY_MAX_S)."""
RETRY_MAX_S = 30.0

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def lock_path_for(volume: Volume) -> Path | None:
    """The lock file serialising writers of a local volume (``None`` for remote ones)."""
    return sidecar_path(volume, ".connecto-writeback.lock")


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
    gate : ForegroundGate, optional
        Edits in progress, which the write-back steps aside for at its checkpoints.
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
        gate: ForegroundGate | None = None,
    ) -> None:
        self.journal = journal
        self.gate = gate or ForegroundGate()
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
        if self.server is not None:  # paints write supervoxels; DVID makes its own pyramid
            self._raw = supervoxel_volume(volume)
        self.retry_at: float | None = None
        """``time.monotonic()`` before which a server that did not answer is not asked again."""
        self._backoff = RETRY_FIRST_S

    def run_pending(self) -> int:
        """Write back every pending edit of the volume, oldest first; return how many.

        An edit whose write-back fails is marked ``failed`` with the reason (shown in
        the history) and the rest go on; the failure is logged. A server that does not
        answer (timeouts, 5xx, 429) keeps the edit pending: it and the edits after it
        are tried again after a backoff (:attr:`retry_at`), in journal order.
        """
        if self.retry_at is not None and time.monotonic() < self.retry_at:
            return 0
        done = 0
        with _volume_lock(self.key, self._lock_path), self._store_lock():
            # after the lock: another process may have finished some of them meanwhile
            for entry in self.journal.pending(self.key):
                self.gate.step_aside()
                try:
                    regions, labels = self._apply(entry)
                except (ConnectoError, OSError) as exc:
                    if self._transient(exc):
                        self._back_off(entry.seq, exc)
                        break
                    logger.error("write-back of edit %d failed: %s", entry.seq, exc)
                    self.journal.set_writeback(entry.seq, "failed", str(exc))
                    continue
                _killpoints.reach("after-volume-write")
                if regions:
                    bump_generation(self.volume)  # caches derived from the voxels go stale
                self.gate.step_aside()
                self.journal.set_writeback(entry.seq, "done")
                self.retry_at, self._backoff = None, RETRY_FIRST_S
                done += 1
                if self.on_written is not None and regions:
                    self.on_written(regions)
                if self.on_relabelled is not None and labels:
                    self.on_relabelled(labels)
        return done

    def _store_lock(self) -> contextlib.AbstractContextManager[None]:
        """Remote volumes have no lock file: writers of one store take the store's lock."""
        if self._lock_path is not None:
            return contextlib.nullcontext()
        return self.journal.store.lock(f"writeback:{self.key}")

    def _transient(self, exc: BaseException) -> bool:
        """Whether the server may answer later (no answer, 429, 5xx; DVID chunk reads)."""
        if isinstance(exc, RemoteError):
            return exc.status is None or exc.status == 429 or exc.status >= 500
        return self.server is not None and isinstance(exc, ChunkError)

    def _back_off(self, seq: int, exc: BaseException) -> None:
        logger.warning("write-back of edit %d waits for the server: %s", seq, exc)
        self.journal.set_writeback(seq, "pending", f"retrying: {exc}")
        self.retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, RETRY_MAX_S)

    def _apply(self, entry: JournalEntry) -> tuple[list[Region], list[int]]:
        """Apply one journal row; the regions written and the labels relabelled."""
        source = entry.ref if entry.kind in ("undo", "redo") else entry.seq
        if source is None:
            raise EditError(f"journal row {entry.seq} ({entry.kind}) points at no edit")
        direction: Direction = "undo" if entry.kind == "undo" else "do"
        if entry.kind in ("undo", "redo", "merge", "cleave") and self.server is not None:
            payload = self.journal.payload(source)
            if payload.get("server"):
                kind = entry.kind if entry.ref is None else self.journal.entry(source).kind
                return [], apply_server_edit(self.server, kind, payload, direction)
        patch = self.journal.patch(source)
        if patch is None:
            return [], []
        return self.write_patch(patch, direction), []

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
        if self.server is not None:
            return self._write_server_patch(patch, direction)
        raw = self._raw
        raw.refresh()
        current = raw.read_voxels(0, patch.start, patch.stop)
        wanted = patch.apply(current, direction)
        if not np.array_equal(wanted, current):
            self.gate.step_aside()
            raw.write_batch([(0, patch.start, wanted)])
        _killpoints.reach("before-pyramid")
        if not self.pyramid:
            return [(0, patch.start, patch.stop)]
        self.gate.step_aside()
        return update_pyramid(raw, patch.start, patch.stop, labels=True)

    @property
    def stored(self) -> Volume:
        """The volume as edits write it (no display processors; DVID: its supervoxels)."""
        return self._raw

    def _write_server_patch(self, patch: VoxelPatch, direction: Direction) -> list[Region]:
        """Read-modify-write the server blocks around a patch (DVID computes coarser scales)."""
        backend = self._raw.backend
        offset = np.asarray(self._raw.scales[0].voxel_offset)
        block = write_block(self._raw)
        lo, hi = aligned_box(
            np.asarray(patch.start) + offset, np.asarray(patch.stop) + offset, block
        )
        start = tuple(int(v) for v in np.asarray(lo) - offset)
        stop = tuple(int(v) for v in np.asarray(hi) - offset)
        current = np.array(backend.read(0, start, stop), copy=True)  # type: ignore[arg-type]
        wanted = current.copy()
        overlay_patch(wanted, start, patch, direction)
        if not np.array_equal(wanted, current):
            backend.write(0, start, wanted)  # type: ignore[arg-type]
        _killpoints.reach("before-pyramid")
        return pyramid_regions(self.volume, patch.start, patch.stop)
