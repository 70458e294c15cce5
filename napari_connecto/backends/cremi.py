"""CREMI HDF5 conventions: file detection, the ``offset`` attribute, synapse annotations.

Layout (https://cremi.org/data/ and the ``cremi`` Python package)::

    /annotations                          attr offset (z, y, x nm, optional)
    /annotations/ids                      uint64 (N,)
    /annotations/types                    vlen str (N,) "presynaptic_site" / "postsynaptic_site"
    /annotations/locations                float64 (N, 3) z, y, x nm relative to the offset
    /annotations/presynaptic_site/partners  uint64 (M, 2) (pre_id, post_id), optional
    /annotations/comments/target_ids      uint64 (K,), optional
    /annotations/comments/comments        vlen str (K,), optional

The cremi.org text calls the type dataset ``type``; both names are accepted.
Volumes live at ``/volumes/raw`` and ``/volumes/labels/{neuron_ids,clefts}``
(uint64, ``0xFFFFFFFFFFFFFFFF`` = background) and are opened by :mod:`.hdf5`.
Call these functions with the file's lock held (see :func:`.hdf5.file_lock`).
"""

from __future__ import annotations

import logging
from typing import Any

import h5py
import numpy as np
import pandas as pd

from napari_connecto.backends.base import PointSet
from napari_connecto.errors import MetadataError

__all__ = [
    "CREMI_BACKGROUND",
    "CREMI_VOLUMES",
    "MAX_POINTS",
    "check_offset",
    "has_annotations",
    "has_annotations_group",
    "is_cremi",
    "read_synapses",
]

logger = logging.getLogger(__name__)

CREMI_BACKGROUND = 0xFFFF_FFFF_FFFF_FFFF
"""CREMI's "no neuron" / "no cleft" label in ``neuron_ids`` and ``clefts``."""
CREMI_VOLUMES = (
    ("volumes/raw", "raw"),
    ("volumes/labels/neuron_ids", "neuron_ids"),
    ("volumes/labels/clefts", "clefts"),
)
"""Where a CREMI file keeps its volumes, and their display names."""
MAX_POINTS = 20_000_000
"""Largest number of annotations read from one file (a guard against absurd metadata)."""
_TYPE_NAMES = ("types", "type")
_KNOWN_TYPES = frozenset({"presynaptic_site", "postsynaptic_site"})
_H5_ERRORS = (OSError, ValueError, RuntimeError, TypeError, KeyError)


def is_cremi(h5: h5py.File) -> bool:
    """Whether ``h5`` looks like a CREMI file (``file_format`` attribute or ``/volumes/raw``)."""
    try:
        raw = h5.get("volumes/raw", getclass=True) if "volumes" in h5 else None
        return "file_format" in h5.attrs or raw is h5py.Dataset
    except _H5_ERRORS:
        return False


def has_annotations(h5: h5py.File) -> bool:
    """Whether ``h5`` has a CREMI ``/annotations`` group with ids and locations."""
    try:
        return "annotations" in h5 and has_annotations_group(h5["annotations"])
    except _H5_ERRORS:
        return False


def has_annotations_group(group: h5py.Group | h5py.Dataset) -> bool:
    """Whether ``group`` looks like a CREMI annotations group (``ids`` and ``locations``)."""
    try:
        return isinstance(group, h5py.Group) and "ids" in group and "locations" in group
    except _H5_ERRORS:
        return False


def check_offset(where: str, field: str, value: Any, ndim: int) -> tuple[float, ...]:
    """Validate an ``offset`` attribute: ``ndim`` finite numbers of any sign."""
    if not isinstance(value, list | tuple) or len(value) != ndim:
        raise MetadataError(where, field, f"expected {ndim} numbers, got {value!r}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise MetadataError(where, field, f"expected numbers, got {value!r}")
    if not all(np.isfinite(v) for v in value):
        raise MetadataError(where, field, f"expected finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def read_synapses(group: h5py.Group, where: str) -> PointSet:
    """Read CREMI synapse sites from an annotations group.

    Parameters
    ----------
    group : h5py.Group
        The ``/annotations`` group.
    where : str
        How to name the group in errors (``file.h5#annotations``).

    Returns
    -------
    PointSet
        Named ``"synapses"``: absolute positions in nm (z, y, x, the group's
        ``offset`` added) and features ``id`` (uint64), ``type``, ``partner``
        (uint64, the first partner's id, 0 if none), ``partners`` (every
        partner id, comma-separated) and ``comment`` ("" if none).

    Raises
    ------
    MetadataError
        If a dataset is missing, has the wrong shape or type, or lengths disagree.
    """
    offset = _offset(group, where)
    ids = _read_ids(_dataset(group, "ids", where), f"{where}/ids", "ids", 1)
    if len(np.unique(ids)) != len(ids):
        raise MetadataError(f"{where}/ids", "ids", "annotation ids are not unique")
    n = len(ids)
    type_name = next((t for t in _TYPE_NAMES if t in group), None)
    if type_name is None:
        raise MetadataError(where, "types", "missing (neither 'types' nor 'type' exists)")
    types = _read_strings(_dataset(group, type_name, where), f"{where}/{type_name}", "types", n)
    unknown = set(types) - _KNOWN_TYPES
    if unknown:
        logger.warning("%s: unexpected annotation types %s", where, sorted(unknown)[:5])
    positions = _read_locations(_dataset(group, "locations", where), f"{where}/locations", n)
    positions += np.asarray(offset, dtype=np.float64)
    partner, partners = _partner_columns(group, ids, where)
    features = pd.DataFrame(
        {
            "id": ids,
            "type": pd.Series(types, dtype=str),
            "partner": partner,
            "partners": pd.Series(partners, dtype=str),
            "comment": pd.Series(_comments(group, ids, where), dtype=str),
        }
    )
    metadata = {"source": where, "units": "nm", "axes": "zyx", "offset_nm": list(offset)}
    return PointSet(name="synapses", positions_nm=positions, features=features, metadata=metadata)


def _offset(group: h5py.Group, where: str) -> tuple[float, ...]:
    """The annotations' ``offset`` attribute (z, y, x nm), zero when absent."""
    try:
        value = group.attrs.get("offset")
    except _H5_ERRORS as exc:
        raise MetadataError(where, "offset", f"unreadable attribute ({exc})") from exc
    if value is None:
        return (0.0, 0.0, 0.0)
    return check_offset(where, "offset", np.asarray(value).tolist(), 3)


def _dataset(group: h5py.Group, name: str, where: str) -> h5py.Dataset:
    """The required dataset ``name`` of ``group``."""
    obj = group.get(name)
    if not isinstance(obj, h5py.Dataset):
        problem = "missing" if obj is None else "is a group, expected a dataset"
        raise MetadataError(f"{where}/{name}", name, problem)
    return obj


def _checked_length(ds: h5py.Dataset, path: str, field: str, ndim: int) -> int:
    """The first dimension of ``ds`` after checking its rank and size."""
    if ds.ndim != ndim:
        raise MetadataError(path, field, f"expected {ndim} dimension(s), got shape {ds.shape}")
    if ds.shape[0] > MAX_POINTS:
        raise MetadataError(path, field, f"{ds.shape[0]} entries is more than {MAX_POINTS}")
    return int(ds.shape[0])


def _read(ds: h5py.Dataset, path: str, field: str) -> np.ndarray:
    try:
        return np.asarray(ds[()])
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise MetadataError(path, field, f"unreadable ({exc})") from exc


def _read_ids(ds: h5py.Dataset, path: str, field: str, ndim: int) -> np.ndarray:
    """Integer ids as exact uint64 (never through float)."""
    _checked_length(ds, path, field, ndim)
    if ds.dtype.kind not in "ui":
        raise MetadataError(path, field, f"expected integer ids, got {ds.dtype}")
    values = _read(ds, path, field)
    if values.dtype.kind == "i" and values.size and values.min() < 0:
        raise MetadataError(path, field, "ids must not be negative")
    return values.astype(np.uint64)


def _read_strings(ds: h5py.Dataset, path: str, field: str, n: int) -> list[str]:
    """A 1D string dataset of exactly ``n`` entries."""
    if _checked_length(ds, path, field, 1) != n:
        raise MetadataError(path, field, f"has {ds.shape[0]} entries but there are {n} ids")
    if h5py.check_string_dtype(ds.dtype) is None:
        raise MetadataError(path, field, f"expected strings, got {ds.dtype}")
    try:
        return [str(v) for v in ds.asstr(errors="replace")[()]]
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise MetadataError(path, field, f"unreadable ({exc})") from exc


def _read_locations(ds: h5py.Dataset, path: str, n: int) -> np.ndarray:
    """``(n, 3)`` finite float64 locations."""
    if _checked_length(ds, path, "locations", 2) != n or ds.shape[1] != 3:
        raise MetadataError(path, "locations", f"expected shape ({n}, 3), got {ds.shape}")
    if ds.dtype.kind not in "uif":
        raise MetadataError(path, "locations", f"expected numbers, got {ds.dtype}")
    values = _read(ds, path, "locations").astype(np.float64)
    if not np.isfinite(values).all():
        raise MetadataError(path, "locations", "locations must be finite")
    return values


def _index_of(ids: np.ndarray, values: np.ndarray, path: str, field: str) -> np.ndarray:
    """Row index in ``ids`` of every id in ``values``; unknown ids are an error."""
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], values)
    pos = np.minimum(pos, len(ids) - 1) if len(ids) else pos
    known = (ids[order][pos] == values) if len(ids) else np.zeros(values.shape, dtype=bool)
    if not known.all():
        missing = values[~known][:5].tolist()
        raise MetadataError(path, field, f"references unknown annotation ids {missing}")
    return order[pos]


def _read_partners(group: h5py.Group, ids: np.ndarray, where: str) -> np.ndarray:
    """``(M, 2)`` uint64 (pre_id, post_id) pairs, empty when the file has none."""
    path = f"{where}/presynaptic_site/partners"
    obj = group.get("presynaptic_site/partners") if "presynaptic_site" in group else None
    if obj is None:
        return np.zeros((0, 2), dtype=np.uint64)
    if not isinstance(obj, h5py.Dataset):
        raise MetadataError(path, "partners", "is a group, expected a dataset")
    if obj.size == 0:
        return np.zeros((0, 2), dtype=np.uint64)
    if obj.ndim != 2 or obj.shape[1] != 2:
        raise MetadataError(path, "partners", f"expected shape (M, 2), got {obj.shape}")
    return _read_ids(obj, path, "partners", 2)


def _partner_columns(
    group: h5py.Group, ids: np.ndarray, where: str
) -> tuple[np.ndarray, list[str]]:
    """Per site: the first partner's id (0 if none) and every partner id, comma-separated."""
    pairs = _read_partners(group, ids, where)
    if len(pairs) == 0:  # sites without partners (or no partners table)
        return np.zeros(len(ids), dtype=np.uint64), [""] * len(ids)
    path = f"{where}/presynaptic_site/partners"
    pre = _index_of(ids, pairs[:, 0], path, "partners")
    post = _index_of(ids, pairs[:, 1], path, "partners")
    sites = np.concatenate([pre, post])
    others = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.argsort(sites, kind="stable")
    sites, others = sites[order], others[order]
    unique, starts = np.unique(sites, return_index=True)
    first = np.zeros(len(ids), dtype=np.uint64)
    first[unique] = others[starts]
    every = [""] * len(ids)
    for site, group_ids in zip(unique, np.split(others, starts[1:]), strict=True):
        every[site] = ",".join(str(v) for v in group_ids.tolist())
    return first, every


def _comments(group: h5py.Group, ids: np.ndarray, where: str) -> list[str]:
    """One comment per site ("" if none; several for one site are joined with "; ")."""
    comments = [""] * len(ids)
    node = group.get("comments")
    if node is None:
        return comments
    if not isinstance(node, h5py.Group):
        raise MetadataError(f"{where}/comments", "comments", "expected a group")
    targets = _read_ids(
        _dataset(node, "target_ids", f"{where}/comments"),
        f"{where}/comments/target_ids",
        "target_ids",
        1,
    )
    texts = _read_strings(
        _dataset(node, "comments", f"{where}/comments"),
        f"{where}/comments/comments",
        "comments",
        len(targets),
    )
    rows = _index_of(ids, targets, f"{where}/comments/target_ids", "target_ids")
    for row, text in zip(rows.tolist(), texts, strict=True):
        comments[row] = f"{comments[row]}; {text}" if comments[row] else text
    return comments
