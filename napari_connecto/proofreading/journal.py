"""The edit journal: every edit committed to the annotation store before it is applied.

One row per edit in ``edits``; undo and redo add a *marker* row that points at the edit
(``ref``) and flip the edit's ``state``. The journal is the undo/redo history (per author,
so it survives restarts) and the queue of voxel write-backs (``writeback = 'pending'``,
replayed in journal order until done). Conflicts are found through ``edit_keys``: an edit
fails if an edit of another session touched one of its keys after what the editor saw,
and an undo or redo fails if a later applied edit touched one of its keys; a redo also
fails if what it changes was changed since it was undone (see ``Journal._check_redo``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import Connection, func, select

from napari_connecto.annotations import schema
from napari_connecto.errors import EditConflictError, EditError
from napari_connecto.proofreading.journal_rows import insert_edit
from napari_connecto.proofreading.patches import VoxelPatch
from napari_connecto.proofreading.rows import (
    RowChange,
    apply_changes,
    neurons_touched,
    read_row,
    recount,
)

if TYPE_CHECKING:
    from napari_connecto.annotations.store import AnnotationStore

__all__ = ["EditRecord", "Journal", "JournalEntry", "segment_key", "synapse_key"]

EDIT_KINDS = frozenset(
    {"paint", "merge", "cleave", "synapse_add", "synapse_move", "synapse_delete",
     "synapse_partners", "synapse_status"}
)  # fmt: skip
"""Kinds of edits that enter the undo history (``undo``/``redo`` are markers)."""


def segment_key(volume: str, segment: int) -> str:
    """The conflict key of one segment (database id) of one volume."""
    return f"seg:{volume}:{int(segment)}"


def synapse_key(synapse: int) -> str:
    """The conflict key of one synapse (database id)."""
    return f"syn:{int(synapse)}"


@dataclass(frozen=True, slots=True)
class EditRecord:
    """What one edit does, built inside the journal's transaction."""

    kind: str
    """One of :data:`EDIT_KINDS`."""
    volume: str
    """Key of the segmentation volume ("" for synapse-only edits)."""
    summary: str
    """One line for the history list."""
    keys: frozenset[str]
    """Conflict keys (see :func:`segment_key`, :func:`synapse_key`)."""
    changes: tuple[RowChange, ...] = ()
    """Rows of the store it changes."""
    patch: VoxelPatch | None = None
    """Voxels it changes (written back to the volume afterwards)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (JSON-serialisable)."""
    remote: bool = False
    """Whether a server must be told (DVID merge/cleave): then it is written back too."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One row of the journal."""

    seq: int
    kind: str
    volume: str
    ref: int | None
    state: str
    writeback: str
    author: str
    session: str
    created: float
    summary: str
    keys: tuple[str, ...] = ()


class Journal:
    """The edit journal of one annotation store.

    Parameters
    ----------
    store : AnnotationStore
        Where edits are committed (SQLite WAL or PostgreSQL).
    author : str
        Whose history undo and redo walk.
    session : str, optional
        This editor's id (default a fresh UUID); edits of other sessions can conflict.
    """

    def __init__(self, store: AnnotationStore, author: str, session: str | None = None) -> None:
        self.store = store
        self.author = author
        self.session = session or uuid.uuid4().hex
        self.last_committed: JournalEntry | None = None
        """The row of the last edit :meth:`commit` inserted (spares a read after it)."""

    # -- transactions -------------------------------------------------------------------
    def _serialise(self, conn: Connection) -> None:
        """Take the journal's write lock first, so check-then-write cannot interleave."""
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7206119361)")

    def transaction(self, action: Callable[[Connection], Any]) -> Any:
        """Run ``action`` in one serialised write transaction (retried while locked)."""

        def run(conn: Connection) -> Any:
            self._serialise(conn)
            return action(conn)

        return self.store.run_write(run)

    # -- committing edits ---------------------------------------------------------------
    def commit(
        self,
        build: Callable[[Connection], EditRecord],
        *,
        seen: int,
        request: str | None = None,
    ) -> int:
        """Build an edit from the current store state, check it, commit it; return its seq.

        Parameters
        ----------
        build : callable
            Called inside the transaction with its connection; reads what it needs and
            returns the :class:`EditRecord` (or raises :class:`EditError`).
        seen : int
            The last journal seq this editor has taken in; an edit of another session
            after it that touched the same keys is a conflict.
        request : str, optional
            Idempotency key: committing the same request twice returns the first seq.

        Raises
        ------
        EditConflictError
            Another session edited the same segment or synapse since ``seen``.
        EditError
            The edit cannot be made.
        """
        given = request is not None
        request = request or uuid.uuid4().hex

        def run(conn: Connection) -> int:
            done = (  # a fresh UUID cannot have been committed: spare the round trip
                conn.execute(
                    select(schema.edits.c.seq).where(schema.edits.c.request == request)
                ).scalar()
                if given
                else None
            )
            if done is not None:
                return int(done)
            record = build(conn)
            if record.kind not in EDIT_KINDS:
                raise EditError(f"unknown edit kind {record.kind!r}")
            clash = self._newer_foreign(conn, record.keys, seen)
            if clash:
                raise EditConflictError(
                    f"{record.summary}: edit(s) {', '.join(map(str, clash))} by another "
                    "session changed the same objects since this view was refreshed; "
                    "nothing was changed",
                    clash,
                )
            apply_changes(conn, record.changes, "do")
            recount(conn, neurons_touched(record.changes))
            payload = {"changes": [c.to_json() for c in record.changes], **record.extra}
            seq = self._insert(
                conn,
                record.keys,
                record.patch.to_row() if record.patch is not None else None,
                discard_undone=True,  # a new edit ends the redo of what was undone
                kind=record.kind,
                volume=record.volume,
                ref=None,
                state="applied",
                writeback="pending" if record.patch is not None or record.remote else "none",
                summary=record.summary,
                payload=json.dumps(payload, allow_nan=False),
                request=request,
            )
            self.last_committed = JournalEntry(
                seq=seq, kind=record.kind, volume=record.volume, ref=None, state="applied",
                writeback="pending" if record.patch is not None or record.remote else "none",
                author=self.author, session=self.session, created=time.time(),
                summary=record.summary,
            )  # fmt: skip
            return seq

        return int(self.transaction(run))

    def _insert(
        self,
        conn: Connection,
        keys: Iterable[str],
        voxels: dict[str, Any] | None = None,
        *,
        discard_undone: bool = False,
        **values: Any,
    ) -> int:
        values.setdefault("request", uuid.uuid4().hex)
        values.setdefault("payload", "{}")
        values.update(author=self.author, session=self.session, created=time.time())
        return insert_edit(conn, values, keys, voxels, discard_undone=discard_undone)

    def _touching(self, conn: Connection, keys: Iterable[str], *conditions: Any) -> list[int]:
        """Seqs of journal rows meeting ``conditions`` that touched any of ``keys``."""
        keys = sorted(set(keys))
        e, k = schema.edits, schema.edit_keys
        found: set[int] = set()
        for i in range(0, len(keys), 500):
            query = (
                select(e.c.seq)
                .join(k, k.c.seq == e.c.seq)
                .where(k.c.key.in_(keys[i : i + 500]), *conditions)
                .distinct()
            )
            found.update(int(s) for s in conn.execute(query).scalars())
        return sorted(found)

    def _newer_foreign(self, conn: Connection, keys: Iterable[str], seen: int) -> list[int]:
        """Seqs after ``seen`` by other sessions that touched any of ``keys``."""
        e = schema.edits
        return self._touching(conn, keys, e.c.seq > seen, e.c.session != self.session)

    def _newer_applied(self, conn: Connection, seq: int, keys: Sequence[str]) -> list[int]:
        """Applied edits after ``seq`` that touched any of ``keys``."""
        e = schema.edits
        return self._touching(
            conn, keys, e.c.seq > seq, e.c.state == "applied", e.c.kind.in_(sorted(EDIT_KINDS))
        )

    def _check_redo(
        self, conn: Connection, row: Any, keys: Sequence[str], changes: Sequence[RowChange]
    ) -> None:
        """Refuse to redo an edit on a state other than the one it was made on.

        No newer applied edit may be in the way (checked by the caller), and since it
        was undone: the rows it changes must hold what they held before it (an older
        edit of someone else undone or redone meanwhile changes them), and for voxel
        edits no other author may have undone or redone an edit of the same segments.
        """
        seq = int(row["seq"])
        stale = [
            c
            for c in changes
            if c.table != "neurons" and read_row(conn, c.table, c.key) != c.before
        ]
        since = self._flipped_since_undo(conn, seq, keys)
        if stale or (since and row["writeback"] != "none"):
            raise EditConflictError(
                f"cannot redo edit {seq} ({row['summary']}): what it changed was changed "
                f"since it was undone ({len(stale)} row(s)"
                + (f"; edit(s) {', '.join(map(str, since))}" if since else "")
                + "); nothing was changed",
                since,
            )

    def _flipped_since_undo(self, conn: Connection, seq: int, keys: Sequence[str]) -> list[int]:
        """Undo/redo markers of other authors, after edit ``seq`` was undone, on its keys."""
        e = schema.edits
        undone = conn.execute(
            select(func.max(e.c.seq)).where(e.c.ref == seq, e.c.kind == "undo")
        ).scalar()
        if not keys or undone is None:
            return []
        return self._touching(
            conn, keys, e.c.seq > undone, e.c.state == "marker", e.c.author != self.author
        )

    # -- undo and redo ------------------------------------------------------------------
    def undo(self) -> int | None:
        """Undo this author's latest applied edit; return its seq (``None``: nothing to undo).

        Raises
        ------
        EditConflictError
            A later edit by someone else touched the same objects.
        """
        return self._flip("applied", "undone", "undo")

    def redo(self) -> int | None:
        """Redo this author's most recently undone edit; return its seq (``None``: none).

        Raises
        ------
        EditConflictError
            A later edit by someone else touched the same objects.
        """
        return self._flip("undone", "applied", "redo")

    def _flip(self, state: str, to: str, marker: str) -> int | None:
        e = schema.edits

        def run(conn: Connection) -> int | None:
            order = e.c.seq.desc() if marker == "undo" else e.c.seq.asc()
            row = (
                conn.execute(
                    select(e).where(e.c.author == self.author, e.c.state == state).order_by(order)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            seq = int(row["seq"])
            keys = self.keys_of(conn, seq)
            clash = self._newer_applied(conn, seq, keys)
            if clash:
                raise EditConflictError(
                    f"cannot {marker} edit {seq} ({row['summary']}): later edit(s) "
                    f"{', '.join(map(str, clash))} changed the same objects; "
                    f"{marker} those first",
                    clash,
                )
            payload = json.loads(row["payload"])
            changes = [RowChange.from_json(c) for c in payload.get("changes", [])]
            if marker == "redo":
                self._check_redo(conn, row, keys, changes)
            direction = "undo" if marker == "undo" else "do"
            apply_changes(conn, changes, direction)
            recount(conn, neurons_touched(changes))
            conn.execute(e.update().where(e.c.seq == seq).values(state=to))
            pending = row["writeback"] != "none"
            self._insert(
                conn,
                keys,
                kind=marker,
                volume=row["volume"],
                ref=seq,
                state="marker",
                writeback="pending" if pending else "none",
                summary=f"{marker} {seq}: {row['summary']}",
            )
            return seq

        return self.transaction(run)  # type: ignore[no-any-return]

    # -- reading ------------------------------------------------------------------------
    def marker_of(self, seq: int) -> JournalEntry | None:
        """The latest undo or redo marker of edit ``seq`` (``None`` if it has none)."""
        e = schema.edits
        row = self.store.run_read(
            lambda c: (
                c.execute(select(e).where(e.c.ref == seq).order_by(e.c.seq.desc()).limit(1))
                .mappings()
                .first()
            )
        )
        return None if row is None else _entry(row, ())

    def keys_of(self, conn: Connection, seq: int) -> list[str]:
        """The conflict keys of edit ``seq``."""
        k = schema.edit_keys
        return sorted(conn.execute(select(k.c.key).where(k.c.seq == seq)).scalars())

    def high_water(self) -> int:
        """The latest seq in the journal (0 when empty)."""
        e = schema.edits
        return int(
            self.store.run_read(lambda c: c.execute(select(func.max(e.c.seq))).scalar() or 0)
        )

    def entries_since(self, seq: int, *, with_keys: bool = False) -> list[JournalEntry]:
        """Journal rows after ``seq``, oldest first."""
        e = schema.edits

        def run(conn: Connection) -> list[JournalEntry]:
            rows = conn.execute(select(e).where(e.c.seq > seq).order_by(e.c.seq)).mappings()
            out = []
            for r in rows:
                keys = tuple(self.keys_of(conn, int(r["seq"]))) if with_keys else ()
                out.append(_entry(r, keys))
            return out

        return self.store.run_read(run)  # type: ignore[no-any-return]

    def entry(self, seq: int) -> JournalEntry:
        """One journal row; :class:`EditError` if there is none."""
        e = schema.edits
        row = self.store.run_read(
            lambda c: c.execute(select(e).where(e.c.seq == seq)).mappings().first()
        )
        if row is None:
            raise EditError(f"no edit {seq} in the journal")
        return _entry(row, ())

    def payload(self, seq: int) -> dict[str, Any]:
        """The JSON payload of edit ``seq``."""
        e = schema.edits
        text = self.store.run_read(
            lambda c: c.execute(select(e.c.payload).where(e.c.seq == seq)).scalar()
        )
        if text is None:
            raise EditError(f"no edit {seq} in the journal")
        return json.loads(text)  # type: ignore[no-any-return]

    def patch(self, seq: int) -> VoxelPatch | None:
        """The voxel patch of edit ``seq`` (``None`` if it changed no voxels)."""
        v = schema.edit_voxels
        row = self.store.run_read(
            lambda c: c.execute(select(v).where(v.c.seq == seq)).mappings().first()
        )
        return None if row is None else VoxelPatch.from_row(dict(row))

    def pending(self, volume: str | None = None) -> list[JournalEntry]:
        """Rows whose write-back is not done yet, oldest first."""
        e = schema.edits
        where = [e.c.writeback == "pending"]
        if volume is not None:
            where.append(e.c.volume == volume)
        rows = self.store.run_read(
            lambda c: list(c.execute(select(e).where(*where).order_by(e.c.seq)).mappings())
        )
        return [_entry(r, ()) for r in rows]

    def set_writeback(self, seq: int, state: str, error: str = "") -> None:
        """Record the write-back state of one row (``done`` or ``failed``)."""
        e = schema.edits
        self.store.run_write(
            lambda c: c.execute(
                e.update().where(e.c.seq == seq).values(writeback=state, error=error[:2000])
            )
        )

    def history(self, *, author: str | None = None, limit: int = 200) -> pd.DataFrame:
        """The latest journal rows, newest first, as a DataFrame."""
        e = schema.edits
        cols = [e.c.seq, e.c.kind, e.c.summary, e.c.state, e.c.writeback, e.c.error,
                e.c.author, e.c.created, e.c.ref, e.c.volume]  # fmt: skip
        query = select(*cols).order_by(e.c.seq.desc()).limit(limit)
        if author is not None:
            query = query.where(e.c.author == author)
        rows = self.store.run_read(lambda c: c.execute(query).fetchall())
        return pd.DataFrame(rows, columns=[c.name for c in cols])


def _entry(row: Any, keys: tuple[str, ...]) -> JournalEntry:
    return JournalEntry(
        seq=int(row["seq"]),
        kind=str(row["kind"]),
        volume=str(row["volume"]),
        ref=None if row["ref"] is None else int(row["ref"]),
        state=str(row["state"]),
        writeback=str(row["writeback"]),
        author=str(row["author"]),
        session=str(row["session"]),
        created=float(row["created"]),
        summary=str(row["summary"]),
        keys=keys,
    )
