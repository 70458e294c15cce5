"""Malformed, truncated and oversized input to the decoders the remote path adds."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from napari_connecto.backends._n5_blocks import decode_block
from napari_connecto.backends._precomputed_shards import ShardReader, ShardSpec
from napari_connecto.dvid.annotations import Elements, point_set, synapse_pairs
from napari_connecto.dvid.client import decode_voxels
from napari_connecto.errors import MetadataError

U16 = np.dtype(np.uint16)


def _block(shape_xyz, payload, mode=0):
    head = struct.pack(">HH", mode, len(shape_xyz)) + struct.pack(f">{len(shape_xyz)}I", *shape_xyz)
    if mode == 1:
        head += struct.pack(">I", int(np.prod(shape_xyz)))
    return head + payload


def _decode(data, compression=None):
    return decode_block(
        data, ndim=3, block_xyz=(4, 4, 2), dtype=U16, compression=compression or {"type": "raw"}
    )


def test_n5_block_round_trip_and_edge_block():
    values = np.arange(4 * 3 * 2, dtype=">u2").reshape(2, 3, 4)  # z, y, x of an edge block
    got = _decode(_block((4, 3, 2), values.tobytes()))
    np.testing.assert_array_equal(got, values.astype(np.uint16))
    zipped = _decode(_block((4, 3, 2), gzip.compress(values.tobytes())), {"type": "gzip"})
    np.testing.assert_array_equal(zipped, values.astype(np.uint16))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00", "shorter than its header"),
        (_block((4, 4), b""), "dimensions"),
        (struct.pack(">HH", 2, 3) + b"\x00" * 12, "mode 2"),
        (_block((4, 4, 2), b"\x00" * 10), "holds 10 bytes"),
        (_block((8, 4, 2), b"\x00" * 128), "exceeds blockSize"),
        (_block((4, 4, 2), b"\x00" * 64)[:10], "truncated"),
    ],
)
def test_n5_malformed_blocks_raise(data, message):
    with pytest.raises(ValueError, match=message):
        _decode(data)


def test_n5_gzip_bomb_and_corruption_are_refused():
    bomb = gzip.compress(b"\x00" * 10_000_000)
    with pytest.raises(ValueError, match="more than"):
        _decode(_block((4, 4, 2), bomb), {"type": "gzip"})
    with pytest.raises(ValueError, match=r"corrupt|truncated"):
        _decode(_block((4, 4, 2), b"\x1f\x8b garbage"), {"type": "gzip"})


SPEC = ShardSpec(0, 1, 0, "identity", "raw", "raw")


def _shard(index_entries, minishard=b"", data=b""):
    header = b"".join(struct.pack("<QQ", a, b) for a, b in index_entries)
    return header + minishard + data


def _reader(blob):
    return ShardReader(SPEC, (1, 1, 1), lambda name, start, n: blob[start : start + n] or None)


def test_shard_reader_finds_a_chunk_and_reports_damage():
    data = b"chunk!"
    minishard = np.array([[0], [0], [len(data)]], dtype="<u8").tobytes()
    # chunk first, then its minishard index; offsets count from the end of the shard index
    good = _shard([(len(data), len(data) + len(minishard)), (0, 0)], data + minishard)
    assert _reader(good).chunk_bytes((0, 0, 0)) == data
    backwards = _shard([(50, 10), (0, 0)])
    with pytest.raises(ValueError, match="bad range"):
        _reader(backwards).chunk_bytes((0, 0, 0))
    ragged = _shard([(0, 20), (0, 0)], b"\x00" * 20)
    with pytest.raises(ValueError, match="bad length"):
        _reader(ragged).chunk_bytes((0, 0, 0))
    cut = _shard([(0, 24), (0, 0)], b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        _reader(cut).chunk_bytes((0, 0, 0))
    assert _reader(_shard([(0, 0), (0, 0)])).chunk_bytes((0, 0, 0)) is None  # empty minishard


def test_dvid_voxel_answers_of_the_wrong_size_are_refused():
    shape = (2, 3, 4)
    raw = np.arange(24, dtype="<u8").tobytes()
    np.testing.assert_array_equal(
        decode_voxels(raw, shape, np.dtype(np.uint64), None).ravel(), np.arange(24)
    )
    with pytest.raises(ValueError, match="expected"):
        decode_voxels(raw[:-8], shape, np.dtype(np.uint64), None)
    with pytest.raises(ValueError, match="lz4"):
        decode_voxels(b"\xff\x00garbage", shape, np.dtype(np.uint64), "lz4")
    with pytest.raises(ValueError, match="gzip"):
        decode_voxels(gzip.compress(raw)[:-5], shape, np.dtype(np.uint64), "gzip")


def test_dvid_elements_with_bad_positions_name_the_element():
    found = Elements([{"Pos": [1, 2, 3], "Kind": "PreSyn"}, {"Pos": "here"}], (8.0, 8.0, 8.0), None)
    with pytest.raises(MetadataError, match=r"elements\[1\]\.Pos"):
        point_set("synapses", found, "dvid://x")
    broken = Elements([{"Pos": [1, "b", 3], "Kind": "PreSyn"}], (8.0, 8.0, 8.0), None)
    with pytest.raises(MetadataError, match="not integers"):
        synapse_pairs(broken, "dvid://x")
