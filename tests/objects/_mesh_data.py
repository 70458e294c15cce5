"""Real mesh datasets for the mesh tests: cloud-volume legacy meshes, multires by the spec."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import DracoPy
import numpy as np

RES_XYZ = (4.0, 4.0, 40.0)
OFFSET_XYZ = (10, 20, 2)
SIZE_XYZ = (64, 64, 16)
SEGMENT = 7
# the segment's voxel box (x, y, z index ranges of the array written)
BOX_XYZ = ((10, 30), (20, 40), (3, 9))


def box_mesh_xyz(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 corners and 12 triangles of an axis-aligned box (x, y, z)."""
    corners = np.array(
        [
            [(hi if i & 1 else lo)[0], (hi if i & 2 else lo)[1], (hi if i & 4 else lo)[2]]
            for i in range(8)
        ],
        dtype=np.float32,
    )
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))]
    return corners, np.array(faces, dtype=np.uint32)


@dataclass(frozen=True)
class CvDataset:
    """A precomputed segmentation with legacy meshes, written by cloud-volume."""

    path: Path
    labels_xyz: np.ndarray
    mesh_vertices_xyz: np.ndarray
    mesh_faces: np.ndarray


def write_cloudvolume_segmentation(path: Path) -> CvDataset:
    """Segment 7 is a box; its legacy mesh is the box surface (precomputed corner frame, nm)."""
    from cloudvolume import CloudVolume, Mesh

    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="segmentation",
        data_type="uint64",
        encoding="raw",
        resolution=list(RES_XYZ),
        voxel_offset=list(OFFSET_XYZ),
        chunk_size=[32, 32, 8],
        volume_size=list(SIZE_XYZ),
        mesh="mesh",
    )
    vol = CloudVolume(f"file://{path}", info=info, compress=False, progress=False)
    vol.commit_info()
    labels = np.zeros(SIZE_XYZ, np.uint64)
    (x0, x1), (y0, y1), (z0, z1) = BOX_XYZ
    labels[x0:x1, y0:y1, z0:z1] = SEGMENT
    vol[:, :, :] = labels
    res, off = np.array(RES_XYZ), np.array(OFFSET_XYZ)
    lo = (off + [x0, y0, z0]) * res
    hi = (off + [x1, y1, z1]) * res
    verts, faces = box_mesh_xyz(lo, hi)
    vol.mesh.put(Mesh(verts, faces, segid=SEGMENT))
    return CvDataset(path, labels, verts, faces)


@dataclass(frozen=True)
class Fragment:
    """One multires fragment: its grid position and vertices in stored-model units (x, y, z)."""

    position: tuple[int, int, int]
    vertices: np.ndarray
    faces: np.ndarray


def quantize(frag: Fragment, lod: int, chunk: np.ndarray, origin: np.ndarray, bits: int):
    """Stored integer vertices of a fragment, per the Neuroglancer multires spec."""
    q = (frag.vertices - origin) / (chunk * 2**lod) - np.array(frag.position)
    return np.clip(np.round(q * (2**bits - 1)), 0, 2**bits - 1).astype(np.float32)


def multires_files(
    lods: list[list[Fragment]],
    *,
    chunk: tuple[float, float, float],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    bits: int = 10,
) -> tuple[bytes, bytes]:
    """``(manifest, fragment data)`` of one segment, written from the documented layout."""
    chunk_a, origin_a = np.array(chunk, np.float64), np.array(origin, np.float64)
    data, head, tail = [], [], []
    for lod, frags in enumerate(lods):
        sizes = []
        for frag in frags:
            q = quantize(frag, lod, chunk_a, origin_a, bits)
            blob = DracoPy.encode(
                q,
                frag.faces,
                quantization_bits=bits,
                quantization_range=2**bits - 1,
                quantization_origin=[0, 0, 0],
                preserve_order=True,
            )
            data.append(blob)
            sizes.append(len(blob))
        positions = np.array([f.position for f in frags], dtype="<u4").reshape(-1, 3)
        tail.append(positions.T.tobytes() + np.array(sizes, "<u4").tobytes())
    n = len(lods)
    head.append(np.array(chunk, "<f4").tobytes() + np.array(origin, "<f4").tobytes())
    head.append(struct.pack("<I", n))
    head.append(np.array([2.0**i for i in range(n)], "<f4").tobytes())
    head.append(np.zeros((n, 3), "<f4").tobytes())
    head.append(np.array([len(f) for f in lods], "<u4").tobytes())
    return b"".join(head + tail), b"".join(data)


def write_multires(
    directory: Path,
    segment: int,
    lods: list[list[Fragment]],
    *,
    chunk: tuple[float, float, float],
    transform: list[float],
    bits: int = 10,
) -> None:
    """An unsharded ``neuroglancer_multilod_draco`` mesh directory holding one segment."""
    directory.mkdir(parents=True, exist_ok=True)
    info = {
        "@type": "neuroglancer_multilod_draco",
        "vertex_quantization_bits": bits,
        "transform": transform,
        "lod_scale_multiplier": 1.0,
    }
    (directory / "info").write_text(json.dumps(info))
    manifest, data = multires_files(lods, chunk=chunk, bits=bits)
    (directory / f"{segment}.index").write_bytes(manifest)
    (directory / str(segment)).write_bytes(data)


def write_sharded_multires(
    directory: Path,
    segment: int,
    lods: list[list[Fragment]],
    *,
    chunk: tuple[float, float, float],
    transform: list[float],
    bits: int = 10,
) -> None:
    """A sharded multires directory: one shard, one minishard, identity hash, raw encodings.

    The shard holds the segment's fragment data immediately followed by its manifest,
    and the minishard index points at the manifest (as the spec lays it out).
    """
    directory.mkdir(parents=True, exist_ok=True)
    sharding = {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": 0,
        "hash": "identity",
        "minishard_bits": 0,
        "shard_bits": 0,
        "minishard_index_encoding": "raw",
        "data_encoding": "raw",
    }
    info = {
        "@type": "neuroglancer_multilod_draco",
        "vertex_quantization_bits": bits,
        "transform": transform,
        "lod_scale_multiplier": 1.0,
        "sharding": sharding,
    }
    (directory / "info").write_text(json.dumps(info))
    manifest, data = multires_files(lods, chunk=chunk, bits=bits)
    body = data + manifest
    minishard = np.array([[segment], [len(data)], [len(manifest)]], "<u8").tobytes()
    index = np.array([len(body), len(body) + len(minishard)], "<u8").tobytes()
    (directory / "0.shard").write_bytes(index + body + minishard)
