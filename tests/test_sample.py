"""The synthetic sample: generation, the written OME-Zarr and CREMI files, the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from scipy import ndimage

from napari_connecto.sample import (
    DEFAULT_SHAPE,
    POST,
    PRE,
    RESOLUTION,
    SampleData,
    SamplePaths,
    ensure_sample,
    generate_sample,
    sample_directory,
    write_sample,
)
from napari_connecto.sample import write as sample_write

SMALL = (8, 128, 128)


@pytest.fixture(scope="module")
def small() -> SampleData:
    return generate_sample(SMALL, seed=1)


@pytest.fixture(scope="module")
def written(small: SampleData, tmp_path_factory: pytest.TempPathFactory) -> SamplePaths:
    return write_sample(tmp_path_factory.mktemp("sample") / "s", small)


def _voxels(data: SampleData) -> np.ndarray:
    vox = data.synapses.locations / np.asarray(RESOLUTION)
    assert np.array_equal(vox, np.round(vox)), "sites sit on voxel centres"
    return vox.astype(np.int64)


def _boundary(seg: np.ndarray) -> np.ndarray:
    edge = np.zeros(seg.shape, bool)
    edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edge[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    edge[:, :, 1:] |= seg[:, :, 1:] != seg[:, :, :-1]
    edge[:, :, :-1] |= seg[:, :, :-1] != seg[:, :, 1:]
    return edge


# -- generation ---------------------------------------------------------------------------


def test_dtypes_and_shapes(small: SampleData) -> None:
    assert small.shape == SMALL
    assert small.raw.dtype == np.uint8 and small.raw.shape == SMALL
    assert small.segmentation.dtype == np.uint64 and small.segmentation.shape == SMALL
    syn = small.synapses
    n = len(syn.ids)
    assert syn.ids.dtype == np.uint64 and len(syn.types) == n
    assert syn.locations.dtype == np.float64 and syn.locations.shape == (n, 3)
    assert syn.partners.dtype == np.uint64 and syn.partners.shape[1] == 2
    assert syn.resolution == RESOLUTION == small.resolution
    assert not small.raw.flags.writeable


def test_deterministic_per_seed(small: SampleData) -> None:
    again = generate_sample(SMALL, seed=1)
    assert np.array_equal(again.raw, small.raw)
    assert np.array_equal(again.segmentation, small.segmentation)
    assert np.array_equal(again.synapses.locations, small.synapses.locations)
    assert np.array_equal(again.synapses.partners, small.synapses.partners)
    assert again.synapses.types == small.synapses.types
    other = generate_sample(SMALL, seed=2)
    assert not np.array_equal(other.raw, small.raw)
    assert not np.array_equal(other.segmentation, small.segmentation)


def test_rejects_tiny_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        generate_sample((2, 32, 32))


def test_segment_ids(small: SampleData) -> None:
    ids = np.unique(small.segmentation)
    assert ids.size > 10
    assert ids[0] > 0, "every voxel belongs to a cell"
    assert ids[-1] < np.uint64(2**64 - 1), "CREMI's background value is never used"
    assert (ids > np.uint64(2**53)).any() and (ids < np.uint64(2**53)).any()


def test_membranes_darker_than_cytoplasm(small: SampleData) -> None:
    edge = _boundary(small.segmentation)
    interior = ~ndimage.binary_dilation(edge, np.ones((1, 9, 9), bool))
    membrane = small.raw[edge].mean()
    cytoplasm = small.raw[interior].mean()
    assert membrane < cytoplasm - 40, (membrane, cytoplasm)


def test_cells_are_tubes_through_z(small: SampleData) -> None:
    seg = small.segmentation
    same = (seg[1:] == seg[:-1]).mean()
    assert same > 0.6, "most voxels keep their cell from one section to the next"
    assert same < 1.0, "cells change shape between sections"


def test_sites_inside_their_neurons(small: SampleData) -> None:
    z, y, x = _voxels(small).T
    assert np.array_equal(small.segmentation[z, y, x], small.synapses.neurons)


def test_partners(small: SampleData) -> None:
    syn = small.synapses
    assert set(syn.types) == {PRE, POST}
    kind = dict(zip(syn.ids.tolist(), syn.types, strict=True))
    neuron = dict(zip(syn.ids.tolist(), syn.neurons.tolist(), strict=True))
    assert len(kind) == len(syn.ids), "ids are unique"
    pres = [i for i, t in kind.items() if t == PRE]
    assert len(pres) >= 4
    for pre, post in syn.partners.tolist():
        assert kind[pre] == PRE and kind[post] == POST
        assert neuron[pre] != neuron[post]
    posts_of = np.bincount(syn.partners[:, 0].astype(np.int64), minlength=int(syn.ids.max()) + 1)
    assert all(1 <= posts_of[p] <= 3 for p in pres)
    assert sorted(syn.partners[:, 1].tolist()) == [i for i, t in kind.items() if t == POST]


def test_default_shape() -> None:
    data = generate_sample()
    assert data.shape == DEFAULT_SHAPE
    n_pre = sum(t == PRE for t in data.synapses.types)
    assert 40 <= n_pre <= 80
    z, y, x = _voxels(data).T
    assert np.array_equal(data.segmentation[z, y, x], data.synapses.neurons)


# -- written files ------------------------------------------------------------------------


def test_cremi_file(small: SampleData, written: SamplePaths) -> None:
    with h5py.File(written.cremi, "r") as f:
        assert f.attrs["file_format"] == "0.2"
        raw, ids = f["volumes/raw"], f["volumes/labels/neuron_ids"]
        assert raw.dtype == np.uint8 and ids.dtype == np.uint64
        for ds in (raw, ids):
            assert ds.compression == "gzip" and ds.chunks is not None
            assert list(ds.attrs["resolution"]) == [40.0, 4.0, 4.0]
        assert np.array_equal(raw[...], small.raw)
        seg = ids[...]
        assert np.array_equal(seg, small.segmentation)
        assert seg.max() > np.uint64(2**53)
        ann = f["annotations"]
        assert np.asarray(ann.attrs.get("offset", [0, 0, 0])).tolist() == [0, 0, 0]
        assert np.array_equal(ann["ids"][...], small.synapses.ids)
        types = tuple(t.decode() for t in ann["types"][...])
        assert types == small.synapses.types
        assert np.array_equal(ann["locations"][...], small.synapses.locations)
        partners = ann["presynaptic_site/partners"]
        assert partners.dtype == np.uint64
        assert np.array_equal(partners[...], small.synapses.partners)


def test_zarr_arrays(small: SampleData, written: SamplePaths) -> None:
    root = zarr.open_group(str(written.ome_zarr), mode="r")
    assert root.metadata.zarr_format == 2
    raw_paths = [d["path"] for d in root.attrs["multiscales"][0]["datasets"]]
    labels = root["labels/segmentation"]
    label_paths = [d["path"] for d in labels.attrs["multiscales"][0]["datasets"]]
    assert np.array_equal(root[raw_paths[0]][...], small.raw)
    assert root[raw_paths[1]].shape == (8, 64, 64)
    seg = small.segmentation
    for level, path in enumerate(label_paths):
        stored = labels[path][...]
        assert stored.dtype == np.uint64
        step = 2**level
        assert np.array_equal(stored, seg[:, ::step, ::step]), "ids picked, never averaged"
    assert labels[label_paths[0]][...].max() > np.uint64(2**53)
    assert max(root[raw_paths[0]].chunks) <= 128


def test_ome_zarr_metadata(written: SamplePaths) -> None:
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    nodes = list(Reader(parse_url(str(written.ome_zarr), fmt=FormatV04()))())
    image = nodes[0]
    assert any(isinstance(s, Multiscales) for s in image.specs)
    assert len(image.data) == 3
    assert [a["name"] for a in image.metadata["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in image.metadata["axes"]} == {"nanometer"}
    transforms = image.metadata["coordinateTransformations"]
    assert [t[0]["scale"] for t in transforms] == [[40, 4, 4], [40, 8, 8], [40, 16, 16]]
    assert [t[1]["translation"] for t in transforms] == [[0, 0, 0], [0, 2, 2], [0, 6, 6]]
    label_nodes = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert len(label_nodes) == 1
    label = label_nodes[0]
    assert len(label.data) == 3
    assert label.zarr.root_attrs["image-label"]["source"] == {"image": "../../"}
    assert label.zarr.root_attrs["multiscales"][0]["version"] == "0.4"
    label_tf = label.metadata["coordinateTransformations"]
    assert [t[1]["translation"] for t in label_tf] == [[0, 0, 0]] * 3
    attrs = json.loads((written.ome_zarr / "labels" / ".zattrs").read_text())
    assert attrs["labels"] == ["segmentation"]


def test_marker_and_no_leftovers(small: SampleData, written: SamplePaths) -> None:
    marker = json.loads(written.marker.read_text())
    assert marker["version"] == sample_write.SAMPLE_VERSION
    assert marker["seed"] == 1 and marker["shape"] == list(SMALL)
    assert sorted(p.name for p in written.directory.parent.iterdir()) == ["s"]
    assert written.cremi_synapses.endswith("sample_cremi.h5#annotations")


def test_write_replaces_existing(small: SampleData, tmp_path: Path) -> None:
    dest = tmp_path / "s"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    paths = write_sample(dest, small)
    assert paths.marker.is_file() and not (dest / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_failed_write_leaves_nothing(
    small: SampleData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(path: Path, data: SampleData) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(sample_write, "write_cremi", boom)
    with pytest.raises(OSError, match="disk full"):
        write_sample(tmp_path / "s", small)
    assert list(tmp_path.iterdir()) == []


# -- cache --------------------------------------------------------------------------------


def test_sample_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAPARI_CONNECTO_CACHE", str(tmp_path))
    assert sample_directory() == tmp_path / "sample-v1"
    assert sample_directory(SMALL, 3) == tmp_path / "sample-v1-s3-8x128x128"
    monkeypatch.delenv("NAPARI_CONNECTO_CACHE")
    assert sample_directory().name == "sample-v1"


def test_ensure_sample_reuses_cache(
    small: SampleData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAPARI_CONNECTO_CACHE", str(tmp_path))
    calls: list[tuple] = []

    def counting(shape: tuple[int, int, int], seed: int) -> SampleData:
        calls.append((shape, seed))
        return small

    monkeypatch.setattr(sample_write, "generate_sample", counting)
    first = ensure_sample(SMALL, seed=1)
    assert len(calls) == 1 and first.directory == sample_directory(SMALL, 1)
    stamp = first.marker.stat().st_mtime_ns
    second = ensure_sample(SMALL, seed=1)
    assert len(calls) == 1 and second == first
    assert second.marker.stat().st_mtime_ns == stamp
    first.marker.unlink()  # as if the generator had been killed before finishing
    third = ensure_sample(SMALL, seed=1)
    assert len(calls) == 2 and third.marker.is_file()
    third.marker.write_text(json.dumps({"version": 0, "seed": 1, "shape": list(SMALL)}))
    ensure_sample(SMALL, seed=1)
    assert len(calls) == 3


# -- through the plugin's readers -----------------------------------------------------------


def test_make_sample_data(
    small: SampleData, written: SamplePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_connecto import _sample_data

    monkeypatch.setattr(_sample_data, "ensure_sample", lambda: written)
    layers = _sample_data.make_sample_data()
    assert [kind for _, _, kind in layers] == ["image", "labels", "points"]
    (image, image_meta, _), (labels, labels_meta, _), (points, points_meta, _) = layers
    assert image_meta["scale"] == labels_meta["scale"] == RESOLUTION
    assert len(image) == len(labels) == 3
    assert np.array_equal(np.asarray(labels[0][0:8, 0:128, 0:128]), small.segmentation)
    assert np.array_equal(np.asarray(image[0][0:8, 0:128, 0:128]), small.raw)
    assert np.allclose(points, small.synapses.locations)
    assert len(points_meta["features"]) == len(small.synapses.ids)


def test_ensure_sample_removes_stale_temporaries(
    small: SampleData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sample_write, "generate_sample", lambda shape, seed: small)
    dest = tmp_path / "s"
    stale = tmp_path / ".s.tmp-killed"
    fresh = tmp_path / ".s.tmp-running"
    for d in (stale, fresh):
        d.mkdir()
        (d / "sample.zarr").mkdir()
    os.utime(stale, (0, 0))
    paths = ensure_sample(SMALL, seed=1, directory=dest)
    assert paths.marker.is_file() and (dest.stat().st_mode & 0o777) == 0o755
    assert not stale.exists() and fresh.exists(), "only old leftovers are removed"
