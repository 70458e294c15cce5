"""With 30% of requests faulted (503, stalls, truncated bodies, resets), every remote read
still ends byte-identical to the ground truth, and never shows a wrong value on the way."""

from __future__ import annotations

import numpy as np
import pytest

import napari_connecto as nc
from napari_connecto.remote.http import configure, default_client
from napari_connecto.testing.chaos import ChaosConfig
from tests.backends.test_n5 import em_case, seg_case  # noqa: F401 - fixtures
from tests.backends.test_precomputed import (  # noqa: F401 - fixtures
    image_template,
    image_volume,
    raw_image_case,
    segmentation_template,
    segmentation_volume,
    sharded_case,
)
from tests.backends.test_zarr import ome05_case, zarr_v3_sharded_case
from tests.remote.conftest import FAST, over_http

CHAOS = ChaosConfig(rate=0.3, seed=7, stall_seconds=0.6)


@pytest.fixture(autouse=True)
def stall_longer_than_timeout():
    configure(**{**FAST, "read_timeout": 0.3})


def _read_everything(case, server):
    vol = nc.open_volume(case.source)  # metadata under chaos too
    for i, truth in enumerate(case.expected):
        got = vol.read_voxels(i, (0, 0, 0), truth.shape)
        np.testing.assert_array_equal(got, truth, err_msg=f"scale {i}")
    return vol


def _check(case, root, server):
    remote = over_http(case, root, server.url)
    stats_before = dict(default_client().stats)
    _read_everything(remote, server)
    injected = server.chaos.injected
    assert sum(injected.values()) >= 5, f"too few faults to mean anything: {injected}"
    assert len(injected) >= 3, injected
    assert default_client().stats["retries"] > stats_before.get("retries", 0)


def test_precomputed_raw_under_chaos(image_volume, serve):  # noqa: F811
    root = image_volume[0]
    _check(raw_image_case(image_volume), root, serve(root, CHAOS))


def test_precomputed_sharded_under_chaos(segmentation_volume, serve):  # noqa: F811
    root = segmentation_volume[0]
    _check(sharded_case(segmentation_volume), root, serve(root, CHAOS))


def test_ome_zarr_under_chaos(tmp_path, serve):
    _check(ome05_case(tmp_path), tmp_path, serve(tmp_path, CHAOS))


def test_zarr_v3_sharded_under_chaos(tmp_path, serve):
    _check(zarr_v3_sharded_case(tmp_path), tmp_path, serve(tmp_path, CHAOS))


def test_n5_under_chaos(em_case, tmp_path, serve):  # noqa: F811
    _check(em_case, tmp_path, serve(tmp_path, CHAOS))


def test_truncated_bodies_alone_never_read_as_data(image_volume, serve):  # noqa: F811
    """Every answer cut in half at first: no half chunk is ever accepted as a whole one."""
    root = image_volume[0]
    case = raw_image_case(image_volume)
    server = serve(root, ChaosConfig(rate=0.5, seed=3, kinds=("truncate",)))
    _read_everything(over_http(case, root, server.url), server)
    assert server.chaos.injected["truncate"] >= 10
