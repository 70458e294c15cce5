"""One pyramid level as a lazy array that napari can display (``LayerDataProtocol``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.errors import RegionError

if TYPE_CHECKING:
    from napari_connecto.volume.volume import Volume

__all__ = ["LevelArray", "normalize_index"]

_Key = Any


def normalize_index(
    key: _Key, shape: tuple[int, ...]
) -> tuple[list[tuple[int, int, int]], list[bool]]:
    """Resolve a numpy basic index into per-axis ``(start, stop, step)`` and kept-axis flags.

    Only basic indexing is supported: integers, slices and one ``Ellipsis``.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis")
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (len(shape) - len(key) + 1)
        key = key[:i] + fill + key[i + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: {len(key)} for {len(shape)} dimensions")
    key = key + (slice(None),) * (len(shape) - len(key))
    ranges: list[tuple[int, int, int]] = []
    kept: list[bool] = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            ranges.append(k.indices(n))
            kept.append(True)
        elif isinstance(k, int | np.integer):
            i = int(k) + n if k < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for axis of size {n}")
            ranges.append((i, i + 1, 1))
            kept.append(False)
        else:
            raise IndexError(f"only integers, slices and ... are supported, got {k!r}")
    return ranges, kept


class LevelArray:
    """A lazy, read-only view of one scale of a :class:`~napari_connecto.volume.Volume`.

    ``np.asarray(level[z, y0:y1, x0:x1])`` reads exactly the voxels asked for; no
    data is read before indexing. ``chunks`` tells napari the storage chunking so
    it can snap its view to chunk boundaries.

    Parameters
    ----------
    volume : Volume
        The volume to read from.
    scale : int
        Index of the level (0 = finest).
    """

    def __init__(self, volume: Volume, scale: int) -> None:
        self._volume = volume
        self._scale = scale
        info = volume.scales[scale]
        self.shape: tuple[int, int, int] = info.shape
        self.dtype: np.dtype = volume.dtype
        self.chunks: tuple[int, int, int] = info.chunk_shape

    @property
    def volume(self) -> Volume:
        """The volume this level belongs to."""
        return self._volume

    @property
    def scale_index(self) -> int:
        """Index of this level in the volume's scales."""
        return self._scale

    @property
    def ndim(self) -> int:
        """Always 3 (z, y, x)."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of voxels."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Declared size in bytes."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: _Key) -> np.ndarray:
        ranges, kept = normalize_index(key, self.shape)
        if any(step < 0 for _, _, step in ranges):
            raise IndexError("negative slice steps are not supported")
        start = tuple(lo for lo, _, _ in ranges)
        stop = tuple(max(lo, hi) for lo, hi, _ in ranges)
        block = self._volume.read_voxels(self._scale, start, stop)  # type: ignore[arg-type]
        if any(step != 1 for _, _, step in ranges):
            block = block[tuple(slice(None, None, step) for _, _, step in ranges)]
        return block.reshape([n for n, k in zip(block.shape, kept, strict=True) if k])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if self.nbytes > self._volume.max_read_bytes:
            raise RegionError(
                f"refusing to load all of {self.shape} {self.dtype} ({self.nbytes} bytes) "
                "into memory; index a region instead"
            )
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<LevelArray {self._volume.name!r} scale {self._scale} {self.shape} {self.dtype}>"
