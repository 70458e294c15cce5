"""Tiny real datasets for export tests, written by ome-zarr-py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from ome_zarr.io import parse_url
from ome_zarr.writer import write_multiscale, write_multiscale_labels

AXES = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
RESOLUTION = (40.0, 4.0, 4.0)
ORIGIN = (400.0, 40.0, 20.0)


def em_and_ids(shape: tuple[int, int, int] = (6, 48, 64), *, big_ids: bool = True):
    """An EM-like uint8 image and a uint64 segmentation with a few segments and background."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = np.zeros(shape, dtype=np.uint64)
    base = 2**60 if big_ids else 100
    labels[:, 4:30, 6:40] = np.uint64(base + 5)
    labels[:, 20:44, 30:60] = np.uint64(base + 77)
    labels[2:, 0:10, 50:64] = np.uint64(3)
    return image, labels


def write_ome(path: Path, image: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``image`` and ``labels`` (name ``cells``) with two scales, 4x4x40 nm, offset."""
    root = zarr.group(store=parse_url(str(path), mode="w").store)
    transforms = [
        [
            {"type": "scale", "scale": [RESOLUTION[0], 4.0 * 2**i, 4.0 * 2**i]},
            {"type": "translation", "translation": list(ORIGIN)},
        ]
        for i in range(2)
    ]
    write_multiscale(
        [image, image[:, ::2, ::2]], root, axes=AXES, coordinate_transformations=transforms
    )
    write_multiscale_labels(
        [labels, labels[:, ::2, ::2]],
        root,
        name="cells",
        axes=AXES,
        coordinate_transformations=transforms,
    )
    return path
