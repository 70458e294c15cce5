"""CREMI HDF5 synapses: sites in ``/annotations``, neurons from ``/volumes/labels/neuron_ids``.

Layout read (https://cremi.org/data/; every array z, y, x, nm)::

    /annotations                            attr offset (z, y, x nm, optional)
    /annotations/ids                        uint64 (N,)    site ids
    /annotations/types (or type)            str (N,)       presynaptic_site/postsynaptic_site
    /annotations/locations                  float (N, 3)   relative to the offset
    /annotations/presynaptic_site/partners  uint64 (M, 2)  (pre site id, post site id)
    /volumes/labels/neuron_ids              uint64         attrs resolution, offset (nm)

Each ``partners`` row is one synapse: its pre location is the pre site's, its post
location the post site's, its centre their midpoint. ``pre_id``/``post_id`` are the
neuron ids of ``neuron_ids`` at those sites (the voxel whose position
``offset + i * resolution`` is nearest; CREMI's background 0xFFFFFFFFFFFFFFFF and sites
outside the volume give 0 = unknown). A file without ``neuron_ids`` uses the
``segmentation`` passed to the reader, else every neuron is unknown. Synapse ids are the
post site ids when those are unique and nonzero, else the partners row number + 1, so
re-importing a file gives the same ids. Sites without partners, comments and the
``clefts`` volume are not imported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pandas as pd

from napari_connecto.annotations.frames import ImportBatch
from napari_connecto.annotations.importers.batch import make_batch, normalized_synapses
from napari_connecto.annotations.importers.registry import Importer, ReadOptions
from napari_connecto.errors import ConnectoError, ImportFormatError, SourceNotFoundError

if TYPE_CHECKING:
    from napari_connecto.source import SourceLike

__all__ = [
    "CREMI_BACKGROUND",
    "HDF5_SIGNATURE",
    "IMPORTER",
    "NEURON_IDS",
    "looks_like_hdf5",
    "open_hdf5",
    "read_cremi",
]

logger = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The first bytes of an HDF5 file (without a user block)."""
NEURON_IDS = "volumes/labels/neuron_ids"
"""Where a CREMI file keeps its neuron segmentation."""
CREMI_BACKGROUND = 0xFFFF_FFFF_FFFF_FFFF
"""CREMI's "no neuron" label; looked-up sites on it get neuron 0 (unknown)."""
_ANN = "/annotations"
_PARTNERS = "/annotations/presynaptic_site/partners"
_H5_ERRORS = (OSError, ValueError, RuntimeError, TypeError, KeyError)


def looks_like_hdf5(path: Path, head: bytes) -> bool:
    """Whether ``path`` has the HDF5 signature (at 0, or after a user block)."""
    if head.startswith(HDF5_SIGNATURE):
        return True
    try:
        return bool(h5py.is_hdf5(str(path)))
    except _H5_ERRORS:
        return False


def open_hdf5(path: Path) -> h5py.File:
    """Open ``path`` read-only.

    Raises
    ------
    ImportFormatError
        If it is not a readable HDF5 file (e.g. truncated).
    """
    try:
        return h5py.File(path, "r")
    except _H5_ERRORS as exc:
        raise ImportFormatError(str(path), f"not a readable HDF5 file ({exc})") from exc


def sniff_cremi(path: Path, head: bytes) -> bool:
    """An HDF5 file with an ``/annotations`` group holding ``ids`` and ``locations``."""
    if not looks_like_hdf5(path, head):
        return False
    try:
        with h5py.File(path, "r") as f:
            group = f.get("annotations")
            return isinstance(group, h5py.Group) and "ids" in group and "locations" in group
    except _H5_ERRORS:
        return False


def _dataset(f: h5py.File, name: str, where: str) -> np.ndarray:
    """The whole dataset ``name``, read; missing or unreadable ones are named."""
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        problem = "missing" if obj is None else "is a group, expected a dataset"
        raise ImportFormatError(where, problem, column=name)
    try:
        return np.asarray(obj[()])
    except _H5_ERRORS as exc:
        raise ImportFormatError(where, f"unreadable ({exc})", column=name) from exc


def _site_ids(values: np.ndarray, where: str, column: str) -> np.ndarray:
    """Integer ids as exact uint64."""
    if values.dtype.kind not in "ui":
        raise ImportFormatError(where, f"expected integer ids, got {values.dtype}", column=column)
    if values.dtype.kind == "i" and values.size and values.min() < 0:
        row = int(np.argwhere(values < 0)[0][0])
        raise ImportFormatError(where, "negative id", row=row, column=column)
    return values.astype(np.uint64)


def _offset(f: h5py.File, where: str) -> np.ndarray:
    """The annotations group's ``offset`` attribute (z, y, x nm), zero when absent."""
    value = f[_ANN].attrs.get("offset")
    if value is None:
        return np.zeros(3)
    arr = np.asarray(value, dtype=object).ravel()
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError):
        out = np.array([])
    if out.shape != (3,) or not np.isfinite(out).all():
        raise ImportFormatError(where, f"offset must be 3 numbers, got {value!r}", column=_ANN)
    return out


def _sites(f: h5py.File, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Site ids (uint64, unique) and absolute locations (N, 3) nm."""
    ids_name = f"{_ANN}/ids"
    ids = _dataset(f, ids_name, where)
    if ids.ndim != 1:
        raise ImportFormatError(where, f"expected shape (N,), got {ids.shape}", column=ids_name)
    ids = _site_ids(ids, where, ids_name)
    loc_name = f"{_ANN}/locations"
    locations = _dataset(f, loc_name, where)
    if locations.ndim != 2 or locations.shape[1] != 3 or locations.dtype.kind not in "uif":
        raise ImportFormatError(
            where,
            f"expected (N, 3) numbers, got {locations.shape} {locations.dtype}",
            column=loc_name,
        )
    if len(locations) != len(ids):
        raise ImportFormatError(
            where, f"{len(locations)} locations for {len(ids)} ids (truncated?)", column=loc_name
        )
    locations = locations.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(locations).all(axis=1))
    if bad.size:
        raise ImportFormatError(where, "location is not finite", row=int(bad[0]), column=loc_name)
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if repeated.size:
        row = int(order[repeated[0] + 1])
        raise ImportFormatError(where, f"site id {ids[row]} repeated", row=row, column=ids_name)
    _check_types(f, where, len(ids))
    return ids, locations + _offset(f, where)


def _check_types(f: h5py.File, where: str, n: int) -> None:
    """``types`` (or ``type``) must have one entry per site if present."""
    name = next((f"{_ANN}/{t}" for t in ("types", "type") if f"{_ANN}/{t}" in f), None)
    if name is None:
        logger.info("%s: no %s/types; site roles come from the partners table", where, _ANN)
        return
    obj = f[name]
    if not isinstance(obj, h5py.Dataset) or obj.shape != (n,):
        shape = getattr(obj, "shape", None)
        raise ImportFormatError(where, f"expected {n} site types, got shape {shape}", column=name)


def _partners(f: h5py.File, where: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row index in ``ids`` of each partners row's pre and post site."""
    if _PARTNERS not in f:
        raise ImportFormatError(
            where, "missing: CREMI synapses need the pre/post partners table", column=_PARTNERS
        )
    pairs = _dataset(f, _PARTNERS, where)
    if pairs.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ImportFormatError(
            where, f"expected shape (M, 2), got {pairs.shape}", column=_PARTNERS
        )
    pairs = _site_ids(pairs, where, _PARTNERS)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, pairs), 0, max(len(ids) - 1, 0))
    known = sorted_ids[pos] == pairs if len(ids) else np.zeros(pairs.shape, dtype=bool)
    if not known.all():
        row, col = (int(v) for v in np.argwhere(~known)[0])
        role = "pre" if col == 0 else "post"
        raise ImportFormatError(
            where, f"unknown {role} site id {pairs[row, col]}", row=row, column=_PARTNERS
        )
    index = order[pos]
    return index[:, 0], index[:, 1]


def _synapse_ids(post_sites: np.ndarray) -> np.ndarray:
    """Post site ids if unique and nonzero, else row number + 1."""
    if (post_sites != 0).all() and np.unique(post_sites).size == post_sites.size:
        return post_sites
    return np.arange(1, post_sites.size + 1, dtype=np.uint64)


def _neuron_ids(
    path: Path, positions: np.ndarray, in_file: bool, fallback: SourceLike | None
) -> np.ndarray:
    """Neuron id at each position (0 = unknown) from ``neuron_ids`` or ``fallback``."""
    from napari_connecto.annotations.keypoints import lookup_labels
    from napari_connecto.opening import open_volume
    from napari_connecto.source import Source

    if not in_file and fallback is None:
        logger.warning("%s: no %s and no segmentation; neurons are unknown", path, NEURON_IDS)
        return np.zeros(len(positions), dtype=np.uint64)
    source = Source(str(path.resolve()), NEURON_IDS, "hdf5") if in_file else fallback
    column = f"/{NEURON_IDS}" if in_file else str(fallback)
    try:
        with open_volume(source) as volume:  # type: ignore[arg-type]
            labels = lookup_labels(volume, positions)
        labels[labels == np.uint64(CREMI_BACKGROUND)] = 0  # also in a segmentation passed in
        return labels
    except (ImportFormatError, SourceNotFoundError):
        raise
    except ConnectoError as exc:
        raise ImportFormatError(
            str(path), f"cannot look neurons up ({exc})", column=column
        ) from exc


def read_cremi(path: Path, options: ReadOptions) -> ImportBatch:
    """Read the synapses of a CREMI file (see the module docstring).

    Raises
    ------
    ImportFormatError
        If a dataset is missing, malformed or truncated (named as the column, with the
        row where one is at fault), or a partner names an unknown site.
    """
    where = str(path)
    with open_hdf5(path) as f:
        if not isinstance(f.get(_ANN), h5py.Group):
            raise ImportFormatError(where, "missing", column=_ANN)
        ids, locations = _sites(f, where)
        pre, post = _partners(f, where, ids)
        in_file = isinstance(f.get(NEURON_IDS), h5py.Dataset)
    unpaired = len(ids) - np.unique(np.concatenate([pre, post])).size
    if unpaired:
        logger.info("%s: %d sites without partners are not imported", where, unpaired)
    labels = _neuron_ids(path, np.concatenate([locations[pre], locations[post]]), in_file,
                         options.segmentation)  # fmt: skip
    n = len(pre)
    frame = pd.DataFrame(
        {"id": _synapse_ids(ids[post]), "pre_id": labels[:n], "post_id": labels[n:]}
    )
    for i, axis in enumerate("zyx"):
        frame[f"pre_{axis}"] = locations[pre, i]
        frame[f"post_{axis}"] = locations[post, i]
    synapses = normalized_synapses(frame, where, columns={"id": _PARTNERS})
    return make_batch(where, synapses=synapses)


IMPORTER = Importer(
    name="cremi",
    sniff=sniff_cremi,
    read=read_cremi,
    description="CREMI HDF5 (/annotations sites and partners, neurons from neuron_ids)",
)
"""The ``"cremi"`` importer."""
