"""Fetch chunks on worker threads, most important first, with bounded concurrency per source.

Clients (one per streamed layer) say which chunks they want with :meth:`FetchScheduler.submit`;
each call replaces the client's previous wish list and bumps its generation, so requests for a
view the user has already left are dropped before they reach storage. Priorities order the
queue: visible before prefetch, coarser levels before finer, nearer the view centre first.
Failed chunks are retried with exponential backoff while someone still wants them.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from napari_connecto.cache.chunk_cache import ChunkCache, ChunkKey

__all__ = ["FetchJob", "FetchScheduler", "Priority", "SchedulerStats", "Tier"]

logger = logging.getLogger(__name__)

RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Seconds to wait before each automatic retry of a failed chunk; then it stays failed."""
PREFETCH_SHARE = 0.5
"""Most of the workers that prefetch at once: the rest stay free for the next view.

A fetch cannot be cancelled once it started, so when the user moves, every worker busy
with a prefetch delays the new view's visible chunks by up to one round trip."""


class Tier(IntEnum):
    """How urgently a chunk is needed (lower first)."""

    BLOCKING = 0
    """A script is waiting for it."""
    VISIBLE = 1
    """It is on screen."""
    PREFETCH = 2
    """It may soon be on screen (neighbouring planes, direction of movement, thumbnails)."""


class Priority(NamedTuple):
    """Sort key of a request: tier, then coarser levels, then distance to the view centre.

    A named tuple (compared in C) rather than an ordered dataclass: the queue compares
    priorities on every push and pop.
    """

    tier: Tier
    coarse_first: int
    """Minus the level index, so coarser levels sort first."""
    distance: float
    """Distance of the chunk centre to the view centre (level-0 voxels)."""


@dataclass(frozen=True, slots=True)
class FetchJob:
    """One chunk a client wants."""

    key: ChunkKey
    priority: Priority
    fetch: Callable[[], np.ndarray] = field(compare=False)
    """Reads and decodes the chunk (blocking; runs on a worker thread)."""
    source: Hashable = field(compare=False)
    """What bounds concurrency (one opened backend)."""
    limit: int = field(default=8, compare=False)
    """Most concurrent fetches from ``source``."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a chunk could not be fetched, and when it may be tried again."""

    error: str
    attempts: int
    retry_at: float | None
    """Monotonic time of the next automatic retry, or ``None`` once retries are used up."""


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot of the scheduler's counters (Neuroglancer's chunk statistics)."""

    queued: int
    loading: int
    failed: int
    fetched: int
    """Chunks fetched since start (or the last :meth:`FetchScheduler.reset_counters`)."""
    fetched_bytes: int
    dropped: int
    """Queued requests dropped because the view moved on before they started."""
    workers: int
    last_error: str = ""
    """Why the most recent fetch that failed did (e.g. ``server busy (...)``)."""


@dataclass(slots=True)
class _Entry:
    job: FetchJob
    priority: Priority
    seq: int
    wanted_by: set[Hashable]
    waiters: list[Future[np.ndarray]] = field(default_factory=list)
    prefetching: bool = False
    """Started as a prefetch (counts against the prefetch share while it loads)."""


class FetchScheduler:
    """Worker threads fetching chunks into a :class:`ChunkCache` by priority.

    Parameters
    ----------
    cache : ChunkCache
        Where fetched chunks go.
    workers : int
        Number of worker threads (the most fetches in flight across all sources).
    """

    def __init__(self, cache: ChunkCache, workers: int = 16) -> None:
        self._cache = cache
        self._cond = threading.Condition()
        self._heap: list[tuple[Priority, int, ChunkKey]] = []
        self._entries: dict[ChunkKey, _Entry] = {}
        self._loading: dict[ChunkKey, _Entry] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._prefetching = 0
        self._wishes: dict[Hashable, dict[ChunkKey, FetchJob]] = {}
        self._generations: dict[Hashable, int] = {}
        self._listeners: dict[Hashable, Callable[[ChunkKey], None]] = {}
        self._failures: dict[ChunkKey, Failure] = {}
        self._last_error = ""
        self._attempts: dict[ChunkKey, int] = {}
        self._seq = itertools.count()
        self._fetched = 0
        self._fetched_bytes = 0
        self._dropped = 0
        self._threads: list[threading.Thread] = []
        self._target_workers = 0
        self._closed = False
        self.set_workers(workers)

    # -- configuration --------------------------------------------------------------
    @property
    def cache(self) -> ChunkCache:
        """The cache fetched chunks go into."""
        return self._cache

    @property
    def workers(self) -> int:
        """Number of worker threads."""
        return self._target_workers

    def set_workers(self, count: int) -> None:
        """Grow or shrink the worker pool (surplus workers exit when idle)."""
        if count < 1:
            raise ValueError(f"need at least one worker, got {count}")
        with self._cond:
            self._target_workers = count
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < count:
                thread = threading.Thread(
                    target=self._work, name=f"connecto-fetch-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the workers after their current fetch; queued requests are dropped."""
        with self._cond:
            self._closed = True
            for entry in self._entries.values():
                for fut in entry.waiters:
                    fut.cancel()
            self._entries.clear()
            self._heap.clear()
            self._cond.notify_all()

    # -- clients --------------------------------------------------------------------
    def listen(self, client: Hashable, callback: Callable[[ChunkKey], None]) -> None:
        """Call ``callback(key)`` (on a worker thread) when a chunk ``client`` wants arrives.

        Also called when a wanted chunk fails, so the client can show it as failed.
        """
        with self._cond:
            self._listeners[client] = callback

    def generation(self, client: Hashable) -> int:
        """How many times ``client`` has replaced its wish list."""
        return self._generations.get(client, 0)

    def submit(self, client: Hashable, jobs: Iterable[FetchJob]) -> int:
        """Replace ``client``'s wanted chunks with ``jobs``; return the new generation.

        Queued chunks no other client wants any more are dropped; chunks being
        fetched finish (and are cached) but are only announced to clients that
        still want them. Chunks already cached should not be submitted.
        """
        wanted = {job.key: job for job in jobs}
        with self._cond:
            old = self._wishes.get(client, {})
            self._wishes[client] = wanted
            gen = self._generations.get(client, 0) + 1
            self._generations[client] = gen
            for key in old.keys() - wanted.keys():
                self._unwant(client, key)
            for job in wanted.values():
                self._want(client, job)
            self._cond.notify_all()
            return gen

    def forget(self, client: Hashable) -> None:
        """Drop every wish of ``client`` (its layer was removed) and its stale failures."""
        old = set(self._wishes.get(client, {}))
        self.submit(client, ())
        with self._cond:
            self._wishes.pop(client, None)
            self._listeners.pop(client, None)
            self._generations.pop(client, None)
            for key in old:
                if not any(key in w for w in self._wishes.values()):
                    self._failures.pop(key, None)
                    self._attempts.pop(key, None)

    def wants(self, client: Hashable, key: ChunkKey) -> bool:
        """Whether ``client``'s current wish list holds ``key``."""
        return key in self._wishes.get(client, {})

    def fetch_now(self, jobs: Iterable[FetchJob]) -> dict[ChunkKey, Future[np.ndarray]]:
        """Fetch ``jobs`` ahead of everything else; one future per chunk.

        For scripts that need real data: wait on the futures. A future's exception
        is the fetch error (e.g. :class:`~napari_connecto.errors.ChunkError`).
        """
        futures: dict[ChunkKey, Future[np.ndarray]] = {}
        with self._cond:
            if self._closed:
                raise RuntimeError("the fetch scheduler is closed")
            for job in jobs:
                fut: Future[np.ndarray] = Future()
                futures[job.key] = fut
                cached = self._cache.get(job.key)
                if cached is not None:
                    fut.set_result(cached)
                    continue
                urgent = FetchJob(
                    job.key,
                    Priority(Tier.BLOCKING, job.priority.coarse_first, job.priority.distance),
                    job.fetch,
                    job.source,
                    job.limit,
                )
                entry = self._loading.get(job.key) or self._want(None, urgent)
                entry.waiters.append(fut)
            self._cond.notify_all()
        return futures

    # -- failures -------------------------------------------------------------------
    def failure(self, key: ChunkKey) -> Failure | None:
        """Why ``key`` failed, if its last fetch failed."""
        return self._failures.get(key)

    def is_loading(self, key: ChunkKey) -> bool:
        """Whether ``key`` is being fetched right now (cheap; no lock)."""
        return key in self._loading

    def has_failures(self) -> bool:
        """Whether any chunk's last fetch failed (cheap; no lock)."""
        return bool(self._failures)

    def failed_keys(self) -> list[ChunkKey]:
        """Every chunk whose last fetch failed."""
        with self._cond:
            return list(self._failures)

    def retry_failed(self) -> int:
        """Try every failed chunk that is still wanted again now; return how many."""
        with self._cond:
            keys = list(self._failures)
            self._failures.clear()
            for key in keys:
                self._attempts.pop(key, None)
            count = 0
            for key in keys:
                wanted = False
                for client, wishes in self._wishes.items():
                    if key in wishes:
                        self._want(client, wishes[key])
                        wanted = True
                count += wanted
            self._cond.notify_all()
            return count

    # -- statistics -----------------------------------------------------------------
    def stats(self) -> SchedulerStats:
        """A snapshot of the counters."""
        with self._cond:
            return SchedulerStats(
                queued=len(self._entries),
                loading=len(self._loading),
                failed=len(self._failures),
                fetched=self._fetched,
                fetched_bytes=self._fetched_bytes,
                dropped=self._dropped,
                workers=self._target_workers,
                last_error=self._last_error if self._failures else "",
            )

    def reset_counters(self) -> None:
        """Zero the fetched/dropped counters (benchmarks measure one phase at a time)."""
        with self._cond:
            self._fetched = self._fetched_bytes = self._dropped = 0

    def idle(self) -> bool:
        """Whether nothing is queued or loading, and no wanted failed chunk awaits a retry."""
        with self._cond:
            return not self._busy()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until :meth:`idle` or ``timeout`` seconds; return whether idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._busy():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # a due retry is re-queued without a notify: look again now and then
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    def _busy(self) -> bool:
        if self._entries or self._loading:
            return True
        return any(
            failure.retry_at is not None and any(key in w for w in self._wishes.values())
            for key, failure in self._failures.items()
        )

    # -- internals (called with the lock held) ----------------------------------------
    def _want(self, client: Hashable | None, job: FetchJob) -> _Entry:
        key = job.key
        if key in self._loading:
            entry = self._loading[key]
            if client is not None:
                entry.wanted_by.add(client)
            return entry
        failure = self._failures.get(key)
        if client is not None and failure is not None and job.priority.tier != Tier.BLOCKING:
            # wait for the retry timer (or a manual retry) instead of hammering the source
            return _Entry(job, job.priority, -1, {client})
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(job, job.priority, next(self._seq), set())
            self._entries[key] = entry
            heapq.heappush(self._heap, (entry.priority, entry.seq, key))
        elif job.priority < entry.priority:
            entry.priority = job.priority
            entry.job = job
            entry.seq = next(self._seq)
            heapq.heappush(self._heap, (entry.priority, entry.seq, key))
        if client is not None:
            entry.wanted_by.add(client)
        return entry

    def _unwant(self, client: Hashable, key: ChunkKey) -> None:
        entry = self._entries.get(key) or self._loading.get(key)
        if entry is None:
            return
        entry.wanted_by.discard(client)
        if not entry.wanted_by and not entry.waiters and key in self._entries:
            del self._entries[key]
            self._dropped += 1

    def _next_job(self) -> _Entry | None:
        """Pop the most important queued entry whose source has a free slot."""
        skipped: list[tuple[Priority, int, ChunkKey]] = []
        chosen = None
        while self._heap:
            item = heapq.heappop(self._heap)
            _, seq, key = item
            entry = self._entries.get(key)
            if entry is None or entry.seq != seq:
                continue  # dropped or re-prioritised
            job = entry.job
            if entry.priority.tier >= Tier.PREFETCH and self._prefetching >= self._prefetch_limit():
                skipped.append(item)
                break  # the queue is ordered by tier: only prefetches follow
            if self._in_flight.get(job.source, 0) >= job.limit:
                skipped.append(item)
                continue
            chosen = entry
            del self._entries[key]
            break
        for item in skipped:
            heapq.heappush(self._heap, item)
        return chosen

    def _prefetch_limit(self) -> int:
        return max(1, int(self._target_workers * PREFETCH_SHARE))

    def _due_retries(self) -> float | None:
        """Re-queue failed chunks whose retry time has come; return seconds to the next one."""
        now = time.monotonic()
        nearest = None
        for key, failure in list(self._failures.items()):
            if failure.retry_at is None:
                continue
            if failure.retry_at > now:
                wait = failure.retry_at - now
                nearest = wait if nearest is None else min(nearest, wait)
                continue
            clients = [c for c, w in self._wishes.items() if key in w]
            if not clients:
                continue  # nobody looks at it; retry when it is wanted again
            del self._failures[key]
            for client in clients:
                self._want(client, self._wishes[client][key])
        return nearest

    # -- the worker loop ------------------------------------------------------------
    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while True:
                    if self._closed or self._threads.index(me) >= self._target_workers:
                        if not self._closed:
                            self._threads.remove(me)
                        return
                    wait = self._due_retries()
                    entry = self._next_job()
                    if entry is not None:
                        break
                    self._cond.wait(wait if wait is not None else 1.0)
                job = entry.job
                self._loading[job.key] = entry
                self._in_flight[job.source] = self._in_flight.get(job.source, 0) + 1
                entry.prefetching = entry.priority.tier >= Tier.PREFETCH
                self._prefetching += entry.prefetching
            self._run(entry)

    def _run(self, entry: _Entry) -> None:
        job = entry.job
        chunk: np.ndarray | None = None
        error: BaseException | None = None
        try:
            chunk = job.fetch()
        except Exception as exc:  # any fetch failure fails one chunk, never the worker
            error = exc
            logger.warning("chunk %s failed: %s", job.key, exc)
        kept = chunk is not None and self._cache.put(job.key, chunk)
        with self._cond:
            del self._loading[job.key]
            self._in_flight[job.source] -= 1
            self._prefetching -= entry.prefetching
            if chunk is not None:
                self._fetched += 1
                self._fetched_bytes += int(chunk.nbytes)
            if kept:
                self._failures.pop(job.key, None)
                self._attempts.pop(job.key, None)
            else:
                # a chunk the cache could not keep (the budget is full of chunks in view)
                # is failed like a bad read: shown as failed, retried with backoff
                if error is None:
                    error = MemoryError("the cache budget is full of chunks in view")
                attempts = self._attempts.get(job.key, 0) + 1
                self._attempts[job.key] = attempts
                delay = RETRY_DELAYS[attempts - 1] if attempts <= len(RETRY_DELAYS) else None
                retry_at = None if delay is None else time.monotonic() + delay
                self._failures[job.key] = Failure(str(error), attempts, retry_at)
                self._last_error = str(error)
            listeners = [
                self._listeners[c]
                for c in entry.wanted_by
                if c in self._listeners and job.key in self._wishes.get(c, {})
            ]
            waiters = entry.waiters
            self._cond.notify_all()
        for fut in waiters:
            if chunk is not None:
                fut.set_result(chunk)
            elif error is not None:
                fut.set_exception(error)
        for callback in listeners:
            callback(job.key)
