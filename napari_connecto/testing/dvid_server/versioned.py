"""Copy-on-write key-value storage over a version DAG, with tombstones.

DVID stores every key once per version that wrote it; a read in version ``v``
walks ``v``'s ancestry (``v``, its first parent, that node's first parent, ...)
and takes the first version holding the key. A delete in a child writes a
tombstone so ancestors' values stay hidden there and visible in the parents.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["TOMBSTONE", "VersionedStore"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Tombstone:
    """Marker of a key deleted in one version."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOMBSTONE"


TOMBSTONE: Any = _Tombstone()
"""The value stored for a key deleted in a version."""


class VersionedStore(Generic[K, V]):
    """Values per ``(key, version)``, read through a version's ancestry.

    The store is not locked: the server holds its state lock around every
    request.
    """

    def __init__(self) -> None:
        self._data: dict[K, dict[int, Any]] = {}

    def get(self, key: K, ancestry: Sequence[int], default: Any = None) -> Any:
        """The value visible at the first version of ``ancestry``, else ``default``."""
        versions = self._data.get(key)
        if versions:
            for v in ancestry:
                if v in versions:
                    value = versions[v]
                    return default if value is TOMBSTONE else value
        return default

    def contains(self, key: K, ancestry: Sequence[int]) -> bool:
        """Whether ``key`` has a live value at ``ancestry[0]``."""
        return self.get(key, ancestry, TOMBSTONE) is not TOMBSTONE

    def put(self, key: K, version: int, value: V) -> None:
        """Write ``value`` in ``version`` only."""
        self._data.setdefault(key, {})[version] = value

    def delete(self, key: K, version: int, ancestry: Sequence[int]) -> bool:
        """Hide ``key`` from ``version`` on; ``False`` if it was not visible."""
        if not self.contains(key, ancestry):
            return False
        versions = self._data[key]
        if any(v in versions for v in ancestry[1:]):
            versions[version] = TOMBSTONE
        else:
            versions.pop(version, None)
            if not versions:
                del self._data[key]
        return True

    def items(self, ancestry: Sequence[int]) -> Iterator[tuple[K, V]]:
        """Every live ``(key, value)`` visible at ``ancestry[0]``, keys in insertion order."""
        for key, versions in self._data.items():
            for v in ancestry:
                if v in versions:
                    value = versions[v]
                    if value is not TOMBSTONE:
                        yield key, value
                    break

    def keys(self, ancestry: Sequence[int]) -> list[K]:
        """Every live key visible at ``ancestry[0]``."""
        return [key for key, _ in self.items(ancestry)]

    def dump(self, encode: Callable[[V], Any]) -> list[list[Any]]:
        """Every stored ``[key, version, encoded value or None]`` (``None`` = tombstone)."""
        rows: list[list[Any]] = []
        for key, versions in self._data.items():
            for v, value in versions.items():
                rows.append([key, v, None if value is TOMBSTONE else encode(value)])
        return rows

    def load(
        self, rows: list[list[Any]], decode: Callable[[Any], V], key: Callable[[Any], K]
    ) -> None:
        """Restore rows written by :meth:`dump`."""
        for raw_key, v, raw in rows:
            value = TOMBSTONE if raw is None else decode(raw)
            self._data.setdefault(key(raw_key), {})[int(v)] = value
