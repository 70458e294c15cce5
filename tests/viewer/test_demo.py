"""The demo and napari's File > Open Sample, in real viewers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def sample_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_open_sample_gives_image_labels_and_synapses(make_napari_viewer, sample_cache):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-connecto", "em_neuropil")
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds == ["Image", "Labels", "Points"]
    image, labels, points = layers
    np.testing.assert_allclose(image.scale, (40.0, 4.0, 4.0))
    np.testing.assert_allclose(labels.scale, (40.0, 4.0, 4.0))
    assert labels.data[0].dtype == np.uint64
    assert len(points.data) > 20
    assert set(points.features["type"]) == {"presynaptic_site", "postsynaptic_site"}
    # Every synapse site lies inside a segment, at its nm position.
    # (multiscale labels answer (level, value))
    values = [labels.get_value(tuple(p), world=True) for p in points.data[:10]]
    ids = [v[1] if isinstance(v, tuple) else v for v in values]
    assert all(isinstance(i, int | np.integer) and i > 0 for i in ids), ids


def test_demo_command_shows_em_segmentation_and_synapses(sample_cache, tmp_path):
    shot = tmp_path / "demo.png"
    env = dict(os.environ, NAPARI_CONNECTO_CACHE=str(sample_cache))
    result = subprocess.run(
        [sys.executable, "-m", "napari_connecto.cli", "demo", "--screenshot", str(shot)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from PIL import Image

    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    blue = (rgb[..., 0] < 80) & (rgb[..., 1] > 90) & (rgb[..., 1] < 170) & (rgb[..., 2] > 220)
    assert red.sum() > 50, "no presynaptic marker on screen"
    assert blue.sum() > 50, "no postsynaptic marker on screen"
    # The EM/labels canvas covers a large area with many distinct colours.
    assert len(np.unique(rgb[::7, ::7].reshape(-1, 3), axis=0)) > 500
