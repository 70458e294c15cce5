"""Writing one journal row with its conflict keys and voxels.

On PostgreSQL every statement is a round trip to the server, during which the editing
thread gives up the GIL and may wait to get it back; an edit's writes therefore go in
one statement (data-modifying CTEs): the undone edits it discards, its ``edits`` row,
its ``edit_keys`` and its ``edit_voxels``. SQLite runs in the process and takes them
one by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, text

from napari_connecto.annotations import schema

__all__ = ["insert_edit"]

_EDIT_COLUMNS = ("volume", "kind", "ref", "state", "writeback", "author", "session",
                 "request", "created", "summary", "payload")  # fmt: skip
_VOXEL_COLUMNS = ("scale", "start_z", "start_y", "start_x", "size_z", "size_y", "size_x",
                  "dtype", "before", "after")  # fmt: skip
_VOXEL_TYPES = ("integer", "bigint", "bigint", "bigint", "integer", "integer", "integer",
                "varchar", "bytea", "bytea")  # fmt: skip


def _postgres_statement(voxels: bool) -> str:
    """The one-statement insert of an edit (with its ``edit_voxels`` row if ``voxels``)."""
    edit_values = ", ".join(f":{c}" for c in _EDIT_COLUMNS)
    parts = [
        "discarded AS (UPDATE edits SET state = 'discarded' "
        "WHERE :discard AND author = :author AND state = 'undone')",
        f"new AS (INSERT INTO edits ({', '.join(_EDIT_COLUMNS)}) VALUES ({edit_values}) "
        "RETURNING seq)",
        "keyed AS (INSERT INTO edit_keys (seq, key) "
        "SELECT new.seq, k.key FROM new, unnest(CAST(:keys AS text[])) AS k(key))",
    ]
    if voxels:
        casts = ", ".join(
            f"CAST(:v_{c} AS {t})" for c, t in zip(_VOXEL_COLUMNS, _VOXEL_TYPES, strict=True)
        )
        parts.append(
            f"boxed AS (INSERT INTO edit_voxels (seq, {', '.join(_VOXEL_COLUMNS)}) "
            f"SELECT new.seq, {casts} FROM new)"
        )
    return f"WITH {', '.join(parts)} SELECT seq FROM new"


_POSTGRES = {flag: text(_postgres_statement(flag)) for flag in (False, True)}


def insert_edit(
    conn: Connection,
    values: dict[str, Any],
    keys: Iterable[str],
    voxels: dict[str, Any] | None = None,
    *,
    discard_undone: bool = False,
) -> int:
    """Insert one ``edits`` row with its keys and voxels; return its seq.

    Parameters
    ----------
    conn : sqlalchemy.Connection
        Inside the journal's write transaction.
    values : dict
        Every column of :data:`~napari_connecto.annotations.schema.edits` but ``seq``
        and ``error``.
    keys : iterable of str
        Its conflict keys (duplicates are dropped).
    voxels : dict, optional
        Its ``edit_voxels`` columns without ``seq`` (see ``VoxelPatch.to_row``).
    discard_undone : bool
        First mark the author's undone edits ``discarded`` (a new edit ends their redo).

    Returns
    -------
    int
        The new row's seq.
    """
    unique = sorted(set(keys))
    if conn.dialect.name == "postgresql":
        params = {c: values[c] for c in _EDIT_COLUMNS}
        params.update(discard=discard_undone, keys=unique)
        if voxels is not None:
            params.update({f"v_{c}": voxels[c] for c in _VOXEL_COLUMNS})
        return int(conn.execute(_POSTGRES[voxels is not None], params).scalar_one())
    e = schema.edits
    if discard_undone:
        conn.execute(
            e.update()
            .where(e.c.author == values["author"], e.c.state == "undone")
            .values(state="discarded")
        )
    seq = int(conn.execute(e.insert().values(**values)).inserted_primary_key[0])
    if unique:
        conn.execute(schema.edit_keys.insert(), [{"seq": seq, "key": k} for k in unique])
    if voxels is not None:
        conn.execute(schema.edit_voxels.insert().values(seq=seq, **voxels))
    return seq
