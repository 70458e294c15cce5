"""One import, in one transaction: new rows inserted, repeats recognised, conflicts refused.

Rules (never a silent merge):

- A synapse whose id is already stored with the same pre/post neurons, locations and
  confidence is *unchanged* (re-importing a file is harmless, and the review state in the
  store is kept); with any difference it is a conflict and nothing is imported.
- A neuron already stored is compared field by field: a field empty (or NaN) on either
  side never conflicts, an empty stored field is *filled* from the import, two different
  values conflict.
- Partners named by synapses and missing from the store get a bare neuron row, so every
  synapse's neurons appear in the neuron table.
- ``n_pre``/``n_post`` (synapses as pre/post per neuron) are kept up to date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, exists, func, select

from napari_connecto.annotations import schema
from napari_connecto.annotations.bulk import (
    REBUILD_ROWS,
    analyze,
    fetch_by_ids,
    insert_frame,
    rows_where_in,
)
from napari_connecto.annotations.frames import (
    NEURON_COLUMNS,
    SYNAPSE_COLUMNS,
    ImportBatch,
    drop_identical_duplicates,
    normalize_neurons,
    normalize_synapses,
)
from napari_connecto.annotations.ids import from_db, to_db
from napari_connecto.annotations.queries import to_frame
from napari_connecto.annotations.spatial import cell_of
from napari_connecto.errors import ConflictError

__all__ = ["ImportSummary", "import_batch"]


_TEXT = ("name", "type", "status", "notes")
_KEYPOINT = ("z", "y", "x")
_SYNAPSE_COMPARED = tuple(
    c for c in SYNAPSE_COLUMNS if c not in ("id", "status", "reviewer", "created", "updated")
)


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What one import did."""

    source: str
    """The imported file."""
    synapses_added: int = 0
    """New synapses."""
    synapses_unchanged: int = 0
    """Synapses already stored exactly so."""
    neurons_added: int = 0
    """New neurons (including bare rows for synapse partners)."""
    neurons_filled: int = 0
    """Stored neurons whose empty fields the import filled."""
    neurons_unchanged: int = 0
    """Neurons already stored with nothing to add."""


def import_batch(conn: Connection, batch: ImportBatch) -> ImportSummary:
    """Import ``batch`` on ``conn`` (the caller owns the transaction).

    Parameters
    ----------
    conn : sqlalchemy.Connection
        A connection inside a transaction; roll it back on any error.
    batch : ImportBatch
        Normalised (or raw, normalised here) neurons and synapses.

    Returns
    -------
    ImportSummary
        Counts of what was added, filled and recognised.

    Raises
    ------
    ConflictError
        An id already stored (or repeated in the batch) with different contents.
    ImportFormatError
        A batch that does not normalise.
    """
    synapses = _normalized(batch.synapses, normalize_synapses, SYNAPSE_COLUMNS, batch.source)
    neurons = _normalized(batch.neurons, normalize_neurons, NEURON_COLUMNS, batch.source)
    synapses = drop_identical_duplicates(synapses, "synapses", batch.source)
    neurons = drop_identical_duplicates(neurons, "neurons", batch.source)
    synapses = _recognise_unnumbered(conn, synapses)
    synapses = _assign_ids(conn, synapses)
    synapses, unchanged = _new_synapses(conn, synapses)
    added, filled, kept = _merge_neurons(conn, neurons, synapses)
    _insert_synapses(conn, synapses)
    if len(synapses) + added >= REBUILD_ROWS:
        analyze(conn, (schema.neurons, schema.synapses))
    return ImportSummary(
        source=batch.source,
        synapses_added=len(synapses),
        synapses_unchanged=unchanged,
        neurons_added=added,
        neurons_filled=filled,
        neurons_unchanged=kept,
    )


def _normalized(frame, normalize, columns, source: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The frame in normal form (already normal frames pass through cheaply)."""
    if frame is None:
        return normalize(pd.DataFrame({c: [] for c in columns}), source)
    if tuple(frame.columns) == columns and frame["id"].dtype == np.uint64:
        return frame.reset_index(drop=True)
    return normalize(frame, source)


def _is_empty(conn: Connection, table) -> bool:  # type: ignore[no-untyped-def]
    return not conn.execute(select(exists().select_from(table))).scalar()


def _recognise_unnumbered(conn: Connection, synapses: pd.DataFrame) -> pd.DataFrame:
    """Give id-0 synapses the id of a stored synapse with the same neurons and centre.

    Files without synapse ids (butterfly arrays, plain tables) can then be imported
    again without doubling every synapse.
    """
    missing = np.flatnonzero(synapses["id"].to_numpy() == 0)
    if not missing.size or _is_empty(conn, schema.synapses):
        return synapses
    table = schema.synapses
    keys = ["pre_id", "post_id", "z", "y", "x"]
    pres = to_db(synapses["pre_id"].to_numpy()[missing])
    columns = [table.c.id, *(table.c[k] for k in keys)]
    rows = rows_where_in(conn, columns, table.c.pre_id, pres)
    if not rows:
        return synapses
    stored = to_frame(rows, ["id", *keys]).drop_duplicates(keys)
    matched = synapses.iloc[missing][keys].merge(stored, on=keys, how="left")["id"]
    found = matched.notna().to_numpy()
    if not found.any():
        return synapses
    synapses = synapses.copy()
    column = synapses.columns.get_loc("id")
    synapses.iloc[missing[found], column] = matched[found].to_numpy().astype(np.uint64)
    return synapses


def _assign_ids(conn: Connection, synapses: pd.DataFrame) -> pd.DataFrame:
    """Give id-0 synapses fresh ids above every stored and imported id."""
    missing = synapses["id"].to_numpy() == 0
    if not missing.any():
        return synapses
    stored = conn.execute(select(func.max(schema.synapses.c.id))).scalar()
    top = max(int(from_db([stored])[0]) if stored is not None else 0,
              int(synapses["id"].max()) if len(synapses) else 0)  # fmt: skip
    synapses = synapses.copy()
    synapses.loc[missing, "id"] = np.arange(top + 1, top + 1 + missing.sum(), dtype=np.uint64)
    return synapses


def _new_synapses(conn: Connection, synapses: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop synapses stored exactly so; raise on stored ones that differ."""
    if synapses.empty or _is_empty(conn, schema.synapses):
        return synapses, 0
    stored = fetch_by_ids(
        conn, schema.synapses, synapses["id"].to_numpy(), ("id", *_SYNAPSE_COMPARED)
    )
    if stored.empty:
        return synapses, 0
    stored = _decode_ids(stored, ("id", "pre_id", "post_id"))
    mine = synapses.set_index("id").loc[stored["id"].to_numpy(), list(_SYNAPSE_COMPARED)]
    theirs = stored.set_index("id")[list(_SYNAPSE_COMPARED)]
    differs = ~_rows_equal(mine.reset_index(drop=True), theirs.reset_index(drop=True))
    if differs.any():
        raise ConflictError(
            "synapses", stored["id"].to_numpy()[differs].tolist(),
            "already in the store with different contents",
        )  # fmt: skip
    known = synapses["id"].isin(stored["id"])
    return synapses[~known].reset_index(drop=True), int(known.sum())


def _rows_equal(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Row-wise equality, NaN equal to NaN/NULL, floats compared exactly."""
    same = np.ones(len(a), dtype=bool)
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if a[column].dtype.kind == "f":
            y = pd.to_numeric(pd.Series(y), errors="coerce").to_numpy(dtype=np.float64)
            same &= (x == y) | (np.isnan(x) & np.isnan(y))
        else:
            same &= np.asarray([str(p) == str(q) for p, q in zip(x, y, strict=True)], dtype=bool)
    return same


def _decode_ids(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = frame.copy()
    for column in columns:
        frame[column] = from_db(frame[column].to_numpy(dtype=np.int64))
    return frame


def _merge_neurons(
    conn: Connection, neurons: pd.DataFrame, synapses: pd.DataFrame
) -> tuple[int, int, int]:
    """Insert new neurons, fill stored ones, update counts; return (added, filled, unchanged)."""
    partners = np.concatenate([synapses["pre_id"].to_numpy(), synapses["post_id"].to_numpy()])
    partners = np.setdiff1d(np.unique(partners[partners != 0]), neurons["id"].to_numpy())
    bare = normalize_neurons(pd.DataFrame({"id": partners}), "synapse partners")
    everyone = pd.concat([neurons, bare], ignore_index=True)
    counts = _counts(synapses)
    if everyone.empty:
        return 0, 0, 0
    stored = pd.DataFrame()
    if not _is_empty(conn, schema.neurons):
        stored = fetch_by_ids(conn, schema.neurons, everyone["id"].to_numpy(), NEURON_COLUMNS)
    known = np.zeros(len(everyone), dtype=bool)
    filled = 0
    if not stored.empty:
        stored = _decode_ids(stored, ("id",))
        known = everyone["id"].isin(stored["id"]).to_numpy()
        filled = _fill_neurons(conn, everyone[known], stored)
        _add_counts(conn, counts[counts.index.isin(stored["id"])])
    fresh = everyone[~known].copy()
    fresh["n_pre"] = counts["n_pre"].reindex(fresh["id"].to_numpy(), fill_value=0).to_numpy()
    fresh["n_post"] = counts["n_post"].reindex(fresh["id"].to_numpy(), fill_value=0).to_numpy()
    fresh["id"] = to_db(fresh["id"].to_numpy(dtype=np.uint64))
    insert_frame(conn, schema.neurons, fresh)
    return len(fresh), filled, int(known.sum()) - filled


def _counts(synapses: pd.DataFrame) -> pd.DataFrame:
    """Synapses per neuron as pre and as post, indexed by uint64 id."""
    pre = synapses["pre_id"].value_counts().rename("n_pre")
    post = synapses["post_id"].value_counts().rename("n_post")
    counts = pd.concat([pre, post], axis=1).fillna(0).astype(np.int64)
    counts.index = counts.index.astype(np.uint64)
    return counts[counts.index != 0]


def _fill_neurons(conn: Connection, incoming: pd.DataFrame, stored: pd.DataFrame) -> int:
    """Fill stored neurons' empty fields from ``incoming``; raise on two differing values."""
    mine = incoming.drop_duplicates("id").set_index("id")
    theirs = stored.set_index("id").loc[mine.index]
    conflict = np.zeros(len(mine), dtype=bool)
    updates: dict[str, np.ndarray] = {}
    for column in (*_TEXT, *_KEYPOINT):
        new, old = mine[column].to_numpy(), theirs[column].to_numpy()
        if column in _TEXT:
            new_set = new != ""
            old_set = pd.Series(old).fillna("").to_numpy() != ""
            differ = np.asarray([str(a) != str(b) for a, b in zip(new, old, strict=True)], bool)
        else:
            old = pd.to_numeric(pd.Series(old), errors="coerce").to_numpy(dtype=np.float64)
            new_set, old_set = ~np.isnan(new.astype(float)), ~np.isnan(old)
            differ = new.astype(float) != old
        conflict |= new_set & old_set & differ
        updates[column] = new_set & ~old_set
    if conflict.any():
        raise ConflictError(
            "neurons", mine.index.to_numpy()[conflict].tolist(),
            "already in the store with different names, types, status, notes or keypoints",
        )  # fmt: skip
    table = schema.neurons
    filled_rows = np.zeros(len(mine), dtype=bool)
    for column, mask in updates.items():
        if not mask.any():
            continue
        filled_rows |= mask
        ids = to_db(mine.index.to_numpy(dtype=np.uint64)[mask]).tolist()
        values = mine[column].to_numpy()[mask].tolist()
        conn.execute(
            table.update()
            .where(table.c.id == bindparam("b_id"))
            .values({column: bindparam("b_value")}),
            [{"b_id": i, "b_value": v} for i, v in zip(ids, values, strict=True)],
        )
    return int(filled_rows.sum())


def _add_counts(conn: Connection, counts: pd.DataFrame) -> None:
    """Add new synapse counts to stored neurons."""
    if counts.empty:
        return
    table = schema.neurons
    rows = [
        {"b_id": i, "b_pre": int(p), "b_post": int(q)}
        for i, p, q in zip(to_db(counts.index.to_numpy(dtype=np.uint64)).tolist(),
                           counts["n_pre"], counts["n_post"], strict=True)
    ]  # fmt: skip
    conn.execute(
        table.update()
        .where(table.c.id == bindparam("b_id"))
        .values(
            n_pre=table.c.n_pre + bindparam("b_pre"), n_post=table.c.n_post + bindparam("b_post")
        ),
        rows,
    )


def _insert_synapses(conn: Connection, synapses: pd.DataFrame) -> None:
    if synapses.empty:
        return
    rows = synapses.copy()
    for column in ("id", "pre_id", "post_id"):
        rows[column] = to_db(rows[column].to_numpy(dtype=np.uint64))
    rows["cell"] = cell_of(rows["z"].to_numpy(), rows["y"].to_numpy(), rows["x"].to_numpy())
    insert_frame(conn, schema.synapses, rows)
