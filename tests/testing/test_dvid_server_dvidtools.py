"""Fidelity of the DVID test server against an independent client: ``dvidtools`` (``import dvid``).

Every call passes ``server=`` and ``node=`` explicitly so no test depends on
``dvid.setup`` globals.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from napari_connecto.testing.dvid_server import DvidServer
from tests.testing.conftest import Seeded, seed

dvid = pytest.importorskip("dvid")

SWC = '# {"mutation id": 5}\n1 0 100 120 80 5 -1\n2 0 110 120 80 5 1\n'
OBJ = "v 0 0 0\nv 8 0 0\nv 0 8 0\nv 0 0 8\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"


def ngmesh() -> bytes:
    vertices = np.array([[0, 0, 0], [8, 0, 0], [0, 8, 0], [0, 0, 8]], np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.uint32)
    return struct.pack("<I", len(vertices)) + vertices.tobytes() + faces.tobytes()


@pytest.fixture(scope="module")
def world() -> Iterator[Seeded]:
    """The standard repo plus the instances dvidtools expects by name."""
    with DvidServer() as server:
        s = seed(server)
        u = s.uuid
        for name in ("segmentation_meshes", "segmentation_meshes_mutid", "segmentation_skeletons"):
            server.create_instance(u, "keyvalue", name)
        for name in ("rois", "roi_data", "bookmarks"):
            server.create_instance(u, "keyvalue", name)
        server.create_instance(u, "annotation", "segmentation_todo")
        server.put_key(u, "segmentation_meshes", "3.ngmesh", ngmesh())
        server.put_key(u, "segmentation_meshes_mutid", "3", b"7")
        server.put_key(u, "segmentation_skeletons", "3_swc", SWC)
        server.put_key(u, "rois", "LH", b'{"->": {"key": "lh.obj"}}')
        server.put_key(u, "rois", "AL", b"{}")
        server.put_key(u, "roi_data", "lh.obj", OBJ)
        server.put_key(u, "bookmarks", "20_20_30", b'{"checked": true}')
        server.put_key(u, "bookmarks", "22_21_31", b'{"checked": false}')
        server.put_elements(
            u,
            "segmentation_todo",
            [{"Pos": [70, 12, 12], "Kind": "Note", "Prop": {"action": "split"}}],
        )
        yield s


def kw(s: Seeded, node: str | None = None) -> dict[str, str]:
    return {"server": s.url, "node": node or s.uuid}


def test_repo_listing_and_master(world: Seeded) -> None:
    projects = dvid.list_projects(server=world.url)
    assert list(projects["Root"]) == [world.uuid]
    assert list(projects["Alias"]) == ["test"]
    assert dvid.get_master_node(world.uuid, server=world.url) == world.uuid
    assert dvid.get_branch_history(world.uuid, server=world.url) == [world.uuid]


def test_segmentation_info(world: Seeded) -> None:
    info = dvid.get_segmentation_info(world.url, world.uuid)
    assert info["Base"]["TypeName"] == "labelmap"
    ext = info["Extended"]
    assert ext["BlockSize"] == [64, 64, 64] and ext["VoxelSize"] == [8, 8, 8]
    assert (
        ext["MaxDownresLevel"] == 2
        and ext["MinPoint"] == [0, 0, 0]
        and ext["MaxPoint"] == [127, 127, 63]
    )


def test_point_and_size_queries(world: Seeded) -> None:
    seg = world.seg
    ids = dvid.locs_to_ids(
        [[5, 5, 5], [100, 100, 5], [75, 15, 15], [8, 4, 40]], progress=False, **kw(world)
    )
    assert ids.tolist() == [1, 2, 3, 0]
    sizes = dvid.get_sizes([1, 2, 3, 4, 99], progress=False, **kw(world))
    assert sizes.tolist() == [int((seg == v).sum()) for v in (1, 2, 3, 4)] + [0]
    assert dvid.ids_exist([1, 99], progress=False, **kw(world)).tolist() == [True, False]
    assert dvid.get_sparsevol_size(3, **kw(world)) == {
        "voxels": 1000,
        "numblocks": 1,
        "minvoxel": [64, 0, 0],
        "maxvoxel": [127, 63, 63],
    }
    last = dvid.get_last_mod(2, **kw(world))
    assert last["mutation id"] >= 1_000_000_000


def _xyz_set(array: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in row) for row in np.asarray(array)}


def test_sparsevol(world: Seeded) -> None:
    seg = world.seg
    z, y, x = np.nonzero(seg == 4)
    expected = set(zip(x.tolist(), y.tolist(), z.tolist()))
    assert _xyz_set(dvid.get_sparsevol(4, scale=0, **kw(world))) == expected
    coords = dvid.get_sparsevol(3, scale=0, ret_type="COORDS", **kw(world))
    assert coords.min(axis=0).tolist() == [560, 80, 80]  # voxel (70, 10, 10) x 8 nm
    runs = dvid.get_sparsevol(3, scale=0, voxels=False, **kw(world))
    assert runs.shape == (100, 4) and set(runs[:, 3].tolist()) == {10}
    raw = dvid.get_sparsevol(3, scale=0, ret_type="RAW", **kw(world))
    assert isinstance(raw, bytes) and len(raw) == 12 + 16 * 100
    half = dvid.get_sparsevol(3, scale=1, **kw(world))
    assert _xyz_set(half) == {
        (x, y, z) for x in range(35, 40) for y in range(5, 10) for z in range(5, 10)
    }
    assert _xyz_set(dvid.get_sparsevol(2, scale="coarse", **kw(world))) == {(0, 1, 0), (1, 1, 0)}
    bounded = dvid.get_sparsevol(4, scale=0, bbox=[100, 104, 0, 1, 30, 30], **kw(world))
    assert _xyz_set(bounded) == {(x, y, 30) for x in range(100, 105) for y in range(2)}
    with pytest.raises(ValueError, match="no sparse volume"):
        dvid.get_sparsevol(4, scale=0, bbox=[0, 10, 0, 10, 0, 10], **kw(world))


def test_snap_mesh_and_position(world: Seeded) -> None:
    snapped = dvid.snap_to_body(3, [[60, 5, 5], [76, 16, 16]], **kw(world))
    assert dvid.locs_to_ids(snapped, progress=False, **kw(world)).tolist() == [3, 3]
    assert snapped[1].tolist() == [76, 16, 16]  # already inside: unchanged
    mesh = dvid.mesh_neuron(3, scale=0, progress=False, **kw(world))
    assert mesh.bounds[0][0] >= 560 - 8 and mesh.bounds[1][0] <= 640 + 8
    with pytest.warns(UserWarning):  # get_body_position tries a skeleton of body 4 first
        pos = dvid.get_body_position(4, **kw(world))
    assert dvid.locs_to_ids([pos], progress=False, **kw(world)).tolist() == [4]


def test_synapses_and_connectivity(world: Seeded) -> None:
    syn = dvid.get_synapses(1, **kw(world))
    assert sorted(map(tuple, syn["Pos"])) == [(5, 5, 5), (10, 10, 50)]
    assert set(syn.columns) == {"Pos", "Kind", "Tags", "Prop"}
    detailed = dvid.get_synapses(1, with_details=True, **kw(world))
    assert "Rels" in detailed.columns
    cn = dvid.get_connectivity(1, **kw(world))
    down = cn[cn.relation == "downstream"].set_index("bodyid")["n_synapses"].to_dict()
    up = cn[cn.relation == "upstream"].set_index("bodyid")["n_synapses"].to_dict()
    assert down == {2: 1, 3: 1} and up == {2: 1}
    conns = dvid.get_connections(1, [2, 3], **kw(world))
    assert sorted(conns["bodyid_post"].tolist()) == [2, 3]
    adj = dvid.get_adjacency([1, 2], **kw(world))
    assert adj.loc["1", "2"] == 1 and adj.loc["2", "1"] == 1


def test_keyvalue_backed_calls(world: Seeded) -> None:
    assert sorted(dvid.get_available_rois(**kw(world))) == ["AL", "LH"]
    assert dvid.get_assignment_status((20, 20, 30), **kw(world)) == {"checked": True}
    assert dvid.get_assignment_status((1, 2, 3), **kw(world)) is None
    around = dvid.get_assignment_status((21, 20, 30), window=(6, 6, 6), **kw(world))
    assert {"checked": True} in around and {"checked": False} in around
    assert dvid.has_mesh([3, 4], progress=False, **kw(world)).tolist() == [True, False]
    assert dvid.has_skeleton([3, 4], progress=False, **kw(world)).tolist() == [True, False]
    [swc] = dvid.get_skeletons(3, output="swc", progress=False, **kw(world))
    assert swc.shape[0] == 2 and swc["x"].tolist() == [100, 110] and swc.mutation_id == 5
    assert dvid.get_skeleton_mutation(3, **kw(world)) == 5
    roi = dvid.get_roi("LH", form="MESH", **kw(world))
    assert len(roi.vertices) == 4 and len(roi.faces) == 4
    [mesh] = dvid.get_meshes(3, output="trimesh", progress=False, **kw(world))
    assert mesh.mutation_id == 7 and len(mesh.faces) == 4
    todo = dvid.get_labels_in_area((64, 0, 0), (64, 64, 64), **kw(world))
    assert isinstance(todo, pd.DataFrame) and todo["Pos"].tolist() == [[70, 12, 12]]
    assert dvid.get_labels_in_area((0, 0, 0), (8, 8, 8), **kw(world)) is None


def test_annotation_edit_and_bookmarks(seeded: Seeded) -> None:
    k = kw(seeded)
    assert dvid.get_annotation(1, verbose=False, **k) == {}
    dvid.edit_annotation(1, {"name": "alpha", "status": "Traced"}, verbose=False, **k)
    dvid.edit_annotation(1, {"status": "Roughly traced"}, verbose=False, **k)
    assert dvid.get_annotation(1, **k) == {"name": "alpha", "status": "Roughly traced"}
    seeded.server.create_instance(seeded.uuid, "annotation", "bookmark_annotations")
    bookmark = {
        "Pos": [21, 22, 23],
        "Kind": "Note",
        "Tags": ["user:alice"],
        "Prop": {
            "body ID": "1",
            "comment": "c",
            "custom": "1",
            "status": "",
            "time": "",
            "type": "Other",
            "user": "alice",
        },
    }
    dvid.add_bookmarks([bookmark], **k)
    marks = dvid.get_user_bookmarks(user="alice", **k)
    assert marks["Pos"].tolist() == [[21, 22, 23]] and marks["comment"].tolist() == ["c"]
    assert dvid.get_user_bookmarks(user="bob", return_dataframe=False, **k) == []


def test_versions_and_lost_ids(seeded: Seeded) -> None:
    s = seeded.server
    s.commit(seeded.uuid)
    child = s.new_version(seeded.uuid)
    s.merge(child, "segmentation", 1, [3])
    assert dvid.get_master_node(seeded.uuid, server=seeded.url) == child
    assert dvid.get_branch_history(child, server=seeded.url) == [child, seeded.uuid]
    assert dvid.ids_exist([3], progress=False, **kw(seeded, child)).tolist() == [False]
    last_seen = dvid.find_lost_ids([3, 1], progress=False, **kw(seeded, child))
    assert last_seen.tolist() == [seeded.uuid, child]
    assert json.loads(json.dumps(dvid.get_last_mod(1, **kw(seeded, child))))["mutation id"] > 0
    updated = dvid.update_ids([3, 2], scale=1, progress=False, **kw(seeded, child))
    assert updated["new_id"].tolist() == [1, 2] and updated["confidence"].tolist()[0] == 1
