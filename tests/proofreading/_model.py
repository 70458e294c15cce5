"""A reference model of the edits a writer announced: what they must have done.

Built only from the writer's ``INTENT``/``ACK`` lines (and, for an edit committed just
before a kill, from its journal row): each edit records the values it changed in the
model's own state, so undo and redo restore exactly those. Compared with the store and
the volume by :func:`check_model`.
"""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tests.proofreading._support import (
    Dataset,
    Replay,
    connect,
    from_db,
    journal_rows,
    paint_mask,
)


@dataclass
class Model:
    """What the writer's edits must have done: voxels, assignments, synapses.

    Each edit records the values it changed (computed here, from the model's own state),
    so undo and redo restore exactly those.
    """

    voxels: np.ndarray
    volume_key: str
    mapping: dict[int, int] = field(default_factory=dict)
    synapses: dict[int, dict[str, Any]] = field(default_factory=dict)
    diffs: dict[int, list[tuple[str, Any, Any, Any]]] = field(default_factory=dict)
    last_seq: int = 0
    acked: dict[int, str] = field(default_factory=dict)
    """Acknowledged seq -> kind (edits and undo/redo markers)."""
    edits: int = 0

    # feeding ------------------------------------------------------------------------
    def feed(self, ds: Dataset, lines: list[tuple[str, dict[str, Any]]]) -> None:
        """Apply one writer life's acknowledged edits; then its last announced one if committed."""
        intent: dict[str, Any] | None = None
        for tag, body in lines:
            if tag == "INTENT":
                intent = body
            elif tag == "ACK":
                assert intent is not None
                self._apply(intent, body, acked=True)
                intent = None
            elif tag == "REFUSED":
                intent = None
        late = journal_rows(ds, self.last_seq)
        assert len(late) <= (1 if intent is not None else 0), (
            f"journal rows {[r['seq'] for r in late]} after the last acknowledged edit "
            f"{self.last_seq} (announced but unacknowledged: {intent})"
        )
        if late and intent is not None:
            row = late[0]
            payload = json.loads(row["payload"])
            self._apply(intent, _ack_from_row(intent, row, payload), acked=False)

    def _apply(self, op: dict[str, Any], ack: dict[str, Any], *, acked: bool) -> None:
        kind = op["op"]
        if kind in ("undo", "redo"):
            if ack["ref"] is None:
                return
            seq = ack["marker"]
            self._flip(ack["ref"], "undo" if kind == "undo" else "do")
        else:
            seq = ack.get("seq")
            if seq is None:
                assert kind == "paint" and not self._paint(op, dry=True), op
                return
            self.diffs[seq] = getattr(self, f"_{kind}")(op, ack)
            self.edits += 1
        assert seq > self.last_seq, (seq, self.last_seq)
        self.last_seq = seq
        if acked:
            self.acked[seq] = kind

    def _flip(self, seq: int, direction: str) -> None:
        diff = self.diffs[seq] if direction == "do" else self.diffs[seq][::-1]
        for what, key, before, after in diff:
            value = after if direction == "do" else before
            if what == "voxels":
                box, changed = key
                self.voxels[box][changed] = value
            elif what == "mapping":
                self._set_mapping(key, value)
            elif value is None:
                self.synapses.pop(key, None)
            else:
                self.synapses[key] = dict(value)

    # edits ---------------------------------------------------------------------------
    def _paint(self, op: dict[str, Any], ack: dict[str, Any] | None = None, *, dry: bool = False):
        start, shape = op["start"], tuple(op["shape"])
        box = tuple(slice(a, a + n) for a, n in zip(start, shape))
        mask = paint_mask(shape, op["mask_seed"])
        before = self.voxels[box].copy()
        after = before.copy()
        after[mask] = np.uint64(op["label"])
        changed = before != after
        if dry:
            return bool(changed.any())
        self.voxels[box][changed] = after[changed]
        return [("voxels", (box, changed), before[changed], after[changed])]

    def segment(self, fragment: int) -> int:
        """The model's segment of a fragment."""
        return self.mapping.get(fragment, fragment)

    def _set_mapping(self, fragment: int, segment: int | None) -> None:
        if segment is None or segment == fragment:
            self.mapping.pop(fragment, None)
        else:
            self.mapping[fragment] = segment

    def _assign(self, fragments: list[int], to: int) -> list[tuple[str, Any, Any, Any]]:
        diff = []
        for f in sorted(set(fragments)):
            before = self.mapping.get(f)
            self._set_mapping(f, to)
            diff.append(("mapping", f, before, self.mapping.get(f)))
        return diff

    def _merge(self, op: dict[str, Any], ack: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
        keep, absorb = op["keep"], op["absorb"]
        moved = [f for f, s in self.mapping.items() if s == absorb]
        if absorb not in self.mapping:
            moved.append(absorb)
        return self._assign(sorted(moved), keep)

    def _cleave(self, op: dict[str, Any], ack: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
        return self._assign(op["fragments"], ack["new"])

    def _syn_add(self, op: dict[str, Any], ack: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
        (sid,) = ack["ids"]
        row = {"pre": list(op["pre"]), "post": list(op["post"]), "status": "unreviewed"}
        self.synapses[sid] = row
        return [("synapse", sid, None, dict(row))]

    def _syn_update(self, sid: int, **changes: Any) -> list[tuple[str, Any, Any, Any]]:
        before = self.synapses.get(sid)
        if before is None:
            return []
        after = {**before, **changes}
        self.synapses[sid] = after
        return [("synapse", sid, dict(before), dict(after))]

    def _syn_move(self, op: dict[str, Any], ack: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
        return self._syn_update(op["sid"], post=list(op["post"]))

    def _syn_status(
        self, op: dict[str, Any], ack: dict[str, Any]
    ) -> list[tuple[str, Any, Any, Any]]:
        return self._syn_update(op["sid"], status=op["status"])

    def _syn_partners(
        self, op: dict[str, Any], ack: dict[str, Any]
    ) -> list[tuple[str, Any, Any, Any]]:
        return []

    def _syn_delete(
        self, op: dict[str, Any], ack: dict[str, Any]
    ) -> list[tuple[str, Any, Any, Any]]:
        before = self.synapses.pop(op["sid"], None)
        return [("synapse", op["sid"], before, None)] if before is not None else []


def _ack_from_row(op: dict[str, Any], row: dict[str, Any], payload: dict[str, Any]) -> dict:
    """What the writer would have printed for an edit committed just before the kill."""
    kind = op["op"]
    expected = {"syn_add": "synapse_add", "syn_move": "synapse_move",
                "syn_status": "synapse_status", "syn_delete": "synapse_delete",
                "syn_partners": "synapse_partners"}.get(kind, kind)  # fmt: skip
    assert row["kind"] == expected, (op, row["kind"])
    if kind in ("undo", "redo"):
        return {"ref": row["ref"], "marker": row["seq"]}
    ack: dict[str, Any] = {"seq": row["seq"]}
    if kind == "cleave":
        ack["new"] = from_db(payload["new_segment"])
    if kind == "syn_add":
        ack["ids"] = [from_db(i) for i in payload["synapses"]]
    return ack


def check_model(ds: Dataset, model: Model, replay: Replay, finest: np.ndarray) -> None:
    """Acknowledged edits are in the journal; voxels, assignments, synapses as announced."""
    for seq, kind in model.acked.items():
        assert seq in replay.kinds, f"acknowledged edit {seq} ({kind}) is not in the journal"
    assert np.array_equal(model.voxels, finest), "voxels differ from the announced edits"
    with closing(connect(ds)) as conn:
        rows = conn.execute(
            "SELECT fragment, segment FROM assignments WHERE volume = ?", (model.volume_key,)
        ).fetchall()
        mapping = {from_db(f): from_db(s) for f, s in rows}
        assert mapping == model.mapping, "assignments differ from the announced merges/cleaves"
        syn = {
            r["id"]: {
                "pre": [r["pre_z"], r["pre_y"], r["pre_x"]],
                "post": [r["post_z"], r["post_y"], r["post_x"]],
                "status": r["status"],
            }
            for r in conn.execute("SELECT * FROM synapses")
        }
    assert syn == model.synapses, "synapses differ from the announced edits"
