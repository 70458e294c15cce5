"""N5 backend: contract cases written by tensorstore's n5 driver, plus N5-specific behaviour."""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts

import napari_connecto as nc
from napari_connecto.backends.n5 import N5Backend
from napari_connecto.errors import (
    AmbiguousSourceError,
    ChunkError,
    MetadataError,
    UnsafeDataError,
    UnsupportedEncodingError,
)
from tests.backends.contract import BackendContract, ContractCase

GZIP = {"type": "gzip"}


def write_n5(
    path: Path,
    data: np.ndarray,
    block_zyx: tuple[int, ...],
    compression: dict[str, Any] | None = None,
    **attrs: Any,
) -> Path:
    """Write ``data`` (z, y, x) as an N5 dataset with tensorstore, the reference writer."""
    metadata = {
        "dimensions": list(data.shape[::-1]),
        "blockSize": list(block_zyx[::-1]),
        "dataType": data.dtype.name,
        "compression": compression or GZIP,
        **attrs,
    }
    store = ts.open(
        {"driver": "n5", "kvstore": {"driver": "file", "path": f"{path}/"}, "metadata": metadata},
        create=True,
        open=True,
    ).result()
    store[...] = data.T  # N5 (and tensorstore's n5 driver) index x first
    return path


def set_attrs(path: Path, **changes: Any) -> dict[str, Any]:
    """Edit ``attributes.json`` (a value of ``None`` deletes the key)."""
    file = path / "attributes.json"
    doc = json.loads(file.read_text()) if file.exists() else {}
    doc.update(changes)
    doc = {k: v for k, v in doc.items() if v is not None}
    file.write_text(json.dumps(doc))
    return doc


def _pyramid(rng: np.random.Generator) -> list[np.ndarray]:
    s0 = rng.integers(0, 256, size=(11, 37, 45), dtype=np.uint8)
    s0[:, 5:9, :] = np.arange(45, dtype=np.uint8)  # some structure besides noise
    return [s0, np.ascontiguousarray(s0[:, ::2, ::2]), np.ascontiguousarray(s0[:, ::4, ::4])]


Region = tuple[int, tuple[int, int, int], tuple[int, int, int]]


def _corrupt_by_truncation(
    block: Path, start: tuple[int, int, int], stop: tuple[int, int, int]
) -> Callable[[], Region]:
    def corrupt() -> Region:
        data = block.read_bytes()
        block.write_bytes(data[: len(data) // 2])
        return 0, start, stop

    return corrupt


@pytest.fixture
def em_case(tmp_path: Path) -> ContractCase:
    """A gzip uint8 pyramid, edge blocks truncated, pixelResolution [4, 4, 40] nm (x, y, z)."""
    root = tmp_path / "em.n5"
    levels = _pyramid(np.random.default_rng(1))
    for k, data in enumerate(levels):
        write_n5(root / "raw" / f"s{k}", data, (4, 16, 16), downsamplingFactors=[2**k, 2**k, 1])
    set_attrs(root, n5="2.3.0")
    set_attrs(root / "raw", pixelResolution={"unit": "nm", "dimensions": [4, 4, 40]})
    # Block (x=1, y=1, z=1) of s0 covers z 4:8, y 16:32, x 16:32.
    corrupt = _corrupt_by_truncation(root / "raw/s0/1/1/1", (4, 16, 16), (8, 32, 32))
    return ContractCase(
        source=str(root / "raw"),
        backend="n5",
        expected=levels,
        resolutions=[(40, 4, 4), (40, 8, 8), (40, 16, 16)],
        kind="image",
        chunk_shape=(4, 16, 16),
        corrupt=corrupt,
        writable=True,
    )


@pytest.fixture
def seg_case(tmp_path: Path) -> ContractCase:
    """A zstd uint64 segmentation with ids beyond 2**53, opened via ``n5://``."""
    path = tmp_path / "labels_dir"
    rng = np.random.default_rng(2)
    data = rng.integers(0, 5, size=(6, 20, 18), dtype=np.uint64) + np.uint64(2**60 + 1)
    data[0, 0, 0] = 2**53 + 1  # not representable as float64
    data[2:4, 3:9, 2:7] = 0
    write_n5(path, data, (3, 8, 8), {"type": "zstd"}, resolution=[8, 8, 30], units=["nm"] * 3)

    def corrupt() -> Region:
        # Block (x=1, y=0, z=1) claims one voxel fewer along x than its payload holds.
        block = path / "1/0/1"
        raw = bytearray(block.read_bytes())
        raw[4:8] = struct.pack(">I", 7)
        block.write_bytes(bytes(raw))
        return 0, (3, 0, 8), (6, 8, 16)

    return ContractCase(
        source=f"n5://{path}",
        backend="n5",
        expected=[data],
        resolutions=[(30, 8, 8)],
        kind="segmentation",
        chunk_shape=(3, 8, 8),
        corrupt=corrupt,
        writable=True,
    )


class TestN5Pyramid(BackendContract):
    @pytest.fixture
    def case(self, em_case: ContractCase) -> ContractCase:
        return em_case


class TestN5Segmentation(BackendContract):
    @pytest.fixture
    def case(self, seg_case: ContractCase) -> ContractCase:
        return seg_case

    def test_ids_are_exact(self, case: ContractCase) -> None:
        got = nc.open_volume(case.source).read_voxels(0, (0, 0, 0), (1, 1, 2))
        assert got.dtype == np.uint64
        assert int(got[0, 0, 0]) == 2**53 + 1
        assert int(got[0, 0, 1]) == int(case.expected[0][0, 0, 1])


# -- layouts and encodings ---------------------------------------------------------------


def test_container_root_with_one_pyramid_opens_it(em_case: ContractCase) -> None:
    root = Path(em_case.source).parent
    vol = nc.open_volume(root)
    assert len(vol.scales) == 3 and vol.scales[0].key == "s0"
    [entry] = nc.list_contents(root)
    assert entry.kind == "image" and entry.source.location == em_case.source
    info = vol.describe()
    assert info["n5"]["version"] == "2.3.0"
    assert info["n5"]["levels"][0]["compression"]["type"] == "gzip"


@pytest.mark.parametrize(
    "compression",
    [
        {"type": "raw"},
        {"type": "bzip2"},
        {"type": "xz"},
        {"type": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2},
    ],
)
def test_other_compressions(tmp_path: Path, compression: dict[str, Any]) -> None:
    data = np.arange(3 * 10 * 7, dtype=np.int16).reshape(3, 10, 7) - 100
    write_n5(tmp_path / "d.n5", data, (2, 4, 4), compression)
    vol = nc.open_volume(tmp_path / "d.n5")
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), data.shape), data)
    assert vol.scales[0].encoding == compression["type"]
    assert vol.resolution.as_tuple() == (1.0, 1.0, 1.0)  # no resolution given


@pytest.mark.parametrize("legacy", [{"compressionType": "gzip"}, {}])
def test_old_compression_type_key(tmp_path: Path, legacy: dict[str, str]) -> None:
    data = np.arange(4 * 9 * 5, dtype=np.uint16).reshape(4, 9, 5) * 301
    path = tmp_path / "old.n5"
    write_n5(path, data, (2, 4, 4), GZIP if legacy else {"type": "raw"})
    set_attrs(path, compression=None, **legacy)
    vol = nc.open_volume(path, mode="r+")
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), data.shape), data)
    vol.write(np.full((1, 2, 2), 7, np.uint16), at=(0, 0, 0))
    assert vol.describe()["n5"]["levels"][0]["legacy_compression_key"] is True
    assert (nc.open_volume(path).read_voxels(0, (0, 0, 0), (1, 2, 2)) == 7).all()


def test_missing_block_reads_zero(tmp_path: Path) -> None:
    data = np.full((4, 8, 8), 9, dtype=np.uint8)
    path = write_n5(tmp_path / "m.n5", data, (2, 4, 4))
    (path / "1/0/1").unlink()  # x block 1, y block 0, z block 1
    got = nc.open_volume(path).read_voxels(0, (0, 0, 0), data.shape)
    assert (got[2:4, 0:4, 4:8] == 0).all()
    got[2:4, 0:4, 4:8] = 9
    assert (got == 9).all()


def test_empty_block_file_is_a_chunk_error(tmp_path: Path) -> None:
    path = write_n5(tmp_path / "e.n5", np.ones((2, 4, 4), np.uint8), (2, 4, 4))
    (path / "0/0/0").write_bytes(b"")
    with pytest.raises(ChunkError):
        nc.open_volume(path).read_voxels(0, (0, 0, 0), (1, 1, 1))


def test_big_endian_blocks_written_by_hand(tmp_path: Path) -> None:
    """A raw block built from the spec: header, then big-endian values, x fastest."""
    path = tmp_path / "be.n5"
    path.mkdir()
    attrs = {"dimensions": [3, 2, 2], "blockSize": [4, 4, 4], "dataType": "uint16"}
    set_attrs(path, compression={"type": "raw"}, **attrs)
    values = np.arange(12, dtype=np.uint16).reshape(2, 2, 3) * 1000 + 256  # z, y, x
    header = struct.pack(">HHIII", 0, 3, 3, 2, 2)  # truncated edge block: 3 x 2 x 2
    (path / "0/0").mkdir(parents=True)
    (path / "0/0/0").write_bytes(header + values.astype(">u2").tobytes())
    got = nc.open_volume(path).read_voxels(0, (0, 0, 0), (2, 2, 3))
    assert got.dtype == np.uint16 and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_two_dimensional_dataset_is_one_section(tmp_path: Path) -> None:
    data = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)
    path = tmp_path / "plane.n5"
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": f"{path}/"},
            "metadata": {"dimensions": [5, 6], "blockSize": [4, 4], "dataType": "float32",
                         "compression": GZIP, "resolution": [2, 3], "units": ["um", "um"]},
        },
        create=True,
    ).result()  # fmt: skip
    store[...] = data.T
    vol = nc.open_volume(path, mode="r+")
    assert vol.shape == (1, 6, 5) and vol.scales[0].chunk_shape == (1, 4, 4)
    assert vol.resolution.as_tuple() == (1.0, 3000.0, 2000.0)
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), (1, 6, 5))[0], data)
    vol.write(np.full((1, 2, 2), -1, np.float32), at=(0, 4, 3))
    assert (nc.open_volume(path).read_voxels(0, (0, 4, 3), (1, 6, 5)) == -1).all()


def test_trailing_unit_axes_are_accepted_others_refused(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(1, 2, 3, 4)  # c, z, y, x
    path = tmp_path / "c1.n5"
    write_n5(path, data, (1, 2, 2, 2))
    vol = nc.open_volume(path)
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), (2, 3, 4)), data[0])
    set_attrs(path, dimensions=[4, 3, 2, 2])
    with pytest.raises(UnsupportedEncodingError, match="dimensions"):
        nc.open_volume(path)


def test_group_scales_list_and_bigdataviewer_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    levels = [rng.integers(0, 9, (8, 8, 8), dtype=np.uint16)]
    levels.append(np.ascontiguousarray(levels[0][::2, ::2, ::2]))
    tp = tmp_path / "bdv.n5" / "setup0" / "timepoint0"
    for k, data in enumerate(levels):
        write_n5(tp / f"s{k}", data, (4, 4, 4))
    set_attrs(tmp_path / "bdv.n5", n5="2.5.1")
    set_attrs(tp.parent, downsamplingFactors=[[1, 1, 1], [2, 2, 2]], dataType="uint16")
    set_attrs(tp, resolution=[5, 5, 50])
    vol = nc.open_volume(tmp_path / "bdv.n5")  # setup -> timepoint -> pyramid
    assert [s.resolution.as_tuple() for s in vol.scales] == [(50, 5, 5), (100, 10, 10)]
    np.testing.assert_array_equal(vol.read_voxels(1, (0, 0, 0), (4, 4, 4)), levels[1])

    set_attrs(tp.parent, downsamplingFactors=None)
    set_attrs(tp, scales=[[1, 1, 1], [2, 2, 3]])
    vol = nc.open_volume(tp)
    assert vol.scales[1].resolution.as_tuple() == (150, 10, 10)


def test_kind_heuristics_and_two_datasets_are_ambiguous(tmp_path: Path) -> None:
    root = tmp_path / "c.n5"
    write_n5(root / "volumes/raw", np.zeros((2, 4, 4), np.uint8), (2, 4, 4))
    write_n5(root / "volumes/labels/clefts", np.zeros((2, 4, 4), np.uint8), (2, 4, 4))
    write_n5(root / "volumes/ids", np.zeros((2, 4, 4), np.uint64), (2, 4, 4))
    write_n5(root / "volumes/prob", np.zeros((2, 4, 4), np.float32), (2, 4, 4))
    entries = {e.name: e for e in nc.list_contents(root)}
    assert {n: e.kind for n, e in entries.items()} == {
        "raw": "image",
        "ids": "segmentation",
        "prob": "image",
        "clefts": "segmentation",  # clefts are labels (CREMI), whatever their dtype
    }
    with pytest.raises(AmbiguousSourceError) as err:
        nc.open_volume(root)
    assert len(err.value.candidates) == 4
    assert nc.open_volume(entries["ids"].source).kind == "segmentation"


def test_two_unrelated_datasets(tmp_path: Path) -> None:
    root = tmp_path / "two.n5"
    write_n5(root / "a", np.zeros((2, 4, 4), np.uint8), (2, 4, 4))
    write_n5(root / "b", np.ones((3, 4, 4), np.uint8), (2, 4, 4))
    assert len(nc.list_contents(root)) == 2
    with pytest.raises(AmbiguousSourceError, match=r"two\.n5/b"):
        nc.open_volume(root)
    assert nc.open_volume(f"{root}#b").shape == (3, 4, 4)


# -- malformed input ---------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_n5(tmp_path / "bad.n5" / "raw", np.zeros((2, 4, 4), np.uint8), (2, 4, 4))


def test_bad_json_names_the_file(dataset: Path) -> None:
    (dataset / "attributes.json").write_text('{"dimensions": [4, 4,')
    with pytest.raises(MetadataError, match=r"raw/attributes\.json"):
        nc.open_volume(dataset)


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"dimensions": None}, "dimensions", MetadataError),
        ({"dimensions": [7]}, "dimensions", UnsupportedEncodingError),
        ({"dimensions": [4, 4, 10**12]}, "dimensions", MetadataError),
        ({"dimensions": "big"}, "dimensions", MetadataError),
        ({"blockSize": [4, 0, 2]}, "blockSize", MetadataError),
        ({"blockSize": [4, -4, 2]}, "blockSize", MetadataError),
        ({"blockSize": [2**20, 2**20, 2]}, "blockSize", MetadataError),
        ({"dataType": "complex64"}, "dataType", UnsupportedEncodingError),
        ({"dataType": "object"}, "dataType", UnsafeDataError),
        (
            {"compression": {"type": "lz4", "blockSize": 65536}},
            "compression",
            UnsupportedEncodingError,
        ),
        ({"compression": {"type": "snappy"}}, "compression", UnsupportedEncodingError),
        (
            {"compressionType": "lz4", "compression": None},
            "compressionType",
            UnsupportedEncodingError,
        ),
        (
            {"pixelResolution": {"unit": "nm", "dimensions": [4, -4]}},
            "pixelResolution",
            MetadataError,
        ),
        ({"downsamplingFactors": [2, 0, 1]}, "downsamplingFactors", MetadataError),
    ],
)
def test_malformed_metadata(
    dataset: Path, changes: dict[str, Any], field: str, error: type[Exception], no_pickle: None
) -> None:
    set_attrs(dataset, **changes)
    started = time.perf_counter()
    with pytest.raises(error) as err:
        nc.open_volume(dataset)
    assert time.perf_counter() - started < 1.0  # fails fast, allocates nothing
    assert err.value.field.startswith(field)  # type: ignore[attr-defined]
    assert str(dataset / "attributes.json") in str(err.value)


def test_lz4_message_is_clear(dataset: Path) -> None:
    set_attrs(dataset, compression={"type": "lz4"})
    with pytest.raises(UnsupportedEncodingError, match="lz4"):
        nc.open_volume(f"n5://{dataset}")


def test_huge_but_valid_extent_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "huge.n5"
    path.mkdir()
    attrs = {"dimensions": [2**32] * 3, "blockSize": [64, 64, 64], "dataType": "uint64"}
    set_attrs(path, compression=GZIP, **attrs)
    vol = nc.open_volume(path)
    assert vol.scales[0].nbytes == 8 * 2**96
    assert (vol.read_voxels(0, (2**31, 5, 5), (2**31 + 2, 7, 9)) == 0).all()


def test_sniff_never_raises(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hello")
    (tmp_path / "garbage.bin").write_bytes(b"\x00\xff" * 100)
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "attributes.json").write_bytes(b"[" * 100_000)
    for path in ("random", "garbage.bin", "weird"):
        assert N5Backend.sniff(nc.parse_source(tmp_path / path)) is False
    assert N5Backend.sniff(nc.Source("https://example.org/data.n5")) is False
    assert N5Backend.sniff(nc.Source(str(tmp_path / "gone.n5"))) is False


def _header(dims: tuple[int, ...], mode: int = 0) -> bytes:
    return struct.pack(f">HH{len(dims)}I", mode, len(dims), *dims)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:-5], id="truncated-payload"),
        pytest.param(lambda b: b[:10], id="truncated-header"),
        pytest.param(lambda b: _header((4, 4, 3)) + b[16:], id="header-too-big"),
        pytest.param(lambda b: _header((4, 4, 1)) + b[16:], id="header-too-small"),
        pytest.param(lambda b: _header((4, 4), 0) + b[16:], id="header-wrong-ndim"),
        pytest.param(lambda b: b[:16] + bytes(x ^ 0x5A for x in b[16:]), id="payload-flipped"),
        pytest.param(lambda b: b + b"\x00" * 7, id="extended"),
    ],
)
def test_damaged_gzip_block_is_a_chunk_error(tmp_path: Path, damage: Any) -> None:
    data = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    path = write_n5(tmp_path / "dmg.n5", data, (2, 4, 4))
    block = path / "0/0/0"
    block.write_bytes(damage(block.read_bytes()))
    vol = nc.open_volume(path)
    with pytest.raises(ChunkError) as err:
        vol.read_voxels(0, (0, 0, 0), (2, 4, 4))
    assert "dmg.n5" in str(err.value)
    np.testing.assert_array_equal(vol.read_voxels(0, (2, 0, 0), (4, 8, 8)), data[2:])


def test_decompression_bomb_is_capped(tmp_path: Path) -> None:
    path = write_n5(tmp_path / "bomb.n5", np.ones((2, 4, 4), np.uint8), (2, 4, 4))
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing, as N5 writes it
    bomb = b"".join(packer.compress(bytes(1 << 22)) for _ in range(16)) + packer.flush()
    (path / "0/0/0").write_bytes(_header((4, 4, 2)) + bomb)  # 64 MiB behind 32 bytes
    started = time.perf_counter()
    with pytest.raises(ChunkError):
        nc.open_volume(path).read_voxels(0, (0, 0, 0), (2, 4, 4))
    assert time.perf_counter() - started < 0.5  # stops at the expected size


def test_writes_replace_block_files(tmp_path: Path) -> None:
    data = np.ones((2, 8, 8), np.uint16)  # all-zero blocks would not be stored at all
    path = write_n5(tmp_path / "w.n5", data, (2, 4, 4))
    before = {p.relative_to(path): p.stat().st_ino for p in path.rglob("*") if p.is_file()}
    vol = nc.open_volume(path, mode="r+")
    vol.write(np.full((1, 2, 2), 700, np.uint16), at=(1, 3, 3))  # touches 4 blocks
    after = {p.relative_to(path): p.stat().st_ino for p in path.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()  # no temp files left behind
    changed = {str(k) for k in after if after[k] != before[k]}
    assert changed == {"0/0/0", "1/0/0", "0/1/0", "1/1/0"}  # renamed into place, x index first
    got = nc.open_volume(path).read_voxels(0, (0, 0, 0), data.shape)
    assert int(got.sum()) == 128 - 4 + 4 * 700 and (got[1, 3:5, 3:5] == 700).all()


def test_deeply_nested_json_is_metadata_error(dataset: Path) -> None:
    (dataset / "attributes.json").write_text("[" * 100_000)
    with pytest.raises(MetadataError, match="nested"):
        nc.open_volume(dataset)
