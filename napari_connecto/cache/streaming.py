"""Stream a volume through the shared cache: per-volume block reads and per-layer wish lists.

A :class:`StreamingVolume` knows how to fetch one cache block of one level. A
:class:`LayerStream` is the streaming state of one napari layer: its level arrays
(:class:`~napari_connecto.cache.level.StreamingLevel`), what it showed last, and the
chunks it wants. In *blocking* mode (the default, for scripts) reads wait for real data;
the viewer bridge switches a layer to *streaming* mode, where reads return at once from
what is cached and queue the rest.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.cache.chunk_cache import ChunkKey
from napari_connecto.cache.compose import compose_region, hatch
from napari_connecto.cache.pyramid import LevelGeometry, plan_pyramid
from napari_connecto.cache.scheduler import FetchJob, FetchScheduler, Priority, Tier
from napari_connecto.cache.service import StreamingService, default_service
from napari_connecto.errors import ChunkError

if TYPE_CHECKING:
    from napari_connecto.cache.level import StreamingLevel
    from napari_connecto.volume.scale import Index3
    from napari_connecto.volume.volume import Volume

__all__ = ["FailedBlock", "LayerStream", "StreamingVolume"]

logger = logging.getLogger(__name__)

_tokens = itertools.count(1)

PIN_SHARE_DIVISOR = 4
"""A layer pins at most a quarter of the budget, so three big layers still leave room."""

Region = tuple["Index3", "Index3"]


@dataclass(frozen=True, slots=True)
class FailedBlock:
    """A chunk in view whose fetch failed."""

    level: int
    start: Index3
    """Display start of the block at its level (z, y, x)."""
    stop: Index3
    error: str


class StreamingVolume:
    """A volume read block by block through the shared cache.

    Parameters
    ----------
    volume : Volume
        The volume to stream.
    service : StreamingService, optional
        Cache and scheduler; default the process-wide one.
    """

    def __init__(self, volume: Volume, service: StreamingService | None = None) -> None:
        self.volume = volume
        self.service = service or default_service()
        self.token = next(_tokens)
        self.levels: list[LevelGeometry] = plan_pyramid(volume.scales, volume.dtype.itemsize)
        self.dtype: np.dtype = volume.dtype
        self.fill_value = np.asarray(volume.backend.fill_value).astype(self.dtype).item()
        self._source_limit = max(1, int(volume.backend.max_concurrency))

    def key(self, level: int, block: Index3) -> ChunkKey:
        """The cache key of one block."""
        return ChunkKey(self.token, level, block)

    def job(self, level: int, block: Index3, priority: Priority) -> FetchJob:
        """A fetch request for one block."""
        return FetchJob(
            self.key(level, block),
            priority,
            functools.partial(self.read_block, level, block),
            self.volume.backend,
            self._source_limit,
        )

    def read_block(self, level: int, block: Index3) -> np.ndarray:
        """Read and decode one block from storage (blocking; runs on a worker).

        Raises
        ------
        ChunkError
            If the block cannot be decoded or comes back with the wrong shape.
        """
        geom = self.levels[level]
        start, stop = geom.block_bounds(block)
        data = self.volume.read_voxels(geom.scale, start, stop)
        expected = tuple(b - a for a, b in zip(start, stop, strict=True))
        if data.shape != expected:
            raise ChunkError(
                str(self.volume.source),
                level,
                _region_text(start, stop),
                f"decoded shape {data.shape}, expected {expected}",
            )
        return np.ascontiguousarray(data, dtype=self.dtype)

    def lookup(self, level: int, block: Index3) -> np.ndarray | None:
        """The cached block, or ``None``."""
        return self.service.cache.get(self.key(level, block))

    def invalidate(self, level: int | None = None) -> int:
        """Forget cached blocks (after the volume was written); return how many."""
        token = self.token
        return self.service.cache.discard_where(
            lambda k: k.volume == token and (level is None or k.level == level)
        )

    def reload_where(self, wanted: Callable[[int, Index3, np.ndarray], bool]) -> int:
        """Read again every cached block for which ``wanted(level, block, chunk)`` holds.

        The old block stays shown until its replacement is stored, so nothing flickers.
        Runs on the calling thread (a worker: it reads storage); returns how many were
        replaced. A block that fails to read is dropped instead (it is fetched again).
        """
        token = self.token
        replaced = 0
        for key, chunk in self.service.cache.items_where(lambda k: k.volume == token):
            if not wanted(key.level, key.block, chunk):
                continue
            try:
                fresh = self.read_block(key.level, key.block)
            except ChunkError:
                self.service.cache.discard([key])
                continue
            self.service.cache.put(key, fresh)
            replaced += 1
        return replaced

    def reload_region(self, scale: int, start: Index3, stop: Index3) -> int:
        """Read again the cached blocks of storage ``scale`` overlapping ``[start, stop)``."""

        def overlaps(level: int, block: Index3, _chunk: np.ndarray) -> bool:
            geom = self.levels[level]
            if geom.scale != scale:
                return False
            lo, hi = geom.block_bounds(block)
            return all(a < d and c < b for a, b, c, d in zip(lo, hi, start, stop, strict=True))

        return self.reload_where(overlaps)

    def reload_containing(self, ids: np.ndarray) -> int:
        """Read again the cached blocks showing any of ``ids`` (after a relabelling)."""
        wanted = np.unique(np.asarray(ids).astype(self.dtype, copy=False))
        if wanted.size == 0:
            return 0
        return self.reload_where(lambda _l, _b, chunk: bool(np.isin(chunk, wanted).any()))


def _region_text(start: Index3, stop: Index3) -> str:
    return ",".join(f"{a}:{b}" for a, b in zip(start, stop, strict=True))


def _center(start: Index3, stop: Index3, factor: Index3) -> np.ndarray:
    """Centre of a display region in level-0 display voxels."""
    return np.array([(a + b) / 2 * max(f, 1) for a, b, f in zip(start, stop, factor, strict=True)])


class LayerStream:
    """The streaming state of one layer: its levels, what it shows, and what it wants.

    Parameters
    ----------
    volume : StreamingVolume
        The volume this layer shows.
    """

    def __init__(self, volume: StreamingVolume) -> None:
        self.volume = volume
        self.streaming = False
        """Whether reads return at once (viewer) instead of waiting for data (scripts)."""
        self.current_level: Callable[[], int] | None = None
        """Tells which level the viewer shows; reads of other levels are thumbnails."""
        self._lock = threading.Lock()
        self._dirty = False
        self._main: tuple[int, Index3, Index3] | None = None
        self._thumb: tuple[int, Index3, Index3] | None = None
        self._motion = np.zeros(3)
        self._sharp = False
        self._uncovered_shown = False
        self._failed_unseen = False
        self._main_keys: tuple[tuple[int, Index3, Index3] | None, list[ChunkKey]] = (None, [])
        self.last_read = 0.0
        """Monotonic time the viewer last composed the shown level (a frame of it)."""
        self._prefetch_jobs: dict[ChunkKey, FetchJob] = {}
        self._main_jobs: dict[ChunkKey, FetchJob] = {}
        self._thumb_jobs: dict[ChunkKey, FetchJob] = {}
        self._hint_jobs: dict[ChunkKey, FetchJob] = {}
        self._scheduler.listen(self, self._arrived)

    def reopen(self) -> None:
        """Stream again after :meth:`close` (the layer was added back to a viewer)."""
        self._main = self._thumb = None
        self._main_jobs, self._thumb_jobs, self._prefetch_jobs = {}, {}, {}
        self._hint_jobs = {}
        self._scheduler.listen(self, self._arrived)
        self.streaming = True
        self.mark_dirty()

    @property
    def _scheduler(self) -> FetchScheduler:
        return self.volume.service.scheduler

    def levels(self) -> list[StreamingLevel]:
        """One lazy array per level, finest first (napari's multiscale data)."""
        from napari_connecto.cache.level import StreamingLevel

        return [StreamingLevel(self, i) for i in range(len(self.volume.levels))]

    # -- what the bridge polls ---------------------------------------------------------
    def take_dirty(self) -> bool:
        """Whether a chunk this layer wants arrived (or failed) since the last call."""
        with self._lock:
            dirty, self._dirty = self._dirty, False
            return dirty

    def peek_dirty(self) -> bool:
        """Whether a redraw is pending, without clearing it."""
        return self._dirty

    def mark_dirty(self) -> None:
        """Ask for a redraw (after an invalidation or a settings change)."""
        with self._lock:
            self._dirty = True

    def _arrived(self, key: ChunkKey) -> None:
        if key in self._main_jobs or key in self._thumb_jobs:  # prefetch changes nothing drawn
            with self._lock:
                self._dirty = True
                if key not in self.volume.service.cache:  # it failed: show that at once
                    self._failed_unseen = True

    def failed_unseen(self) -> bool:
        """Whether a chunk of the view failed since the view was last drawn."""
        return self._failed_unseen

    @property
    def shown(self) -> tuple[int, Index3, Index3] | None:
        """``(level, start, stop)`` of the last region the viewer read."""
        return self._main

    def complete(self) -> bool:
        """Whether every chunk of the shown region is cached (a redraw would be sharp)."""
        if self._main is None:
            return False
        cache = self.volume.service.cache
        return all(key in cache for key in self._shown_keys())

    def finishing(self) -> bool:
        """Whether every missing chunk of the shown region is being fetched (none queued).

        Then the view is complete within about one round trip to the source.
        """
        if self._main is None:
            return False
        cache, loading = self.volume.service.cache, self._scheduler.is_loading
        return all(key in cache or loading(key) for key in self._shown_keys())

    def _shown_keys(self) -> list[ChunkKey]:
        region, keys = self._main_keys
        if region != self._main:  # the bridge asks every frame while a view loads
            level, start, stop = region = self._main  # type: ignore[misc]
            geom = self.volume.levels[level]
            keys = [self.volume.key(level, b) for b in geom.blocks_for(start, stop)]
            self._main_keys = (region, keys)
        return keys

    def preview_ready(self) -> bool:
        """Whether the last draw had gaps without stand-ins and their previews all arrived.

        Then a redraw shows the whole view (coarse) for the first time: worth a frame
        even while the sharp blocks still stream in.
        """
        if not self._uncovered_shown or self._main is None:
            return False
        level = self._main[0]
        cache = self.volume.service.cache
        previews = [k for k in self._main_jobs if k.level != level]
        return bool(previews) and all(k in cache for k in previews)

    @property
    def sharp(self) -> bool:
        """Whether the last region the viewer drew had every block of its level (no stand-ins)."""
        return self._sharp

    def failed_blocks(self) -> list[FailedBlock]:
        """Chunks of the shown region whose fetch failed."""
        if self._main is None:
            return []
        level, start, stop = self._main
        geom = self.volume.levels[level]
        failed = []
        for block in geom.blocks_for(start, stop):
            failure = self._scheduler.failure(self.volume.key(level, block))
            if failure is not None:
                b_start, b_stop = geom.block_display_bounds(block)
                failed.append(FailedBlock(level, b_start, b_stop, failure.error))
        return failed

    def pause(self) -> None:
        """Stop fetching for this layer (hidden); its next read asks again."""
        self._main_jobs, self._thumb_jobs, self._prefetch_jobs = {}, {}, {}
        self._hint_jobs = {}
        self._main = self._thumb = None
        self._scheduler.submit(self, ())
        self.volume.service.cache.unpin(self)

    def close(self) -> None:
        """Stop wanting anything and release pins (the layer is gone)."""
        self._scheduler.forget(self)
        self.volume.service.cache.unpin(self)
        self.streaming = False

    # -- reads ---------------------------------------------------------------------------
    def read(self, level: int, start: Index3, stop: Index3, *, probe: bool = False) -> np.ndarray:
        """Display region ``[start, stop)`` of ``level``.

        In blocking mode, waits for every block (raises the first fetch error). In
        streaming mode, returns at once from cached blocks (coarser data or the fill
        value where blocks are missing, stripes where they failed) and, unless
        ``probe`` (a single-value lookup), makes the region the layer's wish list.
        """
        vol = self.volume
        if not self.streaming:
            return self.read_blocking(level, start, stop)
        thumbnail = self.current_level is not None and level != self.current_level()
        if not (probe or thumbnail):
            self._failed_unseen = False  # failures from here on are drawn by a later read
        out, missing, uncovered = compose_region(
            vol.levels, level, start, stop, lookup=vol.lookup, dtype=vol.dtype, fill=vol.fill_value
        )
        self._hatch_failures(out, level, start, missing)
        if probe:
            return out
        if not thumbnail:
            self._sharp = not missing
            self._uncovered_shown = bool(uncovered)
            self.last_read = time.monotonic()
        self._update_wishes(level, start, stop, missing, uncovered, thumbnail=thumbnail)
        cache = vol.service.cache
        if any(vol.key(level, b) in cache for b in missing):
            self.mark_dirty()  # arrived while this view was composed: draw it next tick
        return out

    def read_blocking(self, level: int, start: Index3, stop: Index3) -> np.ndarray:
        """Display region ``[start, stop)`` of ``level``, waiting for every block."""
        vol = self.volume
        blocks = vol.levels[level].blocks_for(start, stop)
        prio = Priority(Tier.BLOCKING, -level, 0.0)
        futures = vol.service.scheduler.fetch_now(vol.job(level, b, prio) for b in blocks)
        got = {key.block: fut.result() for key, fut in futures.items()}
        out, _, _ = compose_region(
            vol.levels,
            level,
            start,
            stop,
            lookup=lambda lv, b: got.get(b) if lv == level else None,
            dtype=vol.dtype,
            fill=vol.fill_value,
        )
        return out

    def _hatch_failures(
        self, out: np.ndarray, level: int, start: Index3, missing: list[Index3]
    ) -> None:
        vol = self.volume
        if vol.volume.kind == "segmentation":
            return  # never invent segment ids; the bridge outlines failed chunks instead
        info = np.iinfo(vol.dtype) if vol.dtype.kind in "ui" else None
        low, high = (info.min, info.max) if info else (0.0, 1.0)
        hint = vol.volume.backend.contrast_limits
        if hint is not None:
            low, high = hint
        for block in missing:
            if vol.service.scheduler.failure(vol.key(level, block)) is not None:
                b_start, b_stop = vol.levels[level].block_display_bounds(block)
                hatch(out, start, b_start, b_stop, low=low, high=high)

    # -- wish lists ----------------------------------------------------------------------
    def _update_wishes(
        self,
        level: int,
        start: Index3,
        stop: Index3,
        missing: list[Index3],
        uncovered: list[Index3],
        *,
        thumbnail: bool,
    ) -> None:
        vol = self.volume
        region = (level, start, stop)
        if region == (self._thumb if thumbnail else self._main):
            # A redraw of the same view (chunks arrived): keep the job objects, drop the
            # arrived ones. Rebuilding them on every redraw fed Python's full garbage
            # collections (~100 ms pauses on the main thread in a napari process).
            cache = vol.service.cache
            if thumbnail:
                self._thumb_jobs = {k: j for k, j in self._thumb_jobs.items() if k not in cache}
            else:  # previews are only worth fetching while sharp data is missing
                self._main_jobs = {
                    k: j
                    for k, j in self._main_jobs.items()
                    if k not in cache and (missing or k.level == level)
                }
                # blocks that left the cache since (evicted, invalidated) are asked again
                lost = [b for b in missing if vol.key(level, b) not in self._main_jobs]
                if lost:
                    centre = _center(start, stop, vol.levels[level].factor)
                    self._main_jobs.update(self._jobs(level, lost, Tier.VISIBLE, centre))
            self._submit()
            return
        geom = vol.levels[level]
        centre = _center(start, stop, geom.factor)
        if thumbnail:
            self._thumb = (level, start, stop)
            self._thumb_jobs = self._jobs(level, missing, Tier.PREFETCH, centre)
        else:
            previous = self._main
            self._main = (level, start, stop)
            if previous is not None and previous != self._main:
                old = _center(previous[1], previous[2], vol.levels[previous[0]].factor)
                self._motion = centre - old
            if previous != self._main:
                self._prefetch_jobs = {}
            self._main_jobs = self._jobs(level, missing, Tier.VISIBLE, centre)
            if uncovered:  # nothing coarser is cached there: fetch a quick preview first
                self._main_jobs.update(self._preview_jobs(level, uncovered, centre))
            self._pin(level, start, stop)
        self._submit()

    def settle(self) -> None:
        """The view stopped moving: also fetch neighbouring z-planes and ahead of the motion."""
        if self._main is None or not self.streaming:
            return
        level, start, stop = self._main
        centre = _center(start, stop, self.volume.levels[level].factor)
        self._prefetch_jobs = self._prefetch(level, start, stop, centre)
        self._submit()

    def hint(self, regions: list[tuple[Index3, Index3]], level: int | None = None) -> int:
        """Prefetch display regions of ``level`` where the user is expected to go next.

        The regions (e.g. the views around the next synapses of a review) are fetched at
        prefetch priority, the first region first, and replace the previous hint.

        Parameters
        ----------
        regions : list of (start, stop)
            Display index regions of ``level``, most urgent first.
        level : int, optional
            The level to fetch (default: the level shown).

        Returns
        -------
        int
            How many blocks were not cached and are now wanted.
        """
        if not self.streaming:
            return 0
        if level is None:
            level = self._main[0] if self._main is not None else 0
        jobs: dict[ChunkKey, FetchJob] = {}
        geom = self.volume.levels[level]
        for rank, (start, stop) in enumerate(regions):
            blocks = [
                b
                for b in self._uncached(level, start, stop)
                if self.volume.key(level, b) not in jobs
            ]
            distances = _distances(geom, blocks, _center(start, stop, geom.factor))
            for block, distance in zip(blocks, distances.tolist(), strict=True):
                priority = Priority(
                    Tier.PREFETCH, -level, HINT_RANK_DISTANCE * (rank + 1) + distance
                )
                job = self.volume.job(level, block, priority)
                jobs[job.key] = job
        self._hint_jobs = jobs
        self._submit()
        return len(jobs)

    def _submit(self) -> None:
        cache = self.volume.service.cache
        jobs = {**self._hint_jobs, **self._prefetch_jobs, **self._thumb_jobs, **self._main_jobs}
        self._scheduler.submit(self, (job for key, job in jobs.items() if key not in cache))

    def _jobs(
        self, level: int, blocks: list[Index3], tier: Tier, centre: np.ndarray
    ) -> dict[ChunkKey, FetchJob]:
        vol = self.volume
        distances = _distances(vol.levels[level], blocks, centre)
        jobs = {}
        for block, distance in zip(blocks, distances.tolist(), strict=True):
            job = vol.job(level, block, Priority(tier, -level, distance))
            jobs[job.key] = job
        return jobs

    def _uncached(self, level: int, start: Index3, stop: Index3) -> list[Index3]:
        cache = self.volume.service.cache
        return [
            b
            for b in self.volume.levels[level].blocks_for(start, stop)
            if self.volume.key(level, b) not in cache
        ]

    def _preview_jobs(
        self, level: int, blocks: list[Index3], centre: np.ndarray
    ) -> dict[ChunkKey, FetchJob]:
        """Blocks of a coarser level covering ``blocks``, fetched first for a quick preview."""
        vol = self.volume
        step = vol.service.settings.preview_levels
        target = min(level + step, len(vol.levels) - 1)
        here, coarse = vol.levels[level], vol.levels[target]
        if target == level or not (here.aligned and coarse.aligned):
            return {}
        ratio = [c // max(h, 1) for c, h in zip(coarse.factor, here.factor, strict=True)]
        corners = np.array([here.block_display_bounds(b) for b in blocks])  # (n, 2, 3)
        start, stop = corners[:, 0].min(axis=0), corners[:, 1].max(axis=0)
        c_start = tuple(int(a) // r for a, r in zip(start, ratio, strict=True))
        c_stop = tuple(-(-int(b) // r) for b, r in zip(stop, ratio, strict=True))
        return self._jobs(target, self._uncached(target, c_start, c_stop), Tier.VISIBLE, centre)  # type: ignore[arg-type]

    def _prefetch(
        self, level: int, start: Index3, stop: Index3, centre: np.ndarray
    ) -> dict[ChunkKey, FetchJob]:
        """Neighbouring z-planes and the region one move further along the motion."""
        vol = self.volume
        if not vol.service.settings.prefetch:
            return {}
        geom = vol.levels[level]
        bz = geom.block[0]
        regions = [
            ((start[0] - bz, start[1], start[2]), (start[0], stop[1], stop[2])),
            ((stop[0], start[1], start[2]), (stop[0] + bz, stop[1], stop[2])),
        ]
        step = self._motion / np.maximum(np.array(geom.factor), 1)
        if np.any(np.abs(step) >= 1):
            shift = [round(float(s)) for s in step]
            regions.append(
                (
                    tuple(a + s for a, s in zip(start, shift, strict=True)),
                    tuple(b + s for b, s in zip(stop, shift, strict=True)),
                )
            )
        jobs: dict[ChunkKey, FetchJob] = {}
        for r_start, r_stop in regions:
            blocks = self._uncached(level, r_start, r_stop)  # type: ignore[arg-type]
            jobs.update(self._jobs(level, blocks, Tier.PREFETCH, centre))
        return jobs

    def _pin(self, level: int, start: Index3, stop: Index3) -> None:
        vol = self.volume
        geom = vol.levels[level]
        blocks = geom.blocks_for(start, stop)
        budget_share = vol.service.cache.budget // PIN_SHARE_DIVISOR
        most = budget_share // max(math.prod(geom.block) * vol.dtype.itemsize, 1)
        if len(blocks) > most:  # never pin more than a share of the budget: the central ones
            order = np.argsort(_distances(geom, blocks, _center(start, stop, geom.factor)))
            blocks = [blocks[i] for i in order[:most]]
        vol.service.cache.pin(self, [vol.key(level, b) for b in blocks])


HINT_RANK_DISTANCE = 1e9
"""Hinted regions are fetched in order: each rank lies farther than any block distance."""


def _distances(geom: LevelGeometry, blocks: list[Index3], centre: np.ndarray) -> np.ndarray:
    """Distance of each block's centre to ``centre``, in level-0 display voxels."""
    if not blocks:
        return np.zeros(0)
    size = np.asarray(geom.block)
    middle = (np.asarray(blocks) * size + size / 2 + np.asarray(geom.shift)) * np.maximum(
        np.asarray(geom.factor), 1
    )
    return np.linalg.norm(middle - centre, axis=1)
