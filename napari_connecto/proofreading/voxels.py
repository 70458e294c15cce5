"""The voxels of a region as the journal says they are: stored, plus edits not yet written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection, case, select

from napari_connecto.annotations import schema

if TYPE_CHECKING:
    from napari_connecto.proofreading.journal import Journal
    from napari_connecto.proofreading.patches import Direction, VoxelPatch
    from napari_connecto.volume.volume import Volume

__all__ = ["current_voxels", "overlay_patch", "pending_overlapping"]


def pending_overlapping(
    journal: Journal, key: str, start: Sequence[int], stop: Sequence[int]
) -> list[tuple[int, str]]:
    """``(patch seq, direction)`` of pending write-backs of ``key`` whose box meets the region.

    One query over the patch boxes (no blobs), in journal order.
    """
    e, v = schema.edits, schema.edit_voxels
    source = case((e.c.kind.in_(("undo", "redo")), e.c.ref), else_=e.c.seq)
    conditions = [e.c.writeback == "pending", e.c.volume == key, v.c.scale == 0]
    for axis, a, b in zip("zyx", start, stop, strict=True):
        lo, size = v.c[f"start_{axis}"], v.c[f"size_{axis}"]
        conditions += [lo < int(b), lo + size > int(a)]
    query = (
        select(v.c.seq, e.c.kind)
        .select_from(e.join(v, v.c.seq == source))
        .where(*conditions)
        .order_by(e.c.seq)
    )

    def run(conn: Connection) -> list[tuple[int, str]]:
        return [(int(seq), "undo" if kind == "undo" else "do") for seq, kind in conn.execute(query)]

    return journal.store.run_read(run)  # type: ignore[no-any-return]


def current_voxels(
    journal: Journal, volume: Volume, key: str, start: Sequence[int], stop: Sequence[int]
) -> np.ndarray:
    """Scale-0 voxels ``[start, stop)`` with every pending write-back of ``key`` applied.

    The pending list is read before the voxels: an edit written back in between is then
    applied twice, which changes nothing (patches write only what they changed).
    """
    begin = tuple(int(a) for a in start)
    end = tuple(int(b) for b in stop)
    pending = pending_overlapping(journal, key, begin, end)
    volume.refresh()  # a file another process replaced is read anew (HDF5)
    out = np.array(volume.read_voxels(0, begin, end), copy=True)
    for seq, direction in pending:
        patch = journal.patch(seq)
        if patch is not None:
            overlay_patch(out, begin, patch, direction)
    return out


def overlay_patch(
    out: np.ndarray, begin: Sequence[int], patch: VoxelPatch, direction: Direction
) -> tuple[slice, ...] | None:
    """Write ``patch`` (in ``direction``) into ``out``, whose first voxel is ``begin``.

    Returns the slices of ``out`` the patch overlaps (``None`` if it misses it).
    """
    end = [a + n for a, n in zip(begin, out.shape, strict=True)]
    lo = [max(a, b) for a, b in zip(patch.start, begin, strict=True)]
    hi = [min(a, b) for a, b in zip(patch.stop, end, strict=True)]
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        return None
    here = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, begin, strict=True))
    there = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, patch.start, strict=True))
    mask = patch.mask[there]
    out[here][mask] = patch.values(direction)[there][mask]
    return here
