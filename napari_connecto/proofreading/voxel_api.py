"""Voxel edits of the proofreading API (mixed into :class:`Proofreader`): paint, erase, split.

A stroke is read (pending write-backs laid over the stored voxels), turned into a
:class:`~napari_connecto.proofreading.patches.VoxelPatch` and committed to the journal;
the write-back thread writes it to the volume afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.errors import EditConflictError, EditError, ReadOnlyError
from napari_connecto.proofreading import watershed
from napari_connecto.proofreading.paint import VoxelFrame, paint_record
from napari_connecto.proofreading.patches import VoxelPatch
from napari_connecto.proofreading.voxels import current_voxels

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from napari_connecto.proofreading.journal import Journal, JournalEntry
    from napari_connecto.proofreading.priority import ForegroundGate
    from napari_connecto.volume.processors import RemapIds
    from napari_connecto.volume.volume import Volume

__all__ = ["VoxelEditing"]

Point = Sequence[float]


class VoxelEditing:
    """Paint, erase and split at full resolution, journaled like every edit."""

    journal: Journal
    key: str
    auto_sync: bool
    server: Any
    _gate: ForegroundGate

    if TYPE_CHECKING:  # provided by Proofreader and ServerEditing

        def _commit(self, build: Callable[[Connection], Any], **options: Any) -> int: ...

        def _need_volume(self) -> Volume: ...

        def _need_local_agglomeration(self) -> Volume: ...

        def _as_supervoxels(self, patch: VoxelPatch) -> tuple[VoxelPatch, list[int]]: ...

        def _new_ids(self, count: int) -> list[int]: ...

        def frame(self) -> VoxelFrame: ...  # noqa: D102

        def mapping(self) -> RemapIds: ...  # noqa: D102

        def sync(self) -> list[JournalEntry]: ...  # noqa: D102

        def commit(self, timeout: float | None = None) -> bool: ...  # noqa: D102

    def paint_patch(
        self, patch: VoxelPatch, label: str = "paint", *, stored: np.ndarray | None = None
    ) -> int:
        """Commit a voxel patch (fragment ids as stored); return the journal seq.

        ``stored`` is the patch box as :func:`current_voxels` read it just now (after a
        sync), if the caller has it; otherwise it is read here.

        Raises
        ------
        EditConflictError
            The voxels the patch changes no longer hold its *before* values.
        EditError
            A patch outside the volume or not at scale 0.
        """
        volume = self._need_volume()
        if self.server is None:
            self._need_local_agglomeration()
        if not volume.writable:
            raise ReadOnlyError(f"{volume.source} cannot be written; open it with mode='r+'")
        if patch.scale != 0:
            raise EditError(f"paint patches are at full resolution (scale 0), not {patch.scale}")
        sc = volume.scales[patch.scale]
        if any(a < 0 for a in patch.start) or any(
            b > n for b, n in zip(patch.stop, sc.shape, strict=True)
        ):
            raise EditError(f"patch {patch.start}..{patch.stop} leaves the volume {sc.shape}")
        frame = self.frame()
        with self._gate.foreground():  # the write-back steps aside until it is committed
            if stored is None:
                if self.auto_sync:
                    self.sync()  # before the read: an edit committed after it is a conflict
                stored = current_voxels(self.journal, volume, self.key, patch.start, patch.stop)
            stale = int(np.count_nonzero(stored[patch.mask] != patch.before[patch.mask]))
            if stale:
                raise EditConflictError(
                    f"{label}: {stale} of the {patch.changed_voxels} voxels it changes were "
                    "changed since it was drawn; nothing was changed"
                )
            bodies = None
            if self.server is not None:  # drawn in server labels, written as supervoxels
                patch, bodies = self._as_supervoxels(patch)
            return self._commit(
                lambda c: paint_record(
                    c, self.key, patch, frame, now=time.time(), label=label, segments=bodies
                ),
                voxels=True,
                synced=True,
            )

    def paint(
        self, start: Sequence[int], mask: np.ndarray, label: int, *, what: str = "paint"
    ) -> int | None:
        """Set voxels under ``mask`` (a z, y, x bool block at voxel ``start``) to ``label``.

        Returns the journal seq, or ``None`` when nothing changes.
        """
        volume = self._need_volume()
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 3:
            raise EditError("a paint mask is a z, y, x block")
        begin = tuple(int(v) for v in start)
        stop = tuple(a + n for a, n in zip(begin, mask.shape, strict=True))
        with self._gate.foreground():  # the write-back steps aside until it is committed
            if self.auto_sync:
                self.sync()  # before the read: an edit committed after it is a conflict
            # the voxels "before" are what earlier edits wrote, pending write-backs included
            before = current_voxels(self.journal, volume, self.key, begin, stop)
            after = before.copy()
            after[mask] = np.asarray(label).astype(before.dtype)
            patch = VoxelPatch.from_change(begin, before, after)  # type: ignore[arg-type]
            if patch is None:
                return None
            box = tuple(
                slice(a - b, e - b) for a, e, b in zip(patch.start, patch.stop, begin, strict=True)
            )
            return self.paint_patch(patch, what, stored=before[box])

    def split(
        self,
        segment: int,
        seeds: Mapping[int, Sequence[Point]],
        *,
        image: Volume | None = None,
        region: tuple[Point, Point] | None = None,
    ) -> tuple[int, list[int]]:
        """Split a segment by a seeded watershed; return ``(seq, new ids)``.

        The segment's voxels in ``region`` are flooded from the seed groups (see
        :func:`~napari_connecto.proofreading.watershed.seeded_split`). Group 1 keeps
        its fragment ids (and so the segment); every further group's voxels are
        painted with a new id, in the order of the group numbers, as *one* paint edit
        (synapse sites on them follow). Voxels no seed reaches keep their ids.

        Parameters
        ----------
        segment : int
            The segment to split, as shown.
        seeds : mapping of int to sequence of positions
            Group (``1``, ``2``, ...) -> z, y, x seed positions in nm, each on the
            segment. Group 1 and at least one more are needed.
        image : Volume, optional
            Grey values (e.g. the EM) at the segmentation's finest resolution: the
            cut then follows membranes (their Sobel gradient); without one it follows
            the segment's narrowest parts.
        region : (start, stop), optional
            The z, y, x box in nm to split in. Default: the seeds' box grown by
            :data:`~napari_connecto.proofreading.watershed.REGION_PAD_NM` (1 um) in
            y and x, not in z (seeds in one plane split that plane in 2D).

        Returns
        -------
        (int, list of int)
            The journal seq and the new id of each group after group 1.

        Raises
        ------
        EditError
            Fewer than two groups, no group 1, a seed off the segment or outside the
            region, or a split that changes no voxel.
        """
        volume = self._need_local_agglomeration()
        self.commit()  # split the voxels earlier edits wrote
        patch, ids = watershed.split_patch(
            volume,
            self.mapping(),
            self.frame(),
            int(segment),
            seeds,
            new_ids=self._new_ids,
            image=image,
            region=region,
        )
        return self.paint_patch(patch, f"split {int(segment)}"), ids

    def erase(self, start: Sequence[int], mask: np.ndarray) -> int | None:
        """Set voxels under ``mask`` to the background label."""
        background = int(self._need_volume().backend.background_label)
        return self.paint(start, mask, background, what="erase")
