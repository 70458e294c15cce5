"""Turning what a format reader parsed into one validated :class:`ImportBatch`.

Readers build frames with the normalised column names, then call
:func:`normalized_synapses` / :func:`normalized_neurons` (which validate, name the file's
own row numbers and column names in errors, and drop exact repeats) and
:func:`make_batch` (which adds a bare neuron row for every synapse partner not listed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from napari_connecto.annotations.frames import (
    ImportBatch,
    drop_identical_duplicates,
    normalize_neurons,
    normalize_synapses,
)
from napari_connecto.errors import ImportFormatError

__all__ = [
    "checked_resolution",
    "file_rows",
    "make_batch",
    "normalized_neurons",
    "normalized_synapses",
]


def checked_resolution(
    resolution: Sequence[float] | None, path: str
) -> tuple[float, float, float] | None:
    """``resolution`` as three positive finite floats (z, y, x nm), or ``None``.

    Raises
    ------
    ImportFormatError
        If it is not three positive finite numbers.
    """
    if resolution is None:
        return None
    try:
        values = tuple(float(v) for v in resolution)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ImportFormatError(
            path, f"resolution must be three positive numbers (z, y, x nm), got {resolution!r}"
        )
    return values  # type: ignore[return-value]


@contextmanager
def file_rows(
    rows: Sequence[int] | np.ndarray | pd.Index | None = None,
    columns: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """Re-raise :class:`ImportFormatError` with the file's row numbers and column names.

    Parameters
    ----------
    rows : sequence of int, optional
        The file's 0-based data row of each frame row (when rows were filtered out).
    columns : mapping, optional
        Normalised column name -> how the file names it.
    """
    try:
        yield
    except ImportFormatError as exc:
        row = exc.row
        if row is not None and rows is not None and 0 <= row < len(rows):
            row = int(rows[row])
        column = exc.column
        if column is not None and columns is not None:
            column = columns.get(column, column)
        if row == exc.row and column == exc.column:
            raise
        raise ImportFormatError(exc.path, exc.problem, row=row, column=column) from exc


def normalized_synapses(
    frame: pd.DataFrame,
    path: str,
    *,
    rows: Sequence[int] | np.ndarray | pd.Index | None = None,
    columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Validate a synapse frame (see :func:`.frames.normalize_synapses`).

    Errors name the file's own ``rows`` and ``columns`` (see :func:`file_rows`).

    Raises
    ------
    ImportFormatError
        On a malformed value.
    ConflictError
        If one synapse id appears with two different rows.
    """
    with file_rows(rows, columns):
        out = normalize_synapses(frame, path)
    return drop_identical_duplicates(out, "synapses", path)


def normalized_neurons(
    frame: pd.DataFrame,
    path: str,
    *,
    rows: Sequence[int] | np.ndarray | pd.Index | None = None,
    columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Validate a neuron frame (see :func:`.frames.normalize_neurons`).

    Raises
    ------
    ImportFormatError
        On a malformed value.
    ConflictError
        If one neuron id appears with two different rows.
    """
    with file_rows(rows, columns):
        out = normalize_neurons(frame, path)
    return drop_identical_duplicates(out, "neurons", path)


def make_batch(
    path: str, *, synapses: pd.DataFrame | None = None, neurons: pd.DataFrame | None = None
) -> ImportBatch:
    """A batch of normalised frames, with a bare neuron row for every unlisted partner.

    Parameters
    ----------
    path : str
        The file imported.
    synapses, neurons : pandas.DataFrame, optional
        Normalised frames.

    Returns
    -------
    ImportBatch
        ``neurons`` holds the listed neurons, then every nonzero ``pre_id``/``post_id``
        not listed (empty fields, NaN keypoint), in increasing id order.
    """
    if synapses is not None:
        partners = np.concatenate([synapses["pre_id"].to_numpy(), synapses["post_id"].to_numpy()])
        partners = np.unique(partners[partners != 0])
        if neurons is not None:
            partners = partners[~np.isin(partners, neurons["id"].to_numpy())]
        if partners.size or neurons is None:
            bare = normalize_neurons(pd.DataFrame({"id": partners.astype(np.uint64)}), path)
            frames = [f for f in (neurons, bare) if f is not None and len(f)]
            neurons = pd.concat(frames, ignore_index=True) if frames else bare
    return ImportBatch(source=path, neurons=neurons, synapses=synapses)
