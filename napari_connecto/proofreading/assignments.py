"""Fragment -> segment assignments (the agglomeration), and merge and cleave edits on them.

Voxels of a segmentation hold *fragment* ids. A fragment with no row in ``assignments``
is its own segment; a row maps it to another segment id. Merging segment ``b`` into
``a`` maps every fragment of ``b`` to ``a``; cleaving moves some fragments of a segment
to a new segment id. Synapse partner ids follow both, so the tables stay true.
All ids here are database values (see :mod:`napari_connecto.annotations.ids`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection, or_, select

from napari_connecto.annotations import schema
from napari_connecto.annotations.ids import from_db, from_db_one, to_db
from napari_connecto.errors import EditError
from napari_connecto.proofreading.journal import EditRecord, segment_key, synapse_key
from napari_connecto.proofreading.rows import RowChange, read_row
from napari_connecto.volume.processors import RemapIds

if TYPE_CHECKING:
    from napari_connecto.annotations.store import AnnotationStore

__all__ = [
    "FragmentLookup",
    "cleave_record",
    "edit_keys",
    "ensure_neurons",
    "follow_cleave",
    "follow_merge",
    "fragments_of",
    "load_mapping",
    "merge_record",
    "relabel_synapses",
    "segments_of",
    "synapses_of",
]

FragmentLookup = Callable[[np.ndarray], np.ndarray]
"""Fragment ids (uint64) at ``(N, 3)`` positions in nm."""


def segments_of(conn: Connection, volume: str, fragments: Iterable[int]) -> dict[int, int]:
    """Segment (database id) of each fragment (database id)."""
    frags = sorted({int(f) for f in fragments})
    out = {f: f for f in frags}
    a = schema.assignments
    for i in range(0, len(frags), 500):
        rows = conn.execute(
            select(a.c.fragment, a.c.segment).where(
                a.c.volume == volume, a.c.fragment.in_(frags[i : i + 500])
            )
        )
        out.update((int(f), int(s)) for f, s in rows)
    return out


def fragments_of(conn: Connection, volume: str, segment: int) -> list[int]:
    """Every fragment (database id) of ``segment``, including the segment's own id if it is one.

    One query: the rows mapped to the segment, and the segment's own row (a fragment whose
    id is the segment's but that was merged elsewhere is not part of it).
    """
    a = schema.assignments
    rows = conn.execute(
        select(a.c.fragment, a.c.segment).where(
            a.c.volume == volume, or_(a.c.segment == segment, a.c.fragment == segment)
        )
    ).all()
    mapped = {int(f) for f, s in rows if s == segment}
    if not any(f == segment for f, _ in rows):
        mapped.add(int(segment))
    return sorted(mapped)


def load_mapping(store: AnnotationStore, volume: str) -> RemapIds:
    """The display lookup table of ``volume``: fragment -> segment for every assigned fragment."""
    a = schema.assignments

    def run(conn: Connection) -> list[tuple[int, int]]:
        query = select(a.c.fragment, a.c.segment).where(a.c.volume == volume)
        return [(int(f), int(s)) for f, s in conn.execute(query)]

    rows = store.run_read(run)
    keys = from_db(np.array([f for f, _ in rows], dtype=np.int64))
    values = from_db(np.array([s for _, s in rows], dtype=np.int64))
    order = np.argsort(keys, kind="stable")
    return RemapIds(keys[order], values[order])


def _assign(conn: Connection, volume: str, fragments: Sequence[int], to: int) -> list[RowChange]:
    """Changes that map each fragment to segment ``to`` (no row when that is itself)."""
    a = schema.assignments
    current: dict[int, dict[str, object]] = {}
    frags = list(fragments)
    for i in range(0, len(frags), 500):
        query = select(a).where(a.c.volume == volume, a.c.fragment.in_(frags[i : i + 500]))
        current.update((int(r["fragment"]), dict(r)) for r in conn.execute(query).mappings())
    changes = []
    for frag in frags:
        before = current.get(int(frag))
        after = None if frag == to else {"volume": volume, "fragment": frag, "segment": to}
        if before != after:
            changes.append(RowChange("assignments", (volume, frag), before, after))
    return changes


def relabel_synapses(
    conn: Connection, updates: dict[int, dict[str, int]], now: float
) -> list[RowChange]:
    """Changes setting ``pre_id``/``post_id`` of synapses (``{id: {"pre_id": x}}``)."""
    changes = []
    for sid, fields in sorted(updates.items()):
        before = read_row(conn, "synapses", (sid,))
        if before is None:
            continue
        after = {**before, **fields, "updated": now}
        if any(before[k] != v for k, v in fields.items()):
            changes.append(RowChange("synapses", (sid,), before, after))
    return changes


def ensure_neurons(conn: Connection, ids: Iterable[int]) -> list[RowChange]:
    """Changes that add a neuron row for each id that has none (it now has synapses).

    Id 0 (background) gets no row, as in imports.
    """
    changes = []
    for nid in sorted(set(ids) - {0}):
        if read_row(conn, "neurons", (nid,)) is None:
            row = {"id": nid, "name": "", "type": "", "status": "", "notes": "",
                   "z": None, "y": None, "x": None}  # fmt: skip
            changes.append(RowChange("neurons", (nid,), None, row))
    return changes


def synapses_of(conn: Connection, segments: Sequence[int]) -> list[dict[str, object]]:
    """Synapse rows (as dicts) with a partner among ``segments`` (database ids)."""
    s = schema.synapses
    query = select(s).where(or_(s.c.pre_id.in_(segments), s.c.post_id.in_(segments)))
    return [dict(r) for r in conn.execute(query).mappings()]


def merge_record(conn: Connection, volume: str, keep: int, absorb: int, now: float) -> EditRecord:
    """Merge segment ``absorb`` into ``keep`` (database ids of segments, as displayed).

    Raises
    ------
    EditError
        If the two are the same segment, or either is no segment (any more).
    """
    if keep == absorb:
        raise EditError(f"{from_db_one(keep)} and {from_db_one(absorb)} are one segment already")
    pair = (("keep", keep), ("absorb", absorb))
    found = {name: fragments_of(conn, volume, segment) for name, segment in pair}
    for name, segment in pair:
        if not found[name]:
            owner = segments_of(conn, volume, [segment])[segment]
            raise EditError(
                f"{name}={from_db_one(segment)} is no segment: it is part of segment "
                f"{from_db_one(owner)} now"
            )
    moved = found["absorb"]
    changes = _assign(conn, volume, moved, keep)
    changes += follow_merge(conn, keep, absorb, now)
    return EditRecord(
        kind="merge",
        volume=volume,
        summary=f"merge {from_db_one(absorb)} into {from_db_one(keep)} ({len(moved)} fragments)",
        keys=edit_keys(volume, (keep, absorb), changes),
        changes=tuple(changes),
        extra={"keep": keep, "absorb": absorb, "fragments": moved},
    )


def edit_keys(volume: str, segments: Sequence[int], changes: Sequence[RowChange]) -> frozenset[str]:
    """Conflict keys of an edit: its segments and the synapses its row changes touch."""
    keys = {segment_key(volume, s) for s in segments}
    keys.update(synapse_key(c.key[0]) for c in changes if c.table == "synapses")
    return frozenset(keys)


def follow_merge(conn: Connection, keep: int, absorb: int, now: float) -> list[RowChange]:
    """Changes moving the synapse partners ``absorb`` to ``keep`` (with its neuron row)."""
    updates: dict[int, dict[str, int]] = {}
    for row in synapses_of(conn, [absorb]):
        fields = updates.setdefault(int(row["id"]), {})  # type: ignore[call-overload]
        if row["pre_id"] == absorb:
            fields["pre_id"] = keep
        if row["post_id"] == absorb:
            fields["post_id"] = keep
    syn = relabel_synapses(conn, updates, now)
    return (ensure_neurons(conn, [keep]) if syn else []) + syn


def cleave_record(
    conn: Connection,
    volume: str,
    segment: int,
    fragments: Sequence[int],
    new_segment: int,
    *,
    fragment_at: FragmentLookup | None,
    now: float,
) -> EditRecord:
    """Move ``fragments`` of ``segment`` to ``new_segment`` (database ids).

    Synapses of ``segment`` whose site lies in a moved fragment (looked up with
    ``fragment_at``, positions in nm) follow it to the new segment.

    Raises
    ------
    EditError
        A fragment that is not part of ``segment``, no fragment, or all of them.
    """
    current = set(fragments_of(conn, volume, segment))
    chosen = sorted({int(f) for f in fragments})
    if not chosen:
        raise EditError("a cleave needs at least one fragment")
    stray = [f for f in chosen if f not in current]
    if stray:
        raise EditError(
            f"fragment(s) {', '.join(str(from_db_one(f)) for f in stray[:5])} are not part of "
            f"segment {from_db_one(segment)}"
        )
    if len(chosen) == len(current):
        raise EditError(f"cleaving every fragment of {from_db_one(segment)} changes nothing")
    # the fragments left behind keep the segment's id (even if its own fragment moves)
    changes = _assign(conn, volume, chosen, new_segment)
    changes += follow_cleave(
        conn, segment, set(chosen), new_segment, fragment_at=fragment_at, now=now
    )
    return EditRecord(
        kind="cleave",
        volume=volume,
        summary=(
            f"cleave {len(chosen)} fragment(s) of {from_db_one(segment)} "
            f"into {from_db_one(new_segment)}"
        ),
        keys=edit_keys(volume, (segment, new_segment), changes),
        changes=tuple(changes),
        extra={"segment": segment, "new_segment": new_segment, "fragments": chosen},
    )


def follow_cleave(
    conn: Connection,
    segment: int,
    moved: set[int],
    new_segment: int,
    *,
    fragment_at: FragmentLookup | None,
    now: float,
) -> list[RowChange]:
    """Changes moving synapse partners ``segment`` whose site lies in ``moved`` fragments.

    Like :func:`follow_merge`, a neuron row for ``new_segment`` comes first if needed.
    """
    rows = synapses_of(conn, [segment])
    if not rows or fragment_at is None:
        return []
    pre = np.array([[r["pre_z"], r["pre_y"], r["pre_x"]] for r in rows], dtype=np.float64)
    post = np.array([[r["post_z"], r["post_y"], r["post_x"]] for r in rows], dtype=np.float64)
    frags = to_db(np.asarray(fragment_at(np.concatenate([pre, post])), dtype=np.uint64))
    pre_frag, post_frag = frags[: len(rows)], frags[len(rows) :]
    updates: dict[int, dict[str, int]] = {}
    for row, pf, qf in zip(rows, pre_frag, post_frag, strict=True):
        fields: dict[str, int] = {}
        if row["pre_id"] == segment and int(pf) in moved:
            fields["pre_id"] = new_segment
        if row["post_id"] == segment and int(qf) in moved:
            fields["post_id"] = new_segment
        if fields:
            updates[int(row["id"])] = fields  # type: ignore[call-overload]
    syn = relabel_synapses(conn, updates, now)
    return (ensure_neurons(conn, [new_segment]) if syn else []) + syn
