"""Per-segment attributes of a segmentation volume, computed blockwise and cached.

The volume is read in chunk-aligned blocks at one scale. Each block is reduced to one
row per segment (``np.argsort`` of its labels, then ``reduceat`` over the sorted voxel
coordinates): voxel count, min/max index, coordinate sums and a representative voxel
(the segment's voxel nearest its centroid within the block). Rows of many blocks are
merged by id with the same sort-and-reduce, so memory grows with the number of
segments, never with the volume. The representative voxel of a segment comes from the
block holding most of it, so it always lies inside the segment.

Results are cached under ``$NAPARI_CONNECTO_CACHE/attributes-v1`` (default the user
cache dir), keyed by the source string, scale, shape, dtype, geometry and, for local
sources, the modification time and size of the dataset path and of the level's
directory. Chunk files rewritten in place do not change a directory's mtime: pass
``refresh=True`` (or delete the cache entry) after editing a segmentation in place.
Remote sources are keyed without a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.errors import ConnectoError, MetadataError, SourceNotFoundError
from napari_connecto.objects.attribute_store import AttributeStore
from napari_connecto.volume.generation import generation_mark

if TYPE_CHECKING:
    from napari_connecto.volume.scale import Index3, Scale
    from napari_connecto.volume.volume import Volume

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "CACHE_VERSION",
    "DEFAULT_BLOCK_VOXELS",
    "AttributesCancelledError",
    "Progress",
    "attribute_job",
    "attributes_cache_path",
    "block_plan",
    "cached_attributes",
    "compute_attributes",
    "iter_attributes",
    "load_or_compute",
    "representative_nm",
]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bumped whenever the computed columns change; older cache entries are ignored."""
DEFAULT_BLOCK_VOXELS = 2**22
"""Voxels per block read at a time (rounded to whole storage chunks)."""
ATTRIBUTE_COLUMNS = (
    "size_voxels", "size_nm3",
    "bbox_start_z", "bbox_start_y", "bbox_start_x", "bbox_stop_z", "bbox_stop_y", "bbox_stop_x",
    "centroid_z", "centroid_y", "centroid_x", "rep_z", "rep_y", "rep_x",
)  # fmt: skip
"""Computed columns: voxel indices of the scale (bbox stop exclusive), sizes, centroid."""
_MERGE_EVERY = 32


class AttributesCancelledError(ConnectoError):
    """The computation was cancelled before it finished; nothing was cached."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a blockwise computation has got."""

    done: int
    """Blocks reduced so far."""
    total: int
    """Blocks in all."""
    voxels: int
    """Voxels read so far."""


@dataclass(frozen=True, slots=True)
class _Rows:
    """Per-segment partial results of one or more blocks (all arrays aligned, ids sorted)."""

    ids: np.ndarray
    count: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    sums: np.ndarray
    rep: np.ndarray
    weight: np.ndarray


def block_plan(scale: Scale, block_shape: Index3 | None = None) -> list[tuple[Index3, Index3]]:
    """Chunk-aligned blocks ``(start, stop)`` covering a scale, in scan order.

    ``block_shape`` defaults to whole storage chunks adding up to about
    :data:`DEFAULT_BLOCK_VOXELS`.
    """
    shape = tuple(int(s) for s in scale.shape)
    block = list(block_shape) if block_shape is not None else _default_block(scale)
    block = [max(1, min(int(b), s)) for b, s in zip(block, shape, strict=True)]
    grid = [range(0, s, b) for s, b in zip(shape, block, strict=True)]
    plan = []
    for z in grid[0]:
        for y in grid[1]:
            for x in grid[2]:
                start = (z, y, x)
                stop = tuple(min(a + b, s) for a, b, s in zip(start, block, shape, strict=True))
                plan.append((start, stop))
    return plan  # type: ignore[return-value]


def _default_block(scale: Scale) -> list[int]:
    """Whole chunks, grown along the axis that covers least of the volume, to the target."""
    chunk = [max(1, int(c)) for c in scale.chunk_shape]
    shape = [int(s) for s in scale.shape]
    block = chunk.copy()
    while math.prod(block) < DEFAULT_BLOCK_VOXELS:
        growable = [i for i in range(3) if block[i] < shape[i]]
        if not growable:
            break
        axis = min(growable, key=lambda i: block[i] / shape[i])
        block[axis] += chunk[axis]
    return block


def _reduce_block(labels: np.ndarray, offset: Index3, background: int) -> _Rows | None:
    """One row per segment of a block (voxel indices shifted by ``offset``)."""
    flat = labels.reshape(-1)
    if flat.dtype != np.uint64:
        flat = flat.astype(np.uint64)
    where = np.flatnonzero(flat != np.uint64(background))
    if where.size == 0:
        return None
    ids, where, count = _group_voxels(flat[where], where)
    starts = np.concatenate(([0], np.cumsum(count)[:-1]))
    coords = np.unravel_index(where, labels.shape)
    shift = np.asarray(offset, dtype=np.int64)
    lo = np.stack([np.minimum.reduceat(c, starts) for c in coords], axis=1) + shift
    hi = np.stack([np.maximum.reduceat(c, starts) for c in coords], axis=1) + shift
    sums = np.stack([np.add.reduceat(c, starts) for c in coords], axis=1).astype(np.float64)
    group = np.repeat(np.arange(starts.size), count)
    dist = np.zeros(where.size, dtype=np.float64)
    for axis, c in enumerate(coords):
        dist += np.square(c - (sums[:, axis] / count)[group])
    nearest = _first_minimum(dist, starts, group)
    rep = np.stack([c[nearest] for c in coords], axis=1) + shift
    return _Rows(ids, count, lo, hi, sums + shift * count[:, None], rep, count.copy())


def _group_voxels(
    values: np.ndarray, where: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique ids, voxel positions grouped by id (ascending within), voxels per id.

    Grouping by the rank of each id is several times faster than an ``argsort`` of the
    ids: a radix sort of 16-bit ranks, else a sort of packed ``(rank, position)`` keys.
    """
    ids = np.unique(values)
    rank = np.searchsorted(ids, values)
    count = np.bincount(rank, minlength=ids.size).astype(np.int64)
    bits = max(1, int(where[-1]).bit_length())
    if ids.size == 1:
        return ids, where, count
    if ids.size <= 2**16:  # stable argsort of 16-bit keys is a radix sort
        return ids, where[np.argsort(rank.astype(np.uint16), kind="stable")], count
    if int(ids.size).bit_length() + bits <= 64:
        key = (rank.astype(np.uint64) << np.uint64(bits)) | where.astype(np.uint64)
        key.sort()
        return ids, (key & np.uint64((1 << bits) - 1)).astype(np.intp), count
    return ids, where[np.argsort(rank, kind="stable")], count


def _first_minimum(values: np.ndarray, starts: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Position of the first smallest value of each group (groups contiguous, linear time)."""
    minimum = np.minimum.reduceat(values, starts)
    candidates = np.flatnonzero(values == minimum[group])
    owner = group[candidates]
    first = np.concatenate(([True], owner[1:] != owner[:-1]))
    return candidates[first]


def _merge(parts: list[_Rows]) -> _Rows:
    """Combine partial rows by id; the representative comes from the heaviest block."""
    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([p.ids for p in parts])
    weight = np.concatenate([p.weight for p in parts])
    order = np.lexsort((-weight, ids))
    ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])[order]

    return _Rows(
        ids[starts],
        np.add.reduceat(cat("count"), starts),
        np.minimum.reduceat(cat("lo"), starts, axis=0),
        np.maximum.reduceat(cat("hi"), starts, axis=0),
        np.add.reduceat(cat("sums"), starts, axis=0),
        cat("rep")[starts],
        weight[order][starts],
    )


def _push(stack: list[_Rows], rows: _Rows) -> None:
    """Add merged rows, merging runs of similar size (each row is re-sorted O(log n) times)."""
    stack.append(rows)
    while len(stack) > 1 and stack[-2].ids.size <= 2 * stack[-1].ids.size:
        top = stack.pop()
        stack[-1] = _merge([stack[-1], top])


def iter_attributes(
    volume: Volume, scale: int = 0, *, block_shape: Index3 | None = None
) -> Generator[Progress, None, AttributeStore]:
    """Compute attributes block by block, yielding :class:`Progress` after each block.

    The generator's return value (``StopIteration.value``) is the :class:`AttributeStore`;
    stop iterating to cancel. See :func:`compute_attributes` for the parameters.
    """
    if volume.kind != "segmentation":
        raise MetadataError(str(volume.source), "kind", "attributes need a segmentation")
    sc = volume.scales[scale]
    plan = block_plan(sc, block_shape)
    background = int(volume.backend.background_label)
    stack: list[_Rows] = []  # merged runs, each at most half the size of the one below
    pending: list[_Rows] = []
    voxels = 0
    for done, (start, stop) in enumerate(plan, 1):
        block = volume.read_voxels(scale, start, stop)
        rows = _reduce_block(block, start, background)
        voxels += block.size
        if rows is not None:
            pending.append(rows)
        if len(pending) >= _MERGE_EVERY:
            _push(stack, _merge(pending))
            pending = []
        yield Progress(done, len(plan), voxels)
    parts = stack + pending
    return _to_store(_merge(parts) if parts else None, volume, scale)


def _to_store(rows: _Rows | None, volume: Volume, scale: int) -> AttributeStore:
    """The finished rows as a store, with the geometry needed to place them in nm."""
    sc = volume.scales[scale]
    res = sc.resolution.as_tuple()
    meta = {
        "source": str(volume.source),
        "scale": int(scale),
        "resolution_nm": list(res),
        "origin_nm": list(sc.origin_nm.as_tuple()),
        "shape": [int(s) for s in sc.shape],
        "background_label": int(volume.backend.background_label),
    }
    if rows is None:
        empty_i = np.empty(0, dtype=np.int64)
        columns = {k: empty_i for k in ATTRIBUTE_COLUMNS}
        columns["size_voxels"] = np.empty(0, dtype=np.uint64)
        for k in ("size_nm3", "centroid_z", "centroid_y", "centroid_x"):
            columns[k] = np.empty(0, dtype=np.float64)
        return AttributeStore(np.empty(0, dtype=np.uint64), columns, meta)
    centroid = rows.sums / rows.count[:, None]
    columns = {
        "size_voxels": rows.count.astype(np.uint64),
        "size_nm3": rows.count.astype(np.float64) * float(np.prod(res)),
    }
    for k, axis in enumerate("zyx"):
        columns[f"bbox_start_{axis}"] = rows.lo[:, k]
    for k, axis in enumerate("zyx"):
        columns[f"bbox_stop_{axis}"] = rows.hi[:, k] + 1
    for k, axis in enumerate("zyx"):
        columns[f"centroid_{axis}"] = centroid[:, k]
    for k, axis in enumerate("zyx"):
        columns[f"rep_{axis}"] = rows.rep[:, k]
    return AttributeStore._from_sorted(rows.ids, columns, meta)


def compute_attributes(
    volume: Volume,
    scale: int = 0,
    *,
    block_shape: Index3 | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> AttributeStore:
    """Size, bounding box, centroid and a representative voxel of every segment.

    Parameters
    ----------
    volume : Volume
        A segmentation (``volume.kind == "segmentation"``).
    scale : int
        Which scale to read (0 = finest).
    block_shape : tuple of int, optional
        Voxels per block (z, y, x); default whole chunks adding up to about
        :data:`DEFAULT_BLOCK_VOXELS`.
    progress : callable, optional
        Called with a :class:`Progress` after each block.
    cancel : callable, optional
        Polled after each block; when it returns true the computation stops.

    Returns
    -------
    AttributeStore
        Columns :data:`ATTRIBUTE_COLUMNS` (voxel indices of ``scale``); the background
        label is left out. ``meta`` holds the source, scale, resolution and origin.

    Raises
    ------
    AttributesCancelledError
        ``cancel`` returned true.
    MetadataError
        The volume is not a segmentation.
    ChunkError
        A block could not be read.
    """
    steps = iter_attributes(volume, scale, block_shape=block_shape)
    try:
        while True:
            step = next(steps)
            if progress is not None:
                progress(step)
            if cancel is not None and cancel():
                steps.close()
                raise AttributesCancelledError(
                    f"attribute computation of {volume.source} cancelled"
                )
    except StopIteration as stop:
        return stop.value


def representative_nm(store: AttributeStore, segment_id: int) -> tuple[float, float, float] | None:
    """World position (nm, z, y, x; napari's voxel-centre frame) of a segment's voxel.

    ``None`` when the segment is not in ``store`` or the store has no representative
    voxels (imported properties only).
    """
    if "rep_z" not in store.columns:
        return None
    row = store.get(segment_id)
    if row is None:
        return None
    origin = store.meta.get("origin_nm", (0.0, 0.0, 0.0))
    res = store.meta.get("resolution_nm", (1.0, 1.0, 1.0))
    return tuple(  # type: ignore[return-value]
        float(o) + float(r) * float(row[f"rep_{a}"])
        for o, r, a in zip(origin, res, "zyx", strict=True)
    )


# -- cache -----------------------------------------------------------------------------------
def _cache_root() -> Path:
    """``$NAPARI_CONNECTO_CACHE`` or the user cache dir (as the sample data uses)."""
    from napari_connecto.sample.write import CACHE_ENV

    root = os.environ.get(CACHE_ENV)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("napari-connecto")
    return Path(root) / f"attributes-v{CACHE_VERSION}"


def _fingerprint(volume: Volume, scale: int) -> list[int]:
    """Modification time and size of the local dataset path and of the level's directory, if any."""
    source = volume.source
    if source.is_remote:
        return []
    marks: list[int] = []
    base = source.path
    for path in (base, base / source.inner / volume.scales[scale].key):
        try:
            st = path.stat()
        except OSError:
            continue
        marks += [st.st_mtime_ns, st.st_size]
    return marks


def attributes_cache_path(volume: Volume, scale: int = 0) -> Path:
    """Where the attributes of one scale of ``volume`` are cached."""
    sc = volume.scales[scale]
    key = {
        "source": str(volume.source),
        "format": volume.format,
        "scale": int(scale),
        "shape": [int(s) for s in sc.shape],
        "dtype": np.dtype(volume.dtype).str,
        "resolution": list(sc.resolution.as_tuple()),
        "origin": list(sc.origin_nm.as_tuple()),
        "background": int(volume.backend.background_label),
        "data": _fingerprint(volume, scale),
        "generation": generation_mark(volume),  # bumped by every proofreading write-back
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return _cache_root() / digest


def cached_attributes(volume: Volume, scale: int = 0) -> AttributeStore | None:
    """The cached attributes of ``volume`` at ``scale``, or ``None`` (missing or unreadable)."""
    path = attributes_cache_path(volume, scale)
    try:
        return AttributeStore.load(path)
    except SourceNotFoundError:
        return None
    except MetadataError as exc:
        logger.warning("ignoring a broken attribute cache at %s: %s", path, exc)
        return None


def load_or_compute(
    volume: Volume,
    scale: int = 0,
    *,
    refresh: bool = False,
    progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> AttributeStore:
    """Cached attributes of ``volume``, computing (and caching) them if needed.

    Parameters are those of :func:`compute_attributes`; ``refresh`` recomputes even when
    a cache entry exists. The returned store is memory-mapped from the cache.
    """
    if not refresh:
        cached = cached_attributes(volume, scale)
        if cached is not None:
            return cached
    store = compute_attributes(volume, scale, progress=progress, cancel=cancel)
    return AttributeStore.load(store.save(attributes_cache_path(volume, scale)))


def attribute_job(
    source: str, scale: int = 0, *, cache_only: bool = False
) -> Generator[Progress, None, AttributeStore | None]:
    """Open ``source`` and load its cached attributes, else compute and cache them.

    A generator for worker threads (napari's ``create_worker``): it yields
    :class:`Progress` after each block, so stopping it between yields cancels the
    computation (nothing is cached then). Returns ``None`` when ``cache_only`` and no
    cache entry exists.

    Raises
    ------
    ConnectoError
        The source cannot be opened or read (any of the typed errors).
    """
    from napari_connecto.opening import open_volume

    volume = open_volume(source)
    cached = cached_attributes(volume, scale)
    if cached is not None or cache_only:
        return cached
    store = yield from iter_attributes(volume, scale)
    return AttributeStore.load(store.save(attributes_cache_path(volume, scale)))
