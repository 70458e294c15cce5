"""Streaming in a real viewer: no I/O on the main thread, coarse before fine, failures, 3D.

The backends are procedural (:mod:`napari_connecto.testing.backends`) with latency the
test controls, so the ground truth of every region is known.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_connecto.cache.service import default_service
from napari_connecto.layers import volume_layer_data
from napari_connecto.testing.backends import LatencyBackend, SyntheticBackend, synthetic_voxels
from napari_connecto.viewer.streaming import (
    FAILED_LAYER_NAME,
    controller_for,
    stream_of,
    wait_until_loaded,
)
from napari_connecto.volume.volume import Volume

pytestmark = pytest.mark.gui

SHAPE = (8, 2048, 2048)
LEVELS = 4
CHUNK = (4, 128, 128)


class GatedBackend(LatencyBackend):
    """Reads of the finest level wait until ``open_fine`` is set."""

    def __init__(self, inner, latency=0.0):
        super().__init__(inner, latency)
        self.open_fine = threading.Event()

    def read(self, scale, start, stop):
        if scale == 0:
            assert self.open_fine.wait(20), "fine level never released"
        return super().read(scale, start, stop)


@pytest.fixture
def thread_errors(monkeypatch):
    """Collect exceptions raised in any thread (a worker touching Qt would raise)."""
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


@pytest.fixture
def service_settings():
    """Restore the process-wide streaming settings after the test."""
    service = default_service()
    before = service.settings
    yield service
    service.configure(
        budget_bytes=before.budget_bytes,
        workers=before.workers,
        prefetch=before.prefetch,
        preview_levels=before.preview_levels,
    )


def _backend(kind="image", latency=0.0, cls=LatencyBackend):
    return cls(SyntheticBackend(SHAPE, LEVELS, CHUNK, kind=kind), latency=latency)


def _add(viewer, backend):
    controller = controller_for(viewer)
    data, meta, kind = volume_layer_data(Volume(backend), streaming=True)
    meta.pop("units", None)
    layer = getattr(viewer, f"add_{kind}")(data, **meta)
    return controller, layer


def _look_at(viewer, z, y, x, zoom):
    viewer.dims.set_point(0, z * 40.0)
    viewer.scene.camera.center = (y * 4.0, x * 4.0)
    viewer.scene.camera.zoom = zoom
    from qtpy.QtWidgets import QApplication

    for _ in range(3):  # let the canvas draw: napari picks the level and slices on draw
        QApplication.processEvents()


def _truth_pyramid(kind="image"):
    """The whole pyramid in memory, chunked like the stream so napari cuts the same tiles."""
    import dask.array as da

    return [
        da.from_array(
            synthetic_voxels(
                kind,
                (1, 2**k, 2**k),
                (0, 0, 0),
                (SHAPE[0], SHAPE[1] >> k, SHAPE[2] >> k),
            ),
            chunks=CHUNK,
        )
        for k in range(LEVELS)
    ]


def _process_until(condition, timeout=20.0):
    """Run Qt events until ``condition()`` holds or ``timeout`` seconds pass."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        QApplication.processEvents()


def _canvas(viewer):
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)


def test_slicing_in_the_viewer_never_reads_storage(make_napari_viewer, thread_errors):
    backend = _backend(latency=0.05)
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    main = threading.current_thread().name
    for i in range(6):  # pans and z steps across chunk boundaries
        _look_at(viewer, 1 + i, 600 + 300 * i, 700 + 200 * i, zoom=0.25)
    assert backend.reads == [] or main not in backend.read_threads
    assert wait_until_loaded(viewer, 30)
    assert backend.reads, "nothing was fetched in the background"
    assert main not in backend.read_threads
    assert not thread_errors
    controller.close()


def test_view_equals_the_ground_truth_once_settled(make_napari_viewer, thread_errors):
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, _backend(latency=0.01))
    _look_at(viewer, 5, 1100, 900, zoom=0.2)
    assert wait_until_loaded(viewer, 30)
    assert stream_of(layer).sharp
    streamed = _canvas(viewer)
    assert streamed.std() > 5, "the streamed view is blank"
    # napari's own multiscale path over the same data in memory, same camera.
    layer.visible = False
    truth = viewer.add_image(
        _truth_pyramid(),
        multiscale=True,
        scale=layer.scale,
        translate=layer.translate,
        contrast_limits=layer.contrast_limits,
    )
    viewer.dims.set_point(0, 5 * 40.0)  # adding a layer must not move the view
    assert truth.data_level == layer.data_level
    expected = _canvas(viewer)
    diff = np.abs(streamed - expected)
    assert np.array_equal(streamed, expected), f"{(diff > 0).mean():.2%} pixels differ"
    assert not thread_errors
    controller.close()


def test_coarse_data_appears_before_fine_data(make_napari_viewer):
    backend = _backend(cls=GatedBackend)
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    _look_at(viewer, 2, 1024, 1024, zoom=0.5)  # level 0 in view
    assert layer.data_level == 0
    stream = stream_of(layer)
    # The preview (a coarser level) arrives while every fine read is held back.
    _process_until(lambda: any(s > 0 for s, _, _ in backend.reads))
    assert wait_until_loaded_or_blocked(viewer, controller)
    coarse = _canvas(viewer)
    assert not stream.sharp
    assert coarse.std() > 5, "nothing was drawn from the coarser level"
    assert all(s > 0 for s, _, _ in backend.reads), "a fine chunk was read before release"
    backend.open_fine.set()
    assert wait_until_loaded(viewer, 30)
    assert stream.sharp
    fine = _canvas(viewer)
    assert not np.array_equal(coarse, fine), "the fine data never replaced the preview"
    levels_in_order = [s for s, _, _ in backend.reads]
    first_fine = levels_in_order.index(0)
    assert all(s > 0 for s in levels_in_order[:first_fine])
    controller.close()


def wait_until_loaded_or_blocked(viewer, controller, timeout=10.0):
    """Process events until only held-back fine reads remain and the view is drawn."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QApplication.processEvents()
        stats = controller.service.scheduler.stats()
        drawn = not any(s.peek_dirty() for _, s in controller.streams())
        if drawn and stats.loading <= stats.workers and stats.loading > 0:
            for _ in range(3):
                time.sleep(0.04)
                QApplication.processEvents()
            return True
        time.sleep(0.005)
    return False


def _count_canvas_updates(layer):
    """How often the layer hands new data to the canvas (each one costs a redraw)."""
    count = [0]
    layer.events.set_data.connect(lambda event=None: count.__setitem__(0, count[0] + 1))
    return count


def test_chunks_arriving_within_one_frame_are_drawn_with_one_redraw(make_napari_viewer):
    backend = _backend(cls=GatedBackend)
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    _look_at(viewer, 2, 1024, 1024, zoom=0.5)
    assert layer.data_level == 0
    stream = stream_of(layer)
    assert wait_until_loaded_or_blocked(viewer, controller)  # the preview is on screen
    assert not stream.sharp
    fine = {b for lv, b in _wanted(stream) if lv == 0}
    assert len(fine) > 4, "the view should need several fine chunks"
    updates, refreshes = _count_canvas_updates(layer), controller.refresh_count
    # Every fine chunk arrives while the main thread is busy (no event processed).
    backend.open_fine.set()
    assert controller.service.scheduler.wait_idle(20)
    _process_until(lambda: stream.sharp and controller.settled())
    _process_until(lambda: False, timeout=0.3)  # nothing more is drawn afterwards
    assert stream.sharp
    assert updates[0] == 1, f"{updates[0]} redraws for one batch of chunks"
    assert controller.refresh_count - refreshes == 1
    controller.close()


def _wanted(stream):
    level, start, stop = stream.shown
    return [(level, b) for b in stream.volume.levels[level].blocks_for(start, stop)]


class ThumbnailGatedBackend(LatencyBackend):
    """Reads of the coarsest level (the layer list's thumbnail) wait for ``open``."""

    def __init__(self, inner, latency=0.0):
        super().__init__(inner, latency)
        self.open = threading.Event()

    def read(self, scale, start, stop):
        if scale == LEVELS - 1:
            assert self.open.wait(20), "thumbnail level never released"
        return super().read(scale, start, stop)


def test_thumbnail_chunks_update_the_thumbnail_without_a_redraw(make_napari_viewer):
    backend = _backend(cls=ThumbnailGatedBackend)
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    _look_at(viewer, 2, 1024, 1024, zoom=0.5)
    stream = stream_of(layer)
    _process_until(lambda: stream.sharp and not stream.peek_dirty())
    _process_until(lambda: False, timeout=0.3)
    assert stream.sharp, "the view did not load while the thumbnail level was held back"
    before = np.array(layer.thumbnail)
    updates, refreshes = _count_canvas_updates(layer), controller.refresh_count
    backend.open.set()
    _process_until(lambda: not np.array_equal(layer.thumbnail, before))
    assert not np.array_equal(layer.thumbnail, before), "the thumbnail never showed the data"
    assert updates[0] == 0, "the canvas was redrawn for chunks only the thumbnail shows"
    assert controller.refresh_count == refreshes
    controller.close()


def test_an_open_status_panel_does_not_repaint_while_nothing_changes(
    make_napari_viewer, monkeypatch
):
    """Each repaint recomposes the whole window (tens of ms under software GL)."""
    from qtpy.QtCore import QEvent, QObject

    from napari_connecto._qt.cache_status import CacheStatusWidget
    from napari_connecto.cache import scheduler

    monkeypatch.setattr(scheduler, "RETRY_DELAYS", (0.05,))
    backend = _backend()
    backend.fail = lambda scale, start, stop: scale == 0  # stays failed (retries fail too)
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    panel = CacheStatusWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Streaming status")
    _look_at(viewer, 2, 1024, 1024, zoom=0.5)
    _process_until(lambda: panel.isVisible() and controller.status().failed > 0)
    _process_until(controller.service.scheduler.idle)  # retries used up
    _process_until(lambda: False, timeout=0.5)
    label = panel.count_labels["failed"]
    assert int(label.text().replace(",", "")) > 0
    paints = []

    class PaintCounter(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Paint:
                paints.append(obj)
            return False

    counter = PaintCounter()
    label.installEventFilter(counter)
    _process_until(lambda: False, timeout=1.2)  # several polls of the panel
    assert paints == [], f"the unchanged failed count was repainted {len(paints)} times"
    controller.close()


def test_failed_chunk_is_shown_as_failed_and_recovers_on_retry(make_napari_viewer):
    backend = _backend()
    bad = (2, 1024, 1024)  # a voxel of level 0 whose chunk fails

    def fail(scale, start, stop):
        return scale == 0 and all(a <= v < b for a, v, b in zip(start, bad, stop))

    backend.fail = fail
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    _look_at(viewer, *bad, zoom=0.5)
    assert layer.data_level == 0
    _process_until(controller.failed_outline)
    assert FAILED_LAYER_NAME in viewer.layers, "no outline of the failed chunk"
    (rect,) = controller.failed_outline()
    assert viewer.layers[FAILED_LAYER_NAME].visible
    # The outline covers exactly the failed chunk (z 0..4, y/x 1024..1152 voxels), in nm.
    np.testing.assert_allclose(rect.min(axis=0), (1024 * 4.0, 1024 * 4.0))
    np.testing.assert_allclose(rect.max(axis=0), (1152 * 4.0, 1152 * 4.0))
    # The pixels are striped (failed), not the fill value.
    # The chunk's pixels are stripes of the contrast limits (0 and 255), which the data
    # never holds (32..222): failed, not the fill value and not a coarser stand-in.
    seen = {
        layer.get_value((bad[0] * 40.0, (1024 + i) * 4.0, 1030 * 4.0), world=True)[1]
        for i in range(0, 128, 3)
    }
    assert seen == {0, 255}
    assert controller.status().failed >= 1
    backend.fail = None
    assert controller.retry_failed() >= 1
    assert wait_until_loaded(viewer, 30)
    assert controller.failed_outline() == []
    assert not viewer.layers[FAILED_LAYER_NAME].visible
    assert stream_of(layer).sharp
    got = layer.get_value((bad[0] * 40.0, bad[1] * 4.0 + 2, bad[2] * 4.0 + 2), world=True)
    truth = synthetic_voxels("image", (1, 1, 1), bad, tuple(v + 1 for v in bad))
    assert got[1] == truth.item()
    controller.close()


def test_failed_chunk_is_retried_automatically(make_napari_viewer):
    backend = _backend()
    failures = {"left": 2}

    def fail_twice(scale, start, stop):
        if failures["left"] > 0:
            failures["left"] -= 1
            return True
        return False

    backend.fail = fail_twice
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    _look_at(viewer, 1, 300, 300, zoom=0.5)
    assert wait_until_loaded(viewer, 30)
    assert failures["left"] == 0
    assert stream_of(layer).sharp
    assert controller.status().failed == 0
    controller.close()


def test_stale_requests_are_dropped_when_the_view_moves_on(make_napari_viewer, service_settings):
    service_settings.configure(workers=2)
    backend = _backend(latency=0.05)
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    stream = stream_of(layer)
    wanted = set()
    for i in range(5):  # a quick pan: each view is left before its chunks could arrive
        _look_at(viewer, 2, 300 + 350 * i, 300, zoom=0.5)
        level, start, stop = stream.shown
        wanted |= {(level, b) for b in stream.volume.levels[level].blocks_for(start, stop)}
    dropped_before = controller.service.scheduler.stats().dropped
    assert wait_until_loaded(viewer, 30)
    assert controller.service.scheduler.stats().dropped >= dropped_before
    fetched_fine = {(s, start) for s, start, _ in backend.reads if s == 0}
    assert len(fetched_fine) < len([w for w in wanted if w[0] == 0])
    assert stream.sharp
    controller.close()


def test_cache_stays_within_budget_over_a_long_pan(make_napari_viewer, service_settings):
    budget = 8 * 2**20
    service_settings.configure(budget_bytes=budget)
    cache = service_settings.cache
    cache.reset_peak()
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, _backend())
    for i in range(12):
        _look_at(viewer, i % 8, 200 + 150 * i, 1800 - 140 * i, zoom=0.5)
        assert wait_until_loaded(viewer, 30)
        assert stream_of(layer).sharp
    stats = cache.stats()
    assert stats.peak_nbytes <= budget
    assert stats.evictions > 0, "the pan never filled the cache; the test proves nothing"
    controller.close()


def test_labels_stream_exact_uint64_ids(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, _backend(kind="segmentation"))
    assert type(layer).__name__ == "Labels"
    _look_at(viewer, 3, 700, 900, zoom=0.5)
    assert wait_until_loaded(viewer, 30)
    point = (3, 700, 900)
    got = layer.get_value((point[0] * 40.0, point[1] * 4.0, point[2] * 4.0), world=True)
    truth = synthetic_voxels("segmentation", (1, 1, 1), point, tuple(v + 1 for v in point))
    assert got == (layer.data_level, int(truth.item()))
    assert int(truth.item()) > 2**60
    controller.close()


def test_3d_shows_the_finest_level_that_fits(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, _backend(latency=0.005))
    viewer.dims.ndisplay = 3
    assert wait_until_loaded(viewer, 60)
    shapes = [level.shape for level in layer.data]
    fits = [i for i, s in enumerate(shapes) if np.prod(s) <= 2**24]
    assert layer.locked_data_level == fits[0]
    assert layer.data_level == fits[0]
    assert stream_of(layer).sharp
    assert _canvas(viewer).std() > 5
    viewer.dims.ndisplay = 2
    assert wait_until_loaded(viewer, 30)
    assert layer.locked_data_level is None
    controller.close()


def test_no_qt_object_is_touched_off_the_main_thread(
    make_napari_viewer_proxy, monkeypatch, thread_errors
):
    from napari.layers.base.base import Layer

    calls = []
    original = Layer.refresh

    def recording_refresh(self, *args, **kwargs):
        calls.append(threading.current_thread() is threading.main_thread())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Layer, "refresh", recording_refresh)
    viewer = make_napari_viewer_proxy(show=True)
    backend = _backend(latency=0.02)
    controller, layer = _add(viewer, backend)
    for i in range(4):
        _look_at(viewer, i, 500 + 400 * i, 600, zoom=0.5)
        assert wait_until_loaded(viewer, 30)
    assert calls and all(calls), "a layer was refreshed from a worker thread"
    assert controller.refresh_count > 0
    assert not thread_errors
    controller.close()


def test_hidden_layers_stop_fetching(make_napari_viewer, service_settings):
    service_settings.configure(workers=1)
    backend = _backend(latency=0.03)
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    _look_at(viewer, 2, 1024, 1024, zoom=0.5)
    layer.visible = False
    stats = controller.service.scheduler.stats()
    assert stats.queued == 0, "a hidden layer still has chunks queued"
    reads_when_hidden = len(backend.reads)
    assert wait_until_loaded(viewer, 10)
    assert len(backend.reads) <= reads_when_hidden + 1  # at most the one already in flight
    layer.visible = True
    assert wait_until_loaded(viewer, 30)
    assert stream_of(layer).sharp
    controller.close()


def test_a_layer_removed_and_added_back_streams_again(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, _backend(latency=0.01))
    _look_at(viewer, 2, 500, 500, zoom=0.5)
    assert wait_until_loaded(viewer, 30)
    viewer.layers.remove(layer)
    assert not stream_of(layer).streaming
    viewer.add_layer(layer)
    _look_at(viewer, 6, 1500, 1400, zoom=0.5)  # somewhere not cached yet
    assert stream_of(layer).streaming
    assert wait_until_loaded(viewer, 30)
    assert stream_of(layer).sharp, "the re-added layer never drew its chunks"
    controller.close()


def test_duplicate_layer_streams_on_its_own(make_napari_viewer):
    import copy

    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, _backend(latency=0.01))
    _look_at(viewer, 2, 500, 500, zoom=0.5)
    assert wait_until_loaded(viewer, 30)
    data = copy.deepcopy(layer.data)  # what napari's Duplicate Layer does
    twin = viewer.add_image(
        list(data), multiscale=True, scale=layer.scale, translate=layer.translate
    )
    assert stream_of(twin) is not stream_of(layer)
    assert stream_of(twin) is twin.data[1].stream  # the levels of one layer share a stream
    viewer.layers.remove(layer)
    _look_at(viewer, 5, 1200, 900, zoom=0.5)
    assert stream_of(twin).streaming
    assert wait_until_loaded(viewer, 30)
    assert stream_of(twin).sharp
    controller.close()


def test_prefetched_locations_are_sharp_on_arrival(make_napari_viewer, service_settings):
    backend = _backend(latency=0.02)
    viewer = make_napari_viewer(show=True)
    controller, layer = _add(viewer, backend)
    _look_at(viewer, 1, 300, 300, zoom=0.25)
    assert wait_until_loaded(viewer, 30)
    level = layer.data_level
    target = np.array([[6 * 40.0, 1700 * 4.0, 1500 * 4.0]])  # the next synapse, far away
    assert controller.prefetch_locations(target) > 0
    _process_until(service_settings.scheduler.idle, timeout=20)
    backend.reset()
    _look_at(viewer, 6, 1700, 1500, zoom=0.25)  # the jump
    assert layer.data_level == level
    assert stream_of(layer).sharp, "the jump had to wait for data"
    assert [r for r in backend.reads if r[0] == level] == []  # (the thumbnail may load)
    controller.close()
