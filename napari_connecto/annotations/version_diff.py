"""What changed between two versions of an annotation store (or a version and the live state).

Rows are matched by id (assignments by segmentation and fragment) in SQL, so only the
differences leave the database. A synapse *changed* when any compared column differs;
:data:`SYNAPSE_GROUPS` names what changed (``partners``, ``position``, ``status``,
``confidence``). ``created``/``updated`` and the spatial ``cell`` are bookkeeping and do
not count. A fragment without an assignment row is its own segment, so assigning it to
itself and removing its row are no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, FromClause, and_, exists, func, or_, select

from napari_connecto.annotations import queries, schema
from napari_connecto.annotations.frames import SYNAPSE_COLUMNS
from napari_connecto.annotations.ids import from_db, from_db_one
from napari_connecto.annotations.versions import find_version

if TYPE_CHECKING:
    from napari_connecto.annotations.store import AnnotationStore

__all__ = ["NEURON_GROUPS", "SYNAPSE_GROUPS", "VersionDiff", "diff_versions"]

SYNAPSE_GROUPS: dict[str, tuple[str, ...]] = {
    "partners": ("pre_id", "post_id"),
    "position": ("pre_z", "pre_y", "pre_x", "post_z", "post_y", "post_x", "z", "y", "x"),
    "status": ("status", "reviewer"),
    "confidence": ("confidence",),
}
"""Kinds of synapse change, and the columns that make each."""
NEURON_GROUPS: dict[str, tuple[str, ...]] = {
    "text": ("name", "type", "status", "notes"),
    "keypoint": ("z", "y", "x"),
    "counts": ("n_pre", "n_post"),
}
"""Kinds of neuron change, and the columns that make each."""
_SHOWN = ("pre_id", "post_id", "status", "z", "y", "x")
"""Synapse columns a changed row shows on both sides (``<column>_a``, ``<column>_b``)."""


@dataclass(frozen=True, slots=True, eq=False)
class VersionDiff:
    """Differences from version ``a`` to version ``b`` (``None``: the live tables)."""

    a: str | None
    """The older side."""
    b: str | None
    """The newer side."""
    synapses_added: pd.DataFrame
    """Synapses in ``b`` only (their rows at ``b``)."""
    synapses_removed: pd.DataFrame
    """Synapses in ``a`` only (their rows at ``a``)."""
    synapses_changed: pd.DataFrame
    """``id``, ``changed`` (``"partners,status"``, ...), then ``<column>_a``/``_b`` of
    pre_id, post_id, status, z, y, x."""
    neurons_added: np.ndarray
    """uint64 ids of neurons in ``b`` only."""
    neurons_removed: np.ndarray
    """uint64 ids of neurons in ``a`` only."""
    neurons_changed: pd.DataFrame
    """``id`` and ``changed`` (``"text,keypoint,counts"``) of neurons in both that differ."""
    assignments_changed: pd.DataFrame
    """``volume``, ``fragment``, ``segment_a``, ``segment_b``: fragments whose segment differs."""

    def counts(self) -> dict[str, int]:
        """How many of each kind of change (``synapses_changed_status``, ...)."""
        out = {
            "synapses_added": len(self.synapses_added),
            "synapses_removed": len(self.synapses_removed),
            "synapses_changed": len(self.synapses_changed),
        }
        for group in SYNAPSE_GROUPS:
            out[f"synapses_changed_{group}"] = _with(self.synapses_changed, group)
        out.update(
            neurons_added=len(self.neurons_added),
            neurons_removed=len(self.neurons_removed),
            neurons_changed=len(self.neurons_changed),
            assignments_changed=len(self.assignments_changed),
        )
        return out

    @property
    def empty(self) -> bool:
        """Whether the two sides hold the same synapses, neurons and assignments."""
        counts = self.counts()
        return not any(counts[k] for k in counts if "_changed_" not in k)


def _with(frame: pd.DataFrame, group: str) -> int:
    if frame.empty:
        return 0
    return int(frame["changed"].map(lambda text: group in text.split(",")).sum())


def diff_versions(store: AnnotationStore, a: str | None, b: str | None = None) -> VersionDiff:
    """What changed from version ``a`` to version ``b``; ``None`` on either side is live.

    Parameters
    ----------
    store : AnnotationStore
        The store holding both.
    a, b : str or None
        Version names; ``b`` defaults to the live tables.

    Returns
    -------
    VersionDiff
        Synapses added, removed and changed (with what changed), neurons added, removed
        and changed, and fragments whose segment changed.

    Raises
    ------
    VersionNotFoundError
        Either name is no version.
    """
    return store.run_read(lambda conn: _diff(conn, a, b))


def _diff(conn: Connection, a: str | None, b: str | None) -> VersionDiff:
    sides = {"a": a, "b": b}
    syn_a, syn_b = (_side(conn, schema.synapses, schema.version_synapses, v, t)
                    for t, v in sides.items())  # fmt: skip
    neu_a, neu_b = (_side(conn, schema.neurons, schema.version_neurons, v, t)
                    for t, v in sides.items())  # fmt: skip
    asg_a, asg_b = (_side(conn, schema.assignments, schema.version_assignments, v, t)
                    for t, v in sides.items())  # fmt: skip
    neurons_only = [
        np.sort(from_db(np.array([r[0] for r in _only(conn, x, y, ["id"])], dtype=np.int64)))
        for x, y in ((neu_b, neu_a), (neu_a, neu_b))
    ]
    return VersionDiff(
        a=a,
        b=b,
        synapses_added=queries.to_frame(
            _only(conn, syn_b, syn_a, SYNAPSE_COLUMNS), SYNAPSE_COLUMNS
        ),
        synapses_removed=queries.to_frame(
            _only(conn, syn_a, syn_b, SYNAPSE_COLUMNS), SYNAPSE_COLUMNS
        ),
        synapses_changed=_changed(conn, syn_a, syn_b, SYNAPSE_GROUPS, _SHOWN),
        neurons_added=neurons_only[0],
        neurons_removed=neurons_only[1],
        neurons_changed=_changed(conn, neu_a, neu_b, NEURON_GROUPS, ()),
        assignments_changed=_assignments(conn, asg_a, asg_b),
    )


def _side(conn: Connection, live: Any, frozen: Any, version: str | None, tag: str) -> FromClause:
    """The rows of ``live`` at ``version`` (``None``: the live table), named ``<table>_<tag>``."""
    name = f"{live.name}_{tag}"  # distinct names: a side may be compared with itself
    if version is None:
        return live.alias(name)  # type: ignore[no-any-return]
    vid = find_version(conn, version).id
    columns = [frozen.c[c.name] for c in live.c]
    return select(*columns).where(frozen.c.version == vid).subquery(name)


def _keys(x: FromClause, y: FromClause) -> Any:
    names = ["volume", "fragment"] if "fragment" in x.c else ["id"]
    return and_(*(x.c[n] == y.c[n] for n in names))


def _only(conn: Connection, x: FromClause, y: FromClause, columns: Sequence[str]) -> list[Any]:
    """Rows of ``x`` with no row of the same key in ``y``, ordered by key."""
    query = select(*(x.c[c] for c in columns)).where(~exists().where(_keys(x, y)))
    return list(conn.execute(query.order_by(x.c[columns[0]])).all())


def _synapse_rows(conn: Connection, x: FromClause, y: FromClause) -> pd.DataFrame:
    """Synapses of ``x`` missing from ``y``, as the store's synapse frames."""
    return queries.to_frame(_only(conn, x, y, SYNAPSE_COLUMNS), SYNAPSE_COLUMNS)


def _changed(
    conn: Connection,
    x: FromClause,
    y: FromClause,
    groups: dict[str, tuple[str, ...]],
    shown: Sequence[str],
) -> pd.DataFrame:
    """Rows present on both sides whose compared columns differ: id, changed, shown a/b."""
    compared = [c for cols in groups.values() for c in cols]
    differs = {c: x.c[c].is_distinct_from(y.c[c]) for c in compared}
    flags = [differs[c].label(f"d_{c}") for c in compared]
    values = [x.c[c].label(f"{c}_a") for c in shown] + [y.c[c].label(f"{c}_b") for c in shown]
    query = (
        select(x.c.id, *flags, *values)
        .select_from(x.join(y, _keys(x, y)))
        .where(or_(*differs.values()))
        .order_by(x.c.id)
    )
    rows = conn.execute(query).all()
    n = len(compared)
    changed = [
        ",".join(g for g, cols in groups.items() if any(r[1 + compared.index(c)] for c in cols))
        for r in rows
    ]
    frame = pd.DataFrame(
        {"id": from_db(np.array([r[0] for r in rows], dtype=np.int64)), "changed": changed}
    )
    for i, name in enumerate([f"{c}_a" for c in shown] + [f"{c}_b" for c in shown]):
        column = [r[1 + n + i] for r in rows]
        if name.rsplit("_", 1)[0] in ("pre_id", "post_id"):
            frame[name] = from_db(np.array(column, dtype=np.int64))
        elif name[0] in "zyx":
            frame[name] = np.array(column, dtype=np.float64)
        else:
            frame[name] = np.array(column, dtype=object)
    return frame


def _assignments(conn: Connection, x: FromClause, y: FromClause) -> pd.DataFrame:
    """Fragments whose segment differs (a fragment without a row is its own segment)."""
    seg_y = func.coalesce(y.c.segment, x.c.fragment)
    kept = (
        select(x.c.volume, x.c.fragment, x.c.segment, seg_y)
        .select_from(x.outerjoin(y, _keys(x, y)))
        .where(x.c.segment != seg_y)
    )
    new = select(y.c.volume, y.c.fragment, y.c.fragment, y.c.segment).where(
        ~exists().where(_keys(y, x)), y.c.segment != y.c.fragment
    )
    rows = list(conn.execute(kept)) + list(conn.execute(new))
    rows.sort(key=lambda r: (str(r[0]), from_db_one(r[1])))
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]

    def ids(values: Sequence[int]) -> np.ndarray:
        return from_db(np.array(values, dtype=np.int64))

    return pd.DataFrame(
        {
            "volume": np.array(columns[0], dtype=object),
            "fragment": ids(columns[1]),
            "segment_a": ids(columns[2]),
            "segment_b": ids(columns[3]),
        }
    )
