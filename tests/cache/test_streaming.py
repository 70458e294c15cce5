"""Streaming volumes end to end, headless: blocking and streaming reads, wish lists, prefetch."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from napari_connecto.cache import (
    LayerStream,
    StreamingLevel,
    StreamingService,
    StreamingVolume,
)
from napari_connecto.cache import scheduler as scheduler_module
from napari_connecto.errors import ChunkError, RegionError
from napari_connecto.testing.backends import LatencyBackend, SyntheticBackend, synthetic_voxels
from napari_connecto.volume.volume import Volume

WAIT = 15.0  # returns as soon as idle; generous for loaded CI machines
SHAPE = (12, 128, 128)
CHUNK = (4, 32, 32)
BLOCK_BYTES = 4 * 32 * 32  # uint8


class GatedBackend(LatencyBackend):
    """A latency backend whose reads of chosen scales wait for a gate to open."""

    def __init__(self, inner, gated_scales=(0, 1, 2, 3, 4, 5, 6, 7), **kwargs) -> None:
        super().__init__(inner, **kwargs)
        self.gate = threading.Event()
        self.gated_scales = set(gated_scales)
        self.cond = threading.Condition()
        self.started: list[tuple[int, tuple, tuple]] = []
        self.active = 0
        self.max_active = 0

    def read(self, scale, start, stop):
        with self.cond:
            self.started.append((scale, start, stop))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.cond.notify_all()
        try:
            if scale in self.gated_scales and not self.gate.wait(WAIT):
                raise TimeoutError("gate never opened")
            return super().read(scale, start, stop)
        finally:
            with self.cond:
                self.active -= 1

    def wait_started(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.started) >= n, WAIT), self.started


def open_stream(
    service: StreamingService,
    *,
    shape=SHAPE,
    levels: int = 3,
    chunk=CHUNK,
    kind: str = "image",
    latency: float = 0.0,
    concurrency: int = 16,
    gated: tuple[int, ...] | None = None,
    gates: list[threading.Event] | None = None,
    streaming: bool = False,
):
    inner = SyntheticBackend(shape=shape, levels=levels, chunk=chunk, kind=kind)
    if gated is not None:
        backend = GatedBackend(inner, gated, latency=latency, concurrency=concurrency)
        gates.append(backend.gate)
    else:
        backend = LatencyBackend(inner, latency=latency, concurrency=concurrency)
    vol = StreamingVolume(Volume(backend), service)
    stream = LayerStream(vol)
    stream.streaming = streaming
    return backend, vol, stream


def truth(vol: StreamingVolume, level: int, start, stop) -> np.ndarray:
    """What a display region of one level must show (fill outside the stored voxels)."""
    g = vol.levels[level]
    kind = vol.volume.kind
    out = np.full([b - a for a, b in zip(start, stop)], vol.fill_value, dtype=vol.dtype)
    lo = [max(a - s, 0) for a, s in zip(start, g.shift)]
    hi = [min(b - s, n) for b, s, n in zip(stop, g.shift, g.storage_shape)]
    if all(h > lo_ for lo_, h in zip(lo, hi)):
        dst = tuple(slice(a + s - o, b + s - o) for a, b, s, o in zip(lo, hi, g.shift, start))
        out[dst] = synthetic_voxels(kind, vol.volume.backend.inner.factor(g.scale), lo, hi)
    return out


def read_blocks(backend: LatencyBackend, vol: StreamingVolume, level: int | None = None):
    """(level, block) of every backend read so far (reads are whole cache blocks)."""
    out = []
    for scale, start, _ in list(backend.reads):
        if level is None or scale == level:
            block = tuple(a // b for a, b in zip(start, vol.levels[scale].block))
            out.append((scale, block))
    return out


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.002)


# -- blocking reads -----------------------------------------------------------------------------

REGIONS = [
    (0, (0, 0, 0), (12, 100, 92)),  # all of a non-divisible level 0, padding included
    (0, (3, 17, 29), (9, 71, 60)),  # unaligned interior
    (0, (10, 90, 80), (12, 100, 92)),  # the far corner, across the stored edge
    (1, (0, 0, 0), (12, 50, 46)),
    (1, (5, 40, 30), (12, 50, 46)),
    (2, (0, 0, 0), (12, 25, 23)),
    (2, (11, 24, 22), (12, 25, 23)),  # the very last voxel
]


@pytest.mark.parametrize(("level", "start", "stop"), REGIONS)
def test_blocking_reads_equal_ground_truth(make_service, level, start, stop) -> None:
    service = make_service()
    backend, vol, stream = open_stream(service, shape=(12, 100, 90))
    assert [g.shape for g in vol.levels] == [(12, 100, 92), (12, 50, 46), (12, 25, 23)]
    out = stream.read(level, start, stop)
    np.testing.assert_array_equal(out, truth(vol, level, start, stop))
    # the data came through the cache: reading again touches no storage
    reads = len(backend.reads)
    np.testing.assert_array_equal(stream.read(level, start, stop), out)
    assert len(backend.reads) == reads


def test_blocking_reads_of_segmentation_keep_exact_ids(make_service) -> None:
    service = make_service()
    backend, vol, stream = open_stream(service, kind="segmentation", shape=(8, 64, 64))
    out = stream.read(1, (0, 0, 0), (8, 32, 32))
    assert out.dtype == np.uint64
    np.testing.assert_array_equal(out, truth(vol, 1, (0, 0, 0), (8, 32, 32)))
    assert (out >= 2**60).all()


def test_level_arrays_read_like_numpy(make_service) -> None:
    service = make_service()
    backend, vol, stream = open_stream(service, shape=(12, 100, 90))
    levels = stream.levels()
    assert all(isinstance(lv, StreamingLevel) for lv in levels)
    assert [lv.shape for lv in levels] == [g.shape for g in vol.levels]
    assert levels[0].dtype == np.uint8
    whole1 = truth(vol, 1, (0, 0, 0), vol.levels[1].shape)
    np.testing.assert_array_equal(np.asarray(levels[1][2:7, 10:40, 3:45]), whole1[2:7, 10:40, 3:45])
    np.testing.assert_array_equal(levels[1][4], whole1[4])
    np.testing.assert_array_equal(levels[1][4, 7], whole1[4, 7])
    assert levels[1][4, 7, 9] == whole1[4, 7, 9]
    np.testing.assert_array_equal(
        np.asarray(levels[1][::3, 5:30:4, -10:]), whole1[::3, 5:30:4, -10:]
    )


def test_level_array_refuses_to_load_a_huge_level(make_service) -> None:
    service = make_service()
    inner = SyntheticBackend(shape=(64, 4096, 4096), levels=1, chunk=(16, 128, 128))
    vol = StreamingVolume(Volume(LatencyBackend(inner), max_read_bytes=2**20), service)
    level = LayerStream(vol).levels()[0]
    with pytest.raises(RegionError, match="refusing"):
        np.asarray(level)


def test_blocking_read_raises_chunk_error(make_service) -> None:
    service = make_service()
    backend, vol, stream = open_stream(service)
    backend.fail = lambda scale, start, stop: scale == 0 and start == (4, 32, 32)
    with pytest.raises(ChunkError, match="injected"):
        stream.read(0, (0, 0, 0), (12, 64, 64))
    # other regions still read fine
    np.testing.assert_array_equal(
        stream.read(0, (0, 0, 0), (4, 64, 64)), truth(vol, 0, (0, 0, 0), (4, 64, 64))
    )


def test_shifted_levels_read_the_matching_storage_voxels(make_service) -> None:
    """Precomputed-style voxel offsets: level 1 starts 3 of its voxels further along y."""
    service = make_service()
    inner = SyntheticBackend(shape=(4, 64, 64), levels=2, chunk=(4, 16, 16))
    inner.scales = (
        dataclasses.replace(inner.scales[0], voxel_offset=(0, 10, 20)),
        dataclasses.replace(inner.scales[1], voxel_offset=(0, 8, 10)),
    )
    vol = StreamingVolume(Volume(LatencyBackend(inner)), service)
    assert vol.levels[1].shift == (0, 3, 0)
    stream = LayerStream(vol)
    out = stream.read(1, (0, 0, 0), vol.levels[1].shape)
    np.testing.assert_array_equal(out, truth(vol, 1, (0, 0, 0), vol.levels[1].shape))
    np.testing.assert_array_equal(
        out[:, 3:32], synthetic_voxels("image", (1, 2, 2), (0, 0, 0), (4, 29, 32))
    )


# -- streaming reads -----------------------------------------------------------------------------


def test_streaming_read_returns_at_once_then_fills_in(make_service, gates) -> None:
    service = make_service(workers=4)
    backend, vol, stream = open_stream(
        service, latency=0.01, gated=(0, 1, 2), gates=gates, streaming=True
    )
    start, stop = (0, 0, 0), (4, 64, 64)
    out = stream.read(0, start, stop)  # returns although every read is held at the gate
    assert threading.current_thread().name not in backend.read_threads
    assert out.shape == (4, 64, 64)
    assert (out == vol.fill_value).all()  # nothing cached yet
    assert not stream.sharp
    assert not stream.take_dirty()  # ... and nothing has arrived yet
    backend.gate.set()
    assert service.scheduler.wait_idle(WAIT)
    wait_until(stream.peek_dirty)
    assert stream.take_dirty()
    assert not stream.take_dirty()
    np.testing.assert_array_equal(stream.read(0, start, stop), truth(vol, 0, start, stop))
    assert threading.current_thread().name not in backend.read_threads
    assert stream.shown == (0, start, stop)
    assert stream.sharp


def test_streaming_level_array_does_not_block(make_service, gates) -> None:
    service = make_service(workers=2)
    backend, vol, stream = open_stream(service, gated=(0, 1, 2), gates=gates, streaming=True)
    level = stream.levels()[0]
    plane = level[5, 0:64, 0:64]  # with every read held at the gate, this must still return
    assert plane.shape == (64, 64)
    assert (plane == 0).all()
    # .blocking waits for real data even in streaming mode
    backend.gate.set()
    np.testing.assert_array_equal(
        level.blocking[5, 0:64, 0:64], truth(vol, 0, (5, 0, 0), (6, 64, 64))[0]
    )


def test_coarse_preview_is_fetched_before_the_fine_blocks(make_service) -> None:
    service = make_service(workers=1)
    backend, vol, stream = open_stream(service, levels=4, streaming=True)
    stream.read(0, (0, 0, 0), (4, 64, 96))
    assert service.scheduler.wait_idle(WAIT)
    order = read_blocks(backend, vol)
    # preview_levels=2: level 2 covers the region in one block, then the six level-0 blocks
    assert order[0] == (2, (0, 0, 0))
    assert sorted(order[1:]) == [(0, (0, y, x)) for y in range(2) for x in range(3)]
    # nearest the centre first: the middle column before the outer ones
    assert {b for _, b in order[1:3]} == {(0, 0, 1), (0, 1, 1)}


def test_preview_shows_while_fine_blocks_load(make_service, gates) -> None:
    service = make_service(workers=2)
    backend, vol, stream = open_stream(service, levels=3, gated=(0,), gates=gates, streaming=True)
    start, stop = (0, 0, 0), (4, 64, 64)
    stream.read(0, start, stop)
    wait_until(lambda: vol.lookup(2, (0, 0, 0)) is not None)
    wait_until(stream.peek_dirty)
    preview = stream.read(0, start, stop)
    coarse = truth(vol, 2, (0, 0, 0), (4, 16, 16))
    np.testing.assert_array_equal(preview, coarse.repeat(4, axis=1).repeat(4, axis=2))
    assert not np.array_equal(preview, truth(vol, 0, start, stop))
    assert not stream.sharp  # a stand-in is on screen
    backend.gate.set()
    assert service.scheduler.wait_idle(WAIT)
    np.testing.assert_array_equal(stream.read(0, start, stop), truth(vol, 0, start, stop))


def test_moving_drops_stale_queued_requests(make_service, gates) -> None:
    service = make_service(workers=1)
    backend, vol, stream = open_stream(service, gated=(0, 1, 2), gates=gates, streaming=True)
    view_a = ((0, 0, 0), (4, 64, 64))  # 4 level-0 blocks + 1 preview block
    view_b = ((8, 64, 64), (12, 128, 128))  # 4 other level-0 blocks + 1 other preview block
    stream.read(0, *view_a)
    backend.wait_started(1)  # the single worker holds A's first request
    stream.read(0, *view_b)
    backend.gate.set()
    assert service.scheduler.wait_idle(WAIT)
    got = read_blocks(backend, vol)
    assert len(got) == 1 + 5 < 5 + 5
    assert got[0] == (2, (0, 0, 0))  # A's in-flight preview completed (and is cached) ...
    a_fine = {(0, b) for b in vol.levels[0].blocks_for(*view_a)}
    assert not a_fine & set(got)  # ... but none of A's queued blocks was read
    assert service.scheduler.stats().dropped == 4
    np.testing.assert_array_equal(stream.read(0, *view_b), truth(vol, 0, *view_b))


def test_settle_prefetches_neighbouring_z_blocks_and_one_step_ahead(make_service) -> None:
    service = make_service(workers=2)
    backend, vol, stream = open_stream(service, streaming=True)
    stream.read(0, (4, 0, 0), (8, 32, 32))
    assert service.scheduler.wait_idle(WAIT)
    stream.read(0, (4, 0, 32), (8, 32, 64))  # moved one block along +x
    assert service.scheduler.wait_idle(WAIT)
    backend.reset()
    stream.settle()
    assert service.scheduler.wait_idle(WAIT)
    assert sorted(read_blocks(backend, vol)) == [
        (0, (0, 0, 1)),  # the z block layer before
        (0, (1, 0, 2)),  # one move further along the motion
        (0, (2, 0, 1)),  # the z block layer after
    ]
    # prefetched chunks are really there: moving on shows sharp data at once
    ahead = stream.read(0, (4, 0, 64), (8, 32, 96))
    np.testing.assert_array_equal(ahead, truth(vol, 0, (4, 0, 64), (8, 32, 96)))


def test_settle_on_a_plane_prefetches_both_neighbouring_block_layers(make_service) -> None:
    service = make_service(workers=2)
    backend, vol, stream = open_stream(service, streaming=True)
    stream.read(0, (5, 0, 0), (6, 32, 32))  # napari reads one plane
    assert service.scheduler.wait_idle(WAIT)
    backend.reset()
    stream.settle()
    assert service.scheduler.wait_idle(WAIT)
    assert sorted(read_blocks(backend, vol)) == [(0, (0, 0, 0)), (0, (2, 0, 0))]


def test_settle_without_prefetch_setting_fetches_nothing(make_service) -> None:
    service = make_service(workers=2, prefetch=False)
    backend, vol, stream = open_stream(service, streaming=True)
    stream.read(0, (4, 0, 0), (8, 32, 32))
    assert service.scheduler.wait_idle(WAIT)
    backend.reset()
    stream.settle()
    assert service.scheduler.wait_idle(WAIT)
    assert backend.reads == []


def test_hinted_regions_are_fetched_in_order_and_shown_sharp_at_once(make_service, gates) -> None:
    service = make_service(workers=1)
    backend, vol, stream = open_stream(service, streaming=True, gated=(0,), gates=gates)
    stream.read(0, (0, 0, 0), (1, 32, 32))
    backend.gate.set()
    assert service.scheduler.wait_idle(WAIT)
    backend.reset()
    backend.gate.clear()
    # the next two synapses to review: the later one is asked for first but fetched last
    regions = [((9, 96, 96), (10, 128, 128)), ((5, 64, 0), (6, 96, 32))]
    assert stream.hint(regions) == 2
    backend.gate.set()
    assert service.scheduler.wait_idle(WAIT)
    assert read_blocks(backend, vol) == [(0, (2, 3, 3)), (0, (1, 2, 0))]
    backend.reset()
    jump = stream.read(0, (5, 64, 0), (6, 96, 32))  # the jump: sharp without a fetch
    np.testing.assert_array_equal(jump, truth(vol, 0, (5, 64, 0), (6, 96, 32)))
    assert stream.sharp
    assert stream.hint(regions) == 0  # all cached: nothing more to fetch


def test_hints_wait_behind_visible_blocks(make_service, gates) -> None:
    service = make_service(workers=1)
    backend, vol, stream = open_stream(service, streaming=True, gated=(0, 1, 2), gates=gates)
    stream.hint([((9, 96, 96), (10, 128, 128)), ((9, 0, 96), (10, 32, 128))], level=0)
    backend.wait_started(1)  # the first hinted block is in flight (one worker, gated)
    stream.read(0, (0, 0, 0), (1, 64, 32))  # then the user looks somewhere
    backend.gate.set()
    assert service.scheduler.wait_idle(WAIT)
    order = read_blocks(backend, vol)
    assert order[0] == (0, (2, 3, 3))
    visible = [order.index((0, (0, 0, 0))), order.index((0, (0, 1, 0)))]
    assert order.index((0, (2, 0, 3))) > max(visible)


def test_visible_blocks_load_before_thumbnail_and_both_are_wanted(make_service, gates) -> None:
    service = make_service(workers=1, preview_levels=0)
    backend, vol, stream = open_stream(service, gated=(0, 1, 2), gates=gates, streaming=True)
    stream.current_level = lambda: 0
    stream.read(0, (0, 0, 0), (4, 64, 64))
    backend.wait_started(1)
    stream.read(2, (0, 0, 0), vol.levels[2].shape)  # the minimap reads the coarsest level
    sched = service.scheduler
    assert stream.shown == (0, (0, 0, 0), (4, 64, 64))  # a thumbnail is not the view
    assert all(
        sched.wants(stream, vol.key(0, b)) for b in vol.levels[0].blocks_for((0, 0, 0), (4, 64, 64))
    )
    assert sched.wants(stream, vol.key(2, (2, 0, 0)))
    backend.gate.set()
    assert sched.wait_idle(WAIT)
    order = read_blocks(backend, vol)
    assert [lv for lv, _ in order] == [0, 0, 0, 0, 2, 2, 2]


def test_probe_reads_do_not_change_the_wish_list(make_service, gates) -> None:
    service = make_service(workers=1)
    backend, vol, stream = open_stream(service, gated=(0, 1, 2), gates=gates, streaming=True)
    view = ((0, 0, 0), (4, 64, 64))
    stream.read(0, *view)
    backend.wait_started(1)
    sched = service.scheduler
    wanted = [vol.key(0, b) for b in vol.levels[0].blocks_for(*view)]
    generation = sched.generation(stream)
    level = stream.levels()[0]
    # the mouse hovers far away: napari looks up single values
    assert level[10, 120, 120] == vol.fill_value
    assert level[10, 120].shape == (128,)
    assert stream.read(0, (10, 120, 120), (11, 121, 121), probe=True).shape == (1, 1, 1)
    assert sched.generation(stream) == generation
    assert stream.shown == (0, *view)
    assert all(sched.wants(stream, k) for k in wanted)
    assert not sched.wants(stream, vol.key(0, (2, 3, 3)))
    backend.gate.set()
    assert sched.wait_idle(WAIT)
    assert (0, (2, 3, 3)) not in read_blocks(backend, vol)
    np.testing.assert_array_equal(stream.read(0, *view), truth(vol, 0, *view))


def test_failed_block_is_hatched_and_listed(make_service, monkeypatch) -> None:
    monkeypatch.setattr(scheduler_module, "RETRY_DELAYS", ())
    service = make_service(workers=2, preview_levels=0)
    backend, vol, stream = open_stream(service, streaming=True)
    backend.fail = lambda scale, start, stop: scale == 0 and start == (0, 32, 32)
    view = ((0, 0, 0), (4, 64, 64))
    stream.read(0, *view)
    bad = vol.key(0, (0, 1, 1))
    wait_until(lambda: service.scheduler.failure(bad) is not None)
    assert service.scheduler.wait_idle(WAIT)
    out = stream.read(0, *view)
    good = truth(vol, 0, *view)
    np.testing.assert_array_equal(out[:, :32, :], good[:, :32, :])
    np.testing.assert_array_equal(out[:, 32:, :32], good[:, 32:, :32])
    assert set(np.unique(out[:, 32:, 32:])) == {0, 255}  # stripes in the contrast limits
    # hovering over the failed block reports the stripes that are drawn, not stale data
    level = stream.levels()[0]
    assert level[1, 40, 40] in (0, 255)
    assert level[1, 40, 40] == out[1, 40, 40]
    assert level[1, 10, 10] == good[1, 10, 10]
    (failed,) = stream.failed_blocks()
    assert (failed.level, failed.start, failed.stop) == (0, (0, 32, 32), (4, 64, 64))
    assert "injected" in failed.error


def test_failed_segmentation_block_is_not_painted_with_fake_ids(make_service, monkeypatch) -> None:
    monkeypatch.setattr(scheduler_module, "RETRY_DELAYS", ())
    service = make_service(workers=2, preview_levels=0)
    backend, vol, stream = open_stream(service, kind="segmentation", streaming=True)
    backend.fail = lambda scale, start, stop: scale == 0 and start == (0, 0, 0)
    stream.read(0, (0, 0, 0), (4, 64, 64))
    wait_until(lambda: service.scheduler.failure(vol.key(0, (0, 0, 0))) is not None)
    out = stream.read(0, (0, 0, 0), (4, 64, 64))
    assert (out[:, :32, :32] == vol.fill_value).all()
    assert len(stream.failed_blocks()) == 1


def test_source_concurrency_limit_is_respected(make_service, gates) -> None:
    service = make_service(workers=8)
    backend, vol, stream = open_stream(
        service, gated=(0, 1, 2), gates=gates, concurrency=2, streaming=True
    )
    stream.read(0, (0, 0, 0), (12, 128, 128))
    backend.wait_started(2)
    time.sleep(0.05)
    with backend.cond:
        active = backend.active
    backend.gate.set()
    assert service.scheduler.wait_idle(WAIT)
    assert active == 2
    assert backend.max_active == 2


def test_cache_stays_within_budget_over_a_long_random_pan(make_service) -> None:
    budget = 16 * BLOCK_BYTES  # a quarter of level 0
    service = make_service(budget=budget, workers=4)
    backend, vol, stream = open_stream(service, latency=0.001, streaming=True)
    rng = np.random.default_rng(7)
    for step in range(40):
        level = int(rng.integers(0, 2))
        shape = vol.levels[level].shape
        size = (4, 32, 32)
        start = tuple(int(rng.integers(0, n - s + 1)) for n, s in zip(shape, size))
        stop = tuple(a + s for a, s in zip(start, size))
        stream.read(level, start, stop)
        if step % 3 == 0:
            stream.settle()
        assert service.scheduler.wait_idle(WAIT)
        # everything in view stays cached (pinned), however much else went through
        np.testing.assert_array_equal(
            stream.read(level, start, stop), truth(vol, level, start, stop)
        )
        assert service.cache.nbytes <= budget
    stats = service.cache.stats()
    assert stats.peak_nbytes <= budget
    assert stats.evictions > 0  # the budget really was under pressure
    assert service.scheduler.stats().fetched_bytes > 2 * budget


def test_visible_blocks_are_pinned_against_other_traffic(make_service) -> None:
    budget = 8 * BLOCK_BYTES
    service = make_service(budget=budget, workers=2)
    backend, vol, stream = open_stream(service, streaming=True)
    view = ((4, 32, 32), (8, 96, 64))  # 2 blocks: the quarter of the budget a layer may pin
    stream.read(0, *view)
    assert service.scheduler.wait_idle(WAIT)
    # another layer floods the cache
    other_backend, other, other_stream = open_stream(service)
    other_stream.read(0, (0, 0, 0), (12, 128, 128))
    backend.reset()
    np.testing.assert_array_equal(stream.read(0, *view), truth(vol, 0, *view))
    assert backend.reads == []


def test_invalidate_drops_this_volumes_chunks(make_service) -> None:
    service = make_service()
    backend, vol, stream = open_stream(service)
    _, other, other_stream = open_stream(service)
    region = ((0, 0, 0), (4, 64, 64))
    stream.read(0, *region)
    stream.read(1, *region)
    other_stream.read(0, *region)

    class PlusOne:
        """The data changed on disk (someone wrote to it)."""

        def __init__(self, inner) -> None:
            self.inner = inner

        def read(self, scale, start, stop):
            return self.inner.read(scale, start, stop) + np.uint8(1)

    stale = truth(vol, 0, *region)
    backend.inner = PlusOne(backend.inner)
    np.testing.assert_array_equal(stream.read(0, *region), stale)  # cached: not re-read
    assert vol.invalidate(level=0) == 4
    assert vol.lookup(1, (0, 0, 0)) is not None
    np.testing.assert_array_equal(stream.read(0, *region), stale + 1)
    assert vol.invalidate() == 4 + 4  # level 0 again, and level 1
    assert vol.lookup(1, (0, 0, 0)) is None
    assert other.lookup(0, (0, 0, 0)) is not None  # another volume's chunks stay


def test_close_releases_wishes_and_pins(make_service, gates) -> None:
    service = make_service(workers=1)
    backend, vol, stream = open_stream(service, gated=(0, 1, 2), gates=gates, streaming=True)
    stream.read(0, (0, 0, 0), (4, 64, 64))
    backend.wait_started(1)
    assert service.cache.is_pinned(vol.key(0, (0, 0, 0)))
    stream.close()
    assert not service.cache.is_pinned(vol.key(0, (0, 0, 0)))
    assert service.scheduler.stats().queued == 0
    backend.gate.set()
    assert service.scheduler.wait_idle(WAIT)
    assert len(backend.reads) == 1


def test_a_redraw_after_invalidation_fetches_the_view_again(make_service) -> None:
    """After a write the volume is invalidated: redrawing the same view must re-read it."""
    service = make_service()
    backend, vol, stream = open_stream(service, streaming=True)
    view = ((4, 0, 0), (5, 64, 64))
    stream.read(0, *view)
    assert service.scheduler.wait_idle(WAIT)
    assert np.array_equal(stream.read(0, *view), truth(vol, 0, *view))
    assert vol.invalidate() > 0
    backend.reset()
    stream.read(0, *view)  # same view: its chunks are gone and must be asked for again
    assert service.scheduler.wait_idle(WAIT)
    assert backend.reads, "the invalidated view was never fetched again"
    assert np.array_equal(stream.read(0, *view), truth(vol, 0, *view))
    assert stream.sharp


def test_a_chunk_arriving_while_the_view_is_composed_is_drawn(make_service) -> None:
    """A block cached between composing and wishing must still mark the layer for redraw."""
    service = make_service()
    backend, vol, stream = open_stream(service, streaming=True)
    view = ((4, 0, 0), (5, 32, 32))
    original = stream._update_wishes

    def wishes_after_an_arrival(*args, **kwargs):
        block = vol.levels[0].blocks_for(*view)[0]
        service.cache.put(vol.key(0, block), vol.read_block(0, block))
        return original(*args, **kwargs)

    stream._update_wishes = wishes_after_an_arrival
    stream.take_dirty()
    stream.read(0, *view)
    assert stream.take_dirty(), "the arrived block would never be drawn"


def test_refused_chunks_fail_with_backoff_instead_of_looping(make_service) -> None:
    service = make_service(budget=2 * BLOCK_BYTES, workers=2)
    hog_backend, hog, hog_stream = open_stream(service, streaming=True)
    service.cache.pin("someone else", [hog.key(0, (1, 0, 0)), hog.key(0, (1, 0, 1))])
    hog_stream.read(0, (4, 0, 0), (5, 32, 64))
    assert service.scheduler.wait_idle(WAIT)
    backend, vol, stream = open_stream(service, streaming=True)
    stream.read(0, (4, 0, 0), (5, 32, 32))
    time.sleep(0.2)
    assert len(backend.reads) <= 2, "a chunk the cache refuses is fetched again and again"
    failure = service.scheduler.failure(vol.key(0, (1, 0, 0)))
    assert failure is not None and "budget" in failure.error
