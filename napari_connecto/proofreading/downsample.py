"""Recompute the coarser levels of a pyramid after voxels of its finest level changed.

Convention: voxel ``j`` of a coarser scale stands for the finer voxels
``[f * j, f * j + f)`` along each axis (``f`` the integer ratio of the voxel
sizes). That is how the repo's readers line levels up (the cache's level
geometry rounds each level's origin to whole coarse voxels) and it covers both
conventions of real pyramids:

* corner-aligned levels whose origins coincide (CloudVolume / igneous
  precomputed, stride-picked labels such as the sample's ``labels/segmentation``);
* centre-aligned levels shifted by ``(f - 1) / 2`` finer voxels (mean-pooled
  OME-Zarr such as the sample's ``raw``).

A level whose voxel size is not an integer multiple of its finer level's, or
whose origin matches neither convention, is skipped with a warning.

Labels are downsampled by the most frequent id of each block (ties go to the
smallest id), images by the mean; blocks cut by the volume's edge use only the
voxels present.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from napari_connecto.errors import ReadOnlyError, RegionError
from napari_connecto.volume.volume import Volume

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from napari_connecto.volume.scale import Index3, Scale

__all__ = [
    "mean_downsample",
    "mode_downsample",
    "pyramid_factor",
    "pyramid_regions",
    "update_pyramid",
]

logger = logging.getLogger(__name__)

_TOLERANCE = 1e-3
"""How far (relative for factors, in finer voxels for origins) metadata may be from exact."""


def _check_factor(shape: tuple[int, ...], factor: Sequence[int]) -> tuple[int, ...]:
    """``factor`` as positive ints, one per axis of ``shape``."""
    f = tuple(int(v) for v in factor)
    if len(f) != len(shape) or any(v < 1 for v in f):
        raise ValueError(f"factor {tuple(factor)} must be one integer >= 1 per axis of {shape}")
    return f


def _pieces(n: int, f: int) -> list[tuple[slice, slice, int]]:
    """Along one axis: (input slice, output slice, tile size) of the whole and the cut tiles."""
    whole = n // f * f
    out = []
    if whole:
        out.append((slice(0, whole), slice(0, whole // f), f))
    if whole < n:
        out.append((slice(whole, n), slice(whole // f, whole // f + 1), n - whole))
    return out


def _tiles_as_rows(block: np.ndarray, tile: tuple[int, ...]) -> np.ndarray:
    """Every ``tile``-shaped block of ``block`` as one row, in C order of the tiles."""
    counts = [n // t for n, t in zip(block.shape, tile, strict=True)]
    split = block.reshape([v for pair in zip(counts, tile, strict=True) for v in pair])
    nd = block.ndim
    order = [2 * i for i in range(nd)] + [2 * i + 1 for i in range(nd)]
    return split.transpose(order).reshape(math.prod(counts), math.prod(tile))


def _row_modes(rows: np.ndarray) -> np.ndarray:
    """The most frequent value of each row, the smallest among equally frequent ones."""
    ordered = np.sort(rows, axis=1)
    if ordered.shape[1] == 1:
        return ordered[:, 0]
    position = np.arange(ordered.shape[1])
    starts = np.ones(ordered.shape, dtype=bool)
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=starts[:, 1:])
    run_start = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    # run length so far at each position; the first maximum ends the first longest run,
    # which holds the smallest of the most frequent values (rows are sorted)
    best = np.argmax(position - run_start, axis=1)
    return ordered[np.arange(ordered.shape[0]), best]


def _downsample(
    block: np.ndarray, factor: Sequence[int], reduce: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Apply ``reduce`` (rows -> one value each) to every factor-block, edge blocks included."""
    block = np.asarray(block)
    f = _check_factor(block.shape, factor)
    out = np.empty(tuple(-(-n // v) for n, v in zip(block.shape, f, strict=True)), block.dtype)
    if block.size == 0:
        return out
    axes = [_pieces(n, v) for n, v in zip(block.shape, f, strict=True)]
    for parts in itertools.product(*axes):
        src = block[tuple(p[0] for p in parts)]
        tile = tuple(p[2] for p in parts)
        dst = tuple(p[1] for p in parts)
        out[dst] = reduce(_tiles_as_rows(src, tile)).reshape(out[dst].shape)
    return out


def mode_downsample(block: np.ndarray, factor: tuple[int, int, int]) -> np.ndarray:
    """Downsample labels: each output voxel is the most frequent id of its block.

    Ties go to the smallest id. Blocks cut by the edge of ``block`` use only
    the voxels present. Ids are only sorted and compared, never converted to
    float, so every uint64 id (including those above 2**63) survives exactly.

    Parameters
    ----------
    block : numpy.ndarray
        Labels, one axis per entry of ``factor`` (z, y, x).
    factor : tuple of int
        Block size per axis (integers >= 1).

    Returns
    -------
    numpy.ndarray
        Shape ``ceil(block.shape / factor)``, same dtype as ``block``.

    Raises
    ------
    ValueError
        If ``factor`` does not give one integer >= 1 per axis.
    """
    return _downsample(block, factor, _row_modes)


def mean_downsample(block: np.ndarray, factor: tuple[int, int, int]) -> np.ndarray:
    """Downsample an image: each output voxel is the mean of its block.

    Blocks cut by the edge of ``block`` average only the voxels present.
    Means are computed in float64 and rounded half to even for integer dtypes
    (clipped to the dtype's range), so 64-bit integers above 2**53 lose
    precision; float dtypes are kept.

    Parameters
    ----------
    block : numpy.ndarray
        Intensities, one axis per entry of ``factor`` (z, y, x).
    factor : tuple of int
        Block size per axis (integers >= 1).

    Returns
    -------
    numpy.ndarray
        Shape ``ceil(block.shape / factor)``, same dtype as ``block``.

    Raises
    ------
    ValueError
        If ``factor`` does not give one integer >= 1 per axis.
    """
    block = np.asarray(block)
    f = _check_factor(block.shape, factor)
    total = block.astype(np.float64)
    count = np.ones((1,) * block.ndim)
    for axis, (n, v) in enumerate(zip(block.shape, f, strict=True)):
        if n == 0:
            continue
        starts = np.arange(0, n, v)
        total = np.add.reduceat(total, starts, axis=axis)
        sizes = np.minimum(starts + v, n) - starts
        count = count * sizes.reshape([-1 if a == axis else 1 for a in range(block.ndim)])
    mean = total / count if total.size else total
    if block.dtype.kind in "biu":
        info = np.iinfo(block.dtype) if block.dtype.kind != "b" else np.iinfo(np.uint8)
        mean = np.clip(np.round(mean), info.min, info.max)
    return mean.astype(block.dtype)


def pyramid_factor(finer: Scale, coarser: Scale) -> Index3 | None:
    """The integer downsampling factor from ``finer`` to ``coarser``, if they line up.

    Parameters
    ----------
    finer, coarser : Scale
        Two levels of one volume.

    Returns
    -------
    tuple of int or None
        ``round(coarser.resolution / finer.resolution)`` per axis, or ``None``
        (with a warning logged) if a ratio is not an integer >= 1 or the
        coarser origin is neither at the finer one (corner-aligned) nor
        ``(f - 1) / 2`` finer voxels after it (centre-aligned).
    """
    res_f, res_c = finer.resolution.as_tuple(), coarser.resolution.as_tuple()
    shift = (coarser.origin_nm - finer.origin_nm).as_tuple()
    factor = []
    for axis, rf, rc, d_nm in zip("zyx", res_f, res_c, shift, strict=True):
        ratio = rc / rf
        f = round(ratio)
        if f < 1 or abs(ratio - f) > _TOLERANCE * f:
            logger.warning("%s: voxel size ratio %.6g is not an integer >= 1", axis, ratio)
            return None
        d = d_nm / rf
        if abs(d) > _TOLERANCE and abs(d - (f - 1) / 2) > _TOLERANCE:
            logger.warning(
                "%s: origin shifted by %.6g finer voxels, expected 0 or %.6g", axis, d, (f - 1) / 2
            )
            return None
        factor.append(f)
    return tuple(factor)  # type: ignore[return-value]


def _paste(
    target: np.ndarray, at: Sequence[int], block: np.ndarray, block_at: Sequence[int]
) -> None:
    """Copy the overlap of ``block`` (first voxel at ``block_at``) into ``target`` (at ``at``)."""
    lo = [max(a, b) for a, b in zip(at, block_at, strict=True)]
    hi = [
        min(a + n, b + m)
        for a, n, b, m in zip(at, target.shape, block_at, block.shape, strict=True)
    ]
    if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
        return
    dst = tuple(slice(lo_ - a, h - a) for lo_, h, a in zip(lo, hi, at, strict=True))
    src = tuple(slice(lo_ - b, h - b) for lo_, h, b in zip(lo, hi, block_at, strict=True))
    target[dst] = block[src]


def update_pyramid(
    volume: Volume, start: Sequence[int], stop: Sequence[int], *, labels: bool
) -> list[tuple[int, Index3, Index3]]:
    """Recompute the coarser scales covering voxels ``[start, stop)`` of scale 0.

    Call after those voxels of scale 0 were written. Each coarser scale is
    recomputed from the next finer one that could be updated (scale ``k + 1``
    from scale ``k``), over the floor / ceil image of the finer region clipped
    to its shape, reading the factor-aligned finer region around it; then all
    coarser blocks are stored with one :meth:`Volume.write_batch` call (one
    atomic commit for HDF5). Stored voxels are used as they are: the volume's
    read and write processors are not applied. Scales that do not line up
    (see :func:`pyramid_factor`) are skipped with a warning.

    Parameters
    ----------
    volume : Volume
        The volume, opened writable.
    start, stop : sequence of int
        z, y, x voxel indices of scale 0 that changed (clipped to its shape).
    labels : bool
        ``True`` for segmentations (:func:`mode_downsample`), ``False`` for
        images (:func:`mean_downsample`).

    Returns
    -------
    list of (int, Index3, Index3)
        ``(scale, start, stop)`` of every region written, scale 0's first
        (for cache invalidation); empty if the region misses scale 0.

    Raises
    ------
    RegionError
        If ``start`` or ``stop`` are not three indices.
    ReadOnlyError
        If the volume is not writable.
    ChunkError
        If a finer region cannot be read or the batch cannot be written.
    """
    if not volume.writable:
        raise ReadOnlyError(f"{volume.source} was opened read-only; open it with mode='r+'")
    lo, hi = _clipped(volume.scales[0].shape, start, stop)
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        return []
    regions: list[tuple[int, Index3, Index3]] = [(0, lo, hi)]
    raw = volume
    if volume.read_processors or volume.write_processors:
        raw = Volume(volume.backend, max_read_bytes=volume.max_read_bytes)
    reduce = mode_downsample if labels else mean_downsample
    fresh: dict[int, tuple[Index3, np.ndarray]] = {}
    batch: list[tuple[int, Sequence[int], np.ndarray]] = []
    for step in _plan(volume, lo, hi):
        finer = raw.read_voxels(step.src, step.f_lo, step.f_hi)
        if step.src in fresh:
            _paste(finer, step.f_lo, fresh[step.src][1], fresh[step.src][0])
        coarse = reduce(finer, step.factor)
        fresh[step.dst] = (step.c_lo, coarse)
        batch.append((step.dst, step.c_lo, coarse))
        regions.append((step.dst, step.c_lo, step.c_hi))
    if batch:
        raw.write_batch(batch)
    return regions


class _Step(NamedTuple):
    """One coarser scale to recompute: from ``src``, its region and the finer one it reads."""

    src: int
    dst: int
    factor: Index3
    c_lo: Index3
    c_hi: Index3
    f_lo: Index3
    f_hi: Index3


def _plan(volume: Volume, lo: Index3, hi: Index3) -> Iterator[_Step]:
    """The chain of coarser regions covering scale-0 voxels ``[lo, hi)``."""
    scales = volume.scales
    src = 0
    for dst in range(1, len(scales)):
        factor = pyramid_factor(scales[src], scales[dst])
        if factor is None:
            logger.warning("%s: scale %d not recomputed from scale %d", volume, dst, src)
            continue
        c_lo, c_hi, f_lo, f_hi = _cover(lo, hi, factor, scales[src].shape, scales[dst].shape)
        if any(b <= a for a, b in zip(c_lo, c_hi, strict=True)):
            return
        yield _Step(src, dst, factor, c_lo, c_hi, f_lo, f_hi)
        src, lo, hi = dst, c_lo, c_hi


def pyramid_regions(
    volume: Volume, start: Sequence[int], stop: Sequence[int]
) -> list[tuple[int, Index3, Index3]]:
    """The regions :func:`update_pyramid` writes for scale-0 voxels ``[start, stop)``, no I/O.

    For cache invalidation after another process wrote them.
    """
    lo, hi = _clipped(volume.scales[0].shape, start, stop)
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        return []
    return [(0, lo, hi)] + [(s.dst, s.c_lo, s.c_hi) for s in _plan(volume, lo, hi)]


def _cover(
    lo: Index3, hi: Index3, factor: Index3, n_src: Index3, n_dst: Index3
) -> tuple[Index3, Index3, Index3, Index3]:
    """Coarse region covering finer ``[lo, hi)``, and the factor-aligned finer region it reads."""
    c_lo = tuple(a // f for a, f in zip(lo, factor, strict=True))
    c_hi = tuple(
        min(-(-b // f), m, -(-n // f)) for b, f, m, n in zip(hi, factor, n_dst, n_src, strict=True)
    )
    f_lo = tuple(a * f for a, f in zip(c_lo, factor, strict=True))
    f_hi = tuple(min(b * f, n) for b, f, n in zip(c_hi, factor, n_src, strict=True))
    return c_lo, c_hi, f_lo, f_hi  # type: ignore[return-value]


def _clipped(shape: Index3, start: Sequence[int], stop: Sequence[int]) -> tuple[Index3, Index3]:
    """``[start, stop)`` as int triples clipped to ``[0, shape)``."""
    a = tuple(int(v) for v in start)
    b = tuple(int(v) for v in stop)
    if len(a) != 3 or len(b) != 3:
        raise RegionError(f"regions are z, y, x: got {a} .. {b}")
    lo = tuple(min(max(v, 0), n) for v, n in zip(a, shape, strict=True))
    hi = tuple(min(max(v, lo_), n) for v, lo_, n in zip(b, lo, shape, strict=True))
    return lo, hi  # type: ignore[return-value]
