"""One pyramid level as a lazy array that napari can display (``LayerDataProtocol``)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.errors import RegionError

if TYPE_CHECKING:
    from napari_connecto.volume.volume import Volume

__all__ = ["LevelArray", "RegionView", "compose_ranges", "normalize_index"]

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


_Range = tuple[int, int, int]


def compose_ranges(outer: _Range, inner: _Range) -> _Range:
    """Range ``inner`` (in the coordinates of view ``outer``) in base coordinates."""
    o_start, _, o_step = outer
    i_start, i_stop, i_step = inner
    count = len(range(i_start, i_stop, i_step))
    start = o_start + i_start * o_step
    step = o_step * i_step
    return start, start + max(count - 1, 0) * step + (1 if count else 0), step


class RegionView(ABC):
    """A lazy 3D view of part of a level: slicing narrows it, reading is left to subclasses.

    Indexing with slices only returns another view (napari first cuts the displayed
    window out of the whole level, then picks a plane); indexing that drops an axis
    (an integer), or ``np.asarray``, reads exactly the voxels asked for.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    _region: tuple[_Range, ...]

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
        """Size in bytes once read."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: _Key) -> Any:
        ranges, kept = normalize_index(key, self.shape)
        if any(step < 0 for _, _, step in ranges):
            raise IndexError("negative slice steps are not supported")
        region = tuple(compose_ranges(o, i) for o, i in zip(self._region, ranges, strict=True))
        if all(kept):
            return self._view(region)
        block = self._read(region, probe=sum(kept) < 2)
        return block.reshape([n for n, k in zip(block.shape, kept, strict=True) if k])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if self.nbytes > self._max_read_bytes:
            raise RegionError(
                f"refusing to load all of {self.shape} {self.dtype} ({self.nbytes} bytes) "
                "into memory; index a region instead"
            )
        out = self._read(self._region)
        return out if dtype is None else out.astype(dtype, copy=False)

    def _read(self, region: tuple[_Range, ...], *, probe: bool = False) -> np.ndarray:
        start = tuple(lo for lo, _, _ in region)
        stop = tuple(max(lo, hi) for lo, hi, _ in region)
        block = self._fetch(start, stop, probe=probe)
        if any(step != 1 for _, _, step in region):
            block = block[tuple(slice(None, None, step) for _, _, step in region)]
        return block

    @property
    @abstractmethod
    def _max_read_bytes(self) -> int:
        """Largest read ``np.asarray`` may allocate."""

    @abstractmethod
    def _view(self, region: tuple[_Range, ...]) -> RegionView:
        """The same kind of view over ``region``."""

    @abstractmethod
    def _fetch(self, start: tuple[int, ...], stop: tuple[int, ...], *, probe: bool) -> np.ndarray:
        """Voxels ``[start, stop)`` (``probe``: a single-value lookup)."""


class LevelArray(RegionView):
    """A lazy, read-only view of one scale of a :class:`~napari_connecto.volume.Volume`.

    Indexing with slices only returns another lazy view (napari first cuts the
    displayed window out of the whole level, then picks a plane); indexing that
    drops an axis (an integer), or ``np.asarray``, reads exactly the voxels
    asked for. ``chunks`` tells napari the storage chunking so it can snap its
    view to chunk boundaries.

    Parameters
    ----------
    volume : Volume
        The volume to read from.
    scale : int
        Index of the level (0 = finest).
    region : tuple of (start, stop, step), optional
        The part of the level this view shows, per z, y, x axis; default all of it.
    """

    def __init__(
        self, volume: Volume, scale: int, region: tuple[_Range, _Range, _Range] | None = None
    ) -> None:
        self._volume = volume
        self._scale = scale
        info = volume.scales[scale]
        self._region: tuple[_Range, ...] = region or tuple((0, n, 1) for n in info.shape)
        self.shape: tuple[int, ...] = tuple(len(range(*r)) for r in self._region)
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

    def _view(self, region: tuple[_Range, ...]) -> LevelArray:
        return LevelArray(self._volume, self._scale, region)  # type: ignore[arg-type]

    def _fetch(self, start: tuple[int, ...], stop: tuple[int, ...], *, probe: bool) -> np.ndarray:
        return self._volume.read_voxels(self._scale, start, stop)

    @property
    def _max_read_bytes(self) -> int:
        return self._volume.max_read_bytes

    def __repr__(self) -> str:
        where = ", ".join(f"{a}:{b}:{c}" for a, b, c in self._region)
        return (
            f"<LevelArray {self._volume.name!r} scale {self._scale} [{where}] "
            f"{self.shape} {self.dtype}>"
        )
