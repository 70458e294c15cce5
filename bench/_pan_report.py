"""bench/pan.py's report: per-run summaries, the tables and the plot of main-thread time."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from _pan_measure import PART_NAMES, PARTS, Run, chunk_bytes

TARGET_MAIN_MS = 16.0
TARGET_RATIO = 1.25
TARGET_PEAK = 1.05


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
    work = [1000 * s.work_s for s in run.steps]
    work_cpu = [1000 * s.work_cpu_s for s in run.steps]
    split = {
        f"part_{p}_{q}": _pct([1000 * s.parts.get(p, 0.0) for s in run.steps], pct)
        for p in PARTS
        for q, pct in (("med", 50), ("p99", 99), ("max", 100))
    }
    worst = max(run.steps, key=lambda s: s.blocking_s)
    needed = sum(chunk_bytes(s.blocks) for s in waited)
    union = frozenset().union(*(s.blocks for s in waited))
    return {
        "main_med": _pct(main, 50), "main_p99": _pct(main, 99), "main_max": max(main),
        "sync_max": 1000 * max(s.sync_s for s in run.steps),
        "stall_max": 1000 * max(s.stall_s for s in run.steps),
        "over16": sum(m > TARGET_MAIN_MS for m in main),
        "work_med": _pct(work, 50), "work_p99": _pct(work, 99), "work_max": _pct(work, 100),
        "cpu_med": _pct(work_cpu, 50), "cpu_p99": _pct(work_cpu, 99), "cpu_max": _pct(work_cpu, 100),
        **split, "compose_cpu_med": _pct([1000 * s.compose_cpu_s for s in run.steps], 50),
        "worst_step": worst.index, "worst_ms": 1000 * worst.blocking_s,
        **{f"worst_{p}": 1000 * worst.parts.get(p, 0.0) for p in PARTS},
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
          f"{'sharp':>7} {'lower':>7} {'refr':>4} | {'conn':>5} in window: "
          + " ".join(f"{p[:7]:>7}" for p in PARTS))  # fmt: skip
    for s in run.steps:
        sharp = "-" if s.burst else f"{1000 * s.sharp_s:7.0f}"
        lower = "-" if s.burst else f"{1000 * s.lower_s:7.0f}"
        level = "" if s.burst else str(s.level)
        chunks = "" if s.burst else str(len(s.blocks))
        print(f"{s.index:3d} {s.kind:18} {level:>3} {chunks:>6} {1000 * s.sync_s:7.1f} "
              f"{1000 * s.stall_s:7.1f} {sharp:>7} {lower:>7} {s.refreshes:4d} | "
              f"{1000 * s.work_s:5.1f}            "
              + " ".join(f"{1000 * s.parts.get(p, 0.0):7.1f}" for p in PARTS))  # fmt: skip


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
    print(
        "blocking window of each step split by who held the main thread, ms (median / p99 / max):"
    )
    for p in PARTS:
        extra = ""
        if p == "compose":
            extra = (
                f"  (main-thread CPU in it: median {r['compose_cpu_med']:.1f}; the rest is waiting)"
            )
        print(f"  {PART_NAMES[p]:34} {r[f'part_{p}_med']:6.1f} / {r[f'part_{p}_p99']:6.1f} / "
              f"{r[f'part_{p}_max']:6.1f}{extra}")  # fmt: skip
    print(f"  worst step #{r['worst_step']}: {r['worst_ms']:.1f} ms = "
          + " + ".join(f"{p} {r[f'worst_{p}']:.1f}" for p in PARTS))  # fmt: skip
    if run.path == "connecto":
        print(f"connecto's own main-thread time per step (reads, refresh ticks, settle; whole step) ms: "
              f"median {r['work_med']:.1f}  p99 {r['work_p99']:.1f}  max {r['work_max']:.1f}; "
              f"on a CPU: median {r['cpu_med']:.1f}  p99 {r['cpu_p99']:.1f}  max {r['cpu_max']:.1f}")  # fmt: skip
        print(f"scheduler: fetched {x['fetched']} chunks, dropped {x['dropped']}; cache evictions "
              f"{x['evictions']}, rejected {x['rejected']}; per-source fetch limit in effect "
              f"{x['source_limit']}")  # fmt: skip


def print_table(runs: list[Run], results: list[dict[str, float]]) -> None:
    print(f"\n== summary (targets, not asserted: main max <= {TARGET_MAIN_MS:g} ms at 50 ms latency; "
          f"sharp/lower <= {TARGET_RATIO:g}x; peak <= {TARGET_PEAK:g} x budget) ==")  # fmt: skip
    head = (f"{'path':9} {'lat':>4} {'main med/p99/max ms':>21} {'>16':>4} {'own med/p99/max':>17} {'own cpu':>17} "
            f"{'sharp med/p90':>14} "
            f"{'lower med':>9} {'ratio med/p90':>14} {'fetched/needed/uniq MiB':>24} {'cache/budget*':>13}")  # fmt: skip
    print(head)
    for run, r in zip(runs, results, strict=True):
        own = (f"{r['work_med']:5.1f}/{r['work_p99']:5.1f}/{r['work_max']:5.1f} "
               f"{r['cpu_med']:5.1f}/{r['cpu_p99']:5.1f}/{r['cpu_max']:5.1f}"
               if run.path == "connecto" else f"{'-':>17} {'-':>17}")  # fmt: skip
        print(f"{run.path:9} {run.latency_ms:4g} {r['main_med']:6.1f}/{r['main_p99']:6.1f}/{r['main_max']:6.1f}"
              f" {r['over16']:4d} {own} {r['sharp_med']:6.0f}/{r['sharp_p90']:6.0f}  {r['lower_med']:9.0f}"
              f" {r['ratio_med']:6.2f}/{r['ratio_p90']:6.2f}  {r['fetched_mib']:7.1f}/{r['needed_mib']:7.1f}/"
              f"{r['unique_mib']:6.1f}  {r['peak_mib']:6.0f}/{r['budget_mib']:4.0f}")  # fmt: skip
    print("* connecto: peak bytes of its chunk cache; native: napari's dask cache held at the end")
    print("own: connecto's own main-thread time per step (reads, refresh ticks, settle), ms; "
          "own cpu: the part of it the main thread spent on a CPU")  # fmt: skip
    print(
        f"\nblocking window per step split by part, median/p99/max ms ({', '.join(PART_NAMES.values())}):"
    )
    print(f"{'path':9} {'lat':>4} " + " ".join(f"{p:>17}" for p in PARTS))
    for run, r in zip(runs, results, strict=True):
        print(f"{run.path:9} {run.latency_ms:4g} " + " ".join(
            f"{r[f'part_{p}_med']:5.1f}/{r[f'part_{p}_p99']:5.1f}/{r[f'part_{p}_max']:5.1f}"
            for p in PARTS))  # fmt: skip


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
