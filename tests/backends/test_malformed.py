"""Malformed metadata in every format gives a typed ConnectoError, never a builtin one or a hang.

Each problem a review reproduced has a targeted test below (files written into ``tmp_path``
and opened through the public API); then one seeded fuzz test per metadata document
(zarr v2 ``.zarray``, zarr v3 ``zarr.json``, OME ``.zattrs``, N5 ``attributes.json``,
precomputed ``info``) replaces random values of a reference writer's document.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tensorstore as ts
import zarr
from numcodecs import Delta
from ome_zarr.format import FormatV04
from ome_zarr.io import parse_url
from ome_zarr.writer import write_multiscale, write_multiscale_labels

import napari_connecto as nc
from napari_connecto.backends._meta import (
    MAX_METADATA_BYTES,
    check_offset,
    check_positive_ints,
    check_resolution,
)
from napari_connecto.backends._precomputed_info import check_voxel_offset
from napari_connecto.errors import (
    ConnectoError,
    MetadataError,
    UnsafeDataError,
    UnsupportedEncodingError,
)

NAN = float("nan")

AXES = [
    {"name": "z", "type": "space", "unit": "nanometer"},
    {"name": "y", "type": "space", "unit": "nanometer"},
    {"name": "x", "type": "space", "unit": "nanometer"},
]


# -- writers ---------------------------------------------------------------------------
def dump(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON, non-finite floats as the literal ``NaN`` / ``Infinity`` text."""
    path.write_text(json.dumps(doc, allow_nan=True))


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Load the JSON at ``path``, apply ``change`` in place, write it back."""
    doc = json.loads(path.read_text())
    change(doc)
    dump(path, doc)


def image(shape: tuple[int, int, int] = (4, 8, 8)) -> np.ndarray:
    z, y, x = np.indices(shape)
    return ((z * 17 + y * 5 + x * 3) % 251).astype(np.uint8)


def v2_array(path: Path, **kwargs: Any) -> Path:
    """A small zarr v2 array written by zarr-python."""
    data = image()
    arr = zarr.create_array(
        store=str(path), shape=data.shape, chunks=(2, 4, 4), dtype="uint8", zarr_format=2, **kwargs
    )
    arr[:] = data
    return path


def v3_sharded(path: Path) -> Path:
    """A small sharded zarr v3 array written by zarr-python."""
    data = image()
    arr = zarr.create_array(
        store=str(path),
        shape=data.shape,
        chunks=(2, 4, 4),
        shards=(4, 8, 8),
        dtype="uint8",
        zarr_format=3,
        dimension_names=["z", "y", "x"],
    )
    arr[:] = data
    return path


def ome_v04(path: Path, labels: bool = True) -> Path:
    """An OME-Zarr 0.4 image (two levels) with one label image, written by ome-zarr-py."""
    data = image((4, 16, 16))
    root = zarr.group(store=parse_url(str(path), mode="w", fmt=FormatV04()).store)
    pyramid = [data, np.ascontiguousarray(data[:, ::2, ::2])]
    transforms = [
        [
            {"type": "scale", "scale": [40.0, 4.0 * 2**i, 4.0 * 2**i]},
            {"type": "translation", "translation": [80.0, 12.0, 8.0]},
        ]
        for i in range(2)
    ]
    options = {"chunks": (2, 8, 8)}
    write_multiscale(
        pyramid,
        root,
        axes=AXES,
        fmt=FormatV04(),
        coordinate_transformations=transforms,
        storage_options=options,
    )
    if labels:
        write_multiscale_labels(
            [(p > 100).astype(np.uint32) for p in pyramid],
            root,
            name="cells",
            axes=AXES,
            fmt=FormatV04(),
            coordinate_transformations=transforms,
            storage_options=options,
        )
    return path


def n5_dataset(path: Path, data: np.ndarray, block_zyx: tuple[int, ...], **attrs: Any) -> Path:
    """An N5 dataset written by tensorstore (axes x, y, z on disk), extra attributes added."""
    metadata = {
        "dimensions": list(data.shape[::-1]),
        "blockSize": list(block_zyx[::-1]),
        "dataType": data.dtype.name,
        "compression": {"type": "gzip"},
    }
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": f"{path}/"}}
    store = ts.open({**spec, "metadata": metadata}, create=True, open=True).result()
    store[...] = data.T
    if attrs:
        edit(path / "attributes.json", lambda doc: doc.update(attrs))
    return path


def precomputed(root: Path, *, sharded: bool = False) -> Path:
    """A two-scale uint8 precomputed image written by tensorstore (scale 1 optionally sharded)."""
    data = image((4, 16, 16))
    levels = [data, np.ascontiguousarray(data[:, ::2, ::2])]
    for i, level in enumerate(levels):
        scale: dict[str, Any] = {
            "size": list(level.shape[::-1]),
            "resolution": [4 * 2**i, 4 * 2**i, 40],
            "voxel_offset": [2, 4, 1] if i == 0 else [1, 2, 1],
            "chunk_size": [8, 8, 2],
            "encoding": "raw",
        }
        if sharded and i == 1:
            scale["sharding"] = {
                "@type": "neuroglancer_uint64_sharded_v1",
                "preshift_bits": 0,
                "hash": "identity",
                "minishard_bits": 1,
                "shard_bits": 1,
                "minishard_index_encoding": "raw",
                "data_encoding": "gzip",
            }
        spec: dict[str, Any] = {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(root)},
            "scale_metadata": scale,
        }
        if i == 0:
            spec["multiscale_metadata"] = {"type": "image", "data_type": "uint8", "num_channels": 1}
        store = ts.open(spec, create=True, open=True).result()
        store[...] = level.T[..., np.newaxis]
    return root


def open_and_read(source: str | Path) -> nc.Volume:
    """Open a volume, read its first and last voxel of every scale; its geometry is finite."""
    vol = nc.open_volume(str(source))
    assert all(math.isfinite(v) for v in (*vol.bbox.start, *vol.bbox.stop))
    for k, sc in enumerate(vol.scales):
        vol.read_voxels(k, (0, 0, 0), (1, 1, 1))
        last = tuple(n - 1 for n in sc.shape)
        vol.read_voxels(k, last, tuple(n + 1 for n in last))
        assert all(math.isfinite(v) for v in (*sc.resolution, *sc.origin_nm))
        assert all(v > 0 for v in sc.resolution)
    return vol


# -- 1. NaN / Infinity, and the shared validators -----------------------------------------
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_json_numbers_are_refused(tmp_path, literal):
    arr = v2_array(tmp_path / "a.zarr")
    (arr / ".zattrs").write_text(f'{{"resolution": [{literal}, 4, 4]}}')
    with pytest.raises(MetadataError) as err:
        nc.open_volume(arr)
    assert err.value.path == str(arr / ".zattrs")


def test_non_finite_literal_in_precomputed_info(tmp_path):
    root = precomputed(tmp_path / "vol")
    edit(root / "info", lambda d: d["scales"][0].update(voxel_offset=[NAN, 4, 1]))
    assert "NaN" in (root / "info").read_text()
    with pytest.raises(MetadataError, match="NaN"):
        nc.open_volume(f"precomputed://{root}")


def test_absurd_voxel_size_is_refused_before_extents_overflow(tmp_path):
    # 1e300 nm is finite, but 2**32 voxels of it (a legal voxel_offset or size) are not.
    root = precomputed(tmp_path / "vol")
    edit(root / "info", lambda d: d["scales"][0].update(resolution=[1e300] * 3))
    with pytest.raises(MetadataError) as err:
        nc.open_volume(f"precomputed://{root}")
    assert err.value.field == "scales[0].resolution"


def test_huge_integer_literal_is_a_metadata_error(tmp_path):
    arr = v2_array(tmp_path / "a.zarr")
    (arr / ".zattrs").write_text('{"offset": [' + "9" * 5000 + ", 0, 0]}")
    with pytest.raises(MetadataError):
        nc.open_volume(arr)


@pytest.mark.parametrize(
    "value",
    [b"abc", bytearray(b"abc"), "abc", [True, 1, 1], [NAN, 1, 1], [math.inf, 1, 1], [10**400, 1, 1],
     [1, 1], 5, None, {"a": 1}],
)  # fmt: skip
def test_validators_refuse_bytes_bools_and_non_finite(value):
    with pytest.raises(MetadataError):
        check_resolution("f", "resolution", value)
    with pytest.raises(MetadataError):
        check_positive_ints("f", "shape", value, 3)
    with pytest.raises(MetadataError):
        check_offset("f", "offset", value)


def test_validators_still_accept_good_values():
    assert check_positive_ints("f", "shape", [4, 8.0, np.int64(2)], 3) == (4, 8, 2)
    assert check_resolution("f", "res", [4, 4.5, np.float32(40)]) == (4.0, 4.5, 40.0)
    assert check_offset("f", "offset", [-3, 0, 1.5]) == (-3.0, 0.0, 1.5)


def test_hdf5_bytes_resolution_is_not_a_sequence_of_ints(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("raw", data=image())
        ds.attrs["resolution"] = np.bytes_(b"abc")  # was read as [97, 98, 99]
    with pytest.raises(MetadataError) as err:
        nc.open_volume(path)
    assert err.value.field == "resolution"


@pytest.mark.parametrize("bad", [math.inf, -math.inf, NAN, 1.5, True, "1"])
def test_precomputed_voxel_offset_non_finite(bad):
    with pytest.raises(MetadataError) as err:
        check_voxel_offset("info", "scales[0].voxel_offset", [bad, 0, 0])
    assert err.value.field == "scales[0].voxel_offset"


# -- 2. special files --------------------------------------------------------------------
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_info_symlinked_to_dev_zero(tmp_path):
    root = precomputed(tmp_path / "vol")
    (root / "info").unlink()
    (root / "info").symlink_to("/dev/zero")
    with pytest.raises(MetadataError, match="not a regular file"):
        nc.open_volume(f"precomputed://{root}")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_zattrs_symlinked_to_dev_zero(tmp_path):
    arr = v2_array(tmp_path / "a.zarr")
    (arr / ".zattrs").unlink(missing_ok=True)
    (arr / ".zattrs").symlink_to("/dev/zero")
    with pytest.raises(MetadataError, match="not a regular file"):
        nc.open_volume(arr)


def _finishes(call: Callable[[], Any], seconds: float = 10.0) -> BaseException | None:
    """Run ``call`` in a daemon thread; fail if it hangs, else return what it raised."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"hung for {seconds} s"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_metadata_does_not_hang(tmp_path):
    arr = v2_array(tmp_path / "a.zarr")
    (arr / ".zattrs").unlink(missing_ok=True)
    os.mkfifo(arr / ".zattrs")
    n5 = tmp_path / "b.n5"
    n5.mkdir()
    os.mkfifo(n5 / "attributes.json")
    for call in (lambda: nc.open_volume(arr), lambda: nc.open_volume(f"n5://{n5}")):
        exc = _finishes(call)
        assert isinstance(exc, MetadataError), exc


def test_oversized_metadata_is_refused_without_reading_it_all(tmp_path):
    arr = v2_array(tmp_path / "a.zarr")
    with open(arr / ".zattrs", "wb") as fh:
        fh.truncate(MAX_METADATA_BYTES + 1)  # sparse
    with pytest.raises(MetadataError, match="larger than"):
        nc.open_volume(arr)


# -- 3. OME-Zarr -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ome_template(tmp_path_factory) -> Path:
    return ome_v04(tmp_path_factory.mktemp("ome") / "img.zarr")


@pytest.fixture
def ome(ome_template, tmp_path) -> Path:
    return Path(shutil.copytree(ome_template, tmp_path / "img.zarr"))


def _ms(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["multiscales"][0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: _ms(d)["datasets"][0].update(coordinateTransformations=5),
         "multiscales[0].datasets[0].coordinateTransformations"),
        (lambda d: _ms(d).update(coordinateTransformations={"type": "scale"}),
         "multiscales[0].coordinateTransformations"),
        (lambda d: _ms(d)["datasets"][0]["coordinateTransformations"][0].update(scale=[NAN, 1, 1]),
         ""),  # the NaN literal: refused by the JSON reader
        (lambda d: _ms(d)["datasets"][0]["coordinateTransformations"][0].update(scale=[-1, 1, 1]),
         "multiscales[0].datasets[0].scale"),
        (lambda d: _ms(d)["datasets"][0]["coordinateTransformations"][1].update(
            translation=["x", 0, 0]), "multiscales[0].datasets[0].translation"),
        (lambda d: _ms(d)["datasets"][0]["coordinateTransformations"][1].update(
            translation=[True, 0, 0]), "multiscales[0].datasets[0].translation"),
        (lambda d: _ms(d)["datasets"][0]["coordinateTransformations"][0].update(scale=[1e300] * 3)
         or _ms(d).update(axes=[{**a, "unit": "meter"} for a in AXES]),
         "multiscales[0].datasets[0].scale"),  # finite, but overflows once in nm
        (lambda d: _ms(d).update(axes=["y", "y", "x"]), "multiscales[0].axes"),
        (lambda d: _ms(d).update(axes=["Y", "y", "x"]), "multiscales[0].axes"),
        (lambda d: _ms(d).update(axes=[{"type": "space"}] * 3), "multiscales[0].axes"),
        (lambda d: _ms(d).update(axes=[{"name": 5}] * 3), "multiscales[0].axes"),
        (lambda d: _ms(d).update(axes=AXES[1:], datasets=[
            {"path": ds["path"], "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}
            for ds in _ms(d)["datasets"]]), "shape"),  # two axes for 3D arrays
        (lambda d: _ms(d)["datasets"][0].update(path="../../etc"), "datasets.path"),
    ],
)  # fmt: skip
def test_malformed_ome_multiscales(ome, change, field):
    edit(ome / ".zattrs", change)
    with pytest.raises(MetadataError) as err:
        nc.open_volume(ome)
    assert err.value.field == field


def test_ome_not_an_object_in_labels(ome):
    dump(ome / "labels" / ".zattrs", {"ome": [1]})
    with pytest.raises(MetadataError) as err:
        nc.list_contents(ome)
    assert err.value.field == "ome"
    assert err.value.path.endswith(".zattrs")


def test_ome_not_an_object_at_the_image(ome):
    dump(ome / ".zattrs", {"ome": [1]})
    for call in (nc.list_contents, nc.open_volume):
        with pytest.raises(MetadataError) as err:
            call(ome)
        assert err.value.field == "ome"


def test_label_names_cannot_escape_the_image(ome):
    edit(ome / "labels" / ".zattrs", lambda d: d.update(labels=["../../../etc"]))
    with pytest.raises(UnsafeDataError):
        nc.list_contents(ome)


@pytest.mark.parametrize(
    "omero",
    [5, "x", {"channels": 5}, {"channels": [5]}, {"channels": [{"window": [1]}]},
     {"channels": [{"window": {"start": "NaN", "end": 5}}]},
     {"channels": [{"window": {"start": 9, "end": 1}}]},
     {"channels": [{"window": {"start": [1], "end": 1}}]}],
)  # fmt: skip
def test_bad_omero_window_is_ignored(ome, omero):
    edit(ome / ".zattrs", lambda d: d.update(omero=omero))
    vol = open_and_read(ome)
    assert vol.backend.contrast_limits is None


def test_good_omero_window_is_kept(ome):
    window = {"start": 10, "end": 200, "min": 0, "max": 255}
    edit(ome / ".zattrs", lambda d: d.update(omero={"channels": [{"window": window}]}))
    assert nc.open_volume(ome).backend.contrast_limits == (10.0, 200.0)


# -- 4. zarr v3 codecs, v2 filters and compressor -------------------------------------------
def _sharding(doc: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in doc["codecs"] if c["name"] == "sharding_indexed")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(codecs=["sharding_indexed"]), "codecs.sharding_indexed.configuration"),
        (lambda d: _sharding(d).update(configuration=5), "codecs.sharding_indexed.configuration"),
        (lambda d: _sharding(d).update(configuration=[]), "codecs.sharding_indexed.configuration"),
        (lambda d: _sharding(d)["configuration"].update(codecs=5),
         "codecs.sharding_indexed.codecs"),
        (lambda d: _sharding(d)["configuration"].update(codecs={"name": "bytes"}),
         "codecs.sharding_indexed.codecs"),
        (lambda d: _sharding(d)["configuration"].update(codecs=[5]),
         "codecs.sharding_indexed.codecs"),
        (lambda d: _sharding(d)["configuration"].update(chunk_shape=[3, 4, 4]),
         "codecs.sharding_indexed.chunk_shape"),
        (lambda d: d.update(codecs=5), "codecs"),
        (lambda d: d.update(codecs=[]), "codecs"),
        (lambda d: d.update(codecs=[{"name": "bytes", "configuration": 5}]),
         "codecs.bytes.configuration"),
        (lambda d: d.update(dimension_names=[1, 2, 3]), "dimension_names"),
        (lambda d: d.update(dimension_names=["z", "y"]), "dimension_names"),
        (lambda d: d.update(dimension_names=["y", "y", "x"]), "dimension_names"),
        (lambda d: d.update(data_type=None), "data_type"),
        (lambda d: d.update(data_type={"name": "uint8"}), "data_type"),
    ],
)  # fmt: skip
def test_malformed_zarr_v3_codecs(tmp_path, change, field):
    arr = v3_sharded(tmp_path / "a.zarr")
    edit(arr / "zarr.json", change)
    with pytest.raises(MetadataError) as err:
        nc.open_volume(arr)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(filters=5), "filters"),
        (lambda d: d.update(filters="delta"), "filters"),
        (lambda d: d.update(filters=[5]), "filters"),
        (lambda d: d.update(compressor="zlib"), "compressor"),
        (lambda d: d.update(compressor=[1]), "compressor"),
        (lambda d: d.update(compressor={"level": 1}), "filters/compressor"),
    ],
)
def test_malformed_zarr_v2_codecs(tmp_path, change, field):
    arr = v2_array(tmp_path / "a.zarr")
    edit(arr / ".zarray", change)
    with pytest.raises(MetadataError) as err:
        nc.open_volume(arr)
    assert err.value.field == field


# -- 5. plain-array offset -----------------------------------------------------------------
@pytest.mark.parametrize(
    "attrs",
    [
        '{"offset": "abc"}',
        '{"offset": 5}',
        '{"offset": [NaN, 0, 0]}',
        '{"offset": ["NaN", 0, 0]}',
        '{"offset": [0, 0]}',
        '{"offset": [true, 0, 0]}',
        '{"offset": null}',
    ],
)
def test_malformed_offset(tmp_path, attrs):
    arr = v2_array(tmp_path / "a.zarr")
    (arr / ".zattrs").write_text(attrs)
    with pytest.raises(MetadataError) as err:
        nc.open_volume(arr)
    assert err.value.path == str(arr / ".zattrs")


def test_good_offset_is_the_translation(tmp_path):
    arr = v2_array(
        tmp_path / "a.zarr", attributes={"resolution": [40, 4, 4], "offset": [-8, 4.5, 0]}
    )
    assert nc.open_volume(arr).scales[0].translation_nm == nc.Vec3(-8.0, 4.5, 0.0)


# -- 6. zarr-python fallback ---------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(compressor={"id": "no-such-codec"}),
        lambda d: d.update(filters=[{"id": "delta", "dtype": "xx"}]),
        lambda d: d.update(filters=[{"id": "no-such-filter"}]),
    ],
)
def test_codecs_zarr_python_cannot_build(tmp_path, change):
    arr = v2_array(tmp_path / "a.zarr")
    edit(arr / ".zarray", change)
    with pytest.raises(UnsupportedEncodingError) as err:
        nc.open_volume(arr)
    assert err.value.path == str(arr / ".zarray")


def test_zarr_python_fallback_still_reads(tmp_path):
    arr = v2_array(tmp_path / "a.zarr", filters=[Delta(dtype="uint8")])
    vol = open_and_read(arr)
    assert vol.backend.describe()["engine"] == ["zarr-python"]
    assert np.array_equal(vol.read_voxels(0, (0, 0, 0), (4, 8, 8)), image())


# -- 7. HDF5 multiscale with mismatched levels ------------------------------------------------
@pytest.mark.parametrize(
    ("s1", "problem"),
    [
        (np.zeros((4, 4), np.uint8), "dimensions"),
        (np.zeros((1, 2, 4, 4), np.uint8), "dimensions"),
        (np.zeros((0, 4, 4), np.uint8), "outside"),
    ],
)
def test_hdf5_levels_of_different_rank(tmp_path, s1, problem):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("vol/s0", data=image())
        f.create_dataset("vol/s1", data=s1)
    with pytest.raises(MetadataError, match=problem) as err:
        nc.open_volume(f"{path}#vol")
    assert err.value.path.endswith("vol/s1")


# -- 8. N5 offset ----------------------------------------------------------------------------
def test_n5_offset_is_the_translation(tmp_path):
    ds = n5_dataset(
        tmp_path / "c.n5" / "raw",
        image(),
        (2, 4, 4),
        resolution=[4, 4, 40],
        offset=[8, 12, 80],
    )
    assert nc.open_volume(ds).scales[0].translation_nm == nc.Vec3(80.0, 12.0, 8.0)
    edit(ds / "attributes.json", lambda d: d.update(units=["um", "um", "um"]))
    assert nc.open_volume(ds).scales[0].translation_nm == nc.Vec3(80e3, 12e3, 8e3)


def test_n5_multiscale_offset_per_level(tmp_path):
    root = tmp_path / "c.n5" / "vol"
    n5_dataset(root / "s0", image(), (2, 4, 4), offset=[4, 4, 40])
    n5_dataset(root / "s1", image()[:, ::2, ::2], (2, 4, 4), downsamplingFactors=[2, 2, 1])
    dump(root / "attributes.json", {"resolution": [4, 4, 40], "offset": [2, 2, 40]})
    scales = nc.open_volume(root).scales
    assert scales[0].translation_nm == nc.Vec3(40.0, 4.0, 4.0)  # its own
    assert scales[1].translation_nm == nc.Vec3(40.0, 2.0, 2.0)  # the group's
    assert scales[1].resolution == nc.Vec3(40.0, 8.0, 8.0)


@pytest.mark.parametrize(
    "attrs",
    [
        {"offset": "abc"},
        {"offset": [NAN, 0, 0]},
        {"offset": [1, True, 0]},
        {"offset": [1e300, 0, 0], "units": ["m", "m", "m"]},
        {"resolution": [1e300, 1, 1], "units": ["m", "nm", "nm"]},
    ],
)
def test_n5_malformed_offset_and_resolution(tmp_path, attrs):
    ds = n5_dataset(tmp_path / "c.n5" / "raw", image(), (2, 4, 4), **attrs)
    with pytest.raises(MetadataError) as err:
        nc.open_volume(ds)
    assert err.value.path == str(ds / "attributes.json")


# -- fuzz ------------------------------------------------------------------------------------
MUTANTS: tuple[Any, ...] = (None, -1, 0, 1e300, NAN, "x", [], {}, [1], 10**15, True)
MUTATIONS = 40


def _key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path (dict keys, list indices) below ``node``."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield (*prefix, key)
        yield from _key_paths(value, (*prefix, key))


def _mutate(doc: Any, rng: random.Random) -> tuple[Any, str]:
    """A copy of ``doc`` with the value at one random key path replaced by a mutant."""
    doc = json.loads(json.dumps(doc))
    paths = list(_key_paths(doc))
    path = paths[rng.randrange(len(paths))]
    mutant = MUTANTS[rng.randrange(len(MUTANTS))]
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = mutant
    return doc, f"{'/'.join(map(str, path))} = {mutant!r}"


def _fuzz(
    subtests: pytest.Subtests,
    template: Path,
    files: list[str],
    tmp_path: Path,
    *,
    seed: int,
    attempt: Callable[[Path], Any],
) -> None:
    """Mutate one of ``files`` (below ``template``) per round; only ConnectoError may escape.

    Each round is a subtest, so every escape is reported with its mutation.
    """
    rng = random.Random(seed)
    originals = {f: json.loads((template / f).read_text()) for f in files}
    for i in range(MUTATIONS):
        work = Path(shutil.copytree(template, tmp_path / f"m{i}" / template.name))
        file = files[rng.randrange(len(files))]
        doc, what = _mutate(originals[file], rng)
        dump(work / file, doc)
        with (
            subtests.test(msg=f"{template.name}/{file}: {what}"),
            contextlib.suppress(ConnectoError),
        ):
            attempt(work)


@pytest.fixture(scope="module")
def fuzz_templates(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fuzz")
    n5_root = base / "n5" / "c.n5"
    n5_dataset(n5_root / "vol" / "s0", image(), (2, 4, 4), offset=[4, 4, 40])
    n5_dataset(
        n5_root / "vol" / "s1", image()[:, ::2, ::2], (2, 4, 4), downsamplingFactors=[2, 2, 1]
    )
    dump(n5_root / "attributes.json", {"n5": "2.0.0"})
    dump(
        n5_root / "vol" / "attributes.json",
        {"resolution": [4, 4, 40], "units": ["nm", "nm", "nm"], "scales": [[1, 1, 1], [2, 2, 1]]},
    )
    return {
        "v2": v2_array(base / "v2" / "a.zarr", attributes={"resolution": [40, 4, 4]}),
        "v2_delta": v2_array(base / "v2d" / "a.zarr", filters=[Delta(dtype="uint8")]),
        "v3": v3_sharded(base / "v3" / "a.zarr"),
        "ome": ome_v04(base / "ome" / "img.zarr"),
        "n5": n5_root,
        "precomputed": precomputed(base / "pc" / "vol", sharded=True),
    }


def test_fuzz_zarr_v2_zarray(fuzz_templates, tmp_path, subtests):
    # Half the rounds start from a plain array (tensorstore), half from one with a
    # Delta filter (read by zarr-python).
    for k, name in enumerate(("v2", "v2_delta")):
        template = fuzz_templates[name]
        _fuzz(
            subtests, template, [".zarray"], tmp_path / name, seed=1000 + k, attempt=open_and_read
        )


def test_fuzz_zarr_v3_zarr_json(fuzz_templates, tmp_path, subtests):
    _fuzz(subtests, fuzz_templates["v3"], ["zarr.json"], tmp_path, seed=2000, attempt=open_and_read)


def test_fuzz_ome_zattrs(fuzz_templates, tmp_path, subtests):
    def attempt(root: Path) -> None:
        for entry in nc.list_contents(root):
            open_and_read(entry.source)

    files = [".zattrs", ".zattrs", "labels/.zattrs", "labels/cells/.zattrs"]
    _fuzz(subtests, fuzz_templates["ome"], files, tmp_path, seed=3000, attempt=attempt)


def test_fuzz_n5_attributes(fuzz_templates, tmp_path, subtests):
    def attempt(root: Path) -> None:
        nc.list_contents(f"n5://{root}")
        open_and_read(f"n5://{root}/vol")

    files = ["vol/attributes.json", "vol/s0/attributes.json", "vol/s1/attributes.json"]
    _fuzz(subtests, fuzz_templates["n5"], files, tmp_path, seed=4000, attempt=attempt)


def test_fuzz_precomputed_info(fuzz_templates, tmp_path, subtests):
    _fuzz(
        subtests,
        fuzz_templates["precomputed"],
        ["info"],
        tmp_path,
        seed=5000,
        attempt=lambda root: open_and_read(f"precomputed://{root}"),
    )
