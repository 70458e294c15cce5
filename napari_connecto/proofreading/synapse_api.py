"""Synapse edits of the proofreading API (mixed into :class:`Proofreader`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.annotations.ids import to_db_one
from napari_connecto.errors import EditError
from napari_connecto.proofreading import synapse_edits

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from napari_connecto.volume.volume import Volume

__all__ = ["SynapseEditing"]

Point = Sequence[float]


class SynapseEditing:
    """Add, move, delete, re-partner and review synapses, journaled like every edit."""

    volume: Volume | None
    author: str

    if TYPE_CHECKING:  # provided by Proofreader

        def _commit(self, build: Callable[[Connection], Any], **options: Any) -> int: ...

        def segment_at(self, positions_nm: Any) -> np.ndarray: ...  # noqa: D102

    def _partner(self, given: int | None, position: Point) -> int:
        if given is not None:
            return to_db_one(given)
        if self.volume is None:
            raise EditError("give the partner id: there is no segmentation to look it up in")
        return to_db_one(int(self.segment_at(position)[0]))

    def add_synapse(
        self,
        pre: Point,
        posts: Sequence[Point],
        *,
        pre_id: int | None = None,
        post_ids: Sequence[int | None] | None = None,
        confidence: float | None = None,
    ) -> int:
        """Add a synapse: one pre site, one or more post sites (nm); return the journal seq.

        Partner ids default to the segments at the sites.
        """
        pre = synapse_edits.as_position(pre, "the pre site")
        posts = [synapse_edits.as_position(p, "a post site") for p in posts]
        ids = list(post_ids) if post_ids is not None else [None] * len(posts)
        if len(ids) != len(posts):
            raise EditError(f"{len(posts)} post sites but {len(ids)} post ids")
        pre_db = self._partner(pre_id, pre)
        post_db = [self._partner(i, p) for i, p in zip(ids, posts, strict=True)]
        return self._commit(
            lambda c: synapse_edits.add_record(
                c, pre, posts, pre_db, post_db, now=time.time(), confidence=confidence,
                reviewer=self.author,
            )
        )  # fmt: skip

    def move_synapse(
        self, synapse: int, *, pre: Point | None = None, post: Point | None = None,
        follow: bool = True,
    ) -> int:  # fmt: skip
        """Move the pre and/or post site; with ``follow`` the partner becomes the segment there."""
        if pre is None and post is None:
            raise EditError("give a new pre site, post site or both")
        pre = None if pre is None else synapse_edits.as_position(pre, "the pre site")
        post = None if post is None else synapse_edits.as_position(post, "the post site")
        pre_id = self._partner(None, pre) if follow and pre is not None and self.volume else None
        post_id = self._partner(None, post) if follow and post is not None and self.volume else None
        sid = to_db_one(synapse)
        return self._commit(
            lambda c: synapse_edits.move_record(
                c, sid, time.time(), pre=pre, post=post, pre_id=pre_id, post_id=post_id
            )
        )

    def delete_synapses(self, ids: Sequence[int] | int) -> int:
        """Delete synapses; return the journal seq."""
        db = [to_db_one(i) for i in np.atleast_1d(np.asarray(ids, dtype=np.uint64)).tolist()]
        return self._commit(lambda c: synapse_edits.delete_record(c, db))

    def set_partners(
        self, synapse: int, *, pre_id: int | None = None, post_id: int | None = None
    ) -> int:
        """Change the pre and/or post neuron of a synapse."""
        pre = None if pre_id is None else to_db_one(pre_id)
        post = None if post_id is None else to_db_one(post_id)
        sid = to_db_one(synapse)
        return self._commit(
            lambda c: synapse_edits.partners_record(c, sid, time.time(), pre_id=pre, post_id=post)
        )

    def set_status(self, ids: Sequence[int] | int, status: str) -> int:
        """Mark synapses ``verified``, ``rejected`` or ``unreviewed`` (undoable)."""
        db = [to_db_one(i) for i in np.atleast_1d(np.asarray(ids, dtype=np.uint64)).tolist()]
        return self._commit(
            lambda c: synapse_edits.status_record(c, db, status, self.author, time.time())
        )

    def verify(self, ids: Sequence[int] | int) -> int:
        """Mark synapses verified."""
        return self.set_status(ids, "verified")

    def reject(self, ids: Sequence[int] | int) -> int:
        """Mark synapses rejected."""
        return self.set_status(ids, "rejected")
