"""Merges and cleaves of a segmentation whose agglomeration a server keeps (DVID labelmap).

The edit is journaled first, like every edit: the store's synapse partners follow at
once, in the journal's transaction. The server mutation is the edit's write-back, done by
the write-back worker in journal order and replayed after a crash. Each write-back looks
at the server's mapping of the edit's supervoxels first, so a replay never repeats a
mutation that already happened:

- merge ``absorb`` into ``keep``: ``POST merge [keep, absorb]``; its undo cleaves the
  recorded supervoxels off ``keep`` and renumbers the cleaved label back to ``absorb``,
  so the server reads exactly as before;
- cleave supervoxels of ``segment`` into ``new`` (an id reserved with ``nextlabel``):
  ``POST cleave`` and a renumber of the server's new label to ``new``; its undo merges
  ``new`` back into ``segment``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto import _killpoints
from napari_connecto.annotations.ids import from_db_one
from napari_connecto.errors import EditError, RemoteError
from napari_connecto.proofreading.assignments import edit_keys, follow_cleave, follow_merge
from napari_connecto.proofreading.journal import EditRecord

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from napari_connecto.dvid.client import DvidClient
    from napari_connecto.proofreading.assignments import FragmentLookup
    from napari_connecto.volume.volume import Volume

__all__ = [
    "DvidAgglomeration",
    "agglomeration_of",
    "aligned_box",
    "check_paint_labels",
    "apply_server_edit",
    "server_cleave_record",
    "server_labels",
    "server_merge_record",
    "supervoxel_volume",
    "write_block",
]

SERVER = "dvid"
"""``payload["server"]`` of an edit whose write-back is a server mutation."""


@dataclass(frozen=True, slots=True)
class DvidAgglomeration:
    """The merge mapping of one DVID labelmap instance, read and changed on the server."""

    client: DvidClient
    """Client of the server."""
    uuid: str
    """The (unlocked) node edited."""
    instance: str
    """The labelmap instance."""
    voxel_offset: tuple[int, int, int] = (0, 0, 0)
    """DVID coordinates (z, y, x) of the volume's voxel index 0 at scale 0."""

    def supervoxels(self, label: int) -> list[int]:
        """Supervoxels of a label (empty if the server has no such label)."""
        try:
            return sorted(self.client.supervoxels(self.uuid, self.instance, label))
        except RemoteError as exc:
            if exc.status == 404:
                return []
            raise

    def mapping(self, supervoxels: Sequence[int]) -> list[int]:
        """Labels the supervoxels belong to now."""
        return self.client.mapping(self.uuid, self.instance, supervoxels)

    def supervoxels_at(self, voxels_zyx: np.ndarray) -> np.ndarray:
        """Supervoxel ids at scale-0 voxel indices ``(N, 3)`` (one request)."""
        points = np.asarray(voxels_zyx, dtype=np.int64).reshape(-1, 3) + self.voxel_offset
        return self.client.labels_at(self.uuid, self.instance, points, supervoxels=True)

    def new_label(self, count: int = 1) -> int:
        """The first of ``count`` label ids reserved on the server (``nextlabel``)."""
        start, _ = self.client.next_label(self.uuid, self.instance, count)
        return start

    def merge(self, keep: int, absorb: int) -> None:
        """``POST merge [keep, absorb]``."""
        self.client.merge(self.uuid, self.instance, keep, [absorb])

    def cleave(self, label: int, supervoxels: Sequence[int]) -> int:
        """``POST cleave/label``; the server's new label."""
        return self.client.cleave(self.uuid, self.instance, label, supervoxels)

    def renumber(self, new: int, old: int) -> None:
        """``POST renumber [new, old]``."""
        self.client.renumber(self.uuid, self.instance, [(new, old)])


def supervoxel_volume(volume: Volume) -> Volume:
    """The same DVID labelmap read as supervoxels (what paint edits write), opened ``r+``."""
    from dataclasses import replace

    from napari_connecto.opening import open_volume

    backend = volume.backend
    address = replace(backend.address, supervoxels=True)  # type: ignore[attr-defined]
    return open_volume(str(address), mode="r+" if volume.writable else "r")


def write_block(volume: Volume) -> tuple[int, int, int]:
    """The z, y, x block a server's writes must be aligned to."""
    return tuple(int(v) for v in volume.backend.write_block)  # type: ignore[attr-defined,return-value]


def aligned_box(
    start: Sequence[int], stop: Sequence[int], block: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The smallest block-aligned box holding ``[start, stop)``."""
    lo = tuple(a // b * b for a, b in zip(start, block, strict=True))
    hi = tuple(-(-e // b) * b for e, b in zip(stop, block, strict=True))
    return lo, hi


def check_paint_labels(server: DvidAgglomeration, labels: Sequence[int]) -> None:
    """Refuse labels whose supervoxel of the same id belongs to another body.

    A painted voxel is written as supervoxel ``label``; that reads as ``label`` unless
    the server maps a supervoxel of that id to another body.
    """
    wanted = sorted({int(v) for v in labels} - {0})
    if not wanted:
        return
    for label, body in zip(wanted, server.mapping(wanted), strict=True):
        if body not in (0, label):
            raise EditError(
                f"label {label} cannot be painted on the server: its supervoxel {label} "
                f"belongs to body {body}; paint with {body} or a new id"
            )


def agglomeration_of(volume: Volume) -> DvidAgglomeration | None:
    """The server agglomeration behind ``volume``, or ``None`` if the plugin keeps it."""
    backend = volume.backend
    if not backend.server_agglomeration:
        return None
    from napari_connecto.backends.dvid import DvidBackend

    if not isinstance(backend, DvidBackend):
        raise EditError(f"{volume.source}: merge and cleave on {volume.format} are not supported")
    address = backend.address
    offset = tuple(int(v) for v in backend.scales[0].voxel_offset)
    return DvidAgglomeration(backend.client, address.uuid, address.instance, offset)  # type: ignore[arg-type]


# -- journal records -----------------------------------------------------------------------
def server_merge_record(  # noqa: PLR0917 - keep/absorb read best in order
    conn: Connection, volume: str, keep: int, absorb: int, moved: Sequence[int], now: float
) -> EditRecord:
    """Merge ``absorb`` (supervoxels ``moved``) into ``keep``, all database ids."""
    changes = follow_merge(conn, keep, absorb, now)
    return EditRecord(
        kind="merge",
        volume=volume,
        summary=(
            f"merge {from_db_one(absorb)} into {from_db_one(keep)} "
            f"({len(moved)} supervoxels, on the server)"
        ),
        keys=edit_keys(volume, (keep, absorb), changes),
        changes=tuple(changes),
        extra={"keep": keep, "absorb": absorb, "fragments": list(moved), "server": SERVER},
        remote=True,
    )


def server_cleave_record(
    conn: Connection,
    volume: str,
    segment: int,
    chosen: Sequence[int],
    new_segment: int,
    *,
    fragment_at: FragmentLookup,
    now: float,
) -> EditRecord:
    """Cleave supervoxels ``chosen`` of ``segment`` into ``new_segment`` (database ids)."""
    changes = follow_cleave(
        conn, segment, set(chosen), new_segment, fragment_at=fragment_at, now=now
    )
    return EditRecord(
        kind="cleave",
        volume=volume,
        summary=(
            f"cleave {len(chosen)} supervoxel(s) of {from_db_one(segment)} into "
            f"{from_db_one(new_segment)} (on the server)"
        ),
        keys=edit_keys(volume, (segment, new_segment), changes),
        changes=tuple(changes),
        extra={
            "segment": segment,
            "new_segment": new_segment,
            "fragments": list(chosen),
            "server": SERVER,
        },
        remote=True,
    )


def server_labels(payload: dict[str, Any]) -> list[int]:
    """The labels a server merge or cleave changes (none for other edits)."""
    if payload.get("server") != SERVER:
        return []
    names = ("keep", "absorb") if "keep" in payload else ("segment", "new_segment")
    return [from_db_one(int(payload[n])) for n in names]


# -- write-back ------------------------------------------------------------------------------
def apply_server_edit(
    server: DvidAgglomeration, kind: str, payload: dict[str, Any], direction: str
) -> list[int]:
    """Bring the server to the state after (``"do"``) or before (``"undo"``) an edit.

    Returns the labels whose voxels now read differently (for cache invalidation).

    Raises
    ------
    EditError
        If the server's mapping of the edit's supervoxels is neither the state before
        nor after it (someone else changed them on the server).
    RemoteError
        If a request fails; the write-back is retried or marked failed.
    """
    svs = [from_db_one(int(v)) for v in payload["fragments"]]
    if kind == "merge":
        keep, absorb = from_db_one(payload["keep"]), from_db_one(payload["absorb"])
        if direction == "do":
            _move(server, svs, source=absorb, target=keep, merge_into=keep)
        else:
            _move(server, svs, source=keep, target=absorb, cleave_from=keep)
        return [keep, absorb]
    if kind == "cleave":
        segment, new = from_db_one(payload["segment"]), from_db_one(payload["new_segment"])
        if direction == "do":
            _move(server, svs, source=segment, target=new, cleave_from=segment)
        else:
            _move(server, svs, source=new, target=segment, merge_into=segment)
        return [segment, new]
    raise EditError(f"a {kind} edit has no server write-back")


def _move(
    server: DvidAgglomeration,
    svs: list[int],
    *,
    source: int,
    target: int,
    merge_into: int | None = None,
    cleave_from: int | None = None,
) -> None:
    """Make every supervoxel of ``svs`` belong to ``target`` (they belong to ``source``)."""
    now = set(server.mapping(svs))
    if now == {target}:
        return  # done already (a replay after a crash)
    if len(now) != 1 or 0 in now:
        raise EditError(
            f"the server maps the edit's supervoxels to {sorted(now)[:5]}, expected "
            f"{source} or {target}: they were changed elsewhere; nothing was done"
        )
    (label,) = now
    if label not in (source, cleave_from) and set(server.supervoxels(label)) != set(svs):
        raise EditError(
            f"label {label} holds the edit's supervoxels, expected {source}: they were "
            "changed elsewhere; nothing was done"
        )
    # ``label`` is now the source, or a label holding exactly the edit's supervoxels: the
    # cleave of an earlier attempt whose answer was lost or that crashed before renumbering
    if merge_into is not None:
        server.merge(merge_into, label)
        return
    assert cleave_from is not None
    if label == cleave_from:
        label = server.cleave(cleave_from, svs)
        _killpoints.reach("mid-server-edit")
    if label != target:
        server.renumber(target, label)
