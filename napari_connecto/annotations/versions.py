"""Named, immutable versions of an annotation store (like CAVE's materialization versions).

:meth:`~VersionsMixin.create_version` copies the synapses, neurons and fragment ->
segment assignments into the ``version_*`` tables in one transaction, with
``INSERT ... SELECT``. The transaction takes the edit journal's write lock (SQLite
``BEGIN IMMEDIATE``; PostgreSQL the journal's advisory lock, then ``SHARE`` locks on the
copied tables), so a version holds exactly the edits up to its ``journal_seq``, every
other write committed before it, and nothing of a later one. Snapshot rows are never
updated: later edits, undo and redo change the live tables only. A whole version can be
deleted (:meth:`~VersionsMixin.delete_version`); its name can then be used again.

Every query takes ``version=None`` to mean the live tables, so versions and the live
state are read and compared (:func:`.version_diff.diff_versions`) the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import (
    Connection,
    Integer,
    and_,
    func,
    literal,
    select,
)
from sqlalchemy.exc import IntegrityError

from napari_connecto.annotations import queries, schema
from napari_connecto.annotations.frames import SYNAPSE_COLUMNS
from napari_connecto.annotations.ids import from_db
from napari_connecto.errors import AnnotationError

if TYPE_CHECKING:
    from napari_connecto.annotations.version_diff import VersionDiff
    from napari_connecto.geometry import BBox

__all__ = [
    "JOURNAL_LOCK",
    "VersionError",
    "VersionExistsError",
    "VersionInfo",
    "VersionNotFoundError",
    "VersionsMixin",
    "validate_name",
]

T = TypeVar("T")

JOURNAL_LOCK = 7206119361
"""The PostgreSQL advisory lock key the edit journal serialises its commits with."""
LIVE_NAMES = frozenset({"live", "current", "head"})
"""Names that mean the live tables on the command line, so no version may take them."""
MAX_NAME = 200
"""Longest version name (characters)."""
_SNAPSHOTS = (
    (schema.synapses, schema.version_synapses, "n_synapses"),
    (schema.neurons, schema.version_neurons, "n_neurons"),
    (schema.assignments, schema.version_assignments, "n_assignments"),
)


class VersionError(AnnotationError, ValueError):
    """A version name that is empty, blank, too long or reserved."""


class VersionExistsError(VersionError):
    """A version of that name exists already (names are unique)."""


class VersionNotFoundError(AnnotationError, LookupError):
    """No version of that name in the store."""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One frozen version of a store."""

    id: int
    """Database id (creation order)."""
    name: str
    """Unique name."""
    created: float
    """When it was frozen (Unix time, s)."""
    author: str
    """Who froze it."""
    note: str
    """Free text."""
    journal_seq: int
    """The last edit of the journal it includes (0: none)."""
    n_synapses: int
    """Synapses frozen."""
    n_neurons: int
    """Neurons frozen."""
    n_assignments: int
    """Fragment -> segment rows frozen (fragments that are their own segment have none)."""


def validate_name(name: str) -> str:
    """A version name, stripped; :class:`VersionError` if it is not usable.

    Parameters
    ----------
    name : str
        The name the user gave.

    Returns
    -------
    str
        The name without surrounding whitespace.

    Raises
    ------
    VersionError
        Not a string, empty or whitespace only, longer than :data:`MAX_NAME`, with a
        control character, or one of :data:`LIVE_NAMES`.
    """
    if not isinstance(name, str):
        raise VersionError(f"a version name is text, not {type(name).__name__}")
    text = name.strip()
    if not text:
        raise VersionError("a version needs a name (not empty or only whitespace)")
    if len(text) > MAX_NAME:
        raise VersionError(f"version names are at most {MAX_NAME} characters")
    if any(not ch.isprintable() for ch in text):
        raise VersionError(f"version name {text!r} holds control characters")
    if text.lower() in LIVE_NAMES:
        raise VersionError(f"{text!r} means the live tables; choose another version name")
    return text


def _serialise(conn: Connection) -> None:
    """Take the journal's write lock (as :meth:`Journal.transaction` does), then hold writers.

    On PostgreSQL the journal's advisory lock waits for an edit being committed; ``SHARE``
    locks on the copied tables then hold every other writer (imports, status changes)
    until the copy is done, so its statements see one state, with every write committed
    before it. SQLite's ``BEGIN IMMEDIATE`` does both.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({JOURNAL_LOCK})")
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(live.name) for live, _, _ in _SNAPSHOTS)
    conn.exec_driver_sql(f"LOCK TABLE {names} IN SHARE MODE")


def _info(row: Any) -> VersionInfo:
    return VersionInfo(
        id=int(row["id"]), name=str(row["name"]), created=float(row["created"]),
        author=str(row["author"]), note=str(row["note"]), journal_seq=int(row["journal_seq"]),
        n_synapses=int(row["n_synapses"]), n_neurons=int(row["n_neurons"]),
        n_assignments=int(row["n_assignments"]),
    )  # fmt: skip


def find_version(conn: Connection, name: str) -> VersionInfo:
    """The version called ``name``; :class:`VersionNotFoundError` if there is none."""
    v = schema.versions
    row = conn.execute(select(v).where(v.c.name == str(name).strip())).mappings().first()
    if row is None:
        known = list(conn.execute(select(v.c.name).order_by(v.c.id.desc()).limit(5)).scalars())
        hint = f" (latest: {', '.join(known)})" if known else " (the store has no versions)"
        raise VersionNotFoundError(f"no version {name!r}{hint}")
    return _info(row)


def _freeze(conn: Connection, name: str, note: str, author: str) -> VersionInfo:
    """Copy the live tables into a new version (inside the serialised transaction)."""
    _serialise(conn)
    v = schema.versions
    if conn.execute(select(v.c.id).where(v.c.name == name)).first() is not None:
        raise VersionExistsError(f"a version named {name!r} exists already")
    seq = conn.execute(select(func.max(schema.edits.c.seq))).scalar() or 0
    values = {"name": name, "created": time.time(), "author": author, "note": note}
    vid = int(
        conn.execute(v.insert().values(journal_seq=int(seq), **values)).inserted_primary_key[0]
    )
    counts = {}
    for live, frozen, count in _SNAPSHOTS:
        names = [c.name for c in live.c]
        copy = frozen.insert().from_select(
            ["version", *names], select(literal(vid, Integer), *live.c)
        )
        conn.execute(copy)  # (psycopg reports no rowcount for INSERT ... SELECT)
        rows = select(func.count()).select_from(frozen).where(frozen.c.version == vid)
        counts[count] = int(conn.execute(rows).scalar_one())
    conn.execute(v.update().where(v.c.id == vid).values(**counts))
    return find_version(conn, name)


def _drop(conn: Connection, name: str) -> VersionInfo:
    """Delete a version and every row of it (the live tables are not involved)."""
    info = find_version(conn, name)
    for _, frozen, _ in _SNAPSHOTS:
        conn.execute(frozen.delete().where(frozen.c.version == info.id))
    conn.execute(schema.versions.delete().where(schema.versions.c.id == info.id))
    return info


class VersionsMixin:
    """The version API of :class:`~napari_connecto.annotations.AnnotationStore`."""

    if TYPE_CHECKING:
        where: str

        def run_write(self, action: Callable[[Connection], T]) -> T: ...  # noqa: D102
        def run_read(self, action: Callable[[Connection], T]) -> T: ...  # noqa: D102
        def synapses(self, neurons: Any = None, **kwargs: Any) -> pd.DataFrame: ...  # noqa: D102
        def neurons(self, ids: Any = None, **kwargs: Any) -> pd.DataFrame: ...  # noqa: D102

    def create_version(self, name: str, note: str = "", *, author: str = "") -> VersionInfo:
        """Freeze the synapses, neurons and assignments as they are now, under ``name``.

        Parameters
        ----------
        name : str
            A unique name (see :func:`validate_name`).
        note : str
            Free text kept with the version.
        author : str
            Who froze it.

        Returns
        -------
        VersionInfo
            The new version with its row counts and journal position.

        Raises
        ------
        VersionError
            An unusable name.
        VersionExistsError
            The name is taken.
        StoreLockedError
            The store stayed locked by another writer.
        """
        text = validate_name(name)
        try:
            return self.run_write(lambda conn: _freeze(conn, text, str(note), str(author)))
        except IntegrityError:  # another session froze the same name at the same moment
            raise VersionExistsError(f"a version named {text!r} exists already") from None

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first."""
        v = schema.versions
        rows = self.run_read(lambda c: list(c.execute(select(v).order_by(v.c.id)).mappings()))
        return [_info(r) for r in rows]

    def version(self, name: str) -> VersionInfo:
        """The version called ``name``; :class:`VersionNotFoundError` if there is none."""
        return self.run_read(lambda conn: find_version(conn, name))

    def delete_version(self, name: str) -> VersionInfo:
        """Delete a whole version (its rows were never changed); return what it was.

        Raises
        ------
        VersionNotFoundError
            No version of that name.
        """
        return self.run_write(lambda conn: _drop(conn, name))

    def synapses_at(
        self,
        version: str | None,
        neurons: int | Iterable[int] | None = None,
        *,
        pre: bool = True,
        post: bool = True,
        include_self: bool = False,
        bbox: BBox | None = None,
        status: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Synapses as they were at ``version`` (``None``: live), filtered like :meth:`synapses`.

        Parameters
        ----------
        version : str or None
            A version name, or ``None`` for the live tables.
        neurons, pre, post, include_self, bbox, status
            As for :meth:`AnnotationStore.synapses`.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`.frames.SYNAPSE_COLUMNS`, ordered by id.

        Raises
        ------
        VersionNotFoundError
            No version of that name.
        """
        filters = {"pre": pre, "post": post, "include_self": include_self, "bbox": bbox,
                   "status": status}  # fmt: skip
        if version is None:
            return self.synapses(neurons, **filters)
        table = schema.version_synapses

        def run(conn: Connection) -> pd.DataFrame:
            vid = find_version(conn, version).id
            where = and_(
                table.c.version == vid,
                queries.synapse_clause(neurons, table=table, **filters),
            )
            query = select(*(table.c[c] for c in SYNAPSE_COLUMNS)).where(where)
            rows = conn.execute(query.order_by(table.c.id)).all()
            return queries.to_frame(rows, SYNAPSE_COLUMNS)

        return self.run_read(run)

    def neurons_at(
        self, version: str | None, ids: Iterable[int] | np.ndarray | None = None
    ) -> pd.DataFrame:
        """Neurons at ``version`` (``None``: live): all by id, or ``ids`` in the order given.

        Returns
        -------
        pandas.DataFrame
            The columns of :meth:`AnnotationStore.neurons` (counts as they were frozen).

        Raises
        ------
        VersionNotFoundError
            No version of that name.
        """
        if version is None:
            return self.neurons(ids)
        table = schema.version_neurons

        def run(conn: Connection) -> pd.DataFrame:
            vid = find_version(conn, version).id
            query = select(*(table.c[c] for c in queries.NEURON_FIELDS))
            query = query.where(table.c.version == vid).order_by(table.c.id)
            return queries.to_frame(conn.execute(query).all(), queries.NEURON_FIELDS)

        frame = self.run_read(run)
        if ids is None:
            return frame
        wanted = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, np.uint64)
        frame = frame.set_index("id", drop=False)
        return frame.loc[wanted[np.isin(wanted, frame.index.to_numpy())]].reset_index(drop=True)

    def assignments_at(
        self, version: str | None, volume: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The fragment -> segment map of one segmentation at ``version`` (``None``: live).

        Parameters
        ----------
        version : str or None
            A version name, or ``None`` for the live table.
        volume : str, optional
            The segmentation's key (its source, as the proofreader names it). Needed when
            the store holds assignments of more than one segmentation.

        Returns
        -------
        fragments, segments : numpy.ndarray
            uint64 arrays sorted by fragment id; a fragment not listed is its own segment.

        Raises
        ------
        VersionNotFoundError
            No version of that name.
        AnnotationError
            ``volume`` not given and the store holds several segmentations.
        """
        table = schema.assignments if version is None else schema.version_assignments

        def run(conn: Connection) -> list[tuple[Any, ...]]:
            where = [] if version is None else [table.c.version == find_version(conn, version).id]
            if volume is None:
                names = list(conn.execute(select(table.c.volume).where(*where).distinct()))
                if len(names) > 1:
                    shown = ", ".join(sorted(str(n[0]) for n in names)[:5])
                    raise AnnotationError(
                        f"assignments of several segmentations; pick one: {shown}"
                    )
            else:
                where.append(table.c.volume == volume)
            query = select(table.c.fragment, table.c.segment).where(*where)
            return list(conn.execute(query))

        rows = self.run_read(run)
        frags = from_db(np.array([r[0] for r in rows], dtype=np.int64))
        segs = from_db(np.array([r[1] for r in rows], dtype=np.int64))
        order = np.argsort(frags, kind="stable")  # uint64 order, ready for searchsorted
        return frags[order], segs[order]

    def diff_versions(self, a: str | None, b: str | None = None) -> VersionDiff:
        """What changed from version ``a`` to ``b`` (``None``: live); see :func:`.diff_versions`."""
        from napari_connecto.annotations.version_diff import diff_versions

        return diff_versions(self, a, b)  # type: ignore[arg-type]
