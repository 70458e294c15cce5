"""The fetch scheduler: priorities, per-source limits, stale requests, failures, workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from napari_connecto.cache import ChunkCache, ChunkKey, FetchJob, FetchScheduler, Priority, Tier
from napari_connecto.cache import scheduler as scheduler_module
from napari_connecto.errors import ChunkError

WAIT = 5.0
"""Seconds any test waits for something that should happen at once (never reached)."""
QUIET = 0.05
"""Seconds to give a wrongly started extra fetch the chance to show up."""


def key(i: int, level: int = 0) -> ChunkKey:
    return ChunkKey(1, level, (0, 0, i))


class Recorder:
    """Fetch functions that record their order and concurrency, optionally held at a gate."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.order: list[ChunkKey] = []
        self.active: dict[object, int] = {}
        self.max_active: dict[object, int] = {}
        self.gates: dict[ChunkKey, threading.Event] = {}

    def fetch(
        self,
        k: ChunkKey,
        *,
        source: object = "s",
        gate: threading.Event | None = None,
        fail: Callable[[], bool] | None = None,
        nbytes: int = 8,
    ) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with self.cond:
                self.order.append(k)
                self.active[source] = self.active.get(source, 0) + 1
                self.max_active[source] = max(self.max_active.get(source, 0), self.active[source])
                self.cond.notify_all()
            try:
                if gate is not None and not gate.wait(WAIT):
                    raise TimeoutError("gate never opened")
                if fail is not None and fail():
                    raise ChunkError("test://", k.level, str(k.block), "injected")
                return np.full(nbytes, k.block[2] % 256, dtype=np.uint8)
            finally:
                with self.cond:
                    self.active[source] -= 1

        return run

    def total_active(self) -> int:
        with self.cond:
            return sum(self.active.values())

    def wait_started(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.order) >= n, WAIT), (
                f"only {len(self.order)} of {n} fetches started"
            )


def job(
    rec: Recorder,
    k: ChunkKey,
    tier: Tier = Tier.VISIBLE,
    distance: float = 0.0,
    *,
    source: object = "s",
    limit: int = 8,
    gate: threading.Event | None = None,
    fail: Callable[[], bool] | None = None,
) -> FetchJob:
    return FetchJob(
        k,
        Priority(tier, -k.level, distance),
        rec.fetch(k, source=source, gate=gate, fail=fail),
        source,
        limit,
    )


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a worker parked


@pytest.fixture
def make_scheduler() -> Iterator[Callable[..., FetchScheduler]]:
    made: list[FetchScheduler] = []

    def make(workers: int = 1, budget: int = 1 << 20) -> FetchScheduler:
        sched = FetchScheduler(ChunkCache(budget), workers)
        made.append(sched)
        return sched

    yield make
    for sched in made:
        sched.close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> Callable[[tuple[float, ...]], None]:
    def use(delays: tuple[float, ...]) -> None:
        monkeypatch.setattr(scheduler_module, "RETRY_DELAYS", delays)

    return use


class Listener:
    """Records the chunks announced to one client."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.keys: list[ChunkKey] = []

    def __call__(self, k: ChunkKey) -> None:
        with self.cond:
            self.keys.append(k)
            self.cond.notify_all()

    def wait_for(self, k: ChunkKey, count: int = 1) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.keys.count(k) >= count, WAIT), self.keys


def hold_worker(sched: FetchScheduler, rec: Recorder, gate: threading.Event) -> ChunkKey:
    """Occupy the (single) worker with a gated fetch for another client; return its key."""
    blocker = key(999, level=5)
    sched.submit("blocker", [job(rec, blocker, Tier.BLOCKING, gate=gate)])
    rec.wait_started(1)
    return blocker


# -- priorities --------------------------------------------------------------------------


def test_priority_order_visible_before_prefetch_coarse_before_fine_nearer_first(
    make_scheduler, gate
) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    blocker = hold_worker(sched, rec, gate)
    wanted = [
        (key(1, level=0), Tier.VISIBLE, 5.0),
        (key(2, level=0), Tier.PREFETCH, 0.0),
        (key(3, level=2), Tier.VISIBLE, 9.0),
        (key(4, level=0), Tier.VISIBLE, 1.0),
        (key(5, level=2), Tier.PREFETCH, 0.0),
        (key(6, level=1), Tier.VISIBLE, 3.0),
        (key(7, level=1), Tier.VISIBLE, 2.0),
    ]
    sched.submit("view", [job(rec, k, tier, d) for k, tier, d in wanted])
    gate.set()
    assert sched.wait_idle(WAIT)
    assert rec.order == [
        blocker,
        key(3, level=2),  # visible, coarsest
        key(7, level=1),  # visible, level 1, nearer
        key(6, level=1),
        key(4, level=0),  # visible, finest, nearer
        key(1, level=0),
        key(5, level=2),  # prefetch, coarse first
        key(2, level=0),
    ]


def test_fetch_now_jumps_the_queue(make_scheduler, gate) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    blocker = hold_worker(sched, rec, gate)
    sched.submit("view", [job(rec, key(i), Tier.VISIBLE, float(i)) for i in range(4)])
    # a queued prefetch-priority chunk asked for by a script is promoted ...
    futures = sched.fetch_now([job(rec, key(3), Tier.PREFETCH, 3.0)])
    # ... and so is one nobody had asked for yet
    futures.update(sched.fetch_now([job(rec, key(9), Tier.PREFETCH, 99.0)]))
    gate.set()
    for fut in futures.values():
        assert fut.result(WAIT).shape == (8,)
    assert sched.wait_idle(WAIT)
    assert rec.order[0] == blocker
    assert set(rec.order[1:3]) == {key(3), key(9)}
    assert rec.order[3:] == [key(0), key(1), key(2)]
    assert len(rec.order) == 6  # key(3) was fetched once, not twice


def test_fetch_now_of_cached_chunk_reads_nothing(make_scheduler) -> None:
    sched = make_scheduler()
    rec = Recorder()
    sched.cache.put(key(0), np.ones(4, np.uint8))
    fut = sched.fetch_now([job(rec, key(0))])[key(0)]
    assert fut.done()
    np.testing.assert_array_equal(fut.result(), 1)
    assert rec.order == []


# -- per-source concurrency ----------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3])
def test_per_source_concurrency_limit(make_scheduler, gate, limit: int) -> None:
    sched = make_scheduler(workers=6)
    rec = Recorder()
    sched.submit("view", [job(rec, key(i), limit=limit, gate=gate) for i in range(8)])
    rec.wait_started(limit)
    time.sleep(QUIET)
    assert rec.total_active() == limit
    assert sched.stats().loading == limit
    gate.set()
    assert sched.wait_idle(WAIT)
    assert rec.max_active["s"] == limit
    assert sorted(rec.order, key=lambda k: k.block) == [key(i) for i in range(8)]


def test_limits_are_per_source(make_scheduler, gate) -> None:
    sched = make_scheduler(workers=8)
    rec = Recorder()
    jobs = [job(rec, key(i), source="hdf5", limit=1, gate=gate) for i in range(4)]
    jobs += [job(rec, key(10 + i), source="http", limit=2, gate=gate) for i in range(4)]
    sched.submit("view", jobs)
    rec.wait_started(3)
    time.sleep(QUIET)
    assert rec.active == {"hdf5": 1, "http": 2}
    gate.set()
    assert sched.wait_idle(WAIT)
    assert rec.max_active == {"hdf5": 1, "http": 2}
    assert len(rec.order) == 8


# -- stale requests ---------------------------------------------------------------------------


def test_resubmit_drops_stale_queued_requests(make_scheduler, gate) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    blocker = hold_worker(sched, rec, gate)
    assert sched.submit("view", [job(rec, key(i)) for i in range(5)]) == 1
    assert sched.stats().queued == 5
    # the user pans: 2 is still in view, 0, 1, 3, 4 are not
    assert sched.submit("view", [job(rec, key(2)), job(rec, key(10)), job(rec, key(11))]) == 2
    assert sched.generation("view") == 2
    assert sched.wants("view", key(10))
    assert not sched.wants("view", key(0))
    stats = sched.stats()
    assert stats.queued == 3
    assert stats.dropped == 4
    gate.set()
    assert sched.wait_idle(WAIT)
    assert set(rec.order) == {blocker, key(2), key(10), key(11)}
    assert len(rec.order) == 4
    assert key(0) not in sched.cache


def test_request_wanted_by_another_client_is_not_dropped(make_scheduler, gate) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    hold_worker(sched, rec, gate)
    sched.submit("left", [job(rec, key(0)), job(rec, key(1))])
    sched.submit("right", [job(rec, key(1))])
    sched.submit("left", [])
    assert sched.stats().dropped == 1
    gate.set()
    assert sched.wait_idle(WAIT)
    assert key(1) in rec.order
    assert key(0) not in rec.order


def test_in_flight_stale_result_is_cached_but_not_announced(make_scheduler, gate) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    moved, stayed = Listener(), Listener()
    sched.listen("moved", moved)
    sched.listen("stayed", stayed)
    sched.submit("moved", [job(rec, key(0), gate=gate)])
    rec.wait_started(1)
    sched.submit("stayed", [job(rec, key(0))])  # joins the fetch in flight
    sched.submit("moved", [])  # the user left before it arrived
    assert sched.stats().dropped == 0  # it was already loading: nothing to drop
    gate.set()
    stayed.wait_for(key(0))
    # the single worker announces key(0) before it fetches the sentinel
    sched.submit("moved", [job(rec, key(1))])
    moved.wait_for(key(1))
    assert key(0) in sched.cache
    assert moved.keys == [key(1)]
    assert stayed.keys == [key(0)]


def test_forget_drops_everything_of_a_client(make_scheduler, gate) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    hold_worker(sched, rec, gate)
    listener = Listener()
    sched.listen("layer", listener)
    sched.submit("layer", [job(rec, key(i)) for i in range(3)])
    sched.forget("layer")
    assert sched.stats().queued == 0
    gate.set()
    assert sched.wait_idle(WAIT)
    assert len(rec.order) == 1
    assert listener.keys == []


# -- failures ------------------------------------------------------------------------------


class Flaky:
    """Fails the first ``failures`` calls, recording when each attempt started."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.times: list[float] = []

    def __call__(self) -> bool:
        self.times.append(time.monotonic())
        return len(self.times) <= self.failures


def test_failures_retried_with_backoff_then_succeed(make_scheduler, fast_retries) -> None:
    fast_retries((0.05, 0.1, 0.2))
    sched = make_scheduler(workers=2)
    rec = Recorder()
    flaky = Flaky(failures=2)
    seen: list[tuple[ChunkKey, object]] = []
    listener = Listener()

    def on_arrival(k: ChunkKey) -> None:
        seen.append((k, sched.failure(k)))
        listener(k)

    sched.listen("view", on_arrival)
    sched.submit("view", [job(rec, key(0), fail=flaky)])
    listener.wait_for(key(0), count=3)  # failed, failed, arrived
    assert len(flaky.times) == 3
    assert flaky.times[1] - flaky.times[0] >= 0.05
    assert flaky.times[2] - flaky.times[1] >= 0.1
    first_failure = seen[0][1]
    assert first_failure is not None
    assert first_failure.attempts == 1
    assert "injected" in first_failure.error
    assert first_failure.retry_at is not None
    assert seen[1][1].attempts == 2
    assert seen[2][1] is None  # the listener sees the success, not a stale failure
    assert key(0) in sched.cache
    assert sched.failed_keys() == []
    stats = sched.stats()
    assert (stats.fetched, stats.failed) == (1, 0)


def test_failures_stop_after_the_last_retry(make_scheduler, fast_retries) -> None:
    fast_retries((0.01, 0.01))
    sched = make_scheduler(workers=2)
    rec = Recorder()
    flaky = Flaky(failures=100)
    listener = Listener()
    sched.listen("view", listener)
    sched.submit("view", [job(rec, key(0), fail=flaky)])
    listener.wait_for(key(0), count=3)
    failure = sched.failure(key(0))
    assert failure.attempts == 3
    assert failure.retry_at is None
    time.sleep(QUIET)
    assert len(flaky.times) == 3  # does not hammer a broken source
    assert sched.idle()
    assert sched.failed_keys() == [key(0)]
    assert sched.stats().failed == 1


def test_retry_failed_fetches_wanted_failures_again(make_scheduler, fast_retries) -> None:
    fast_retries(())  # no automatic retries
    sched = make_scheduler(workers=1)
    rec = Recorder()
    broken = {"on": True}
    listener = Listener()
    sched.listen("view", listener)
    sched.submit("view", [job(rec, key(i), fail=lambda: broken["on"]) for i in range(2)])
    listener.wait_for(key(0))
    listener.wait_for(key(1))
    assert sorted(sched.failed_keys(), key=lambda k: k.block) == [key(0), key(1)]
    # resubmitting the same wish list does not hammer the source ...
    sched.submit("view", [job(rec, key(i), fail=lambda: broken["on"]) for i in range(2)])
    # ... and key(1) is no longer in view
    sched.submit("view", [job(rec, key(0), fail=lambda: broken["on"])])
    assert sched.wait_idle(WAIT)
    assert len(rec.order) == 2
    broken["on"] = False
    assert sched.retry_failed() == 1
    listener.wait_for(key(0), count=2)
    assert sched.wait_idle(WAIT)
    assert key(0) in sched.cache
    assert key(1) not in sched.cache
    assert rec.order.count(key(1)) == 1


def test_fetch_now_propagates_chunk_error_and_retries_at_once(make_scheduler) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    fut = sched.fetch_now([job(rec, key(0), fail=lambda: True)])[key(0)]
    with pytest.raises(ChunkError, match="injected"):
        fut.result(WAIT)
    assert sched.failure(key(0)) is not None
    # a script asking again is not made to wait for the backoff timer
    fut = sched.fetch_now([job(rec, key(0))])[key(0)]
    assert fut.result(WAIT).shape == (8,)
    assert sched.failure(key(0)) is None


def test_wait_idle_waits_for_a_pending_retry(make_scheduler, fast_retries) -> None:
    """``wait_idle`` promises to block until :meth:`idle`, which counts pending retries."""
    fast_retries((0.05,))
    sched = make_scheduler(workers=1)
    rec = Recorder()
    sched.submit("view", [job(rec, key(0), fail=Flaky(failures=1))])
    assert sched.wait_idle(WAIT)
    assert sched.idle()
    assert key(0) in sched.cache


def test_idle_once_a_failed_chunk_is_no_longer_wanted(make_scheduler, fast_retries) -> None:
    """A failed chunk the user panned away from must not keep the scheduler busy forever."""
    fast_retries((0.02, 0.02, 0.02))
    sched = make_scheduler(workers=1)
    rec = Recorder()
    listener = Listener()
    sched.listen("view", listener)
    sched.submit("view", [job(rec, key(0), fail=lambda: True)])
    listener.wait_for(key(0))
    sched.submit("view", [])  # panned away
    deadline = time.monotonic() + 0.3
    while not sched.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sched.idle()


# -- counters and workers ------------------------------------------------------------------


def test_stats_counts(make_scheduler, gate) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    sched.submit("view", [job(rec, key(i), distance=float(i), gate=gate) for i in range(3)])
    rec.wait_started(1)
    stats = sched.stats()
    assert (stats.queued, stats.loading, stats.fetched, stats.workers) == (2, 1, 0, 1)
    assert not sched.idle()
    assert not sched.wait_idle(timeout=0.01)
    sched.submit("view", [job(rec, key(0)), job(rec, key(1))])
    assert sched.stats().dropped == 1
    gate.set()
    assert sched.wait_idle(WAIT)
    stats = sched.stats()
    assert (stats.queued, stats.loading, stats.failed) == (0, 0, 0)
    assert stats.fetched == 2
    assert stats.fetched_bytes == 16
    sched.reset_counters()
    stats = sched.stats()
    assert (stats.fetched, stats.fetched_bytes, stats.dropped) == (0, 0, 0)


def test_set_workers_grows_and_shrinks(make_scheduler) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    first = threading.Event()
    sched.submit("view", [job(rec, key(i), gate=first) for i in range(6)])
    rec.wait_started(1)
    time.sleep(QUIET)
    assert rec.total_active() == 1
    sched.set_workers(4)
    rec.wait_started(4)
    time.sleep(QUIET)
    assert rec.total_active() == 4
    assert sched.workers == 4
    assert sched.stats().workers == 4
    sched.set_workers(2)
    first.set()
    assert sched.wait_idle(WAIT)
    second = threading.Event()
    try:
        sched.submit("view", [job(rec, key(10 + i), gate=second) for i in range(6)])
        rec.wait_started(6 + 2)
        time.sleep(QUIET)
        assert rec.total_active() == 2
    finally:
        second.set()
    assert sched.wait_idle(WAIT)
    assert len(rec.order) == 12
    with pytest.raises(ValueError, match="at least one worker"):
        sched.set_workers(0)


def test_close_cancels_waiting_scripts(make_scheduler, gate) -> None:
    sched = make_scheduler(workers=1)
    rec = Recorder()
    hold_worker(sched, rec, gate)
    fut = sched.fetch_now([job(rec, key(0))])[key(0)]
    sched.close()
    assert fut.cancelled()
    gate.set()
    assert sched.stats().queued == 0
