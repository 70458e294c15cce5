"""Helpers of the proofreading tests: the sample's cells, synapses between them, table dumps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from sqlalchemy import Connection, select

from napari_connecto.annotations import AnnotationStore, schema
from napari_connecto.proofreading.proofreader import Proofreader
from napari_connecto.volume.volume import Volume

SAMPLE_SHAPE = (8, 128, 128)
RESOLUTION = (40.0, 4.0, 4.0)
PLANES = SAMPLE_SHAPE[0]


@dataclass(frozen=True)
class Cell:
    """One sample cell: its id and the most interior voxel (y, x) of each plane."""

    id: int
    interior: dict[int, tuple[int, int]]

    def site(self, z: int) -> tuple[float, float, float]:
        """The nm centre of the cell's most interior voxel in plane ``z``."""
        y, x = self.interior[z]
        return voxel_nm((z, y, x))


def voxel_nm(voxel: tuple[int, int, int]) -> tuple[float, float, float]:
    """The nm centre of a voxel of the finest scale."""
    return tuple((v + 0.5) * r for v, r in zip(voxel, RESOLUTION))  # type: ignore[return-value]


def cells_of(labels: np.ndarray, count: int = 5) -> list[Cell]:
    """The ``count`` largest cells present in every plane, largest first."""
    ids, sizes = np.unique(labels, return_counts=True)
    everywhere = [i for i in ids if all((labels[z] == i).any() for z in range(PLANES))]
    chosen = sorted(everywhere, key=lambda i: -int(sizes[np.searchsorted(ids, i)]))[:count]
    cells = []
    for cid in chosen:
        interior = {}
        for z in range(PLANES):
            depth = ndimage.distance_transform_edt(labels[z] == cid)
            y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
            interior[z] = (int(y), int(x))
        cells.append(Cell(int(cid), interior))
    return cells


def far_site(labels: np.ndarray, cell: Cell, z: int) -> tuple[float, float, float]:
    """The nm centre of the cell's voxel in plane ``z`` farthest from its interior voxel.

    Only voxels at least two voxels from the cell's edge count, so the site is safely
    inside the cell.
    """
    depth = ndimage.distance_transform_edt(labels[z] == cell.id)
    ys, xs = np.nonzero(depth >= 2)
    y0, x0 = cell.interior[z]
    i = int(np.argmax((ys - y0) ** 2 + (xs - x0) ** 2))
    return voxel_nm((z, int(ys[i]), int(xs[i])))


SYNAPSES = ((0, 1, 1), (1, 2, 2), (2, 0, 3), (0, 3, 4), (3, 1, 5), (1, 0, 6))
"""``(pre cell, post cell, plane)`` of synapses 1, 2, ... (cell indices of :func:`cells_of`)."""


def synapse_frame(labels: np.ndarray, cells: list[Cell]) -> pd.DataFrame:
    """Synapses :data:`SYNAPSES`: sites at the cells' interior voxels, ids 1, 2, ..."""
    rows = []
    for sid, (pre, post, z) in enumerate(SYNAPSES, start=1):
        a, b = cells[pre].site(z), cells[post].site(z)
        row = {"id": sid, "pre_id": cells[pre].id, "post_id": cells[post].id}
        row.update({f"pre_{k}": v for k, v in zip("zyx", a)})
        row.update({f"post_{k}": v for k, v in zip("zyx", b)})
        row.update(confidence=0.5 + sid / 100, created=1000.0 + sid, updated=1000.0 + sid)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["id"] = frame["id"].astype(np.uint64)
    for column in ("pre_id", "post_id"):
        frame[column] = frame[column].astype(np.uint64)
    return frame


# -- what a user would see ---------------------------------------------------------------
def dump_store(store: AnnotationStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the synapse, neuron (with counts) and assignment tables, in order."""

    def run(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
        out = {}
        for table in (schema.synapses, schema.neurons, schema.assignments):
            keys = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*keys))]
        return out

    return store.run_read(run)


def dump_volume(volume: Volume) -> list[np.ndarray]:
    """Every scale of the volume, read from storage."""
    volume.refresh()
    return [volume.read_voxels(i, (0, 0, 0), sc.shape) for i, sc in enumerate(volume.scales)]


@dataclass
class Snapshot:
    """Store rows and voxels at one moment."""

    rows: dict[str, list[tuple[Any, ...]]]
    voxels: list[np.ndarray]
    __hash__ = None  # type: ignore[assignment]  # compared, never hashed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (
            self.rows == other.rows
            and len(self.voxels) == len(other.voxels)
            and all(np.array_equal(a, b) for a, b in zip(self.voxels, other.voxels))
        )

    def diff(self, other: Snapshot) -> str:
        """What differs (for assertion messages)."""
        lines = [f"{t}: {len(a)} vs {len(other.rows[t])} rows" for t, a in self.rows.items()]
        for t, a in self.rows.items():
            extra = set(a) ^ set(other.rows[t])
            lines += [f"  {t} differs: {r}" for r in sorted(extra, key=repr)[:6]]
        for i, (a, b) in enumerate(zip(self.voxels, other.voxels)):
            lines.append(f"scale {i}: {int(np.count_nonzero(a != b))} voxels differ")
        return "\n".join(lines)


def snapshot(pr: Proofreader) -> Snapshot:
    """The store rows and every scale's voxels, after pending write-backs finished."""
    assert pr.commit(timeout=30.0)
    voxels = dump_volume(pr.volume) if pr.volume is not None else []
    return Snapshot(dump_store(pr.store), voxels)


@dataclass
class Workspace:
    """A private copy of the sample segmentation and a store with synapses."""

    store_url: str
    seg: str
    """The segmentation's path (OME-Zarr labels, three scales)."""
    image: str
    """The OME-Zarr image (the EM) the segmentation belongs to."""
    labels: np.ndarray
    """The segmentation as generated (before any edit)."""
    cells: list[Cell]
    opened: list[Proofreader] = field(default_factory=list)

    def open(self, author: str = "alice", **options: Any) -> Proofreader:
        """A proofreader over the store and segmentation (writing back synchronously)."""
        options.setdefault("background", False)
        pr = Proofreader(self.store_url, self.seg, author=author, **options)
        self.opened.append(pr)
        return pr

    def reopen(self, pr: Proofreader, **options: Any) -> Proofreader:
        """Close ``pr`` (store and all) and open a new proofreader of the same author."""
        close(pr)
        self.opened.remove(pr)
        return self.open(pr.author, **options)

    def close_all(self) -> None:
        """Close every proofreader still open."""
        for pr in self.opened:
            close(pr)
        self.opened.clear()

    def synapse(self, store: AnnotationStore, sid: int) -> pd.Series:
        """One synapse row as the store reports it."""
        return store.synapse(sid)


def close(pr: Proofreader) -> None:
    """Close a proofreader and its volume."""
    pr.close()
    if pr.volume is not None:
        pr.volume.close()


def neuron_counts(store: AnnotationStore, nid: int) -> tuple[int, int]:
    """``(n_pre, n_post)`` of a neuron as stored."""
    row = store.neuron(nid)
    return int(row["n_pre"]), int(row["n_post"])


def counted(store: AnnotationStore, nid: int) -> tuple[int, int]:
    """``(n_pre, n_post)`` counted from the synapse table."""
    frame = store.synapses(None, include_self=True)
    return int((frame["pre_id"] == np.uint64(nid)).sum()), int(
        (frame["post_id"] == np.uint64(nid)).sum()
    )
