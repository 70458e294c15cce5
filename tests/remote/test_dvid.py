"""DVID through napari-connecto's client and backend, against the loopback DVID server."""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_connecto as nc
from napari_connecto.dvid import DvidClient, parse_dvid
from napari_connecto.errors import (
    ChunkError,
    ReadOnlyError,
    RegionError,
    RemoteError,
    ServerBusyError,
    SourceNotFoundError,
)
from napari_connecto.testing.chaos import ChaosConfig
from napari_connecto.testing.dvid_server import DvidServer

SHAPE = (64, 128, 192)  # z, y, x: whole 64^3 labelmap blocks, 32^3 grayscale blocks
OFFSET = (256, 0, 512)  # aligned to 64 * 2**2: every level starts on a block


def _grayscale() -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    return ((x * 3 + y * 5 + z * 7) % 251).astype(np.uint8)


def _supervoxels() -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    ids = (z // 32 * 100 + y // 32 * 10 + x // 48 + 1).astype(np.uint64)
    ids[:, :, :8] = 0
    ids[0, 0, 10] = 2**53 + 1  # exact beyond float64
    return ids


def _mode_down(a: np.ndarray) -> np.ndarray:
    """Reference 2x downsampling of labels (the most frequent label of each 2x2x2 cube)."""
    z, y, x = (s // 2 for s in a.shape)
    cubes = a[: 2 * z, : 2 * y, : 2 * x].reshape(z, 2, y, 2, x, 2).transpose(0, 2, 4, 1, 3, 5)
    flat = cubes.reshape(z, y, x, 8)
    out = np.empty((z, y, x), dtype=a.dtype)
    for idx in np.ndindex(z, y, x):
        values, counts = np.unique(flat[idx], return_counts=True)
        out[idx] = values[np.argmax(counts)]
    return out


@pytest.fixture(scope="module")
def dvid():
    with DvidServer() as server:
        uuid = server.create_repo("fib", "a test repository")
        server.create_instance(uuid, "uint8blk", "grayscale", VoxelSize="8,8,8")
        server.create_instance(uuid, "labelmap", "segmentation", MaxDownresLevel=2)
        server.create_instance(uuid, "keyvalue", "bookmarks")
        server.create_instance(uuid, "annotation", "synapses", sync="segmentation")
        server.put_voxels(uuid, "grayscale", OFFSET, _grayscale())
        server.put_voxels(uuid, "segmentation", OFFSET, _supervoxels())
        server.put_elements(uuid, "synapses", _elements())
        server.commit(uuid, note="first import")
        child = server.new_version(uuid)
        yield server, uuid, child


def _elements() -> list[dict]:
    pre = [OFFSET[2] + 20, OFFSET[1] + 30, OFFSET[0] + 5]  # x, y, z
    posts = [
        [OFFSET[2] + 60, OFFSET[1] + 30, OFFSET[0] + 5],
        [OFFSET[2] + 20, OFFSET[1] + 70, OFFSET[0] + 6],
    ]
    elements = [
        {
            "Pos": pre,
            "Kind": "PreSyn",
            "Tags": ["auto"],
            "Prop": {"conf": "0.9"},
            "Rels": [{"Rel": "PreSynTo", "To": p} for p in posts],
        },
    ]
    elements += [
        {
            "Pos": p,
            "Kind": "PostSyn",
            "Tags": [],
            "Prop": {},
            "Rels": [{"Rel": "PostSynTo", "To": pre}],
        }
        for p in posts
    ]
    return elements


def _url(server, uuid, instance, query=""):
    return f"dvid://{server.url.removeprefix('http://')}/{uuid}/{instance}{query}"


def test_address_parsing():
    a = parse_dvid("emdata:8000/abc123:master/segmentation?supervoxels=true")
    assert (a.server, a.uuid, a.instance, a.supervoxels) == (
        "http://emdata:8000",
        "abc123:master",
        "segmentation",
        True,
    )
    assert parse_dvid("https://host/u").server == "https://host"
    with pytest.raises(ValueError, match="host"):
        parse_dvid("")


def test_repo_dag_and_instances_are_listed(dvid):
    server, root, child = dvid
    client = DvidClient(server.url)
    repos = client.repos()
    repo = repos[root]
    assert repo["Alias"] == "fib"
    nodes = repo["DAG"]["Nodes"]
    assert set(nodes) == {root, child}
    assert nodes[root]["Locked"] and nodes[root]["Note"] == "first import"
    assert not nodes[child]["Locked"]
    assert nodes[child]["Parents"] == [nodes[root]["VersionID"]]
    types = {n: i["Base"]["TypeName"] for n, i in repo["DataInstances"].items()}
    assert types == {
        "grayscale": "uint8blk",
        "segmentation": "labelmap",
        "bookmarks": "keyvalue",
        "synapses": "annotation",
    }
    entries = {e.name: e.kind for e in nc.list_contents(_url(server, child, "").rstrip("/"))}
    assert entries == {"grayscale": "image", "segmentation": "segmentation", "synapses": "points"}
    assert client.is_locked(root) and not client.is_locked(child)


def test_grayscale_reads_voxel_for_voxel(dvid):
    server, root, child = dvid
    vol = nc.open_volume(_url(server, child, "grayscale"))  # the child sees its parent's data
    assert vol.kind == "image" and vol.format == "dvid"
    sc = vol.scales[0]
    assert sc.shape == SHAPE and sc.voxel_offset == OFFSET
    assert sc.resolution.as_tuple() == (8.0, 8.0, 8.0)
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), SHAPE), _grayscale())
    np.testing.assert_array_equal(
        vol.read_voxels(0, (3, 5, 7), (9, 50, 77)), _grayscale()[3:9, 5:50, 7:77]
    )


def test_labelmap_reads_at_every_scale(dvid):
    server, root, child = dvid
    vol = nc.open_volume(_url(server, root, "segmentation"))
    assert vol.kind == "segmentation" and len(vol.scales) == 3
    truth = _supervoxels()
    got = vol.read_voxels(0, (0, 0, 0), SHAPE)
    assert got.dtype == np.uint64 and int(got[0, 0, 10]) == 2**53 + 1
    np.testing.assert_array_equal(got, truth)
    down = truth
    for k in (1, 2):
        down = _mode_down(down)
        assert vol.scales[k].resolution.as_tuple() == (8.0 * 2**k,) * 3
        np.testing.assert_array_equal(
            vol.read_voxels(k, (0, 0, 0), down.shape), down, err_msg=f"scale {k}"
        )


def test_merge_shows_in_labels_but_not_supervoxels(dvid):
    server, root, child = dvid
    grand = child  # the child node is open: it can be edited
    client = DvidClient(server.url)
    client.merge(grand, "segmentation", 1, [2])
    labels = nc.open_volume(_url(server, grand, "segmentation")).read_voxels(0, (0, 0, 0), SHAPE)
    sv = nc.open_volume(_url(server, grand, "segmentation", "?supervoxels=true")).read_voxels(
        0, (0, 0, 0), SHAPE
    )
    truth = _supervoxels()
    np.testing.assert_array_equal(sv, truth)
    expected = truth.copy()
    expected[expected == 2] = 1
    np.testing.assert_array_equal(labels, expected)
    # The committed parent is untouched.
    parent = nc.open_volume(_url(server, root, "segmentation")).read_voxels(0, (0, 0, 0), SHAPE)
    np.testing.assert_array_equal(parent, truth)


def test_keyvalue_round_trip(dvid):
    server, root, child = dvid
    client = DvidClient(server.url)
    value = json.dumps({"note": "check this merge", "position": [1, 2, 3]}).encode()
    client.put_value(child, "bookmarks", "bookmark-1", value)
    assert client.get_value(child, "bookmarks", "bookmark-1") == value
    assert "bookmark-1" in client.keys(child, "bookmarks")
    assert client.get_value(root, "bookmarks", "bookmark-1") is None  # not in the parent
    client.delete_value(child, "bookmarks", "bookmark-1")
    assert client.get_value(child, "bookmarks", "bookmark-1") is None


def test_annotations_become_points_with_partners(dvid):
    server, root, child = dvid
    points = nc.open_points(_url(server, root, "synapses"))
    assert len(points.positions_nm) == 3
    features = points.features
    pre = features[features["kind"] == "PreSyn"].iloc[0]
    assert pre["n_partners"] == 2 and "auto" in pre["tags"]
    posts = features[features["kind"] == "PostSyn"]
    pre_xyz = f"{OFFSET[2] + 20}_{OFFSET[1] + 30}_{OFFSET[0] + 5}"
    assert (posts["partners"] == pre_xyz).all()
    i = int(np.flatnonzero(features["kind"] == "PreSyn")[0])
    np.testing.assert_allclose(
        points.positions_nm[i], np.array([OFFSET[0] + 5, OFFSET[1] + 30, OFFSET[2] + 20]) * 8.0
    )


def test_writes_to_an_open_node_show_in_its_child_only(dvid):
    server, root, child = dvid
    vol = nc.open_volume(_url(server, child, "grayscale"), mode="r+")
    block = np.full((32, 32, 32), 7, dtype=np.uint8)
    vol.write(block, at=(32, 32, 32))  # block-aligned in DVID coordinates (offset is aligned)
    again = nc.open_volume(_url(server, child, "grayscale")).read_voxels(
        0, (32, 32, 32), (64, 64, 64)
    )
    assert (again == 7).all()
    server.commit(child, note="painted")
    grandchild = server.new_version(child)
    seen = nc.open_volume(_url(server, grandchild, "grayscale")).read_voxels(
        0, (32, 32, 32), (64, 64, 64)
    )
    assert (seen == 7).all()
    parent = nc.open_volume(_url(server, root, "grayscale")).read_voxels(
        0, (32, 32, 32), (64, 64, 64)
    )
    np.testing.assert_array_equal(parent, _grayscale()[32:64, 32:64, 32:64])


def test_locked_nodes_refuse_writes_clearly(dvid):
    server, root, child = dvid
    with pytest.raises(ReadOnlyError, match="locked"):
        nc.open_volume(_url(server, root, "grayscale"), mode="r+")
    client = DvidClient(server.url)
    with pytest.raises(ReadOnlyError, match="locked"):
        client.write_voxels(
            root, "grayscale", OFFSET, np.zeros((32, 32, 32), np.uint8), dtype=np.dtype(np.uint8)
        )


def test_unaligned_writes_are_refused_before_sending(dvid):
    server, root, child = dvid
    fresh = server.branch(root, "scratch")
    vol = nc.open_volume(_url(server, fresh, "grayscale"), mode="r+")
    with pytest.raises(RegionError, match="aligned"):
        vol.write(np.zeros((10, 32, 32), np.uint8), at=(0, 0, 0))


def test_unknown_node_or_instance_is_not_found(dvid):
    server, root, child = dvid
    with pytest.raises(SourceNotFoundError):
        nc.open_volume(_url(server, root, "nothing"))
    with pytest.raises(SourceNotFoundError):
        nc.open_volume(_url(server, "ffffffff", "grayscale"))


def test_busy_server_is_reported_as_busy(dvid):
    server, root, child = dvid
    vol = nc.open_volume(_url(server, root, "segmentation", "?throttle=true"))
    server.set_chaos(ChaosConfig(rate=1.0, kinds=("503",)))
    try:
        with pytest.raises(ChunkError, match="server busy"):
            vol.read_voxels(0, (0, 0, 0), (64, 64, 64))
        with pytest.raises(ServerBusyError):
            DvidClient(server.url).server_info()
    finally:
        server.set_chaos(None)


def test_chaos_reads_end_byte_identical(dvid):
    server, root, child = dvid
    chaos = server.set_chaos(ChaosConfig(rate=0.3, seed=11, stall_seconds=0.6))
    try:
        for name, truth in (("segmentation", _supervoxels()), ("grayscale", _grayscale())):
            vol = nc.open_volume(_url(server, root, name))
            for start in np.ndindex(SHAPE[0] // 32, SHAPE[1] // 32, SHAPE[2] // 32):
                lo = tuple(32 * s for s in start)
                hi = tuple(a + 32 for a in lo)
                got = vol.read_voxels(0, lo, hi)
                np.testing.assert_array_equal(
                    got, truth[tuple(slice(a, b) for a, b in zip(lo, hi))]
                )
        assert sum(chaos.injected.values()) >= 5, (chaos.requests, chaos.injected, chaos.config)
    finally:
        server.set_chaos(None)


def test_remote_errors_keep_dvids_message(dvid):
    server, root, child = dvid
    client = DvidClient(server.url)
    with pytest.raises(RemoteError) as err:
        client.new_version(child)  # the child is not committed
    assert err.value.status == 400 and err.value.problem


def test_annotations_import_into_the_store_with_neurons_from_the_labelmap(dvid, tmp_path):
    from napari_connecto import AnnotationStore, read_annotations
    from napari_connecto.cli import main

    server, root, child = dvid
    source = _url(server, root, "synapses")
    batch = read_annotations(source)
    synapses = batch.synapses
    assert len(synapses) == 2  # one PreSyn with two PostSyn partners
    truth = _supervoxels()
    pre_voxel = (5, 30, 20)  # z, y, x relative to OFFSET
    assert set(synapses["pre_id"].tolist()) == {int(truth[pre_voxel])}
    posts = {int(truth[5, 30, 60]), int(truth[6, 70, 20])}
    assert set(synapses["post_id"].tolist()) == posts
    np.testing.assert_allclose(
        synapses[["pre_z", "pre_y", "pre_x"]].to_numpy()[0],
        (np.array(pre_voxel) + OFFSET) * 8.0,
    )
    assert synapses["confidence"].tolist() == [0.9, 0.9]
    db = tmp_path / "annotations.db"
    assert main(["import", source, "--db", str(db)]) == 0
    assert main(["import", source, "--db", str(db)]) == 0  # again: nothing new
    with AnnotationStore.open(str(db)) as store:
        assert store.count_synapses() == 2
        assert set(store.synapses([int(truth[pre_voxel])], pre=True)["post_id"].tolist()) == posts


def test_proofreading_refuses_the_seeded_split_of_a_server_agglomeration(dvid, tmp_path):
    """The seeded split needs the local agglomeration; DVID keeps its own.

    (Merge, cleave and paint go to the server: tests/remote/test_dvid_proofreading.py.)
    """
    from napari_connecto.errors import EditError
    from napari_connecto.proofreading.proofreader import Proofreader

    server, _root, child = dvid
    volume = nc.open_volume(_url(server, child, "segmentation"))
    with Proofreader(tmp_path / "edits.db", volume, background=False) as pr:
        with pytest.raises(EditError, match="seeded split"):
            pr.split(1, {1: [(0.0, 0.0, 0.0)], 2: [(0.0, 0.0, 8.0)]})
        assert pr.history(everyone=True).empty  # nothing journaled
        # synapse edits still work, with partners read from the server's labels
        at = (np.array(OFFSET) + 0.5) * 8.0
        pr.add_synapse(at, [at + 8.0])
        assert pr.store.count_synapses(include_self=True) == 1
