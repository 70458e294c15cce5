"""Two proofreaders in two processes on one store and one volume: live edits and conflicts.

Process A (:mod:`tests.proofreading._peer`) merges and paints; this process (B) polls
``sync()`` every 0.2 s as the viewer does and must see each of A's edits within a few
seconds (the latency is logged and recorded as a test property, not asserted). Then
both edit the same segment without syncing: the later edit gets
:class:`EditConflictError` and leaves nothing behind, the earlier one is intact.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_connecto.errors import EditConflictError
from napari_connecto.proofreading.proofreader import Proofreader
from tests.proofreading._lives import REPO
from tests.proofreading._support import RESOLUTION, Dataset, make_dataset, read_levels

logger = logging.getLogger(__name__)

POLL_S = 0.2
SEEN_WITHIN_S = 5.0
ANSWER_TIMEOUT_S = 60.0


class Peer:
    """Process A: a proofreader driven line by line over its stdin."""

    def __init__(self, store: str, source: str, log: Path) -> None:
        self._err = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.proofreading._peer", store, source],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        self.log = log
        hello = self._read()
        assert hello.get("ready"), hello

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(ANSWER_TIMEOUT_S)
        assert result and result[0], f"process A did not answer; see {self.log}"
        return json.loads(result[0])  # type: ignore[no-any-return]

    def call(self, **command: Any) -> dict[str, Any]:
        """Send one command, return the answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Ask A to quit and wait for it."""
        try:
            if self.proc.poll() is None:
                self.call_quit()
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._err.close()

    def call_quit(self) -> None:
        """Send ``quit`` (no answer comes)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"op": "quit"}\n')
        self.proc.stdin.close()


class Poller:
    """B's timer: ``sync()`` every :data:`POLL_S`, noting when each foreign seq arrived."""

    def __init__(self, pr: Proofreader) -> None:
        self.pr = pr
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            entries = self.pr.sync()
            now = time.time()
            with self._changed:
                for entry in entries:
                    self.seen.setdefault(entry.seq, now)
                self._changed.notify_all()
            self._stop.wait(POLL_S)

    def wait_for(self, seq: int, timeout: float) -> float | None:
        """When ``seq`` was seen (``time.time()``), or ``None`` after ``timeout``."""
        with self._changed:
            self._changed.wait_for(lambda: seq in self.seen, timeout)
            return self.seen.get(seq)

    def stop(self) -> None:
        """Stop polling (B then edits without syncing)."""
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which database the two processes share."""
    return str(request.param)


@pytest.fixture(params=["n5", "hdf5"])
def shared(
    request: pytest.FixtureRequest, tmp_path: Path, store_kind: str
) -> Iterator[tuple[Dataset, str]]:
    """A dataset and the store URL both processes open."""
    ds = make_dataset(tmp_path / "ds", request.param, seed=5)
    store = ds.store if store_kind == "sqlite" else request.getfixturevalue("postgres_url")
    yield ds, store


def _voxel_of(labels: np.ndarray, fragment: int) -> tuple[int, int, int]:
    z, y, x = np.argwhere(labels == np.uint64(fragment))[0]
    return int(z), int(y), int(x)


def _nm(voxel: tuple[int, int, int]) -> list[list[float]]:
    return [[(v + 0.5) * r for v, r in zip(voxel, RESOLUTION)]]


def _timed(poller: Poller, action: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    ack = action()
    assert "seq" in ack and ack["seq"] is not None, ack
    seen = poller.wait_for(ack["seq"], SEEN_WITHIN_S)
    assert seen is not None, f"B did not see edit {ack['seq']} within {SEEN_WITHIN_S} s"
    return ack, seen - ack["t"]


def test_live_edits_and_conflicts(
    shared: tuple[Dataset, str], tmp_path: Path, record_property: Callable[[str, Any], None]
) -> None:
    ds, store = shared
    original = ds.original()
    s, x, y, z = ds.fragments[:4]
    where = {f: _voxel_of(original, f) for f in (s, x, y, z)}
    peer = Peer(store, ds.source, tmp_path / "peer.log")
    b = Proofreader(store, ds.source, author="b", background=False, auto_sync=False)
    try:
        # -- live: B sees A's merge and paint within a few seconds ----------------------
        poller = Poller(b)
        merge, merge_latency = _timed(poller, lambda: peer.call(op="merge", keep=s, absorb=x))
        box_start, box_shape, label = [0, 0, 0], [2, 6, 6], 900_001
        paint, paint_latency = _timed(
            poller,
            lambda: peer.call(op="paint", start=box_start, shape=box_shape, label=label),
        )
        poller.stop()
        record_property("sync_latency_merge_s", round(merge_latency, 4))
        record_property("sync_latency_paint_s", round(paint_latency, 4))
        logger.warning(
            "%s/%s: B saw A's merge after %.3f s, its paint after %.3f s (polling every %.1f s)",
            ds.fmt, store.split(":")[0] if "://" in store else "sqlite", merge_latency,
            paint_latency, POLL_S,
        )  # fmt: skip
        assert int(b.segment_at(_nm(where[x]))[0]) == s
        assert int(b.fragment_at(_nm((0, 1, 1)))[0]) == label

        # -- conflict: both merge into s without syncing; A first ------------------------
        first = peer.call(op="merge", keep=s, absorb=y)
        assert first.get("seq") is not None, first
        top = b.journal.high_water()
        with pytest.raises(EditConflictError) as err:
            b.merge(s, z)
        assert first["seq"] in err.value.edits
        assert b.journal.high_water() == top, "the refused edit left a journal row"
        b.sync()
        assert int(b.segment_at(_nm(where[z]))[0]) == z, "the refused merge was stored"
        assert int(b.segment_at(_nm(where[y]))[0]) == s, "A's merge is not intact"

        # -- conflict on voxels: both paint segment s; A first -------------------------
        expected = original.copy()
        expected[0:2, 0:6, 0:6] = label
        sv = where[s]
        start = [sv[0], *(min(max(0, v - 1), n - 3) for v, n in zip(sv[1:], original.shape[1:]))]
        a_paint = peer.call(op="paint", start=start, shape=[1, 3, 3], label=900_002)
        assert a_paint.get("seq") is not None, a_paint
        expected[start[0], start[1] : start[1] + 3, start[2] : start[2] + 3] = 900_002
        top = b.journal.high_water()
        with pytest.raises(EditConflictError):
            b.paint(start, np.ones((1, 3, 3), bool), 900_003)
        assert b.journal.high_water() == top, "the refused paint left a journal row"
        assert b.commit(timeout=30.0)
        assert np.array_equal(read_levels(ds)[0], expected), "voxels are not A's edits alone"

        # -- after a sync B edits again -------------------------------------------------
        b.sync()
        assert b.merge(s, z) > top
        assert int(b.segment_at(_nm(where[z]))[0]) == s
    finally:
        b.close()
        peer.close()
    assert peer.proc.returncode == 0


@pytest.mark.parametrize("fmt", ["n5", "hdf5"])
def test_sync_shows_foreign_voxels(tmp_path: Path, fmt: str) -> None:
    """After ``sync()`` B reads the voxels A painted (B's paint ``before`` depends on it)."""
    ds = make_dataset(tmp_path / "ds", fmt, seed=6)
    peer = Peer(ds.store, ds.source, tmp_path / "peer.log")
    b = Proofreader(ds.store, ds.source, author="b", background=False, auto_sync=False)
    try:
        assert int(b.fragment_at(_nm((0, 1, 1)))[0]) != 900_001
        ack = peer.call(op="paint", start=[0, 0, 0], shape=[1, 4, 4], label=900_001)
        assert ack.get("seq") is not None, ack
        assert [e.seq for e in b.sync()] == [ack["seq"]]
        assert int(b.fragment_at(_nm((0, 1, 1)))[0]) == 900_001
    finally:
        b.close()
        peer.close()
