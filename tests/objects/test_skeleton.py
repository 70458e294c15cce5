"""The Skeleton value object: normalisation, validation and graph helpers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.objects.skeleton import Skeleton, SkeletonError


def _y_shape() -> Skeleton:
    """A Y: root 0 - 1 - branch point 2 - leaves 3 and 4 (nm, z, y, x)."""
    vertices = [[0, 0, 0], [0, 0, 30], [0, 40, 30], [0, 40, 60], [10, 40, 30]]
    edges = [[0, 1], [1, 2], [2, 3], [2, 4]]
    return Skeleton(vertices, edges, {"radius": [5, 4, 3, 2, 1]}, segment_id=7)


def test_arrays_are_normalised_and_read_only() -> None:
    sk = _y_shape()
    assert sk.vertices.dtype == np.float32 and sk.vertices.shape == (5, 3)
    assert sk.edges.dtype == np.uint32 and sk.edges.shape == (4, 2)
    assert sk.radius is not None and sk.radius.tolist() == [5, 4, 3, 2, 1]
    assert sk.segment_id == 7
    with pytest.raises(ValueError):
        sk.vertices[0, 0] = 1.0
    with pytest.raises(ValueError):
        sk.edges[0, 0] = 1


def test_bounds_length_and_degrees() -> None:
    sk = _y_shape()
    assert sk.bounds.start.as_tuple() == (0, 0, 0)
    assert sk.bounds.stop.as_tuple() == (10, 40, 60)
    assert sk.path_length == pytest.approx(30 + 40 + 30 + 10)
    assert sk.degrees().tolist() == [1, 2, 3, 1, 1]
    assert sk.end_points().tolist() == [0, 3, 4]
    assert sk.branch_points().tolist() == [2]
    moved = sk.translated((1, 2, 3))
    np.testing.assert_allclose(moved.vertices[3], [1, 42, 63])
    assert moved.segment_id == 7 and moved.edges.tolist() == sk.edges.tolist()


def test_empty_skeleton() -> None:
    sk = Skeleton(np.zeros((0, 3)), np.zeros((0, 2)))
    assert sk.num_vertices == 0 and sk.path_length == 0.0
    with pytest.raises(SkeletonError):
        _ = sk.bounds


@pytest.mark.parametrize(
    ("vertices", "edges", "attributes", "message"),
    [
        ([[0, 0]], [], {}, "shape"),
        ([[0, 0, 0], [1, 1, 1]], [[0, 2]], {}, "out of range"),
        ([[0, 0, 0], [1, 1, 1]], [[0, -1]], {}, "out of range"),
        ([[0, 0, 0], [1, 1, 1]], [[0, 1, 1]], {}, "shape"),
        ([[0, 0, 0], [1, 1, 1]], [[0, 0.5]], {}, "integers"),
        ([[0, 0, np.nan]], [], {}, "finite"),
        ([[0, 0, 0], [1, 1, 1]], [[0, 1]], {"radius": [1.0]}, "radius"),
    ],
)
def test_inconsistent_arrays_are_refused(vertices, edges, attributes, message) -> None:
    with pytest.raises(SkeletonError, match=message):
        Skeleton(vertices, edges, attributes)
