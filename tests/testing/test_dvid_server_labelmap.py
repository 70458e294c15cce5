"""The DVID test server's ``labelmap`` over raw HTTP, checked against numpy."""

from __future__ import annotations

import gzip
import struct
from collections import Counter

import lz4.block
import numpy as np
import pytest
import requests

from tests.testing.conftest import Seeded, assert_400, get, post

SEG = "segmentation"


def raw(
    seeded: Seeded, size_xyz: str, offset_xyz: str, query: str = "", uuid: str | None = None
) -> np.ndarray:
    sx, sy, sz = (int(v) for v in size_xyz.split("_"))
    resp = get(seeded.api(f"{SEG}/raw/0_1_2/{size_xyz}/{offset_xyz}{query}", uuid))
    assert resp.status_code == 200, resp.text
    return np.frombuffer(resp.content, "<u8").reshape(sz, sy, sx)


def decode_rles(data: bytes) -> set[tuple[int, int, int]]:
    """Voxels (x, y, z) of DVID's legacy RLE sparse volume."""
    payload, ndim, rundim, _, _, nspans = struct.unpack("<BBBBII", data[:12])
    assert (payload, ndim, rundim) == (0, 3, 0)
    assert len(data) == 12 + 16 * nspans
    spans = np.frombuffer(data[12:], "<i4").reshape(-1, 4)
    return {(x + i, y, z) for x, y, z, n in spans.tolist() for i in range(n)}


def voxels_of(
    mask: np.ndarray, offset_xyz: tuple[int, int, int] = (0, 0, 0)
) -> set[tuple[int, int, int]]:
    z, y, x = np.nonzero(mask)
    return set(
        zip(
            (x + offset_xyz[0]).tolist(), (y + offset_xyz[1]).tolist(), (z + offset_xyz[2]).tolist()
        )
    )


def reference_downres(hires: np.ndarray) -> np.ndarray:
    """Most frequent non-zero label of each 2x2x2 octant, ties to the smaller (loop version)."""
    z, y, x = (s // 2 for s in hires.shape)
    out = np.zeros((z, y, x), hires.dtype)
    for k in range(z):
        for j in range(y):
            for i in range(x):
                votes = Counter(
                    int(v)
                    for v in hires[2 * k : 2 * k + 2, 2 * j : 2 * j + 2, 2 * i : 2 * i + 2].ravel()
                    if v
                )
                if votes:
                    best = max(votes.values())
                    out[k, j, i] = min(lbl for lbl, n in votes.items() if n == best)
    return out


def test_raw_round_trips(seeded: Seeded) -> None:
    np.testing.assert_array_equal(raw(seeded, "128_128_64", "0_0_0"), seeded.seg)
    np.testing.assert_array_equal(
        raw(seeded, "7_9_11", "60_60_30"), seeded.seg[30:41, 60:69, 60:67]
    )
    nbytes = 40 * 30 * 20 * 8
    resp = get(seeded.api(f"{SEG}/raw/0_1_2/40_30_20/50_40_5?compression=lz4"))
    lz = np.frombuffer(lz4.block.decompress(resp.content, uncompressed_size=nbytes), "<u8")
    np.testing.assert_array_equal(lz.reshape(20, 30, 40), seeded.seg[5:25, 40:70, 50:90])
    resp = get(seeded.api(f"{SEG}/raw/0_1_2/40_30_20/50_40_5?compression=gzip"))
    gz = np.frombuffer(gzip.decompress(resp.content), "<u8")
    np.testing.assert_array_equal(gz.reshape(20, 30, 40), seeded.seg[5:25, 40:70, 50:90])
    block = np.arange(64**3, dtype=np.uint64).reshape(64, 64, 64) % 5 + 10
    body = lz4.block.compress(block.astype("<u8").tobytes(), store_size=False)
    assert (
        post(seeded.api(f"{SEG}/raw/0_1_2/64_64_64/0_0_64?compression=lz4"), data=body).status_code
        == 200
    )
    np.testing.assert_array_equal(raw(seeded, "64_64_64", "0_0_64"), block)
    body = gzip.compress((block + 1).astype("<u8").tobytes())
    assert (
        post(
            seeded.api(f"{SEG}/raw/0_1_2/64_64_64/64_0_64?compression=gzip"), data=body
        ).status_code
        == 200
    )
    np.testing.assert_array_equal(raw(seeded, "64_64_64", "64_0_64"), block + 1)
    assert_400(
        post(seeded.api(f"{SEG}/raw/0_1_2/64_64_64/1_0_0"), data=bytes(64**3 * 8)),
        'cannot store labels for data "segmentation" in non-block aligned geometry '
        "(1,0,0) -> (64,63,63)",
    )
    assert_400(
        post(seeded.api(f"{SEG}/raw/0_1_2/64_64_64/0_0_0"), data=b"12345678"),
        "expected 2097152 bytes",
    )


def test_scale_levels_downsample_by_mode(seeded: Seeded) -> None:
    s = seeded.server
    s.create_instance(seeded.uuid, "labelmap", "noisy", MaxDownresLevel=2)
    noisy = np.random.default_rng(1).integers(0, 4, (64, 64, 64)).astype(np.uint64)
    s.put_voxels(seeded.uuid, "noisy", (0, 0, 0), noisy)
    level1 = np.frombuffer(get(seeded.api("noisy/raw/0_1_2/32_32_32/0_0_0?scale=1")).content, "<u8")
    level1 = level1.reshape(32, 32, 32)
    np.testing.assert_array_equal(
        level1[8:24, 8:24, :16], reference_downres(noisy[16:48, 16:48, :32])
    )
    level2 = np.frombuffer(get(seeded.api("noisy/raw/0_1_2/16_16_16/0_0_0?scale=2")).content, "<u8")
    np.testing.assert_array_equal(level2.reshape(16, 16, 16), reference_downres(level1))
    # The seeded segmentation: scale 1 halves every axis.
    np.testing.assert_array_equal(
        raw(seeded, "64_64_32", "0_0_0", "?scale=1"), reference_downres(seeded.seg)
    )
    info = get(seeded.api("noisy/info")).json()["Extended"]
    assert (
        info["MaxDownresLevel"] == 2 and info["MaxLabel"] == {"1": 3} and info["MaxRepoLabel"] == 3
    )


def test_point_queries_and_sizes(seeded_module: Seeded) -> None:
    s, seg = seeded_module, seeded_module.seg
    assert get(s.api(f"{SEG}/label/75_15_15")).json() == {"Label": 3}
    assert get(s.api(f"{SEG}/label/8_4_40")).json() == {"Label": 0}
    assert get(s.api(f"{SEG}/label/37_7_7?scale=1")).json() == {"Label": 3}
    coords = [[5, 5, 5], [100, 100, 5], [75, 15, 15], [110, 10, 35], [500, 500, 500]]
    assert get(s.api(f"{SEG}/labels"), json=coords).json() == [1, 2, 3, 4, 0]
    sizes = get(s.api(f"{SEG}/sizes"), json=[1, 2, 3, 4, 99]).json()
    assert sizes == [int((seg == v).sum()) for v in (1, 2, 3, 4)] + [0]
    assert get(s.api(f"{SEG}/size/3")).json() == {"voxels": 1000}
    assert get(s.api(f"{SEG}/size/99")).status_code == 404
    assert get(s.api(f"{SEG}/supervoxels/2")).json() == [2]
    assert get(s.api(f"{SEG}/supervoxels/99")).status_code == 404
    assert get(s.api(f"{SEG}/mapping"), json=[1, 3, 99]).json() == [1, 3, 0]
    assert get(s.api(f"{SEG}/maxlabel")).json() == {"maxlabel": 4}
    assert get(s.api(f"{SEG}/sparsevol-size/3")).json() == {
        "voxels": 1000,
        "numblocks": 1,
        "minvoxel": [64, 0, 0],
        "maxvoxel": [127, 63, 63],
    }
    last = get(s.api(f"{SEG}/lastmod/2")).json()
    assert set(last) == {"mutation id", "last mod user", "last mod app", "last mod time"}
    assert last["mutation id"] >= 1_000_000_000


def test_merge_and_cleave(seeded: Seeded) -> None:
    seg = seeded.seg
    resp = post(seeded.api(f"{SEG}/merge?u=alice&app=test"), json=[1, 3, 4])
    assert resp.status_code == 200 and set(resp.json()) == {"MutationID"}
    mutid = resp.json()["MutationID"]
    merged = seg.copy()
    merged[(seg == 3) | (seg == 4)] = 1
    np.testing.assert_array_equal(raw(seeded, "128_128_64", "0_0_0"), merged)
    np.testing.assert_array_equal(raw(seeded, "128_128_64", "0_0_0", "?supervoxels=true"), seg)
    assert get(seeded.api(f"{SEG}/label/75_15_15")).json() == {"Label": 1}
    assert get(seeded.api(f"{SEG}/label/75_15_15?supervoxels=true")).json() == {"Label": 3}
    assert get(seeded.api(f"{SEG}/supervoxels/1")).json() == [1, 3, 4]
    assert get(seeded.api(f"{SEG}/size/1")).json() == {"voxels": int((merged == 1).sum())}
    assert get(seeded.api(f"{SEG}/size/3?supervoxels=true")).json() == {"voxels": 1000}
    assert get(seeded.api(f"{SEG}/size/3")).status_code == 404
    assert get(seeded.api(f"{SEG}/mapping"), json=[3, 4, 2]).json() == [1, 1, 2]
    last = get(seeded.api(f"{SEG}/lastmod/1")).json()
    assert last["mutation id"] == mutid and last["last mod user"] == "alice"
    assert_400(
        post(seeded.api(f"{SEG}/merge"), json=[1, 99]),
        "Error on merge: can't merge non-existent label 99",
    )
    assert_400(post(seeded.api(f"{SEG}/merge"), json=[1]), "invalid merge tuple [1]")
    assert_400(post(seeded.api(f"{SEG}/merge"), data=b"{"), "Bad merge op JSON")

    resp = post(seeded.api(f"{SEG}/cleave/1"), json=[3])
    body = resp.json()
    assert set(body) == {"CleavedLabel", "MutationID"} and body["MutationID"] > mutid
    cleaved = body["CleavedLabel"]
    assert cleaved == 5  # max label 4 + 1
    assert get(seeded.api(f"{SEG}/label/75_15_15")).json() == {"Label": cleaved}
    assert get(seeded.api(f"{SEG}/supervoxels/1")).json() == [1, 4]
    assert_400(
        post(seeded.api(f"{SEG}/cleave/{cleaved}"), json=[3]),
        f"cannot cleave all supervoxels from the label {cleaved}",
    )
    assert_400(
        post(seeded.api(f"{SEG}/cleave/1"), json=[2]),
        "cannot cleave supervoxel 2, which does not exist in label 1",
    )
    assert_400(
        post(seeded.api(f"{SEG}/cleave/77"), json=[2]), "cannot cleave non-existent label 77"
    )
    assert get(seeded.api(f"{SEG}/maxlabel")).json()["maxlabel"] >= cleaved


def test_sparsevol_rles(seeded: Seeded) -> None:
    seg = seeded.seg
    resp = get(seeded.api(f"{SEG}/sparsevol/1"))
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert decode_rles(resp.content) == voxels_of(seg == 1)
    bounded = get(seeded.api(f"{SEG}/sparsevol/2?minx=10&maxx=20&miny=100&maxz=3")).content
    mask = np.zeros_like(seg, bool)
    mask[:4, 100:, 10:21] = seg[:4, 100:, 10:21] == 2
    assert decode_rles(bounded) == voxels_of(mask)
    packed = get(seeded.api(f"{SEG}/sparsevol/3?compression=lz4")).content
    assert decode_rles(lz4.block.decompress(packed, uncompressed_size=1 << 20)) == voxels_of(
        seg == 3
    )
    half = raw(seeded, "64_64_32", "0_0_0", "?scale=1")
    assert decode_rles(get(seeded.api(f"{SEG}/sparsevol/4?scale=1")).content) == voxels_of(
        half == 4
    )
    assert requests.head(seeded.api(f"{SEG}/sparsevol/3"), timeout=5).status_code == 200
    assert requests.head(seeded.api(f"{SEG}/sparsevol/99"), timeout=5).status_code == 204
    assert get(seeded.api(f"{SEG}/sparsevol/99")).status_code == 404
    post(seeded.api(f"{SEG}/merge"), json=[2, 3])
    assert decode_rles(get(seeded.api(f"{SEG}/sparsevol/2")).content) == voxels_of(
        (seg == 2) | (seg == 3)
    )
    assert decode_rles(get(seeded.api(f"{SEG}/sparsevol/3?supervoxels=true")).content) == voxels_of(
        seg == 3
    )
    coarse = decode_rles(get(seeded.api(f"{SEG}/sparsevol-coarse/2")).content)
    assert coarse == {(0, 1, 0), (1, 1, 0), (1, 0, 0)}  # block coordinates


def test_block_stream(seeded_module: Seeded) -> None:
    s, seg = seeded_module, seeded_module.seg

    def parse(data: bytes, codec: str) -> dict[tuple[int, int, int], np.ndarray]:
        out, pos = {}, 0
        while pos < len(data):
            bx, by, bz, n = struct.unpack("<iiii", data[pos : pos + 16])
            payload = data[pos + 16 : pos + 16 + n]
            pos += 16 + n
            if codec == "lz4":
                payload = lz4.block.decompress(payload, uncompressed_size=64**3 * 8)
            elif codec == "gzip":
                payload = gzip.decompress(payload)
            out[(bx, by, bz)] = np.frombuffer(payload, "<u8").reshape(64, 64, 64)
        return out

    for query, codec in (
        ("?compression=uncompressed", "raw"),
        ("", "lz4"),
        ("?compression=gzip", "gzip"),
    ):
        resp = get(s.api(f"{SEG}/blocks/256_128_64/0_0_0{query}"))
        assert resp.status_code == 200, resp.text
        blocks = parse(resp.content, codec)
        assert list(blocks) == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)]  # z, y, x order
        for (bx, by, bz), block in blocks.items():
            np.testing.assert_array_equal(
                block, seg[bz * 64 : bz * 64 + 64, by * 64 : by * 64 + 64, bx * 64 : bx * 64 + 64]
            )
    assert_400(get(s.api(f"{SEG}/blocks/64_64_64/1_0_0")), "non-block aligned geometry")
    assert_400(
        get(s.api(f"{SEG}/blocks/64_64_64/0_0_0?compression=zip")),
        'compression must be "lz4" (default)',
    )


def test_label_counters(seeded: Seeded) -> None:
    assert get(seeded.api(f"{SEG}/nextlabel")).json() == {"nextlabel": 5}
    assert post(seeded.api(f"{SEG}/nextlabel/3")).json() == {"start": 5, "end": 7}
    assert get(seeded.api(f"{SEG}/nextlabel")).json() == {"nextlabel": 8}
    assert get(seeded.api(f"{SEG}/maxlabel")).json() == {"maxlabel": 7}
    assert_400(post(seeded.api(f"{SEG}/maxlabel/100")), "requires admin privileges")
    seeded.server.create_instance(seeded.uuid, "labelmap", "empty")
    assert_400(get(seeded.api("empty/maxlabel")), "No maximum label found for empty")


def test_labelmap_versioning(seeded: Seeded) -> None:
    s, root, seg = seeded.server, seeded.uuid, seeded.seg
    s.commit(root)
    child = s.new_version(root)
    assert post(seeded.api(f"{SEG}/merge", child), json=[2, 1]).status_code == 200
    post(
        seeded.api(f"{SEG}/raw/0_1_2/64_64_64/64_64_0", child),
        data=np.full(64**3, 9, "<u8").tobytes(),
    )
    child_vol = raw(seeded, "128_128_64", "0_0_0", uuid=child)
    expected = seg.copy()
    expected[expected == 1] = 2
    expected[:, 64:, 64:] = 9
    np.testing.assert_array_equal(child_vol, expected)
    np.testing.assert_array_equal(raw(seeded, "128_128_64", "0_0_0"), seg)  # parent untouched
    assert get(seeded.api(f"{SEG}/maxlabel", child)).json() == {"maxlabel": 9}
    assert get(seeded.api(f"{SEG}/maxlabel")).json() == {"maxlabel": 4}
    assert get(seeded.api(f"{SEG}/supervoxels/1")).json() == [1]
    assert get(seeded.api(f"{SEG}/supervoxels/1", child)).status_code == 404
    info = get(seeded.api(f"{SEG}/info", child)).json()["Extended"]
    versions = get(f"{seeded.url}/api/repo/{root}/info").json()["DAG"]["Nodes"]
    v_root, v_child = versions[root]["VersionID"], versions[child]["VersionID"]
    assert info["MaxLabel"] == {str(v_root): 4, str(v_child): 9}


@pytest.mark.parametrize("compression", ["google", "googlegzip"])
def test_unsupported_compression_is_a_clear_400(seeded_module: Seeded, compression: str) -> None:
    resp = get(seeded_module.api(f"{SEG}/raw/0_1_2/8_8_8/0_0_0?compression={compression}"))
    assert_400(resp, "not supported by the test server")
