"""The small interface every storage backend implements.

A backend class is registered by name (see :mod:`napari_connecto.backends.registry`).
Its class methods answer questions about a source without opening it; an
instance is one opened volume that decodes chunks and nothing more. Caching,
scheduling, nm indexing and processors live above it, in :mod:`napari_connecto.volume`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from napari_connecto.errors import ReadOnlyError

if TYPE_CHECKING:
    import pandas as pd

    from napari_connecto.source import Source
    from napari_connecto.volume.scale import Index3, Scale

__all__ = ["Entry", "EntryKind", "Kind", "PointSet", "VolumeBackend"]

Kind = Literal["image", "segmentation"]
EntryKind = Literal["image", "segmentation", "points"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing inside a source that can become a layer."""

    source: Source
    """The source that opens exactly this thing."""
    kind: EntryKind
    """What it is."""
    name: str
    """A display name (becomes the layer name)."""


@dataclass(frozen=True, slots=True)
class PointSet:
    """Point annotations (e.g. synapse sites) in nm, z, y, x."""

    name: str
    """Display name."""
    positions_nm: np.ndarray
    """``(N, 3)`` float64 positions in nm."""
    features: pd.DataFrame
    """One row per point (ids, types, partners, ...)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (source, units)."""


class VolumeBackend(ABC):
    """An opened volume in one storage format.

    Subclasses set the class attributes, implement :meth:`sniff`, :meth:`open`
    and :meth:`read`, and override :meth:`contents`, :meth:`write` and
    :meth:`open_points` where the format has them.
    """

    name: ClassVar[str]
    """Registry name of the format (``"zarr"``, ``"n5"``, ...)."""
    supports_writes: ClassVar[bool] = False
    """Whether :meth:`write` can work for this format."""
    server_agglomeration: ClassVar[bool] = False
    """Whether a server keeps the fragment -> segment mapping (DVID labelmaps): then local
    merges, splits and paints would diverge from it, and proofreading refuses them."""
    max_concurrency: ClassVar[int] = 8
    """How many reads of this backend are worth running at once (1 for HDF5)."""

    source: Source
    kind: Kind
    scales: tuple[Scale, ...]
    writable: bool = False
    fill_value: int | float = 0
    contrast_limits: tuple[float, float] | None = None
    """Display range from metadata, if the format carries one."""
    background_label: int = 0
    """Segment id that means "no segment" (CREMI uses 0xFFFFFFFFFFFFFFFF)."""

    # -- questions about a source, asked before opening ---------------------------
    @classmethod
    @abstractmethod
    def sniff(cls, source: Source) -> bool:
        """Whether this backend can open ``source``; cheap, never raises."""

    @classmethod
    def contents(cls, source: Source) -> list[Entry]:
        """Every volume and point set inside ``source`` (default: ``source`` is one volume)."""
        backend = cls.open(source)
        try:
            return [Entry(source, backend.kind, source.name)]
        finally:
            backend.close()

    @classmethod
    @abstractmethod
    def open(cls, source: Source, mode: Literal["r", "r+"] = "r") -> VolumeBackend:
        """Open one volume; read metadata only, no chunk data."""

    @classmethod
    def open_points(cls, source: Source) -> PointSet:
        """Read a point set listed by :meth:`contents`."""
        raise NotImplementedError(f"{cls.name} sources hold no point sets")

    # -- an opened volume -----------------------------------------------------------
    @abstractmethod
    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Decode voxels ``[start, stop)`` of one scale, z, y, x, within bounds.

        Indices count from the first voxel of the scale (its ``voxel_offset`` is
        not included). Raises :class:`~napari_connecto.errors.ChunkError` for a
        chunk that is truncated, corrupt or unreadable.
        """

    def write(self, scale: int, start: Index3, data: np.ndarray) -> None:
        """Store ``data`` at ``start`` of one scale (only where :attr:`writable`)."""
        raise ReadOnlyError(f"{self.name} volume {self.source} cannot be written")

    def write_batch(self, writes: Sequence[tuple[int, Index3, np.ndarray]]) -> None:
        """Store many blocks as one unit, in order.

        The default calls :meth:`write` once per block. That makes each block
        as safe as the format's :meth:`write` (zarr, N5 and precomputed replace
        whole chunk files atomically through tensorstore), but not the batch:
        a process killed half-way leaves the first blocks written and the rest
        not. Backends that can do better (HDF5: one copy-on-write of the file)
        override it.

        Parameters
        ----------
        writes : sequence of (int, Index3, numpy.ndarray)
            ``(scale, start, data)`` per block: z, y, x start indices of that
            scale and a block already in the scale's dtype, inside its bounds.

        Raises
        ------
        ReadOnlyError
            If the volume cannot be written.
        ChunkError
            If storing a block fails.
        """
        for scale, start, data in writes:
            self.write(scale, start, data)

    def refresh(self) -> None:  # noqa: B027 - optional hook
        """Re-open file handles so reads see data another process or a replaced file wrote.

        The default does nothing: formats read through per-chunk files
        (zarr, N5, precomputed) see new chunk files without it.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def describe(self) -> dict[str, Any]:
        """Format-specific facts for ``napari-connecto info`` (JSON-serialisable)."""
        return {}
