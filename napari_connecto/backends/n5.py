"""N5 containers, read and written through tensorstore's ``n5`` driver.

N5 orders axes fastest first (``[x, y, z]``) and tensorstore keeps that order, so
each store is wrapped in a transposed view read and written in z, y, x. Metadata
is validated here first, so errors name the ``attributes.json`` and field at fault.
2D datasets become ``(1, y, x)``; axes beyond x, y, z are accepted only with size 1.
Level ``k`` of a multiscale group (``s0``, ``s1``, ...) has the base resolution
(group, else ``s0``) times its ``downsamplingFactors``. An ``offset`` attribute (x, y, z,
in the units of the resolution, as funlib writes it) places voxel 0; a level without
one takes its group's (or ``s0``'s).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from napari_connecto.backends._assemble import assemble
from napari_connecto.backends._n5_blocks import N5Grid, decode_block
from napari_connecto.backends._n5_layout import (
    COMPRESSIONS,
    Dataset,
    Layout,
    find_layout,
    is_dataset,
    local_root,
    looks_like_n5,
    n5_version,
    open_ts,
    sniff_attrs,
    walk,
    zyx_view,
)
from napari_connecto.backends._tensorstore import read_region, write_region
from napari_connecto.backends.base import Entry, VolumeBackend
from napari_connecto.errors import (
    AmbiguousSourceError,
    ChunkError,
    MetadataError,
    ReadOnlyError,
    SourceNotFoundError,
)
from napari_connecto.volume.scale import Scale

if TYPE_CHECKING:
    import tensorstore as ts

    from napari_connecto.source import Source
    from napari_connecto.volume.scale import Index3

__all__ = ["COMPRESSIONS", "N5Backend"]

logger = logging.getLogger(__name__)


class N5Backend(VolumeBackend):
    """N5 datasets and multiscale groups, on local disk or over HTTP.

    Blocks are decoded by tensorstore; a missing block reads as 0 and a
    truncated or corrupt one raises :class:`~napari_connecto.errors.ChunkError`.
    Writes (``mode="r+"``) go through tensorstore, which writes each block to a
    temporary file and renames it into place. Remote datasets are read-only;
    their blocks are fetched through the shared transport and decoded by
    :mod:`._n5_blocks`.
    """

    name: ClassVar[str] = "n5"
    supports_writes: ClassVar[bool] = True

    def __init__(self, source: Source, layout: Layout, mode: str) -> None:
        self.source = source
        self.scales = tuple(layout.scales())
        self.kind = layout.kind
        self.writable = mode == "r+"
        self._datasets = layout.levels
        self._version = n5_version(layout.root)
        self._remote = source.is_remote
        if self._remote and self.writable:
            raise ReadOnlyError(f"{source} is remote; remote N5 datasets are read-only")
        # The spec pins dimensions, blockSize and dataType: tensorstore refuses a mismatch.
        self._views: list[ts.TensorStore] | None = [
            zyx_view(open_ts(d, self.writable), len(d.dims))
            for d in ([] if self._remote else layout.levels)
        ]

    @classmethod
    def sniff(cls, source: Source) -> bool:
        """Whether ``source`` is a local N5 container, group or dataset; never raises."""
        if source.format == "n5":
            return True
        if source.format is not None:
            return False
        try:
            root = local_root(source)
            if source.is_remote:  # no directory listing: the attributes must say N5
                doc = sniff_attrs(root) or {}
                return (
                    "n5" in doc
                    or {"dimensions", "dataType"} <= doc.keys()
                    or is_dataset(sniff_attrs(root / "s0"))
                )
            return root.is_dir() and looks_like_n5(root)
        except (OSError, ValueError):
            return False

    @classmethod
    def contents(cls, source: Source) -> list[Entry]:
        """Every dataset and multiscale group in ``source`` (one entry if it is one).

        Raises
        ------
        SourceNotFoundError
            If the directory does not exist.
        MetadataError
            If nothing readable is inside.
        """
        entries, broken = walk(source, cls._root(source))
        if not entries:
            if broken:
                raise broken[0]
            raise MetadataError(str(source), "", "holds no N5 datasets")
        return entries

    @classmethod
    def open(cls, source: Source, mode: Literal["r", "r+"] = "r") -> N5Backend:
        """Open one N5 dataset or multiscale group; reads metadata only.

        Parameters
        ----------
        source : Source
            A dataset, a multiscale group, or a container holding exactly one of them.
        mode : {"r", "r+"}
            ``"r+"`` allows writes.

        Returns
        -------
        N5Backend
            The opened volume.

        Raises
        ------
        SourceNotFoundError
            If the directory does not exist.
        AmbiguousSourceError
            If ``source`` holds several volumes.
        MetadataError
            If metadata is malformed (:class:`UnsupportedEncodingError` for lz4,
            unknown data types or layouts).
        """
        layout = find_layout(cls._root(source))
        if layout is not None:
            return cls(source, layout, mode)
        entries = cls.contents(source)
        if len(entries) > 1:
            raise AmbiguousSourceError(str(source), [str(e.source) for e in entries])
        return cls.open(entries[0].source, mode)

    @classmethod
    def _root(cls, source: Source) -> Path:
        root = local_root(source)
        if source.is_remote:
            return root
        if not root.exists():
            raise SourceNotFoundError(str(source))
        if not root.is_dir():
            raise MetadataError(str(root), "", "is a file; an N5 container is a directory")
        return root

    def _view(self, scale: int) -> ts.TensorStore:
        if self._views is None:
            raise ValueError(f"{self.source} is closed")
        return self._views[scale]

    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Decode voxels ``[start, stop)`` of one scale, z, y, x.

        Raises
        ------
        ChunkError
            If a block in the region is truncated or corrupt.
        """
        if self._remote:
            return read_remote(self._datasets[scale], self.scales[scale], start, stop, scale)
        index = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        where = str(self._datasets[scale].path)
        block = read_region(self._view(scale), index, where=where, scale=scale)
        want = tuple(b - a for a, b in zip(start, stop, strict=True))
        if block.shape != want:
            raise ChunkError(where, scale, str(index), f"decoded {block.shape}, expected {want}")
        return np.ascontiguousarray(block, dtype=self.scales[scale].dtype)

    def write(self, scale: int, start: Index3, data: np.ndarray) -> None:
        """Write ``data`` (z, y, x) at ``start`` of one scale, block files replaced atomically.

        Raises
        ------
        ReadOnlyError
            If the volume was not opened with ``mode="r+"``.
        ChunkError
            If tensorstore cannot write (or cannot read a block it must merge into).
        """
        if not self.writable:
            raise ReadOnlyError(f"{self.source} was opened read-only; open it with mode='r+'")
        index = tuple(slice(a, a + n) for a, n in zip(start, data.shape, strict=True))
        data = np.ascontiguousarray(data, dtype=self.scales[scale].dtype)
        where = str(self._datasets[scale].path)
        write_region(self._view(scale), index, data, where=where, scale=scale)

    def close(self) -> None:
        """Drop the tensorstore handles."""
        self._views = None

    def describe(self) -> dict[str, Any]:
        """N5 version, on-disk axis order and per-level compression (JSON-serialisable)."""
        levels = [
            {"key": sc.key, "compression": d.compression, "legacy_compression_key": d.legacy}
            for d, sc in zip(self._datasets, self.scales, strict=True)
        ]
        order = "xyz"[: len(self._datasets[0].dims)]
        return {"n5": {"version": self._version, "axis_order_on_disk": order, "levels": levels}}


def read_remote(
    dataset: Dataset, scale: Scale, start: Index3, stop: Index3, index: int
) -> np.ndarray:
    """Fetch and decode the blocks of one z, y, x region of a remote dataset (missing -> 0)."""
    store = dataset.path.store.child(dataset.path.key)  # type: ignore[attr-defined]
    ndim = len(dataset.dims)
    grid = N5Grid(scale.shape, scale.chunk_shape, scale.dtype)

    def decode(data: bytes, shape: Index3) -> np.ndarray:
        block = decode_block(
            data,
            ndim=ndim,
            block_xyz=dataset.block,
            dtype=dataset.dtype,
            compression=dataset.compression,
        )
        block = block.reshape(block.shape[-3:]) if ndim > 3 else block
        block = block[np.newaxis] if ndim == 2 else block
        if block.shape == shape and block.dtype == scale.dtype and block.flags.writeable:
            return block[np.newaxis]  # a whole block, decoded into memory of its own
        out = np.zeros(shape, dtype=scale.dtype)
        fit = tuple(slice(0, min(a, b)) for a, b in zip(block.shape, shape, strict=True))
        out[fit] = block[fit]
        return out[np.newaxis]

    def load(grid_zyx: Index3, _: str, shape: Index3) -> np.ndarray | None:
        z, y, x = grid_zyx
        parts = [x, y] + ([z] if ndim >= 3 else []) + [0] * (ndim - 3)
        key = "/".join(str(p) for p in parts)
        return store.fetch(key, lambda data: decode(data, shape))

    return assemble(grid, start, stop, 0, load, where=str(dataset.path), scale=index)
