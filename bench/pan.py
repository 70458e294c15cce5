"""Pan, zoom and z-scroll a real napari viewer: connecto streaming vs napari's native dask path.

One run drives a shown napari viewer (under Xvfb when there is no display) along one
scripted path of pans (~1/3 canvas), 2x zooms, z steps of 1..4 sections and a few bursts
of moves applied back to back, over a procedural volume declared at 64 x 32768 x 32768
uint8 voxels (8 levels, chunks of 4 x 128 x 128, so z steps cross chunk boundaries about
half the time), with latency injected per chunk read. Two paths see the same views:

- ``connecto``: ``volume_layer_data(..., streaming=True)`` with the streaming controller;
- ``native``: napari's own multiscale path, a list of ``dask.array.from_array(level)``
  (dask's threaded scheduler reads, called from the main thread while napari slices).

Each (path, latency) gets a fresh backend and volume. The connecto service is configured
with an explicit budget and worker count; napari's opportunistic dask cache gets the same
budget and dask's thread pool the same worker count, so both paths have equal means.

Per step it prints (and plots) the main-thread blocking time: max(the synchronous time
of applying the move plus ``QApplication.processEvents()``, the longest gap beyond the
interval between beats of a 1 ms ``QTimer`` while the view then fills in). Time to sharp
is measured from the moment the move is applied (connecto: until ``stream_of(layer).sharp``
for the region napari asked for at ``layer.data_level``; native: until napari's last
slice of the step, i.e. the step itself). The lower bound is fetching exactly the visible
chunks of that level from a fresh backend with the same latency and worker count
(``ThreadPoolExecutor``), measured in the same run once the viewer is idle.

Run: ``python bench/pan.py [--steps 48] [--latency 0,50] [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (64, 32768, 32768)
"""Level-0 shape, z y x (64 GiB of uint8 declared, nothing stored)."""
LEVELS = 8
CHUNK = (4, 128, 128)
"""Chunk of every level: 64 KiB; a z step of 1..4 crosses a chunk boundary 1/4..all of the time."""
RESOLUTION = (40.0, 4.0, 4.0)
ZOOM0 = 0.2
"""Camera zoom (screen px per nm) of the finest view: 1.25 level-0 voxels per screen pixel."""
ZOOM_STEPS = 3
"""Zoom range: ZOOM0 / 2**k for k in 0..ZOOM_STEPS (levels 0..3)."""
HEARTBEAT_MS = 1
DWELL_S = 0.25
"""Least time spent at each view that is waited for (lets the debounced prefetch run)."""
SHARP_TIMEOUT_S = 20.0
TARGET_MAIN_MS = 16.0
TARGET_RATIO = 1.25
TARGET_PEAK = 1.05
RESULTS = Path(__file__).resolve().parent / "results"


def _reexec_under_xvfb() -> None:
    if os.environ.get("DISPLAY"):
        return
    if shutil.which("xvfb-run") is None:
        sys.exit("no DISPLAY and no xvfb-run: cannot show a napari viewer")
    argv = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", sys.executable]
    os.execvp("xvfb-run", [*argv, str(Path(__file__).resolve()), *sys.argv[1:]])


# -- the path ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class View:
    """Where the camera looks: centre (nm), zoom (px per nm) and z section."""

    cy: float
    cx: float
    zoom: float
    z: int


@dataclass(frozen=True, slots=True)
class Move:
    """One step of the path: the view after it, and whether the next move follows at once."""

    kind: str
    view: View
    burst: bool
    """True when another move is applied right after this one, without waiting."""


PATTERN = (
    "pan", "pan", "z", "pan", "zoom", "pan", "z", "burst-pan",
    "zoom", "pan", "z", "pan", "burst-z", "zoom", "pan", "burst-mixed",
)  # fmt: skip


def make_path(steps: int, canvas_hw: tuple[int, int], seed: int = 7) -> list[Move]:
    """A deterministic mix of pans, zooms, z steps and bursts, kept inside the volume."""
    rng = np.random.default_rng(seed)
    extent_y, extent_x = SHAPE[1] * RESOLUTION[1], SHAPE[2] * RESOLUTION[2]
    state = {"cy": extent_y / 2, "cx": extent_x / 2, "k": 0, "z": SHAPE[0] // 2}
    heading = np.array([0.0, 1.0])
    moves: list[Move] = []

    def view() -> View:
        return View(state["cy"], state["cx"], ZOOM0 / 2 ** state["k"], int(state["z"]))

    def pan(turn: bool) -> None:
        nonlocal heading
        if turn:
            angle = rng.choice(np.arange(8)) * np.pi / 4
            heading = np.array([np.sin(angle), np.cos(angle)])
        zoom = ZOOM0 / 2 ** state["k"]
        step = heading * np.array(canvas_hw) / 3 / zoom
        for axis, key, extent in ((0, "cy", extent_y), (1, "cx", extent_x)):
            margin = canvas_hw[axis] / zoom
            new = state[key] + step[axis]
            if not margin < new < extent - margin:
                heading[axis] = -heading[axis]
                new = state[key] - step[axis]
            state[key] = new

    def zoom() -> None:
        k = state["k"]
        out = k == 0 or (k < ZOOM_STEPS and rng.random() < 0.5)
        state["k"] = k + 1 if out else k - 1

    def zstep(small: bool = False) -> None:
        dz = int(rng.choice([1, 2]) if small else rng.integers(1, 5)) * int(rng.choice([-1, 1]))
        if not 0 <= state["z"] + dz < SHAPE[0]:
            dz = -dz
        state["z"] += dz

    actions: dict[str, Callable[[], None]] = {
        "pan": lambda: pan(rng.random() < 0.3), "zoom": zoom, "z": zstep,
    }  # fmt: skip
    bursts = {
        "burst-pan": ["pan", "pan", "pan", "pan"],
        "burst-z": ["z1", "z1", "z1", "z1"],
        "burst-mixed": ["zoom", "pan", "z1", "zoom"],
    }
    actions["z1"] = lambda: zstep(small=True)
    i = 0
    while len(moves) < steps:
        kind = PATTERN[i % len(PATTERN)]
        i += 1
        group = bursts.get(kind, [kind])[: steps - len(moves)]
        for j, sub in enumerate(group):
            if sub == "pan" and kind == "burst-pan" and j == 0:
                pan(True)
            else:
                actions[sub]()
            label = sub if kind in ("pan", "zoom", "z") else f"{kind}:{sub}"
            moves.append(Move(label, view(), burst=j < len(group) - 1))
    return moves


def crossings(moves: list[Move]) -> str:
    """How many z steps of the path leave the z-chunk they started in."""
    z_before = [start_view().z] + [m.view.z for m in moves[:-1]]
    steps = [(a, m.view.z) for a, m in zip(z_before, moves, strict=True) if a != m.view.z]
    crossed = sum(a // CHUNK[0] != b // CHUNK[0] for a, b in steps)
    return f"{crossed} of {len(steps)}"


def start_view() -> View:
    return View(SHAPE[1] * RESOLUTION[1] / 2, SHAPE[2] * RESOLUTION[2] / 2, ZOOM0, SHAPE[0] // 2)


# -- measurement ---------------------------------------------------------------------------
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
    """connecto only: main-thread time inside its own slicing (compose + wish lists)."""

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
        self.done_at: float | None = None

    def run(self, t0: float, done: Callable[[], bool], min_s: float, timeout_s: float) -> None:
        """Process events until ``done()`` (and ``min_s`` after ``t0``) or ``timeout_s``."""
        self._t0, self._done, self._min, self._timeout = t0, done, min_s, timeout_s
        self.max_gap, self.done_at = 0.0, None
        self._last = time.perf_counter()
        self._timer.start()
        self._loop.exec()
        self._timer.stop()

    @property
    def stall(self) -> float:
        return max(0.0, self.max_gap - self.interval)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - self._last)
        self._last = now
        if self.done_at is None and self._done():
            self.done_at = now
        elapsed = now - self._t0
        if (self.done_at is not None and elapsed >= self._min) or elapsed > self._timeout:
            self._loop.quit()


def apply_view(viewer: Any, old: View | None, new: View) -> None:
    camera = viewer.scene.camera
    if old is None or (old.cy, old.cx) != (new.cy, new.cx):
        camera.center = (new.cy, new.cx)
    if old is None or old.zoom != new.zoom:
        camera.zoom = new.zoom
    if old is None or old.z != new.z:
        viewer.dims.set_current_step(0, new.z)


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


def napari_region(layer: Any, viewer: Any) -> tuple[int, tuple, tuple]:
    """``(level, start, stop)`` napari asked for: its level, snapped corners and z section."""
    corners = np.asarray(layer.corner_pixels)
    z = int(viewer.dims.current_step[0])
    start = (z, int(corners[0, 1]), int(corners[0, 2]))
    stop = (z + 1, int(corners[1, 1]) + 1, int(corners[1, 2]) + 1)
    return int(layer.data_level), start, stop


# -- the two paths -------------------------------------------------------------------------
def new_backend(latency_ms: float, workers: int) -> Any:
    from napari_connecto.testing.backends import LatencyBackend, SyntheticBackend

    inner = SyntheticBackend(SHAPE, LEVELS, CHUNK, kind="image", resolution=RESOLUTION)
    return LatencyBackend(inner, latency=latency_ms / 1000, concurrency=workers)


class ConnectoPath:
    """napari-connecto streaming: lazy levels that never read on the main thread."""

    def __init__(self, viewer: Any, backend: Any) -> None:
        from napari_connecto.layers import volume_layer_data
        from napari_connecto.viewer.streaming import controller_for, stream_of
        from napari_connecto.volume.volume import Volume

        self.viewer = viewer
        self.controller = controller_for(viewer)
        data, meta, _ = volume_layer_data(Volume(backend), streaming=True)
        meta.pop("units", None)
        self.layer = viewer.add_image(data, **meta)
        self.stream = stream_of(self.layer)
        self.work = 0.0
        read = self.stream.read

        def timed_read(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return read(*args, **kwargs)
            finally:
                self.work += time.perf_counter() - t

        self.stream.read = timed_read  # type: ignore[method-assign]

    def is_sharp(self) -> bool:
        shown = self.stream.shown
        if not self.stream.sharp or shown is None:
            return False
        return shown == napari_region(self.layer, self.viewer)

    def visible_blocks(self) -> frozenset:
        shown = self.stream.shown
        if shown is None:
            return frozenset()
        level, start, stop = shown
        geom = self.stream.volume.levels[level]
        return frozenset((level, b) for b in geom.blocks_for(start, stop))

    def refreshes(self) -> int:
        return self.controller.refresh_count

    def idle(self) -> bool:
        return self.controller.settled()

    def close(self) -> None:
        volume = self.stream.volume
        self.viewer.layers.remove(self.layer)
        volume.invalidate()


class NativePath:
    """napari's multiscale path over dask arrays: slicing computes on the main thread's call."""

    def __init__(self, viewer: Any, backend: Any) -> None:
        import dask.array as da

        from napari_connecto.volume.volume import Volume

        self.viewer = viewer
        volume = Volume(backend)
        tag = uuid.uuid4().hex[:8]  # unique dask keys: nothing cached from an earlier run
        levels = [
            da.from_array(volume.level(k), chunks=CHUNK, name=f"native-{tag}-s{k}")
            for k in range(LEVELS)
        ]
        self.layer = viewer.add_image(
            levels, multiscale=True, scale=RESOLUTION, contrast_limits=(0.0, 255.0),
            colormap="gray", name="native 64x32768x32768", axis_labels=("z", "y", "x"),
        )  # fmt: skip
        self.last_slice = 0.0
        self.layer.events.set_data.connect(self._on_set_data)

    def _on_set_data(self, event: Any = None) -> None:
        self.last_slice = time.perf_counter()

    def is_sharp(self) -> bool:
        return True  # napari slices synchronously: sharp as soon as the step returns

    def visible_blocks(self) -> frozenset:
        return blocks_of(*napari_region(self.layer, self.viewer))

    def refreshes(self) -> int:
        return 0

    def idle(self) -> bool:
        return True

    def close(self) -> None:
        self.viewer.layers.remove(self.layer)


# -- one run -------------------------------------------------------------------------------
def process_for(seconds: float) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)


def settle_first_view(viewer: Any, path: Any, view: View, pulse: Pulse) -> float:
    """Go to the first view and wait until it is sharp and the viewer idle (not measured)."""
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    apply_view(viewer, None, view)
    QApplication.processEvents()
    pulse.run(t0, lambda: path.is_sharp() and path.idle(), 0.3, SHARP_TIMEOUT_S)
    return time.perf_counter() - t0


def drive(viewer: Any, path: Any, moves: list[Move], first: View, pulse: Pulse) -> list[Step]:
    """Apply every move; time its synchronous part, the stalls after it and time to sharp."""
    from qtpy.QtWidgets import QApplication

    steps: list[Step] = []
    previous = first
    for i, move in enumerate(moves):
        refreshes = path.refreshes()
        work = getattr(path, "work", math.nan)
        t0 = time.perf_counter()
        apply_view(viewer, previous, move.view)
        QApplication.processEvents()
        t1 = time.perf_counter()
        previous = move.view
        step = Step(i, move.kind, move.burst, t1 - t0)
        steps.append(step)
        if move.burst:
            continue
        pulse.run(t0, path.is_sharp, DWELL_S, SHARP_TIMEOUT_S)
        step.stall_s = pulse.stall
        if isinstance(path, NativePath):
            step.sharp_s = max(t1, path.last_slice) - t0
        elif pulse.done_at is not None:
            step.sharp_s = max(pulse.done_at, t1) - t0
        step.blocks = path.visible_blocks()
        step.level = int(path.layer.data_level)
        step.refreshes = path.refreshes() - refreshes
        step.work_s = getattr(path, "work", math.nan) - work
    return steps


def measure_floors(viewer: Any, layer: Any) -> dict[str, float]:
    """Main-thread cost of a redraw only, and of a refresh (slice + redraw), all data at hand."""
    from qtpy.QtWidgets import QApplication

    camera = viewer.scene.camera
    draws, refreshes = [], []
    for i in range(16):
        if i == 4:  # the first redraws warm up (shaders, caches)
            draws, refreshes = [], []
        cy, cx = camera.center[-2:]
        t0 = time.perf_counter()
        camera.center = (cy, cx + (0.01 if i % 2 else -0.01))
        QApplication.processEvents()
        draws.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        layer.refresh(thumbnail=False, extent=False, highlight=False)
        QApplication.processEvents()
        refreshes.append(time.perf_counter() - t0)
    return {
        "draw_ms": 1000 * statistics.median(draws),
        "refresh_ms": 1000 * statistics.median(refreshes),
    }


def lower_bounds(run: Run, workers: int) -> None:
    """Time fetching exactly each step's visible chunks from a fresh backend (same concurrency)."""
    seen: dict[frozenset, float] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        wait([pool.submit(time.sleep, 0.01) for _ in range(workers)])  # start the threads
        for step in run.steps:
            if step.burst or not step.blocks:
                continue
            if step.blocks not in seen:
                backend = new_backend(run.latency_ms, workers)
                jobs = [(lv, *chunk_region(lv, b)) for lv, b in step.blocks]
                t0 = time.perf_counter()
                wait([pool.submit(backend.read, *job) for job in jobs])
                seen[step.blocks] = time.perf_counter() - t0
            step.lower_s = seen[step.blocks]


def one_run(viewer: Any, kind: str, latency_ms: float, moves: list[Move], args: Any) -> Run:
    from napari.utils import resize_dask_cache

    from napari_connecto.cache.service import default_service

    service = default_service()
    dask_cache = resize_dask_cache(args.budget_mib * 2**20)
    dask_cache.cache.clear()
    backend = new_backend(latency_ms, args.workers)
    service.cache.reset_peak()
    before = service.cache.stats()
    cls = ConnectoPath if kind == "connecto" else NativePath
    path = cls(viewer, backend)
    pulse = Pulse()
    first = settle_first_view(viewer, path, start_view(), pulse)
    backend.reset()
    service.scheduler.reset_counters()
    run = Run(kind, latency_ms)
    run.steps = drive(viewer, path, moves, start_view(), pulse)
    # drain the background work of the last view before reading the counters
    pulse.run(time.perf_counter(), path.idle, 0.0, SHARP_TIMEOUT_S)
    run.bytes_read, run.reads = backend.bytes_read, len(backend.reads)
    run.main_thread_reads = sum(1 for t in backend.read_threads if t == "MainThread")
    stats = service.cache.stats()
    run.peak_bytes, run.budget = stats.peak_nbytes, stats.budget
    if kind == "native":
        run.peak_bytes, run.budget = dask_cache.cache.total_bytes, args.budget_mib * 2**20
    sched = service.scheduler.stats()
    run.extra = {
        "first_view_s": first,
        "canvas": tuple(viewer.canvas.size),
        "read_threads": sorted(backend.read_threads),
        **measure_floors(viewer, path.layer),
    }
    if kind == "connecto":
        run.extra.update(
            fetched=sched.fetched, dropped=sched.dropped,
            evictions=stats.evictions - before.evictions, rejected=stats.rejected - before.rejected,
            source_limit=getattr(path.stream.volume, "_source_limit", "?"),
        )  # fmt: skip
    path.close()
    process_for(0.1)
    lower_bounds(run, args.workers)
    return run


# -- report --------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.percentile(values, q)) if values else math.nan


def summarize(run: Run) -> dict[str, float]:
    main = [1000 * s.blocking_s for s in run.steps]
    waited = [s for s in run.steps if not s.burst]
    sharp = [1000 * s.sharp_s for s in waited]
    lower = [1000 * s.lower_s for s in waited]
    ratio = [s.sharp_s / s.lower_s for s in waited if s.lower_s > 0 and not math.isnan(s.sharp_s)]
    by_kind = {}
    for kind in ("pan", "zoom", "z"):
        picked = [s.sharp_s / s.lower_s for s in waited
                  if s.kind == kind and s.lower_s > 0 and not math.isnan(s.sharp_s)]  # fmt: skip
        by_kind[f"ratio_{kind}"] = _pct(picked, 50)
    picked = [s.sharp_s / s.lower_s for s in waited if s.kind.startswith("burst") and s.lower_s > 0]
    by_kind["ratio_burst"] = _pct(picked, 50)
    work = [1000 * s.work_s for s in waited]
    needed = sum(chunk_bytes(s.blocks) for s in waited)
    union = frozenset().union(*(s.blocks for s in waited))
    return {
        "main_med": _pct(main, 50), "main_p99": _pct(main, 99), "main_max": max(main),
        "sync_max": 1000 * max(s.sync_s for s in run.steps),
        "stall_max": 1000 * max(s.stall_s for s in run.steps),
        "over16": sum(m > TARGET_MAIN_MS for m in main),
        "work_med": _pct(work, 50), "work_p99": _pct(work, 99), "work_max": _pct(work, 100),
        "sharp_med": _pct(sharp, 50), "sharp_p90": _pct(sharp, 90),
        "lower_med": _pct(lower, 50), "lower_p90": _pct(lower, 90),
        "ratio_med": _pct(ratio, 50), "ratio_p90": _pct(ratio, 90),
        "timeouts": sum(math.isnan(s.sharp_s) for s in waited),
        "fetched_mib": run.bytes_read / 2**20, "needed_mib": needed / 2**20,
        "unique_mib": chunk_bytes(union) / 2**20,
        "peak_mib": run.peak_bytes / 2**20, "budget_mib": run.budget / 2**20, **by_kind,
    }  # fmt: skip


def print_steps(run: Run) -> None:
    print(f"\n-- {run.path} @ {run.latency_ms:g} ms: per step (ms) --")
    print(f"{'#':>3} {'move':18} {'lvl':>3} {'chunks':>6} {'sync':>7} {'stall':>7} "
          f"{'sharp':>7} {'lower':>7} {'refr':>4}")  # fmt: skip
    for s in run.steps:
        sharp = "-" if s.burst else f"{1000 * s.sharp_s:7.0f}"
        lower = "-" if s.burst else f"{1000 * s.lower_s:7.0f}"
        level = "" if s.burst else str(s.level)
        chunks = "" if s.burst else str(len(s.blocks))
        print(f"{s.index:3d} {s.kind:18} {level:>3} {chunks:>6} {1000 * s.sync_s:7.1f} "
              f"{1000 * s.stall_s:7.1f} {sharp:>7} {lower:>7} {s.refreshes:4d}")  # fmt: skip


def print_run(run: Run, r: dict[str, float]) -> None:
    x = run.extra
    print(f"\n== {run.path} @ {run.latency_ms:g} ms latency ==")
    print(f"canvas (h, w) {x['canvas']}; first view {x['first_view_s']:.2f} s (not counted); "
          f"redraw only {x['draw_ms']:.1f} ms, refresh+redraw {x['refresh_ms']:.1f} ms (medians)")  # fmt: skip
    print(f"main thread per step ms: median {r['main_med']:.1f}  p99 {r['main_p99']:.1f}  "
          f"max {r['main_max']:.1f} (sync max {r['sync_max']:.1f}, stall max {r['stall_max']:.1f}); "
          f"{r['over16']} of {len(run.steps)} steps over {TARGET_MAIN_MS:g} ms")  # fmt: skip
    print(f"time to sharp ms: median {r['sharp_med']:.0f}  p90 {r['sharp_p90']:.0f}; lower bound "
          f"median {r['lower_med']:.0f} p90 {r['lower_p90']:.0f}; ratio median {r['ratio_med']:.2f} "
          f"p90 {r['ratio_p90']:.2f}; timeouts {r['timeouts']}")  # fmt: skip
    print(f"median ratio by move: pan {r['ratio_pan']:.2f}, zoom {r['ratio_zoom']:.2f}, "
          f"z {r['ratio_z']:.2f}, end of burst {r['ratio_burst']:.2f}")  # fmt: skip
    print(f"bytes: fetched {r['fetched_mib']:.1f} MiB in {run.reads} reads; needed {r['needed_mib']:.1f} "
          f"MiB (sum over waited steps), {r['unique_mib']:.1f} MiB (distinct chunks)")  # fmt: skip
    held = "peak cache" if run.path == "connecto" else "napari dask cache at the end"
    print(f"{held} {r['peak_mib']:.1f} MiB of {r['budget_mib']:.0f} MiB budget; "
          f"reads on the main thread: {run.main_thread_reads}; read threads: {len(x['read_threads'])}")  # fmt: skip
    if run.path == "connecto":
        print(f"connecto's own slicing on the main thread per step (all reads, incl. refreshes) ms: "
              f"median {r['work_med']:.1f}  p99 {r['work_p99']:.1f}  max {r['work_max']:.1f}")  # fmt: skip
        print(f"scheduler: fetched {x['fetched']} chunks, dropped {x['dropped']}; cache evictions "
              f"{x['evictions']}, rejected {x['rejected']}; per-source fetch limit in effect "
              f"{x['source_limit']}")  # fmt: skip


def print_table(runs: list[Run], results: list[dict[str, float]]) -> None:
    print(f"\n== summary (targets, not asserted: main max <= {TARGET_MAIN_MS:g} ms at 50 ms latency; "
          f"sharp/lower <= {TARGET_RATIO:g}x; peak <= {TARGET_PEAK:g} x budget) ==")  # fmt: skip
    head = (f"{'path':9} {'lat':>4} {'main med/p99/max ms':>21} {'>16':>4} {'sharp med/p90':>14} "
            f"{'lower med':>9} {'ratio med/p90':>14} {'fetched/needed/uniq MiB':>24} {'cache/budget*':>13}")  # fmt: skip
    print(head)
    for run, r in zip(runs, results, strict=True):
        print(f"{run.path:9} {run.latency_ms:4g} {r['main_med']:6.1f}/{r['main_p99']:6.1f}/{r['main_max']:6.1f}"
              f" {r['over16']:4d} {r['sharp_med']:6.0f}/{r['sharp_p90']:6.0f}  {r['lower_med']:9.0f}"
              f" {r['ratio_med']:6.2f}/{r['ratio_p90']:6.2f}  {r['fetched_mib']:7.1f}/{r['needed_mib']:7.1f}/"
              f"{r['unique_mib']:6.1f}  {r['peak_mib']:6.0f}/{r['budget_mib']:4.0f}")  # fmt: skip
    print("* connecto: peak bytes of its chunk cache; native: napari's dask cache held at the end")


def plot(runs: list[Run], latencies: list[float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(latencies), 1, figsize=(13, 3.8 * len(latencies)), squeeze=False)
    colors = {"connecto": "tab:blue", "native": "tab:red"}
    letters = {"pan": "p", "zoom": "Z", "z": "z", "z1": "z"}
    steps = runs[0].steps
    for ax, latency in zip(axes[:, 0], latencies, strict=True):
        for run in (r for r in runs if r.latency_ms == latency):
            y = [max(1000 * s.blocking_s, 0.1) for s in run.steps]
            label = f"{run.path}: median {statistics.median(y):.0f} ms, max {max(y):.0f} ms"
            ax.plot([s.index for s in run.steps], y, "o-", ms=3, lw=1, color=colors[run.path],
                    label=label)  # fmt: skip
        for s in steps:
            if s.burst:
                ax.axvspan(s.index - 0.5, s.index + 1.5, color="0.9", lw=0)
        ax.axhline(TARGET_MAIN_MS, ls="--", color="k", lw=0.8, label="16 ms target")
        floor = runs[0].extra["floor"]["draw_ms"]
        ax.axhline(floor, ls=":", color="0.3", lw=1,
                   label=f"redraw of an in-memory image\n(no I/O): {floor:.0f} ms")  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylim(bottom=8)
        ax.set_xlim(-1, len(steps))
        ax.set_xticks([s.index for s in steps])
        ax.set_xticklabels([letters[s.kind.split(":")[-1]] for s in steps], fontsize=7)
        ax.set_ylabel("main-thread blocking per step (ms)")
        ax.set_title(f"{latency:g} ms latency per chunk read (grey: moves applied back to back)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[-1, 0].set_xlabel("step of the path (p pan 1/3 canvas, Z zoom 2x, z section step)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48, help="moves along the path")
    parser.add_argument("--latency", default="0,50", help="ms per chunk read, comma separated")
    parser.add_argument("--quick", action="store_true", help="16 steps (a smoke run)")
    parser.add_argument("--workers", type=int, default=16, help="connecto and dask threads")
    parser.add_argument("--budget-mib", type=int, default=128, help="cache budget, both paths")
    parser.add_argument("--window", default="1280x900", help="napari window size, WxH")
    parser.add_argument("--steps-table", action="store_true", help="print every step")
    parser.add_argument("--png", type=Path, default=RESULTS / "pan_main_thread.png")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once the viewer exists: full garbage collections then skip napari's "
        "start-up objects (shows how much of the worst stalls are collector pauses)",
    )
    args = parser.parse_args()
    if args.quick:
        args.steps = min(args.steps, 16)
    args.latencies = [float(v) for v in args.latency.split(",") if v.strip()]
    return args


def make_viewer(args: argparse.Namespace) -> Any:
    import dask
    import napari
    from napari.settings import get_settings

    from napari_connecto.cache.service import default_service

    default_service().configure(budget_bytes=args.budget_mib * 2**20, workers=args.workers)
    dask.config.set(scheduler="threads", num_workers=args.workers)
    width, height = (int(v) for v in args.window.split("x"))
    viewer = napari.Viewer(show=True, title="bench/pan.py")
    viewer.window.resize(width, height)
    process_for(0.5)
    load = os.getloadavg()[0]
    print(f"napari {napari.__version__}, async slicing {get_settings().experimental.async_}, "
          f"dask {dask.__version__} threads={args.workers}, {os.cpu_count()} cpus, "
          f"load average {load:.1f} at the start (other processes skew every figure)")  # fmt: skip
    return viewer


def render_floor(viewer: Any) -> tuple[tuple[int, int], dict[str, float]]:
    """Canvas size with a layer shown, and the redraw cost of an in-memory image (no I/O)."""

    rng = np.random.default_rng(0)
    plane = rng.integers(0, 255, (1, 2048, 2048), dtype=np.uint8)
    data = np.broadcast_to(plane, (SHAPE[0], 2048, 2048))  # same z range as the runs
    layer = viewer.add_image(
        [data, data[:, ::2, ::2]], multiscale=True, name="in-memory 64x2048x2048",
        scale=RESOLUTION, contrast_limits=(0.0, 255.0), axis_labels=("z", "y", "x"),
    )  # fmt: skip
    process_for(0.5)
    canvas = tuple(int(v) for v in viewer.canvas.size)
    floors = measure_floors(viewer, layer)
    viewer.layers.remove(layer)
    process_for(0.1)
    return canvas, floors  # type: ignore[return-value]


def main() -> None:
    _reexec_under_xvfb()
    args = parse_args()
    started = time.perf_counter()
    viewer = make_viewer(args)
    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()
    canvas, floors = render_floor(viewer)
    print(f"render floor (in-memory 64x2048x2048 image, no I/O, idle workers): redraw only "
          f"{floors['draw_ms']:.1f} ms, refresh+redraw {floors['refresh_ms']:.1f} ms (medians)")  # fmt: skip
    moves = make_path(args.steps, canvas)  # type: ignore[arg-type]
    kinds = [m.kind.split(":")[-1] for m in moves]
    print(f"volume {SHAPE} uint8 ({math.prod(SHAPE) / 2**30:.0f} GiB declared), {LEVELS} levels, "
          f"chunks {CHUNK}; {len(moves)} steps: {kinds.count('pan')} pans, {kinds.count('zoom')} zooms, "
          f"{sum(k.startswith('z') and k != 'zoom' for k in kinds)} z steps, "
          f"{sum(m.burst for m in moves)} moves followed at once by another (bursts); "
          f"z steps crossing a chunk boundary: {crossings(moves)}")  # fmt: skip
    print(f"connecto: budget {args.budget_mib} MiB, {args.workers} workers; native: dask cache "
          f"{args.budget_mib} MiB, {args.workers} dask threads; heartbeat {HEARTBEAT_MS} ms, "
          f"dwell >= {DWELL_S * 1000:.0f} ms per waited step; canvas (h, w) {canvas}")  # fmt: skip
    runs, results = [], []
    for latency in args.latencies:
        for kind in ("connecto", "native"):
            run = one_run(viewer, kind, latency, moves, args)
            run.extra["floor"] = floors
            runs.append(run)
            results.append(summarize(run))
            if args.steps_table:
                print_steps(run)
            print_run(run, results[-1])
            sys.stdout.flush()
        a, b = runs[-2].steps, runs[-1].steps
        same = sum(x.blocks == y.blocks for x, y in zip(a, b, strict=True) if not x.burst)
        print(f"\nboth paths drew the same chunks at {same} of {sum(not x.burst for x in a)} "
              f"waited steps ({latency:g} ms)")  # fmt: skip
    viewer.close()
    print_table(runs, results)
    plot(runs, args.latencies, args.png)
    load = os.getloadavg()
    print(f"\nplot: {args.png}\ntotal {time.perf_counter() - started:.0f} s; load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cpus")  # fmt: skip


if __name__ == "__main__":
    main()
