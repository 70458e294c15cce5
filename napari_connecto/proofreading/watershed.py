"""Seeded watershed splits: cut one segment into pieces grown from groups of seed points.

:func:`seeded_split` is the pure array step; :func:`split_patch` reads the region of a
segmentation around the seeds, runs it and returns the paint patch that gives every
piece but the first a new id (:meth:`Proofreader.split
<napari_connecto.proofreading.proofreader.Proofreader.split>` commits it as one edit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from napari_connecto.errors import EditError
from napari_connecto.geometry import BBox, Vec3
from napari_connecto.proofreading.patches import VoxelPatch
from napari_connecto.proofreading.synapse_edits import as_position

if TYPE_CHECKING:
    from napari_connecto.proofreading.paint import VoxelFrame
    from napari_connecto.volume.processors import RemapIds
    from napari_connecto.volume.volume import Volume

__all__ = ["COMPACTNESS", "REGION_PAD_NM", "seeded_split", "split_patch"]

Point = Sequence[float]
Box = tuple[tuple[int, int, int], tuple[int, int, int]]

REGION_PAD_NM = 1000.0
"""Default split region: the seeds' box grown by this much in y and x (not in z)."""

COMPACTNESS = 0.01
"""Default weight of the distance to a seed (voxels) in :func:`seeded_split`."""

_BOUNDARY_WEIGHT = 1.0
"""Height added on boundaries between fragments (the elevation itself spans 0..1)."""


def seeded_split(
    fragments: np.ndarray,
    segment_mask: np.ndarray,
    seeds: np.ndarray,
    image: np.ndarray | None = None,
    *,
    sampling: Sequence[float] | None = None,
    compactness: float = COMPACTNESS,
) -> np.ndarray:
    """Grow seed groups through a segment's voxels (seeded watershed).

    The flooded landscape is the in-plane Sobel gradient of ``image`` if one is given
    (membranes are ridges), else the negative distance to the segment's edge (necks are
    ridges); either is scaled to 0..1 and boundaries between different fragments are
    raised by 1, so cuts follow fragment boundaries where they can. The flood is a
    compact watershed: without it a seed near the edge of a round profile would keep
    only a few voxels, the deepest seed flooding the rest. A block one plane thick is
    split in 2D, a thicker one in 3D.

    Parameters
    ----------
    fragments : numpy.ndarray
        z, y, x fragment ids of the block.
    segment_mask : numpy.ndarray
        z, y, x bool, ``True`` on the segment's voxels (the only ones assigned).
    seeds : numpy.ndarray
        z, y, x ints: 0 no seed, ``k >= 1`` a seed of group ``k``. Seeds off the mask
        are ignored.
    image : numpy.ndarray, optional
        z, y, x grey values of the same block.
    sampling : sequence of float, optional
        Voxel size z, y, x (for the distance transform of anisotropic voxels).
    compactness : float
        Weight of the distance (in voxels) to a seed against the 0..1 landscape.

    Returns
    -------
    numpy.ndarray
        int32 z, y, x: the group of each voxel of the mask; 0 off the mask and on
        parts of it no seed reaches.

    Raises
    ------
    EditError
        If the arrays are not z, y, x blocks of one shape, or no seed is on the mask.
    """
    from skimage.segmentation import watershed  # heavy: imported on first split

    mask = np.asarray(segment_mask, dtype=bool)
    shapes = {np.shape(fragments), mask.shape, np.shape(seeds)}
    if image is not None:
        shapes.add(np.shape(image))
    if len(shapes) != 1 or mask.ndim != 3:
        raise EditError(f"a split needs z, y, x blocks of one shape, got {sorted(shapes)}")
    markers = np.where(mask, np.asarray(seeds), 0).astype(np.int32)
    if markers.max(initial=0) < 1:
        raise EditError("no seed lies on the segment")
    elevation = _elevation(np.asarray(fragments), mask, image, sampling)
    if mask.shape[0] == 1:
        out = watershed(elevation[0], markers[0], mask=mask[0], compactness=compactness)
        out = out[np.newaxis]
    else:
        out = watershed(elevation, markers, mask=mask, compactness=compactness)
    return np.asarray(out, dtype=np.int32)


def _elevation(
    fragments: np.ndarray,
    mask: np.ndarray,
    image: np.ndarray | None,
    sampling: Sequence[float] | None,
) -> np.ndarray:
    """The landscape flooded by :func:`seeded_split` (0..1, plus fragment boundaries)."""
    if image is not None:
        from skimage.filters import sobel

        grey = np.asarray(image, dtype=np.float32)
        base = np.stack([sobel(plane) for plane in grey]).astype(np.float32)
    elif mask.shape[0] == 1:
        plane = ndimage.distance_transform_edt(mask[0], sampling=_in_plane(sampling))
        base = -np.asarray(plane, dtype=np.float32)[np.newaxis]
    else:
        base = -np.asarray(ndimage.distance_transform_edt(mask, sampling=sampling), np.float32)
    inside = base[mask]
    low, high = float(inside.min()), float(inside.max())
    base = (base - low) / (high - low) if high > low else np.zeros_like(base)
    return base + _BOUNDARY_WEIGHT * _fragment_boundaries(fragments, mask)


def _in_plane(sampling: Sequence[float] | None) -> Sequence[float] | None:
    return None if sampling is None else tuple(sampling)[1:]


def _fragment_boundaries(fragments: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask next to a voxel of the mask holding another fragment."""
    edge = np.zeros(mask.shape, dtype=bool)
    for axis in range(3):
        if mask.shape[axis] < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(lo), tuple(hi)
        differs = (fragments[a] != fragments[b]) & mask[a] & mask[b]
        edge[a] |= differs
        edge[b] |= differs
    return edge.astype(np.float32)


# -- the edit ---------------------------------------------------------------------------
def split_patch(
    volume: Volume,
    mapping: RemapIds,
    frame: VoxelFrame,
    segment: int,
    seeds: Mapping[int, Sequence[Point]],
    *,
    new_ids: Callable[[int], list[int]],
    image: Volume | None = None,
    region: tuple[Point, Point] | None = None,
) -> tuple[VoxelPatch, list[int]]:
    """The paint patch of a seeded split, and the new ids it paints.

    See :meth:`Proofreader.split
    <napari_connecto.proofreading.proofreader.Proofreader.split>` for the rules.

    Parameters
    ----------
    volume : Volume
        The segmentation (fragment ids at scale 0).
    mapping : RemapIds
        Fragment -> segment lookup.
    frame : VoxelFrame
        Scale 0's voxel -> nm mapping.
    segment : int
        The segment (uint64) to split.
    seeds : mapping of int to sequence of positions
        Group -> z, y, x seed positions in nm.
    new_ids : callable
        ``new_ids(n)`` returns ``n`` fresh segment ids.
    image : Volume, optional
        Grey values guiding the cut (read at scale 0's resolution).
    region : (start, stop), optional
        nm box to split in.

    Returns
    -------
    (VoxelPatch, list of int)
        The patch and the new id of each group after the first.

    Raises
    ------
    EditError
        Bad seeds or region, seeds off the segment, or a split that changes nothing.
    """
    shape = volume.scales[0].shape
    groups = _seed_voxels(seeds, frame, shape)
    start, stop = _region(groups, frame, shape, region)
    block = volume.read_voxels(0, start, stop)
    mask = mapping(block) == np.uint64(segment)
    marks = np.zeros(block.shape, dtype=np.int32)
    for group, voxels in groups.items():
        local = voxels - np.asarray(start)
        for (z, y, x), at in zip(local, voxels, strict=True):
            if not mask[z, y, x]:
                shown = int(mapping(block[z : z + 1, y : y + 1, x : x + 1]).reshape(-1)[0])
                raise EditError(
                    f"a seed of group {group} at voxel {tuple(int(v) for v in at)} lies on "
                    f"segment {shown}, not on {segment}"
                )
            if marks[z, y, x] not in (0, group):
                raise EditError(f"groups {marks[z, y, x]} and {group} share a seed voxel")
            marks[z, y, x] = group
    grey = None if image is None else _image_block(image, frame, start, stop, block.shape)
    sampling = frame.resolution
    split = seeded_split(block, mask, marks, grey, sampling=sampling)
    order = sorted(groups)[1:]
    ids = new_ids(len(order))
    after = block.copy()
    for group, new in zip(order, ids, strict=True):
        after[split == group] = np.uint64(new)
    patch = VoxelPatch.from_change(start, block, after)
    if patch is None:
        raise EditError(f"the split of {segment} changes no voxels")
    return patch, ids


def _seed_voxels(
    seeds: Mapping[int, Sequence[Point]], frame: VoxelFrame, shape: Sequence[int]
) -> dict[int, np.ndarray]:
    """Voxel indices of each group's seeds (checked: two groups or more, group 1, inside)."""
    if not isinstance(seeds, Mapping):
        raise EditError("seeds are a mapping group -> list of z, y, x positions in nm")
    groups: dict[int, np.ndarray] = {}
    for key, points in seeds.items():
        if isinstance(key, bool) or not isinstance(key, int | np.integer) or key < 1:
            raise EditError(f"seed groups are integers >= 1, got {key!r}")
        positions = [as_position(p, f"a seed of group {key}") for p in points]
        if not positions:
            raise EditError(f"seed group {key} has no seed")
        voxels = frame.to_voxels(np.asarray(positions))
        outside = ~np.all((voxels >= 0) & (voxels < np.asarray(shape)), axis=1)
        if outside.any():
            raise EditError(
                f"seed {positions[int(np.flatnonzero(outside)[0])]} of group {key} lies "
                f"outside the volume"
            )
        groups[int(key)] = voxels
    if len(groups) < 2 or 1 not in groups:
        raise EditError(f"a split needs group 1 and at least one more group, got {sorted(groups)}")
    return groups


def _region(
    groups: dict[int, np.ndarray],
    frame: VoxelFrame,
    shape: Sequence[int],
    region: tuple[Point, Point] | None,
) -> Box:
    """Voxel box to split in: ``region`` (nm), or the seeds' box padded in y and x."""
    every = np.concatenate(list(groups.values()))
    top = np.asarray(shape)
    if region is None:
        res = np.asarray(frame.resolution)
        pad = np.array([0, *(math.ceil(REGION_PAD_NM / r) for r in res[1:])])
        lo = np.maximum(every.min(axis=0) - pad, 0)
        hi = np.minimum(every.max(axis=0) + 1 + pad, top)
    else:
        try:
            first, last = region
            box = BBox.of(as_position(first, "region start"), as_position(last, "region stop"))
        except (TypeError, ValueError) as exc:
            raise EditError(f"region is a (start, stop) pair of nm positions: {exc}") from exc
        begin, end = box.to_voxels(_vec(frame.resolution), _vec(frame.origin))
        lo = np.maximum(np.asarray(begin), 0)
        hi = np.minimum(np.asarray(end), top)
        if np.any(every < lo) or np.any(every >= hi):
            raise EditError(f"the region {region} does not hold every seed")
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)  # type: ignore[return-value]


def _vec(values: Sequence[float]) -> Vec3:
    return Vec3(*(float(v) for v in values))


def _image_block(
    image: Volume,
    frame: VoxelFrame,
    start: Sequence[int],
    stop: Sequence[int],
    shape: tuple[int, ...],
) -> np.ndarray:
    """The image voxels over the segmentation block (same resolution, same grid)."""
    res, org = np.asarray(frame.resolution), np.asarray(frame.origin)
    box = BBox.of(org + np.asarray(start) * res, org + np.asarray(stop) * res)
    grey = np.asarray(image.read(box, resolution=frame.resolution))
    if grey.shape != shape:
        raise EditError(
            f"the image does not line up with the segmentation: {grey.shape} voxels "
            f"for a {shape} block"
        )
    return grey
