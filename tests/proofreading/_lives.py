"""Running writer processes, killing them, and checking what a crash left (kill tests)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.proofreading._model import Model, check_model
from tests.proofreading._support import (
    Dataset,
    check_store_rows,
    check_volume,
    integrity_ok,
    parse_lines,
    replay_journal,
    scan_files,
    volume_key,
)

REPO = Path(__file__).resolve().parents[2]
LIFE_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How one writer life runs and dies."""

    seed: int
    steps: int = 200
    background: bool = False
    kill_at: str | None = None
    """A kill-point label (the writer kills itself there)."""
    kill_after: int = 1
    """... on the N-th time it is reached."""
    delay: float | None = None
    """Or SIGKILL from outside this many seconds after READY (after the spawn if ``early``)."""
    early: bool = False


@dataclass
class Tally:
    """What the lives of a test did."""

    kills: Counter[str] = field(default_factory=Counter)
    survived: Counter[str] = field(default_factory=Counter)
    edits: int = 0
    temp_files: int = 0
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        """Sum another tally into this one."""
        self.kills.update(other.kills)
        self.survived.update(other.survived)
        self.edits += other.edits
        self.temp_files += other.temp_files
        self.seconds += other.seconds


def run_life(ds: Dataset, plan: Plan, log: Path) -> tuple[str, bool]:
    """Run the writer once; return its stdout and whether it died by SIGKILL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAPARI_CONNECTO_KILL")}
    if plan.kill_at:
        env["NAPARI_CONNECTO_KILL_AT"] = plan.kill_at
        env["NAPARI_CONNECTO_KILL_AFTER"] = str(plan.kill_after)
    cmd = [sys.executable, "-m", "tests.proofreading._writer", str(Path(ds.root) / "dataset.json"),
           "--seed", str(plan.seed), "--steps", str(plan.steps)]  # fmt: skip
    if plan.background:
        cmd.append("--background")
    chunks: list[bytes] = []
    ready = threading.Event()
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for raw in iter(stdout.readline, b""):
                chunks.append(raw)
                if raw.startswith(b"READY"):
                    ready.set()
            ready.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        if plan.delay is not None:
            if not plan.early:
                ready.wait(LIFE_TIMEOUT_S)
            time.sleep(plan.delay)
            proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(LIFE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"writer hung; see {log}") from None
        reader.join(10)
    text = b"".join(chunks).decode()
    killed = proc.returncode == -signal.SIGKILL
    if not killed:
        assert proc.returncode == 0, f"writer failed ({proc.returncode}); see {log}"
        assert text.endswith("DONE\n"), text[-200:]
    return text, killed


def recover_and_check(ds: Dataset, model: Model) -> int:
    """Recover a crashed dataset in place and check everything; return its temporary files.

    Recovery is opening a :class:`Proofreader` (pending write-backs replayed, in this
    process, ``background=False``).
    """
    from napari_connecto.proofreading.proofreader import Proofreader

    temporary, stray = scan_files(ds)
    assert not stray, f"unknown files after the kill: {stray}"
    integrity_ok(ds)
    pr = Proofreader(ds.store, ds.source, author="checker", background=False)
    try:
        assert pr.pending() == 0
    finally:
        pr.close()
    integrity_ok(ds)
    replay = replay_journal(ds)
    check_store_rows(ds, replay)
    finest = check_volume(ds, replay)
    check_model(ds, model, replay, finest)
    _, stray = scan_files(ds)
    assert not stray, f"unknown files after recovery: {stray}"
    return len(temporary)


def run_chain(ds: Dataset, plans: list[Plan], label: str) -> Tally:
    """Lives one after the other on one dataset, each continuing what the last left.

    After each life the crashed state is copied aside, recovered and checked in place,
    then put back: the next life starts from the crash and recovers it itself (and may
    be killed while doing so).
    """
    tally = Tally()
    model = Model(ds.original().copy(), volume_key(ds))
    root = Path(ds.root)
    log = root.parent / f"{root.name}.stderr.log"
    for plan in plans:
        started = time.perf_counter()
        text, killed = run_life(ds, plan, log)
        tally.seconds += time.perf_counter() - started
        (tally.kills if killed else tally.survived)[label] += 1
        before = model.edits
        model.feed(ds, parse_lines(text))
        tally.edits += model.edits - before
        crashed = root.with_name(root.name + ".crashed")
        shutil.copytree(root, crashed, symlinks=True)
        try:
            tally.temp_files += recover_and_check(ds, model)
        except AssertionError as exc:
            raise AssertionError(f"{ds.fmt} {plan}: {exc}") from exc
        shutil.rmtree(root)
        crashed.rename(root)
    return tally


def summary(tally: Tally) -> dict[str, Any]:
    """A printable summary."""
    return {
        "kills": dict(tally.kills),
        "survived": dict(tally.survived),
        "edits": tally.edits,
        "temp_files_left": tally.temp_files,
    }
