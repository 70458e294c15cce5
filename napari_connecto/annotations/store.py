"""The annotation store: neurons, synapses and bookmarks in SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, func, select
from sqlalchemy.exc import DBAPIError

from napari_connecto.annotations import queries, schema
from napari_connecto.annotations.bulk import REBUILD_ROWS, rows_where_in
from napari_connecto.annotations.engine import make_engine, retry_locked
from napari_connecto.annotations.filters import parse_filter, to_sql
from napari_connecto.annotations.frames import SYNAPSE_STATUSES, ImportBatch
from napari_connecto.annotations.ids import from_db_one, to_db, to_db_one
from napari_connecto.annotations.locks import store_lock
from napari_connecto.annotations.merge import ImportSummary, import_batch
from napari_connecto.annotations.user_data import UserDataMixin
from napari_connecto.annotations.versions import VersionsMixin
from napari_connecto.errors import AnnotationError
from napari_connecto.geometry import BBox, Vec3

__all__ = ["NEURON_FILTER_COLUMNS", "AnnotationStore", "ReviewProgress"]

T = TypeVar("T")

NEURON_FILTER_COLUMNS = {
    "id": "id", "name": "text", "type": "text", "status": "text", "notes": "text",
    "n_pre": "number", "n_post": "number", "z": "number", "y": "number", "x": "number",
}  # fmt: skip
"""Columns the neuron filter language knows, and their kinds."""


@dataclass(frozen=True, slots=True)
class ReviewProgress:
    """How many synapses are reviewed."""

    total: int
    """Synapses counted."""
    verified: int
    """Marked verified."""
    rejected: int
    """Marked rejected."""

    @property
    def reviewed(self) -> int:
        """Verified or rejected."""
        return self.verified + self.rejected

    @property
    def fraction(self) -> float:
        """Reviewed share, 0..1 (1 when there is nothing to review)."""
        return self.reviewed / self.total if self.total else 1.0


class AnnotationStore(UserDataMixin, VersionsMixin):
    """Neurons, synapses and bookmarks of one dataset, in SQLite (default) or PostgreSQL.

    Ids are uint64 end to end. Positions are z, y, x in nm. Every write is one
    transaction; a locked SQLite file is retried, then :class:`StoreLockedError`.
    Named, immutable versions: :class:`.versions.VersionsMixin`.

    Parameters
    ----------
    target : str or os.PathLike
        A SQLite file path (created if missing) or a ``postgresql://`` URL.
    create : bool
        Whether a missing SQLite file may be created.

    Examples
    --------
    >>> with AnnotationStore.open("synapses.db") as store:  # doctest: +SKIP
    ...     store.synapses(123456789, post=False)  # outputs of one neuron
    """

    def __init__(self, target: str | os.PathLike[str], *, create: bool = True) -> None:
        self._engine: Engine = make_engine(target, create=create)
        # reads run in autocommit: one round trip per query, no BEGIN/ROLLBACK around it
        self._reader: Engine = make_engine(target, create=create, autocommit=True)
        self.where = self._engine.url.render_as_string(hide_password=True)
        self._write(lambda conn: schema.ensure_schema(conn, where=self.where))

    @classmethod
    def open(cls, target: str | os.PathLike[str], *, create: bool = True) -> AnnotationStore:
        """Open (or create) a store; see the class docstring."""
        return cls(target, create=create)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Release every connection."""
        self._engine.dispose()
        self._reader.dispose()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AnnotationStore({self.where!r})"

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A lock named ``name`` shared by every process on this store (crash-released)."""
        return store_lock(self._engine, name)

    # -- plumbing ---------------------------------------------------------------------
    def _write(self, action: Callable[[Connection], T]) -> T:
        """Run ``action`` in one transaction, retried while the database is locked."""

        def attempt() -> T:
            with self._engine.begin() as conn:
                return action(conn)

        return retry_locked(attempt, where=self.where)

    def _read(self, action: Callable[[Connection], T]) -> T:
        """Run a read-only ``action``; a connection the server dropped is retried once."""

        def attempt() -> T:
            for tries_left in (1, 0):
                try:
                    with self._reader.connect() as conn:
                        return action(conn)
                except DBAPIError as exc:
                    if not (exc.connection_invalidated and tries_left):
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

        return retry_locked(attempt, where=self.where)

    def run_write(self, action: Callable[[Connection], T]) -> T:
        """Run ``action(connection)`` in one write transaction, retried while locked.

        For modules that keep their own tables in the store (the edit journal).
        """
        return self._write(action)

    def run_read(self, action: Callable[[Connection], T]) -> T:
        """Run a read-only ``action(connection)`` outside a write transaction."""
        return self._read(action)

    # -- import -----------------------------------------------------------------------
    def import_batch(self, batch: ImportBatch) -> ImportSummary:
        """Import neurons and synapses, all or nothing (see :mod:`.merge` for the rules).

        Parameters
        ----------
        batch : ImportBatch
            What an importer read.

        Returns
        -------
        ImportSummary
            What was added, filled and recognised.

        Raises
        ------
        ConflictError
            Ids stored (or repeated) with different contents; nothing is imported.
        ImportFormatError
            Rows that do not validate; nothing is imported.
        StoreLockedError
            The database stayed locked.
        """
        summary = self._write(lambda conn: import_batch(conn, batch))
        if self.dialect == "postgresql" and (
            summary.synapses_added + summary.neurons_added >= REBUILD_ROWS
        ):
            # index-only scans need the visibility map that only VACUUM writes; without it
            # the neuron table's id order costs a heap fetch per neuron until autovacuum runs
            with self._reader.connect() as conn:
                conn.exec_driver_sql("VACUUM (ANALYZE) neurons, synapses")
        return summary

    def add_neurons(self, frame: pd.DataFrame, *, source: str = "neurons") -> ImportSummary:
        """Import a neuron frame (see :func:`.frames.normalize_neurons`)."""
        return self.import_batch(ImportBatch(source, neurons=frame))

    def add_synapses(self, frame: pd.DataFrame, *, source: str = "synapses") -> ImportSummary:
        """Import a synapse frame (see :func:`.frames.normalize_synapses`)."""
        return self.import_batch(ImportBatch(source, synapses=frame))

    # -- synapse queries ----------------------------------------------------------------
    def synapses(
        self,
        neurons: int | Iterable[int] | None = None,
        *,
        pre: bool = True,
        post: bool = True,
        include_self: bool = False,
        bbox: BBox | None = None,
        status: str | Sequence[str] | None = None,
        start: int | None = None,
        stop: int | None = None,
    ) -> pd.DataFrame:
        """Synapses of one or many neurons (or all), like CAVE's ``query_synapses``.

        Parameters
        ----------
        neurons : int or iterable of int, optional
            Neuron ids; ``None`` for every synapse.
        pre, post : bool
            Include synapses where the neurons are presynaptic / postsynaptic.
        include_self : bool
            Keep synapses from a neuron onto itself (dropped by default).
        bbox : BBox, optional
            Only synapses whose centre is inside (nm).
        status : str or sequence of str, optional
            Only these review states.
        start, stop : int, optional
            Rows ``start:stop`` of the id-ordered result (paging).

        Returns
        -------
        pandas.DataFrame
            One row per synapse, columns :data:`.frames.SYNAPSE_COLUMNS` (uint64 ids,
            positions in nm split into z/y/x columns), ordered by id.
        """
        where = queries.synapse_clause(
            neurons, pre=pre, post=post, include_self=include_self, bbox=bbox, status=status
        )
        paged = start is not None or stop is not None
        sort_in_sql = bbox is None or paged  # see queries.synapses_frame
        return self._read(
            lambda conn: queries.synapses_frame(
                conn, where, start=start, stop=stop, sort_in_sql=sort_in_sql
            )
        )

    def synapses_of(
        self, neuron: int, *, pre: bool = True, post: bool = True, include_self: bool = False
    ) -> pd.DataFrame:
        """Synapses of one neuron with ``direction`` (``"out"``/``"in"``) and ``partner``.

        Returns
        -------
        pandas.DataFrame
            :meth:`synapses` columns plus ``direction`` and ``partner``.
        """
        frame = self.synapses(neuron, pre=pre, post=post, include_self=include_self)
        outgoing = frame["pre_id"].to_numpy() == np.uint64(neuron)
        frame.insert(1, "direction", np.where(outgoing, "out", "in"))
        frame.insert(2, "partner", np.where(outgoing, frame["post_id"], frame["pre_id"]))
        frame["partner"] = frame["partner"].astype(np.uint64)
        return frame

    def synapses_in_box(self, bbox: BBox, *, limit: int | None = None) -> pd.DataFrame:
        """Synapses whose centre lies in ``bbox`` (nm), self-synapses too, ordered by id.

        Parameters
        ----------
        bbox : BBox
            The box in nm.
        limit : int, optional
            At most this many (which ones, when there are more, is unspecified).

        Returns
        -------
        pandas.DataFrame
            :meth:`synapses` columns.
        """
        where = queries.synapse_clause(None, include_self=True, bbox=bbox)
        return self._read(
            lambda conn: queries.synapses_frame(conn, where, stop=limit, sort_in_sql=False)
        )

    def synapse(self, synapse_id: int) -> pd.Series:
        """One synapse as a row; :class:`KeyError` if there is none."""
        table = schema.synapses
        where = table.c.id == to_db_one(synapse_id)
        frame = self._read(lambda conn: queries.synapses_frame(conn, where))
        if frame.empty:
            raise KeyError(f"no synapse {synapse_id} in {self.where}")
        return frame.iloc[0]

    def synapse_neurons(self, synapse_id: int) -> tuple[int, int]:
        """``(pre_id, post_id)`` of a synapse."""
        row = self.synapse(synapse_id)
        return int(row["pre_id"]), int(row["post_id"])

    def synapse_location(self, synapse_id: int) -> Vec3:
        """Centre of a synapse in nm."""
        row = self.synapse(synapse_id)
        return Vec3(float(row["z"]), float(row["y"]), float(row["x"]))

    def count_synapses(self, neurons: int | Iterable[int] | None = None, **kwargs: Any) -> int:
        """How many synapses :meth:`synapses` would return with the same arguments."""
        where = queries.synapse_clause(neurons, **kwargs)
        table = schema.synapses
        return int(
            self._read(
                lambda c: c.execute(select(func.count()).select_from(table).where(where)).scalar()
            )
        )

    def partners(self, neuron: int, *, include_self: bool = False) -> pd.DataFrame:
        """Connectivity of ``neuron``, most connected partner first.

        Returns
        -------
        pandas.DataFrame
            ``partner``, ``outgoing`` (neuron -> partner), ``incoming``, ``total``,
            and the partner's ``name`` and ``type``.
        """
        return self._read(lambda conn: queries.partners(conn, neuron, include_self=include_self))

    def review_progress(self, neurons: int | Iterable[int] | None = None) -> ReviewProgress:
        """Review state of the synapses of ``neurons`` (default: all synapses)."""
        where = queries.synapse_clause(neurons, include_self=True)
        counts = self._read(lambda conn: queries.review_counts(conn, where))
        return ReviewProgress(sum(counts.values()), counts["verified"], counts["rejected"])

    def has_synapses(self, ids: Iterable[int]) -> np.ndarray:
        """Whether each synapse id exists (bool array in the given order)."""
        return self._exist(schema.synapses, ids)

    # -- neuron queries ---------------------------------------------------------------
    def neuron_ids(
        self, filter_text: str = "", *, order_by: str = "id", descending: bool = False
    ) -> np.ndarray:
        """Ids (uint64) of neurons matching ``filter_text``, sorted by ``order_by``.

        Parameters
        ----------
        filter_text : str
            The filter language of :mod:`.filters` over :data:`NEURON_FILTER_COLUMNS`.
        order_by : str
            A neuron column (``id``, ``name``, ``type``, ``status``, ``n_pre``, ...).
        descending : bool
            Largest first.

        Returns
        -------
        numpy.ndarray
            uint64 ids; ties are ordered by id.

        Raises
        ------
        FilterError
            A filter that does not parse.
        """
        if order_by not in queries.NEURON_FIELDS:
            raise AnnotationError(f"cannot sort neurons by {order_by!r}")
        where = self._neuron_where(filter_text)
        return self._read(
            lambda conn: queries.neuron_ids(conn, where, order_by=order_by, descending=descending)
        )

    def neurons(
        self,
        ids: Iterable[int] | np.ndarray | None = None,
        *,
        filter_text: str = "",
        start: int | None = None,
        stop: int | None = None,
    ) -> pd.DataFrame:
        """Neurons by id (in the order given, missing ones left out) or all, by id.

        Returns
        -------
        pandas.DataFrame
            Columns ``id``, ``name``, ``type``, ``status``, ``notes``, ``z``, ``y``, ``x``
            (keypoint in nm, NaN if unknown), ``n_pre``, ``n_post``.
        """
        where = self._neuron_where(filter_text)
        wanted = None if ids is None else np.asarray(_as_ids(ids), dtype=np.uint64)
        return self._read(
            lambda conn: queries.neurons_frame(conn, wanted, where=where, start=start, stop=stop)
        )

    def count_neurons(self, filter_text: str = "") -> int:
        """How many neurons match ``filter_text``."""
        where = self._neuron_where(filter_text)
        query = select(func.count()).select_from(schema.neurons)
        if where is not None:
            query = query.where(where)
        return int(self._read(lambda conn: conn.execute(query).scalar()))

    def neuron(self, neuron_id: int) -> pd.Series:
        """One neuron as a row; :class:`KeyError` if there is none."""
        frame = self.neurons([neuron_id])
        if frame.empty:
            raise KeyError(f"no neuron {neuron_id} in {self.where}")
        return frame.iloc[0]

    def neuron_keypoint(self, neuron_id: int) -> Vec3 | None:
        """A neuron's keypoint in nm, ``None`` if it has none."""
        row = self.neuron(neuron_id)
        values = (row["z"], row["y"], row["x"])
        return None if any(np.isnan(v) for v in values) else Vec3(*map(float, values))

    def has_neurons(self, ids: Iterable[int]) -> np.ndarray:
        """Whether each neuron id exists (bool array in the given order)."""
        return self._exist(schema.neurons, ids)

    def _neuron_where(self, filter_text: str):  # type: ignore[no-untyped-def]
        if not filter_text.strip():
            return None
        terms = parse_filter(filter_text, NEURON_FILTER_COLUMNS)
        return to_sql(terms, schema.neurons, NEURON_FILTER_COLUMNS)

    def _exist(self, table, ids: Iterable[int]) -> np.ndarray:  # type: ignore[no-untyped-def]
        wanted = np.asarray(_as_ids(ids), dtype=np.uint64)
        rows = self._read(lambda conn: rows_where_in(conn, [table.c.id], table.c.id, to_db(wanted)))
        found = np.array([from_db_one(r[0]) for r in rows], dtype=np.uint64)
        return np.isin(wanted, found)

    # -- edits ------------------------------------------------------------------------
    def set_synapse_status(self, ids: int | Iterable[int], status: str, reviewer: str = "") -> int:
        """Mark synapses ``verified``, ``rejected`` or ``unreviewed``; return how many changed.

        Raises
        ------
        ValueError
            An unknown status.
        """
        if status not in SYNAPSE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(SYNAPSE_STATUSES)}, not {status!r}")
        stored = queries.stored_ids(ids)
        table = schema.synapses
        statement = (
            table.update()
            .where(table.c.id.in_(bindparam("ids", expanding=True)))
            .values(status=status, reviewer=reviewer, updated=time.time())
        )
        return int(self._write(lambda conn: conn.execute(statement, {"ids": stored}).rowcount))

    def update_neuron(self, neuron_id: int, **fields: str) -> None:
        """Set ``name``, ``type``, ``status`` or ``notes`` of a stored neuron.

        Raises
        ------
        KeyError
            No such neuron.
        ValueError
            A field that is not editable text.
        """
        unknown = set(fields) - {"name", "type", "status", "notes"}
        if unknown:
            raise ValueError(f"cannot set {', '.join(sorted(unknown))} on a neuron")
        table = schema.neurons
        statement = table.update().where(table.c.id == to_db_one(neuron_id)).values(**fields)
        if self._write(lambda conn: conn.execute(statement).rowcount) == 0:
            raise KeyError(f"no neuron {neuron_id} in {self.where}")

    def set_keypoints(self, ids: Iterable[int], positions_nm: np.ndarray) -> int:
        """Set neurons' keypoints (``(N, 3)`` z, y, x nm); return how many neurons exist."""
        stored = queries.stored_ids(list(ids))
        positions = np.asarray(positions_nm, dtype=np.float64).reshape(-1, 3)
        if len(stored) != len(positions):
            raise ValueError("one keypoint per id is needed")
        table = schema.neurons
        statement = (
            table.update()
            .where(table.c.id == bindparam("b_id"))
            .values(z=bindparam("b_z"), y=bindparam("b_y"), x=bindparam("b_x"))
        )
        rows = [
            {"b_id": i, "b_z": p[0], "b_y": p[1], "b_x": p[2]}
            for i, p in zip(stored, positions.tolist(), strict=True)
        ]
        if not rows:
            return 0
        return int(self._write(lambda conn: conn.execute(statement, rows).rowcount))


def _as_ids(ids: Iterable[int] | np.ndarray | int) -> list[int] | np.ndarray:
    if isinstance(ids, int | np.integer):
        return [int(ids)]
    if isinstance(ids, np.ndarray):
        return ids
    return [int(i) for i in ids]
