"""Decoded chunks under one byte budget: least-recently-used eviction, visible chunks pinned."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["CacheStats", "ChunkCache", "ChunkKey"]

logger = logging.getLogger(__name__)


class ChunkKey(NamedTuple):
    """Names one decoded block of one level of one streamed volume.

    A named tuple rather than a frozen dataclass: keys are hashed and compared on every
    cache lookup (hundreds per redraw on the main thread), which tuples do in C, and
    tuples of plain ints drop out of the garbage collector's tracking.
    """

    volume: int
    """Token of the :class:`~napari_connecto.cache.streaming.StreamingVolume`."""
    level: int
    """Scale index (0 = finest)."""
    block: tuple[int, int, int]
    """Block index along z, y, x."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of what the cache holds."""

    nbytes: int
    """Bytes held now."""
    peak_nbytes: int
    """Most bytes ever held at once."""
    budget: int
    """The byte budget."""
    chunks: int
    """Number of chunks held."""
    pinned: int
    """Chunks that cannot be evicted because a view shows them."""
    evictions: int
    """Chunks evicted to make room so far."""
    rejected: int
    """Chunks not stored because pinned chunks left no room."""


class ChunkCache:
    """Decoded chunks held under a byte budget; thread-safe.

    Inserting evicts the least recently used chunks that no view has pinned.
    A chunk that does not fit even after evicting every unpinned chunk is
    refused, so the cache never holds more than its budget.

    Parameters
    ----------
    budget : int
        Most bytes to hold.
    """

    def __init__(self, budget: int) -> None:
        if budget <= 0:
            raise ValueError(f"cache budget must be positive, got {budget}")
        self._budget = int(budget)
        self._lock = threading.Lock()
        self._chunks: OrderedDict[ChunkKey, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._peak = 0
        self._pins: dict[Hashable, frozenset[ChunkKey]] = {}
        self._pin_counts: dict[ChunkKey, int] = {}
        self._pinned_bytes = 0
        self._evictions = 0
        self._rejected = 0
        self._versions: dict[tuple[int, int], int] = {}

    # -- budget ---------------------------------------------------------------------
    @property
    def budget(self) -> int:
        """Most bytes held at once."""
        return self._budget

    @budget.setter
    def budget(self, value: int) -> None:
        if value <= 0:
            raise ValueError(f"cache budget must be positive, got {value}")
        with self._lock:
            self._budget = int(value)
            self._evict_until(self._budget)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._nbytes

    def stats(self) -> CacheStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return CacheStats(
                nbytes=self._nbytes,
                peak_nbytes=self._peak,
                budget=self._budget,
                chunks=len(self._chunks),
                pinned=sum(1 for k in self._pin_counts if k in self._chunks),
                evictions=self._evictions,
                rejected=self._rejected,
            )

    def reset_peak(self) -> None:
        """Start measuring the peak from the current size."""
        with self._lock:
            self._peak = self._nbytes

    # -- chunks ---------------------------------------------------------------------
    def get(self, key: ChunkKey) -> np.ndarray | None:
        """The chunk, marked as recently used, or ``None``."""
        with self._lock:
            chunk = self._chunks.get(key)
            if chunk is not None:
                self._chunks.move_to_end(key)
            return chunk

    def __contains__(self, key: object) -> bool:
        return key in self._chunks

    def peek(self, key: ChunkKey) -> np.ndarray | None:
        """The chunk or ``None``, without the lock and without marking it used.

        For the main thread composing a view from many chunks: pass what it found to
        :meth:`touch` afterwards, one lock acquisition instead of one per chunk (each a
        chance to wait for a worker thread, and then for the interpreter lock).
        """
        return self._chunks.get(key)

    def touch(self, keys: Iterable[ChunkKey]) -> None:
        """Mark ``keys`` (those still held) as recently used."""
        with self._lock:
            chunks = self._chunks
            for key in keys:
                if key in chunks:
                    chunks.move_to_end(key)

    def version(self, volume: int, level: int) -> int:
        """A counter that changes whenever a chunk of ``volume``'s ``level`` comes or goes.

        Cheap and lock-free: a composed region of that level that found every block it
        needed stays valid while the counter is unchanged.
        """
        return self._versions.get((volume, level), 0)

    def _bump(self, key: ChunkKey) -> None:
        versions, where = self._versions, (key.volume, key.level)
        versions[where] = versions.get(where, 0) + 1

    def put(self, key: ChunkKey, chunk: np.ndarray) -> bool:
        """Store ``chunk`` (read-only from now on); return whether it was kept."""
        chunk.flags.writeable = False
        size = int(chunk.nbytes)
        with self._lock:
            old = self._chunks.pop(key, None)
            if old is not None:
                self._forget(key, old)
            if self._pinned_bytes + size > self._budget:  # refuse before evicting anything
                self._rejected += 1
                if self._rejected & (self._rejected - 1) == 0:  # 1st, 2nd, 4th, 8th, ...
                    logger.warning(
                        "chunk cache full of chunks in view (%d of %d bytes); %d chunks not "
                        "kept so far: raise the budget",
                        self._nbytes,
                        self._budget,
                        self._rejected,
                    )
                return False
            self._evict_until(self._budget - size)
            self._chunks[key] = chunk
            self._bump(key)
            self._nbytes += size
            if key in self._pin_counts:
                self._pinned_bytes += size
            self._peak = max(self._peak, self._nbytes)
            return True

    def discard(self, keys: Iterable[ChunkKey]) -> int:
        """Drop ``keys`` (pinned or not); return how many were held."""
        dropped = 0
        with self._lock:
            for key in keys:
                chunk = self._chunks.pop(key, None)
                if chunk is not None:
                    self._forget(key, chunk)
                    dropped += 1
        return dropped

    def discard_where(self, predicate: Callable[[ChunkKey], bool]) -> int:
        """Drop every chunk whose key matches ``predicate``; return how many."""
        with self._lock:
            doomed = [k for k in self._chunks if predicate(k)]
        return self.discard(doomed)

    def items_where(
        self, predicate: Callable[[ChunkKey], bool]
    ) -> list[tuple[ChunkKey, np.ndarray]]:
        """A snapshot of the ``(key, chunk)`` pairs whose key matches (no LRU update)."""
        with self._lock:
            return [(k, c) for k, c in self._chunks.items() if predicate(k)]

    # -- pins -----------------------------------------------------------------------
    def pin(self, owner: Hashable, keys: Iterable[ChunkKey]) -> None:
        """Make ``keys`` the chunks ``owner`` (a view) needs kept; replaces its previous pins."""
        new = frozenset(keys)
        with self._lock:
            old = self._pins.get(owner, frozenset())
            for key in old - new:
                count = self._pin_counts[key] - 1
                if count:
                    self._pin_counts[key] = count
                else:
                    del self._pin_counts[key]
                    if key in self._chunks:
                        self._pinned_bytes -= int(self._chunks[key].nbytes)
            for key in new - old:
                count = self._pin_counts.get(key, 0)
                self._pin_counts[key] = count + 1
                if not count and key in self._chunks:
                    self._pinned_bytes += int(self._chunks[key].nbytes)
            if new:
                self._pins[owner] = new
            else:
                self._pins.pop(owner, None)
            self._evict_until(self._budget)  # unpinned chunks may have kept it over budget

    def unpin(self, owner: Hashable) -> None:
        """Release every pin of ``owner``."""
        self.pin(owner, ())

    def is_pinned(self, key: ChunkKey) -> bool:
        """Whether some view pins ``key``."""
        return key in self._pin_counts

    # -- internals ------------------------------------------------------------------
    def _forget(self, key: ChunkKey, chunk: np.ndarray) -> None:
        """Account for ``chunk`` leaving the cache (already popped)."""
        self._bump(key)
        self._nbytes -= int(chunk.nbytes)
        if key in self._pin_counts:
            self._pinned_bytes -= int(chunk.nbytes)

    def _evict_until(self, target: int) -> bool:
        """Evict unpinned chunks, oldest first, until at most ``target`` bytes are held."""
        if self._nbytes <= target:
            return True
        for key in list(self._chunks):
            if self._nbytes <= target:
                break
            if key in self._pin_counts:
                continue
            chunk = self._chunks.pop(key)
            self._bump(key)
            self._nbytes -= int(chunk.nbytes)
            self._evictions += 1
        return self._nbytes <= target
