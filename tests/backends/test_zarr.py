"""Zarr v2/v3 and OME-Zarr, read from files written by ome-zarr-py, zarr-python and tensorstore."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr
from numcodecs import Delta
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.io import parse_url
from ome_zarr.writer import write_multiscale, write_multiscale_labels

import napari_connecto as nc
from napari_connecto.errors import (
    AmbiguousSourceError,
    ChunkError,
    MetadataError,
    SourceNotFoundError,
    UnknownFormatError,
    UnsafeDataError,
    UnsupportedEncodingError,
)
from tests.backends.contract import BackendContract, ContractCase

AXES = [
    {"name": "z", "type": "space", "unit": "nanometer"},
    {"name": "y", "type": "space", "unit": "nanometer"},
    {"name": "x", "type": "space", "unit": "nanometer"},
]


def _pyramid(data: np.ndarray, levels: int) -> list[np.ndarray]:
    return [data[:, :: 2**i, :: 2**i] for i in range(levels)]


def _image(shape=(6, 70, 90), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    return ((x * 3 + y * 5 + z * 17 + rng.integers(0, 9, shape)) % 256).astype(np.uint8)


def _segmentation(shape=(6, 70, 90)) -> np.ndarray:
    z, y, x = np.indices(shape)
    ids = (y // 16 * 7 + x // 20).astype(np.uint64) + np.uint64(2**60)
    ids[z == 0] = np.uint64(2**53 + 1)
    return ids


def _write_ome(path: Path, fmt, image, labels=None) -> Path:
    store = parse_url(str(path), mode="w", fmt=fmt).store
    root = zarr.group(store=store)
    pyramid = _pyramid(image, 3)
    transforms = [
        [
            {"type": "scale", "scale": [40.0, 4.0 * 2**i, 4.0 * 2**i]},
            {"type": "translation", "translation": [80.0, 12.0, 8.0]},
        ]
        for i in range(3)
    ]
    write_multiscale(
        pyramid,
        root,
        axes=AXES,
        fmt=fmt,
        coordinate_transformations=transforms,
        storage_options={"chunks": (2, 32, 32)},
    )
    if labels is not None:
        write_multiscale_labels(
            _pyramid(labels, 3),
            root,
            name="neurons",
            axes=AXES,
            fmt=fmt,
            coordinate_transformations=transforms,
            storage_options={"chunks": (2, 32, 32)},
        )
    return path


def _chunk_files(array_dir: Path) -> list[Path]:
    meta = {".zarray", ".zattrs", "zarr.json", ".zgroup"}
    return sorted(p for p in array_dir.rglob("*") if p.is_file() and p.name not in meta)


def _level0(group: Path) -> Path:
    return group / nc.open_volume(group).scales[0].key


def _truncator(array_dir: Path, chunk_shape, shape):
    def corrupt():
        first = _chunk_files(array_dir)[0]
        first.write_bytes(first.read_bytes()[: max(1, first.stat().st_size // 3)])
        rel = first.relative_to(array_dir).as_posix().replace(".", "/").split("/")
        idx = [int(v) for v in rel if v.isdigit()][-3:]
        start = tuple(i * c for i, c in zip(idx, chunk_shape))
        stop = tuple(min(s + c, n) for s, c, n in zip(start, chunk_shape, shape))
        return 0, start, stop

    return corrupt


def ome05_case(tmp_path) -> ContractCase:
    image = _image()
    path = _write_ome(tmp_path / "img.zarr", FormatV05(), image, _segmentation())
    return ContractCase(
        source=str(path),
        backend="zarr",
        expected=_pyramid(image, 3),
        resolutions=[(40.0, 4.0, 4.0), (40.0, 8.0, 8.0), (40.0, 16.0, 16.0)],
        kind="image",
        chunk_shape=(2, 32, 32),
        origin_nm=(80.0, 12.0, 8.0),
        corrupt=_truncator(_level0(path), (2, 32, 32), image.shape),
        writable=True,
    )


class TestOmeZarr05(BackendContract):
    @pytest.fixture
    def case(self, tmp_path):
        return ome05_case(tmp_path)


def ome04_labels_case(tmp_path) -> ContractCase:
    labels = _segmentation()
    path = _write_ome(tmp_path / "img.zarr", FormatV04(), _image(), labels)
    return ContractCase(
        source=f"zarr://{path}/labels/neurons",
        backend="zarr",
        expected=_pyramid(labels, 3),
        resolutions=[(40.0, 4.0, 4.0), (40.0, 8.0, 8.0), (40.0, 16.0, 16.0)],
        kind="segmentation",
        chunk_shape=(2, 32, 32),
        origin_nm=(80.0, 12.0, 8.0),
        corrupt=_truncator(_level0(path / "labels" / "neurons"), (2, 32, 32), labels.shape),
    )


class TestOmeZarr04Labels(BackendContract):
    @pytest.fixture
    def case(self, tmp_path):
        return ome04_labels_case(tmp_path)


def zarr_v2_case(tmp_path) -> ContractCase:
    labels = _segmentation((9, 50, 45))
    arr = zarr.create_array(
        store=str(tmp_path / "seg.zarr"),
        shape=labels.shape,
        chunks=(4, 16, 16),
        dtype="uint64",
        zarr_format=2,
        attributes={"resolution": [8, 8, 8], "offset": [16, 0, 8]},
    )
    arr[:] = labels
    return ContractCase(
        source=str(tmp_path / "seg.zarr"),
        backend="zarr",
        expected=[labels],
        resolutions=[(8.0, 8.0, 8.0)],
        kind="segmentation",
        chunk_shape=(4, 16, 16),
        origin_nm=(16.0, 0.0, 8.0),
        corrupt=_truncator(tmp_path / "seg.zarr", (4, 16, 16), labels.shape),
        writable=True,
    )


class TestZarrV2Array(BackendContract):
    """A plain zarr v2 array written by zarr-python, with funlib-style resolution/offset."""

    @pytest.fixture
    def case(self, tmp_path):
        return zarr_v2_case(tmp_path)


def zarr_v3_sharded_case(tmp_path) -> ContractCase:
    image = _image((8, 64, 96)).astype(np.uint16) * 200
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(tmp_path / "sharded.zarr")},
        "metadata": {
            "shape": list(image.shape),
            "data_type": "uint16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [8, 32, 48]}},
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [4, 16, 16],
                        "codecs": [{"name": "bytes"}, {"name": "zstd"}],
                    },
                }
            ],
        },
        "create": True,
    }
    store = ts.open(spec).result()
    store.write(image).result()
    return ContractCase(
        source=str(tmp_path / "sharded.zarr"),
        backend="zarr",
        expected=[image],
        resolutions=[(1.0, 1.0, 1.0)],
        kind="image",
        chunk_shape=(4, 16, 16),
        writable=True,
    )


class TestZarrV3Sharded(BackendContract):
    """A sharded zarr v3 array written by tensorstore."""

    @pytest.fixture
    def case(self, tmp_path):
        return zarr_v3_sharded_case(tmp_path)


def test_sharded_corrupt_shard_fails_that_region(tmp_path):
    image = np.arange(8 * 32 * 32, dtype=np.uint16).reshape(8, 32, 32)
    path = tmp_path / "s.zarr"
    zarr.create_array(
        store=str(path), shape=image.shape, shards=(8, 16, 32), chunks=(4, 16, 16), dtype="uint16"
    )[:] = image
    shard = path / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-20:] = b"\xff" * 20  # damage the shard index
    shard.write_bytes(bytes(raw))
    vol = nc.open_volume(path)
    with pytest.raises(ChunkError):
        vol.read_voxels(0, (0, 0, 0), (8, 16, 32))
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 16, 0), (8, 32, 32)), image[:, 16:])


def test_ome_contents_lists_image_and_labels(tmp_path):
    path = _write_ome(tmp_path / "img.zarr", FormatV05(), _image(), _segmentation())
    entries = nc.list_contents(path)
    assert [(e.kind, e.name) for e in entries] == [
        ("image", "img.zarr"),
        ("segmentation", "neurons"),
    ]
    seg = nc.open_volume(entries[1].source)
    assert seg.kind == "segmentation"
    assert seg.read_voxels(0, (0, 0, 0), (1, 1, 1))[0, 0, 0] == np.uint64(2**53 + 1)


def test_ome_micrometer_units_become_nm(tmp_path):
    axes = [dict(a, unit="micrometer") for a in AXES]
    root = zarr.group(store=parse_url(str(tmp_path / "um.zarr"), mode="w").store)
    write_multiscale(
        [_image()],
        root,
        axes=axes,
        coordinate_transformations=[[{"type": "scale", "scale": [0.04, 0.004, 0.004]}]],
    )
    assert nc.open_volume(tmp_path / "um.zarr").resolution.as_tuple() == pytest.approx(
        (40.0, 4.0, 4.0)
    )


def test_ome_with_channel_axis_reads_first_channel_zyx(tmp_path):
    data = np.stack([_image(seed=1), _image(seed=2)])
    root = zarr.group(store=parse_url(str(tmp_path / "czyx.zarr"), mode="w").store)
    write_multiscale([data], root, axes="czyx")
    vol = nc.open_volume(tmp_path / "czyx.zarr")
    assert vol.shape == data.shape[1:]
    np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), vol.shape), data[0])


def test_two_dimensional_array_gets_a_z_axis(tmp_path):
    arr = zarr.create_array(store=str(tmp_path / "yx.zarr"), shape=(30, 40), dtype="uint8")
    arr[:] = 9
    vol = nc.open_volume(tmp_path / "yx.zarr")
    assert vol.shape == (1, 30, 40)
    assert (vol.read_voxels(0, (0, 0, 0), (1, 30, 40)) == 9).all()


def test_v2_filters_fall_back_to_zarr_python(tmp_path):
    data = np.arange(4 * 20 * 20, dtype=np.int32).reshape(4, 20, 20)
    arr = zarr.create_array(
        store=str(tmp_path / "delta.zarr"),
        shape=data.shape,
        dtype="int32",
        chunks=(2, 10, 10),
        zarr_format=2,
        filters=[Delta(dtype="int32")],
    )
    arr[:] = data
    vol = nc.open_volume(tmp_path / "delta.zarr")
    assert vol.describe()["engine"] == ["zarr-python"]
    np.testing.assert_array_equal(vol.read_voxels(0, (1, 3, 5), (3, 17, 19)), data[1:3, 3:17, 5:19])


def test_group_of_arrays_is_ambiguous_but_listed(tmp_path):
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=2)
    root.create_array("raw", shape=(2, 8, 8), dtype="uint8")
    root.create_array("volumes/labels", shape=(2, 8, 8), dtype="uint64")
    entries = nc.list_contents(tmp_path / "c.zarr")
    assert sorted((e.name, e.kind) for e in entries) == [
        ("labels", "segmentation"),
        ("raw", "image"),
    ]
    with pytest.raises(AmbiguousSourceError) as err:
        nc.open_volume(tmp_path / "c.zarr")
    assert "raw" in str(err.value) and "labels" in str(err.value)
    assert nc.open_volume(tmp_path / "c.zarr" / "volumes" / "labels").kind == "segmentation"


# -- bad input ------------------------------------------------------------------------


def _v2_array(path: Path, **overrides) -> Path:
    path.mkdir(parents=True)
    meta = {
        "zarr_format": 2,
        "shape": [4, 8, 8],
        "chunks": [2, 4, 4],
        "dtype": "|u1",
        "compressor": None,
        "fill_value": 0,
        "filters": None,
        "order": "C",
    }
    meta.update(overrides)
    (path / ".zarray").write_text(json.dumps(meta))
    return path


def test_pickle_filter_is_refused(tmp_path):
    path = _v2_array(tmp_path / "p.zarr", filters=[{"id": "pickle", "protocol": 4}])
    with pytest.raises(UnsafeDataError) as err:
        nc.open_volume(path)
    assert ".zarray" in str(err.value) and "pickle" in str(err.value)


def test_object_dtype_is_refused(tmp_path):
    with pytest.raises(UnsafeDataError):
        nc.open_volume(_v2_array(tmp_path / "o.zarr", dtype="|O"))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"shape": [10**12, 10**12, 10**12]}, "shape"),
        ({"shape": [4, -8, 8]}, "shape"),
        ({"chunks": [0, 4, 4]}, "chunks"),
        ({"chunks": [4096, 4096, 4096]}, "chunks"),
        ({"shape": "big"}, "shape"),
    ],
)
def test_absurd_metadata_names_file_and_field(tmp_path, override, field):
    path = _v2_array(tmp_path / "bad.zarr", **override)
    with pytest.raises(MetadataError) as err:
        nc.open_volume(path)
    assert err.value.field == field and err.value.path.endswith(".zarray")


def test_unknown_dtype(tmp_path):
    with pytest.raises(UnsupportedEncodingError):
        nc.open_volume(_v2_array(tmp_path / "c.zarr", dtype="<c8"))


def test_missing_key_and_bad_json(tmp_path):
    path = _v2_array(tmp_path / "m.zarr")
    meta = json.loads((path / ".zarray").read_text())
    del meta["dtype"]
    (path / ".zarray").write_text(json.dumps(meta))
    with pytest.raises(MetadataError, match="dtype"):
        nc.open_volume(path)
    (path / ".zarray").write_text("{not json")
    with pytest.raises(MetadataError, match="not valid JSON"):
        nc.open_volume(path)


def test_absurd_v3_shape(tmp_path):
    path = tmp_path / "v3.zarr"
    path.mkdir()
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [10**12, 10**12, 10**12],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [64, 64, 64]}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": [{"name": "bytes"}],
        "fill_value": 0,
    }
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(MetadataError) as err:
        nc.open_volume(path)
    assert err.value.field == "shape"


def test_missing_ome_level(tmp_path):
    path = _write_ome(tmp_path / "img.zarr", FormatV05(), _image())
    for f in _level0(path).parent.joinpath(nc.open_volume(path).scales[2].key).rglob("*"):
        if f.is_file():
            f.unlink()
    with pytest.raises(SourceNotFoundError, match="missing"):
        nc.open_volume(path)


def test_ome_level_path_escaping_root_is_refused(tmp_path):
    path = _write_ome(tmp_path / "img.zarr", FormatV04(), _image())
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][0]["path"] = "../../etc"
    (path / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(UnsafeDataError):
        nc.open_volume(path)


def test_truncated_chunk_never_reads_as_zeros(tmp_path):
    data = np.full((4, 8, 8), 5, dtype=np.uint8)
    arr = zarr.create_array(
        store=str(tmp_path / "t.zarr"), shape=data.shape, chunks=(4, 8, 8), dtype="uint8",
        zarr_format=2, compressors=None,
    )  # fmt: skip
    arr[:] = data
    chunk = tmp_path / "t.zarr" / "0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(ChunkError):
        nc.open_volume(tmp_path / "t.zarr").read_voxels(0, (0, 0, 0), (4, 8, 8))


def test_sniff_never_raises_on_garbage(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "zarr.json").write_bytes(b"\x00\xff garbage")
    (tmp_path / "file.bin").write_bytes(b"\x00" * 10)
    for target in (tmp_path / "junk", tmp_path / "file.bin"):
        with pytest.raises(UnknownFormatError) as err:
            nc.open_volume(target)
        assert "zarr" in err.value.tried


def test_deeply_nested_or_huge_metadata_is_a_metadata_error(tmp_path):
    path = tmp_path / "deep.zarr"
    path.mkdir()
    (path / "zarr.json").write_text("[" * 100_000)
    with pytest.raises(MetadataError, match="nested too deeply"):
        nc.open_volume(f"zarr://{path}")
