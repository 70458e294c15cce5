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

Where the main thread's time goes is booked by a :class:`Ledger` (time hooks on the main
thread, exclusive of nested hooks): connecto's own code (its reads, refresh ticks, view
settling), napari's slicing and layer refresh (for the native path this includes its dask
reads), vispy's scene draw, Qt's composition of the window (the top-level window's
``UpdateRequest`` minus the GL paint; with software GL mostly waiting on the rasteriser
and the X server, see its CPU share), garbage collection, and the rest (event dispatch,
camera and dims events, the benchmark's heartbeat). Each step's blocking window (the
synchronous move, or the longest heartbeat gap after it, whichever counts) is split into
these parts; connecto's own main-thread time is also summed over the whole step.

Run: ``python bench/pan.py [--steps 48] [--latency 0,50] [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from _pan_measure import (
    CHUNK,
    HEARTBEAT_MS,
    LEDGER,
    LEVELS,
    PARTS,
    SHAPE,
    Pulse,
    Run,
    Step,
    blocks_of,
    chunk_region,
)
from _pan_report import (
    plot,
    print_run,
    print_steps,
    print_table,
    summarize,
)

RESOLUTION = (40.0, 4.0, 4.0)
ZOOM0 = 0.2
"""Camera zoom (screen px per nm) of the finest view: 1.25 level-0 voxels per screen pixel."""
ZOOM_STEPS = 3
"""Zoom range: ZOOM0 / 2**k for k in 0..ZOOM_STEPS (levels 0..3)."""
DWELL_S = 0.25
"""Least time spent at each view that is waited for (lets the debounced prefetch run)."""
SHARP_TIMEOUT_S = 20.0
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


def apply_view(viewer: Any, old: View | None, new: View) -> None:
    camera = viewer.scene.camera
    if old is None or (old.cy, old.cx) != (new.cy, new.cx):
        camera.center = (new.cy, new.cx)
    if old is None or old.zoom != new.zoom:
        camera.zoom = new.zoom
    if old is None or old.z != new.z:
        viewer.dims.set_current_step(0, new.z)


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
        t0 = time.perf_counter()
        apply_view(viewer, previous, move.view)
        QApplication.processEvents()
        t1 = time.perf_counter()
        previous = move.view
        step = Step(i, move.kind, move.burst, t1 - t0)
        steps.append(step)
        if move.burst:
            step.work_s, step.work_cpu_s = LEDGER.total("connecto", t0, t1)
            step.parts, step.compose_cpu_s = LEDGER.window(t0, t1)
            continue
        pulse.run(t0, path.is_sharp, DWELL_S, SHARP_TIMEOUT_S)
        step.stall_s = pulse.stall
        step.work_s, step.work_cpu_s = LEDGER.total("connecto", t0, time.perf_counter())
        window = (t0, t1) if step.sync_s >= step.stall_s else pulse.gap_window
        step.parts, step.compose_cpu_s = LEDGER.window(*window)
        if isinstance(path, NativePath):
            step.sharp_s = max(t1, path.last_slice) - t0
        elif pulse.done_at is not None:
            step.sharp_s = max(pulse.done_at, t1) - t0
        step.blocks = path.visible_blocks()
        step.level = int(path.layer.data_level)
        step.refreshes = path.refreshes() - refreshes
    return steps


def measure_floors(viewer: Any, layer: Any) -> dict[str, float]:
    """Main-thread cost of a redraw only, and of a refresh (slice + redraw), all data at hand."""
    from qtpy.QtWidgets import QApplication

    camera = viewer.scene.camera
    draws, refreshes, split = [], [], []
    for i in range(16):
        if i == 4:  # the first redraws warm up (shaders, caches)
            draws, refreshes, split = [], [], []
        cy, cx = camera.center[-2:]
        t0 = time.perf_counter()
        camera.center = (cy, cx + (0.01 if i % 2 else -0.01))
        QApplication.processEvents()
        draws.append(time.perf_counter() - t0)
        split.append(LEDGER.window(t0, time.perf_counter())[0])
        t0 = time.perf_counter()
        layer.refresh(thumbnail=False, extent=False, highlight=False)
        QApplication.processEvents()
        refreshes.append(time.perf_counter() - t0)
    return {
        "draw_ms": 1000 * statistics.median(draws),
        "refresh_ms": 1000 * statistics.median(refreshes),
        **{f"draw_{p}_ms": 1000 * statistics.median(d[p] for d in split) for p in PARTS},
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
    LEDGER.records.clear()
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
        gc.collect()
        gc.freeze()
    hooks = LEDGER.install(viewer)
    canvas, floors = render_floor(viewer)
    print(f"render floor (in-memory 64x2048x2048 image, no I/O, idle workers): redraw only "
          f"{floors['draw_ms']:.1f} ms, refresh+redraw {floors['refresh_ms']:.1f} ms (medians); "
          "redraw split: " + ", ".join(f"{p} {floors[f'draw_{p}_ms']:.1f}" for p in PARTS))  # fmt: skip
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
    del hooks
    print_table(runs, results)
    plot(runs, args.latencies, args.png)
    load = os.getloadavg()
    print(f"\nplot: {args.png}\ntotal {time.perf_counter() - started:.0f} s; load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cpus")  # fmt: skip


if __name__ == "__main__":
    main()
