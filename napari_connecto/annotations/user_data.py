"""A user's own data in the annotation store: bookmarks (places with notes) and settings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Connection, exists, select

from napari_connecto.annotations import schema

__all__ = ["UserDataMixin"]

T = TypeVar("T")


class UserDataMixin:
    """Bookmarks and settings of :class:`~napari_connecto.annotations.AnnotationStore`."""

    if TYPE_CHECKING:

        def _write(self, action: Callable[[Connection], T]) -> T: ...
        def _read(self, action: Callable[[Connection], T]) -> T: ...

    # -- bookmarks --------------------------------------------------------------------
    def add_bookmark(
        self, position_nm: Iterable[float], note: str = "", tags: Iterable[str] = ()
    ) -> int:
        """Save a place (z, y, x nm) with a note and tags; return the bookmark's id."""
        z, y, x = (float(v) for v in position_nm)
        values = {"z": z, "y": y, "x": x, "note": note, "tags": _tags(tags), "created": time.time()}
        statement = schema.bookmarks.insert().values(**values)
        return int(self._write(lambda conn: conn.execute(statement).inserted_primary_key[0]))

    def update_bookmark(
        self, bookmark_id: int, *, note: str | None = None, tags: Iterable[str] | None = None
    ) -> None:
        """Change a bookmark's note and/or tags; :class:`KeyError` if it is gone."""
        values: dict[str, str] = {}
        if note is not None:
            values["note"] = note
        if tags is not None:
            values["tags"] = _tags(tags)
        if not values:
            return
        table = schema.bookmarks
        statement = table.update().where(table.c.id == int(bookmark_id)).values(**values)
        if self._write(lambda conn: conn.execute(statement).rowcount) == 0:
            raise KeyError(f"no bookmark {bookmark_id}")

    def delete_bookmark(self, bookmark_id: int) -> bool:
        """Delete a bookmark; return whether it existed."""
        table = schema.bookmarks
        statement = table.delete().where(table.c.id == int(bookmark_id))
        return bool(self._write(lambda conn: conn.execute(statement).rowcount))

    def bookmarks(self) -> pd.DataFrame:
        """Every bookmark, oldest first: id, z, y, x (nm), note, tags, created.

        ``tags`` is one comma-separated string.
        """
        table = schema.bookmarks
        query = select(table).order_by(table.c.id)
        rows = self._read(lambda conn: conn.execute(query).all())
        names = [c.name for c in table.c]
        frame = pd.DataFrame.from_records(rows, columns=names)
        frame["id"] = frame["id"].astype(np.int64)
        for column in ("z", "y", "x", "created"):
            frame[column] = frame[column].astype(np.float64)
        return frame

    # -- settings ---------------------------------------------------------------------
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        """A value stored with :meth:`set_setting` (e.g. the dataset a store belongs to)."""
        table = schema.meta
        query = select(table.c.value).where(table.c.key == f"setting.{key}")
        value = self._read(lambda conn: conn.execute(query).scalar())
        return default if value is None else str(value)

    def set_setting(self, key: str, value: str) -> None:
        """Store a small text value under ``key``."""
        table = schema.meta
        name = f"setting.{key}"

        def upsert(conn: Connection) -> None:
            found = conn.execute(select(exists().where(table.c.key == name))).scalar()
            if found:
                conn.execute(table.update().where(table.c.key == name).values(value=value))
            else:
                conn.execute(table.insert().values(key=name, value=value))

        self._write(upsert)


def _tags(tags: Iterable[str]) -> str:
    if isinstance(tags, str):
        tags = tags.split(",")
    return ",".join(t.strip() for t in tags if t.strip())
