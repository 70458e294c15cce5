"""Annotation importers: CREMI HDF5, arrays, CSV/Parquet tables, CAVE exports, DVID.

:func:`read_annotations` reads one file into a normalised
:class:`~napari_connecto.annotations.frames.ImportBatch` (nothing is stored; hand the
batch to the annotation store). The format is sniffed from the file name and its first
bytes unless given. Formats are registered by name (:func:`.registry.register`), sniffed
in the order of :data:`FORMATS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from napari_connecto.annotations.importers import arrays, cave, cremi, dvid, tables
from napari_connecto.annotations.importers.registry import (
    Importer,
    Kind,
    ReadOptions,
    get_importer,
    importer_names,
    register,
    sniff_format,
)
from napari_connecto.errors import ConnectoError, ImportFormatError, SourceNotFoundError

if TYPE_CHECKING:
    from napari_connecto.annotations.frames import ImportBatch
    from napari_connecto.source import SourceLike

__all__ = [
    "FORMATS",
    "Importer",
    "ReadOptions",
    "read_annotations",
    "register",
    "sniff_format",
]

for _importer in (cremi.IMPORTER, cave.IMPORTER, arrays.IMPORTER, tables.IMPORTER):
    register(_importer, replace=True)

FORMATS: tuple[str, ...] = importer_names()
"""Built-in import formats, in sniffing order: ``cremi``, ``cave``, ``arrays``, ``table``."""


def read_annotations(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    mapping: Mapping[str, str] | None = None,
    resolution: Sequence[float] | None = None,
    segmentation: SourceLike | None = None,
    kind: Kind | None = None,
) -> ImportBatch:
    """Read neurons and synapses from one file, normalised and validated.

    Parameters
    ----------
    path : str or os.PathLike
        The file, or a DVID annotation instance ``dvid://host:port/<uuid>/<instance>``
        (its synapses; neurons from its synced labelmap).
    format : str, optional
        One of :data:`FORMATS` (``"cremi"``, ``"cave"``, ``"arrays"``, ``"table"``);
        sniffed from the file when omitted.
    mapping : mapping, optional
        Tables and CAVE exports: file column -> normalised column (``{"pre": "pre_id"}``);
        common names are recognised without it.
    resolution : sequence of float, optional
        z, y, x nm per voxel of the file's positions; omitted, positions are nm (CAVE
        exports: voxels of (40, 4, 4) nm).
    segmentation : str, os.PathLike or Source, optional
        A segmentation volume: neurons without a keypoint get one inside their segment
        (:func:`~napari_connecto.annotations.keypoints.segment_keypoints`); CREMI files
        without ``neuron_ids`` also look synapse partners up in it.
    kind : {"synapses", "neurons"}, optional
        What the rows of a table or lone array are; sniffed from its columns or width.

    Returns
    -------
    ImportBatch
        Normalised ``synapses`` (or ``None``) and ``neurons``, which include a bare row
        for every synapse partner the file does not list.

    Raises
    ------
    SourceNotFoundError
        If ``path`` is not an existing file.
    ImportFormatError
        If the format is unknown or cannot be sniffed, or the file is malformed
        (naming the file, row and column at fault).
    ConflictError
        If one id appears with two different rows in the file.
    """
    if dvid.is_dvid(os.fspath(path)) and format in (None, "dvid"):
        options = ReadOptions(mapping=mapping, resolution=resolution, kind=kind)
        return dvid.read_dvid(os.fspath(path), options)
    where = _file_of(path)
    name = format if format is not None else sniff_format(where)
    importer = get_importer(name, str(where))
    options = ReadOptions(
        mapping=mapping, resolution=resolution, kind=kind, segmentation=segmentation
    )
    batch = importer.read(where, options)
    if segmentation is not None and batch.neurons is not None and len(batch.neurons):
        batch = _with_keypoints(batch, segmentation)
    return batch


def _file_of(path: str | os.PathLike[str]) -> Path:
    """The file to read: ``path``, or the file part of a ``file.h5#annotations`` source."""
    where = Path(path)
    if where.is_file():
        return where
    text = os.fspath(path)
    for marker in ("#", ".h5/", ".hdf5/", ".hdf/"):
        head, found, _inner = text.partition(marker)
        candidate = Path(head + (found[:-1] if marker != "#" else ""))
        if found and candidate.is_file():
            return candidate
    raise SourceNotFoundError(str(path), "not an existing file")


def _with_keypoints(batch: ImportBatch, segmentation: SourceLike) -> ImportBatch:
    """``batch`` with missing neuron keypoints computed from ``segmentation``."""
    from dataclasses import replace

    from napari_connecto.annotations.keypoints import fill_keypoints
    from napari_connecto.opening import open_volume

    try:
        with open_volume(segmentation) as volume:
            neurons = fill_keypoints(batch.neurons, volume)  # type: ignore[arg-type]
    except (ImportFormatError, SourceNotFoundError):
        raise
    except ConnectoError as exc:
        raise ImportFormatError(
            batch.source, f"cannot compute keypoints from {segmentation} ({exc})"
        ) from exc
    return replace(batch, neurons=neurons)
