"""Per-object data: meshes, skeletons and per-segment attributes (headless).

- meshes: :class:`Mesh`, :class:`MeshSource` (precomputed legacy and multi-resolution
  meshes, else marching cubes, cached), :func:`read_mesh` / :func:`write_mesh` (OBJ, PLY),
  :func:`export_segment_mesh`;
- skeletons: :class:`Skeleton`, :func:`read_skeleton` (precomputed), :func:`read_swc` /
  :func:`write_swc`;
- attributes: :class:`AttributeStore` (sorted ids, binary search),
  :func:`compute_attributes`, :func:`load_or_compute`, :func:`read_segment_properties`,
  :func:`read_table`.
"""

from __future__ import annotations

from napari_connecto.objects.attributes import (
    AttributeStore,
    compute_attributes,
    load_or_compute,
    read_segment_properties,
    read_table,
)
from napari_connecto.objects.mesh import Mesh, MeshDecodeError, MeshNotFoundError
from napari_connecto.objects.mesh_io import read_mesh, write_mesh
from napari_connecto.objects.mesh_source import MeshSource, export_segment_mesh
from napari_connecto.objects.precomputed_skeletons import open_skeletons, read_skeleton
from napari_connecto.objects.skeleton import Skeleton, SkeletonError
from napari_connecto.objects.swc import SwcFormatError, read_swc, write_swc

__all__ = [
    "AttributeStore",
    "Mesh",
    "MeshDecodeError",
    "MeshNotFoundError",
    "MeshSource",
    "Skeleton",
    "SkeletonError",
    "SwcFormatError",
    "compute_attributes",
    "export_segment_mesh",
    "load_or_compute",
    "open_skeletons",
    "read_mesh",
    "read_segment_properties",
    "read_skeleton",
    "read_swc",
    "read_table",
    "write_mesh",
    "write_swc",
]
