"""Marching-cubes meshes of the sample segmentation, their cache, and OBJ/PLY round trips."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto import open_volume
from napari_connecto.errors import SourceNotFoundError, UnsupportedEncodingError
from napari_connecto.objects.mesh import Mesh, MeshDecodeError, MeshNotFoundError
from napari_connecto.objects.mesh_generate import (
    MeshCache,
    choose_scale,
    generate_mesh,
    known_bounds,
    mesh_cache_dir,
)
from napari_connecto.objects.mesh_io import (
    read_mesh,
    read_obj,
    read_ply,
    write_mesh,
    write_obj,
    write_ply,
)
from napari_connecto.objects.mesh_source import MeshSource
from napari_connecto.sample import generate_sample
from napari_connecto.sample.write import write_sample

SHAPE = (8, 96, 96)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    data = generate_sample(SHAPE, seed=3)
    paths = write_sample(tmp_path_factory.mktemp("sample") / "s", data)
    return data, paths.ome_zarr / "labels" / "segmentation"


def _largest_ids(seg: np.ndarray, n: int) -> list[int]:
    ids, counts = np.unique(seg, return_counts=True)
    return [int(i) for i in ids[np.argsort(counts)[::-1][:n]]]


def test_generated_mesh_matches_segment_voxel_bounds(sample, no_pickle):
    data, labels = sample
    volume = open_volume(str(labels))
    res = np.array(data.resolution)
    for segment in _largest_ids(data.segmentation, 3):
        # blocks much smaller than the volume, so the mesh is stitched from many pieces
        mesh = generate_mesh(volume, segment, scale=0, block=(3, 20, 20))
        idx = np.argwhere(data.segmentation == segment)
        origin = np.array(tuple(volume.scales[0].origin_nm))
        lo, hi = origin + idx.min(0) * res, origin + idx.max(0) * res
        b = mesh.bounds
        np.testing.assert_allclose(tuple(b.start), lo - res / 2, atol=1e-3)
        np.testing.assert_allclose(tuple(b.stop), hi + res / 2, atol=1e-3)
        # blockwise = one piece: same surface area as meshing in a single block
        whole = generate_mesh(volume, segment, scale=0, block=(64, 256, 256))
        assert _area(mesh) == pytest.approx(_area(whole), rel=1e-6)


def _area(mesh: Mesh) -> float:
    v = mesh.vertices.astype(np.float64)[mesh.faces.astype(np.int64)]
    return float(np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum() / 2)


def test_vertices_lie_on_the_segment_boundary(sample):
    data, labels = sample
    volume = open_volume(str(labels))
    segment = _largest_ids(data.segmentation, 1)[0]
    mesh = generate_mesh(volume, segment, scale=0, block=(4, 32, 32))
    res = np.array(data.resolution)
    # vertices are half-way between a voxel of the segment and one that is not
    vox = (mesh.vertices - np.array(tuple(volume.scales[0].origin_nm))) / res
    on_edge = (np.abs(vox - np.round(vox)) > 0.25).sum(axis=1) == 1
    assert on_edge.mean() > 0.99  # (Lewiner's marching cubes adds a few cube-centre vertices)
    vox = vox[on_edge]
    lo_idx = np.floor(vox + 1e-6).astype(int)
    hi_idx = np.ceil(vox - 1e-6).astype(int)
    padded = np.pad(data.segmentation == segment, 1)
    a = padded[tuple((lo_idx + 1).T)]
    b = padded[tuple((hi_idx + 1).T)]
    assert np.all(a != b)


def test_choose_scale_respects_budget_and_missing_segment(sample):
    data, labels = sample
    volume = open_volume(str(labels))
    segment = _largest_ids(data.segmentation, 1)[0]
    assert choose_scale(volume, segment) == 0
    assert choose_scale(volume, segment, max_voxels=2000) > 0
    coarse = generate_mesh(volume, segment, max_voxels=2000)
    assert not coarse.is_empty
    with pytest.raises(MeshNotFoundError):
        generate_mesh(volume, 123456789)


def test_computed_attributes_spare_the_scan_for_the_segment(sample, tmp_path, monkeypatch):
    from napari_connecto.objects.attributes import load_or_compute

    data, labels = sample
    monkeypatch.setenv("NAPARI_CONNECTO_CACHE", str(tmp_path / "cache"))
    volume = open_volume(str(labels))
    segment = _largest_ids(data.segmentation, 4)[-1]  # not the background-sized one
    scanned = generate_mesh(volume, segment, scale=0, block=(4, 24, 24))
    assert known_bounds(volume, segment) is None  # nothing computed yet
    load_or_compute(volume)
    idx = np.argwhere(data.segmentation == segment)
    assert known_bounds(volume, segment) == (
        0,
        (tuple(idx.min(0).tolist()), tuple((idx.max(0) + 1).tolist())),
    )
    reads: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    read = volume.read_voxels

    def recording(scale, start, stop, *args, **kwargs):
        reads.append((tuple(start), tuple(stop)))
        return read(scale, start, stop, *args, **kwargs)

    monkeypatch.setattr(volume, "read_voxels", recording)
    fast = generate_mesh(volume, segment, scale=0, block=(4, 24, 24))
    np.testing.assert_array_equal(fast.vertices, scanned.vertices)
    np.testing.assert_array_equal(fast.faces, scanned.faces)
    lo, hi = idx.min(0) - 2, idx.max(0) + 3  # the box, a voxel of margin, block overlap
    assert all(np.all(np.array(a) >= lo) and np.all(np.array(b) <= hi) for a, b in reads)
    assert choose_scale(volume, segment) == 0
    with pytest.raises(MeshNotFoundError):  # not among the computed segments
        known_bounds(volume, 123456789)


def test_stale_cached_bounds_still_give_the_whole_mesh(sample, monkeypatch):
    """Attributes from before an edit by another program: the box is too small; no cut mesh."""
    from napari_connecto.objects import attribute_compute
    from napari_connecto.objects.attribute_store import AttributeStore

    data, labels = sample
    volume = open_volume(str(labels))
    segment = _largest_ids(data.segmentation, 4)[-1]
    whole = generate_mesh(volume, segment, scale=0)
    idx = np.argwhere(data.segmentation == segment)
    lo, hi = idx.min(0), idx.max(0) + 1
    mid = (lo + hi) // 2
    stale = {f"bbox_start_{a}": [int(v)] for a, v in zip("zyx", lo, strict=True)}
    stale |= {f"bbox_stop_{a}": [int(v)] for a, v in zip("zyx", np.maximum(mid, lo + 1))}
    store = AttributeStore([segment], stale)
    monkeypatch.setattr(
        attribute_compute, "cached_attributes", lambda vol, scale=0: store if scale == 0 else None
    )
    assert known_bounds(volume, segment)[0] == 0  # the stale box is used first
    again = generate_mesh(volume, segment, scale=0)
    np.testing.assert_array_equal(again.vertices, whole.vertices)
    np.testing.assert_array_equal(again.faces, whole.faces)


def test_mesh_source_generates_and_caches(sample, tmp_path, monkeypatch):
    data, labels = sample
    monkeypatch.setenv("NAPARI_CONNECTO_CACHE", str(tmp_path / "cache"))
    assert mesh_cache_dir() == tmp_path / "cache" / "meshes"
    volume = open_volume(str(labels))
    source = MeshSource.for_volume(volume)
    assert source.kind == "generated"
    segment = _largest_ids(data.segmentation, 1)[0]
    first = source.get(segment)
    files = list((tmp_path / "cache" / "meshes").rglob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "cache").rglob("*.tmp"))
    with np.load(files[0], allow_pickle=False) as npz:
        assert set(npz.files) == {"vertices", "faces", "normals"}
    again = source.get(segment)
    np.testing.assert_array_equal(again.vertices, first.vertices)
    # a corrupt cache file is dropped and the mesh regenerated
    files[0].write_bytes(b"PK\x03\x04 broken")
    np.testing.assert_array_equal(source.get(segment).faces, first.faces)
    # a new data generation is a different cache entry
    MeshSource.for_volume(volume, generation="edit-1").get(segment)
    assert len(list((tmp_path / "cache" / "meshes").rglob("*.npz"))) == 2


def test_cache_key_and_roundtrip(tmp_path):
    cache = MeshCache(tmp_path)
    mesh = Mesh.from_arrays([[0, 0, 0], [0, 0, 4], [0, 4, 0]], [[0, 1, 2]])
    assert cache.load("s", 0, 1) is None
    cache.save(mesh, "s", 0, 1)
    assert cache.path("s", 0, 1) != cache.path("s", 1, 1) != cache.path("t", 0, 1)
    np.testing.assert_array_equal(cache.load("s", 0, 1).vertices, mesh.vertices)


def _tetra() -> Mesh:
    v = np.array([[0, 0, 0], [40, 0, 0], [0, 4, 0], [0, 0, 8]], np.float32)
    return Mesh.from_arrays(v, [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])


def test_obj_and_ply_round_trip_in_xyz(tmp_path, no_pickle):
    mesh = _tetra()
    obj = write_obj(mesh, tmp_path / "m.obj", name="segment 5")
    text = obj.read_text()
    assert "nanometres" in text and "x y z" in text
    assert "v 0 0 40" in text  # z=40 nm written last (x, y, z)
    back = read_obj(obj)
    np.testing.assert_allclose(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    ply = write_ply(mesh, tmp_path / "m.ply")
    assert ply.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\ncomment")
    back = read_ply(ply)
    np.testing.assert_allclose(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    assert not list(tmp_path.glob("*.tmp"))
    for suffix in (".obj", ".PLY"):
        again = read_mesh(write_mesh(mesh, tmp_path / f"x{suffix}"))
        np.testing.assert_allclose(again.vertices, mesh.vertices)
    with pytest.raises(UnsupportedEncodingError):
        write_mesh(mesh, tmp_path / "m.stl")
    with pytest.raises(UnsupportedEncodingError):
        read_mesh(tmp_path / "m.stl")


def test_obj_round_trip_with_normals(sample, tmp_path):
    data, labels = sample
    mesh = generate_mesh(open_volume(str(labels)), _largest_ids(data.segmentation, 1)[0], 0)
    back = read_obj(write_obj(mesh, tmp_path / "n.obj"))
    np.testing.assert_allclose(back.vertices, mesh.vertices, rtol=1e-5)
    np.testing.assert_allclose(back.normals, mesh.normals, atol=1e-5)
    np.testing.assert_array_equal(back.faces, mesh.faces)


def test_bad_obj_and_ply_files(tmp_path):
    with pytest.raises(SourceNotFoundError):
        read_obj(tmp_path / "missing.obj")
    with pytest.raises(SourceNotFoundError):
        read_ply(tmp_path / "missing.ply")
    (tmp_path / "quad.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
    with pytest.raises(MeshDecodeError, match="triangles"):
        read_obj(tmp_path / "quad.obj")
    (tmp_path / "bad.obj").write_text("v 0 0 zero\n")
    with pytest.raises(MeshDecodeError, match="line 1"):
        read_obj(tmp_path / "bad.obj")
    (tmp_path / "idx.obj").write_text("v 0 0 0\nf 1 2 3\n")
    with pytest.raises(MeshDecodeError, match="out of range"):
        read_obj(tmp_path / "idx.obj")
    ply = write_ply(_tetra(), tmp_path / "t.ply")
    ply.write_bytes(ply.read_bytes()[:-5])
    with pytest.raises(MeshDecodeError, match="do not match"):
        read_ply(ply)
    (tmp_path / "a.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    with pytest.raises(MeshDecodeError, match="binary_little_endian"):
        read_ply(tmp_path / "a.ply")
    (tmp_path / "n.ply").write_bytes(b"not a ply")
    with pytest.raises(MeshDecodeError, match="not a PLY"):
        read_ply(tmp_path / "n.ply")


def test_mesh_value_object():
    a = _tetra()
    b = a.translated((100, 0, 0))
    both = Mesh.concatenate([a, b])
    assert len(both.vertices) == 8 and int(both.faces.max()) == 7
    assert tuple(both.bounds.start) == (0, 0, 0) and tuple(both.bounds.stop) == (140, 4, 8)
    assert not both.vertices.flags.writeable
    assert Mesh.concatenate([]).is_empty
    with pytest.raises(MeshDecodeError, match="faces"):
        Mesh.from_arrays([[0, 0, 0]], [[0, 1]])
    with pytest.raises(MeshDecodeError, match="non-finite"):
        Mesh.from_arrays([[0, np.nan, 0]], np.zeros((0, 3), int))
    with pytest.raises(MeshDecodeError, match="integers"):
        Mesh.from_arrays([[0, 0, 0]], [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="empty"):
        _ = Mesh.empty().bounds
