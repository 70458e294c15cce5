"""Every remote format read over loopback HTTP equals the local ground truth (the contract)."""

from __future__ import annotations

import numpy as np
import pytest

import napari_connecto as nc
from napari_connecto.errors import (
    ReadOnlyError,
    RemoteError,
    ServerBusyError,
    SourceNotFoundError,
    UnknownFormatError,
)
from napari_connecto.testing.chaos import ChaosConfig
from tests.backends.contract import BackendContract, ContractCase
from tests.backends.test_n5 import em_case, seg_case  # noqa: F401 - fixtures
from tests.backends.test_precomputed import (  # noqa: F401 - fixtures
    image_template,
    image_volume,
    raw_image_case,
    segmentation_template,
    segmentation_volume,
    sharded_case,
)
from tests.backends.test_zarr import (
    ome04_labels_case,
    ome05_case,
    zarr_v2_case,
    zarr_v3_sharded_case,
)
from tests.remote.conftest import over_http


class TestPrecomputedRawOverHttp(BackendContract):
    @pytest.fixture
    def case(self, image_volume, serve) -> ContractCase:  # noqa: F811
        root = image_volume[0]
        return over_http(raw_image_case(image_volume), root, serve(root).url)


class TestPrecomputedShardedOverHttp(BackendContract):
    """Sharded compressed_segmentation: shard and minishard indexes read by Range requests."""

    @pytest.fixture
    def case(self, segmentation_volume, serve) -> ContractCase:  # noqa: F811
        root = segmentation_volume[0]
        return over_http(sharded_case(segmentation_volume), root, serve(root).url)


class TestOmeZarr05OverHttp(BackendContract):
    @pytest.fixture
    def case(self, tmp_path, serve) -> ContractCase:
        return over_http(ome05_case(tmp_path), tmp_path, serve(tmp_path).url)


class TestOmeZarr04LabelsOverHttp(BackendContract):
    @pytest.fixture
    def case(self, tmp_path, serve) -> ContractCase:
        return over_http(ome04_labels_case(tmp_path), tmp_path, serve(tmp_path).url)


class TestZarrV2OverHttp(BackendContract):
    @pytest.fixture
    def case(self, tmp_path, serve) -> ContractCase:
        return over_http(zarr_v2_case(tmp_path), tmp_path, serve(tmp_path).url)


class TestZarrV3ShardedOverHttp(BackendContract):
    """zarr v3 sharding: the shard index is read with a suffix Range request."""

    @pytest.fixture
    def case(self, tmp_path, serve) -> ContractCase:
        return over_http(zarr_v3_sharded_case(tmp_path), tmp_path, serve(tmp_path).url)


class TestN5PyramidOverHttp(BackendContract):
    @pytest.fixture
    def case(self, em_case, tmp_path, serve) -> ContractCase:  # noqa: F811
        return over_http(em_case, tmp_path, serve(tmp_path).url)


class TestN5SegmentationOverHttp(BackendContract):
    @pytest.fixture
    def case(self, seg_case, tmp_path, serve) -> ContractCase:  # noqa: F811
        return over_http(seg_case, tmp_path, serve(tmp_path).url)


def test_sharded_reads_fetch_ranges_not_whole_shards(segmentation_volume, serve):  # noqa: F811
    root, truth, keys = segmentation_volume
    server = serve(root)
    vol = nc.open_volume(f"precomputed://{server.url}")
    server.reset_counters()
    got = vol.read_voxels(0, (0, 0, 0), (8, 16, 16))  # exactly one chunk
    np.testing.assert_array_equal(got, truth[0][:8, :16, :16])
    shard_bytes = sum(p.stat().st_size for p in (root / keys[0]).glob("*.shard"))
    assert 0 < server.bytes_sent < shard_bytes / 4
    # Its minishard index is kept: a neighbouring chunk in the same minishard costs one request.
    before = server.requests
    vol.read_voxels(0, (0, 0, 0), (8, 16, 16))
    assert server.requests - before == 1


def test_remote_volumes_are_read_only(tmp_path, serve):
    case = over_http(zarr_v2_case(tmp_path), tmp_path, serve(tmp_path).url)
    with pytest.raises(ReadOnlyError, match="remote"):
        nc.open_volume(case.source, mode="r+")


def test_unknown_remote_format_and_unreachable_server_are_told_apart(tmp_path, serve):
    (tmp_path / "readme.txt").write_text("not a dataset")
    url = serve(tmp_path).url
    with pytest.raises(UnknownFormatError):
        nc.open_volume(url)
    with pytest.raises(RemoteError) as err:
        nc.open_volume("http://127.0.0.1:9/nothing")  # discard port: connection refused
    assert "127.0.0.1:9" in str(err.value)


def test_missing_dataset_and_busy_server_errors_name_the_url(tmp_path, serve):
    server = serve(tmp_path)
    with pytest.raises(SourceNotFoundError) as missing:
        nc.open_volume(f"precomputed://{server.url}/missing")
    assert "missing/info" in str(missing.value)
    server.set_chaos(ChaosConfig(rate=1.0, kinds=("503",)))
    with pytest.raises(ServerBusyError) as busy:
        nc.open_volume(f"precomputed://{server.url}/missing")
    assert busy.value.status == 503 and "missing/info" in str(busy.value)
