"""A remote dataset in a real viewer, its server faulting 30% of requests (503, stalls, cut
bodies, resets): the main thread never makes a request while streaming, every chunk that
reaches the screen is the stored one, and the settled view equals the local one."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

import napari_connecto as nc
from napari_connecto.backends.zarr import ZarrBackend
from napari_connecto.remote.http import HttpClient, HttpConfig, configure
from napari_connecto.testing.chaos import ChaosConfig
from napari_connecto.testing.http_server import HttpFolderServer
from napari_connecto.viewer.streaming import controller_for, wait_until_loaded

pytestmark = pytest.mark.gui


@pytest.fixture
def chaotic_server(ome_dataset):
    path, image, labels = ome_dataset
    configure(read_timeout=0.3, backoff_base=0.01, backoff_max=0.1, retries=16)
    server = HttpFolderServer(path.parent, ChaosConfig(rate=0.3, seed=5, stall_seconds=0.6))
    server.start()
    yield server, path
    server.stop()
    configure(**dataclasses.asdict(HttpConfig()))


@pytest.fixture
def checked_reads(monkeypatch, chaotic_server):
    """Every remote chunk read is compared with the same region read from the local files."""
    server, path = chaotic_server
    wrong: list[str] = []
    checked = []
    original = ZarrBackend.read

    def read(self, scale, start, stop):
        out = original(self, scale, start, stop)
        if self.source.is_remote:
            local_path = str(self.source).replace(f"{server.url}/", f"{path.parent}/")
            truth = nc.open_volume(local_path).backend.read(scale, start, stop)
            checked.append((scale, start))
            if not np.array_equal(out, truth):
                wrong.append(f"{self.source} scale {scale} {start}:{stop}")
        return out

    monkeypatch.setattr(ZarrBackend, "read", read)
    return wrong, checked


@pytest.fixture
def main_thread_requests(monkeypatch):
    """URLs requested from the main thread while ``record[0]`` is true."""
    record = [False]
    seen: list[str] = []
    original = HttpClient.request

    def request(self, method, url, **kw):
        if record[0] and threading.current_thread() is threading.main_thread():
            seen.append(url)
        return original(self, method, url, **kw)

    monkeypatch.setattr(HttpClient, "request", request)
    return record, seen


def _canvas(viewer):
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)


def test_remote_streaming_under_chaos_is_exact_and_off_the_main_thread(
    make_napari_viewer, chaotic_server, checked_reads, main_thread_requests
):
    server, path = chaotic_server
    wrong, checked = checked_reads
    record, seen = main_thread_requests
    viewer = make_napari_viewer(show=True)
    controller_for(viewer)
    remote = viewer.open(f"{server.url}/{path.name}", plugin="napari-connecto")
    assert [type(layer).__name__ for layer in remote] == ["Image", "Labels"]
    record[0] = True  # from here on, streaming only
    viewer.dims.set_point(0, 400.0 + 2 * 40.0)
    viewer.reset_view()
    assert wait_until_loaded(viewer, 60)
    viewer.dims.set_point(0, 400.0 + 3 * 40.0)  # another plane, new chunks under chaos
    assert wait_until_loaded(viewer, 60)
    record[0] = False
    assert seen == [], f"requests from the main thread: {seen[:3]}"
    assert checked, "no remote chunk was read"
    assert wrong == [], f"chunks differing from the stored data: {wrong[:3]}"
    assert sum(server.chaos.injected.values()) >= 3, server.chaos.injected
    shown = _canvas(viewer)
    assert shown.std() > 5
    # The same dataset opened from disk, same camera: the same pixels.
    for layer in remote:
        layer.visible = False
    viewer.open(str(path), plugin="napari-connecto")
    assert wait_until_loaded(viewer, 60)
    np.testing.assert_array_equal(_canvas(viewer), shown)
