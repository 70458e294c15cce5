"""HDF5 / CREMI backend: the contract on files written by h5py, CREMI annotations, bad input."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

import napari_connecto as nc
from napari_connecto.backends.hdf5 import CREMI_BACKGROUND, HDF5Backend
from napari_connecto.backends.registry import sniff_backend
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

RES = (40.0, 4.0, 4.0)
RAW_OFFSET = (80.0, 16.0, 8.0)
ANN_OFFSET = (400.0, 40.0, 20.0)
BIG = 2**53 + 1


def em_like(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth, compressible uint8 data with a little noise (like EM)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    return ((z * 7 + y * 2 + x) % 200 + rng.integers(0, 8, shape)).astype(np.uint8)


def neuron_ids(shape: tuple[int, int, int]) -> np.ndarray:
    """uint64 labels beyond float64 precision, with CREMI's background."""
    z, y, x = np.indices(shape)
    ids = (BIG + (y // 5) * 1000 + x // 7 + z).astype(np.uint64)
    ids[:, :3, :] = np.uint64(CREMI_BACKGROUND)
    ids[0, 0, 0] = np.uint64(2**64 - 2)
    return ids


def write_annotations(f: h5py.File, *, type_name: str = "types") -> None:
    ann = f.create_group("annotations")
    ann.attrs["offset"] = ANN_OFFSET
    ann["ids"] = np.array([BIG, 2, 3, 4], dtype=np.uint64)
    ann.create_dataset(
        type_name,
        data=["presynaptic_site", "postsynaptic_site", "postsynaptic_site", "presynaptic_site"],
        dtype=h5py.string_dtype(),
    )
    ann["locations"] = np.array(
        [[40.0, 8.0, 4.0], [80.0, 12.0, 16.0], [0.0, 0.0, 0.0], [120.0, 4.0, 8.0]]
    )
    ann["presynaptic_site/partners"] = np.array([[BIG, 2], [BIG, 3]], dtype=np.uint64)
    ann["comments/target_ids"] = np.array([3], dtype=np.uint64)
    ann.create_dataset("comments/comments", data=["uncertain"], dtype=h5py.string_dtype())


def write_cremi(path: Path, *, annotations: bool = True, type_name: str = "types") -> dict:
    """A small CREMI-layout file; returns the arrays written."""
    raw = em_like((12, 70, 90))
    ids = neuron_ids((6, 40, 50))
    clefts = np.full((6, 40, 50), CREMI_BACKGROUND, dtype=np.uint64)
    clefts[2:4, 10:20, 10:20] = 5
    with h5py.File(path, "w") as f:
        f.attrs["file_format"] = "0.2"
        ds = f.create_dataset("volumes/raw", data=raw, chunks=(4, 32, 32), compression="gzip")
        ds.attrs["resolution"] = RES
        ds.attrs["offset"] = RAW_OFFSET
        for name, data in (("neuron_ids", ids), ("clefts", clefts)):
            lab = f.create_dataset(f"volumes/labels/{name}", data=data, chunks=(3, 16, 16))
            lab.attrs["resolution"] = RES
        if annotations:
            write_annotations(f, type_name=type_name)
    return {"raw": raw, "neuron_ids": ids, "clefts": clefts}


def corrupt_chunk(path: Path, dataset: str, chunk_start: tuple[int, int, int]) -> None:
    """Flip the bytes of the middle of one stored chunk, in place on disk."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info_by_coord(chunk_start)
    assert info.filter_mask == 0 and info.size > 16
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 4)
        data = fh.read(info.size // 2)
        fh.seek(info.byte_offset + info.size // 4)
        fh.write(bytes(b ^ 0xFF for b in data))


class TestCremiRawContract(BackendContract):
    @pytest.fixture
    def case(self, tmp_path) -> ContractCase:
        path = tmp_path / "sample_A.h5"
        arrays = write_cremi(path)

        def corrupt() -> tuple[int, tuple[int, int, int], tuple[int, int, int]]:
            corrupt_chunk(path, "volumes/raw", (4, 32, 32))
            return 0, (4, 32, 32), (8, 64, 64)

        return ContractCase(
            source=f"{path}/volumes/raw",
            backend="hdf5",
            expected=[arrays["raw"]],
            resolutions=[RES],
            kind="image",
            chunk_shape=(4, 32, 32),
            origin_nm=RAW_OFFSET,
            corrupt=corrupt,
            writable=True,
        )


class TestCremiNeuronIdsContract(BackendContract):
    @pytest.fixture
    def case(self, tmp_path) -> ContractCase:
        path = tmp_path / "sample_B.hdf"
        arrays = write_cremi(path)
        return ContractCase(
            source=f"{path}#volumes/labels/neuron_ids",
            backend="hdf5",
            expected=[arrays["neuron_ids"]],
            resolutions=[RES],
            kind="segmentation",
            chunk_shape=(3, 16, 16),
            writable=True,
        )


class TestMultiscaleGroupContract(BackendContract):
    """A group with s0 (chunked, fletcher32) and s1 (contiguous) levels."""

    @pytest.fixture
    def case(self, tmp_path) -> ContractCase:
        path = tmp_path / "pyramid.h5"
        s0 = em_like((8, 40, 60), seed=1).astype(np.uint16)
        s1 = s0[:, ::2, ::2].copy()
        with h5py.File(path, "w") as f:
            grp = f.create_group("em")
            d0 = grp.create_dataset("s0", data=s0, chunks=(2, 16, 16), fletcher32=True)
            d0.attrs["resolution"] = [30, 8, 8]
            f.create_dataset("em/s1", data=s1).attrs["resolution"] = [30, 16, 16]

        def corrupt() -> tuple[int, tuple[int, int, int], tuple[int, int, int]]:
            corrupt_chunk(path, "em/s0", (2, 16, 16))  # caught by the Fletcher32 checksum
            return 0, (2, 16, 16), (4, 32, 32)

        return ContractCase(
            source=f"hdf5://{path}/em",
            backend="hdf5",
            expected=[s0, s1],
            resolutions=[(30.0, 8.0, 8.0), (30.0, 16.0, 16.0)],
            kind="image",
            chunk_shape=(2, 16, 16),
            corrupt=corrupt,
            writable=True,
        )


# -- CREMI specifics -------------------------------------------------------------------


def test_cremi_contents_lists_volumes_and_synapses(tmp_path):
    path = tmp_path / "cremi.hdf"
    write_cremi(path)
    entries = nc.list_contents(str(path))
    assert [(e.name, e.kind) for e in entries] == [
        ("raw", "image"),
        ("neuron_ids", "segmentation"),
        ("clefts", "segmentation"),
        ("synapses", "points"),
    ]
    assert entries[1].source.inner == "volumes/labels/neuron_ids"
    points = nc.open_points(entries[-1].source)
    assert points.name == "synapses"


def test_cremi_labels_keep_uint64_and_background(tmp_path):
    path = tmp_path / "cremi.h5"
    arrays = write_cremi(path)
    with nc.open_volume(f"{path}#volumes/labels/clefts") as vol:
        assert vol.kind == "segmentation"
        assert vol.backend.background_label == CREMI_BACKGROUND
        got = vol.read_voxels(0, (0, 0, 0), arrays["clefts"].shape)
        assert got.dtype == np.uint64
        np.testing.assert_array_equal(got, arrays["clefts"])
    with nc.open_volume(f"{path}/volumes/raw") as raw:
        assert raw.backend.background_label == 0
        assert raw.scales[0].encoding == "deflate"
        assert raw.describe()["hdf5"]["file_attrs"]["file_format"] == "0.2"


@pytest.mark.parametrize("type_name", ["types", "type"])
def test_cremi_synapses(tmp_path, type_name):
    path = tmp_path / "cremi.h5"
    write_cremi(path, type_name=type_name)
    points = nc.open_points(f"{path}#annotations")
    np.testing.assert_allclose(
        points.positions_nm,
        np.array([[40.0, 8.0, 4.0], [80.0, 12.0, 16.0], [0.0, 0.0, 0.0], [120.0, 4.0, 8.0]])
        + ANN_OFFSET,
    )
    feats = points.features
    assert feats["id"].dtype == np.uint64
    assert feats["id"].tolist() == [BIG, 2, 3, 4]
    assert feats["type"].tolist() == [
        "presynaptic_site",
        "postsynaptic_site",
        "postsynaptic_site",
        "presynaptic_site",
    ]
    assert feats["partner"].tolist() == [2, BIG, BIG, 0]
    assert feats["partners"].tolist() == ["2,3", str(BIG), str(BIG), ""]
    assert feats["comment"].tolist() == ["", "", "uncertain", ""]
    assert points.metadata["offset_nm"] == list(ANN_OFFSET)


def test_cremi_points_become_a_points_layer(tmp_path):
    from napari_connecto.layers import points_layer_data

    path = tmp_path / "cremi.h5"
    write_cremi(path)
    data, meta, layer_type = points_layer_data(nc.open_points(f"{path}#annotations"))
    assert layer_type == "points" and data.shape == (4, 3)
    assert meta["name"] == "synapses"


def _break(path: Path, edit) -> None:
    with h5py.File(path, "a") as f:
        edit(f["annotations"])


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda g: (g.__delitem__("types"), g.create_dataset("types", data=["a"] * 3)), "types"),
        (
            lambda g: (g.__delitem__("locations"), g.create_dataset("locations", (4, 2), "f8")),
            "locations",
        ),
        (lambda g: g.__delitem__("locations"), "locations"),
        (lambda g: g.__delitem__("types"), "types"),
        (lambda g: (g.__delitem__("types"), g.create_group("types")), "types"),
        (
            lambda g: g["presynaptic_site/partners"].__setitem__((0, 1), 99),
            "partners",
        ),
        (lambda g: g["locations"].__setitem__((0, 0), np.nan), "locations"),
        (lambda g: g["ids"].__setitem__(1, 3), "ids"),
        (lambda g: g.attrs.__setitem__("offset", [1.0, 2.0]), "offset"),
        (lambda g: g["comments/target_ids"].__setitem__(0, 77), "target_ids"),
    ],
)
def test_malformed_annotations_are_metadata_errors(tmp_path, edit, field):
    path = tmp_path / "cremi.h5"
    write_cremi(path)
    _break(path, edit)
    with pytest.raises(MetadataError) as err:
        nc.open_points(f"{path}#annotations")
    assert err.value.field == field
    assert str(path) in str(err.value)


# -- generic HDF5 files -------------------------------------------------------------------


def test_single_dataset_file_opens_without_inner_path(tmp_path):
    path = tmp_path / "one.h5"
    data = em_like((3, 20, 30))
    with h5py.File(path, "w") as f:
        f["meta/names"] = np.array([1, 2, 3])
        f.create_dataset("deep/down/vol", data=data)
    with nc.open_volume(str(path)) as vol:
        assert vol.source.inner == "deep/down/vol"
        assert vol.name == "vol"
        assert vol.scales[0].chunk_shape == (1, 20, 30)
        assert vol.scales[0].resolution.as_tuple() == (1.0, 1.0, 1.0)
        np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), data.shape), data)
    assert [e.name for e in nc.list_contents(str(path))] == ["vol"]


def test_2d_big_endian_dataset_is_one_section(tmp_path):
    path = tmp_path / "plane.h5"
    data = np.arange(12 * 15, dtype=">u2").reshape(12, 15)
    with h5py.File(path, "w") as f:
        f.create_dataset("plane", data=data).attrs["resolution"] = [4, 4]
    with nc.open_volume(f"{path}/plane", mode="r+") as vol:
        assert vol.shape == (1, 12, 15)
        assert vol.dtype == np.dtype("uint16")
        assert vol.resolution.as_tuple() == (1.0, 4.0, 4.0)
        np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), (1, 12, 15))[0], data)
        vol.write(np.full((1, 2, 2), 9, dtype=np.uint16), at=(0, 1, 1))
    with h5py.File(path, "r") as f:
        assert (f["plane"][1:3, 1:3] == 9).all()


def test_sniff_uses_signature_not_extension(tmp_path):
    plain = tmp_path / "no_extension"
    with h5py.File(plain, "w") as f:
        f["v"] = np.zeros((2, 2, 2), np.uint8)
    with_userblock = tmp_path / "ub.data"
    with h5py.File(with_userblock, "w", userblock_size=4096) as f:
        f["v"] = np.zeros((2, 2, 2), np.uint8)
    assert HDF5Backend.sniff(nc.parse_source(str(plain)))
    assert HDF5Backend.sniff(nc.parse_source(str(with_userblock)))
    assert not HDF5Backend.sniff(nc.parse_source(str(tmp_path)))
    assert not HDF5Backend.sniff(nc.Source("https://example.org/x.h5"))
    with nc.open_volume(str(with_userblock)) as vol:
        assert vol.shape == (2, 2, 2)


def test_external_links_are_not_followed(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["v"] = np.zeros((2, 2, 2), np.uint8)
    path = tmp_path / "links.h5"
    with h5py.File(path, "w") as f:
        f["ext"] = h5py.ExternalLink(str(other), "/v")
        f["real"] = np.ones((2, 2, 2), np.uint8)
    with pytest.raises(UnsafeDataError):
        nc.open_volume(f"{path}#ext")
    assert [e.name for e in nc.list_contents(str(path))] == ["real"]


def test_concurrent_reads_are_serialised_and_correct(tmp_path):
    path = tmp_path / "cremi.h5"
    raw = write_cremi(path)["raw"]
    vol = nc.open_volume(f"{path}/volumes/raw")
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(30):
            start = [int(rng.integers(0, n)) for n in raw.shape]
            stop = [int(rng.integers(s + 1, n + 1)) for s, n in zip(start, raw.shape, strict=True)]
            got = vol.read_voxels(0, start, stop)
            if not np.array_equal(
                got, raw[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))]
            ):
                errors.append(AssertionError(f"mismatch at {start}..{stop}"))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    vol.close()
    assert not errors
    with pytest.raises(ChunkError):
        vol.read_voxels(0, (0, 0, 0), (1, 1, 1))


def test_listing_and_points_do_not_disturb_open_volumes(tmp_path):
    path = tmp_path / "cremi.h5"
    arrays = write_cremi(path)
    raw = nc.open_volume(f"{path}#volumes/raw")
    labels = nc.open_volume(f"{path}#volumes/labels/neuron_ids")
    assert len(nc.list_contents(str(path))) == 4
    assert len(nc.open_points(f"{path}#annotations").features) == 4
    labels.close()
    np.testing.assert_array_equal(raw.read_voxels(0, (0, 0, 0), raw.shape), arrays["raw"])
    raw.close()


def test_describe_is_json_with_compression(tmp_path):
    path = tmp_path / "cremi.h5"
    write_cremi(path)
    with nc.open_volume(f"{path}/volumes/raw") as vol:
        info = json.loads(json.dumps(vol.describe()))
    ds = info["hdf5"]["datasets"][0]
    assert ds["compression"] == "gzip" and ds["chunks"] == [4, 32, 32]
    assert ds["attrs"]["resolution"] == list(RES)


# -- bad input ----------------------------------------------------------------------------


def test_missing_file_is_typed(tmp_path):
    missing = tmp_path / "absent.h5"
    with pytest.raises(SourceNotFoundError) as err:
        nc.open_volume(str(missing))
    assert isinstance(err.value, FileNotFoundError) and "absent.h5" in str(err.value)
    with pytest.raises(SourceNotFoundError) as err:
        HDF5Backend.open(nc.Source(str(missing), format="hdf5"))
    assert "absent.h5" in str(err.value)


def test_missing_inner_dataset_names_it(tmp_path):
    path = tmp_path / "cremi.h5"
    write_cremi(path, annotations=False)
    with pytest.raises(SourceNotFoundError) as err:
        nc.open_volume(f"{path}/volumes/nothing_here")
    assert "volumes/nothing_here" in str(err.value)
    with pytest.raises(SourceNotFoundError):
        nc.open_points(f"{path}#annotations")


def test_random_bytes_are_not_hdf5(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(np.random.default_rng(3).bytes(4096))
    assert not HDF5Backend.sniff(nc.parse_source(str(junk)))
    assert sniff_backend(nc.parse_source(str(junk))) is None
    with pytest.raises(UnknownFormatError):
        nc.open_volume(str(junk))
    with pytest.raises(MetadataError) as err:
        nc.open_volume(f"hdf5://{junk}")
    assert "junk.h5" in str(err.value)


@pytest.mark.parametrize("fraction", [0.5, 0.1])
def test_truncated_file_is_a_typed_error(tmp_path, fraction):
    path = tmp_path / "cut.h5"
    write_cremi(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(MetadataError) as err:
        nc.open_volume(f"{path}/volumes/raw")
    assert "cut.h5" in str(err.value)


def test_unsupported_dtypes_are_refused(tmp_path):
    path = tmp_path / "types.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("strings", shape=(2, 2, 2), dtype=h5py.string_dtype())
        f.create_dataset("fixed", shape=(2, 2, 2), dtype="S4")
        f.create_dataset("compound", shape=(2, 2, 2), dtype=[("a", "u1"), ("b", "f4")])
        f.create_dataset("four_d", shape=(2, 2, 2, 2), dtype="u1")
    with pytest.raises(MetadataError) as err:
        nc.open_volume(f"{path}#strings")
    assert err.value.field == "dtype"
    for name in ("fixed", "compound", "four_d"):
        with pytest.raises(UnsupportedEncodingError):
            nc.open_volume(f"{path}#{name}")


def test_several_volumes_are_ambiguous(tmp_path):
    path = tmp_path / "cremi.h5"
    write_cremi(path)
    with pytest.raises(AmbiguousSourceError) as err:
        nc.open_volume(str(path))
    assert f"{path}#volumes/raw" in err.value.candidates
    assert f"{path}#volumes/labels/clefts" in err.value.candidates
    with pytest.raises(AmbiguousSourceError) as err:
        nc.open_volume(f"{path}#volumes/labels")
    assert len(err.value.candidates) == 2
    with pytest.raises(MetadataError):
        nc.open_volume(f"{path}#annotations")


@pytest.mark.parametrize("value", [[-40.0, 4.0, 4.0], [np.nan, 4.0, 4.0], [4.0, 4.0], "4nm"])
def test_absurd_resolution_names_the_field(tmp_path, value):
    path = tmp_path / "res.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.zeros((2, 3, 4), np.uint8)).attrs["resolution"] = value
    with pytest.raises(MetadataError) as err:
        nc.open_volume(f"{path}#v")
    assert err.value.field == "resolution"
    assert "res.h5" in str(err.value)


def test_write_needs_r_plus_and_an_open_reader_sees_the_write(tmp_path):
    path = tmp_path / "cremi.h5"
    write_cremi(path, annotations=False)
    reader = nc.open_volume(f"{path}#volumes/raw")
    with pytest.raises(PermissionError):
        reader.backend.write(0, (0, 0, 0), np.zeros((1, 1, 1), np.uint8))
    # writes go to a copy that replaces the file, so a reader may stay open meanwhile
    with nc.open_volume(f"{path}#volumes/raw", mode="r+") as writer:
        assert writer.writable
        writer.write(np.full((1, 2, 2), 7, np.uint8), at=(0, 0, 0))
    assert (reader.read_voxels(0, (0, 0, 0), (1, 2, 2)) == 7).all()
    reader.close()


def test_cremi_sites_without_partners_still_open(tmp_path):
    path = tmp_path / "lonely.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("volumes/raw", data=np.zeros((2, 8, 8), np.uint8))
        f["annotations/ids"] = np.array([4, 9], dtype=np.uint64)
        f.create_dataset("annotations/types", data=["presynaptic_site", "postsynaptic_site"],
                         dtype=h5py.string_dtype())  # fmt: skip
        f["annotations/locations"] = np.zeros((2, 3))
    points = nc.open_points(f"{path}#annotations")
    assert points.features["partner"].tolist() == [0, 0]
    assert points.features["partners"].tolist() == ["", ""]


def test_one_bad_entry_does_not_sink_the_others(tmp_path):
    from napari_connecto.layers import layer_data_for_source

    path = tmp_path / "half.h5"
    with h5py.File(path, "w") as f:
        f.attrs["file_format"] = "0.2"
        f.create_dataset("volumes/raw", data=np.full((2, 8, 8), 3, np.uint8))
        f["annotations/ids"] = np.array([1, 2], dtype=np.uint64)  # locations missing
    layers = layer_data_for_source(path)
    assert [kind for _, _, kind in layers] == ["image"]
