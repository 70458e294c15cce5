"""Merge and cleave on a server-side agglomeration (mixed into :class:`Proofreader`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.annotations.ids import to_db_one
from napari_connecto.errors import EditError
from napari_connecto.proofreading.server_edits import (
    DvidAgglomeration,
    server_cleave_record,
    server_merge_record,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["ServerEditing"]


class ServerEditing:
    """Merges and cleaves journaled here and written back to the server (DVID)."""

    key: str

    if TYPE_CHECKING:  # provided by Proofreader

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
        seq = self._commit(
            lambda c: server_cleave_record(
                c, self.key, seg, chosen_db, new_db, fragment_at=self.fragment_at, now=time.time()
            )
        )
        return seq, new
