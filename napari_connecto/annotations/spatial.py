"""A portable spatial index: synapse centres binned into cells, one B-tree column.

Each synapse stores ``cell``, its centre's cell packed into one integer with z most
significant, so the cells of a box that share (z, y) are one contiguous integer range.
A box query is then a handful of ``cell BETWEEN lo AND hi`` ranges (index range scans in
SQLite and PostgreSQL alike) plus exact bounds on the coordinates.
"""

from __future__ import annotations

import math

import numpy as np

from napari_connecto.geometry import BBox

__all__ = ["CELL_NM", "MAX_CELLS", "MAX_RANGES", "cell_ids", "cell_of", "cell_ranges"]

CELL_NM = (320.0, 2048.0, 2048.0)
"""Cell size in nm, z, y, x: about a proofreading view across, a few sections deep."""
MAX_RANGES = 256
"""Boxes needing more (z, y) cell rows than this are scanned by coordinate bounds instead."""
MAX_CELLS = 2048
"""Boxes touching more cells than this are scanned by coordinate bounds instead."""
_BITS = 21
_BIAS = 1 << (_BITS - 1)
_LIMIT = (1 << _BITS) - 1


def _bins(values: np.ndarray, size: float) -> np.ndarray:
    """Cell index along one axis, biased to be non-negative and clipped to the field."""
    index = np.floor(np.asarray(values, dtype=np.float64) / size).astype(np.int64) + _BIAS
    return np.clip(index, 0, _LIMIT)


def cell_of(z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Packed cell ids (int64) of centres at ``z, y, x`` nm."""
    cz, cy, cx = (_bins(v, s) for v, s in zip((z, y, x), CELL_NM, strict=True))
    return (cz << (2 * _BITS)) | (cy << _BITS) | cx


def cell_ranges(box: BBox) -> list[tuple[int, int]] | None:
    """Inclusive ``(lo, hi)`` cell id ranges covering ``box``; ``None`` if too many.

    Parameters
    ----------
    box : BBox
        The query box in nm.

    Returns
    -------
    list of tuple of int, or None
        One range per (z, y) cell row the box touches, or ``None`` when that is more
        than :data:`MAX_RANGES` (the caller then filters on coordinates alone).
    """
    lo = [int(_bins(np.array(v), s)) for v, s in zip(box.start, CELL_NM, strict=True)]
    # stop is exclusive: the last cell is the one holding the largest point below stop
    hi = [
        int(_bins(np.array(math.nextafter(v, -math.inf)), s))
        for v, s in zip(box.stop, CELL_NM, strict=True)
    ]
    if any(h < low for low, h in zip(lo, hi, strict=True)):
        return []
    rows = (hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1)
    if rows > MAX_RANGES:
        return None
    ranges = []
    for cz in range(lo[0], hi[0] + 1):
        for cy in range(lo[1], hi[1] + 1):
            base = (cz << (2 * _BITS)) | (cy << _BITS)
            ranges.append((base | lo[2], base | hi[2]))
    return ranges


def cell_ids(box: BBox) -> list[int] | None:
    """Every cell id ``box`` touches; ``None`` if more than :data:`MAX_CELLS`.

    One ``cell IN (...)`` list lets the database seek each cell of the ``(cell, z, ...)``
    index with the z bounds applied inside the seek; a few wide ``BETWEEN`` ranges made
    SQLite's planner pick a skip-scan over the whole index instead (20-200 ms at 10M).
    """
    ranges = cell_ranges(box)
    if ranges is None:
        return None
    if sum(hi - lo + 1 for lo, hi in ranges) > MAX_CELLS:
        return None
    return [cell for lo, hi in ranges for cell in range(lo, hi + 1)]
