"""Butterfly-style plain arrays: synapses ``N x 5`` and neurons ``N x 4``.

Synapse rows are ``(pre, post, z, y, x)`` (neuron ids, then the synapse's centre); neuron
rows are ``(id, z, y, x)`` (a keypoint). Positions are nm unless ``resolution`` (z, y, x nm
per voxel) is given, then they are voxel coordinates and are multiplied by it.

Containers:

- HDF5: datasets found anywhere in the file by name (case-insensitive): synapses in
  :data:`SYNAPSE_NAMES`, neurons in :data:`NEURON_NAMES`; failing that, the one 2D
  dataset 5 (synapses) or 4 (neurons) columns wide.
- ``.npy``: one array, synapses if 5 columns wide, neurons if 4 (``kind`` forces it);
  ``.npz``: arrays named as in HDF5. Read with ``allow_pickle=False`` always.
- CSV/TSV/whitespace text *without* a header row, 5 or 4 columns.

Ids must be integers: an integer array keeps every uint64 exactly; a float array is
accepted only for integral ids below 2**53 (larger ones have already lost digits).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from napari_connecto.annotations.frames import ImportBatch
from napari_connecto.annotations.importers.batch import (
    checked_resolution,
    make_batch,
    normalized_neurons,
    normalized_synapses,
)
from napari_connecto.annotations.importers.columns import numbers
from napari_connecto.annotations.importers.cremi import looks_like_hdf5, open_hdf5
from napari_connecto.annotations.importers.registry import (
    Importer,
    Kind,
    ReadOptions,
    read_head,
)
from napari_connecto.annotations.importers.tables import (
    TEXT_SUFFIXES,
    delimiter,
    first_line,
    split_header,
)
from napari_connecto.errors import ImportFormatError

__all__ = ["IMPORTER", "NEURON_NAMES", "SYNAPSE_NAMES", "read_arrays", "sniff_arrays"]

SYNAPSE_NAMES = ("synapses", "synapse", "synapse_connections", "synapse-connections", "connections")
"""Dataset (or ``.npz`` array) names holding ``N x 5`` synapses."""
NEURON_NAMES = ("neurons", "neuron", "neuron_keypoints", "keypoints", "somata", "bodies")
"""Dataset (or ``.npz`` array) names holding ``N x 4`` neurons."""
_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "synapses": ("pre_id", "post_id", "z", "y", "x"),
    "neurons": ("id", "z", "y", "x"),
}
_WIDTH: dict[int, Kind] = {5: "synapses", 4: "neurons"}
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_H5_ERRORS = (OSError, ValueError, RuntimeError, TypeError, KeyError)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _hdf5_arrays(f: h5py.File) -> dict[Kind, str]:
    """Kind -> dataset path, by name first, else by width."""
    datasets: list[tuple[str, h5py.Dataset]] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            datasets.append((name, obj))

    f.visititems(visit)
    found: dict[Kind, str] = {}
    for kind, names in (("synapses", SYNAPSE_NAMES), ("neurons", NEURON_NAMES)):
        hit = next((p for p, _ in datasets if p.rsplit("/", 1)[-1].lower() in names), None)
        if hit is not None:
            found[kind] = hit  # type: ignore[index]
    if not found:
        for width, kind in _WIDTH.items():
            wide = [p for p, ds in datasets if ds.ndim == 2 and ds.shape[1] == width]
            if len(wide) == 1:
                found[kind] = wide[0]
    return found


def sniff_arrays(path: Path, head: bytes) -> bool:
    """NPY/NPZ, HDF5 holding synapse/neuron arrays, or header-less numeric text."""
    if head.startswith(_NPY_MAGIC):
        return True
    if head.startswith(_ZIP_MAGIC):
        return path.name.lower().endswith(".npz")
    if looks_like_hdf5(path, head):
        try:
            with h5py.File(path, "r") as f:
                return bool(_hdf5_arrays(f))
        except _H5_ERRORS:
            return False
    if not path.name.lower().endswith(TEXT_SUFFIXES):
        return False
    fields = split_header(first_line(head))
    return len(fields) in _WIDTH and all(_is_number(v) for v in fields)


def _from_hdf5(path: Path) -> dict[Kind, tuple[np.ndarray, str]]:
    """Kind -> (array, dataset name) from an HDF5 file."""
    where = str(path)
    out: dict[Kind, tuple[np.ndarray, str]] = {}
    with open_hdf5(path) as f:
        found = _hdf5_arrays(f)
        if not found:
            raise ImportFormatError(
                where, f"no synapse ({', '.join(SYNAPSE_NAMES)}) or neuron "
                f"({', '.join(NEURON_NAMES)}) dataset",
            )  # fmt: skip
        for kind, name in found.items():
            try:
                out[kind] = (np.asarray(f[name][()]), f"/{name}")
            except _H5_ERRORS as exc:
                raise ImportFormatError(where, f"unreadable ({exc})", column=f"/{name}") from exc
    return out


def _load_npy(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """``np.load`` without pickle; ``.npz`` as a dict of arrays."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {name: loaded[name] for name in loaded.files}
        return loaded
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        problem = f"cannot load without pickle ({exc})"
        raise ImportFormatError(str(path), problem) from exc


def _from_numpy(path: Path, kind: Kind | None) -> dict[Kind, tuple[np.ndarray, str]]:
    """Kind -> (array, name) from ``.npy``/``.npz``."""
    loaded = _load_npy(path)
    if isinstance(loaded, dict):
        out: dict[Kind, tuple[np.ndarray, str]] = {}
        for k, names in (("synapses", SYNAPSE_NAMES), ("neurons", NEURON_NAMES)):
            hit = next((n for n in loaded if n.lower() in names), None)
            if hit is not None:
                out[k] = (loaded[hit], hit)  # type: ignore[index]
        if not out:
            raise ImportFormatError(str(path), f"no synapse or neuron array in {sorted(loaded)}")
        return out
    return {_kind_of(loaded, kind, str(path), path.name): (loaded, path.name)}


def _from_text(path: Path, head: bytes, kind: Kind | None) -> dict[Kind, tuple[np.ndarray, str]]:
    """Kind -> (text array, file name) from header-less delimited text."""
    sep = delimiter(first_line(head))
    try:
        frame = pd.read_csv(path, header=None, sep=sep, dtype=str, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame(columns=range(5 if kind != "neurons" else 4))
    except (OSError, ValueError, UnicodeDecodeError, EOFError, pd.errors.ParserError) as exc:
        raise ImportFormatError(str(path), f"cannot read ({exc})") from exc
    values = frame.to_numpy(dtype=object)
    return {_kind_of(values, kind, str(path), path.name): (values, path.name)}


def _kind_of(array: np.ndarray, kind: Kind | None, where: str, name: str) -> Kind:
    """What a lone array holds, from its width (checked against ``kind``)."""
    width = array.shape[1] if array.ndim == 2 else -1
    guessed = _WIDTH.get(width)
    if kind is not None:
        guessed = kind if width == len(_COLUMNS[kind]) else None
    if guessed is None:
        want = "N x 5 synapses (pre, post, z, y, x) or N x 4 neurons (id, z, y, x)"
        if kind is not None:
            want = f"N x {len(_COLUMNS[kind])} {kind}"
        raise ImportFormatError(where, f"expected {want}, got shape {array.shape}", column=name)
    return guessed


def _frame(
    array: np.ndarray, kind: Kind, where: str, name: str, scale: np.ndarray
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Normalised columns of one array, and how errors should name them."""
    _kind_of(array, kind, where, name)
    if array.dtype.kind not in "uifOSU":
        raise ImportFormatError(where, f"expected numbers, got {array.dtype}", column=name)
    columns = _COLUMNS[kind]
    names = {c: f"{name}[:, {i}] ({c})" for i, c in enumerate(columns)}
    frame = pd.DataFrame(index=pd.RangeIndex(len(array)))
    for i, column in enumerate(columns):
        values = pd.Series(array[:, i])
        if column in ("z", "y", "x"):
            frame[column] = numbers(values, where, names[column]) * scale["zyx".index(column)]
        else:
            frame[column] = values
    return frame, names


def read_arrays(path: Path, options: ReadOptions) -> ImportBatch:
    """Read butterfly-style synapse/neuron arrays (see the module docstring).

    Raises
    ------
    ImportFormatError
        On a missing or malformed array or value, naming the dataset, row and column.
    ConflictError
        If one neuron id appears with two different keypoints.
    """
    where = str(path)
    resolution = checked_resolution(options.resolution, where)
    scale = np.ones(3) if resolution is None else np.asarray(resolution)
    head = read_head(path)
    if head.startswith((_NPY_MAGIC, _ZIP_MAGIC)):
        arrays = _from_numpy(path, options.kind)
    elif looks_like_hdf5(path, head):
        arrays = _from_hdf5(path)
    else:
        arrays = _from_text(path, head, options.kind)
    if options.kind is not None:
        arrays = {k: v for k, v in arrays.items() if k == options.kind}
        if not arrays:
            raise ImportFormatError(where, f"no {options.kind} array")
    synapses = neurons = None
    if "synapses" in arrays:
        array, name = arrays["synapses"]
        frame, names = _frame(array, "synapses", where, name, scale)
        synapses = normalized_synapses(frame, where, columns=names)
    if "neurons" in arrays:
        array, name = arrays["neurons"]
        frame, names = _frame(array, "neurons", where, name, scale)
        neurons = normalized_neurons(frame, where, columns=names)
    return make_batch(where, synapses=synapses, neurons=neurons)


IMPORTER = Importer(
    name="arrays",
    sniff=sniff_arrays,
    read=read_arrays,
    description="butterfly-style arrays: synapses N x 5 (pre, post, z, y, x), neurons N x 4",
)
"""The ``"arrays"`` importer."""
