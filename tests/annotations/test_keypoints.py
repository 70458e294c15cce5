"""Keypoints inside segments and id look-ups, on segmentations written by h5py."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from napari_connecto.annotations import keypoints
from napari_connecto.annotations.keypoints import (
    default_scale,
    fill_keypoints,
    lookup_labels,
    positions_to_voxels,
    segment_keypoints,
)
from napari_connecto.opening import open_volume

CREMI_BACKGROUND = 0xFFFF_FFFF_FFFF_FFFF
BIG63 = 2**63 + 12345
BIG53 = 2**53 + 1
U_ID = 7


def write_segmentation(
    path: Path,
    labels: np.ndarray,
    *,
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0),
    offset: tuple[float, float, float] | None = None,
    name: str = "seg",
) -> str:
    """One uint64 labels dataset with CREMI-style attributes; returns its source string."""
    with h5py.File(path, "a") as f:
        ds = f.create_dataset(name, data=labels.astype(np.uint64), chunks=(2, 8, 8))
        ds.attrs["resolution"] = resolution
        if offset is not None:
            ds.attrs["offset"] = offset
    return f"{path}#{name}"


def u_shape_volume() -> np.ndarray:
    """A U (its centroid lies in the gap between the arms), a box and a thin rod."""
    labels = np.zeros((6, 40, 40), dtype=np.uint64)
    labels[1:5, 4:30, 4:10] = U_ID  # left arm
    labels[1:5, 4:30, 24:30] = U_ID  # right arm
    labels[1:5, 24:30, 4:30] = U_ID  # bottom bar
    labels[0:5, 32:37, 31:36] = BIG63  # a 5x5x5 box
    labels[3, 2, 12:22] = BIG53  # a rod one voxel thick
    return labels


def label_at(labels: np.ndarray, voxel: np.ndarray) -> int:
    z, y, x = (int(v) for v in voxel)
    return int(labels[z, y, x])


@pytest.mark.parametrize("block", [(32, 256, 256), (2, 8, 8)])
def test_keypoints_lie_inside_their_segments(tmp_path: Path, block: tuple[int, int, int]) -> None:
    labels = u_shape_volume()
    source = write_segmentation(tmp_path / "seg.h5", labels)
    with open_volume(source) as volume:
        found = segment_keypoints(volume, block=block)
        voxels = positions_to_voxels(volume.scales[0], found[["z", "y", "x"]].to_numpy())
    assert found["id"].dtype == np.uint64
    assert sorted(int(i) for i in found["id"]) == sorted([U_ID, BIG53, BIG63])
    for seg, voxel in zip(found["id"].tolist(), voxels, strict=True):
        assert label_at(labels, voxel) == int(seg)
    centroid = np.argwhere(labels == U_ID).mean(axis=0).round()
    assert label_at(labels, centroid) != U_ID  # the naive answer would be outside the U


def test_keypoint_of_a_box_is_its_centre_in_nm(tmp_path: Path) -> None:
    labels = u_shape_volume()
    res, offset = (40.0, 4.0, 8.0), (400.0, -20.0, 16.0)
    source = write_segmentation(tmp_path / "seg.h5", labels, resolution=res, offset=offset)
    with open_volume(source) as volume:
        found = segment_keypoints(volume, [BIG63])
    row = found.set_index("id").loc[np.uint64(BIG63)]
    # box z 0..4, y 32..36, x 31..35: the deepest voxel (nm distances) is the middle one
    expected = np.array(offset) + np.array([2, 34, 33]) * np.array(res)
    np.testing.assert_allclose(row[["z", "y", "x"]].to_numpy(dtype=float), expected)


def test_only_requested_ids_and_no_background(tmp_path: Path) -> None:
    labels = u_shape_volume()
    labels[labels == 0] = CREMI_BACKGROUND
    path = tmp_path / "cremi.h5"
    write_segmentation(path, labels, name="volumes/labels/neuron_ids")
    with open_volume(f"{path}#volumes/labels/neuron_ids") as volume:
        every = segment_keypoints(volume)
        some = segment_keypoints(volume, [U_ID, 999])
    assert CREMI_BACKGROUND not in [int(i) for i in every["id"]]
    assert len(every) == 3
    assert [int(i) for i in some["id"]] == [U_ID]


def test_lookup_labels_exact_ids_background_and_outside(tmp_path: Path) -> None:
    labels = u_shape_volume()
    labels[0, 0, 0] = CREMI_BACKGROUND
    path = tmp_path / "cremi.h5"
    res, offset = (40.0, 4.0, 4.0), (80.0, 8.0, 4.0)
    write_segmentation(
        path, labels, resolution=res, offset=offset, name="volumes/labels/neuron_ids"
    )
    voxels = np.array([[2, 34, 33], [3, 2, 15], [2, 10, 6], [0, 0, 0], [2, 15, 15], [9, 0, 0]])
    positions = np.array(offset) + voxels * np.array(res)
    positions[1] += (-15.0, 1.5, -1.5)  # the nearest voxel centre wins (not floor)
    with open_volume(f"{path}#volumes/labels/neuron_ids") as volume:
        ids = lookup_labels(volume, positions)
    assert ids.dtype == np.uint64
    assert [int(i) for i in ids] == [BIG63, BIG53, U_ID, 0, 0, 0]


def test_default_scale_is_coarse_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fine = np.zeros((8, 64, 64), dtype=np.uint64)
    fine[:, 8:56, 8:24] = 5
    fine[:, 8:56, 40:56] = 6
    coarse = fine[::2, ::2, ::2]
    path = tmp_path / "pyramid.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("seg")
        group.attrs["resolution"] = (8.0, 8.0, 8.0)
        group.create_dataset("s0", data=fine)
        group.create_dataset("s1", data=coarse)
    monkeypatch.setattr(keypoints, "DEFAULT_MAX_VOXELS", coarse.size)
    with open_volume(f"{path}#seg") as volume:
        assert default_scale(volume) == 1
        assert default_scale(volume, fine.size) == 0
        found = segment_keypoints(volume)
        voxels = positions_to_voxels(volume.scales[0], found[["z", "y", "x"]].to_numpy())
    assert [int(i) for i in found["id"]] == [5, 6]
    for seg, voxel in zip(found["id"].tolist(), voxels, strict=True):
        assert label_at(fine, voxel) == int(seg)


def test_fill_keypoints_keeps_known_ones(tmp_path: Path) -> None:
    labels = u_shape_volume()
    source = write_segmentation(tmp_path / "seg.h5", labels)
    neurons = pd.DataFrame(
        {
            "id": np.array([U_ID, BIG63, 12345], dtype=np.uint64),
            "name": ["u", "box", "absent"],
            "z": [1.0, np.nan, np.nan],
            "y": [2.0, np.nan, np.nan],
            "x": [3.0, np.nan, np.nan],
        }
    )
    with open_volume(source) as volume:
        filled = fill_keypoints(neurons, volume)
    assert filled.loc[0, ["z", "y", "x"]].tolist() == [1.0, 2.0, 3.0]
    assert filled.loc[1, ["z", "y", "x"]].tolist() == [2.0, 34.0, 33.0]
    assert filled.loc[2, ["z", "y", "x"]].isna().all()
    assert filled["id"].tolist() == neurons["id"].tolist()
