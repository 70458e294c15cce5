"""Merge and cleave on a server-side agglomeration (mixed into :class:`Proofreader`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.annotations.ids import to_db_one
from napari_connecto.errors import EditError
from napari_connecto.proofreading.assignments import synapses_of
from napari_connecto.proofreading.patches import VoxelPatch
from napari_connecto.proofreading.server_edits import (
    DvidAgglomeration,
    check_paint_labels,
    server_cleave_record,
    server_merge_record,
)
from napari_connecto.proofreading.voxels import current_voxels

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from napari_connecto.annotations.store import AnnotationStore

__all__ = ["ServerEditing"]


class ServerEditing:
    """Merges and cleaves journaled here and written back to the server (DVID)."""

    key: str
    server: DvidAgglomeration | None
    store: AnnotationStore

    if TYPE_CHECKING:  # provided by Proofreader
        from napari_connecto.proofreading.journal import Journal
        from napari_connecto.volume.volume import Volume

        journal: Journal

        @property
        def stored_volume(self) -> Volume: ...  # noqa: D102

        def _commit(self, build: Callable[[Connection], Any], **options: Any) -> int: ...

        def commit(self, timeout: float | None = None) -> bool: ...  # noqa: D102

        def fragment_at(self, positions_nm: Any) -> np.ndarray: ...  # noqa: D102

    def _server_merge(self, server: DvidAgglomeration, keep: int, absorb: int) -> int:
        if keep == absorb:
            raise EditError(f"{keep} and {absorb} are one segment already")
        # earlier merges and cleaves must have reached the server: the supervoxels read
        # now are the ones an undo gives back
        self.commit()
        moved = server.supervoxels(absorb)
        for name, label, svs in (("keep", keep, None), ("absorb", absorb, moved)):
            if not (svs if svs is not None else server.supervoxels(label)):
                raise EditError(f"{name}={label} is no segment on the server (any more)")
        k, a = to_db_one(keep), to_db_one(absorb)
        svs_db = [to_db_one(s) for s in moved]
        return self._commit(lambda c: server_merge_record(c, self.key, k, a, svs_db, time.time()))

    def _server_cleave(
        self, server: DvidAgglomeration, segment: int, fragments: Sequence[int]
    ) -> tuple[int, int]:
        chosen = sorted({int(f) for f in fragments})
        if not chosen:
            raise EditError("a cleave needs at least one supervoxel")
        self.commit()
        current = set(server.supervoxels(segment))
        stray = [f for f in chosen if f not in current]
        if stray:
            raise EditError(
                f"supervoxel(s) {', '.join(map(str, stray[:5]))} are not part of segment "
                f"{segment} on the server"
            )
        if len(chosen) == len(current):
            raise EditError(f"cleaving every supervoxel of {segment} changes nothing")
        new = server.new_label()
        seg, new_db = to_db_one(segment), to_db_one(new)
        chosen_db = [to_db_one(f) for f in chosen]
        lookup = self._sites_looked_up(seg)  # no server request inside the journal's lock
        seq = self._commit(
            lambda c: server_cleave_record(
                c, self.key, seg, chosen_db, new_db, fragment_at=lookup, now=time.time()
            )
        )
        return seq, new

    def _sites_looked_up(self, segment_db: int) -> Callable[[np.ndarray], np.ndarray]:
        """A supervoxel lookup answering from one request for the segment's synapse sites.

        Sites that appeared since (another session's edit) are asked for as they come.
        """
        rows = self.store.run_read(lambda c: synapses_of(c, [segment_db]))
        sites = np.array(
            [[r[f"{s}_{a}"] for a in "zyx"] for r in rows for s in ("pre", "post")],
            dtype=np.float64,
        ).reshape(-1, 3)
        known = dict(zip(map(tuple, sites), self.fragment_at(sites), strict=True))

        def lookup(positions: np.ndarray) -> np.ndarray:
            pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
            missing = [p for p in map(tuple, pos) if p not in known]
            if missing:
                known.update(zip(missing, self.fragment_at(np.array(missing)), strict=True))
            return np.array([known[p] for p in map(tuple, pos)], dtype=np.uint64)

        return lookup

    def _as_supervoxels(self, patch: VoxelPatch) -> tuple[VoxelPatch, list[int]]:
        """A patch drawn in the server's body labels, as the supervoxels it writes.

        Painted voxels get supervoxel ``label``; every other voxel keeps its supervoxel,
        so an undo writes back exactly what was there. Also returns the bodies touched
        (for conflict detection).
        """
        assert self.server is not None
        labels = [int(v) for v in np.unique(patch.after[patch.mask])]
        check_paint_labels(self.server, labels)
        stored = current_voxels(self.journal, self.stored_volume, self.key, patch.start, patch.stop)
        after = stored.copy()
        after[patch.mask] = patch.after[patch.mask]
        converted = VoxelPatch.from_change(patch.start, stored, after)
        if converted is None:
            raise EditError("the paint changes no supervoxel: nothing to write")
        bodies = sorted({int(v) for v in np.unique(patch.before[patch.mask])} | set(labels))
        return converted, [to_db_one(b) for b in bodies]
