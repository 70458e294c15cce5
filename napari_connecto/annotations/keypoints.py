"""Neuron keypoints and id look-ups from a segmentation volume, block by block.

Positions follow the viewer's convention: voxel ``i`` of a scale is centred at
``origin_nm + i * resolution`` (napari's ``translate`` + ``scale``, CREMI's
``offset + i * resolution``), so a position maps to the voxel whose centre is nearest.

A *keypoint* is a representative position inside a segment (where the table jumps to):
the voxel of the segment farthest from the segment's boundary, by the Euclidean distance
transform (in nm, so anisotropic voxels are handled). The volume is processed in blocks
(:data:`DEFAULT_BLOCK` plus a halo of 1/8 of the block on each side, ~200 MB at most for
uint64 labels), keeping the best voxel per id across blocks; distances are measured
inside one block with its halo, so a segment larger than a block gets a voxel deep
inside one block's part of it. By default the finest scale with at most
:data:`DEFAULT_MAX_VOXELS` voxels is used (the coarsest if none is that small);
segments that vanish at that scale get no keypoint (pass ``scale=0`` to find them).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import ndimage

if TYPE_CHECKING:
    from napari_connecto.volume.scale import Scale
    from napari_connecto.volume.volume import Volume

__all__ = [
    "DEFAULT_BLOCK",
    "DEFAULT_MAX_VOXELS",
    "default_scale",
    "fill_keypoints",
    "lookup_labels",
    "positions_to_voxels",
    "segment_keypoints",
    "voxels_to_positions",
]

logger = logging.getLogger(__name__)

DEFAULT_BLOCK = (32, 256, 256)
"""Voxels (z, y, x) processed at once by :func:`segment_keypoints`."""
DEFAULT_MAX_VOXELS = 2**27
"""Largest scale (in voxels, ~134 M) :func:`segment_keypoints` picks by default."""


def default_scale(volume: Volume, max_voxels: int | None = None) -> int:
    """Index of the finest scale with at most ``max_voxels`` voxels (else the coarsest).

    ``max_voxels`` defaults to :data:`DEFAULT_MAX_VOXELS`.
    """
    limit = DEFAULT_MAX_VOXELS if max_voxels is None else max_voxels
    for i, sc in enumerate(volume.scales):
        if int(np.prod(sc.shape, dtype=np.float64)) <= limit:
            return i
    return len(volume.scales) - 1


def voxels_to_positions(scale: Scale, index: np.ndarray) -> np.ndarray:
    """``(N, 3)`` voxel indices of ``scale`` -> their centres in nm (z, y, x)."""
    origin = np.asarray(scale.origin_nm.as_tuple())
    return origin + np.asarray(index, dtype=np.float64) * np.asarray(scale.resolution.as_tuple())


def positions_to_voxels(scale: Scale, positions_nm: np.ndarray) -> np.ndarray:
    """``(N, 3)`` positions in nm -> the index of the voxel whose centre is nearest."""
    origin = np.asarray(scale.origin_nm.as_tuple())
    res = np.asarray(scale.resolution.as_tuple())
    with np.errstate(invalid="ignore"):
        return np.rint((np.asarray(positions_nm, dtype=np.float64) - origin) / res)


def _as_labels(block: np.ndarray, background: int) -> np.ndarray:
    """uint64 labels with the volume's background as 0."""
    labels = block.astype(np.uint64, copy=False)
    if background:
        labels = np.where(labels == np.uint64(background), np.uint64(0), labels)
    return labels


def lookup_labels(volume: Volume, positions_nm: np.ndarray, *, scale: int = 0) -> np.ndarray:
    """The segment id at each position; 0 outside the volume and on background.

    Reads one storage chunk at a time, only chunks holding a position.

    Parameters
    ----------
    volume : Volume
        A segmentation.
    positions_nm : numpy.ndarray
        ``(N, 3)`` z, y, x nm.
    scale : int
        Which scale to look in (default the finest).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` uint64 ids.

    Raises
    ------
    ChunkError
        If a chunk holding a position cannot be read.
    """
    sc = volume.scales[scale]
    points = np.asarray(positions_nm, dtype=np.float64).reshape(-1, 3)
    out = np.zeros(len(points), dtype=np.uint64)
    index = positions_to_voxels(sc, points)
    inside = np.isfinite(index).all(axis=1)
    inside[inside] = ((index[inside] >= 0) & (index[inside] < np.asarray(sc.shape))).all(axis=1)
    if not inside.any():
        return out
    rows = np.flatnonzero(inside)
    voxels = index[rows].astype(np.int64)
    chunks, which = np.unique(voxels // np.asarray(sc.chunk_shape), axis=0, return_inverse=True)
    background = int(volume.backend.background_label)
    for k, chunk in enumerate(chunks):
        start, stop = sc.chunk_bounds(tuple(int(c) for c in chunk))  # type: ignore[arg-type]
        block = _as_labels(volume.read_voxels(scale, start, stop), background)
        mine = np.flatnonzero(which.ravel() == k)
        local = voxels[mine] - np.asarray(start)
        out[rows[mine]] = block[local[:, 0], local[:, 1], local[:, 2]]
    return out


def _boundary(labels: np.ndarray) -> np.ndarray:
    """Voxels with a 6-neighbour of another label, and the voxels on the block's faces."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        differs = labels[tuple(lo)] != labels[tuple(hi)]
        edge[tuple(lo)] |= differs
        edge[tuple(hi)] |= differs
        face = [slice(None)] * 3
        face[axis] = slice(0, None, max(1, labels.shape[axis] - 1))
        edge[tuple(face)] = True
    return edge


def _block_best(
    labels: np.ndarray,
    core: tuple[slice, ...],
    sampling: Sequence[float],
    wanted: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per id in the core: the id, its deepest voxel (flat core index) and that depth (nm).

    Among voxels equally deep, the one nearest to their mean position wins (the middle
    of a ridge rather than its end).
    """
    depth = ndimage.distance_transform_edt(~_boundary(labels), sampling=sampling)
    ids = labels[core].ravel()
    dist = depth[core].ravel()
    keep = ids != 0
    if wanted is not None:
        keep &= np.isin(ids, wanted)
    flat = np.flatnonzero(keep)
    if flat.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.intp), np.zeros(0)
    segs, inverse = np.unique(ids[flat], return_inverse=True)
    deepest = np.full(segs.size, -1.0)
    np.maximum.at(deepest, inverse, dist[flat])
    tied = dist[flat] >= deepest[inverse] * (1 - 1e-9)
    flat, inverse = flat[tied], inverse[tied]
    core_shape = labels[core].shape
    nm = np.stack(np.unravel_index(flat, core_shape), axis=1) * np.asarray(sampling)
    counts = np.bincount(inverse, minlength=segs.size)
    mean = np.stack([np.bincount(inverse, nm[:, k], segs.size) for k in range(3)], axis=1)
    mean /= counts[:, None]
    off = ((nm - mean[inverse]) ** 2).sum(axis=1)
    order = np.lexsort((off, inverse))
    first = np.concatenate([[True], inverse[order][1:] != inverse[order][:-1]])
    best = flat[order[first]]
    return segs, best, deepest


def segment_keypoints(
    volume: Volume,
    ids: Iterable[int] | None = None,
    *,
    scale: int | None = None,
    block: Sequence[int] = DEFAULT_BLOCK,
) -> pd.DataFrame:
    """One position deep inside each segment (see the module docstring).

    Parameters
    ----------
    volume : Volume
        A segmentation (integer labels; 0 and the volume's background label are skipped).
    ids : iterable of int, optional
        Only these segments (default every segment met).
    scale : int, optional
        Scale to work at; default :func:`default_scale`.
    block : sequence of int
        z, y, x voxels processed at once (memory grows with it).

    Returns
    -------
    pandas.DataFrame
        Columns ``id`` (uint64), ``z``, ``y``, ``x`` (nm, the centre of the chosen voxel),
        sorted by id; ids not found at that scale have no row.

    Raises
    ------
    ChunkError
        If a chunk cannot be read.
    """
    index = default_scale(volume) if scale is None else scale
    sc = volume.scales[index]
    wanted = None if ids is None else np.unique(np.array([int(i) for i in ids], dtype=np.uint64))
    step = tuple(max(1, int(b)) for b in block)
    halo = tuple(max(1, b // 8) for b in step)
    sampling = sc.resolution.as_tuple()
    background = int(volume.backend.background_label)
    best: dict[int, tuple[float, tuple[int, int, int]]] = {}
    if wanted is not None and wanted.size == 0:
        return _frame(sc, best)
    ranges = [range(0, n, s) for n, s in zip(sc.shape, step, strict=True)]
    for start in itertools.product(*ranges):
        stop = tuple(min(a + s, n) for a, s, n in zip(start, step, sc.shape, strict=True))
        lo = tuple(max(0, a - h) for a, h in zip(start, halo, strict=True))
        hi = tuple(min(n, b + h) for b, h, n in zip(stop, halo, sc.shape, strict=True))
        labels = _as_labels(volume.read_voxels(index, lo, hi), background)
        core = tuple(slice(a - low, b - low) for a, b, low in zip(start, stop, lo, strict=True))
        found, flat, depth = _block_best(labels, core, sampling, wanted)
        core_shape = tuple(b - a for a, b in zip(start, stop, strict=True))
        local = np.stack(np.unravel_index(flat, core_shape), axis=1) + np.asarray(start)
        for seg, d, voxel in zip(found.tolist(), depth.tolist(), local.tolist(), strict=True):
            if seg not in best or d > best[seg][0]:
                best[seg] = (d, tuple(voxel))  # type: ignore[assignment]
    if wanted is not None and len(best) < wanted.size:
        logger.info("%d of %d segments not found at scale %d", wanted.size - len(best),
                    wanted.size, index)  # fmt: skip
    return _frame(sc, best)


def _frame(sc: Scale, best: dict[int, tuple[float, tuple[int, int, int]]]) -> pd.DataFrame:
    """The keypoint frame of the best voxels."""
    order = sorted(best)
    voxels = np.array([best[i][1] for i in order], dtype=np.float64).reshape(-1, 3)
    zyx = voxels_to_positions(sc, voxels)
    return pd.DataFrame(
        {"id": np.array(order, dtype=np.uint64), "z": zyx[:, 0], "y": zyx[:, 1], "x": zyx[:, 2]}
    )


def fill_keypoints(neurons: pd.DataFrame, volume: Volume, **kwargs: object) -> pd.DataFrame:
    """``neurons`` with missing (NaN) keypoints computed from ``volume``.

    Parameters
    ----------
    neurons : pandas.DataFrame
        A normalised neuron frame.
    volume : Volume
        The segmentation.
    **kwargs
        Passed to :func:`segment_keypoints` (``scale``, ``block``).

    Returns
    -------
    pandas.DataFrame
        A copy; keypoints already present are kept, ids not found stay NaN.
    """
    out = neurons.copy().reset_index(drop=True)
    missing = out[["z", "y", "x"]].isna().any(axis=1).to_numpy()
    if not missing.any():
        return out
    found = segment_keypoints(volume, out.loc[missing, "id"].tolist(), **kwargs)  # type: ignore[arg-type]
    where = {int(i): row for row, i in enumerate(found["id"].tolist())}
    hits = [(row, where.get(int(i))) for row, i in enumerate(out["id"].tolist()) if missing[row]]
    rows = np.array([r for r, h in hits if h is not None], dtype=np.intp)
    picks = np.array([h for _, h in hits if h is not None], dtype=np.intp)
    for axis in ("z", "y", "x"):
        values = out[axis].to_numpy(dtype=np.float64, copy=True)
        values[rows] = found[axis].to_numpy()[picks]
        out[axis] = values
    return out
