"""Fixtures for the DVID test server: a running server and a small seeded repo."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import requests

from napari_connecto.testing.dvid_server import DvidServer

T = 5  # request timeout (s)


def get(url: str, **kw) -> requests.Response:
    return requests.get(url, timeout=T, **kw)


def post(url: str, **kw) -> requests.Response:
    return requests.post(url, timeout=T, **kw)


def assert_400(resp: requests.Response, message: str) -> None:
    assert resp.status_code == 400, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert message in resp.text
    assert resp.text.endswith(f" ({requests.utils.urlparse(resp.url).path}).\n")


def assert_bad_api(resp: requests.Response, data: str, typename: str) -> None:
    path = requests.utils.urlparse(resp.url).path
    assert resp.status_code == 400
    host = requests.utils.urlparse(resp.url).netloc
    assert resp.text == (
        f'Bad API call ({path}) for data "{data}".  See API help at http://{host}/api/help/{typename}\n'
    )


@dataclass
class Seeded:
    """A running server with one repo: grayscale, segmentation, synapses, keyvalues."""

    server: DvidServer
    url: str
    uuid: str
    gray: np.ndarray
    seg: np.ndarray

    def api(self, path: str, uuid: str | None = None) -> str:
        return f"{self.url}/api/node/{uuid or self.uuid}/{path}"


SYNAPSES = [
    {
        "Pos": [5, 5, 5],
        "Kind": "PreSyn",
        "Tags": ["t1"],
        "Prop": {"conf": "0.9"},
        "Rels": [{"Rel": "PreSynTo", "To": [100, 100, 5]}, {"Rel": "PreSynTo", "To": [75, 15, 15]}],
    },
    {
        "Pos": [100, 100, 5],
        "Kind": "PostSyn",
        "Tags": [],
        "Prop": {"conf": "0.8"},
        "Rels": [{"Rel": "PostSynTo", "To": [5, 5, 5]}],
    },
    {
        "Pos": [75, 15, 15],
        "Kind": "PostSyn",
        "Tags": ["t1"],
        "Prop": {"conf": "0.7"},
        "Rels": [{"Rel": "PostSynTo", "To": [5, 5, 5]}],
    },
    {
        "Pos": [100, 100, 50],
        "Kind": "PreSyn",
        "Tags": [],
        "Prop": {"conf": "0.6"},
        "Rels": [{"Rel": "PreSynTo", "To": [10, 10, 50]}],
    },
    {
        "Pos": [10, 10, 50],
        "Kind": "PostSyn",
        "Tags": [],
        "Prop": {"conf": "0.5"},
        "Rels": [{"Rel": "PostSynTo", "To": [100, 100, 50]}],
    },
]


def make_segmentation() -> np.ndarray:
    """Supervoxels 1..4 in a 64 x 128 x 128 (z, y, x) volume."""
    seg = np.zeros((64, 128, 128), np.uint64)
    seg[:, :64, :64] = 1
    seg[:, 64:, :] = 2
    seg[10:20, 10:20, 70:80] = 3
    seg[30:40, 0:32, 100:120] = 4
    seg[40:41, 3:5, 7:13] = 0  # a hole in 1
    return seg


def seed(server: DvidServer) -> Seeded:
    """Create the standard test repo on a running server."""
    uuid = server.create_repo("test", "seeded by tests/testing/conftest.py")
    server.create_instance(uuid, "uint8blk", "grayscale")
    server.create_instance(uuid, "labelmap", "segmentation", MaxDownresLevel=2)
    server.create_instance(uuid, "annotation", "synapses", sync="segmentation")
    server.create_instance(uuid, "keyvalue", "segmentation_annotations")
    gray = np.random.default_rng(0).integers(0, 256, (32, 64, 96), dtype=np.uint8)
    seg = make_segmentation()
    server.put_voxels(uuid, "grayscale", (0, 0, 0), gray)
    server.put_voxels(uuid, "segmentation", (0, 0, 0), seg)
    server.put_elements(uuid, "synapses", SYNAPSES)
    return Seeded(server, server.url, uuid, gray, seg)


@pytest.fixture
def dvid_server() -> Iterator[DvidServer]:
    """A fresh, empty DVID test server."""
    with DvidServer() as server:
        yield server


@pytest.fixture
def seeded(dvid_server: DvidServer) -> Seeded:
    """A fresh server with the standard test repo (safe to mutate)."""
    return seed(dvid_server)


@pytest.fixture(scope="module")
def seeded_module() -> Iterator[Seeded]:
    """One seeded server shared by a module's read-only tests."""
    with DvidServer() as server:
        yield seed(server)
