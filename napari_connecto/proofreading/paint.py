"""Paint edits as journal records: voxels before and after, synapses following the new labels.

A paint edit is built from a :class:`~napari_connecto.proofreading.patches.VoxelPatch`
at full resolution (fragment ids as stored). Its conflict keys are the segments of
every id it removed or wrote; synapses whose pre or post site lies on a changed voxel
take the segment now painted there, so splitting by painting keeps partners true.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from napari_connecto.annotations import schema
from napari_connecto.annotations.ids import from_db_one, to_db
from napari_connecto.annotations.queries import box_clause
from napari_connecto.geometry import BBox
from napari_connecto.proofreading.assignments import ensure_neurons, relabel_synapses, segments_of
from napari_connecto.proofreading.journal import EditRecord, segment_key, synapse_key
from napari_connecto.proofreading.patches import VoxelPatch

__all__ = ["VoxelFrame", "paint_record"]

SITE_REACH_NM = 1500.0
"""Synapse sites lie within this distance of their centre (the box query is padded by it):
pre and post sites sit on either side of a cleft tens of nm wide, annotated well inside
their cells."""


@dataclass(frozen=True, slots=True)
class VoxelFrame:
    """How voxel indices of the edited scale map to nm."""

    resolution: tuple[float, float, float]
    """Voxel size, nm, z, y, x."""
    origin: tuple[float, float, float]
    """Position of voxel (0, 0, 0)'s corner, nm."""

    def to_voxels(self, positions_nm: np.ndarray) -> np.ndarray:
        """Voxel indices holding ``(N, 3)`` positions."""
        res = np.asarray(self.resolution)
        org = np.asarray(self.origin)
        return np.floor((np.asarray(positions_nm, dtype=np.float64) - org) / res).astype(np.int64)

    def box(self, patch: VoxelPatch) -> BBox:
        """The nm box of a patch."""
        res = np.asarray(self.resolution)
        org = np.asarray(self.origin)
        return BBox.of(org + np.asarray(patch.start) * res, org + np.asarray(patch.stop) * res)


def paint_record(
    conn: Connection,
    volume: str,
    patch: VoxelPatch,
    frame: VoxelFrame,
    *,
    now: float,
    label: str,
    segments: Iterable[int] | None = None,
) -> EditRecord:
    """The journal record of painting ``patch`` into ``volume``.

    ``segments`` (database ids) names the segments the edit touches when a server keeps
    the agglomeration; by default they are looked up from the patch's fragments.
    """
    ids = [int(i) for i in to_db(patch.ids().astype(np.uint64))]
    seg = segments_of(conn, volume, ids)
    touched = seg.values() if segments is None else segments
    keys = {segment_key(volume, s) for s in touched}
    syn = _follow_paint(conn, volume, patch, frame, now)
    changes: list[Any] = []
    if syn:
        changes += ensure_neurons(
            conn, [v for c in syn for k, v in c.after.items() if k in ("pre_id", "post_id")]
        )
    changes += syn
    keys.update(synapse_key(c.key[0]) for c in syn)
    written = sorted({from_db_one(seg[i]) for i in to_db(np.unique(patch.after[patch.mask]))})
    return EditRecord(
        kind="paint",
        volume=volume,
        summary=(
            f"{label} {patch.changed_voxels} voxels "
            f"({', '.join(map(str, written[:3]))}{'...' if len(written) > 3 else ''})"
        ),
        keys=frozenset(keys),
        changes=tuple(changes),
        patch=patch,
        extra={"start": list(patch.start), "shape": list(patch.shape)},
    )


def _follow_paint(
    conn: Connection, volume: str, patch: VoxelPatch, frame: VoxelFrame, now: float
) -> list[Any]:
    """Changes moving synapse sites on changed voxels to the segment painted there."""
    box = frame.box(patch)
    pad = np.full(3, SITE_REACH_NM)
    query_box = BBox.of(
        np.asarray(box.start.as_tuple()) - pad, np.asarray(box.stop.as_tuple()) + pad
    )
    s = schema.synapses
    rows = [dict(r) for r in conn.execute(select(s).where(box_clause(query_box))).mappings()]
    if not rows:
        return []
    mask = patch.mask
    updates: dict[int, dict[str, int]] = {}
    lookups: dict[int, int] = {}
    for site in ("pre", "post"):
        pos = np.array([[r[f"{site}_{a}"] for a in "zyx"] for r in rows], dtype=np.float64)
        local = frame.to_voxels(pos) - np.asarray(patch.start)
        inside = np.all((local >= 0) & (local < np.asarray(patch.shape)), axis=1)
        for i in np.flatnonzero(inside):
            z, y, x = local[i]
            if not mask[z, y, x]:
                continue
            fragment = int(to_db(np.array([patch.after[z, y, x]], dtype=np.uint64))[0])
            if fragment not in lookups:
                lookups[fragment] = segments_of(conn, volume, [fragment])[fragment]
            updates.setdefault(int(rows[i]["id"]), {})[f"{site}_id"] = lookups[fragment]
    return relabel_synapses(conn, updates, now)
