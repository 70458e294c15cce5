"""Synapse edits as journal records: add, move, delete, change partners, review.

Each builder runs inside the journal's transaction, reads the rows it changes and
returns an :class:`~napari_connecto.proofreading.journal.EditRecord` holding them before
and after. Positions are z, y, x in nm; ids are database values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, func, select

from napari_connecto.annotations import schema
from napari_connecto.annotations.frames import SYNAPSE_STATUSES
from napari_connecto.annotations.ids import from_db_one
from napari_connecto.annotations.spatial import cell_of
from napari_connecto.errors import EditError
from napari_connecto.proofreading.assignments import ensure_neurons
from napari_connecto.proofreading.journal import EditRecord, synapse_key
from napari_connecto.proofreading.rows import RowChange, read_row

__all__ = [
    "add_record",
    "as_position",
    "delete_record",
    "move_record",
    "partners_record",
    "status_record",
]

Point = Sequence[float]


def as_position(value: Point, what: str) -> tuple[float, float, float]:
    """``value`` as a finite z, y, x position in nm; :class:`EditError` naming ``what`` if not."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.size != 3 or not np.isfinite(arr).all():
        raise EditError(f"{what} must be a finite z, y, x position in nm, got {value!r}")
    return float(arr[0]), float(arr[1]), float(arr[2])


def _place(row: dict[str, Any], pre: Point, post: Point) -> None:
    """Set the pre, post and centre positions (and spatial cell) of a synapse row."""
    for site, pos in (("pre", pre), ("post", post)):
        for axis, v in zip("zyx", pos, strict=True):
            row[f"{site}_{axis}"] = float(v)
    centre = [(a + b) / 2 for a, b in zip(pre, post, strict=True)]
    for axis, v in zip("zyx", centre, strict=True):
        row[axis] = float(v)
    row["cell"] = int(
        cell_of(np.array([centre[0]]), np.array([centre[1]]), np.array([centre[2]]))[0]
    )


def _keys(changes: Sequence[RowChange]) -> frozenset[str]:
    return frozenset(synapse_key(c.key[0]) for c in changes if c.table == "synapses")


_NEXT_SYNAPSE = "next_synapse_id"
"""``connecto_meta`` key of the next synapse id an edit may take."""


def _next_ids(conn: Connection, count: int) -> list[int]:
    """Fresh synapse ids, above every stored one and never handed out before.

    A counter in ``connecto_meta`` (taken in the journal's serialised transaction)
    keeps the ids of deleted or undone synapses from being given to new ones.
    """
    table, meta = schema.synapses, schema.meta
    top, stored = conn.execute(  # one round trip for both
        select(
            select(func.max(table.c.id)).where(table.c.id >= 0).scalar_subquery(),
            select(meta.c.value).where(meta.c.key == _NEXT_SYNAPSE).scalar_subquery(),
        )
    ).one()
    first = max((int(top) if top is not None else 0) + 1, int(stored) if stored else 1)
    if first + count > 2**63:
        raise EditError("no synapse ids are left below 2**63")
    if stored is None:
        conn.execute(meta.insert().values(key=_NEXT_SYNAPSE, value=str(first + count)))
    else:
        conn.execute(
            meta.update().where(meta.c.key == _NEXT_SYNAPSE).values(value=str(first + count))
        )
    return list(range(first, first + count))


def add_record(
    conn: Connection,
    pre: Point,
    posts: Sequence[Point],
    pre_id: int,
    post_ids: Sequence[int],
    *,
    now: float,
    confidence: float | None = None,
    reviewer: str = "",
) -> EditRecord:
    """Add one synapse per post site, all sharing the pre site (a polyadic synapse)."""
    pre_pos = as_position(pre, "the pre site")
    post_pos = [as_position(p, "a post site") for p in posts]
    if not post_pos:
        raise EditError("a synapse needs at least one post site")
    if len(post_ids) != len(post_pos):
        raise EditError(f"{len(post_pos)} post sites but {len(post_ids)} post ids")
    changes: list[RowChange] = []
    for sid, pos, post_id in zip(_next_ids(conn, len(post_pos)), post_pos, post_ids, strict=True):
        row: dict[str, Any] = {
            "id": sid, "pre_id": int(pre_id), "post_id": int(post_id),
            "confidence": confidence, "status": "unreviewed", "reviewer": reviewer,
            "created": now, "updated": now,
        }  # fmt: skip
        _place(row, pre_pos, pos)
        changes.append(RowChange("synapses", (sid,), None, row))
    changes = ensure_neurons(conn, [int(pre_id), *map(int, post_ids)]) + changes
    ids = [c.key[0] for c in changes if c.table == "synapses"]
    return EditRecord(
        kind="synapse_add",
        volume="",
        summary=f"add synapse{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} "
        f"({from_db_one(pre_id)} -> {', '.join(str(from_db_one(p)) for p in post_ids)})",
        keys=_keys(changes),
        changes=tuple(changes),
        extra={"synapses": ids},
    )


def _existing(conn: Connection, ids: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for sid in ids:
        row = read_row(conn, "synapses", (int(sid),))
        if row is None:
            raise EditError(f"there is no synapse {from_db_one(int(sid))}")
        rows.append(row)
    return rows


def move_record(
    conn: Connection,
    synapse: int,
    now: float,
    *,
    pre: Point | None = None,
    post: Point | None = None,
    pre_id: int | None = None,
    post_id: int | None = None,
) -> EditRecord:
    """Move the pre and/or post site of a synapse (with the partner there, if given)."""
    (before,) = _existing(conn, [synapse])
    after = dict(before)
    old_pre = [before[f"pre_{a}"] for a in "zyx"]
    old_post = [before[f"post_{a}"] for a in "zyx"]
    new_pre = as_position(pre, "the pre site") if pre is not None else old_pre
    new_post = as_position(post, "the post site") if post is not None else old_post
    _place(after, new_pre, new_post)
    if pre_id is not None:
        after["pre_id"] = int(pre_id)
    if post_id is not None:
        after["post_id"] = int(post_id)
    after["updated"] = now
    changes = [RowChange("synapses", (int(synapse),), before, after)]
    changes = ensure_neurons(conn, [after["pre_id"], after["post_id"]]) + changes
    return EditRecord(
        kind="synapse_move",
        volume="",
        summary=f"move synapse {from_db_one(int(synapse))}",
        keys=_keys(changes),
        changes=tuple(changes),
    )


def delete_record(conn: Connection, ids: Sequence[int]) -> EditRecord:
    """Delete synapses."""
    rows = _existing(conn, ids)
    changes = [RowChange("synapses", (int(r["id"]),), r, None) for r in rows]
    return EditRecord(
        kind="synapse_delete",
        volume="",
        summary=f"delete synapse(s) {', '.join(str(from_db_one(int(i))) for i in ids[:5])}"
        + (f" and {len(ids) - 5} more" if len(ids) > 5 else ""),
        keys=_keys(changes),
        changes=tuple(changes),
    )


def partners_record(
    conn: Connection, synapse: int, now: float, *, pre_id: int | None, post_id: int | None
) -> EditRecord:
    """Change the pre and/or post neuron of a synapse."""
    if pre_id is None and post_id is None:
        raise EditError("give a new pre_id, post_id or both")
    (before,) = _existing(conn, [synapse])
    after = dict(before, updated=now)
    if pre_id is not None:
        after["pre_id"] = int(pre_id)
    if post_id is not None:
        after["post_id"] = int(post_id)
    changes = [RowChange("synapses", (int(synapse),), before, after)]
    changes = ensure_neurons(conn, [after["pre_id"], after["post_id"]]) + changes
    return EditRecord(
        kind="synapse_partners",
        volume="",
        summary=(
            f"synapse {from_db_one(int(synapse))}: {from_db_one(after['pre_id'])} -> "
            f"{from_db_one(after['post_id'])}"
        ),
        keys=_keys(changes),
        changes=tuple(changes),
    )


def status_record(
    conn: Connection, ids: Sequence[int], status: str, reviewer: str, now: float
) -> EditRecord:
    """Mark synapses verified, rejected or unreviewed."""
    if status not in SYNAPSE_STATUSES:
        raise EditError(f"status must be one of {', '.join(SYNAPSE_STATUSES)}, not {status!r}")
    rows = _existing(conn, ids)
    changes = [
        RowChange(
            "synapses", (int(r["id"]),), r, dict(r, status=status, reviewer=reviewer, updated=now)
        )
        for r in rows
        if r["status"] != status or r["reviewer"] != reviewer
    ]
    shown = ", ".join(str(from_db_one(int(i))) for i in ids[:5])
    return EditRecord(
        kind="synapse_status",
        volume="",
        summary=f"{status} synapse(s) {shown}"
        + (f" and {len(ids) - 5} more" if len(ids) > 5 else ""),
        keys=_keys(changes),
        changes=tuple(changes),
    )
