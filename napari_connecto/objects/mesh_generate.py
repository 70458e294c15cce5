"""Meshes made from a segmentation by blockwise marching cubes, and their disk cache.

The segment's bounding box is found blockwise (coarse scale first), a scale is
picked so the box stays under a voxel budget, and the binary mask of the segment
is meshed block by block: each block is read with one voxel of overlap on its
high side, so the cubes of neighbouring blocks tile the box without gaps, and the
box is padded with one voxel of background so the surface is closed. Vertices
are placed in nm in the project's frame (voxel centres at ``origin + i * res``).

Generated meshes are cached as ``.npz`` (``allow_pickle=False``) below
``$NAPARI_CONNECTO_CACHE/meshes`` (default: the user cache dir), keyed by volume
source, scale, segment id and a caller-supplied data generation; files are
written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.objects.mesh import Mesh, MeshDecodeError, MeshNotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from napari_connecto.volume.volume import Volume

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "MeshCache",
    "choose_scale",
    "generate_mesh",
    "known_bounds",
    "mesh_cache_dir",
    "segment_bounds",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_VOXELS = 8 * 2**20
"""Largest bounding box (voxels) meshed at one scale; coarser scales are used beyond."""
BLOCK = (32, 128, 128)
"""Voxels per block (z, y, x) read at once."""
CACHE_FORMAT = 1

Box = tuple[tuple[int, int, int], tuple[int, int, int]]


def _blocks(lo: tuple[int, ...], hi: tuple[int, ...], step: tuple[int, ...]) -> Iterator[Box]:
    """``[start, stop)`` blocks covering ``[lo, hi)``."""
    for z in range(lo[0], hi[0], step[0]):
        for y in range(lo[1], hi[1], step[1]):
            for x in range(lo[2], hi[2], step[2]):
                start = (z, y, x)
                stop = tuple(min(a + s, h) for a, s, h in zip(start, step, hi, strict=True))
                yield start, stop  # type: ignore[misc]


def segment_bounds(
    volume: Volume, segment_id: int, scale: int, region: Box | None = None
) -> Box | None:
    """Voxel box ``[start, stop)`` of ``segment_id`` at ``scale`` (within ``region``), or ``None``.

    Read block by block, so memory stays at one block.
    """
    shape = volume.scales[scale].shape
    lo, hi = region if region is not None else ((0, 0, 0), tuple(shape))
    lo = tuple(max(0, v) for v in lo)
    hi = tuple(min(n, v) for n, v in zip(shape, hi, strict=True))
    found_lo = np.array([np.iinfo(np.int64).max] * 3)
    found_hi = np.array([-1] * 3)
    for start, stop in _blocks(lo, hi, BLOCK):
        hits = np.nonzero(volume.read_voxels(scale, start, stop) == segment_id)
        if len(hits[0]) == 0:
            continue
        first = np.array([int(h.min()) for h in hits]) + start
        last = np.array([int(h.max()) for h in hits]) + start
        found_lo = np.minimum(found_lo, first)
        found_hi = np.maximum(found_hi, last + 1)
    if found_hi[0] < 0:
        return None
    return tuple(found_lo.tolist()), tuple(found_hi.tolist())  # type: ignore[return-value]


def _box_nm(volume: Volume, scale: int, box: Box) -> tuple[np.ndarray, np.ndarray]:
    sc = volume.scales[scale]
    origin, res = np.array(tuple(sc.origin_nm)), np.array(tuple(sc.resolution))
    return origin + np.array(box[0]) * res, origin + np.array(box[1]) * res


def known_bounds(volume: Volume, segment_id: int) -> tuple[int, Box] | None:
    """``(scale, voxel box)`` of a segment from computed attributes, if any are cached.

    The attributes' bounding boxes are exact at the scale they were computed at (the
    finest cached one is used), so no voxel has to be scanned to find the segment. A
    volume shown through processors (a proofreading remap) has no such attributes, nor
    has a remote one (its edits leave no generation mark to outdate them).

    Raises
    ------
    MeshNotFoundError
        If the attributes are complete for the volume and do not hold the segment.
    """
    if volume.read_processors or volume.source.is_remote:  # remote: no generation mark
        return None
    from napari_connecto.objects.attribute_compute import cached_attributes

    for scale in range(len(volume.scales)):
        store = cached_attributes(volume, scale)
        if store is None or "bbox_start_z" not in store.columns:
            continue
        row = store.get(int(segment_id))
        if row is None:
            raise MeshNotFoundError(
                str(volume.source), f"segment {segment_id} is not in the volume"
            )
        lo = tuple(int(row[f"bbox_start_{a}"]) for a in "zyx")
        hi = tuple(int(row[f"bbox_stop_{a}"]) for a in "zyx")
        return scale, (lo, hi)  # type: ignore[return-value]
    return None


def _region_at(volume: Volume, known: tuple[int, Box], scale: int) -> Box | None:
    """The voxel region of ``scale`` holding a box known at a scale as fine or finer."""
    at, box = known
    if at > scale:  # a coarser scale may miss thin parts: its box bounds nothing finer
        return None
    lo_nm, hi_nm = _box_nm(volume, at, box)
    sc = volume.scales[scale]
    origin, res = np.array(tuple(sc.origin_nm)), np.array(tuple(sc.resolution))
    lo = np.floor((lo_nm - origin) / res + 1e-9).astype(int) - 1
    hi = np.ceil((hi_nm - origin) / res - 1e-9).astype(int) + 1
    return tuple(lo.tolist()), tuple(hi.tolist())  # type: ignore[return-value]


def _touches(box: Box, region: Box, shape: tuple[int, ...]) -> bool:
    """Whether ``box`` reaches a side of ``region`` that is inside the volume."""
    for lo, hi, r_lo, r_hi, n in zip(*box, *region, shape, strict=True):
        if (r_lo > 0 and lo <= r_lo) or (r_hi < n and hi >= r_hi):
            return True
    return False


def choose_scale(volume: Volume, segment_id: int, max_voxels: int = DEFAULT_MAX_VOXELS) -> int:
    """The finest scale at which the segment's bounding box holds at most ``max_voxels``.

    The box comes from cached attributes (:func:`known_bounds`), else it is found at
    the coarsest scale where the segment appears.

    Raises
    ------
    MeshNotFoundError
        If the segment is not in the volume at any scale.
    """
    known = known_bounds(volume, segment_id)
    if known is not None:
        coarse, box = known
    else:
        for coarse in reversed(range(len(volume.scales))):
            found = segment_bounds(volume, segment_id, coarse)
            if found is not None:
                box = found
                break
        else:
            raise MeshNotFoundError(
                str(volume.source), f"segment {segment_id} is not in the volume"
            )
    lo_nm, hi_nm = _box_nm(volume, coarse, box)
    span = hi_nm - lo_nm + 2 * np.array(tuple(volume.scales[coarse].resolution))
    for s, sc in enumerate(volume.scales):
        if np.prod(np.ceil(span / np.array(tuple(sc.resolution)))) <= max_voxels:
            return s
    return len(volume.scales) - 1


def generate_mesh(
    volume: Volume,
    segment_id: int,
    scale: int | None = None,
    *,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    block: tuple[int, int, int] = BLOCK,
) -> Mesh:
    """Mesh one segment of a segmentation by blockwise marching cubes (blocking).

    Parameters
    ----------
    volume : Volume
        The segmentation.
    segment_id : int
        The segment.
    scale : int, optional
        The scale to mesh; by default :func:`choose_scale`.
    max_voxels : int
        Budget for :func:`choose_scale`.
    block : tuple of int
        Voxels per block (z, y, x), each at least 1.

    Returns
    -------
    Mesh
        The closed surface at half-way between segment and background voxel
        centres, in nm (z, y, x, the volume layers' frame).

    Raises
    ------
    MeshNotFoundError
        If the segment has no voxel at that scale.
    """
    from skimage.measure import marching_cubes

    segment_id = int(segment_id)
    scale = choose_scale(volume, segment_id, max_voxels) if scale is None else scale
    known = known_bounds(volume, segment_id)
    region = _region_at(volume, known, scale) if known is not None else None
    box = segment_bounds(volume, segment_id, scale, region)  # only the known box is read
    if region is not None and (box is None or _touches(box, region, volume.scales[scale].shape)):
        # the segment reaches the region's margin: the cached box is stale, look everywhere
        logger.info("cached bounds of segment %d are stale; scanning scale %d", segment_id, scale)
        box = segment_bounds(volume, segment_id, scale)
    if box is None:
        raise MeshNotFoundError(str(volume.source), f"segment {segment_id} not at scale {scale}")
    sc = volume.scales[scale]
    origin, res = np.array(tuple(sc.origin_nm)), np.array(tuple(sc.resolution))
    lo = tuple(v - 1 for v in box[0])
    hi = tuple(v + 1 for v in box[1])  # cube corners run over [lo, hi - 1]
    parts: list[Mesh] = []
    for start, corner_stop in _blocks(lo, tuple(h - 1 for h in hi), block):
        stop = tuple(s + 1 for s in corner_stop)  # one voxel of overlap with the next block
        mask = volume.read_voxels(scale, start, stop) == segment_id
        if not mask.any() or mask.all():
            continue
        verts, faces, normals, _ = marching_cubes(
            mask.astype(np.float32), level=0.5, allow_degenerate=False
        )
        nm = origin + (np.asarray(start) + verts) * res
        parts.append(Mesh.from_arrays(nm, faces, normals))
    mesh = Mesh.concatenate(parts)
    logger.info("meshed segment %d of %s at scale %d: %r", segment_id, volume.source, scale, mesh)
    return mesh


def mesh_cache_dir() -> Path:
    """``$NAPARI_CONNECTO_CACHE/meshes``, or ``meshes`` in the user cache dir (not created)."""
    root = os.environ.get("NAPARI_CONNECTO_CACHE")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("napari-connecto")
    return Path(root) / "meshes"


class MeshCache:
    """Generated meshes on disk, one ``.npz`` per (source, scale, segment, generation).

    Parameters
    ----------
    root : path, optional
        The cache directory; :func:`mesh_cache_dir` by default.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else mesh_cache_dir()

    def path(self, source: str, scale: int, segment_id: int, generation: str = "") -> Path:
        """The file that holds (or would hold) one mesh."""
        text = f"{CACHE_FORMAT}\n{source}\n{scale}\n{int(segment_id)}\n{generation}"
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npz"

    def load(self, source: str, scale: int, segment_id: int, generation: str = "") -> Mesh | None:
        """The cached mesh, or ``None`` if absent or unreadable (a bad file is removed)."""
        path = self.path(source, scale, segment_id, generation)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                normals = npz["normals"] if "normals" in npz.files else None
                return Mesh.from_arrays(npz["vertices"], npz["faces"], normals, where=str(path))
        except (
            OSError,
            ValueError,
            KeyError,
            EOFError,
            zipfile.BadZipFile,
            MeshDecodeError,
        ) as exc:
            logger.warning("dropping unreadable cached mesh %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None

    def save(
        self, mesh: Mesh, source: str, scale: int, segment_id: int, generation: str = ""
    ) -> Path:
        """Store ``mesh`` atomically (temporary file, then rename)."""
        path = self.path(source, scale, segment_id, generation)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"vertices": mesh.vertices, "faces": mesh.faces}
        if mesh.normals is not None:
            arrays["normals"] = mesh.normals
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        fd, tmp = tempfile.mkstemp(prefix=".mesh-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.getvalue())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path
