"""The wish lists of a streamed layer: which chunks it wants, how urgently, and pins.

A read in streaming mode records the region it composed; what that region wants from
storage (fetch jobs for its missing blocks, coarse previews for gaps nothing cached
covers, pins so the blocks shown are not evicted, and, once the view settles, the
neighbouring planes and the region ahead of the motion) is planned here and handed to
the scheduler. In the viewer the planning runs on the :class:`~napari_connecto.cache.
planner.Planner` thread, in the order the layer read; a plan whose region the layer has
left by then is dropped. Scripts plan on the reading thread.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.cache.chunk_cache import ChunkKey
from napari_connecto.cache.scheduler import FetchJob, FetchScheduler, Priority, Tier

if TYPE_CHECKING:
    from napari_connecto.cache.planner import Planner
    from napari_connecto.cache.pyramid import LevelGeometry
    from napari_connecto.cache.streaming import StreamingVolume
    from napari_connecto.volume.scale import Index3

__all__ = ["WishLists"]

PIN_SHARE_DIVISOR = 4
"""A layer pins at most a quarter of the budget, so three big layers still leave room."""

LevelRegion = tuple[int, "Index3", "Index3"]
"""``(level, start, stop)`` of a display region of one level."""


def _center(start: Index3, stop: Index3, factor: Index3) -> np.ndarray:
    """Centre of a display region in level-0 display voxels."""
    return np.array([(a + b) / 2 * max(f, 1) for a, b, f in zip(start, stop, factor, strict=True)])


class WishLists:
    """What a :class:`~napari_connecto.cache.streaming.LayerStream` wants fetched (a mixin).

    The state lives on the stream; the wish lists change only under ``_plan_lock``, and
    the job dicts are replaced, never changed in place (worker threads read them).
    """

    volume: StreamingVolume
    streaming: bool
    planner: Planner | None
    _lock: threading.Lock
    _plan_lock: threading.RLock
    _dirty: bool
    _thumb_dirty: bool
    _main: LevelRegion | None
    _thumb: LevelRegion | None
    _motion: np.ndarray
    _main_jobs: dict[ChunkKey, FetchJob]
    _thumb_jobs: dict[ChunkKey, FetchJob]
    _prefetch_jobs: dict[ChunkKey, FetchJob]
    _hint_jobs: dict[ChunkKey, FetchJob]

    @property
    def _scheduler(self) -> FetchScheduler:
        return self.volume.service.scheduler

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
        """Record what was read; plan its wish list now or on the :attr:`planner` thread."""
        region = (level, start, stop)
        if thumbnail:
            same = region == self._thumb
            self._thumb = region
        else:
            previous, same = self._main, region == self._main
            self._main = region
            if previous is not None and not same:
                factor = self.volume.levels
                old = _center(previous[1], previous[2], factor[previous[0]].factor)
                self._motion = _center(start, stop, factor[level].factor) - old
        plan = functools.partial(self._plan, region, missing, uncovered, thumbnail, same)
        if self.planner is None:
            plan()
        else:
            self.planner.submit(plan)

    def _plan(
        self,
        region: LevelRegion,
        missing: list[Index3],
        uncovered: list[Index3],
        thumbnail: bool,
        same: bool,
    ) -> None:
        """Make the jobs of a region read, pin it and hand the wishes to the scheduler."""
        with self._plan_lock:
            if not self.streaming or region != (self._thumb if thumbnail else self._main):
                return  # paused, closed, or a later read plans its own region
            if same:
                self._replan(region, missing, thumbnail=thumbnail)
            else:
                self._plan_new(region, missing, uncovered, thumbnail=thumbnail)
            # A chunk cached after the read composed the region, but before its job was
            # known here, raised no arrival for it: draw it next tick all the same.
            cache = self.volume.service.cache
            if any(key in cache for key in (self._thumb_jobs if thumbnail else self._main_jobs)):
                with self._lock:
                    if thumbnail:
                        self._thumb_dirty = True
                    else:
                        self._dirty = True

    def _plan_new(
        self,
        region: LevelRegion,
        missing: list[Index3],
        uncovered: list[Index3],
        *,
        thumbnail: bool,
    ) -> None:
        """Jobs, pins and wishes for a region the layer did not show before."""
        vol = self.volume
        level, start, stop = region
        centre = _center(start, stop, vol.levels[level].factor)
        if thumbnail:
            self._thumb_jobs = self._jobs(level, missing, Tier.PREFETCH, centre)
        else:
            self._prefetch_jobs = {}
            jobs = self._jobs(level, missing, Tier.VISIBLE, centre)
            if uncovered:  # nothing coarser is cached there: fetch a quick preview first
                jobs.update(self._preview_jobs(level, uncovered, centre))
            self._main_jobs = jobs  # never changed in place: other threads read it
            self._pin(level, start, stop)
        self._submit()

    def _replan(self, region: LevelRegion, missing: list[Index3], *, thumbnail: bool) -> None:
        """A redraw of the same view (chunks arrived): keep the jobs, drop the arrived ones.

        Rebuilding the jobs on every redraw fed Python's full garbage collections (~100 ms
        pauses on the main thread in a napari process). The scheduler already holds these
        wishes and knows which arrived: resubmit only when something else changed.
        """
        vol = self.volume
        cache = vol.service.cache
        if thumbnail:
            self._thumb_jobs = {k: j for k, j in self._thumb_jobs.items() if k not in cache}
            return
        level, start, stop = region
        before = self._main_jobs
        # previews are only worth fetching while sharp data is missing
        jobs = {k: j for k, j in before.items() if k not in cache and (missing or k.level == level)}
        changed = len(jobs) < len(before) and any(
            k not in cache for k in before.keys() - jobs.keys()
        )
        # blocks that left the cache since (evicted, invalidated) are asked again
        keys = [vol.key(level, b) for b in missing]
        lost = [b for b, k in zip(missing, keys, strict=True) if k not in jobs and k not in cache]
        if lost:
            centre = _center(start, stop, vol.levels[level].factor)
            jobs.update(self._jobs(level, lost, Tier.VISIBLE, centre))
        self._main_jobs = jobs
        if lost or changed:
            self._submit()

    def settle(self) -> None:
        """The view stopped moving: also fetch neighbouring z-planes and ahead of the motion.

        Runs on the :attr:`planner` thread when there is one.
        """
        region = self._main
        if region is None or not self.streaming:
            return
        task = functools.partial(self._settle, region)
        if self.planner is None:
            task()
        else:
            self.planner.submit(task)

    def _settle(self, region: LevelRegion) -> None:
        with self._plan_lock:
            if region != self._main or not self.streaming:
                return  # moved on since: the next settle prefetches around the new view
            level, start, stop = region
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
        with self._plan_lock:
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
