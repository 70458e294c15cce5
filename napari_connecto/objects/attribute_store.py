"""Columns of per-segment attributes keyed by uint64 id, looked up by binary search.

An :class:`AttributeStore` holds a sorted, unique uint64 id array and one numpy array
per column, aligned with it (syconn's ``BinarySearchStore``): a lookup of ``k`` ids
costs one ``np.searchsorted`` (``O(k log n)``), with no Python dict of the ids. Text
columns are fixed-width numpy unicode arrays (no objects, so nothing needs pickle).

On disk a store is a directory: ``manifest.json`` plus one ``.npy`` per array (written
with ``allow_pickle=False``), built in a temporary sibling and renamed into place.
:meth:`AttributeStore.load` memory-maps the arrays, so ten million ids open at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_connecto.errors import MetadataError, SourceNotFoundError

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "AttributeStore", "Lookup", "as_ids"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the on-disk layout written by :meth:`AttributeStore.save`."""
MANIFEST_NAME = "manifest.json"
"""Name of the JSON file describing a saved store."""
_KINDS = frozenset("biufU")
_TOP_STRIDE = 256
"""Every this many ids one goes into the small top-level index searched first."""
_TWO_LEVEL = (1 << 16, 4096)
"""Two-level search for stores of at least this many ids and batches below this size."""


def as_ids(ids: Iterable[int] | np.ndarray | int) -> np.ndarray:
    """Ids as a 1-d uint64 array, exactly (Python ints up to 2**64 - 1, no float round trip).

    Raises
    ------
    ValueError
        An id that is negative, too large or not an integer.
    """
    if isinstance(ids, np.ndarray) and ids.dtype == np.uint64:
        return ids.reshape(-1)
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "i":
        if ids.size and int(ids.min()) < 0:
            raise ValueError("negative segment id")
        return ids.astype(np.uint64).reshape(-1)
    values = [int(ids)] if isinstance(ids, int | np.integer) else [int(v) for v in ids]
    if any(not 0 <= v < 2**64 for v in values):
        raise ValueError("segment ids must be in [0, 2**64)")
    return np.array(values, dtype=np.uint64)


def _fill(dtype: np.dtype) -> Any:
    """The value a missing row gets: NaN for floats, 0 for integers, '' for text."""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "U":
        return ""
    return 0


@dataclass(frozen=True, slots=True)
class Lookup:
    """Rows of a store for some ids, in the order asked."""

    ids: np.ndarray
    """The ids asked for (uint64)."""
    found: np.ndarray
    """Whether each id is in the store (bool)."""
    columns: dict[str, np.ndarray]
    """Values per column; rows not found hold NaN (floats), 0 (integers) or ''."""

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with ``id``, ``found`` and every column."""
        return pd.DataFrame({"id": self.ids, "found": self.found, **self.columns})


class AttributeStore:
    """Per-segment attributes: a sorted uint64 id array plus aligned column arrays.

    Parameters
    ----------
    ids : array-like of uint64
        Segment ids; need not be sorted but must be unique.
    columns : mapping of str to array-like
        One value per id (numbers or text), aligned with ``ids``.
    meta : mapping, optional
        JSON-able description (source, scale, resolution ...), kept with the store.

    Raises
    ------
    ValueError
        Duplicate ids, a column of the wrong length or an unsupported dtype.
    """

    def __init__(
        self,
        ids: Sequence[int] | np.ndarray,
        columns: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        keys = as_ids(ids)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if keys.size > 1 and bool(np.any(keys[1:] == keys[:-1])):
            dup = keys[1:][keys[1:] == keys[:-1]][:5]
            raise ValueError(f"duplicate segment ids: {', '.join(map(str, dup.tolist()))}")
        self._ids = keys
        self._columns: dict[str, np.ndarray] = {}
        for name, values in (columns or {}).items():
            array = _column_array(name, values, keys.size)
            self._columns[str(name)] = array[order]
        self.meta: dict[str, Any] = dict(meta or {})
        self._top: np.ndarray | None = None

    @classmethod
    def _from_sorted(
        cls, ids: np.ndarray, columns: dict[str, np.ndarray], meta: Mapping[str, Any]
    ) -> AttributeStore:
        """A store over arrays that are already sorted and unique (no copies)."""
        store = cls.__new__(cls)
        store._ids, store._columns, store.meta = ids, columns, dict(meta)
        store._top = None
        return store

    # -- description ----------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """Every id, sorted ascending (uint64, read-only)."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names, in order."""
        return tuple(self._columns)

    def column(self, name: str) -> np.ndarray:
        """All values of one column, aligned with :attr:`ids` (read-only view)."""
        view = self._columns[name].view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return int(self._ids.size)

    def __repr__(self) -> str:
        return f"AttributeStore({len(self):,} ids, columns={list(self._columns)})"

    # -- lookups --------------------------------------------------------------------------
    def positions(self, ids: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each id by binary search, and whether it was found.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            ``rows`` (intp; meaningless where not found) and ``found`` (bool).
        """
        keys = as_ids(ids)
        n = self._ids.size
        if n == 0:
            return np.zeros(keys.size, dtype=np.intp), np.zeros(keys.size, dtype=bool)
        if n >= _TWO_LEVEL[0] and keys.size < _TWO_LEVEL[1]:
            rows = self._two_level_search(keys)
        else:  # increasing keys let numpy's binary search reuse its last bounds
            order = np.argsort(keys, kind="stable")
            rows = np.empty(keys.size, dtype=np.intp)
            rows[order] = np.searchsorted(self._ids, keys[order])
        np.minimum(rows, n - 1, out=rows)
        found = self._ids[rows] == keys
        return rows, found

    def _two_level_search(self, keys: np.ndarray) -> np.ndarray:
        """``np.searchsorted(ids, keys)`` via a cache-sized top index, then inside blocks.

        The top index (every :data:`_TOP_STRIDE`-th id, built on first use) is searched
        for each key's block; a vectorised binary search inside the blocks follows, so
        each key touches a handful of cache lines of the big (possibly mapped) array.
        """
        ids = self._ids
        if self._top is None:
            self._top = np.ascontiguousarray(ids[::_TOP_STRIDE])
        n = ids.size
        lo = np.maximum(np.searchsorted(self._top, keys, side="right") - 1, 0) * _TOP_STRIDE
        hi = np.minimum(lo + _TOP_STRIDE, n)
        active = lo < hi
        while active.any():
            mid = (lo + hi) // 2
            right = (ids[np.minimum(mid, n - 1)] < keys) & active
            lo = np.where(right, mid + 1, lo)
            hi = np.where(right | ~active, hi, mid)
            active = lo < hi
        return lo

    def lookup(
        self, ids: Iterable[int] | np.ndarray, columns: Sequence[str] | None = None
    ) -> Lookup:
        """The rows of ``ids`` (any order, repeats allowed); missing ids are flagged.

        Parameters
        ----------
        ids : iterable of int
            Segment ids.
        columns : sequence of str, optional
            Which columns; default all.

        Returns
        -------
        Lookup
            ``found`` mask and one array per column.

        Raises
        ------
        KeyError
            A column name that is not in the store.
        """
        keys = as_ids(ids)
        rows, found = self.positions(keys)
        names = self.columns if columns is None else tuple(columns)
        out: dict[str, np.ndarray] = {}
        all_found = bool(found.all())
        for name in names:
            data = self._columns[name]
            values = np.asarray(data[rows]) if data.size else np.zeros(keys.size, data.dtype)
            if not all_found:
                values = np.where(found, values, np.array(_fill(data.dtype), dtype=data.dtype))
            out[name] = values
        return Lookup(keys, found, out)

    def get(self, segment_id: int) -> dict[str, Any] | None:
        """The attributes of one id as Python values, or ``None`` if it is not stored."""
        result = self.lookup([int(segment_id)])
        if not result.found[0]:
            return None
        return {name: values[0].item() for name, values in result.columns.items()}

    def __contains__(self, segment_id: object) -> bool:
        try:
            _rows, found = self.positions([int(segment_id)])  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False
        return bool(found[0])

    # -- joins ----------------------------------------------------------------------------
    def with_columns(
        self, ids: Sequence[int] | np.ndarray, columns: Mapping[str, Sequence[Any] | np.ndarray]
    ) -> AttributeStore:
        """A new store with more columns joined by id (left join: ids of ``self`` kept).

        Rows of ``self`` whose id is not among ``ids`` get NaN, 0 or ''.

        Raises
        ------
        ValueError
            A column name already present, duplicate ids or misaligned columns.
        """
        other = AttributeStore(ids, columns)
        return self.merge(other, how="left")

    def merge(self, other: AttributeStore, *, how: str = "outer") -> AttributeStore:
        """Join two stores by id: ``"outer"`` (union of ids) or ``"left"`` (ids of ``self``).

        Raises
        ------
        ValueError
            A column present in both stores, or an unknown ``how``.
        """
        clash = set(self.columns) & set(other.columns)
        if clash:
            raise ValueError(f"columns in both stores: {', '.join(sorted(clash))}")
        if how == "left":
            keys = self._ids
        elif how == "outer":
            keys = np.union1d(self._ids, other._ids).astype(np.uint64)
        else:
            raise ValueError(f"how must be 'left' or 'outer', not {how!r}")
        merged: dict[str, np.ndarray] = {}
        for source in (self, other):
            if not source.columns:
                continue
            found = source.lookup(keys)
            merged.update(found.columns)
        return AttributeStore._from_sorted(keys, merged, {**other.meta, **self.meta})

    def frame(self) -> pd.DataFrame:
        """Everything as a DataFrame (reads every column: for small stores and tests)."""
        return pd.DataFrame(
            {"id": np.asarray(self._ids), **{k: np.asarray(v) for k, v in self._columns.items()}}
        )

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the store to ``directory`` atomically (temporary sibling, then rename).

        Returns
        -------
        Path
            The directory written.
        """
        dest = Path(directory)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            files = []
            np.save(tmp / "ids.npy", np.ascontiguousarray(self._ids), allow_pickle=False)
            for i, (name, values) in enumerate(self._columns.items()):
                file = f"col{i:04d}.npy"
                np.save(tmp / file, np.ascontiguousarray(values), allow_pickle=False)
                files.append({"name": name, "file": file, "dtype": values.dtype.str})
            manifest = {
                "format": "napari-connecto-attributes",
                "version": FORMAT_VERSION,
                "count": int(self._ids.size),
                "columns": files,
                "meta": self.meta,
            }
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
            _fsync_dir(tmp)
            _install(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, mmap: bool = True) -> AttributeStore:
        """Open a saved store, memory-mapping its arrays (nothing is read yet).

        Raises
        ------
        SourceNotFoundError
            No store at ``directory``.
        MetadataError
            A manifest or array that is malformed, truncated or inconsistent.
        """
        root = Path(directory)
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise SourceNotFoundError(str(root), MANIFEST_NAME)
        try:
            manifest = json.loads(manifest_path.read_text())
        except (ValueError, OSError) as exc:
            raise MetadataError(str(manifest_path), "", f"not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("version") != FORMAT_VERSION:
            raise MetadataError(str(manifest_path), "version", "unknown attribute store layout")
        mode = "r" if mmap else None
        count = manifest.get("count")
        ids = _load_array(root / "ids.npy", mode, count, "u8")
        columns: dict[str, np.ndarray] = {}
        entries = manifest.get("columns")
        if not isinstance(entries, list):
            raise MetadataError(str(manifest_path), "columns", "must be a list")
        for entry in entries:
            try:
                name, file, dtype = str(entry["name"]), str(entry["file"]), str(entry["dtype"])
            except (KeyError, TypeError) as exc:
                raise MetadataError(str(manifest_path), "columns", "malformed entry") from exc
            if "/" in file or "\\" in file or file.startswith("."):
                raise MetadataError(str(manifest_path), "columns", f"bad file name {file!r}")
            columns[name] = _load_array(root / file, mode, count, dtype)
        meta = manifest.get("meta") if isinstance(manifest.get("meta"), dict) else {}
        return cls._from_sorted(ids, columns, meta)


def _column_array(name: str, values: Sequence[Any] | np.ndarray, size: int) -> np.ndarray:
    """One column as a numeric or fixed-width text array of ``size`` rows."""
    array = np.asarray(values)
    if array.dtype.kind in {"O", "S"}:
        array = np.asarray(["" if v is None else str(v) for v in array.tolist()], dtype=str)
    if array.dtype.kind not in _KINDS:
        raise ValueError(f"column {name!r}: unsupported dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != size:
        raise ValueError(f"column {name!r} has {array.shape} values for {size} ids")
    if array.dtype.kind == "U" and size == 0:
        array = array.astype("<U1")
    return array


def _load_array(path: Path, mode: str | None, count: Any, dtype: str) -> np.ndarray:
    """One saved array, checked against the manifest's count and dtype."""
    try:
        array = np.load(path, mmap_mode=mode, allow_pickle=False)
    except FileNotFoundError as exc:
        raise MetadataError(str(path), "", "array file missing") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise MetadataError(str(path), "", f"unreadable or truncated array: {exc}") from exc
    if array.ndim != 1 or array.shape[0] != count or np.dtype(dtype) != array.dtype:
        raise MetadataError(str(path), "", f"{array.dtype}{array.shape} does not match manifest")
    return array


def _fsync_dir(directory: Path) -> None:
    """Flush every file of ``directory`` to disk before it is renamed into place."""
    for file in directory.iterdir():
        with open(file, "rb+") as handle:
            os.fsync(handle.fileno())


def _install(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``, replacing an older store (moved aside, then removed)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    logger.debug("attribute store written to %s", dest)
