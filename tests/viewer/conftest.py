"""Real datasets for viewer tests, written by ome-zarr-py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.writer import write_multiscale, write_multiscale_labels

AXES = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]


@pytest.fixture
def ome_dataset(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """An OME-Zarr image (grey left, white right, a darker square top-left) with labels."""
    image = np.full((4, 128, 128), 60, dtype=np.uint8)
    image[:, :, 64:] = 255
    image[:, 8:40, 8:40] = 120
    labels = np.zeros((4, 128, 128), dtype=np.uint64)
    labels[:, 32:96, 32:96] = np.uint64(2**60 + 5)
    root = zarr.group(store=parse_url(str(tmp_path / "em.zarr"), mode="w").store)
    transforms = [
        [
            {"type": "scale", "scale": [40.0, 4.0 * 2**i, 4.0 * 2**i]},
            {"type": "translation", "translation": [400.0, 40.0, 20.0]},
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
    return tmp_path / "em.zarr", image, labels
