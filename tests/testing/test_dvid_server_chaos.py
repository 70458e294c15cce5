"""Faults, throttling, persistence and the command line of the DVID test server."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from napari_connecto.testing.chaos import ChaosConfig
from napari_connecto.testing.dvid_server import DvidServer
from tests.testing.conftest import SYNAPSES, Seeded, get, post, seed

RAW = "grayscale/raw/0_1_2/32_16_16/0_0_0"  # 8192 bytes


def test_fault_503(seeded: Seeded) -> None:
    chaos = seeded.server.set_chaos(ChaosConfig(rate=1.0, kinds=("503",)))
    resp = get(seeded.api(RAW))
    assert resp.status_code == 503 and resp.headers["Content-Type"] == "text/plain"
    assert chaos.injected["503"] == 1 and chaos.requests == 1
    assert seeded.server.chaos is chaos


def test_fault_truncate(seeded: Seeded) -> None:
    seeded.server.set_chaos(ChaosConfig(rate=1.0, kinds=("truncate",)))
    resp = get(seeded.api(RAW))
    assert resp.status_code == 200  # what requests reports for a truncated body
    assert 0 < len(resp.content) < 8192
    assert seeded.server.chaos.injected["truncate"] == 1


def test_fault_reset(seeded: Seeded) -> None:
    seeded.server.set_chaos(ChaosConfig(rate=1.0, kinds=("reset",)))
    with pytest.raises(requests.ConnectionError):
        get(seeded.api(RAW))
    assert seeded.server.chaos.injected["reset"] == 1


def test_fault_stall(seeded: Seeded) -> None:
    seeded.server.set_chaos(ChaosConfig(rate=1.0, kinds=("stall",), stall_seconds=0.6))
    with pytest.raises(requests.ReadTimeout):
        requests.get(seeded.api(RAW), timeout=(2, 0.2))
    assert seeded.server.chaos.injected["stall"] == 1
    seeded.server.set_chaos(None)
    assert get(seeded.api(RAW)).status_code == 200  # the server survived the abandoned request


def test_latency_and_seeded_schedule(dvid_server: DvidServer) -> None:
    dvid_server.set_chaos(ChaosConfig(latency_seconds=0.15))
    start = time.monotonic()
    assert get(f"{dvid_server.url}/api/heartbeat").status_code == 200
    assert time.monotonic() - start >= 0.15

    def statuses() -> list[int]:
        dvid_server.set_chaos(ChaosConfig(rate=0.5, seed=7, kinds=("503",)))
        with requests.Session() as session:
            return [
                session.get(f"{dvid_server.url}/api/heartbeat", timeout=5).status_code
                for _ in range(16)
            ]

    first = statuses()
    assert first == statuses()
    assert set(first) == {200, 503}
    assert dvid_server.chaos.injected["503"] == first.count(503)


def wait_for_throttle(server: DvidServer, running: int) -> None:
    """The slot is released just after the answer is written, so poll briefly."""
    deadline = time.monotonic() + 5
    while server.throttle.running != running and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.throttle.running == running


def test_throttle_503_while_busy(seeded: Seeded) -> None:
    server = seeded.server
    server.set_chaos(ChaosConfig(latency_seconds=0.4))
    results: list[requests.Response] = []
    holder = threading.Thread(
        target=lambda: results.append(get(seeded.api(RAW + "?throttle=true")))
    )
    holder.start()
    wait_for_throttle(server, 1)
    busy = get(seeded.api(RAW + "?throttle=on"))
    assert busy.status_code == 503
    assert busy.text == "Server already running 1 throttled operations (max = 1)\n"
    assert get(seeded.api(RAW)).status_code == 200  # unthrottled requests are not limited
    holder.join()
    assert results[0].status_code == 200 and len(results[0].content) == 8192
    wait_for_throttle(server, 0)
    server.set_chaos(None)
    assert get(seeded.api("segmentation/raw/0_1_2/8_8_8/0_0_0?throttle=true")).status_code == 200
    wait_for_throttle(server, 0)


def test_python_api_persistence(tmp_path: Path, no_pickle: None) -> None:
    with DvidServer(data_dir=tmp_path) as server:
        seeded = seed(server)
        server.put_key(seeded.uuid, "segmentation_annotations", "1", b'{"name": "a"}')
        server.merge(seeded.uuid, "segmentation", 1, [3])
        server.commit(seeded.uuid, "done")
        child = server.new_version(seeded.uuid)
        server.put_key(child, "segmentation_annotations", "1", b'{"name": "b"}')
    assert (tmp_path / "snapshot" / "state.json").exists()
    assert not list(tmp_path.rglob("*.pkl"))
    with DvidServer(data_dir=tmp_path) as again:
        url = f"{again.url}/api/node"
        seg = np.frombuffer(
            get(f"{url}/{seeded.uuid}/segmentation/raw/0_1_2/128_128_64/0_0_0").content, "<u8"
        )
        expected = seeded.seg.copy()
        expected[expected == 3] = 1
        np.testing.assert_array_equal(seg.reshape(expected.shape), expected)
        level1 = get(
            f"{url}/{seeded.uuid}/segmentation/raw/0_1_2/64_64_32/0_0_0?scale=1&supervoxels=true"
        )
        assert (
            len(level1.content) == 64 * 64 * 32 * 8 and np.frombuffer(level1.content, "<u8").any()
        )
        gray = get(f"{url}/{seeded.uuid}/grayscale/raw/0_1_2/96_64_32/0_0_0").content
        assert gray == seeded.gray.tobytes()
        assert get(f"{url}/{child}/segmentation_annotations/key/1").json() == {"name": "b"}
        assert get(f"{url}/{seeded.uuid}/segmentation_annotations/key/1").json() == {"name": "a"}
        assert get(f"{url}/{child}/synapses/elements/128_128_64/0_0_0").json()[0] == SYNAPSES[0]
        assert get(f"{url}/{seeded.uuid}/commit").json() == {"Locked": True}
        assert get(f"{url}/{seeded.uuid}/segmentation/maxlabel").json() == {"maxlabel": 4}
        info = get(f"{again.url}/api/repo/{seeded.uuid}/info").json()
        assert info["DAG"]["Nodes"][seeded.uuid]["Note"] == "done"
        assert info["DataInstances"]["synapses"]["Base"]["Syncs"] == ["segmentation"]
        assert post(f"{url}/{child}/newversion").status_code == 400  # child still unlocked
        assert again.branch(seeded.uuid, "after-reload") not in (seeded.uuid, child)


def _launch(data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_connecto.testing.dvid_server",
            "--port",
            "0",
            "--data",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("DVID test server at http://127.0.0.1:"), line
    return proc, line.rsplit(" ", 1)[1].strip()


def test_command_line_serves_and_persists(tmp_path: Path) -> None:
    proc, url = _launch(tmp_path)
    try:
        assert get(f"{url}/api/heartbeat").text == "OK"
        root = post(f"{url}/api/repos", json={"alias": "cli"}).json()["root"]
        post(f"{url}/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"})
        assert post(f"{url}/api/node/{root}/kv/key/k", data=b"value").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    proc, url = _launch(tmp_path)
    try:
        assert get(f"{url}/api/node/{root}/kv/key/k").content == b"value"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
