"""Value objects for the one coordinate frame of the public API: z, y, x in nanometres."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BBox", "Vec3"]


@dataclass(frozen=True, slots=True)
class Vec3:
    """A 3-vector in z, y, x order (nanometres unless a name says otherwise)."""

    z: float
    """Slowest axis (section index direction in EM)."""
    y: float
    """Middle axis."""
    x: float
    """Fastest axis."""

    @classmethod
    def of(cls, values: Iterable[float] | Vec3) -> Vec3:
        """Build a vector from any z, y, x triple."""
        if isinstance(values, Vec3):
            return values
        z, y, x = (float(v) for v in values)
        return cls(z, y, x)

    @classmethod
    def from_xyz(cls, values: Iterable[float]) -> Vec3:
        """Build a vector from an x, y, z triple (the order of most file formats)."""
        x, y, z = (float(v) for v in values)
        return cls(z, y, x)

    def as_tuple(self) -> tuple[float, float, float]:
        """Return ``(z, y, x)``."""
        return (self.z, self.y, self.x)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.z, self.y, self.x))

    def __mul__(self, other: Vec3 | Iterable[float] | float) -> Vec3:
        if isinstance(other, int | float):
            return Vec3(self.z * other, self.y * other, self.x * other)
        o = Vec3.of(other)
        return Vec3(self.z * o.z, self.y * o.y, self.x * o.x)

    def __add__(self, other: Vec3 | Iterable[float]) -> Vec3:
        o = Vec3.of(other)
        return Vec3(self.z + o.z, self.y + o.y, self.x + o.x)

    def __sub__(self, other: Vec3 | Iterable[float]) -> Vec3:
        o = Vec3.of(other)
        return Vec3(self.z - o.z, self.y - o.y, self.x - o.x)

    def __truediv__(self, other: Vec3 | Iterable[float] | float) -> Vec3:
        if isinstance(other, int | float):
            return Vec3(self.z / other, self.y / other, self.x / other)
        o = Vec3.of(other)
        return Vec3(self.z / o.z, self.y / o.y, self.x / o.x)


@dataclass(frozen=True, slots=True)
class BBox:
    """An axis-aligned box in nanometres, ``start`` inclusive, ``stop`` exclusive."""

    start: Vec3
    """Lower corner (z, y, x) in nm."""
    stop: Vec3
    """Upper corner (z, y, x) in nm, exclusive."""

    def __post_init__(self) -> None:
        for lo, hi in zip(self.start, self.stop, strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"bounding box corners must be finite: {self}")

    @classmethod
    def of(cls, start: Iterable[float], stop: Iterable[float]) -> BBox:
        """Build a box from two z, y, x triples in nm."""
        return cls(Vec3.of(start), Vec3.of(stop))

    @classmethod
    def around(cls, centre: Iterable[float], size: Iterable[float]) -> BBox:
        """Build a box of ``size`` nm centred on ``centre`` nm."""
        c, s = Vec3.of(centre), Vec3.of(size)
        return cls(c - s / 2, c + s / 2)

    @property
    def size(self) -> Vec3:
        """Extent in nm."""
        return self.stop - self.start

    def to_voxels(
        self, resolution: Vec3, offset_nm: Vec3 | None = None
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Voxel index range covering this box at ``resolution``.

        Parameters
        ----------
        resolution : Vec3
            Voxel size in nm at the scale being indexed.
        offset_nm : Vec3
            Position in nm of voxel index 0 at that scale.

        Returns
        -------
        tuple
            ``(start, stop)`` voxel indices, every voxel that overlaps the box.
        """
        offset_nm = offset_nm or Vec3(0.0, 0.0, 0.0)
        lo = (self.start - offset_nm) / resolution
        hi = (self.stop - offset_nm) / resolution
        start = tuple(math.floor(v + 1e-9) for v in lo)
        stop = tuple(math.ceil(v - 1e-9) for v in hi)
        return start, stop  # type: ignore[return-value]
