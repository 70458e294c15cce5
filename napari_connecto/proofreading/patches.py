"""Voxel patches: the box a paint edit covers, its voxels before and after, as journal blobs.

A patch is applied where ``before != after`` only, so writing it twice changes nothing
(a replay after a crash is safe) and undoing it restores exactly the voxels it changed.
Blobs are zlib-compressed little-endian raw bytes; nothing is ever pickled.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from napari_connecto.errors import EditError

__all__ = ["MAX_PATCH_BYTES", "Direction", "VoxelPatch"]

Direction = Literal["do", "undo"]

MAX_PATCH_BYTES = 2**31
"""Largest voxel box (bytes, before or after) a journal patch may declare."""

_LEVEL = 1
"""zlib level: label patches compress ~100x already at level 1, in a fraction of the time."""


@dataclass(frozen=True, slots=True)
class VoxelPatch:
    """Voxels of one box at one scale, before and after an edit (z, y, x)."""

    start: tuple[int, int, int]
    """First voxel of the box (indices of the scale)."""
    before: np.ndarray
    """The box's voxels before the edit."""
    after: np.ndarray
    """The box's voxels after the edit (same shape and dtype)."""
    scale: int = 0
    """Scale index (edits are made at full resolution)."""

    def __post_init__(self) -> None:
        if self.before.shape != self.after.shape or self.before.ndim != 3:
            raise EditError(
                f"a patch needs two z, y, x blocks of one shape, got {self.before.shape} "
                f"and {self.after.shape}"
            )
        if self.before.dtype != self.after.dtype:
            raise EditError(f"patch dtypes differ: {self.before.dtype} and {self.after.dtype}")

    @classmethod
    def from_change(
        cls, start: tuple[int, int, int], before: np.ndarray, after: np.ndarray, scale: int = 0
    ) -> VoxelPatch | None:
        """The smallest patch holding every voxel that differs; ``None`` if none does."""
        changed = before != after
        if not changed.any():
            return None
        lo, hi = [], []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            hit = np.flatnonzero(changed.any(axis=other))
            lo.append(int(hit[0]))
            hi.append(int(hit[-1]) + 1)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        begin = tuple(int(s) + a for s, a in zip(start, lo, strict=True))
        return cls(begin, before[box].copy(), after[box].copy(), scale)  # type: ignore[arg-type]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Size of the box."""
        return self.before.shape  # type: ignore[return-value]

    @property
    def stop(self) -> tuple[int, int, int]:
        """One past the last voxel of the box."""
        return tuple(a + n for a, n in zip(self.start, self.shape, strict=True))  # type: ignore[return-value]

    @property
    def mask(self) -> np.ndarray:
        """Voxels the edit changed."""
        return self.before != self.after

    @property
    def changed_voxels(self) -> int:
        """How many voxels the edit changed."""
        return int(np.count_nonzero(self.mask))

    def values(self, direction: Direction) -> np.ndarray:
        """What the changed voxels hold after ``direction`` (``"do"``: after, else before)."""
        return self.after if direction == "do" else self.before

    def apply(self, current: np.ndarray, direction: Direction) -> np.ndarray:
        """``current`` (the box as stored now) with this patch written in ``direction``."""
        if current.shape != self.shape:
            raise EditError(f"patch box is {self.shape}, the stored block {current.shape}")
        out = np.array(current, dtype=self.before.dtype, copy=True)
        mask = self.mask
        out[mask] = self.values(direction)[mask]
        return out

    def ids(self) -> np.ndarray:
        """Every id the edit removed or wrote (sorted, unique)."""
        mask = self.mask
        return np.unique(np.concatenate([self.before[mask], self.after[mask]]))

    # -- journal blobs ------------------------------------------------------------------
    def to_row(self) -> dict[str, object]:
        """The ``edit_voxels`` columns of this patch (without ``seq``)."""
        dtype = self.before.dtype.newbyteorder("<")
        row: dict[str, object] = {
            "scale": self.scale,
            "dtype": dtype.str,
            "before": zlib.compress(np.ascontiguousarray(self.before, dtype).tobytes(), _LEVEL),
            "after": zlib.compress(np.ascontiguousarray(self.after, dtype).tobytes(), _LEVEL),
        }
        for axis, a, n in zip("zyx", self.start, self.shape, strict=True):
            row[f"start_{axis}"] = int(a)
            row[f"size_{axis}"] = int(n)
        return row

    @classmethod
    def from_row(cls, row: dict[str, object]) -> VoxelPatch:
        """Rebuild a patch from its ``edit_voxels`` row (sizes checked, decompression capped)."""
        try:
            dtype = np.dtype(str(row["dtype"]))
        except (TypeError, ValueError) as exc:
            raise EditError(f"journal patch has an unknown dtype {row['dtype']!r}") from exc
        if dtype.kind not in "uifb" or dtype.hasobject:
            raise EditError(f"journal patch dtype {dtype} is not a voxel type")
        shape = tuple(int(row[f"size_{a}"]) for a in "zyx")  # type: ignore[call-overload]
        start = tuple(int(row[f"start_{a}"]) for a in "zyx")  # type: ignore[call-overload]
        nbytes = math.prod(shape) * dtype.itemsize
        if min(shape) < 1 or nbytes > MAX_PATCH_BYTES:
            raise EditError(
                f"journal patch box {shape} of {dtype} is empty or over {MAX_PATCH_BYTES} bytes"
            )
        arrays = [_inflate(row[name], nbytes, name) for name in ("before", "after")]  # type: ignore[arg-type]
        before, after = (
            np.frombuffer(a, dtype).reshape(shape).astype(dtype.newbyteorder("=")) for a in arrays
        )
        return cls(start, before, after, int(row["scale"]))  # type: ignore[arg-type, call-overload]


def _inflate(blob: bytes, nbytes: int, name: str) -> bytes:
    """Decompress a journal blob that must be exactly ``nbytes`` long."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(bytes(blob), nbytes + 1)
    except zlib.error as exc:
        raise EditError(f"journal patch {name!r} is corrupt: {exc}") from exc
    if len(data) != nbytes or inflater.unconsumed_tail:
        raise EditError(
            f"journal patch {name!r} holds {len(data)}{'+' if inflater.unconsumed_tail else ''} "
            f"bytes, expected {nbytes}"
        )
    if not inflater.eof or inflater.unused_data:
        raise EditError(f"journal patch {name!r} is truncated or has trailing bytes")
    return data
