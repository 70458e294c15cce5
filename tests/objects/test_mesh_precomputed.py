"""Precomputed meshes: legacy written by cloud-volume, multires written per the spec."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_connecto import open_volume
from napari_connecto.errors import MetadataError, UnsafeDataError
from napari_connecto.objects.mesh import MeshDecodeError, MeshNotFoundError
from napari_connecto.objects.mesh_io import read_obj
from napari_connecto.objects.mesh_source import MeshSource, export_segment_mesh
from napari_connecto.objects.precomputed_meshes import (
    LocalKeys,
    PrecomputedMeshes,
    key_reader,
)
from napari_connecto.remote.store import HttpStore
from napari_connecto.testing.http_server import HttpFolderServer
from tests.objects._mesh_data import (
    RES_XYZ,
    SEGMENT,
    Fragment,
    box_mesh_xyz,
    write_cloudvolume_segmentation,
    write_multires,
    write_sharded_multires,
)


@pytest.fixture
def cv_dataset(tmp_path):
    return write_cloudvolume_segmentation(tmp_path / "seg")


@pytest.fixture
def server(tmp_path):
    started = []

    def start(root, **kw):
        s = HttpFolderServer(root, **kw)
        s.start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def _voxel_centre_box_nm(volume):
    """Brute-force nm box (voxel centres, z, y, x) of the segment, from the volume itself."""
    sc = volume.scales[0]
    data = volume.read_voxels(0, (0, 0, 0), sc.shape)
    idx = np.argwhere(data == SEGMENT)
    origin, res = np.array(tuple(sc.origin_nm)), np.array(tuple(sc.resolution))
    return origin + idx.min(0) * res, origin + idx.max(0) * res, res


def test_cloudvolume_legacy_mesh_lines_up_with_the_volume(cv_dataset, no_pickle):
    assert (cv_dataset.path / "mesh" / f"{SEGMENT}:0:1.gz").is_file()  # what cloud-volume writes
    volume = open_volume(str(cv_dataset.path))
    source = MeshSource.for_volume(volume)
    assert source.kind == "precomputed"
    mesh = source.get(SEGMENT)
    assert len(mesh.faces) == 12
    # same geometry as written, reversed to z, y, x and shifted by half a voxel
    expected = cv_dataset.mesh_vertices_xyz[:, ::-1] - 0.5 * np.array(RES_XYZ[::-1])
    np.testing.assert_allclose(mesh.vertices, expected, atol=1e-3)
    np.testing.assert_array_equal(mesh.faces, cv_dataset.mesh_faces)
    # the surface sits half a voxel outside the segment's voxel centres in the layer frame
    # the one-call export writes the same geometry, x, y, z
    out = export_segment_mesh(str(cv_dataset.path), SEGMENT, cv_dataset.path.parent / "7.obj")
    np.testing.assert_allclose(read_obj(out).vertices, mesh.vertices, atol=1e-3)
    lo, hi, res = _voxel_centre_box_nm(volume)
    b = mesh.bounds
    np.testing.assert_allclose(tuple(b.start), lo - res / 2, atol=1e-3)
    np.testing.assert_allclose(tuple(b.stop), hi + res / 2, atol=1e-3)


def test_legacy_mesh_over_http_matches_local(cv_dataset, server):
    local = MeshSource.for_volume(open_volume(str(cv_dataset.path))).get(SEGMENT)
    srv = server(cv_dataset.path.parent, gzip_suffix=True)
    remote_volume = open_volume(f"{srv.url}/seg")
    source = MeshSource.for_volume(remote_volume)
    assert source.kind == "precomputed"
    np.testing.assert_array_equal(source.get(SEGMENT).vertices, local.vertices)
    # and without the server's .gz help: the reader finds "<name>.gz" itself
    plain = server(cv_dataset.path.parent)
    keys = key_reader(f"{plain.url}/seg/mesh")
    assert PrecomputedMeshes.open(keys).get(SEGMENT).faces.shape == (12, 3)


def test_missing_and_corrupt_legacy_meshes(cv_dataset):
    mesh_dir = cv_dataset.path / "mesh"
    meshes = PrecomputedMeshes.open(LocalKeys(mesh_dir))
    with pytest.raises(MeshNotFoundError):
        meshes.get(999)
    (mesh_dir / "5:0").write_text("{not json")
    with pytest.raises(MeshDecodeError):
        meshes.get(5)
    (mesh_dir / "6:0").write_text(json.dumps({"fragments": ["6:0:1"]}))
    (mesh_dir / "6:0:1").write_bytes(np.array([100], "<u4").tobytes() + b"\0" * 50)
    with pytest.raises(MeshDecodeError, match="do not hold"):
        meshes.get(6)
    (mesh_dir / "8:0").write_text(json.dumps({"fragments": ["8:0:1"]}))
    (mesh_dir / "8:0:1.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(MeshDecodeError, match="gzip"):
        meshes.get(8)
    (mesh_dir / "9:0").write_text(json.dumps({"fragments": ["../../escape"]}))
    with pytest.raises(UnsafeDataError):
        meshes.get(9)
    # faces pointing past the vertices
    (mesh_dir / "10:0").write_text(json.dumps({"fragments": ["10:0:1"]}))
    bad = np.array([1], "<u4").tobytes() + np.zeros(3, "<f4").tobytes()
    (mesh_dir / "10:0:1").write_bytes(bad + np.array([0, 0, 5], "<u4").tobytes())
    with pytest.raises(MeshDecodeError, match="out of range"):
        meshes.get(10)


def _two_cube_lods():
    """LOD 0: two boxes in two chunks; LOD 1: one box spanning both (stored-model units)."""
    a = Fragment((0, 0, 0), *box_mesh_xyz(np.array([1.0, 2, 3]), np.array([9.0, 10, 11])))
    b = Fragment((1, 0, 0), *box_mesh_xyz(np.array([17.0, 2, 3]), np.array([30.0, 10, 11])))
    c = Fragment((0, 0, 0), *box_mesh_xyz(np.array([0.0, 0, 0]), np.array([32.0, 16, 16])))
    return [[a, b], [c]], (16.0, 16.0, 16.0)


TRANSFORM = [4.0, 0, 0, 100.0, 0, 4.0, 0, 200.0, 0, 0, 40.0, 300.0]


def _expected_nm(fragments):
    t = np.array(TRANSFORM).reshape(3, 4)
    xyz = np.concatenate([f.vertices for f in fragments]).astype(np.float64)
    return (xyz @ t[:, :3].T + t[:, 3])[:, ::-1]


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("bits", [10, 16])
def test_multires_draco_meshes_decode_per_spec(tmp_path, sharded, bits, no_pickle):
    lods, chunk = _two_cube_lods()
    write = write_sharded_multires if sharded else write_multires
    write(tmp_path / "mesh", 42, lods, chunk=chunk, transform=TRANSFORM, bits=bits)
    meshes = PrecomputedMeshes.open(LocalKeys(tmp_path / "mesh"))
    assert meshes.num_lods(42) == 2
    fine = meshes.get(42)
    assert fine.faces.shape == (24, 3)
    # one quantization step of a chunk, in nm (x step 16/1023*4 nm, z 16/1023*40 nm)
    tol = 16 / (2**bits - 1) * 40
    np.testing.assert_allclose(fine.vertices, _expected_nm(lods[0]), atol=tol)
    np.testing.assert_array_equal(fine.faces[12:], lods[0][1].faces + 8)
    coarse = meshes.get(42, lod=1)
    np.testing.assert_allclose(coarse.vertices, _expected_nm(lods[1]), atol=2 * tol)
    assert meshes.get(42, lod=-1).faces.shape == (12, 3)
    with pytest.raises(MeshNotFoundError):
        meshes.get(42, lod=2)
    with pytest.raises(MeshNotFoundError):
        meshes.get(43)


@pytest.mark.parametrize("sharded", [False, True])
def test_a_byte_budget_picks_the_finest_level_that_fits(tmp_path, sharded):
    lods, chunk = _two_cube_lods()
    write = write_sharded_multires if sharded else write_multires
    write(tmp_path / "mesh", 42, lods, chunk=chunk, transform=TRANSFORM)
    meshes = PrecomputedMeshes.open(LocalKeys(tmp_path / "mesh"))
    fine_bytes, coarse_bytes = meshes.lod_bytes(42)
    assert fine_bytes > coarse_bytes > 0  # two boxes' fragments vs one box's
    assert meshes.get(42, max_bytes=fine_bytes).faces.shape == (24, 3)  # fits: finest
    coarse = meshes.get(42, max_bytes=fine_bytes - 1)
    np.testing.assert_array_equal(coarse.vertices, meshes.get(42, lod=1).vertices)
    tiny = meshes.get(42, max_bytes=1)  # nothing fits: the coarsest level
    assert tiny.faces.shape == (12, 3)
    source = MeshSource(meshes)
    assert source.get(42, max_bytes=fine_bytes - 1).faces.shape == (12, 3)
    assert source.get(42).faces.shape == (24, 3)  # no budget: the finest (export)


@pytest.mark.parametrize("sharded", [False, True])
def test_multires_over_http(tmp_path, server, sharded):
    lods, chunk = _two_cube_lods()
    write = write_sharded_multires if sharded else write_multires
    write(tmp_path / "mesh", 42, lods, chunk=chunk, transform=TRANSFORM)
    srv = server(tmp_path)
    meshes = PrecomputedMeshes.open(key_reader(f"{srv.url}/mesh"))
    local = PrecomputedMeshes.open(LocalKeys(tmp_path / "mesh")).get(42)
    np.testing.assert_array_equal(meshes.get(42).vertices, local.vertices)
    assert isinstance(key_reader(srv.url).store, HttpStore)  # type: ignore[attr-defined]


def test_corrupt_multires(tmp_path):
    lods, chunk = _two_cube_lods()
    d = tmp_path / "mesh"
    write_multires(d, 42, lods, chunk=chunk, transform=TRANSFORM)
    meshes = PrecomputedMeshes.open(LocalKeys(d))
    data = (d / "42").read_bytes()
    (d / "42").write_bytes(data[: len(data) // 2])
    with pytest.raises(MeshDecodeError, match="truncated"):
        meshes.get(42)
    (d / "42").write_bytes(b"\0" * len(data))
    with pytest.raises(MeshDecodeError, match="Draco"):
        meshes.get(42)
    (d / "42.index").write_bytes((d / "42.index").read_bytes()[:-3])
    with pytest.raises(MeshDecodeError, match="manifest"):
        meshes.get(42)
    (d / "info").write_text(json.dumps({"@type": "neuroglancer_multilod_draco"}))
    with pytest.raises(MetadataError, match="vertex_quantization_bits"):
        PrecomputedMeshes.open(LocalKeys(d))
    (d / "info").write_text("[1, 2")
    with pytest.raises(MetadataError, match="not JSON"):
        PrecomputedMeshes.open(LocalKeys(d))
    (d / "info").write_text(json.dumps({"@type": "something_else"}))
    with pytest.raises(MetadataError, match="unknown mesh type"):
        PrecomputedMeshes.open(LocalKeys(d))


def test_segmentation_info_with_bad_mesh_key(cv_dataset):
    info_path = cv_dataset.path / "info"
    info = json.loads(info_path.read_text())
    info["mesh"] = "https://elsewhere.example/mesh"
    info_path.write_text(json.dumps(info))
    with pytest.raises(MetadataError, match="mesh"):
        MeshSource.for_volume(open_volume(str(cv_dataset.path)))
    del info["mesh"]
    info_path.write_text(json.dumps(info))
    assert MeshSource.for_volume(open_volume(str(cv_dataset.path))).kind == "generated"
