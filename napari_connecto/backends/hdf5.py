"""HDF5 volumes (including CREMI files) read and written through h5py.

A source names one file and, optionally, a path inside it
(``file.h5/volumes/raw`` or ``file.h5#volumes/raw``). The path may name

* a 2D or 3D numeric dataset (2D becomes ``z = 1``): one scale, its voxel size
  from the ``resolution`` attribute (z, y, x nm, CREMI style, default 1 nm) and
  its position from the ``offset`` attribute (z, y, x nm);
* a multiscale group whose children are named ``s0, s1, ...`` or ``0, 1, ...``:
  one scale per child, finest first;
* nothing, or a plain group: the single volume below it is opened, several
  raise :class:`~napari_connecto.errors.AmbiguousSourceError` listing them.

h5py is not safe for concurrent use of one file, so every access to a file
goes through one lock per file path and :attr:`HDF5Backend.max_concurrency` is
1. HDF5's own chunk cache is kept at 1 MiB: the project's chunk cache holds the
memory budget. External links are never followed. Malformed files can still
crash or hang the HDF5 library itself (h5py #2569); that cannot be caught here.

Writes are copy-on-write (:mod:`._hdf5_write`): a batch of blocks goes into a
temporary copy of the file, which is fsynced and renamed over the original, so a
killed writer never leaves a damaged file. The backend's own handle is always
read-only.

CREMI synapse annotations are read by :mod:`napari_connecto.backends.cremi`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import h5py
import numpy as np

from napari_connecto.backends._hdf5_layout import (
    READ_ERRORS,
    dataset_scale,
    dtype_of,
    find_volumes,
    json_attrs,
    json_safe,
    kind_for,
    level_scales,
    multiscale_levels,
    resolve,
)
from napari_connecto.backends._hdf5_write import (
    BlockWrite,
    bump_generation,
    check_writable,
    commit_blocks,
    file_lock,
    generation,
    has_hdf5_signature,
    open_file,
    remove_stale_temp_files,
    reopen,
)
from napari_connecto.backends.base import Entry, PointSet, VolumeBackend
from napari_connecto.backends.cremi import (
    CREMI_BACKGROUND,
    CREMI_VOLUMES,
    has_annotations,
    has_annotations_group,
    is_cremi,
    read_synapses,
)
from napari_connecto.errors import (
    AmbiguousSourceError,
    ChunkError,
    MetadataError,
    ReadOnlyError,
)
from napari_connecto.volume.scale import Scale

if TYPE_CHECKING:
    from collections.abc import Sequence

    from napari_connecto.source import Source
    from napari_connecto.volume.scale import Index3

__all__ = ["HDF5Backend", "has_hdf5_signature"]

logger = logging.getLogger(__name__)


class HDF5Backend(VolumeBackend):
    """One volume in an HDF5 file (a dataset or a multiscale group), CREMI files included.

    Writes (``mode="r+"``) are copy-on-write: each :meth:`write_batch` copies
    the file, writes the blocks into the copy, fsyncs it and renames it over the
    original, so a killed writer leaves the old or the new file, never a mix.
    The backend's own handle is read-only and is re-opened after each commit.
    """

    name: ClassVar[str] = "hdf5"
    supports_writes: ClassVar[bool] = True
    max_concurrency: ClassVar[int] = 1

    def __init__(
        self,
        source: Source,
        h5: h5py.File,
        datasets: list[h5py.Dataset],
        scales: list[Scale],
        *,
        writable: bool,
    ) -> None:
        self.source = source
        self.scales = tuple(scales)
        self.writable = writable
        self.kind = kind_for(source.inner, scales[0].dtype)
        self._file: h5py.File | None = h5
        self._datasets = datasets
        self._names = [ds.name for ds in datasets]
        self._planar = [ds.ndim == 2 for ds in datasets]
        self._lock = file_lock(source.location)
        self._path = os.path.realpath(source.location)
        self._generation = generation(self._path)
        fill = datasets[0].fillvalue
        self.fill_value = fill.item() if isinstance(fill, np.generic) else fill
        base = source.inner.rsplit("/", 1)[-1]
        if base in ("neuron_ids", "clefts") and scales[0].dtype == np.uint64:
            self.background_label = CREMI_BACKGROUND

    # -- questions about a source ----------------------------------------------------
    @classmethod
    def sniff(cls, source: Source) -> bool:
        """Whether ``source`` is an HDF5 file: forced by ``hdf5://`` or by its signature."""
        if source.format is not None:
            return source.format == cls.name
        if source.is_remote:
            return False
        try:
            return source.path.is_file() and has_hdf5_signature(source.location)
        except OSError:
            return False

    @classmethod
    def open(cls, source: Source, mode: Literal["r", "r+"] = "r") -> HDF5Backend:
        """Open the dataset or multiscale group that ``source`` names; metadata only.

        Raises
        ------
        SourceNotFoundError
            If the file or the inner path does not exist.
        AmbiguousSourceError
            If the source names a file or group holding several volumes.
        MetadataError
            If the file is not HDF5, is truncated, or its metadata is malformed.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        with file_lock(source.location):
            h5 = open_file(source)
            try:
                if mode == "r+":
                    check_writable(source)
                    remove_stale_temp_files(os.path.realpath(source.location))
                inner = cls._target(source, h5)
                where = f"{source.location}#{inner}"
                obj = h5[inner] if inner else h5
                if isinstance(obj, h5py.Dataset):
                    datasets, scales = [obj], [dataset_scale(obj, where)]
                else:
                    names = multiscale_levels(obj)
                    datasets = [obj[n] for n in names]
                    scales = level_scales(obj, names, where)
            except BaseException:
                h5.close()
                raise
        return cls(replace(source, inner=inner), h5, datasets, scales, writable=mode == "r+")

    @classmethod
    def _target(cls, source: Source, h5: h5py.File) -> str:
        """The inner path of the one volume ``source`` names."""
        inner = source.inner.strip("/")
        obj = resolve(h5, inner, source)
        if isinstance(obj, h5py.Dataset) or multiscale_levels(obj):
            return inner
        candidates = find_volumes(obj)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            hint = "; it is a point set: use open_points" if has_annotations_group(obj) else ""
            what = f"group {inner!r}" if inner else "file"
            raise MetadataError(source.location, inner, f"the {what} holds no 3D volumes{hint}")
        raise AmbiguousSourceError(str(source), [str(replace(source, inner=c)) for c in candidates])

    @classmethod
    def contents(cls, source: Source) -> list[Entry]:
        """Every volume (and CREMI synapse set) in the file or below the inner path."""
        with file_lock(source.location):
            h5 = open_file(source)
            try:
                return cls._entries(source, h5)
            finally:
                h5.close()

    @classmethod
    def _entries(cls, source: Source, h5: h5py.File) -> list[Entry]:
        inner = source.inner.strip("/")
        obj = resolve(h5, inner, source)
        if isinstance(obj, h5py.Dataset) or multiscale_levels(obj):
            return [Entry(source, kind_for(inner, dtype_of(obj)), source.name)]
        if inner and has_annotations_group(obj):
            return [Entry(source, "points", "synapses")]
        paths = find_volumes(obj)
        if not inner and is_cremi(h5):
            known = [p for p, _ in CREMI_VOLUMES if p in paths]
            paths = known + [p for p in paths if p not in known]
        entries = [
            Entry(replace(source, inner=p), kind_for(p, dtype_of(h5[p])), p.rsplit("/", 1)[-1])
            for p in paths
        ]
        if not inner and has_annotations(h5):
            entries.append(Entry(replace(source, inner="annotations"), "points", "synapses"))
        return entries

    @classmethod
    def open_points(cls, source: Source) -> PointSet:
        """Read CREMI synapse annotations (``/annotations``, or the group ``source`` names).

        Raises
        ------
        SourceNotFoundError
            If the file or annotation group does not exist.
        MetadataError
            If the annotations are malformed (naming the dataset and field).
        """
        inner = source.inner.strip("/") or "annotations"
        with file_lock(source.location):
            h5 = open_file(source)
            try:
                group = resolve(h5, inner, source)
                if not isinstance(group, h5py.Group):
                    raise MetadataError(f"{source.location}#{inner}", "", "is not a point set")
                return read_synapses(group, f"{source.location}#{inner}")
            finally:
                h5.close()

    # -- an opened volume -------------------------------------------------------------
    def _selection(self, scale: int, start: Index3, stop: Index3) -> tuple[slice, ...]:
        sel = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        return sel[1:] if self._planar[scale] else sel

    def _region(self, start: Index3, stop: Index3) -> str:
        return ",".join(f"{a}:{b}" for a, b in zip(start, stop, strict=True))

    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Read voxels ``[start, stop)`` of one scale.

        Raises
        ------
        ChunkError
            If a chunk in the region is corrupt (bad compressed data, checksum
            failure) or the file is closed.
        """
        shape = tuple(b - a for a, b in zip(start, stop, strict=True))
        out = np.empty(shape, dtype=self.scales[scale].dtype)
        dest = out[0] if self._planar[scale] else out
        sel = self._selection(scale, start, stop)
        with self._lock:
            if self._file is None:
                raise ChunkError(str(self.source), scale, self._region(start, stop), "closed")
            if self._generation != generation(self._path):
                self._reopen(scale, self._region(start, stop))
            try:
                self._datasets[scale].read_direct(dest, source_sel=sel)
            except READ_ERRORS as exc:
                raise ChunkError(
                    str(self.source), scale, self._region(start, stop), f"HDF5 read failed: {exc}"
                ) from exc
        return out

    def write(self, scale: int, start: Index3, data: np.ndarray) -> None:
        """Write one block: :meth:`write_batch` with a single block."""
        self.write_batch([(scale, start, data)])

    def write_batch(self, writes: Sequence[tuple[int, Index3, np.ndarray]]) -> None:
        """Write blocks by copy-on-write of the whole file: all of them, or none.

        The file is copied next to itself, the blocks written into the copy,
        which is fsynced and renamed over the original; then this backend's
        handle is re-opened on the new file.

        Raises
        ------
        ReadOnlyError
            If the volume was opened read-only.
        ChunkError
            If a block does not fit its scale, the file is closed, or the
            commit fails (the original file is then untouched).
        """
        if not self.writable:
            raise ReadOnlyError(f"{self.source} was opened read-only; open it with mode='r+'")
        blocks = [self._block(scale, start, data) for scale, start, data in writes]
        if not blocks:
            return
        with self._lock:
            if self._file is None:
                raise ChunkError(str(self.source), blocks[0].scale, blocks[0].region, "closed")
            commit_blocks(Path(self._path), blocks, where=str(self.source))
            bump_generation(self._path)
            self._reopen(blocks[0].scale, blocks[0].region)

    def _block(self, scale: int, start: Index3, data: np.ndarray) -> BlockWrite:
        """One write checked against its scale, in the dataset's rank and dtype."""
        if not 0 <= scale < len(self.scales) or len(start) != 3 or np.ndim(data) != 3:
            raise ChunkError(str(self.source), scale, str(start), "not a z, y, x block of a scale")
        sc = self.scales[scale]
        block = np.ascontiguousarray(data, dtype=sc.dtype)
        stop = tuple(a + n for a, n in zip(start, block.shape, strict=True))
        region = self._region(start, stop)  # type: ignore[arg-type]
        if min(start) < 0 or any(b > n for b, n in zip(stop, sc.shape, strict=True)):
            raise ChunkError(str(self.source), scale, region, f"does not fit in {sc.shape}")
        return BlockWrite(
            dataset=self._names[scale],
            selection=self._selection(scale, start, stop),  # type: ignore[arg-type]
            data=block[0] if self._planar[scale] else block,
            scale=scale,
            region=region,
        )

    def refresh(self) -> None:
        """Re-open the file (read-only) so reads see a file another process replaced.

        Raises
        ------
        ChunkError
            If the file cannot be re-opened or no longer holds this volume with
            the same shape and dtype; the backend is then closed.
        """
        with self._lock:
            if self._file is not None:
                self._reopen(0, "refresh")

    def _reopen(self, scale: int, region: str) -> None:
        """Swap the handle for one on the file now at the path; closed if that fails (lock held)."""
        self._close_handle()
        self._file, self._datasets = reopen(self.source, self._names, self.scales, scale, region)
        self._generation = generation(self._path)

    def _close_handle(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Close the HDF5 file; later reads raise :class:`ChunkError`."""
        with self._lock:
            self._close_handle()

    def describe(self) -> dict[str, Any]:
        """Compression, chunking and file attributes (``file_format`` for CREMI), as JSON."""
        with self._lock:
            if self._file is None:
                return {"hdf5": {"file": self.source.location, "closed": True}}
            datasets = [
                {
                    "path": ds.name,
                    "chunks": list(ds.chunks) if ds.chunks else None,
                    "compression": ds.compression,
                    "compression_opts": json_safe(ds.compression_opts),
                    "shuffle": ds.shuffle,
                    "fletcher32": ds.fletcher32,
                    "fillvalue": json_safe(ds.fillvalue),
                    "attrs": json_attrs(ds),
                }
                for ds in self._datasets
            ]
            info = {
                "file": self.source.location,
                "file_attrs": json_attrs(self._file),
                "cremi": is_cremi(self._file),
                "datasets": datasets,
                "writes": "copy-on-write: temp copy, fsync, rename",
            }
        return {"hdf5": info, "background_label": self.background_label}
