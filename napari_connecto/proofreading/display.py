"""The display remap: fragment ids as stored -> segment ids as shown, swapped after edits.

It is a read processor of the volume a segmentation layer streams, so the remap runs
on the fetch workers, never on the main thread. After a merge or split the table is
swapped and :meth:`DisplayRemap.update` says which shown ids changed, so only cached
blocks showing one of them are read again.
"""

from __future__ import annotations

import threading

import numpy as np

from napari_connecto.volume.processors import RemapIds

__all__ = ["DisplayRemap", "changed_display_ids"]


def changed_display_ids(old: RemapIds, new: RemapIds) -> np.ndarray:
    """Ids shown under ``old`` whose voxels show something else under ``new`` (uint64)."""
    fragments = np.union1d(old.keys, new.keys).astype(np.uint64)
    if fragments.size == 0:
        return fragments
    before, after = old(fragments), new(fragments)
    moved = before != after
    return np.unique(np.concatenate([before[moved], after[moved]]))


class DisplayRemap:
    """A swappable fragment -> segment read processor (thread-safe swap)."""

    def __init__(self, mapping: RemapIds) -> None:
        self._mapping = mapping
        self._lock = threading.Lock()

    @property
    def mapping(self) -> RemapIds:
        """The table in use."""
        return self._mapping

    def update(self, mapping: RemapIds) -> np.ndarray:
        """Use ``mapping`` from now on; return the shown ids that changed."""
        with self._lock:
            old, self._mapping = self._mapping, mapping
        return changed_display_ids(old, mapping)

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """Remap one block (dtype kept)."""
        mapping = self._mapping
        if mapping.keys.size == 0:
            return data
        return mapping(data)

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        """Unchanged."""
        return np.dtype(dtype)
