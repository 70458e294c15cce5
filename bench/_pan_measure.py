"""bench/pan.py's measurement: the volume's chunks, steps and runs, the heartbeat and
the main-thread ledger."""

from __future__ import annotations

import functools
import gc
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SHAPE = (64, 32768, 32768)
"""Level-0 shape, z y x (64 GiB of uint8 declared, nothing stored)."""
LEVELS = 8
CHUNK = (4, 128, 128)
"""Chunk of every level: 64 KiB; a z step of 1..4 crosses a chunk boundary 1/4..all of the time."""
HEARTBEAT_MS = 1
"""Interval of the heartbeat timer whose gaps show main-thread stalls."""


def level_shape(level: int) -> tuple[int, int, int]:
    return (SHAPE[0], -(-SHAPE[1] // 2**level), -(-SHAPE[2] // 2**level))


def blocks_of(level: int, start: tuple[int, ...], stop: tuple[int, ...]) -> frozenset:
    """Chunks of ``level`` overlapping ``[start, stop)`` (level voxels, z y x)."""
    shape = level_shape(level)
    ranges = []
    for a, b, c, n in zip(start, stop, CHUNK, shape, strict=True):
        lo, hi = max(a, 0), min(b, n)
        if hi <= lo:
            return frozenset()
        ranges.append(range(lo // c, (hi - 1) // c + 1))
    return frozenset((level, (z, y, x)) for z in ranges[0] for y in ranges[1] for x in ranges[2])


def chunk_region(level: int, block: tuple[int, int, int]) -> tuple[tuple, tuple]:
    shape = level_shape(level)
    start = tuple(b * c for b, c in zip(block, CHUNK, strict=True))
    stop = tuple(min(a + c, n) for a, c, n in zip(start, CHUNK, shape, strict=True))
    return start, stop


def chunk_bytes(blocks: frozenset) -> int:
    total = 0
    for level, block in blocks:
        start, stop = chunk_region(level, block)
        total += math.prod(b - a for a, b in zip(start, stop, strict=True))
    return total


@dataclass(slots=True)
class Step:
    """What one move cost."""

    index: int
    kind: str
    burst: bool
    sync_s: float
    stall_s: float = 0.0
    sharp_s: float = math.nan
    level: int = -1
    blocks: frozenset[tuple[int, tuple[int, int, int]]] = frozenset()
    refreshes: int = 0
    lower_s: float = math.nan
    work_s: float = math.nan
    """connecto only: main-thread time inside its own code over the whole step."""
    work_cpu_s: float = math.nan
    """... of which the main thread was on a CPU (the rest it waited: GIL, other processes)."""
    parts: dict[str, float] = field(default_factory=dict)
    """The blocking window split by :class:`Ledger` part (seconds, ``other`` = the rest)."""
    compose_cpu_s: float = math.nan
    """Main-thread CPU time of the Qt composition inside the blocking window."""

    @property
    def blocking_s(self) -> float:
        return max(self.sync_s, self.stall_s)


@dataclass(slots=True)
class Run:
    """One path at one latency."""

    path: str
    latency_ms: float
    steps: list[Step] = field(default_factory=list)
    bytes_read: int = 0
    reads: int = 0
    main_thread_reads: int = 0
    peak_bytes: int = 0
    budget: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Pulse:
    """A 1 ms QTimer heartbeat: runs the Qt event loop and records the longest gap."""

    def __init__(self, interval_ms: int = HEARTBEAT_MS) -> None:
        from qtpy.QtCore import QEventLoop, Qt, QTimer

        self.interval = interval_ms / 1000
        self._timer = QTimer()
        self._timer.setTimerType(Qt.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._beat)
        self._loop = QEventLoop()
        self._done: Callable[[], bool] = lambda: True
        self._t0 = self._last = self._min = self._timeout = 0.0
        self.max_gap = 0.0
        self.gap_window = (0.0, 0.0)
        """``(start, end)`` of the longest gap (perf_counter seconds)."""
        self.done_at: float | None = None

    def run(self, t0: float, done: Callable[[], bool], min_s: float, timeout_s: float) -> None:
        """Process events until ``done()`` (and ``min_s`` after ``t0``) or ``timeout_s``."""
        self._t0, self._done, self._min, self._timeout = t0, done, min_s, timeout_s
        self.max_gap, self.done_at = 0.0, None
        self._last = time.perf_counter()
        self.gap_window = (self._last, self._last)
        self._timer.start()
        self._loop.exec()
        self._timer.stop()

    @property
    def stall(self) -> float:
        return max(0.0, self.max_gap - self.interval)

    def _beat(self) -> None:
        now = time.perf_counter()
        if now - self._last > self.max_gap:
            self.max_gap, self.gap_window = now - self._last, (self._last, now)
        self._last = now
        if self.done_at is None and self._done():
            self.done_at = now
        elapsed = now - self._t0
        if (self.done_at is not None and elapsed >= self._min) or elapsed > self._timeout:
            self._loop.quit()


PARTS = ("connecto", "napari", "vispy", "compose", "gc", "other")
"""How a blocking window is split (see :class:`Ledger`)."""
PART_NAMES = {
    "connecto": "connecto (reads, ticks, settle)",
    "napari": "napari slicing + refresh",
    "vispy": "vispy scene draw",
    "compose": "Qt window composition",
    "gc": "garbage collection",
    "other": "other (events, heartbeat)",
}


class Ledger:
    """Main-thread time booked by part, each hook exclusive of the hooks nested in it.

    Records are ``(part, start, end, wall, cpu)`` with ``wall``/``cpu`` the exclusive
    seconds. Only the main thread is booked; worker threads pass straight through.
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, float, float, float, float]] = []
        self._stack: list[list[float]] = []
        self._main = threading.main_thread()
        self._gc_start: tuple[float, float] | None = None

    def _enter(self) -> tuple[float, float]:
        self._stack.append([0.0, 0.0])
        return time.perf_counter(), time.thread_time()

    def _leave(self, part: str, t0: float, c0: float) -> None:
        t1, c1 = time.perf_counter(), time.thread_time()
        nested = self._stack.pop()
        wall, cpu = t1 - t0, c1 - c0
        self.records.append((part, t0, t1, wall - nested[0], cpu - nested[1]))
        if self._stack:
            self._stack[-1][0] += wall
            self._stack[-1][1] += cpu

    def wrap(self, owner: Any, name: str, part: str) -> None:
        """Book every main-thread call of ``owner.name`` to ``part`` (if it exists)."""
        original = getattr(owner, name, None)
        if original is None:
            print(f"(ledger: {owner.__name__}.{name} not found, not booked)")
            return
        ledger = self

        @functools.wraps(original)
        def booked(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not ledger._main:
                return original(*args, **kwargs)
            t0, c0 = ledger._enter()
            try:
                return original(*args, **kwargs)
            finally:
                ledger._leave(part, t0, c0)

        setattr(owner, name, booked)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if threading.current_thread() is not self._main:
            return
        if phase == "start":
            self._gc_start = self._enter()
        elif self._gc_start is not None:
            self._leave("gc", *self._gc_start)
            self._gc_start = None

    def install(self, viewer: Any) -> Any:
        """Hook connecto, napari, vispy, Qt's window composition and the collector."""
        import napari.layers._scalar_field._slice as napari_slice
        from napari._vispy.canvas import VispyCanvas
        from napari._vispy.layers.scalar_field import VispyScalarFieldBaseLayer
        from napari.layers.base.base import Layer
        from napari.layers.image.image import _ImageSlicingState
        from qtpy.QtCore import QEvent, QObject
        from vispy.app.backends import _qt as vispy_qt
        from vispy.scene.canvas import SceneCanvas

        from napari_connecto.cache.streaming import LayerStream
        from napari_connecto.viewer.streaming import StreamingController

        self.wrap(LayerStream, "read", "connecto")
        for name in ("_on_tick", "_on_settled", "_on_view_changed"):
            self.wrap(StreamingController, name, "connecto")
        self.wrap(Layer, "refresh", "napari")
        self.wrap(Layer, "_update_draw", "napari")
        self.wrap(VispyCanvas, "on_draw", "napari")
        self.wrap(napari_slice._ScalarFieldSliceRequest, "__call__", "napari")
        self.wrap(_ImageSlicingState, "_update_slice_response", "napari")
        self.wrap(VispyScalarFieldBaseLayer, "_on_data_change", "napari")
        self.wrap(SceneCanvas, "on_draw", "vispy")
        self.wrap(vispy_qt.CanvasBackendDesktop, "paintGL", "vispy")
        gc.callbacks.append(self._on_gc)
        window = viewer.window._qt_window
        ledger = self

        class ComposeTimer(QObject):
            """Times the window's UpdateRequest (paint of every dirty widget + flush)."""

            def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802
                if obj is not window or event.type() != QEvent.UpdateRequest:
                    return False
                t0, c0 = ledger._enter()
                try:
                    obj.event(event)
                finally:
                    ledger._leave("compose", t0, c0)
                return True

        timer = ComposeTimer()
        window.installEventFilter(timer)
        return timer  # keep it alive

    def window(self, start: float, end: float) -> tuple[dict[str, float], float]:
        """Exclusive wall seconds per part of the hooks ending in ``(start, end]``.

        Also returns the main-thread CPU seconds of the window composition in there.
        """
        parts = dict.fromkeys(PARTS, 0.0)
        compose_cpu = 0.0
        for part, _t0, t1, wall, cpu in self.records:
            if start < t1 <= end:
                parts[part] += wall
                compose_cpu += cpu if part == "compose" else 0.0
        parts["other"] = max(0.0, end - start - sum(parts.values()))
        return parts, compose_cpu

    def total(self, part: str, start: float, end: float) -> tuple[float, float]:
        """Exclusive wall and CPU seconds of ``part`` ending in ``(start, end]``."""
        picked = [r for r in self.records if r[0] == part and start < r[2] <= end]
        return sum(r[3] for r in picked), sum(r[4] for r in picked)


LEDGER = Ledger()
