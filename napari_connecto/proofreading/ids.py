"""New segment ids that never reuse an existing one.

The store keeps the next free id of each volume in ``connecto_meta``; ids are taken in
a serialised transaction, so two editors never get the same one. The first time, the
counter starts above every id the store knows (neurons, synapse partners, assignments)
and every id in the volume (a block-wise scan of the finest scale, or the caller's
``floor``, e.g. DVID's ``nextlabel``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection, func, select

from napari_connecto.annotations import schema
from napari_connecto.annotations.ids import from_db_one
from napari_connecto.errors import EditError

if TYPE_CHECKING:
    from napari_connecto.proofreading.journal import Journal
    from napari_connecto.volume.volume import Volume

__all__ = ["MAX_SCAN_BYTES", "allocate_ids", "next_id", "volume_max_id"]

logger = logging.getLogger(__name__)

MAX_SCAN_BYTES = 64 * 2**30
"""Largest finest scale scanned for its largest id; bigger volumes need a ``floor``."""
_SLAB_BYTES = 256 * 2**20


def _meta_key(volume: str) -> str:
    return "next_id:" + hashlib.sha1(volume.encode()).hexdigest()


def volume_max_id(volume: Volume) -> int:
    """The largest id stored in the finest scale (block-wise scan; 0 for an empty volume).

    Volumes over :data:`MAX_SCAN_BYTES` are scanned at their finest scale under that size
    and a warning is logged: ids only present at full resolution may then be missed.
    """
    scales = volume.scales
    index = next((i for i, sc in enumerate(scales) if sc.nbytes <= MAX_SCAN_BYTES), None)
    if index is None:
        logger.warning("%s is too large to scan for its largest id", volume.source)
        return 0
    if index:
        logger.warning(
            "%s: largest id taken from scale %d, not full resolution", volume.source, index
        )
    sc = scales[index]
    z_chunk = max(1, sc.chunk_shape[0])
    plane = max(1, math.prod(sc.shape[1:]) * sc.dtype.itemsize)
    depth = max(z_chunk, (_SLAB_BYTES // plane) // z_chunk * z_chunk)
    top = 0
    for z in range(0, sc.shape[0], depth):
        stop = min(sc.shape[0], z + depth)
        block = volume.read_voxels(index, (z, 0, 0), (stop, *sc.shape[1:]))
        if block.size:
            top = max(top, int(np.max(block.astype(np.uint64, copy=False))))
    return top


def _store_max(conn: Connection, volume: str) -> int:
    """Largest id the store holds for neurons, synapse partners and assignments."""
    n, s, a = schema.neurons, schema.synapses, schema.assignments
    columns = [
        (n.c.id, None),
        (s.c.pre_id, None),
        (s.c.post_id, None),
        (a.c.fragment, a.c.volume == volume),
        (a.c.segment, a.c.volume == volume),
    ]
    top = 0
    for column, where in columns:
        # ids >= 2**63 are stored negative: the largest uint64 is the largest negative
        # value if there is one, else the largest non-negative one
        for sign in (column < 0, column >= 0):
            query = select(func.max(column)).where(sign)
            if where is not None:
                query = query.where(where)
            value = conn.execute(query).scalar()
            if value is not None:
                top = max(top, from_db_one(int(value)))
                break
    return top


def allocate_ids(journal: Journal, volume: str, count: int = 1, *, floor: int = 0) -> list[int]:
    """Take ``count`` new ids for ``volume`` (uint64), above ``floor`` and every known id.

    Parameters
    ----------
    journal : Journal
        The store's journal (its serialised transaction guards the counter).
    volume : str
        The volume key.
    count : int
        How many ids.
    floor : int
        Largest id already in use outside the store (the volume's, or a server's).
    """
    key = _meta_key(volume)
    meta = schema.meta

    def run(conn: Connection) -> list[int]:
        stored = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
        first = max(
            int(stored) if stored is not None else 1, floor + 1, _store_max(conn, volume) + 1
        )
        nxt = str(first + count)
        if stored is None:
            conn.execute(meta.insert().values(key=key, value=nxt))
        else:
            conn.execute(meta.update().where(meta.c.key == key).values(value=nxt))
        if first + count - 1 >= 2**64:
            raise EditError(f"no new segment ids are left in {volume} (uint64 exhausted)")
        return list(range(first, first + count))

    return journal.transaction(run)  # type: ignore[no-any-return]


def next_id(journal: Journal, volume: str) -> int | None:
    """The next id the counter of ``volume`` would give (``None``: never used yet)."""
    key = _meta_key(volume)
    meta = schema.meta
    value = journal.store.run_read(
        lambda c: c.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
    )
    return None if value is None else int(value)
