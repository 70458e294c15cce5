"""Read and write processors: transformations applied to every block a volume reads or writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["NormalizeIntensity", "Processor", "RemapIds"]


@runtime_checkable
class Processor(Protocol):
    """Something applied to each block read from (or written to) a volume."""

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """Return the transformed block (never modify ``data`` in place)."""
        ...

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype this processor produces from ``dtype``."""
        ...


@dataclass(frozen=True, slots=True)
class NormalizeIntensity:
    """Map ``[low, high]`` linearly to ``[0, 1]`` as float32, clipping outside."""

    low: float
    """Input value mapped to 0."""
    high: float
    """Input value mapped to 1."""

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must exceed low ({self.low})")

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """Normalise one block."""
        out = (data.astype(np.float32) - np.float32(self.low)) / np.float32(self.high - self.low)
        return np.clip(out, 0.0, 1.0, out=out)

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        """Always float32."""
        return np.dtype(np.float32)


@dataclass(frozen=True, slots=True)
class RemapIds:
    """Replace segment ids by a lookup table; ids not in the table are kept (or set to ``default``).

    The table is held as two sorted uint64 arrays and applied with a binary
    search, so it scales to millions of ids and never passes ids through float.
    """

    keys: np.ndarray = field(repr=False)
    """Sorted source ids."""
    values: np.ndarray = field(repr=False)
    """Target id of each key."""
    default: int | None = None
    """Id for voxels whose id is not a key; ``None`` keeps them as they are."""

    @classmethod
    def from_mapping(cls, mapping: dict[int, int], default: int | None = None) -> RemapIds:
        """Build the table from a ``{old: new}`` dict."""
        keys = np.fromiter(mapping.keys(), dtype=np.uint64, count=len(mapping))
        values = np.fromiter(mapping.values(), dtype=np.uint64, count=len(mapping))
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], values[order], default)

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """Remap one block; the dtype is kept."""
        flat = data.reshape(-1).astype(np.uint64, copy=False)
        if self.keys.size == 0:
            hit = np.zeros(flat.shape, bool)
            pos = np.zeros(flat.shape, np.intp)
        else:
            pos = np.clip(np.searchsorted(self.keys, flat), 0, self.keys.size - 1)
            hit = self.keys[pos] == flat
        if self.default is None:
            out = flat.copy()
        else:
            out = np.full(flat.shape, self.default, dtype=np.uint64)
        out[hit] = self.values[pos[hit]]
        return out.astype(data.dtype, copy=False).reshape(data.shape)

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        """Unchanged."""
        return np.dtype(dtype)
