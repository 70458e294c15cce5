"""Blockwise segment attributes against brute-force numpy, on real OME-Zarr and precomputed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from napari_connecto import open_volume
from napari_connecto.errors import MetadataError
from napari_connecto.objects.attributes import (
    ATTRIBUTE_COLUMNS,
    AttributesCancelledError,
    AttributeStore,
    attributes_cache_path,
    block_plan,
    cached_attributes,
    compute_attributes,
    load_or_compute,
    representative_nm,
)
from napari_connecto.sample import generate_sample
from napari_connecto.sample.write import CACHE_ENV, write_sample

SHAPE = (10, 96, 112)
PRECOMPUTED_RES = (40.0, 8.0, 4.0)  # z, y, x nm
PRECOMPUTED_OFFSET = (3, -16, 8)  # z, y, x voxels
HIGH = np.uint64(2**63 + 7)


@pytest.fixture(scope="module")
def sample():
    return generate_sample(SHAPE, seed=3)


@pytest.fixture(scope="module")
def ome_segmentation(sample, tmp_path_factory) -> str:
    paths = write_sample(tmp_path_factory.mktemp("ome"), sample)
    return f"{paths.ome_zarr}/labels/segmentation"


def _labels_with_background(shape: tuple[int, int, int]) -> np.ndarray:
    """Stripes of ids around and above 2**63, a background hole, one single-voxel segment."""
    z, y, x = np.indices(shape)
    labels = (y // 7 * 5 + x // 9 + z // 4).astype(np.uint64) + np.uint64(2**63 - 6)
    labels[(y > 10) & (y < 20) & (x > 5) & (x < 30)] = 0
    labels[:, 25:, 33:] = HIGH
    labels[1, 2, 3] = np.uint64(2**64 - 1)
    return labels


def _write_precomputed(root: Path, labels: np.ndarray) -> str:
    """``labels`` (z, y, x) as a tensorstore-written precomputed segmentation."""
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(root)},
        "multiscale_metadata": {"type": "segmentation", "data_type": "uint64", "num_channels": 1},
        "scale_metadata": {
            "size": list(labels.shape[::-1]),
            "resolution": list(PRECOMPUTED_RES[::-1]),
            "voxel_offset": list(PRECOMPUTED_OFFSET[::-1]),
            "chunk_size": [16, 16, 4],
            "encoding": "compressed_segmentation",
            "compressed_segmentation_block_size": [8, 8, 4],
        },
    }
    store = ts.open(spec, create=True, open=True).result()
    store[...] = labels[np.newaxis].transpose(3, 2, 1, 0)
    return str(root)


def _brute_force(labels: np.ndarray, background: int = 0) -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for value in np.unique(labels):
        if int(value) == background:
            continue
        where = np.argwhere(labels == value)
        out[int(value)] = {
            "size": len(where),
            "start": where.min(axis=0),
            "stop": where.max(axis=0) + 1,
            "centroid": where.mean(axis=0),
        }
    return out


def _check_against(store: AttributeStore, labels: np.ndarray, resolution) -> None:
    truth = _brute_force(labels)
    assert store.ids.tolist() == sorted(truth)
    found = store.lookup(list(truth))
    assert found.found.all()
    cols = found.columns
    for k, (segment, want) in enumerate(truth.items()):
        assert int(cols["size_voxels"][k]) == want["size"]
        assert cols["size_nm3"][k] == pytest.approx(want["size"] * np.prod(resolution))
        start = [int(cols[f"bbox_start_{a}"][k]) for a in "zyx"]
        stop = [int(cols[f"bbox_stop_{a}"][k]) for a in "zyx"]
        assert start == want["start"].tolist() and stop == want["stop"].tolist()
        centroid = [cols[f"centroid_{a}"][k] for a in "zyx"]
        assert centroid == pytest.approx(want["centroid"].tolist())
        rep = tuple(int(cols[f"rep_{a}"][k]) for a in "zyx")
        assert int(labels[rep]) == segment, f"representative of {segment} is outside it"


def test_sample_ome_zarr_matches_brute_force_with_unaligned_blocks(sample, ome_segmentation):
    volume = open_volume(ome_segmentation)
    assert volume.kind == "segmentation"
    store = compute_attributes(volume, block_shape=(3, 40, 50))
    assert set(ATTRIBUTE_COLUMNS) <= set(store.columns)
    _check_against(store, sample.segmentation, sample.resolution)
    assert int(store.ids.max()) >= 2**63  # the sample has ids beyond int64


def test_default_blocks_are_whole_chunks_covering_the_volume(ome_segmentation, sample):
    volume = open_volume(ome_segmentation)
    sc = volume.scales[0]
    plan = block_plan(sc)
    covered = np.zeros(sc.shape, dtype=np.int32)
    for start, stop in plan:
        covered[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] += 1
        for a, c in zip(start, sc.chunk_shape, strict=True):
            assert a % c == 0
    assert (covered == 1).all()
    _check_against(compute_attributes(volume), sample.segmentation, sample.resolution)


def test_precomputed_background_high_ids_and_offset(tmp_path):
    labels = _labels_with_background((9, 40, 48))
    volume = open_volume(_write_precomputed(tmp_path / "seg", labels))
    progress = []
    store = compute_attributes(volume, block_shape=(2, 5, 6), progress=progress.append)
    assert progress[-1].done == progress[-1].total == len(block_plan(volume.scales[0], (2, 5, 6)))
    assert progress[-1].total >= 10 * 32  # ten runs of 32 blocks, merged as they pile up
    assert progress[-1].voxels == labels.size
    assert 0 not in store
    assert int(HIGH) in store and 2**64 - 1 in store
    _check_against(store, labels, PRECOMPUTED_RES)
    single = store.get(2**64 - 1)
    assert single["size_voxels"] == 1 and (single["rep_z"], single["rep_y"], single["rep_x"]) == (
        1, 2, 3,
    )  # fmt: skip
    # the nm position lands on the segment when read back through the volume
    at = representative_nm(store, int(HIGH))
    origin = np.array(PRECOMPUTED_OFFSET) * PRECOMPUTED_RES
    index = np.round((np.array(at) - origin) / PRECOMPUTED_RES).astype(int)
    assert labels[tuple(index)] == HIGH
    assert representative_nm(store, 12345) is None


def test_empty_segmentation_gives_an_empty_store(tmp_path):
    volume = open_volume(_write_precomputed(tmp_path / "empty", np.zeros((4, 16, 16), np.uint64)))
    store = compute_attributes(volume)
    assert len(store) == 0
    assert set(store.columns) == set(ATTRIBUTE_COLUMNS)
    assert not store.lookup([1, 2]).found.any()
    assert AttributeStore.load(store.save(tmp_path / "saved")).columns == store.columns


def test_image_volumes_are_refused(tmp_path, sample):
    paths = write_sample(tmp_path, sample)
    image = open_volume(str(paths.ome_zarr))
    assert image.kind == "image"
    with pytest.raises(MetadataError, match="segmentation"):
        compute_attributes(image)


def test_cache_round_trip_and_cancel(tmp_path, monkeypatch, ome_segmentation, sample):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    volume = open_volume(ome_segmentation)
    calls = []
    with pytest.raises(AttributesCancelledError):
        load_or_compute(volume, cancel=lambda: calls.append(1) or True)
    assert len(calls) == 1
    assert cached_attributes(volume) is None  # nothing half-done was cached
    first = load_or_compute(volume)
    assert attributes_cache_path(volume).is_dir()
    assert isinstance(first.column("size_voxels").base, np.memmap) or isinstance(
        first.column("size_voxels"), np.memmap
    )
    again = cached_attributes(volume)
    assert again is not None and np.array_equal(again.ids, first.ids)
    _check_against(again, sample.segmentation, sample.resolution)
    assert again.meta["resolution_nm"] == list(sample.resolution)
    other_scale = attributes_cache_path(volume, 1)
    assert other_scale != attributes_cache_path(volume, 0)


def test_broken_cache_is_recomputed(tmp_path, monkeypatch, ome_segmentation):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    volume = open_volume(ome_segmentation)
    load_or_compute(volume)
    path = attributes_cache_path(volume)
    (path / "manifest.json").write_text("{not json")
    assert cached_attributes(volume) is None
    assert len(load_or_compute(volume)) > 0


def test_blocks_with_more_than_65536_segments(tmp_path):
    """One id per voxel (81,920 ids, shuffled, above 2**63): the packed-key grouping path."""
    shape = (4, 128, 160)
    rng = np.random.default_rng(4)
    labels = (rng.permutation(np.prod(shape)).astype(np.uint64) + HIGH).reshape(shape)
    volume = open_volume(_write_precomputed(tmp_path / "many", labels))
    store = compute_attributes(volume, block_shape=shape)
    assert len(store) == labels.size and (store.column("size_voxels") == 1).all()
    where = np.argwhere(labels >= 0)
    found = store.lookup(labels.reshape(-1))
    assert found.found.all()
    for k, axis in enumerate("zyx"):
        assert np.array_equal(found.columns[f"rep_{axis}"], where[:, k])
        assert np.array_equal(found.columns[f"bbox_start_{axis}"], where[:, k])
        assert np.array_equal(found.columns[f"bbox_stop_{axis}"], where[:, k] + 1)
