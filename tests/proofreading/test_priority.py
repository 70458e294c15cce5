"""Background write-back steps aside while an edit is being committed, but is never starved."""

from __future__ import annotations

import threading
import time

import numpy as np

from napari_connecto.proofreading.priority import ForegroundGate
from tests.proofreading.helpers import Workspace

U64 = np.uint64


def test_step_aside_waits_for_the_edit_in_progress_to_finish() -> None:
    gate = ForegroundGate(max_wait_s=10.0)
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def edit() -> None:
        with gate.foreground(), gate.foreground():  # re-entrant: paint -> commit
            entered.set()
            release.wait(5.0)
            order.append("edit done")

    worker = threading.Thread(target=edit)
    worker.start()
    assert entered.wait(5.0)
    assert gate.busy
    waiter = threading.Thread(target=lambda: order.append(f"stepped aside {gate.step_aside()}"))
    waiter.start()
    time.sleep(0.1)
    assert order == []  # still waiting for the edit
    release.set()
    worker.join(5.0)
    waiter.join(5.0)
    assert order == ["edit done", "stepped aside True"]
    assert not gate.busy
    assert gate.step_aside() is True  # nothing in progress: no wait


def test_the_editing_thread_never_waits_for_itself() -> None:
    gate = ForegroundGate(max_wait_s=10.0)
    with gate.foreground():  # a write-back run inside the edit's own call
        assert gate.step_aside() is True  # at once, not after 10 s with False


def test_writing_back_before_the_call_returns_does_not_wait(workspace: Workspace) -> None:
    ws = workspace
    pr = ws.open()  # background=False: every paint is written back before it returns
    pr._gate.max_wait_s = 30.0
    new = pr.new_id()
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (pr.paint((1, 10, 10), np.ones((1, 8, 8), bool), new), done.set())
    )
    worker.start()
    assert done.wait(10.0), "the paint waited for its own write-back"
    worker.join()
    block = pr.volume.read_voxels(0, (1, 10, 10), (2, 18, 18))
    assert (block == U64(new)).all()


def test_step_aside_gives_up_after_its_bound() -> None:
    gate = ForegroundGate(max_wait_s=0.05)
    held, release = threading.Event(), threading.Event()

    def edit() -> None:
        with gate.foreground():  # an edit on another thread that never ends in time
            held.set()
            release.wait(5.0)

    worker = threading.Thread(target=edit)
    worker.start()
    assert held.wait(5.0)
    start = time.monotonic()
    assert gate.step_aside() is False
    assert time.monotonic() - start < 2.0
    release.set()
    worker.join(5.0)


def test_write_back_waits_for_an_edit_in_progress(workspace: Workspace) -> None:
    ws = workspace
    pr = ws.open(background=True)
    pr._gate.max_wait_s = 30.0
    start, mask, new = (1, 10, 10), np.ones((1, 8, 8), bool), pr.new_id()
    with pr._gate.foreground():  # as if the user's next edit were being committed
        pr.paint(start, mask, new)
        time.sleep(0.5)
        assert pr.pending() == 1  # the write-back has not run meanwhile
        block = pr.volume.read_voxels(0, (1, 10, 10), (2, 18, 18))
        assert not (block == U64(new)).all()
    assert pr.commit(timeout=30.0)
    block = pr.volume.read_voxels(0, (1, 10, 10), (2, 18, 18))
    assert (block == U64(new)).all()


def test_a_stream_of_edits_does_not_starve_the_write_back(workspace: Workspace) -> None:
    ws = workspace
    pr = ws.open(background=True)
    pr._gate.max_wait_s = 0.05
    new = pr.new_id()
    with pr._gate.foreground():  # an edit in progress all along
        pr.paint((1, 10, 10), np.ones((1, 8, 8), bool), new)
        assert pr.commit(timeout=30.0)
        block = pr.volume.read_voxels(0, (1, 10, 10), (2, 18, 18))
        assert (block == U64(new)).all()
