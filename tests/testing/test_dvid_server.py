"""The DVID test server over raw HTTP: server, repos, versioning, keyvalue, uint8blk, annotation."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import requests

from napari_connecto.testing.dvid_server import DvidServer, SeedError
from tests.testing.conftest import SYNAPSES, Seeded, T, assert_400, assert_bad_api, get, post

# -- server -------------------------------------------------------------------------------------


def test_server_endpoints(seeded_module: Seeded) -> None:
    url = seeded_module.url
    assert get(f"{url}/api/heartbeat").status_code == 200
    info = get(f"{url}/api/server/info")
    assert info.headers["Content-Type"] == "application/json"
    body = info.json()
    for key in ("DVID Version", "Datastore Version", "Cores", "Storage backend", "Server uptime"):
        assert key in body
    assert all(isinstance(v, str) for v in body.values())
    types = get(f"{url}/api/server/types").json()
    assert set(types) == {"uint8blk", "labelmap", "annotation", "keyvalue"}
    assert types["labelmap"] == "github.com/janelia-flyem/dvid/datatype/labelmap"
    assert set(get(f"{url}/api/server/compiled-types").json()) >= set(types)
    assert get(f"{url}/api/nothing/here").status_code == 404
    assert get(f"{url}/not-api").status_code == 404
    assert post(f"{url}/api/server/info").status_code == 405


def test_create_repo_and_instance_over_http(dvid_server: DvidServer) -> None:
    url = dvid_server.url
    resp = post(f"{url}/api/repos", json={"alias": "a", "description": "d"})
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    root = resp.json()["root"]
    assert len(root) == 32 and root == root.lower()
    int(root, 16)
    resp = post(
        f"{url}/api/repo/{root}/instance",
        json={"typename": "labelmap", "dataname": "seg", "BlockSize": "32,32,32"},
    )
    assert resp.json() == {"result": f"Added seg [labelmap] to node {root}"}
    assert_400(
        post(f"{url}/api/repo/{root}/instance", json={"typename": "labelmap", "dataname": "seg"}),
        "already exists",
    )
    assert_400(post(f"{url}/api/repo/{root}/instance", json={"dataname": "x"}), "'typename'")
    assert_400(
        post(f"{url}/api/repo/{root}/instance", json={"typename": "nope", "dataname": "x"}), "nope"
    )
    assert_400(
        post(
            f"{url}/api/repo/{root}/instance",
            json={"typename": "labelmap", "dataname": "y", "BlockSize": "20,20,20"},
        ),
        "BlockSize must be multiples of 16",
    )
    info = get(f"{url}/api/node/{root}/seg/info").json()
    assert info["Extended"]["BlockSize"] == [32, 32, 32]
    assert info["Base"]["Name"] == "seg" and info["Base"]["RepoUUID"] == root


def test_repo_info_shape(seeded_module: Seeded) -> None:
    s = seeded_module
    info = get(f"{s.url}/api/repo/{s.uuid}/info").json()
    for key in (
        "Root",
        "Alias",
        "Description",
        "Log",
        "Properties",
        "DataInstances",
        "DAG",
        "MutationID",
        "Created",
        "Updated",
    ):
        assert key in info
    assert info["Root"] == s.uuid and info["Alias"] == "test"
    assert set(info["DataInstances"]) == {
        "grayscale",
        "segmentation",
        "synapses",
        "segmentation_annotations",
    }
    node = info["DAG"]["Nodes"][s.uuid]
    assert info["DAG"]["Root"] == s.uuid
    assert set(node) == {
        "Branch",
        "Note",
        "Log",
        "UUID",
        "VersionID",
        "Locked",
        "Parents",
        "Children",
        "Created",
        "Updated",
    }
    assert node["Parents"] == [] and node["Locked"] is False and isinstance(node["VersionID"], int)
    everything = get(f"{s.url}/api/repos/info").json()
    assert set(everything) == {s.uuid}
    assert everything[s.uuid]["DAG"] == info["DAG"]


# -- UUIDs, nodes, versioning -------------------------------------------------------------------


def test_uuid_resolution(dvid_server: DvidServer) -> None:
    url = dvid_server.url
    a = post(f"{url}/api/repos", json={"alias": "a", "root": "abcd" + "0" * 28}).json()["root"]
    post(f"{url}/api/repos", json={"alias": "b", "root": "abce" + "0" * 28})
    assert get(f"{url}/api/repo/abcd/info").json()["Root"] == a
    assert_400(get(f"{url}/api/repo/abc/info"), "more than one UUID matches abc")
    assert_400(get(f"{url}/api/repo/ffff/info"), "could not find UUID with partial match to ffff")
    assert_400(
        get(f"{url}/api/repo/:master/info"), "UUID must be specified if more than one repo exists"
    )
    dvid_server.commit(a)
    child = dvid_server.new_version(a)
    for spec in ("abcd:master", f"{child[:6]}:master"):
        assert get(f"{url}/api/node/{spec}/commit").json() == {"Locked": False}, spec
    assert get(f"{url}/api/node/abcd:/commit").json() == {"Locked": True}  # empty branch: as DVID
    dev = dvid_server.branch(a, "dev")
    assert get(f"{url}/api/repo/abcd:dev/info").json()["Root"] == a
    assert get(f"{url}/api/repo/{a}/branch-versions/dev").json() == [dev, a]
    assert get(f"{url}/api/repo/{a}/branch-versions/master").json() == [child, a]
    assert get(f"{url}/api/repo/{a}/branch-versions/none").json() == []


def test_commit_newversion_branch_rules(seeded: Seeded) -> None:
    url, root = seeded.url, seeded.uuid
    assert_400(post(f"{url}/api/node/{root}/newversion"), "can't branch an unlocked node")
    assert get(f"{url}/api/node/{root}/commit").json() == {"Locked": False}
    resp = post(f"{url}/api/node/{root}/commit", json={"note": "first", "log": ["a", "b"]})
    assert resp.json() == {"committed": root}
    assert get(f"{url}/api/node/{root}/commit").json() == {"Locked": True}
    assert_400(
        post(f"{url}/api/node/{root}/commit", json={}), f"Cannot do post on locked node {root}"
    )
    child = post(f"{url}/api/node/{root}/newversion", json={"note": "c"}).json()["child"]
    assert_400(post(f"{url}/api/node/{root}/newversion"), "branch already exists with given name")
    assert_400(
        post(f"{url}/api/node/{root}/branch", json={"branch": "master"}),
        "Cannot create a master branch",
    )
    dev = post(f"{url}/api/node/{root}/branch", json={"branch": "dev"}).json()["child"]
    dag = get(f"{url}/api/repo/{root}/info").json()["DAG"]["Nodes"]
    assert dag[root]["Note"] == "first" and dag[root]["Locked"]
    assert [m.split("  ", 1)[1] for m in dag[root]["Log"]] == ["a", "b"]
    assert dag[root]["Children"] == [dag[child]["VersionID"], dag[dev]["VersionID"]]
    assert dag[child]["Parents"] == [dag[root]["VersionID"]] and dag[child]["Branch"] == ""
    assert dag[dev]["Branch"] == "dev"
    # Locked: data writes refused, reads fine; instance creation refused.
    resp = post(seeded.api("segmentation_annotations/key/k"), data=b"v")
    assert_400(resp, f'Cannot do POST on endpoint "key" of locked node {root}')
    assert get(seeded.api("segmentation_annotations/keys")).json() == []
    assert requests.delete(seeded.api("synapses/element/5_5_5"), timeout=T).status_code == 400
    assert_400(
        post(f"{url}/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "x"}),
        "cannot be created on locked node",
    )
    with pytest.raises(SeedError, match="locked"):
        seeded.server.put_key(root, "segmentation_annotations", "k", b"v")


def test_keyvalue_versioning_and_tombstones(seeded: Seeded) -> None:
    s, root = seeded.server, seeded.uuid
    kv = "segmentation_annotations"
    post(seeded.api(f"{kv}/key/a"), data=b"parent-a")
    post(seeded.api(f"{kv}/key/b"), data=b"parent-b")
    s.commit(root)
    child = s.new_version(root)
    assert get(seeded.api(f"{kv}/key/a", child)).content == b"parent-a"  # inherited
    post(seeded.api(f"{kv}/key/a", child), data=b"child-a")
    assert requests.delete(seeded.api(f"{kv}/key/b", child), timeout=T).status_code == 200
    post(seeded.api(f"{kv}/key/c", child), data=b"child-c")
    assert get(seeded.api(f"{kv}/key/a", child)).content == b"child-a"
    assert get(seeded.api(f"{kv}/key/a")).content == b"parent-a"  # overwrite not visible in parent
    assert get(seeded.api(f"{kv}/key/b", child)).status_code == 404  # tombstone
    assert get(seeded.api(f"{kv}/key/b")).content == b"parent-b"
    assert get(seeded.api(f"{kv}/keys", child)).json() == ["a", "c"]
    assert get(seeded.api(f"{kv}/keys")).json() == ["a", "b"]
    assert requests.head(seeded.api(f"{kv}/key/b", child), timeout=T).status_code == 404
    assert requests.head(seeded.api(f"{kv}/key/a", child), timeout=T).status_code == 200


def test_keyvalue_endpoints(seeded: Seeded) -> None:
    kv = "segmentation_annotations"
    for key, value in {"a1": b'{"x": 1}', "a2": b"[2]", "b1": b"3", "c": b""}.items():
        assert post(seeded.api(f"{kv}/key/{key}"), data=value).status_code == 200
    resp = get(seeded.api(f"{kv}/key/a1"))
    assert (
        resp.headers["Content-Type"] == "application/octet-stream" and resp.content == b'{"x": 1}'
    )
    missing = get(seeded.api(f"{kv}/key/zz"))
    assert missing.status_code == 404 and missing.text == 'Key "zz" not found\n'
    assert get(seeded.api(f"{kv}/keyrange/a1/b1")).json() == ["a1", "a2", "b1"]
    assert get(seeded.api(f"{kv}/keyrange/a2/a9")).json() == ["a2"]
    values = get(seeded.api(f"{kv}/keyrangevalues/a1/c?json=true")).json()
    assert values == {"a1": {"x": 1}, "a2": [2], "b1": 3, "c": {}}
    proto = get(seeded.api(f"{kv}/keyrangevalues/a1/a2")).content
    # protobuf KeyValues{kvs: [KeyValue{key, value}, ...]}
    assert proto == (b"\n\x0e\n\x02a1\x12\x08" + b'{"x": 1}' + b"\n\x09\n\x02a2\x12\x03" + b"[2]")
    assert_bad_api(get(seeded.api(f"{kv}/bogus")), kv, "keyvalue")


# -- errors -------------------------------------------------------------------------------------


def test_error_shapes(seeded_module: Seeded) -> None:
    s = seeded_module
    resp = get(f"{s.url}/api/node/0123456789/segmentation/info")
    assert_400(resp, "could not find UUID with partial match to 0123456789")
    assert resp.text == (
        "could not find UUID with partial match to 0123456789 "
        "(/api/node/0123456789/segmentation/info).\n"
    )
    assert_400(get(s.api("nothing/info")), "invalid data instance name")
    assert_bad_api(get(s.api("segmentation/frobnicate")), "segmentation", "labelmap")
    assert_bad_api(get(s.api("synapses/frobnicate")), "synapses", "annotation")
    assert get(f"{s.url}/api/repo/{s.uuid}/frobnicate").status_code == 404
    assert get(f"{s.url}/api/node/{s.uuid}/frobnicate").status_code == 404
    assert_400(get(f"{s.url}/api/repo/nothing/frobnicate"), "could not find UUID")
    for path in ("size/0", "sparsevol/0", "supervoxels/0", "lastmod/0", "sparsevol-size/0"):
        assert_400(get(s.api(f"segmentation/{path}")), "Label 0 is protected background value")
    assert_400(get(s.api("synapses/label/0")), "Label 0 is protected")


# -- uint8blk -----------------------------------------------------------------------------------


def test_uint8blk_raw(seeded: Seeded) -> None:
    gray = seeded.gray
    resp = get(seeded.api("grayscale/raw/0_1_2/20_10_5/3_4_5"))
    assert resp.headers["Content-Type"] == "application/octet-stream"
    got = np.frombuffer(resp.content, np.uint8).reshape(5, 10, 20)
    np.testing.assert_array_equal(got, gray[5:10, 4:14, 3:23])
    outside = np.frombuffer(get(seeded.api("grayscale/raw/0_1_2/8_8_8/90_60_30")).content, np.uint8)
    expected = np.zeros((8, 8, 8), np.uint8)
    expected[:2, :4, :6] = gray[30:32, 60:64, 90:96]
    np.testing.assert_array_equal(outside.reshape(8, 8, 8), expected)  # no data reads as 0
    assert_400(
        post(seeded.api("grayscale/raw/0_1_2/32_32_32/1_0_0"), data=bytes(32**3)),
        "cannot store voxels in non-block aligned geometry (1,0,0) -> (32,31,31)",
    )
    assert_400(
        post(seeded.api("grayscale/raw/0_1_2/32_32_32/0_0_0"), data=b"x"),
        "voxels data was 1 bytes, expected 32768 bytes",
    )
    block = np.full((32, 32, 32), 7, np.uint8)
    assert (
        post(seeded.api("grayscale/raw/0_1_2/32_32_32/96_0_0"), data=block.tobytes()).status_code
        == 200
    )
    ext = get(seeded.api("grayscale/info")).json()
    assert ext["Extended"]["MinPoint"] == [0, 0, 0]
    assert ext["Extended"]["MaxPoint"] == [127, 63, 31]  # inclusive
    assert ext["Extended"]["MaxIndex"] == [3, 1, 0]
    assert ext["Extents"] == {"MinPoint": [0, 0, 0], "MaxPoint": [127, 63, 31]}
    meta = get(seeded.api("grayscale/metadata"))
    assert meta.headers["Content-Type"] == "application/vnd.dvid-nd-data+json"
    axes = meta.json()["Axes"]
    assert [(a["Label"], a["Size"], a["Offset"]) for a in axes] == [
        ("X", 128, 0),
        ("Y", 64, 0),
        ("Z", 32, 0),
    ]


def test_uint8blk_slice_png(seeded_module: Seeded) -> None:
    resp = get(seeded_module.api("grayscale/raw/xy/16_8/2_3_4"))
    assert resp.headers["Content-Type"] == "image/png"
    data = resp.content
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width + 1)[:, 1:]
    np.testing.assert_array_equal(rows, seeded_module.gray[4, 3:11, 2:18])


def test_uint8blk_versioned_blocks(seeded: Seeded) -> None:
    s, root = seeded.server, seeded.uuid
    s.commit(root)
    child = s.new_version(root)
    post(seeded.api("grayscale/raw/0_1_2/32_32_32/0_0_0", child), data=bytes(32**3))
    child_vol = np.frombuffer(
        get(seeded.api("grayscale/raw/0_1_2/64_32_32/0_0_0", child)).content, np.uint8
    )
    parent_vol = np.frombuffer(
        get(seeded.api("grayscale/raw/0_1_2/64_32_32/0_0_0")).content, np.uint8
    )
    child_vol, parent_vol = child_vol.reshape(32, 32, 64), parent_vol.reshape(32, 32, 64)
    assert not child_vol[:, :, :32].any()
    np.testing.assert_array_equal(
        child_vol[:, :, 32:], seeded.gray[:, :32, 32:64]
    )  # inherited block
    np.testing.assert_array_equal(parent_vol, seeded.gray[:, :32, :64])


# -- annotation ---------------------------------------------------------------------------------


def test_annotation_elements(seeded: Seeded) -> None:
    box = get(seeded.api("synapses/elements/64_64_64/0_0_0")).json()
    assert [e["Pos"] for e in box] == [[5, 5, 5], [10, 10, 50]]
    assert box[0] == SYNAPSES[0]
    assert get(seeded.api("synapses/elements/10_10_10/500_500_500")).json() == []
    new = {"Pos": [5, 5, 5], "Kind": "PreSyn", "Tags": ["t2"], "Prop": {"conf": "1.0"}}
    assert post(seeded.api("synapses/elements"), json=[new]).status_code == 200
    [replaced] = get(seeded.api("synapses/elements/1_1_1/5_5_5")).json()
    assert replaced == {**new, "Rels": None}
    assert requests.delete(seeded.api("synapses/element/10_10_50"), timeout=T).status_code == 200
    assert_400(
        requests.delete(seeded.api("synapses/element/10_10_50"), timeout=T),
        "Did not find element (10,10,50)",
    )
    [partner] = get(seeded.api("synapses/elements/1_1_1/100_100_50")).json()
    assert partner["Rels"] == []  # relationship to the deleted element removed
    assert post(seeded.api("synapses/move/100_100_5/101_100_5")).status_code == 200
    assert get(seeded.api("synapses/elements/1_1_1/100_100_5")).json() == []
    [moved] = get(seeded.api("synapses/elements/1_1_1/101_100_5")).json()
    assert moved["Kind"] == "PostSyn"
    assert_400(post(seeded.api("synapses/move/1_1_1/2_2_2")), "Did not find moved element (1,1,1)")


def test_annotation_label_and_tag(seeded_module: Seeded) -> None:
    s = seeded_module
    in1 = get(s.api("synapses/label/1")).json()
    assert [e["Pos"] for e in in1] == [[5, 5, 5], [10, 10, 50]]
    assert set(in1[0]) == {"Pos", "Kind", "Tags", "Prop"}
    with_rels = get(s.api("synapses/label/1?relationships=true")).json()
    assert with_rels[0]["Rels"] == SYNAPSES[0]["Rels"]
    assert get(s.api("synapses/label/999")).json() == []
    tagged = get(s.api("synapses/tag/t1")).json()
    assert sorted(e["Pos"] for e in tagged) == [[5, 5, 5], [75, 15, 15]]
    assert get(s.api("synapses/tag/none")).json() == []


def test_annotation_versioned_per_element(seeded: Seeded) -> None:
    s, root = seeded.server, seeded.uuid
    s.commit(root)
    child = s.new_version(root)
    requests.delete(seeded.api("synapses/element/75_15_15", child), timeout=T)
    post(seeded.api("synapses/elements", child), json=[{"Pos": [1, 2, 3], "Kind": "Note"}])
    child_box = get(seeded.api("synapses/elements/128_128_64/0_0_0", child)).json()
    parent_box = get(seeded.api("synapses/elements/128_128_64/0_0_0")).json()
    assert [75, 15, 15] not in [e["Pos"] for e in child_box]
    assert [75, 15, 15] in [e["Pos"] for e in parent_box]
    assert [1, 2, 3] in [e["Pos"] for e in child_box]
    assert [1, 2, 3] not in [e["Pos"] for e in parent_box]


def test_unversioned_instance_maps_to_root(seeded: Seeded) -> None:
    s, root = seeded.server, seeded.uuid
    s.create_instance(root, "keyvalue", "shared", Versioned=False)
    s.commit(root)
    child = s.new_version(root)
    assert post(seeded.api("shared/key/k", child), data=b"v").status_code == 200
    assert post(seeded.api("shared/key/k2"), data=b"w").status_code == 200  # locked, unversioned
    assert get(seeded.api("shared/keys")).json() == ["k", "k2"]
    info = get(seeded.api("shared/info", child)).json()["Base"]
    assert info["Versioned"] is False


def test_seeding_errors(seeded: Seeded) -> None:
    s, root = seeded.server, seeded.uuid
    with pytest.raises(SeedError, match="non-block aligned"):
        s.put_voxels(root, "segmentation", (0, 0, 1), np.ones((64, 64, 64), np.uint64))
    with pytest.raises(SeedError, match="grayscale_1"):
        s.put_voxels(root, "grayscale", (0, 0, 0), np.ones((32, 32, 32), np.uint8), scale=1)
    with pytest.raises(SeedError, match="could not find UUID"):
        s.commit("ffffffff")
    with pytest.raises(SeedError, match="is a labelmap instance, not annotation"):
        s.put_elements(root, "segmentation", [])
    with pytest.raises(SeedError, match="can't branch an unlocked node"):
        s.new_version(root)
    with pytest.raises(SeedError, match="already exists"):
        s.create_instance(root, "keyvalue", "segmentation")
    with pytest.raises(SeedError, match="Unknown element type"):
        s.put_elements(root, "synapses", [{"Pos": [1, 2, 3], "Kind": "Bogus"}])
