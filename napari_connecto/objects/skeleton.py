"""Skeletons: a neuron's centre-line as a graph of nodes in nm (z, y, x).

A :class:`Skeleton` is a value object. Its vertices are in the project's one
frame (z, y, x nanometres, voxel centres at ``origin + i * resolution``), so a
skeleton drawn over a volume layer lines up with it; the readers of
:mod:`.precomputed_skeletons` and :mod:`.swc` convert into that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.errors import ConnectoError
from napari_connecto.geometry import BBox

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Skeleton", "SkeletonError"]


class SkeletonError(ConnectoError, ValueError):
    """Skeleton arrays that do not fit together (edge out of range, attribute length, ...)."""


@dataclass(frozen=True, slots=True, eq=False)
class Skeleton:
    """A skeleton: vertices (nm, z, y, x), edges between them and per-vertex attributes.

    Arrays are normalised and made read-only on construction.

    Parameters
    ----------
    vertices : array_like, shape (N, 3)
        Node positions in nm, z, y, x.
    edges : array_like, shape (E, 2)
        Pairs of vertex indices.
    attributes : mapping of str to array_like, optional
        Per-vertex values, first axis of length N (``"radius"`` in nm, ``"type"``, ...).
    segment_id : int, optional
        The segment this skeleton belongs to.

    Raises
    ------
    SkeletonError
        If shapes disagree, an edge points outside the vertices, or a position is not finite.
    """

    vertices: np.ndarray
    """Node positions, float32 (N, 3), nm, z, y, x."""
    edges: np.ndarray
    """Vertex index pairs, uint32 (E, 2)."""
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Per-vertex arrays, each of first dimension N (e.g. ``"radius"`` float32 nm)."""
    segment_id: int | None = None
    """The segment this skeleton belongs to, if known."""

    def __post_init__(self) -> None:
        vertices = _as_vertices(self.vertices)
        edges = _as_edges(self.edges, len(vertices))
        attributes = {}
        for name, values in dict(self.attributes).items():
            array = np.array(values, copy=True)
            if array.ndim == 0 or array.shape[0] != len(vertices):
                raise SkeletonError(
                    f"attribute {name!r} has shape {array.shape}, "
                    f"expected first axis {len(vertices)}"
                )
            array.flags.writeable = False
            attributes[str(name)] = array
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "attributes", attributes)
        if self.segment_id is not None:
            object.__setattr__(self, "segment_id", int(self.segment_id))

    def __repr__(self) -> str:
        return (
            f"Skeleton(segment_id={self.segment_id}, vertices={len(self.vertices)}, "
            f"edges={len(self.edges)}, attributes={sorted(self.attributes)})"
        )

    @property
    def num_vertices(self) -> int:
        """Number of nodes."""
        return len(self.vertices)

    @property
    def radius(self) -> np.ndarray | None:
        """The ``"radius"`` attribute (nm), or ``None``."""
        return self.attributes.get("radius")

    @property
    def bounds(self) -> BBox:
        """Smallest box (nm, z, y, x) holding every vertex (``stop`` is the largest coordinate).

        Raises
        ------
        SkeletonError
            If the skeleton has no vertices.
        """
        if not len(self.vertices):
            raise SkeletonError("an empty skeleton has no bounds")
        return BBox.of(self.vertices.min(axis=0), self.vertices.max(axis=0))

    @property
    def path_length(self) -> float:
        """Total length of all edges in nm."""
        if not len(self.edges):
            return 0.0
        v = self.vertices.astype(np.float64)
        deltas = v[self.edges[:, 0]] - v[self.edges[:, 1]]
        return float(np.linalg.norm(deltas, axis=1).sum())

    def degrees(self) -> np.ndarray:
        """Number of edges at each vertex, int64 (N,)."""
        return np.bincount(self.edges.ravel(), minlength=self.num_vertices).astype(np.int64)

    def end_points(self) -> np.ndarray:
        """Indices of vertices with exactly one edge."""
        return np.flatnonzero(self.degrees() == 1)

    def branch_points(self) -> np.ndarray:
        """Indices of vertices with three or more edges."""
        return np.flatnonzero(self.degrees() >= 3)

    def translated(self, offset_zyx: np.ndarray | tuple[float, float, float]) -> Skeleton:
        """The same skeleton moved by ``offset_zyx`` nm."""
        shifted = self.vertices + np.asarray(offset_zyx, dtype=np.float32)
        return Skeleton(shifted, self.edges, self.attributes, self.segment_id)


def _as_vertices(values: object) -> np.ndarray:
    """Float32 (N, 3), finite, read-only."""
    array = np.array(values, dtype=np.float32, copy=True)
    if array.size == 0:
        array = array.reshape(0, 3)
    if array.ndim != 2 or array.shape[1] != 3:
        raise SkeletonError(f"vertices must have shape (N, 3), got {array.shape}")
    if not np.isfinite(array).all():
        raise SkeletonError("vertices must be finite")
    array.flags.writeable = False
    return array


def _as_edges(values: object, n: int) -> np.ndarray:
    """Uint32 (E, 2) with every index below ``n``, read-only."""
    raw = np.asarray(values)
    if raw.size == 0:
        raw = raw.reshape(0, 2)
    if raw.ndim != 2 or raw.shape[1] != 2:
        raise SkeletonError(f"edges must have shape (E, 2), got {raw.shape}")
    if raw.dtype.kind not in "iu":
        if raw.dtype.kind == "f" and np.array_equal(raw, np.round(raw)):
            raw = raw.astype(np.int64)
        else:
            raise SkeletonError(f"edges must be integers, got {raw.dtype}")
    if len(raw) and (raw.min() < 0 or raw.max() >= n):
        raise SkeletonError(f"edge index out of range for {n} vertices")
    edges = raw.astype(np.uint32, copy=True)
    edges.flags.writeable = False
    return edges
