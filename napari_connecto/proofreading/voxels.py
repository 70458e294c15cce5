"""The voxels of a region as the journal says they are: stored, plus edits not yet written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_connecto.proofreading.journal import Journal
    from napari_connecto.volume.volume import Volume

__all__ = ["current_voxels"]


def current_voxels(
    journal: Journal, volume: Volume, key: str, start: Sequence[int], stop: Sequence[int]
) -> np.ndarray:
    """Scale-0 voxels ``[start, stop)`` with every pending write-back of ``key`` applied.

    The pending list is read before the voxels: an edit written back in between is then
    applied twice, which changes nothing (patches write only what they changed).
    """
    begin = tuple(int(a) for a in start)
    end = tuple(int(b) for b in stop)
    pending = journal.pending(key)
    volume.refresh()  # a file another process replaced is read anew (HDF5)
    out = np.array(volume.read_voxels(0, begin, end), copy=True)
    for entry in pending:
        source = entry.ref if entry.kind in ("undo", "redo") else entry.seq
        if source is None:
            continue
        patch = journal.patch(source)
        if patch is None or patch.scale != 0:
            continue
        lo = [max(a, b) for a, b in zip(patch.start, begin, strict=True)]
        hi = [min(a, b) for a, b in zip(patch.stop, end, strict=True)]
        if any(b <= a for a, b in zip(lo, hi, strict=True)):
            continue
        here = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, begin, strict=True))
        there = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, patch.start, strict=True))
        mask = patch.mask[there]
        values = patch.values("undo" if entry.kind == "undo" else "do")[there]
        out[here][mask] = values[mask]
    return out
