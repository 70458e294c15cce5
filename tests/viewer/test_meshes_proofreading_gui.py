"""Meshes follow proofreading: a merge grows the kept segment's mesh, an undo shrinks it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.viewer.meshes import attach_meshes
from tests.viewer.test_proofreading_gui import (  # the same real sample and helpers
    SHAPE,
    _open,
    _settle,
    _start,
    _two_touching_segments,
    dataset,  # noqa: F401 - fixture
    sample_dir,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.gui


def _voxels_of(volume, labels: set[int]) -> np.ndarray:
    data = volume.read_voxels(0, (0, 0, 0), SHAPE)
    return np.argwhere(np.isin(data, list(labels)))


def _span(controller, segment: int) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(controller.layer_of(segment).data[0])
    return vertices.min(axis=0), vertices.max(axis=0)


def test_a_merge_remeshes_the_kept_segment_and_undo_restores_it(
    make_napari_viewer,
    dataset,  # noqa: F811 - the fixture imported above
    qtbot,
):
    zarr_path, db = dataset
    viewer, seg = _open(make_napari_viewer, zarr_path)
    panel = _start(viewer, seg, db)
    session = panel.session
    volume = session.proofreader.volume
    keep, absorb = _two_touching_segments(volume, seg)
    controller = attach_meshes(viewer, seg)
    controller.show(keep)
    qtbot.waitUntil(lambda: controller.layer_of(keep) is not None, timeout=60000)
    res = np.asarray(seg.scale)
    origin = np.asarray(seg.translate)

    def expected(labels: set[int]) -> tuple[np.ndarray, np.ndarray]:
        vox = _voxels_of(volume, labels)
        return origin + (vox.min(0) - 0.5) * res, origin + (vox.max(0) + 0.5) * res

    lo, hi = _span(controller, keep)
    np.testing.assert_allclose((lo, hi), expected({keep}), atol=0.01)

    session.merge(keep, absorb)
    _settle(viewer, session)
    qtbot.waitUntil(lambda: not controller.loading, timeout=60000)
    merged = _span(controller, keep)
    np.testing.assert_allclose(merged, expected({keep, absorb}), atol=0.01)
    assert f"mesh {keep}" in viewer.layers  # one layer, replaced in place
    assert sum(lay.name == f"mesh {keep}" for lay in viewer.layers) == 1

    session.undo()
    _settle(viewer, session)
    qtbot.waitUntil(lambda: not controller.loading, timeout=60000)
    np.testing.assert_allclose(_span(controller, keep), expected({keep}), atol=0.01)
    panel.stop()
