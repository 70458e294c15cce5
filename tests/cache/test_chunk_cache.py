"""The byte-budget chunk cache: budget, LRU eviction, pins, refusals, peak tracking."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from napari_connecto.cache import ChunkCache, ChunkKey


def key(i: int, volume: int = 1, level: int = 0) -> ChunkKey:
    return ChunkKey(volume, level, (0, 0, i))


def chunk(nbytes: int) -> np.ndarray:
    return np.zeros(nbytes, dtype=np.uint8)


def held(cache: ChunkCache, n: int = 10) -> set[int]:
    return {i for i in range(n) if key(i) in cache}


# -- plain behaviour ------------------------------------------------------------------------


def test_put_get_round_trip_and_read_only() -> None:
    cache = ChunkCache(100)
    data = np.arange(10, dtype=np.uint8)
    assert cache.put(key(0), data)
    got = cache.get(key(0))
    np.testing.assert_array_equal(got, np.arange(10))
    assert cache.nbytes == 10
    # a cached chunk is shared by every view: nobody may scribble on it
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 99
    assert cache.get(key(1)) is None


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ChunkCache(0)
    cache = ChunkCache(10)
    with pytest.raises(ValueError, match="positive"):
        cache.budget = -1
    assert cache.budget == 10


def test_lru_evicts_least_recently_used() -> None:
    cache = ChunkCache(30)
    for i in range(3):
        assert cache.put(key(i), chunk(10))
    cache.get(key(0))  # 0 is now the most recently used; 1 is the oldest
    assert cache.put(key(3), chunk(10))
    assert held(cache) == {0, 2, 3}
    assert cache.put(key(4), chunk(15))  # needs two slots: evicts 2 then 0
    assert held(cache) == {3, 4}
    assert cache.nbytes == 25
    assert cache.stats().evictions == 3


def test_replacing_a_chunk_counts_its_bytes_once() -> None:
    cache = ChunkCache(100)
    cache.put(key(0), chunk(40))
    cache.put(key(0), chunk(30))
    assert cache.nbytes == 30
    assert cache.stats().chunks == 1
    assert cache.get(key(0)).nbytes == 30


def test_pinned_chunks_survive_eviction() -> None:
    cache = ChunkCache(30)
    for i in range(3):
        cache.put(key(i), chunk(10))
    cache.pin("view", [key(0)])  # the oldest, but on screen
    for i in range(3, 8):
        assert cache.put(key(i), chunk(10))
    assert key(0) in cache
    assert cache.nbytes <= 30
    assert cache.is_pinned(key(0))
    assert cache.stats().pinned == 1


def test_pin_before_arrival_protects_chunk_once_it_arrives() -> None:
    cache = ChunkCache(20)
    cache.pin("view", [key(0)])
    cache.put(key(0), chunk(10))
    cache.put(key(1), chunk(10))
    cache.put(key(2), chunk(10))
    assert held(cache) == {0, 2}


def test_pins_are_per_owner_and_replace_previous_pins() -> None:
    cache = ChunkCache(20)
    cache.put(key(0), chunk(10))
    cache.put(key(1), chunk(10))
    cache.pin("a", [key(0)])
    cache.pin("b", [key(0), key(1)])
    cache.pin("b", [key(1)])  # b no longer needs 0, but a still does
    assert cache.is_pinned(key(0))
    cache.unpin("a")
    assert not cache.is_pinned(key(0))
    assert cache.is_pinned(key(1))
    cache.put(key(2), chunk(10))  # 0 is evictable now, 1 is not
    assert held(cache) == {1, 2}
    cache.unpin("b")
    assert cache.stats().pinned == 0


def test_insert_refused_when_everything_is_pinned() -> None:
    cache = ChunkCache(30)
    for i in range(3):
        cache.put(key(i), chunk(10))
    cache.pin("view", [key(0), key(1), key(2)])
    assert not cache.put(key(3), chunk(10))
    assert key(3) not in cache
    assert held(cache) == {0, 1, 2}
    stats = cache.stats()
    assert stats.nbytes == 30
    assert stats.rejected == 1
    assert stats.evictions == 0


def test_chunk_larger_than_budget_is_refused() -> None:
    cache = ChunkCache(30)
    cache.pin("view", [key(0)])
    cache.put(key(0), chunk(10))
    assert not cache.put(key(1), chunk(31))
    assert cache.nbytes == 10
    assert cache.stats().peak_nbytes == 10


def test_refused_insert_keeps_unpinned_chunks() -> None:
    """A chunk that cannot fit anyway must not wipe the rest of the cache on its way out."""
    cache = ChunkCache(100)
    cache.put(key(0), chunk(60))
    cache.pin("view", [key(0)])
    for i in range(1, 4):
        cache.put(key(i), chunk(10))
    # 60 pinned + 10 + 10 + 10: a 50-byte chunk cannot fit even with every unpinned one gone
    assert not cache.put(key(9), chunk(50))
    assert held(cache) == {0, 1, 2, 3}
    assert cache.nbytes == 90


def test_budget_shrink_evicts_least_recent_unpinned_first() -> None:
    cache = ChunkCache(100)
    for i in range(5):
        cache.put(key(i), chunk(20))
    cache.pin("view", [key(0)])
    cache.get(key(1))
    cache.budget = 60
    assert cache.nbytes <= 60
    # order of use now: 2, 3, 4, 1 (0 pinned); the oldest two unpinned go
    assert held(cache) == {0, 4, 1}
    cache.budget = 200  # growing evicts nothing
    assert held(cache) == {0, 4, 1}
    assert cache.stats().budget == 200


def test_peak_tracking_and_reset() -> None:
    cache = ChunkCache(100)
    cache.put(key(0), chunk(40))
    cache.put(key(1), chunk(50))
    cache.discard([key(0), key(1)])
    stats = cache.stats()
    assert stats.nbytes == 0
    assert stats.peak_nbytes == 90
    cache.put(key(2), chunk(5))
    cache.reset_peak()
    assert cache.stats().peak_nbytes == 5
    cache.put(key(3), chunk(7))
    assert cache.stats().peak_nbytes == 12


def test_discard_and_discard_where() -> None:
    cache = ChunkCache(1000)
    for level in range(2):
        for i in range(3):
            cache.put(key(i, volume=1, level=level), chunk(10))
    cache.put(key(0, volume=2), chunk(10))
    cache.pin("view", [key(0, volume=1, level=1)])
    assert cache.discard([key(0), key(7)]) == 1
    # pinned chunks are dropped too: invalidation must not leave stale data on screen
    assert cache.discard_where(lambda k: k.volume == 1 and k.level == 1) == 3
    assert cache.stats().chunks == 3
    assert key(0, volume=2) in cache
    assert cache.nbytes == 30


def test_peek_leaves_the_lru_order_and_touch_updates_it() -> None:
    cache = ChunkCache(budget=30)
    for i in range(3):
        cache.put(key(i), chunk(10))
    assert cache.peek(key(0)) is not None and cache.peek(key(9)) is None
    cache.put(key(3), chunk(10))  # key 0 is still the least recently used
    assert held(cache) == {1, 2, 3}
    cache.touch([key(1), key(9)])  # absent keys are ignored
    cache.put(key(4), chunk(10))
    assert held(cache) == {1, 3, 4}


def test_version_changes_when_a_chunk_of_that_level_comes_or_goes() -> None:
    cache = ChunkCache(budget=30)
    assert cache.version(1, 0) == 0
    cache.put(key(0), chunk(10))
    stored = cache.version(1, 0)
    assert stored != 0
    cache.get(key(0))  # reading changes nothing
    cache.put(key(1, level=2), chunk(10))  # another level
    cache.put(key(2, volume=7), chunk(10))  # another volume
    assert cache.version(1, 0) == stored
    cache.put(key(3), chunk(10))  # evicts key 0: both change it
    after_eviction = cache.version(1, 0)
    assert after_eviction != stored
    cache.discard([key(3)])
    assert cache.version(1, 0) != after_eviction


def test_concurrent_puts_and_pins_respect_budget() -> None:
    cache = ChunkCache(500)
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(400):
                i = int(rng.integers(0, 40))
                if rng.random() < 0.2:
                    cache.pin(seed, [key(int(j)) for j in rng.integers(0, 40, 3)])
                else:
                    cache.put(key(i), chunk(int(rng.integers(1, 60))))
                assert cache.nbytes <= 500
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = cache.stats()
    assert stats.peak_nbytes <= 500
    held_bytes = sum(cache.get(key(i)).nbytes for i in range(40) if key(i) in cache)
    assert held_bytes == stats.nbytes


# -- stateful property test against a simple model ----------------------------------------

KEYS = st.integers(0, 7)


class CacheModel(RuleBasedStateMachine):
    """Random puts/gets/pins/budget changes; the cache must agree with a plain LRU model."""

    def __init__(self) -> None:
        super().__init__()
        self.budget = 100
        self.cache = ChunkCache(self.budget)
        self.model: OrderedDict[int, int] = OrderedDict()  # key -> size, oldest first
        self.pins: dict[int, frozenset[int]] = {}
        self.peak = 0
        self.over_budget_ok = False  # only after shrinking the budget below pinned bytes

    def pinned(self) -> set[int]:
        return set().union(*self.pins.values()) if self.pins else set()

    @rule(k=KEYS, size=st.integers(1, 70))
    def put(self, k: int, size: int) -> None:
        self.model.pop(k, None)
        pinned = self.pinned()
        pinned_bytes = sum(s for kk, s in self.model.items() if kk in pinned)
        kept = self.cache.put(key(k), chunk(size))
        assert kept == (pinned_bytes + size <= self.budget)
        if kept:
            nbytes = sum(self.model.values())
            for kk in list(self.model):
                if nbytes + size <= self.budget:
                    break
                if kk not in pinned:
                    nbytes -= self.model.pop(kk)
            self.model[k] = size
            self.peak = max(self.peak, nbytes + size)
            self.over_budget_ok = False
        else:
            # pinned chunks must all survive a refusal (whether unpinned ones do is
            # test_refused_insert_keeps_unpinned_chunks' business)
            survivors = OrderedDict(
                (kk, s) for kk, s in self.model.items() if key(kk) in self.cache
            )
            assert pinned & set(self.model) <= set(survivors)
            self.model = survivors

    @rule(k=KEYS)
    def get(self, k: int) -> None:
        got = self.cache.get(key(k))
        assert (got is not None) == (k in self.model)
        if got is not None:
            assert got.nbytes == self.model[k]
            self.model.move_to_end(k)

    @rule(owner=st.integers(0, 2), keys=st.frozensets(KEYS, max_size=4))
    def pin(self, owner: int, keys: frozenset[int]) -> None:
        self.cache.pin(owner, [key(k) for k in keys])
        if keys:
            self.pins[owner] = keys
        else:
            self.pins.pop(owner, None)
        self.evict_to_budget()

    @rule(owner=st.integers(0, 2))
    def unpin(self, owner: int) -> None:
        self.cache.unpin(owner)
        self.pins.pop(owner, None)
        self.evict_to_budget()

    def evict_to_budget(self) -> None:
        """Chunks a pin kept over a shrunken budget go as soon as they are unpinned."""
        pinned = self.pinned()
        nbytes = sum(self.model.values())
        for kk in list(self.model):
            if nbytes <= self.budget:
                break
            if kk not in pinned:
                nbytes -= self.model.pop(kk)
        self.over_budget_ok = nbytes > self.budget

    @rule(k=KEYS)
    def discard(self, k: int) -> None:
        assert self.cache.discard([key(k)]) == (1 if k in self.model else 0)
        self.model.pop(k, None)

    @rule(budget=st.integers(20, 150))
    def set_budget(self, budget: int) -> None:
        self.cache.budget = budget
        self.budget = budget
        pinned = self.pinned()
        nbytes = sum(self.model.values())
        for kk in list(self.model):
            if nbytes <= budget:
                break
            if kk not in pinned:
                nbytes -= self.model.pop(kk)
        self.over_budget_ok = nbytes > budget

    @rule()
    def reset_peak(self) -> None:
        self.cache.reset_peak()
        self.peak = sum(self.model.values())

    @invariant()
    def agrees_with_model(self) -> None:
        assert {k for k in range(8) if key(k) in self.cache} == set(self.model)
        stats = self.cache.stats()
        assert stats.nbytes == sum(self.model.values())
        assert stats.chunks == len(self.model)
        assert stats.pinned == len(self.pinned() & set(self.model))
        assert stats.peak_nbytes == self.peak

    @invariant()
    def within_budget(self) -> None:
        if not self.over_budget_ok:
            assert self.cache.nbytes <= self.cache.budget


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
