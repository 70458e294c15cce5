"""uint64 ids in signed 64-bit database columns, bit for bit.

SQLite and PostgreSQL integers are signed 64-bit. Ids are stored as the int64 with the
same bits (two's complement), so every uint64 survives exactly and ids below 2**63 (all
ids seen in practice, e.g. CAVE root ids) keep their order and equality in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["from_db", "from_db_one", "to_db", "to_db_one"]

_TOP = 1 << 63
_WRAP = 1 << 64


def to_db(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """uint64 ids -> the int64 values stored in the database."""
    arr = ids if isinstance(ids, np.ndarray) else np.array([int(i) for i in ids], dtype=np.uint64)
    if arr.dtype.kind == "i":
        if (arr < 0).any():
            raise ValueError("ids must not be negative")
        return arr.astype(np.int64)
    return np.ascontiguousarray(arr, dtype=np.uint64).view(np.int64)


def from_db(values: Iterable[int] | np.ndarray) -> np.ndarray:
    """int64 database values -> uint64 ids."""
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.int64)
    return np.ascontiguousarray(arr).view(np.uint64)


def to_db_one(value: int) -> int:
    """One uint64 id -> its int64 database value."""
    value = int(value)
    if not 0 <= value < _WRAP:
        raise ValueError(f"not a uint64 id: {value}")
    return value - _WRAP if value >= _TOP else value


def from_db_one(value: int) -> int:
    """One int64 database value -> its uint64 id."""
    value = int(value)
    return value + _WRAP if value < 0 else value
