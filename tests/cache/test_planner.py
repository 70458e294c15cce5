"""Wish lists planned off the reading thread, and what a redraw no longer recomputes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_connecto.cache import Planner
from napari_connecto.cache import streaming as streaming_module
from tests.cache.test_streaming import WAIT, open_stream, truth


def test_planner_runs_tasks_in_order_on_one_thread() -> None:
    planner = Planner()
    gate = threading.Event()
    seen: list[tuple[int, str]] = []
    planner.submit(lambda: gate.wait(WAIT))
    for i in range(5):
        planner.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert not planner.idle()
    gate.set()
    assert planner.wait_idle(WAIT)
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"connecto-planner"}
    planner.close()


def test_a_failing_task_does_not_stop_the_planner(caplog: pytest.LogCaptureFixture) -> None:
    planner = Planner()
    done = threading.Event()

    def broken() -> None:
        raise ValueError("bad plan")

    planner.submit(broken)
    planner.submit(done.set)
    assert done.wait(WAIT)
    assert "bad plan" in caplog.text
    planner.close()


def test_reads_leave_planning_to_the_planner_and_stale_plans_are_dropped(make_service) -> None:
    service = make_service()
    backend, vol, stream = open_stream(service, streaming=True)
    stream.planner = service.planner
    sched = service.scheduler
    submitting: list[str] = []
    submit = sched.submit

    def recording_submit(client, jobs):
        submitting.append(threading.current_thread().name)
        return submit(client, jobs)

    sched.submit = recording_submit
    hold = threading.Event()
    service.planner.submit(lambda: hold.wait(WAIT))  # the planner is busy for a while
    first, second = ((0, 0, 0), (4, 64, 64)), ((4, 64, 64), (8, 128, 128))
    stream.read(0, *first)
    out = stream.read(0, *second)  # the user moved on before the first view was planned
    assert out.shape == (4, 64, 64)
    assert submitting == [], "the reading thread planned"
    assert stream.shown == (0, *second)
    hold.set()
    assert service.planner.wait_idle(WAIT)
    assert set(submitting) == {"connecto-planner"}
    assert not any(sched.wants(stream, vol.key(0, b)) for b in vol.levels[0].blocks_for(*first))
    assert sched.wait_idle(WAIT)
    assert np.array_equal(stream.read(0, *second), truth(vol, 0, *second))
    assert not any(lv == 0 and b in vol.levels[0].blocks_for(*first) for lv, b in _reads(vol))


def _reads(vol):
    backend = vol.volume.backend
    return [
        (s, tuple(a // b for a, b in zip(start, vol.levels[s].block, strict=True)))
        for s, start, _ in backend.reads
    ]


def test_a_redraw_after_arrivals_does_not_resubmit_the_wish_list(make_service) -> None:
    service = make_service()
    _, vol, stream = open_stream(service, streaming=True)
    view = ((0, 0, 0), (4, 64, 64))
    stream.read(0, *view)
    assert service.scheduler.wait_idle(WAIT)
    generation = service.scheduler.generation(stream)
    assert np.array_equal(stream.read(0, *view), truth(vol, 0, *view))
    assert stream.read(0, *view).shape == (4, 64, 64)
    assert service.scheduler.generation(stream) == generation


def test_an_unchanged_thumbnail_is_not_composed_again(make_service, monkeypatch) -> None:
    service = make_service()
    _, vol, stream = open_stream(service, streaming=True)
    stream.current_level = lambda: 0  # level 2 reads are the layer list's thumbnail
    whole = ((0, 0, 0), vol.levels[2].shape)
    stream.read(2, *whole)
    assert service.scheduler.wait_idle(WAIT)
    composed = stream.read(2, *whole)
    assert np.array_equal(composed, truth(vol, 2, *whole))
    calls = []
    compose = streaming_module.compose_region
    monkeypatch.setattr(
        streaming_module,
        "compose_region",
        lambda *a, **k: calls.append(a) or compose(*a, **k),
    )
    again = stream.read(2, *whole)
    assert again is composed and not again.flags.writeable
    assert calls == []
    vol.invalidate(level=2)  # e.g. after an edit: composed anew
    assert stream.read(2, *whole) is not composed
    assert len(calls) == 1
