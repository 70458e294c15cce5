"""Triangle meshes of segments, in the project's frame (nm, z, y, x).

A :class:`Mesh` is an immutable value: vertices ``(N, 3)`` float32 in
nanometres in z, y, x order, placed so that they line up with the volume
layers (napari puts voxel *centres* at ``origin + i * resolution``), faces
``(M, 3)`` vertex indices and optional per-vertex normals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.errors import MetadataError, SourceNotFoundError
from napari_connecto.geometry import BBox, Vec3

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Mesh", "MeshDecodeError", "MeshNotFoundError"]


class MeshDecodeError(MetadataError):
    """A mesh file, manifest or fragment that is truncated, corrupt or inconsistent."""


class MeshNotFoundError(SourceNotFoundError):
    """No mesh is stored (or can be made) for a segment."""


@dataclass(frozen=True, slots=True, eq=False)
class Mesh:
    """A triangle mesh in nm, z, y, x.

    Build it with :meth:`from_arrays`, which validates and normalises dtypes.
    """

    vertices: np.ndarray
    """``(N, 3)`` float32 vertex positions in nm, z, y, x (read-only)."""
    faces: np.ndarray
    """``(M, 3)`` uint32 vertex indices of the triangles (read-only)."""
    normals: np.ndarray | None = None
    """``(N, 3)`` float32 per-vertex normals (z, y, x), or ``None``."""

    @classmethod
    def from_arrays(
        cls,
        vertices: np.ndarray | Sequence[Sequence[float]],
        faces: np.ndarray | Sequence[Sequence[int]],
        normals: np.ndarray | None = None,
        *,
        where: str = "mesh",
    ) -> Mesh:
        """A validated mesh from array-likes.

        Parameters
        ----------
        vertices : array-like
            ``(N, 3)`` positions in nm, z, y, x.
        faces : array-like
            ``(M, 3)`` non-negative integer vertex indices, each below ``N``.
        normals : array-like, optional
            ``(N, 3)`` per-vertex normals.
        where : str
            Named in errors (the file the arrays came from).

        Returns
        -------
        Mesh
            The mesh, with read-only float32 vertices and uint32 faces.

        Raises
        ------
        MeshDecodeError
            If shapes are wrong, values not finite or an index is out of range.
        """
        v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3) if np.size(vertices) else None
        v = np.zeros((0, 3), np.float32) if v is None else v
        f_in = np.asarray(faces)
        if f_in.size == 0:
            f_in = np.zeros((0, 3), np.int64)
        if f_in.ndim != 2 or f_in.shape[1] != 3:
            raise MeshDecodeError(where, "faces", f"expected (M, 3), got {f_in.shape}")
        if f_in.dtype.kind not in "iu":
            raise MeshDecodeError(where, "faces", f"indices must be integers, got {f_in.dtype}")
        if f_in.size and (int(f_in.min()) < 0 or int(f_in.max()) >= len(v)):
            raise MeshDecodeError(where, "faces", f"index out of range for {len(v)} vertices")
        if not np.isfinite(v).all():
            raise MeshDecodeError(where, "vertices", "non-finite coordinates")
        n = None
        if normals is not None:
            n = np.asarray(normals, dtype=np.float32)
            if n.shape != v.shape:
                raise MeshDecodeError(where, "normals", f"shape {n.shape} != vertices {v.shape}")
            n = _frozen(n)
        return cls(_frozen(v), _frozen(f_in.astype(np.uint32)), n)

    @classmethod
    def empty(cls) -> Mesh:
        """A mesh with no vertices and no faces."""
        return cls.from_arrays(np.zeros((0, 3)), np.zeros((0, 3), np.uint32))

    @staticmethod
    def concatenate(meshes: Sequence[Mesh]) -> Mesh:
        """One mesh holding all of ``meshes`` (face indices renumbered).

        Normals are kept only if every part has them.
        """
        if not meshes:
            return Mesh.empty()
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        faces = [m.faces.astype(np.int64) + o for m, o in zip(meshes, offsets, strict=True)]
        normals = None
        if all(m.normals is not None for m in meshes):
            normals = np.concatenate([m.normals for m in meshes])  # type: ignore[misc]
        return Mesh.from_arrays(
            np.concatenate([m.vertices for m in meshes]), np.concatenate(faces), normals
        )

    @property
    def is_empty(self) -> bool:
        """Whether the mesh has no triangles."""
        return len(self.faces) == 0

    @property
    def bounds(self) -> BBox:
        """Smallest box (nm, z, y, x) holding every vertex.

        Raises
        ------
        ValueError
            If the mesh has no vertices.
        """
        if len(self.vertices) == 0:
            raise ValueError("an empty mesh has no bounds")
        lo = self.vertices.min(axis=0).astype(float)
        hi = self.vertices.max(axis=0).astype(float)
        return BBox(Vec3(*lo), Vec3(*hi))

    def translated(self, offset_zyx: Sequence[float]) -> Mesh:
        """The mesh moved by ``offset_zyx`` nm."""
        shifted = self.vertices + np.asarray(offset_zyx, dtype=np.float32)
        return Mesh(_frozen(shifted), self.faces, self.normals)

    def __repr__(self) -> str:
        return f"Mesh({len(self.vertices)} vertices, {len(self.faces)} faces)"


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.flags.writeable and a.base is not None:
        a = a.copy()
    a.flags.writeable = False
    return a
