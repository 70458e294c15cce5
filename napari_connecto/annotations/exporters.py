"""Export synapses and neurons from a store (or a frame) to CSV, Parquet or CREMI HDF5.

CSV and Parquet hold the normalised columns (:data:`.frames.SYNAPSE_COLUMNS`,
:data:`.frames.NEURON_COLUMNS`, plus any extra columns of the frame, e.g. the store's
``n_pre``/``n_post``); ids are written as integers, exact for every uint64, and both are
read back by the ``table`` importer. A store is read in pages of :data:`PAGE_ROWS` rows.
New files are written to a temporary sibling and renamed into place.

CREMI (``.h5``/``.hdf``/``.hdf5``) gets the ``/annotations`` layout: one pre site and one
post site per synapse (``types`` ``presynaptic_site``/``postsynaptic_site``, ``locations``
z, y, x nm) and a ``presynaptic_site/partners`` row per synapse. The post site id is the
synapse id (when every synapse has a distinct nonzero id and there is room above the
largest for the pre sites), so the CREMI importer gives the synapses their ids back;
otherwise pre sites are ``1..N`` and post sites ``N+1..2N``. CREMI has nowhere to put
neuron ids (they come from ``/volumes/labels/neuron_ids``), confidence or review status.
Exporting into an existing HDF5 file replaces its ``/annotations`` group and keeps
everything else (e.g. the volumes), in place.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from napari_connecto.annotations.frames import (
    NEURON_COLUMNS,
    SYNAPSE_COLUMNS,
    normalize_neurons,
    normalize_synapses,
)

if TYPE_CHECKING:
    from napari_connecto.annotations.store import AnnotationStore

__all__ = [
    "EXPORT_FORMATS",
    "PAGE_ROWS",
    "export_format",
    "export_neurons",
    "export_synapses",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("csv", "parquet", "cremi")
"""Formats :func:`export_synapses` writes (:func:`export_neurons`: csv and parquet)."""
PAGE_ROWS = 500_000
"""Rows read from a store at a time."""
_SUFFIXES = {
    ".csv": "csv", ".gz": "csv", ".parquet": "parquet", ".pq": "parquet",
    ".h5": "cremi", ".hdf": "cremi", ".hdf5": "cremi",
}  # fmt: skip


def export_format(path: str | os.PathLike[str]) -> str:
    """The export format implied by a file name (``.csv``, ``.parquet``, ``.h5``, ...).

    Raises
    ------
    ValueError
        If the suffix names no export format.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"cannot tell the export format of {str(path)!r}; pass format=")
    return _SUFFIXES[suffix]


def _pages(source: AnnotationStore | pd.DataFrame, what: str) -> Iterator[pd.DataFrame]:
    """The rows of ``source`` in pages (a frame is one page)."""
    if isinstance(source, pd.DataFrame):
        yield _normal(source, what)
        return
    start = 0
    while True:
        if what == "synapses":
            page = source.synapses(include_self=True, start=start, stop=start + PAGE_ROWS)
        else:
            page = source.neurons(start=start, stop=start + PAGE_ROWS)
        if len(page) or start == 0:
            yield page
        if len(page) < PAGE_ROWS:
            return
        start += PAGE_ROWS


def _normal(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """A frame with every normalised column (normalised if any is missing)."""
    columns = SYNAPSE_COLUMNS if what == "synapses" else NEURON_COLUMNS
    if all(c in frame for c in columns):
        extra = [c for c in frame.columns if c not in columns]
        return frame[[*columns, *extra]].reset_index(drop=True)
    if what == "synapses":
        return normalize_synapses(frame, "<DataFrame>")
    return normalize_neurons(frame, "<DataFrame>")


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path``, renamed onto it if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_csv(pages: Iterator[pd.DataFrame], path: Path) -> int:
    """Pages to one CSV (header once; gzipped for ``.gz``); returns the rows written."""
    rows = 0
    with _atomic(path) as tmp:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8", newline="") as out:
            for i, page in enumerate(pages):
                page.to_csv(out, index=False, header=i == 0, lineterminator="\n")
                rows += len(page)
    return rows


def _write_parquet(pages: Iterator[pd.DataFrame], path: Path) -> int:
    """Pages to one Parquet file (uint64 ids as uint64); returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    with _atomic(path) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for page in pages:
                table = pa.Table.from_pandas(
                    page, schema=None if writer is None else writer.schema, preserve_index=False
                )
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                rows += len(page)
        finally:
            if writer is not None:
                writer.close()
    return rows


def _site_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pre and post site ids for synapses with ``ids`` (see the module docstring)."""
    n = ids.size
    top = int(ids.max()) if n else 0
    if n and (ids != 0).all() and np.unique(ids).size == n and top + n < 2**64:
        pre = np.uint64(top) + np.arange(1, n + 1, dtype=np.uint64)
        return pre, ids.astype(np.uint64)
    return np.arange(1, n + 1, dtype=np.uint64), np.arange(n + 1, 2 * n + 1, dtype=np.uint64)


def _write_cremi(frame: pd.DataFrame, path: Path) -> int:
    """Synapses to a CREMI ``/annotations`` group; returns the synapses written."""
    import h5py

    pre, post = _site_ids(frame["id"].to_numpy(dtype=np.uint64))
    n = len(frame)
    locations = np.concatenate(
        [frame[["pre_z", "pre_y", "pre_x"]].to_numpy(np.float64),
         frame[["post_z", "post_y", "post_x"]].to_numpy(np.float64)]
    )  # fmt: skip
    types = ["presynaptic_site"] * n + ["postsynaptic_site"] * n

    def fill(f: h5py.File) -> None:
        if "annotations" in f:
            del f["annotations"]
        group = f.create_group("annotations")
        group.create_dataset("ids", data=np.concatenate([pre, post]).astype(np.uint64))
        group.create_dataset("types", data=types, dtype=h5py.string_dtype())
        group.create_dataset("locations", data=locations.reshape(-1, 3))
        pairs = np.stack([pre, post], axis=1).reshape(-1, 2).astype(np.uint64)
        group.create_dataset("presynaptic_site/partners", data=pairs)

    if path.exists() and h5py.is_hdf5(str(path)):
        logger.info("replacing /annotations in %s", path)
        with h5py.File(path, "r+") as f:
            fill(f)
    else:
        with _atomic(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["file_format"] = "0.2"
            fill(f)
    return n


def export_synapses(
    source: AnnotationStore | pd.DataFrame,
    path: str | os.PathLike[str],
    format: str | None = None,
) -> int:
    """Write every synapse of ``source`` (self-synapses included) to ``path``.

    Parameters
    ----------
    source : AnnotationStore or pandas.DataFrame
        A store, or a synapse frame (normalised if it lacks columns).
    path : str or os.PathLike
        The file to write (replaced; see the module docstring for CREMI files).
    format : {"csv", "parquet", "cremi"}, optional
        Default from the suffix: ``.csv``/``.csv.gz``, ``.parquet``/``.pq``,
        ``.h5``/``.hdf``/``.hdf5``.

    Returns
    -------
    int
        Synapses written.

    Raises
    ------
    ValueError
        If the format is unknown.
    ImportFormatError
        If a frame given as ``source`` does not normalise.
    OSError
        If the file cannot be written.
    """
    target = Path(path)
    name = format or export_format(target)
    if name == "csv":
        return _write_csv(_pages(source, "synapses"), target)
    if name == "parquet":
        return _write_parquet(_pages(source, "synapses"), target)
    if name == "cremi":
        frames = list(_pages(source, "synapses"))
        return _write_cremi(pd.concat(frames, ignore_index=True), target)
    raise ValueError(f"unknown export format {name!r}; known: {', '.join(EXPORT_FORMATS)}")


def export_neurons(
    source: AnnotationStore | pd.DataFrame,
    path: str | os.PathLike[str],
    format: str | None = None,
) -> int:
    """Write every neuron of ``source`` (id, name, type, status, notes, keypoint, ...).

    Parameters
    ----------
    source : AnnotationStore or pandas.DataFrame
        A store (its neurons with ``n_pre``/``n_post``), or a neuron frame.
    path : str or os.PathLike
        The file to write (replaced).
    format : {"csv", "parquet"}, optional
        Default from the suffix.

    Returns
    -------
    int
        Neurons written.

    Raises
    ------
    ValueError
        If the format is unknown or ``"cremi"`` (CREMI files hold no neuron table).
    ImportFormatError
        If a frame given as ``source`` does not normalise.
    OSError
        If the file cannot be written.
    """
    target = Path(path)
    name = format or export_format(target)
    if name == "csv":
        return _write_csv(_pages(source, "neurons"), target)
    if name == "parquet":
        return _write_parquet(_pages(source, "neurons"), target)
    raise ValueError(f"neurons can be exported as csv or parquet, not {name!r}")
