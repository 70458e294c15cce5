"""Row-level changes to the annotation store, recorded whole so undo restores them exactly.

An edit of synapses, neurons or assignments is a list of :class:`RowChange`: the row as
it was and as it becomes (``None`` for absent). Doing an edit writes every ``after``,
undoing it every ``before``; neuron synapse counts are recounted afterwards, so they
always agree with the synapse table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, func, or_, select

from napari_connecto.annotations import schema
from napari_connecto.errors import EditError

__all__ = ["TABLES", "RowChange", "apply_changes", "neurons_touched", "read_row", "recount"]

TABLES: dict[str, Table] = {
    "synapses": schema.synapses,
    "neurons": schema.neurons,
    "assignments": schema.assignments,
}
"""Tables an edit may change, by name."""

_COUNTS = ("n_pre", "n_post")


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row of one table, before and after an edit (database values)."""

    table: str
    """``"synapses"``, ``"neurons"`` or ``"assignments"``."""
    key: tuple[Any, ...]
    """Primary key values, in the table's primary key order."""
    before: dict[str, Any] | None
    """The row before (``None``: it did not exist)."""
    after: dict[str, Any] | None
    """The row after (``None``: it is deleted)."""

    def to_json(self) -> list[Any]:
        """A JSON-ready list."""
        return [self.table, list(self.key), self.before, self.after]

    @classmethod
    def from_json(cls, item: Sequence[Any]) -> RowChange:
        """Rebuild from :meth:`to_json` output."""
        table, key, before, after = item
        if table not in TABLES:
            raise EditError(f"journal names an unknown table {table!r}")
        return cls(str(table), tuple(key), before, after)

    def state(self, direction: str) -> dict[str, Any] | None:
        """The row after doing (``"do"``) or undoing (``"undo"``) the edit."""
        return self.after if direction == "do" else self.before


def _where(table: Table, key: Sequence[Any]) -> Any:
    cols = list(table.primary_key.columns)
    return and_(*(c == v for c, v in zip(cols, key, strict=True)))


def read_row(conn: Connection, table_name: str, key: Sequence[Any]) -> dict[str, Any] | None:
    """The current row with primary key ``key`` (database values), or ``None``."""
    table = TABLES[table_name]
    row = conn.execute(select(table).where(_where(table, key))).mappings().first()
    if row is None:
        return None
    out = dict(row)
    if table is schema.neurons:
        for name in _COUNTS:
            out.pop(name, None)
    return out


def apply_changes(conn: Connection, changes: Sequence[RowChange], direction: str) -> None:
    """Write each change's row state for ``direction`` (``"do"`` or ``"undo"``).

    Undo walks the changes backwards. Neuron rows are only ever *added* by edits (a bare
    row for a new synapse partner), so a neuron row is inserted only if missing and
    deleted only while no synapse names it: every synapse keeps its neurons' rows, and
    a name given to the neuron meanwhile is kept.
    """
    ordered = list(changes) if direction == "do" else list(reversed(changes))
    start = 0
    while start < len(ordered):
        change = ordered[start]
        if change.table == "neurons":
            _apply_neuron(conn, change.key, change.state(direction))
            start += 1
            continue
        # a run of changes to one table, each key once: two batched statements
        stop, seen = start, set()
        while (
            stop < len(ordered)
            and ordered[stop].table == change.table
            and ordered[stop].key not in seen
        ):
            seen.add(ordered[stop].key)
            stop += 1
        _apply_run(conn, TABLES[change.table], ordered[start:stop], direction)
        start = stop


def _apply_run(conn: Connection, table: Table, run: Sequence[RowChange], direction: str) -> None:
    """Delete the rows of ``run`` that go, upsert those that stay (one statement each).

    A row that changes is written in one ``INSERT ... ON CONFLICT DO UPDATE`` of every
    column, so a synapse edit costs one round trip to the server, not a delete and an
    insert.
    """
    cols = list(table.primary_key.columns)
    names = [f"k_{c.name}" for c in cols]
    gone = [
        dict(zip(names, change.key, strict=True))
        for change in run
        if change.state(direction) is None
    ]
    if gone:
        where = and_(*(c == bindparam(n) for c, n in zip(cols, names, strict=True)))
        conn.execute(table.delete().where(where), gone)
    rows = [row for change in run if (row := change.state(direction)) is not None]
    if rows:
        conn.execute(_upsert(conn, table, rows[0].keys()), rows)


def _upsert(conn: Connection, table: Table, columns: Iterable[str]) -> Any:
    """``INSERT ... ON CONFLICT (primary key) DO UPDATE`` of ``columns`` in the dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    update = {c: stmt.excluded[c] for c in columns if c not in keys}
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=keys)
    return stmt.on_conflict_do_update(index_elements=keys, set_=update)


def _apply_neuron(conn: Connection, key: Sequence[Any], row: dict[str, Any] | None) -> None:
    """Insert a neuron row if missing, or delete it if no synapse names it."""
    neu, syn = schema.neurons, schema.synapses
    if row is not None:  # one statement: insert unless the row is there
        conn.execute(_insert_missing(conn, neu).values(**row))
        return
    nid = key[0]
    named = select(syn.c.id).where(or_(syn.c.pre_id == nid, syn.c.post_id == nid)).exists()
    conn.execute(neu.delete().where(_where(neu, key), ~named))


def _insert_missing(conn: Connection, table: Table) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def neurons_touched(changes: Iterable[RowChange]) -> set[int]:
    """Database ids of neurons whose synapse counts the changes can alter.

    A synapse that stays between the same partners (a new status, a moved site)
    changes no count.
    """
    ids: set[int] = set()
    for change in changes:
        if change.table != "synapses":
            continue
        b, a = change.before, change.after
        if b is not None and a is not None and _partners(b) == _partners(a):
            continue
        for row in (b, a):
            if row is not None:
                ids.update((int(row["pre_id"]), int(row["post_id"])))
    return ids


def _partners(row: dict[str, Any]) -> tuple[int, int]:
    """A synapse row's ``(pre_id, post_id)``."""
    return int(row["pre_id"]), int(row["post_id"])


def recount(conn: Connection, neuron_ids: Iterable[int]) -> None:
    """Set ``n_pre``/``n_post`` of these neurons (database ids) from the synapse table.

    One statement with correlated counts (each an index lookup), so a synapse edit pays
    one round trip to the server for its recount, not three per neuron.
    """
    ids = sorted({int(n) for n in neuron_ids})
    if not ids:
        return
    syn, neu = schema.synapses, schema.neurons
    count = select(func.count()).select_from(syn)
    conn.execute(
        neu.update()
        .where(neu.c.id.in_(ids))
        .values(
            n_pre=count.where(syn.c.pre_id == neu.c.id).scalar_subquery(),
            n_post=count.where(syn.c.post_id == neu.c.id).scalar_subquery(),
        )
    )
