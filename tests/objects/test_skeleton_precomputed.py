"""Precomputed skeletons written by cloud-volume, read locally and over HTTP."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cloudvolume import CloudVolume
from cloudvolume import Skeleton as CvSkeleton
from cloudvolume.datasource.precomputed.sharding import (
    ShardingSpecification,
    synthesize_shard_files,
)

from napari_connecto import open_volume
from napari_connecto.errors import (
    MetadataError,
    SourceNotFoundError,
    UnsafeDataError,
    UnsupportedEncodingError,
)
from napari_connecto.objects.precomputed_skeletons import (
    SkeletonFormatError,
    open_skeletons,
    read_skeleton,
)
from napari_connecto.testing.http_server import HttpFolderServer

RES_XYZ = (4.0, 6.0, 40.0)
OFFSET_XYZ = (10, 20, 3)
SIZE_XYZ = (64, 48, 8)
BIG_ID = 2**60 + 5
NEURON_VOXEL_XYZ = (30, 25, 6)
"""A voxel (absolute precomputed coordinates) labelled 7, and a node at its centre."""


def _info(**extra) -> dict:
    return CloudVolume.create_new_info(
        num_channels=1,
        layer_type="segmentation",
        data_type="uint64",
        encoding="raw",
        resolution=list(RES_XYZ),
        voxel_offset=list(OFFSET_XYZ),
        chunk_size=[32, 32, 8],
        volume_size=list(SIZE_XYZ),
        skeletons="skeletons",
        **extra,
    )


def _skeletons() -> list[CvSkeleton]:
    """Segment 7 (a path from the centre of NEURON_VOXEL), and two random trees."""
    rng = np.random.default_rng(3)
    centre = (np.array(NEURON_VOXEL_XYZ) + 0.5) * RES_XYZ
    steps = np.array([[0, 0, 0], [8, 0, 0], [16, 6, 0], [16, 12, 40]], dtype=np.float32)
    seven = CvSkeleton(
        centre + steps,
        np.array([[0, 1], [1, 2], [2, 3]]),
        radii=np.array([12, 10, 8, 6], np.float32),
        segid=7,
        space="physical",
    )
    others = []
    for segid, n in ((3, 40), (BIG_ID, 300)):
        parents = np.array([rng.integers(0, i) for i in range(1, n)])
        others.append(
            CvSkeleton(
                rng.uniform(0, 2000, size=(n, 3)).astype(np.float32),
                np.stack([np.arange(1, n), parents], axis=1),
                radii=rng.uniform(1, 50, n).astype(np.float32),
                segid=segid,
                space="physical",
            )
        )
    return [seven, *others]


def _write_volume(root: Path) -> CloudVolume:
    vol = CloudVolume(f"file://{root}", info=_info(), progress=False)
    vol.commit_info()
    labels = np.zeros(SIZE_XYZ, dtype=np.uint64)
    labels[tuple(np.array(NEURON_VOXEL_XYZ) - OFFSET_XYZ)] = 7
    vol[:, :, :] = labels
    return vol


@pytest.fixture
def unsharded(tmp_path) -> tuple[Path, list[CvSkeleton]]:
    """A segmentation with unsharded skeletons (cloud-volume writes ``<id>.gz``)."""
    root = tmp_path / "seg"
    vol = _write_volume(root)
    vol.skeleton.meta.commit_info()
    skeletons = _skeletons()
    vol.skeleton.upload(skeletons)
    assert (root / "skeletons" / "7.gz").is_file()
    return root, skeletons


@pytest.fixture
def sharded(tmp_path) -> tuple[Path, list[CvSkeleton]]:
    """Skeletons in several shard files (murmurhash, gzip), synthesised by cloud-volume."""
    root = tmp_path / "sharded"
    vol = _write_volume(root)
    spec = ShardingSpecification(
        type="neuroglancer_uint64_sharded_v1",
        preshift_bits=0,
        hash="murmurhash3_x86_128",
        minishard_bits=2,
        shard_bits=2,
        minishard_index_encoding="gzip",
        data_encoding="gzip",
    )
    vol.skeleton.meta.info["sharding"] = spec.to_dict()
    vol.skeleton.meta.commit_info()
    skeletons = _skeletons()
    files = synthesize_shard_files(spec, {s.id: s.to_precomputed() for s in skeletons})
    for name, data in files.items():
        (root / "skeletons" / name).write_bytes(data)
    assert len(files) > 1
    again = CloudVolume(f"file://{root}", progress=False).skeleton.get(7)  # fixture is valid
    assert len(again.vertices) == 4
    return root, skeletons


@pytest.fixture
def http_root(tmp_path) -> Iterator[tuple[HttpFolderServer, Path]]:
    server = HttpFolderServer(tmp_path, gzip_suffix=True)
    server.start()
    yield server, tmp_path
    server.stop()


def _expected_zyx(skel: CvSkeleton) -> np.ndarray:
    """cloud-volume's nm x, y, z vertices in our frame: half a voxel back, reversed."""
    return (np.asarray(skel.vertices, dtype=np.float64) - 0.5 * np.array(RES_XYZ))[:, ::-1]


def _check_same(ours, theirs: CvSkeleton) -> None:
    assert ours.segment_id == int(theirs.id)
    np.testing.assert_allclose(ours.vertices, _expected_zyx(theirs), rtol=1e-6, atol=1e-3)
    assert ours.edges.tolist() == np.asarray(theirs.edges).tolist()
    np.testing.assert_array_equal(ours.radius, theirs.radius)
    assert ours.attributes["vertex_types"].dtype == np.uint8


@pytest.mark.parametrize("layout", ["unsharded", "sharded"])
def test_local_skeletons_equal_cloud_volume(request, layout) -> None:
    root, skeletons = request.getfixturevalue(layout)
    source = open_skeletons(root)
    for theirs in skeletons:
        _check_same(source.get(theirs.id), theirs)
    with pytest.raises(SourceNotFoundError, match="segment 12345"):
        source.get(12345)


@pytest.mark.parametrize("layout", ["unsharded", "sharded"])
def test_skeleton_node_lies_on_its_labelled_voxel(request, layout) -> None:
    """The node at the centre of voxel 7 maps onto that voxel's position in our frame."""
    root, _ = request.getfixturevalue(layout)
    first_node = read_skeleton(f"precomputed://{root}", 7).vertices[0]
    volume = open_volume(root)
    scale = volume.scales[0]
    index = np.array(NEURON_VOXEL_XYZ[::-1]) - OFFSET_XYZ[::-1]
    world = np.asarray(scale.origin_nm.as_tuple()) + index * np.asarray(scale.resolution.as_tuple())
    np.testing.assert_allclose(first_node, world, atol=1e-3)
    block = volume.read_voxels(0, tuple(index), tuple(index + 1))
    assert block.ravel().tolist() == [7]


@pytest.mark.parametrize("layout", ["unsharded", "sharded"])
def test_skeletons_over_http(request, http_root, layout) -> None:
    server, base = http_root
    root, skeletons = request.getfixturevalue(layout)
    url = f"{server.url}/{root.relative_to(base)}"
    source = open_skeletons(url)
    for theirs in skeletons:
        _check_same(source.get(theirs.id), theirs)
    with pytest.raises(SourceNotFoundError):
        source.get(999)


def test_transform_maps_stored_positions_to_nm(unsharded) -> None:
    """Positions stored in voxels, with a voxel-size transform, come out in nm."""
    root, _ = unsharded
    info_path = root / "skeletons" / "info"
    info = json.loads(info_path.read_text())
    info["transform"] = [4, 0, 0, 100, 0, 6, 0, 0, 0, 0, 40, 0]
    info_path.write_text(json.dumps(info))
    vertices = np.array([[1, 2, 3], [2, 2, 3]], dtype=np.float32)
    CloudVolume(f"file://{root}", progress=False).skeleton.upload(
        CvSkeleton(vertices, np.array([[0, 1]]), radii=np.ones(2, np.float32), segid=50)
    )
    sk = read_skeleton(root, 50)
    expected_xyz = vertices * [4, 6, 40] + [100, 0, 0] - 0.5 * np.array(RES_XYZ)
    np.testing.assert_allclose(sk.vertices, expected_xyz[:, ::-1])
    assert sk.path_length == pytest.approx(4.0)


def _raw_file(root: Path, segid: int) -> Path:
    path = root / "skeletons" / str(segid)
    path.write_bytes(gzip.decompress((root / "skeletons" / f"{segid}.gz").read_bytes()))
    (root / "skeletons" / f"{segid}.gz").unlink()
    return path


def test_plain_files_read_too(unsharded) -> None:
    root, skeletons = unsharded
    _raw_file(root, 3)
    _check_same(read_skeleton(root, 3), skeletons[1])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:5], "no header"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\0\0\0\0", "longer"),
        (lambda b: b[:4] + (2).to_bytes(4, "little") + b[8:], "bytes, expected"),
    ],
)
def test_truncated_or_oversized_files_are_refused(unsharded, mutate, message) -> None:
    root, _ = unsharded
    path = _raw_file(root, 7)
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(SkeletonFormatError, match=message) as info:
        read_skeleton(root, 7)
    assert str(path) in str(info.value)


def test_edge_out_of_range_and_bad_gzip_are_refused(unsharded) -> None:
    root, _ = unsharded
    path = _raw_file(root, 7)
    data = bytearray(path.read_bytes())
    data[8 + 4 * 12 : 8 + 4 * 12 + 4] = (99).to_bytes(4, "little")  # first edge -> vertex 99
    path.write_bytes(bytes(data))
    with pytest.raises(SkeletonFormatError, match="out of range"):
        read_skeleton(root, 7)
    (root / "skeletons" / "3.gz").write_bytes(b"\x1f\x8b" + b"\0" * 30)
    with pytest.raises(SkeletonFormatError, match="gzip"):
        read_skeleton(root, 3)


def _edit_info(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"transform": [1, 0, 0]}, MetadataError, "transform"),
        ({"transform": [0] * 12}, MetadataError, "transform"),
        ({"@type": "neuroglancer_legacy_mesh"}, UnsupportedEncodingError, "@type"),
        (
            {"vertex_attributes": [{"id": "radius", "data_type": "float64"}]},
            UnsupportedEncodingError,
            "data_type",
        ),
        (
            {"vertex_attributes": [{"id": "r", "data_type": "float32", "num_components": 0}]},
            MetadataError,
            "num_components",
        ),
        (
            {"sharding": {"@type": "neuroglancer_uint64_sharded_v1", "hash": "md5"}},
            MetadataError,
            "sharding",
        ),
    ],
)
def test_bad_skeleton_info_is_refused(unsharded, changes, error, field) -> None:
    root, _ = unsharded
    _edit_info(root / "skeletons" / "info", **changes)
    with pytest.raises(error) as info:
        open_skeletons(root)
    assert info.value.field.startswith(field) or field in info.value.field


def test_bad_volume_info_is_refused(unsharded) -> None:
    root, _ = unsharded
    (root / "skeletons" / "info").write_text("{not json")
    with pytest.raises(MetadataError, match="JSON"):
        open_skeletons(root)
    _edit_info(root / "info", skeletons="../../elsewhere")
    with pytest.raises(UnsafeDataError):
        open_skeletons(root)
    _edit_info(root / "info", skeletons=None)
    with pytest.raises(MetadataError, match="no skeletons"):
        open_skeletons(root)
    with pytest.raises(SourceNotFoundError):
        open_skeletons(root / "missing")
