"""Neuroglancer precomputed volumes written by tensorstore and by the documented byte layout."""

from __future__ import annotations

import gzip
import json
import shutil
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import compressed_segmentation
import numpy as np
import pytest
import tensorstore as ts
from PIL import Image

import napari_connecto as nc
from napari_connecto.backends import _precomputed_codecs as codecs
from napari_connecto.backends._precomputed_codecs import decode_compressed_segmentation
from napari_connecto.backends.precomputed import PrecomputedBackend
from napari_connecto.errors import (
    ChunkError,
    MetadataError,
    ReadOnlyError,
    SourceNotFoundError,
    UnsafeDataError,
    UnsupportedEncodingError,
)
from tests.backends.contract import BackendContract, ContractCase

SHARDING = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 0,
    "hash": "murmurhash3_x86_128",
    "minishard_bits": 1,
    "shard_bits": 2,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}


# -- writers -----------------------------------------------------------------------------
def _ts_write(root: Path, scale: dict, data: np.ndarray, multiscale: dict | None = None) -> str:
    """Write ``data`` (z, y, x or c, z, y, x) as one new scale with tensorstore; return its key."""
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(root)},
        "scale_metadata": scale,
    }
    if multiscale is not None:
        spec["multiscale_metadata"] = multiscale
    store = ts.open(spec, create=True, open=True).result()
    block = data if data.ndim == 4 else data[np.newaxis]
    store[...] = block.transpose(3, 2, 1, 0)
    return store.spec().to_json()["scale_metadata"]["key"]


def _image(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    return ((x * 3 + y * 5 + z * 17 + rng.integers(0, 9, shape)) % 256).astype(np.uint8)


def _segmentation(shape: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.indices(shape)
    ids = (y // 8 * 7 + x // 10).astype(np.uint64) + np.uint64(2**60)
    ids[z == 0] = np.uint64(2**53 + 1)
    ids[(z == 1) & (x < 5)] = np.uint64(2**53)
    ids[(z == 2) & (y < 3)] = 0
    return ids


def _read_info(root: Path) -> dict:
    return json.loads((root / "info").read_text())


def _write_info(root: Path, info: dict) -> None:
    (root / "info").write_text(json.dumps(info))


# -- case A: uint8 image, 3 scales, raw, unsharded, voxel_offset --------------------------
A_OFFSETS = ([8, 16, 2], [4, 8, 2], [2, 4, 2])


@pytest.fixture(scope="module")
def image_template(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[str]]:
    root = tmp_path_factory.mktemp("prec") / "image"
    truth = [_image((13, 90, 100))]
    truth += [truth[0][:, ::2, ::2], truth[0][:, ::4, ::4]]
    keys = []
    for i, data in enumerate(truth):
        scale = {
            "size": list(data.shape[::-1]),
            "resolution": [4 * 2**i, 4 * 2**i, 40],
            "voxel_offset": A_OFFSETS[i],
            "chunk_size": [32, 32, 8],
            "encoding": "raw",
        }
        meta = {"type": "image", "data_type": "uint8", "num_channels": 1} if i == 0 else None
        keys.append(_ts_write(root, scale, data, meta))
    return root, truth, keys


@pytest.fixture
def image_volume(image_template, tmp_path) -> tuple[Path, list[np.ndarray], list[str]]:
    root, truth, keys = image_template
    shutil.copytree(root, tmp_path / "image")
    return tmp_path / "image", truth, keys


def raw_image_case(image_volume) -> ContractCase:
    """Case A as a contract case (also served over HTTP by tests/remote)."""
    root, truth, keys = image_volume

    def corrupt():
        chunk = root / keys[0] / "40-72_48-80_2-10"
        chunk.write_bytes(chunk.read_bytes()[:1000])
        return 0, (0, 32, 32), (8, 64, 64)

    return ContractCase(
        source=str(root),
        backend="precomputed",
        expected=truth,
        resolutions=[(40.0, 4.0, 4.0), (40.0, 8.0, 8.0), (40.0, 16.0, 16.0)],
        kind="image",
        chunk_shape=(8, 32, 32),
        origin_nm=(80.0, 64.0, 32.0),
        corrupt=corrupt,
        writable=True,
    )


class TestRawImageContract(BackendContract):
    """A tensorstore-written raw image: edge chunks truncated, voxel_offset non-zero."""

    @pytest.fixture
    def case(self, image_volume) -> ContractCase:
        return raw_image_case(image_volume)


# -- case B: uint64 compressed_segmentation, sharded --------------------------------------
def _compressed_morton(position: tuple[int, ...], grid: tuple[int, ...]) -> int:
    """Chunk id of a grid position (x, y, z), by the documented bit interleaving."""
    code, out_bit = 0, 0
    for bit in range(max(grid).bit_length()):
        for dim in range(3):
            if (1 << bit) < grid[dim]:
                code |= ((position[dim] >> bit) & 1) << out_bit
                out_bit += 1
    return code


def _chunk_in_shards(directory: Path, minishard_bits: int, chunk_id: int) -> tuple[Path, int, int]:
    """Locate one chunk's bytes by parsing shard and minishard indices (documented layout)."""
    header = 16 * 2**minishard_bits
    for shard in sorted(directory.glob("*.shard")):
        buf = shard.read_bytes()
        for start, end in np.frombuffer(buf[:header], "<u8").reshape(-1, 2).tolist():
            if start == end:
                continue
            index = np.frombuffer(gzip.decompress(buf[header + start : header + end]), "<u8")
            ids, gaps, sizes = index.reshape(3, -1)
            position = 0
            for cid, gap, size in zip(np.cumsum(ids).tolist(), gaps.tolist(), sizes.tolist()):
                begin = position + gap
                position = begin + size
                if cid == chunk_id:
                    return shard, header + begin, header + position
    raise AssertionError(f"chunk {chunk_id} not found in {directory}")


@pytest.fixture(scope="module")
def segmentation_template(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[str]]:
    root = tmp_path_factory.mktemp("prec") / "seg"
    truth = [_segmentation((20, 48, 64))]
    truth.append(truth[0][:, ::2, ::2])
    keys = []
    for i, data in enumerate(truth):
        scale = {
            "size": list(data.shape[::-1]),
            "resolution": [8 * 2**i, 8 * 2**i, 30],
            "voxel_offset": [-16 // 2**i, 0, 4],
            "chunk_size": [16, 16, 8],
            "encoding": "compressed_segmentation",
            "compressed_segmentation_block_size": [8, 8, 4],
            "sharding": SHARDING,
        }
        meta = {"type": "segmentation", "data_type": "uint64", "num_channels": 1}
        keys.append(_ts_write(root, scale, data, meta if i == 0 else None))
    return root, truth, keys


@pytest.fixture
def segmentation_volume(segmentation_template, tmp_path):
    root, truth, keys = segmentation_template
    shutil.copytree(root, tmp_path / "seg")
    return tmp_path / "seg", truth, keys


def sharded_case(segmentation_volume) -> ContractCase:
    """Case B as a contract case (also served over HTTP by tests/remote)."""
    root, truth, keys = segmentation_volume

    def corrupt():
        chunk_id = _compressed_morton((1, 1, 0), (4, 3, 3))
        shard, begin, end = _chunk_in_shards(root / keys[0], 1, chunk_id)
        buf = bytearray(shard.read_bytes())
        buf[begin:end] = b"\xff" * (end - begin)
        shard.write_bytes(bytes(buf))
        return 0, (0, 16, 16), (8, 32, 32)

    return ContractCase(
        source="precomputed://" + str(root),
        backend="precomputed",
        expected=truth,
        resolutions=[(30.0, 8.0, 8.0), (30.0, 16.0, 16.0)],
        kind="segmentation",
        chunk_shape=(8, 16, 16),
        origin_nm=(120.0, 0.0, -128.0),
        corrupt=corrupt,
        writable=True,
    )


class TestShardedSegmentationContract(BackendContract):
    """uint64 ids beyond 2**53, compressed_segmentation, sharded, negative voxel_offset."""

    @pytest.fixture
    def case(self, segmentation_volume) -> ContractCase:
        return sharded_case(segmentation_volume)


def test_truncated_shard_file_is_a_chunk_error(segmentation_volume):
    root, _, keys = segmentation_volume
    for shard in (root / keys[0]).glob("*.shard"):
        shard.write_bytes(shard.read_bytes()[:40])
    vol = nc.open_volume(root)
    with pytest.raises(ChunkError):
        vol.read_voxels(0, (0, 0, 0), vol.scales[0].shape)


def test_describe_names_sharding_and_encoding(segmentation_volume):
    root, _, _ = segmentation_volume
    info = nc.open_volume(root).describe()["precomputed"]
    assert info["type"] == "segmentation"
    assert info["scales"][0]["sharding"]["hash"] == "murmurhash3_x86_128"
    assert info["scales"][0]["encoding"] == "compressed_segmentation"
    assert info["scales"][0]["chunk_sizes_xyz"] == [[16, 16, 8]]
    assert info["scales"][0]["reader"] == "tensorstore"


# -- jpeg and png ---------------------------------------------------------------------------
def _decode_image_chunks(directory: Path, shape: tuple[int, int, int], chunk: tuple[int, ...]):
    """Assemble a z, y, x volume by decoding each chunk file with PIL (documented layout)."""
    out = np.zeros(shape, dtype=np.uint8)
    for path in directory.iterdir():
        (x0, x1), (y0, y1), (z0, z1) = (map(int, r.split("-")) for r in path.name.split("_"))
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == ((y1 - y0) * (z1 - z0), x1 - x0)
        out[z0:z1, y0:y1, x0:x1] = pixels.reshape(z1 - z0, y1 - y0, x1 - x0)
    return out


def _smooth(shape: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.indices(shape)
    return (100 + 60 * np.sin(x / 7.0) * np.cos(y / 9.0) + 5 * z).astype(np.uint8)


def test_jpeg_matches_an_independent_decoder(tmp_path):
    truth = _smooth((9, 30, 40))
    scale = {"size": [40, 30, 9], "resolution": [4, 4, 40], "chunk_size": [16, 16, 4]}
    meta = {"type": "image", "data_type": "uint8", "num_channels": 1}
    key = _ts_write(tmp_path, {**scale, "encoding": "jpeg"}, truth, meta)
    expected = _decode_image_chunks(tmp_path / key, truth.shape, (4, 16, 16))
    vol = nc.open_volume(tmp_path)
    got = vol.read_voxels(0, (0, 0, 0), truth.shape)
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got.astype(int) - truth).mean() < 3
    np.testing.assert_array_equal(
        vol.read_voxels(0, (3, 5, 7), (8, 29, 39)), expected[3:8, 5:29, 7:39]
    )
    with pytest.raises(ReadOnlyError, match="lossy"):
        nc.open_volume(tmp_path, mode="r+")


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_png_is_lossless(tmp_path, dtype):
    truth = (_image((9, 30, 40)).astype(dtype) * (257 if dtype == "uint16" else 1)).astype(dtype)
    scale = {"size": [40, 30, 9], "resolution": [4, 4, 40], "chunk_size": [16, 16, 4]}
    meta = {"type": "image", "data_type": dtype, "num_channels": 1}
    _ts_write(tmp_path, {**scale, "encoding": "png"}, truth, meta)
    vol = nc.open_volume(tmp_path, mode="r+")
    got = vol.read_voxels(0, (0, 0, 0), truth.shape)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, truth)
    vol.write(np.full((2, 3, 4), 9, dtype=dtype), at=(0, 0, 0))
    assert (nc.open_volume(tmp_path).read_voxels(0, (0, 0, 0), (2, 3, 4)) == 9).all()


# -- multi-channel --------------------------------------------------------------------------
def test_channels_are_separate_entries(tmp_path):
    truth = np.stack([_image((5, 20, 30), seed=s) for s in range(3)])
    scale = {"size": [30, 20, 5], "resolution": [4, 4, 40], "chunk_size": [16, 16, 4]}
    meta = {"type": "image", "data_type": "uint8", "num_channels": 3}
    _ts_write(tmp_path, {**scale, "encoding": "raw"}, truth, meta)
    entries = nc.list_contents(tmp_path)
    assert [e.source.inner for e in entries] == ["c0", "c1", "c2"]
    for c, entry in enumerate(entries):
        got = nc.open_volume(entry.source).read_voxels(0, (0, 0, 0), truth.shape[1:])
        np.testing.assert_array_equal(got, truth[c])
    np.testing.assert_array_equal(
        nc.open_volume(f"{tmp_path}#c2").read_voxels(0, (1, 2, 3), (4, 18, 29)),
        truth[2, 1:4, 2:18, 3:29],
    )
    default = nc.open_volume(tmp_path)
    np.testing.assert_array_equal(default.read_voxels(0, (0, 0, 0), truth.shape[1:]), truth[0])
    with pytest.raises(SourceNotFoundError, match=r"c0\.\.c2"):
        nc.open_volume(f"{tmp_path}#c3")
    vol = nc.open_volume(f"{tmp_path}#c1", mode="r+")
    vol.write(np.full((2, 2, 2), 250, np.uint8), at=(0, 0, 0))
    for c in (0, 2):
        np.testing.assert_array_equal(
            nc.open_volume(f"{tmp_path}#c{c}").read_voxels(0, (0, 0, 0), truth.shape[1:]),
            truth[c],
        )
    assert (nc.open_volume(f"{tmp_path}#c1").read_voxels(0, (0, 0, 0), (2, 2, 2)) == 250).all()


# -- CloudVolume-style gzip'd chunk files (``*.gz``), by the documented layout --------------
def _write_gz_volume(
    root: Path, data: np.ndarray, encoding: str, *, plain: tuple = (), offset=(1, 5, 3)
) -> Path:
    """Write chunks as CloudVolume does on local disk: gzip'd, named ``x0-x1_y0-y1_z0-z1.gz``."""
    chunk = (4, 16, 16)
    scale = {
        "key": "s0",
        "size": list(data.shape[::-1]),
        "resolution": [4, 4, 40],
        "voxel_offset": list(offset[::-1]),
        "chunk_sizes": [list(chunk[::-1])],
        "encoding": encoding,
    }
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [8, 8, 4]
    kind = "segmentation" if data.dtype.itemsize == 8 else "image"
    info = {"type": kind, "data_type": data.dtype.name, "num_channels": 1, "scales": [scale]}
    root.mkdir(parents=True, exist_ok=True)
    _write_info(root, info)
    (root / "s0").mkdir()
    grid = [range(0, n, c) for n, c in zip(data.shape, chunk)]
    for z0 in grid[0]:
        for y0 in grid[1]:
            for x0 in grid[2]:
                sub = data[z0 : z0 + 4, y0 : y0 + 16, x0 : x0 + 16]
                lo = (z0, y0, x0)
                hi = [a + n for a, n in zip(lo, sub.shape)]
                name = "_".join(
                    f"{a + o}-{b + o}" for a, b, o in zip(lo[::-1], hi[::-1], offset[::-1])
                )
                if encoding == "raw":
                    payload = (
                        np.ascontiguousarray(sub).astype(sub.dtype.newbyteorder("<")).tobytes()
                    )
                else:
                    xyzc = np.asfortranarray(sub.transpose(2, 1, 0)[..., np.newaxis])
                    payload = compressed_segmentation.compress(xyzc, (8, 8, 4), order="F")
                if lo in plain:
                    (root / "s0" / name).write_bytes(payload)
                else:
                    (root / "s0" / f"{name}.gz").write_bytes(gzip.compress(payload))
    return root / "s0"


@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation"])
def test_gz_chunk_files_read_natively(tmp_path, encoding):
    truth = _image((9, 30, 40)).astype(np.uint16) * 200
    if encoding == "compressed_segmentation":
        truth = _segmentation((9, 30, 40))
    _write_gz_volume(tmp_path / "v", truth, encoding, plain=[(0, 0, 0), (4, 16, 16)])
    vol = nc.open_volume(tmp_path / "v")
    assert vol.describe()["precomputed"]["scales"][0]["reader"] == "native (gzip files)"
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), truth.shape), truth)
    np.testing.assert_array_equal(
        vol.read_voxels(0, (2, 3, 5), (9, 29, 33)), truth[2:9, 3:29, 5:33]
    )
    assert vol.read_voxels(0, (0, 0, 0), (1, 1, 1)).dtype == truth.dtype
    with pytest.raises(ReadOnlyError, match=r"\.gz"):
        nc.open_volume(tmp_path / "v", mode="r+")


def test_tensorstore_alone_would_read_gz_files_as_zeros(tmp_path):
    """Why the native reader exists; if this starts failing, tensorstore learnt ``.gz``."""
    truth = _image((9, 30, 40))
    _write_gz_volume(tmp_path / "v", truth, "raw")
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(tmp_path / "v")},
    }
    assert not ts.open(spec).result().read().result().any()


def test_gz_missing_chunk_reads_zero(tmp_path):
    truth = _image((9, 30, 40)) | 1
    directory = _write_gz_volume(tmp_path / "v", truth, "raw")
    (directory / "3-19_21-35_5-9.gz").unlink()
    got = nc.open_volume(tmp_path / "v").read_voxels(0, (0, 0, 0), truth.shape)
    assert (got[4:8, 16:30, 0:16] == 0).all()
    want = truth.copy()
    want[4:8, 16:30, 0:16] = 0
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated gzip stream
        lambda b: gzip.compress(gzip.decompress(b)[:-7]),  # short raw chunk inside
        lambda b: gzip.compress(bytes(50_000_000)),  # decompression bomb
        lambda b: b[:10] + bytes(len(b) - 10),  # corrupt deflate data
    ],
    ids=["truncated", "short", "bomb", "corrupt"],
)
def test_gz_damaged_chunk_fails_only_that_chunk(tmp_path, damage):
    truth = _image((9, 30, 40))
    directory = _write_gz_volume(tmp_path / "v", truth, "raw")
    path = directory / "19-35_5-21_5-9.gz"
    path.write_bytes(damage(path.read_bytes()))
    vol = nc.open_volume(tmp_path / "v")
    tracemalloc.start()
    with pytest.raises(ChunkError, match="19-35_5-21_5-9"):
        vol.read_voxels(0, (4, 0, 16), (8, 16, 32))
    assert tracemalloc.get_traced_memory()[1] < 2**23
    tracemalloc.stop()
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), (4, 30, 40)), truth[:4])


def test_gz_corrupt_compressed_segmentation_is_a_chunk_error(tmp_path):
    truth = _segmentation((9, 30, 40))
    directory = _write_gz_volume(tmp_path / "v", truth, "compressed_segmentation")
    path = directory / "3-19_5-21_1-5.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[4:12] = b"\xff" * 8  # first block header: offsets far past the end
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ChunkError, match="3-19_5-21_1-5"):
        nc.open_volume(tmp_path / "v").read_voxels(0, (0, 0, 0), (2, 2, 2))


def test_other_compressed_chunk_names_are_refused(tmp_path):
    directory = _write_gz_volume(tmp_path / "v", _image((9, 30, 40)), "raw")
    for path in list(directory.iterdir())[:3]:
        path.rename(path.with_suffix(".br"))
    with pytest.raises(UnsupportedEncodingError, match=r"\.br"):
        nc.open_volume(tmp_path / "v")


def test_gz_jpeg_is_refused(tmp_path):
    directory = _write_gz_volume(tmp_path / "v", _image((9, 30, 40)), "raw")
    info = _read_info(tmp_path / "v")
    info["scales"][0]["encoding"] = "jpeg"
    _write_info(tmp_path / "v", info)
    assert directory.is_dir()
    with pytest.raises(UnsupportedEncodingError, match="jpeg"):
        nc.open_volume(tmp_path / "v")


# -- the native compressed_segmentation decoder ---------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_native_decoder_matches_the_reference_encoder(dtype):
    rng = np.random.default_rng(1)
    for _ in range(40):
        shape = tuple(int(v) for v in rng.integers(1, 20, 3))  # x, y, z
        block = tuple(int(v) for v in rng.choice([2, 4, 8], 3))
        n_values = int(rng.choice([1, 2, 3, 5, 17, 300, 70000]))
        values = rng.integers(0, 2**31, n_values).astype(dtype) + dtype(2**31 - 1)
        xyzc = np.asfortranarray(values[rng.integers(0, n_values, (*shape, 1))])
        encoded = compressed_segmentation.compress(xyzc, block_size=block, order="F")
        got = decode_compressed_segmentation(encoded, shape[::-1], np.dtype(dtype), 1, block[::-1])
        np.testing.assert_array_equal(got, xyzc.transpose(3, 2, 1, 0))


def test_native_decoder_reads_tensorstore_two_channel_chunks(tmp_path):
    truth = np.stack([_segmentation((5, 20, 20)).astype(np.uint32) % 1000 for _ in range(2)])
    truth[1] += 7
    scale = {"size": [20, 20, 5], "resolution": [4, 4, 40], "chunk_size": [16, 16, 4]}
    meta = {"type": "segmentation", "data_type": "uint32", "num_channels": 2}
    scale |= {
        "encoding": "compressed_segmentation",
        "compressed_segmentation_block_size": [8, 8, 8],
    }
    key = _ts_write(tmp_path, scale, truth, meta)
    for path in (tmp_path / key).iterdir():
        (x0, x1), (y0, y1), (z0, z1) = (map(int, r.split("-")) for r in path.name.split("_"))
        got = decode_compressed_segmentation(
            path.read_bytes(), (z1 - z0, y1 - y0, x1 - x0), np.dtype(np.uint32), 2, (8, 8, 8)
        )
        np.testing.assert_array_equal(got, truth[:, z0:z1, y0:y1, x0:x1])


def _mutations(encoded: bytes, rng: np.random.Generator, count: int) -> Iterator[bytes]:
    """``encoded`` cut short, with a few bytes changed, or with junk appended."""
    for _ in range(count):
        data = bytearray(encoded)
        kind = rng.integers(0, 3)
        if kind == 0:
            data = data[: rng.integers(0, len(data))]
        elif kind == 1:
            for _ in range(rng.integers(1, 5)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        else:
            data += bytes(rng.integers(0, 256, rng.integers(1, 50), dtype=np.uint8))
        yield bytes(data)


def _decode_or_error(data: bytes) -> np.ndarray | str:
    try:
        return decode_compressed_segmentation(data, (8, 16, 16), np.dtype(np.uint64), 1, (8, 8, 8))
    except ValueError as exc:
        return str(exc)


def test_native_decoder_survives_mutated_input():
    """The C decoder crashes on such input; this one must only raise ValueError."""
    rng = np.random.default_rng(2)
    xyzc = np.asfortranarray(rng.integers(0, 40, (16, 16, 8, 1)).astype(np.uint64))
    encoded = compressed_segmentation.compress(xyzc, block_size=(8, 8, 8), order="F")
    for data in _mutations(encoded, rng, 300):
        out = _decode_or_error(data)
        assert isinstance(out, str) or out.shape == (1, 8, 16, 16)


def test_native_and_numpy_decoders_accept_and_refuse_the_same_input(monkeypatch):
    rng = np.random.default_rng(3)
    xyzc = np.asfortranarray(rng.integers(0, 300, (16, 16, 8, 1)).astype(np.uint64))
    encoded = compressed_segmentation.compress(xyzc, block_size=(8, 8, 8), order="F")
    samples = [encoded, *_mutations(encoded, rng, 300)]
    native = [_decode_or_error(data) for data in samples]
    monkeypatch.setattr(codecs, "_native_decoder", lambda dtype: None)
    for data, got in zip(samples, native, strict=True):
        expected = _decode_or_error(data)
        if isinstance(expected, str):
            assert got == expected
        else:
            np.testing.assert_array_equal(got, expected)
    assert not isinstance(native[0], str) and sum(isinstance(n, str) for n in native) > 50


# -- bad input -------------------------------------------------------------------------------
def _edit_scale(root: Path, **fields) -> None:
    info = _read_info(root)
    for name, value in fields.items():
        if value is None:
            info["scales"][0].pop(name, None)
        else:
            info["scales"][0][name] = value
    _write_info(root, info)


def test_info_not_json_names_the_file(image_volume):
    root, _, _ = image_volume
    (root / "info").write_text("{not json")
    with pytest.raises(MetadataError, match="info") as err:
        PrecomputedBackend.open(nc.parse_source(f"precomputed://{root}"))
    assert err.value.path == str(root / "info")


def test_deeply_nested_info_is_a_metadata_error(image_volume):
    root, _, _ = image_volume
    (root / "info").write_text("[" * 100_000)
    with pytest.raises(MetadataError, match="nested"):
        nc.open_volume(f"precomputed://{root}")


def test_missing_scales_names_the_field(image_volume):
    root, _, _ = image_volume
    info = _read_info(root)
    del info["scales"]
    _write_info(root, info)
    with pytest.raises(MetadataError) as err:
        nc.open_volume(f"precomputed://{root}")
    assert err.value.field == "scales"


def test_absurd_size_is_refused_before_allocating(image_volume):
    root, _, _ = image_volume
    _edit_scale(root, size=[1e12, 1e12, 1e12])
    tracemalloc.start()
    with pytest.raises(MetadataError) as err:
        nc.open_volume(root)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert err.value.field == "scales[0].size"
    assert peak < 2**22


@pytest.mark.parametrize(
    ("field", "value", "error", "where"),
    [
        ("encoding", "zfp", UnsupportedEncodingError, "scales[0].encoding"),
        ("encoding", "compresso", UnsupportedEncodingError, "scales[0].encoding"),
        ("encoding", "compressed_segmentation", UnsupportedEncodingError, "scales[0].encoding"),
        ("chunk_sizes", None, MetadataError, "scales[0].chunk_sizes"),
        ("chunk_sizes", [], MetadataError, "scales[0].chunk_sizes"),
        ("chunk_sizes", [[0, 32, 8]], MetadataError, "scales[0].chunk_sizes[0]"),
        ("chunk_sizes", [[2**20, 2**20, 8]], MetadataError, "scales[0].chunk_sizes[0]"),
        ("resolution", [4, -4, 40], MetadataError, "scales[0].resolution"),
        ("voxel_offset", [1.5, 0, 0], MetadataError, "scales[0].voxel_offset"),
        ("key", "../../../etc", UnsafeDataError, "scales[0].key"),
        ("key", None, MetadataError, "scales[0].key"),
        (
            "sharding",
            {"@type": "neuroglancer_uint64_sharded_v1", "hash": "md5"},
            UnsupportedEncodingError,
            "scales[0].sharding.hash",
        ),
        ("sharding", {"@type": "other"}, UnsupportedEncodingError, "scales[0].sharding.@type"),
        (
            "sharding",
            {**SHARDING, "shard_bits": 99},
            MetadataError,
            "scales[0].sharding.shard_bits",
        ),
        (
            "sharding",
            {**SHARDING, "minishard_bits": -1},
            MetadataError,
            "scales[0].sharding.minishard_bits",
        ),
        (
            "sharding",
            {**SHARDING, "data_encoding": "lz4"},
            UnsupportedEncodingError,
            "scales[0].sharding.data_encoding",
        ),
    ],
)
def test_bad_scale_fields_are_named(image_volume, field, value, error, where):
    root, _, _ = image_volume
    _edit_scale(root, **{field: value})
    with pytest.raises(error) as err:
        nc.open_volume(root)
    assert err.value.field == where
    assert err.value.path == str(root / "info")


def test_compressed_segmentation_needs_its_block_size(segmentation_volume):
    root, _, _ = segmentation_volume
    _edit_scale(root, compressed_segmentation_block_size=None)
    with pytest.raises(MetadataError, match="compressed_segmentation_block_size"):
        nc.open_volume(root)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("data_type", "complex64", UnsupportedEncodingError),
        ("data_type", "float64", UnsupportedEncodingError),
        ("data_type", None, MetadataError),
        ("type", "mesh", MetadataError),
        ("@type", "neuroglancer_annotations_v1", UnsupportedEncodingError),
        ("num_channels", 0, MetadataError),
        ("scales", [], MetadataError),
        ("scales", ["x"], MetadataError),
    ],
)
def test_bad_top_level_fields_are_named(image_volume, field, value, error):
    root, _, _ = image_volume
    info = _read_info(root)
    if value is None:
        del info[field]
    else:
        info[field] = value
    _write_info(root, info)
    with pytest.raises(error) as err:
        nc.open_volume(f"precomputed://{root}")
    assert err.value.field.startswith(field)


def test_escaping_key_is_unsafe_even_through_a_symlink(image_volume, tmp_path):
    root, _, keys = image_volume
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    _edit_scale(root, key="link")
    with pytest.raises(UnsafeDataError):
        nc.open_volume(root)
    assert issubclass(UnsafeDataError, MetadataError)


def test_key_with_dotdot_inside_the_root_is_fine(image_volume):
    root, truth, keys = image_volume
    (root / "sub").mkdir()
    _edit_scale(root, key=f"sub/../{keys[0]}")
    got = nc.open_volume(root).read_voxels(0, (0, 0, 0), truth[0].shape)
    np.testing.assert_array_equal(got, truth[0])


def test_truncated_raw_chunk_is_a_chunk_error(image_volume):
    root, _, keys = image_volume
    chunk = root / keys[0] / "8-40_16-48_2-10"
    chunk.write_bytes(chunk.read_bytes()[:-1])
    with pytest.raises(ChunkError) as err:
        nc.open_volume(root).read_voxels(0, (0, 0, 0), (1, 1, 1))
    assert isinstance(err.value, OSError) and err.value.scale == 0


def test_missing_chunk_reads_zero(image_volume):
    root, truth, keys = image_volume
    (root / keys[0] / "8-40_16-48_2-10").unlink()
    got = nc.open_volume(root).read_voxels(0, (0, 0, 0), (9, 40, 40))
    assert not got[:8, :32, :32].any()
    np.testing.assert_array_equal(got[8:], truth[0][8:9, :40, :40])


def test_opening_reads_no_chunk(image_volume):
    root, _, keys = image_volume
    for key in keys:
        for chunk in (root / key).iterdir():
            chunk.write_bytes(b"garbage")
    vol = nc.open_volume(root)
    assert vol.shape == (13, 90, 100)
    with pytest.raises(ChunkError):
        vol.read_voxels(2, (0, 0, 0), (1, 1, 1))


def test_sniff_refuses_garbage_without_raising(tmp_path):
    sniff = PrecomputedBackend.sniff
    cases = {
        "empty": None,
        "not-json": b"\x00\xff garbage",
        "json-list": b"[1, 2]",
        "no-scales": b'{"type": "image"}',
        "deep": b"[" * 100_000,
        "annotations": b'{"@type": "neuroglancer_annotations_v1", "spatial": []}',
    }
    for name, content in cases.items():
        (tmp_path / name).mkdir()
        if content is not None:
            (tmp_path / name / "info").write_bytes(content)
        assert not sniff(nc.Source(str(tmp_path / name))), name
    (tmp_path / "dir-info").mkdir()
    (tmp_path / "dir-info" / "info").mkdir()
    assert not sniff(nc.Source(str(tmp_path / "dir-info")))
    (tmp_path / "file").write_bytes(b"\x89PNG")
    assert not sniff(nc.Source(str(tmp_path / "file")))
    assert not sniff(nc.Source(str(tmp_path / "nothing")))
    assert not sniff(nc.Source("https://example.org/vol"))
    assert sniff(nc.Source("https://example.org/vol", format="precomputed"))


def test_info_file_path_opens_its_volume(image_volume):
    root, truth, _ = image_volume
    vol = nc.open_volume(root / "info")
    assert vol.format == "precomputed" and vol.shape == truth[0].shape


def test_write_refused_read_only(image_volume):
    root, _, _ = image_volume
    with pytest.raises(ReadOnlyError):
        nc.open_volume(root).backend.write(0, (0, 0, 0), np.zeros((1, 1, 1), np.uint8))
