"""Fast row transfer between DataFrames and the store's tables (both dialects)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Column, ColumnElement, Connection, Row, Table, func, select

from napari_connecto.annotations.ids import to_db
from napari_connecto.annotations.schema import indexes_of

__all__ = ["analyze", "fetch_by_ids", "insert_frame", "rows_where_in"]

CHUNK_ROWS = 200_000
"""Rows per executemany / COPY chunk (bounds the memory of a large import)."""
IN_CHUNK = 5_000
REBUILD_ROWS = 50_000
"""Batches from this size up may rebuild the table's indexes instead of updating them,
and refresh the planner statistics."""
SQLITE_ANALYSIS_ROWS = 2000
"""Rows SQLite's ANALYZE samples per index (approximate statistics, fast on any size)."""
"""Ids per ``IN (...)`` list (SQLite allows 32766 parameters)."""


def _chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]


def insert_frame(conn: Connection, table: Table, frame: pd.DataFrame) -> None:
    """Insert every row of ``frame`` (columns named as the table's, ids already int64).

    SQLite gets one ``executemany`` per chunk (NaN binds as NULL); PostgreSQL gets
    ``COPY ... FROM STDIN`` in CSV, all inside the caller's transaction. A batch at least
    as large as the table (and :data:`REBUILD_ROWS`) is inserted with the secondary
    indexes dropped and rebuilt afterwards, in the same transaction: building an index
    by sorting once is ~5x faster than updating it row by row.

    Parameters
    ----------
    conn : sqlalchemy.Connection
        A connection inside a transaction.
    table : sqlalchemy.Table
        Target table.
    frame : pandas.DataFrame
        Rows to insert; its columns must all exist in ``table``.
    """
    if frame.empty:
        return
    rebuild = len(frame) >= REBUILD_ROWS and len(frame) >= _row_count(conn, table)
    indexes = indexes_of(table, conn.dialect.name) if rebuild else []
    for index in indexes:
        index.drop(conn)
    _insert(conn, table, frame)
    for index in indexes:
        index.create(conn)


def analyze(conn: Connection, tables: Sequence[Table]) -> None:
    """Refresh the planner's statistics after a big import (both databases plan by them)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA analysis_limit={SQLITE_ANALYSIS_ROWS}")
    for table in tables:
        conn.exec_driver_sql(f"ANALYZE {table.name}")


def _row_count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def _insert(conn: Connection, table: Table, frame: pd.DataFrame) -> None:
    columns = list(frame.columns)
    if conn.dialect.name == "postgresql":
        nullable = [c for c in columns if table.c[c].nullable]
        _copy_postgres(conn, table.name, columns, nullable, frame)
        return
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"
    for part in _chunks(frame, CHUNK_ROWS):
        rows = list(zip(*(part[c].tolist() for c in columns), strict=True))
        conn.exec_driver_sql(sql, rows)  # type: ignore[arg-type]


def _copy_postgres(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    nullable: Sequence[str],
    frame: pd.DataFrame,
) -> None:
    """COPY the frame as CSV: every string quoted; NaN (``""``) is NULL in nullable columns."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    force = f", FORCE_NULL ({', '.join(nullable)})" if nullable else ""
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv{force})"
    try:
        with cursor.copy(statement) as copy:
            for part in _chunks(frame, CHUNK_ROWS):
                buffer = io.StringIO()
                part.to_csv(buffer, header=False, index=False, quoting=csv.QUOTE_NONNUMERIC,
                            float_format="%.17g", lineterminator="\n")  # fmt: skip
                copy.write(buffer.getvalue())
    finally:
        cursor.close()


def fetch_by_ids(
    conn: Connection, table: Table, ids: np.ndarray, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows of ``table`` whose id is in ``ids`` (uint64), ids as int64 as stored.

    Parameters
    ----------
    conn : sqlalchemy.Connection
        Open connection.
    table : sqlalchemy.Table
        Table with an ``id`` column.
    ids : numpy.ndarray
        uint64 ids to look up (any order, may repeat).
    columns : sequence of str, optional
        Columns to return (default all).

    Returns
    -------
    pandas.DataFrame
        Matching rows, in no particular order.
    """
    cols = [table.c[name] for name in columns] if columns else list(table.c)
    names = [c.name for c in cols]
    rows = rows_where_in(conn, cols, table.c.id, to_db(np.asarray(ids, dtype=np.uint64)))
    if not rows:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in names})
    return pd.DataFrame.from_records(rows, columns=names)


def rows_where_in(
    conn: Connection, columns: Sequence[ColumnElement[Any]], key: Column[Any], values: np.ndarray
) -> list[Row[Any]]:
    """Rows of ``columns`` whose ``key`` is one of ``values`` (stored int64s, may repeat).

    One ``IN`` list per :data:`IN_CHUNK` distinct values (SQLite takes at most 32766
    parameters per statement); rows in no particular order.
    """
    wanted = np.unique(np.asarray(values, dtype=np.int64))
    rows: list[Row[Any]] = []
    for start in range(0, wanted.size, IN_CHUNK):
        part = wanted[start : start + IN_CHUNK].tolist()
        rows.extend(conn.execute(select(*columns).where(key.in_(part))).all())
    return rows
