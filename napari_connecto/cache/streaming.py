"""Stream a volume through the shared cache: per-volume block reads and per-layer wish lists.

A :class:`StreamingVolume` knows how to fetch one cache block of one level. A
:class:`LayerStream` is the streaming state of one napari layer: its level arrays
(:class:`~napari_connecto.cache.level.StreamingLevel`), what it showed last, and the
chunks it wants (planned by :class:`~napari_connecto.cache.wishes.WishLists`). In
*blocking* mode (the default, for scripts) reads wait for real data; the viewer bridge
switches a layer to *streaming* mode, where reads return at once from what is cached and
queue the rest. A read that composed a complete thumbnail (napari slices the coarsest
level on every refresh) is reused until a block of that level comes or goes.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.cache.chunk_cache import ChunkKey
from napari_connecto.cache.compose import compose_region, hatch
from napari_connecto.cache.planner import Planner
from napari_connecto.cache.pyramid import LevelGeometry, plan_pyramid
from napari_connecto.cache.scheduler import FetchJob, Priority, Tier
from napari_connecto.cache.service import StreamingService, default_service
from napari_connecto.cache.wishes import WishLists
from napari_connecto.errors import ChunkError

if TYPE_CHECKING:
    from napari_connecto.cache.level import StreamingLevel
    from napari_connecto.volume.scale import Index3
    from napari_connecto.volume.volume import Volume

__all__ = ["FailedBlock", "LayerStream", "StreamingVolume"]

logger = logging.getLogger(__name__)

_tokens = itertools.count(1)

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


class LayerStream(WishLists):
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
        self._plan_lock = threading.RLock()
        """Held while the wish lists change and go to the scheduler (planner or caller)."""
        self.planner: Planner | None = None
        """Where wish lists are planned (the viewer's); ``None``: on the reading thread."""
        self._dirty = False
        self._thumb_dirty = False
        self._thumb_memo: tuple[tuple[int, Index3, Index3], int, np.ndarray] | None = None
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
        with self._plan_lock:
            self._main = self._thumb = self._thumb_memo = None
            self._main_jobs, self._thumb_jobs, self._prefetch_jobs = {}, {}, {}
            self._hint_jobs = {}
            self._scheduler.listen(self, self._arrived)
            self.streaming = True
        self.mark_dirty()

    def levels(self) -> list[StreamingLevel]:
        """One lazy array per level, finest first (napari's multiscale data)."""
        from napari_connecto.cache.level import StreamingLevel

        return [StreamingLevel(self, i) for i in range(len(self.volume.levels))]

    # -- what the bridge polls ---------------------------------------------------------
    def take_dirty(self) -> bool:
        """Whether a chunk of the view arrived (or failed) since the last call."""
        with self._lock:
            dirty, self._dirty = self._dirty, False
            return dirty

    def peek_dirty(self) -> bool:
        """Whether a redraw is pending, without clearing it."""
        return self._dirty

    def take_thumbnail_dirty(self) -> bool:
        """Whether a chunk only the layer's thumbnail shows arrived since the last call.

        Such a chunk changes nothing on the canvas: it is worth a new thumbnail, not a
        redraw.
        """
        with self._lock:
            dirty, self._thumb_dirty = self._thumb_dirty, False
            return dirty

    def peek_thumbnail_dirty(self) -> bool:
        """Whether a thumbnail update is pending, without clearing it."""
        return self._thumb_dirty

    def mark_dirty(self) -> None:
        """Ask for a redraw (after an invalidation or a settings change)."""
        with self._lock:
            self._dirty = True

    def _arrived(self, key: ChunkKey) -> None:
        if key in self._main_jobs:  # prefetch changes nothing drawn
            with self._lock:
                self._dirty = True
                if key not in self.volume.service.cache:  # it failed: show that at once
                    self._failed_unseen = True
        elif key in self._thumb_jobs:  # only the layer list's thumbnail shows it
            with self._lock:
                self._thumb_dirty = True

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
        with self._plan_lock:
            self._main_jobs, self._thumb_jobs, self._prefetch_jobs = {}, {}, {}
            self._hint_jobs = {}
            self._main = self._thumb = None
            self._scheduler.submit(self, ())
            self.volume.service.cache.unpin(self)

    def close(self) -> None:
        """Stop wanting anything and release pins (the layer is gone)."""
        with self._plan_lock:
            self.streaming = False
            self.planner = None
            self._scheduler.forget(self)
            self.volume.service.cache.unpin(self)

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
        version = vol.service.cache.version(vol.token, level)
        memo = self._thumb_memo if thumbnail and not probe else None
        if memo is not None and memo[:2] == ((level, start, stop), version):
            return memo[2]  # napari slices the thumbnail level on every refresh
        cache, token, used = vol.service.cache, vol.token, []

        def lookup(lv: int, block: Index3) -> np.ndarray | None:
            key = ChunkKey(token, lv, block)
            chunk = cache.peek(key)
            if chunk is not None:
                used.append(key)
            return chunk

        out, missing, uncovered = compose_region(
            vol.levels, level, start, stop, lookup=lookup, dtype=vol.dtype, fill=vol.fill_value
        )
        cache.touch(used)  # one lock for the whole region, not one per block
        self._hatch_failures(out, level, start, missing)
        if probe:
            return out
        if thumbnail and not missing:  # complete: valid until a block of its level changes
            out.flags.writeable = False
            self._thumb_memo = ((level, start, stop), version, out)
        if not thumbnail:
            self._sharp = not missing
            self._uncovered_shown = bool(uncovered)
            self.last_read = time.monotonic()
        self._update_wishes(level, start, stop, missing, uncovered, thumbnail=thumbnail)
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
