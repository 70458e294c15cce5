"""Read queries of the annotation store, each returning a DataFrame (positions in nm).

They follow the seeds' synapse/neuron database API and CAVE's ``query_synapses``:
synapses of neurons as pre, post or both with self-synapses dropped by default,
partners with counts each way, synapses in a box, keypoints, paging by start/stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    and_,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)

from napari_connecto.annotations import schema
from napari_connecto.annotations.bulk import rows_where_in
from napari_connecto.annotations.frames import NEURON_COLUMNS, SYNAPSE_COLUMNS
from napari_connecto.annotations.ids import from_db, to_db
from napari_connecto.annotations.spatial import cell_ids
from napari_connecto.geometry import BBox

__all__ = [
    "NEURON_FIELDS",
    "neuron_ids",
    "neurons_frame",
    "partners",
    "review_counts",
    "stored_ids",
    "synapse_clause",
    "synapses_frame",
]

NEURON_FIELDS = (*NEURON_COLUMNS, "n_pre", "n_post")
"""Columns of the neuron frames the store returns."""
_ID_COLUMNS = frozenset({"id", "pre_id", "post_id"})
_FLOAT_COLUMNS = frozenset(
    c for c in (*SYNAPSE_COLUMNS, *NEURON_FIELDS) if c in {"z", "y", "x", "confidence",
    "created", "updated"} or (c.startswith(("pre_", "post_")) and not c.endswith("_id"))
)  # fmt: skip


def to_frame(rows: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
    """Rows as a DataFrame: ids uint64, locations float64 (NULL -> NaN)."""
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    data: dict[str, Any] = {}
    for name, column in zip(columns, values, strict=True):
        if name in _ID_COLUMNS:
            data[name] = from_db(np.fromiter(column, dtype=np.int64, count=len(column)))
        elif name in _FLOAT_COLUMNS:
            data[name] = np.array([np.nan if v is None else v for v in column], dtype=np.float64)
        elif name in ("n_pre", "n_post"):
            data[name] = np.fromiter(column, dtype=np.int64, count=len(column))
        else:
            data[name] = np.array(column, dtype=object)
    return pd.DataFrame(data, columns=list(columns))


def stored_ids(values: int | Iterable[int] | np.ndarray) -> list[int]:
    """User ids (one or many) -> stored int64 values."""
    if isinstance(values, int | np.integer):
        values = [int(values)]
    arr = (
        values
        if isinstance(values, np.ndarray)
        else np.array([int(v) for v in values], dtype=np.uint64)
    )
    return to_db(arr.astype(np.uint64)).tolist()


def box_clause(box: BBox, table: Table | None = None) -> ColumnElement[bool]:
    """Synapses whose centre lies in ``box`` (cell ranges for the index, then exact bounds).

    ``table``: any table with the synapse columns (default the live ``synapses``).
    """
    table = schema.synapses if table is None else table
    exact = and_(
        *(getattr(table.c, axis) >= lo for axis, lo in zip("zyx", box.start, strict=True)),
        *(getattr(table.c, axis) < hi for axis, hi in zip("zyx", box.stop, strict=True)),
    )
    cells = cell_ids(box)
    if cells is None:
        return exact
    if not cells:
        return false()
    return and_(table.c.cell.in_(cells), exact)


def synapse_clause(
    neurons: int | Iterable[int] | None = None,
    *,
    pre: bool = True,
    post: bool = True,
    include_self: bool = False,
    bbox: BBox | None = None,
    status: str | Sequence[str] | None = None,
    table: Table | None = None,
) -> ColumnElement[bool]:
    """The WHERE clause of a synapse query (see :meth:`AnnotationStore.synapses`).

    ``table``: any table with the synapse columns (default the live ``synapses``; a
    version's frozen rows use the same clause).
    """
    table = schema.synapses if table is None else table
    clauses: list[ColumnElement[bool]] = []
    if neurons is not None:
        ids = stored_ids(neurons)
        sides = []
        if pre:
            sides.append(table.c.pre_id.in_(ids))
        if post:
            sides.append(table.c.post_id.in_(ids))
        clauses.append(or_(*sides) if sides else false())
    if not include_self:
        clauses.append(table.c.pre_id != table.c.post_id)
    if bbox is not None:
        clauses.append(box_clause(bbox, table))
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        clauses.append(table.c.status.in_(wanted))
    return and_(true(), *clauses)


def _page(query: Select[Any], start: int | None, stop: int | None) -> Select[Any]:
    if start:
        query = query.offset(int(start))
    if stop is not None:
        query = query.limit(max(0, int(stop) - int(start or 0)))
    return query


def synapses_frame(
    conn: Connection,
    where: ColumnElement[bool],
    *,
    start: int | None = None,
    stop: int | None = None,
    columns: Sequence[str] = SYNAPSE_COLUMNS,
    sort_in_sql: bool = True,
) -> pd.DataFrame:
    """Synapses matching ``where``, ordered by id, rows ``start:stop``.

    With ``sort_in_sql=False`` the database returns the (first ``stop``) matching rows
    in any order and they are sorted here: for box queries, where SQLite would rather
    scan the whole table in id order than sort a few hundred rows from the cell index.
    """
    table = schema.synapses
    query = select(*(table.c[c] for c in columns)).where(where)
    if sort_in_sql:
        query = query.order_by(table.c.id)
    frame = to_frame(conn.execute(_page(query, start, stop)).all(), columns)
    if not sort_in_sql and len(frame) > 1:
        frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    return frame


def neuron_ids(
    conn: Connection,
    where: ColumnElement[bool] | None = None,
    *,
    order_by: str = "id",
    descending: bool = False,
) -> np.ndarray:
    """Ids (uint64) of the neurons matching ``where``, in display order.

    Ties are ordered by id in the same direction, so the ``(column, id)`` index yields
    the order without a sort.
    """
    table = schema.neurons
    key = table.c[order_by]
    order = [key.desc() if descending else key]
    if order_by != "id":
        order.append(table.c.id.desc() if descending else table.c.id)
    query = select(table.c.id).order_by(*order)
    if where is not None:
        query = query.where(where)
    sql, params = _compiled(conn, query)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:  # the DBAPI cursor directly: SQLAlchemy's Row objects cost ~1 s per million
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return from_db(np.array([row[0] for row in rows], dtype=np.int64))


def _compiled(conn: Connection, query: Select[Any]) -> tuple[str, Any]:
    """A statement as driver SQL + parameters (skips SQLAlchemy's per-row processing)."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if conn.dialect.paramstyle in ("qmark", "numeric"):
        return str(compiled), tuple(params[name] for name in compiled.positiontup or ())
    return str(compiled), params


def neurons_frame(
    conn: Connection,
    ids: np.ndarray | None = None,
    *,
    where: ColumnElement[bool] | None = None,
    start: int | None = None,
    stop: int | None = None,
) -> pd.DataFrame:
    """Neurons by id (in the order given), or all matching ``where`` by id."""
    table = schema.neurons
    columns = [table.c[c] for c in NEURON_FIELDS]
    if ids is None:
        query = select(*columns).order_by(table.c.id)
        if where is not None:
            query = query.where(where)
        return to_frame(conn.execute(_page(query, start, stop)).all(), NEURON_FIELDS)
    wanted = np.asarray(ids, dtype=np.uint64)
    frame = to_frame(rows_where_in(conn, columns, table.c.id, to_db(wanted)), NEURON_FIELDS)
    if frame.empty:
        return frame
    frame = frame.set_index("id", drop=False)
    present = wanted[np.isin(wanted, frame.index.to_numpy())]
    return frame.loc[present].reset_index(drop=True)


def partners(conn: Connection, neuron: int, *, include_self: bool = False) -> pd.DataFrame:
    """Partners of ``neuron`` with synapse counts each way, most connected first.

    Columns ``partner`` (uint64), ``outgoing`` (synapses neuron -> partner), ``incoming``
    (partner -> neuron), ``total``, ``name`` and ``type`` of the partner.
    """
    table, neurons = schema.synapses, schema.neurons
    (me,) = stored_ids(neuron)
    sides = union_all(
        select(table.c.post_id.label("partner"), literal(1).label("outgoing"),
               literal(0).label("incoming")).where(table.c.pre_id == me),
        select(table.c.pre_id, literal(0), literal(1)).where(table.c.post_id == me),
    ).subquery()  # fmt: skip
    outgoing, incoming = func.sum(sides.c.outgoing), func.sum(sides.c.incoming)
    query = (
        select(sides.c.partner, outgoing, incoming, neurons.c.name, neurons.c.type)
        .select_from(sides.outerjoin(neurons, neurons.c.id == sides.c.partner))
        .group_by(sides.c.partner, neurons.c.name, neurons.c.type)
        .order_by((outgoing + incoming).desc(), sides.c.partner)
    )
    if not include_self:
        query = query.where(sides.c.partner != me)
    rows = conn.execute(query).all()
    columns = list(zip(*rows, strict=True)) if rows else [()] * 5
    out = np.array(columns[1], dtype=np.int64)
    inc = np.array(columns[2], dtype=np.int64)
    return pd.DataFrame(
        {
            "partner": from_db(np.array(columns[0], dtype=np.int64)),
            "outgoing": out,
            "incoming": inc,
            "total": out + inc,
            "name": np.array(["" if v is None else v for v in columns[3]], dtype=object),
            "type": np.array(["" if v is None else v for v in columns[4]], dtype=object),
        }
    )


def review_counts(conn: Connection, where: ColumnElement[bool]) -> dict[str, int]:
    """Synapses matching ``where`` per review status (every status present, maybe 0)."""
    table = schema.synapses
    query = select(table.c.status, func.count()).where(where).group_by(table.c.status)
    counts = {"unreviewed": 0, "verified": 0, "rejected": 0}
    for status, count in conn.execute(query):
        counts[str(status)] = int(count)
    return counts
