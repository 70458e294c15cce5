"""Which voxels an export covers, and reading them plane by plane.

A region is asked for in nm (z, y, x) and resolved once, against one scale of one
volume, into a :class:`RegionPlan` of voxel indices. A second volume (the segmentation
over an EM image) gets the plan covering the same nm at its matching scale. Reads go one
z-plane at a time, so a long z-range never sits in memory whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.errors import RegionError
from napari_connecto.geometry import BBox, Vec3

if TYPE_CHECKING:
    from napari_connecto.volume.volume import Volume

__all__ = ["RegionPlan", "align_plan", "iter_planes", "plan_region", "z_range_box"]


@dataclass(frozen=True, slots=True)
class RegionPlan:
    """The voxels of one scale that an export covers, z, y, x, stop exclusive."""

    scale: int
    """Scale index (0 = finest)."""
    start: tuple[int, int, int]
    """First voxel index."""
    stop: tuple[int, int, int]
    """One past the last voxel index."""
    resolution: Vec3
    """Voxel size in nm at that scale."""
    origin_nm: Vec3
    """Position in nm of voxel index 0 at that scale."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Size in voxels."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def bbox(self) -> BBox:
        """The covered region in nm."""
        return BBox(
            self.origin_nm + Vec3.of(self.start) * self.resolution,
            self.origin_nm + Vec3.of(self.stop) * self.resolution,
        )


def z_range_box(z0: float, z1: float, yx_start: Sequence[float], yx_stop: Sequence[float]) -> BBox:
    """A box from a z-range and a y, x rectangle, all in nm."""
    return BBox.of((z0, *yx_start), (z1, *yx_stop))


def _pick_scale(volume: Volume, scale: int | None, resolution: Sequence[float] | None) -> int:
    """The scale index asked for by index or by voxel size."""
    if resolution is not None:
        return volume.scale_for(resolution)
    index = 0 if scale is None else int(scale)
    if not 0 <= index < len(volume.scales):
        raise RegionError(f"{volume.name} has scales 0..{len(volume.scales) - 1}, not {index}")
    return index


def plan_region(
    volume: Volume,
    box: BBox,
    *,
    scale: int | None = None,
    resolution: Sequence[float] | None = None,
) -> RegionPlan:
    """Resolve a nm box into the voxels of one scale of ``volume``, clipped to the volume.

    Parameters
    ----------
    volume : Volume
        The volume exported.
    box : BBox
        Region in nm (z, y, x); every voxel overlapping it is included.
    scale : int, optional
        Scale index (default 0, the finest).
    resolution : sequence of float, optional
        Pick the scale by its voxel size (nm, z, y, x) instead.

    Returns
    -------
    RegionPlan

    Raises
    ------
    RegionError
        If the box is empty, does not overlap the volume, or no scale matches.
    """
    if any(hi <= lo for lo, hi in zip(box.start, box.stop, strict=True)):
        raise RegionError(f"empty region {box.start.as_tuple()} .. {box.stop.as_tuple()} nm")
    index = _pick_scale(volume, scale, resolution)
    sc = volume.scales[index]
    start, stop = box.to_voxels(sc.resolution, sc.origin_nm)
    lo = tuple(max(0, a) for a in start)
    hi = tuple(min(n, b) for b, n in zip(stop, sc.shape, strict=True))
    if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
        raise RegionError(
            f"region {box.start.as_tuple()} .. {box.stop.as_tuple()} nm lies outside "
            f"{volume.name} ({sc.bbox.start.as_tuple()} .. {sc.bbox.stop.as_tuple()} nm)"
        )
    return RegionPlan(index, lo, hi, sc.resolution, sc.origin_nm)  # type: ignore[arg-type]


def align_plan(plan: RegionPlan, other: Volume) -> RegionPlan:
    """The plan covering the same nm as ``plan`` in ``other``, at its scale of that voxel size.

    Raises
    ------
    RegionError
        If ``other`` has no scale of that resolution, or its voxel grid is offset from
        ``plan``'s by a fraction of a voxel.
    """
    index = other.scale_for(plan.resolution)
    sc = other.scales[index]
    shift = (plan.origin_nm - sc.origin_nm) / sc.resolution
    steps = []
    for value in shift:
        if not math.isclose(value, round(value), abs_tol=1e-3):
            raise RegionError(
                f"{other.name} scale {index} is offset by {shift.as_tuple()} voxels from the "
                "image grid; cannot export them voxel for voxel"
            )
        steps.append(round(value))
    start = tuple(a + s for a, s in zip(plan.start, steps, strict=True))
    stop = tuple(b + s for b, s in zip(plan.stop, steps, strict=True))
    return RegionPlan(index, start, stop, sc.resolution, sc.origin_nm)  # type: ignore[arg-type]


def iter_planes(volume: Volume, plan: RegionPlan) -> Iterator[np.ndarray]:
    """Yield the 2-D ``(y, x)`` planes of ``plan``, one blocking read each, z ascending.

    Voxels of the plan outside ``volume`` (an aligned second volume) hold its fill value.
    """
    (z0, y0, x0), (z1, y1, x1) = plan.start, plan.stop
    for z in range(z0, z1):
        yield volume.read_voxels(plan.scale, (z, y0, x0), (z + 1, y1, x1))[0]
