"""Every kind of edit through the Proofreader, on the sample, on SQLite and PostgreSQL.

Each edit is checked for what a proofreader sees afterwards (display mapping, voxels at
every scale, synapse partners, neuron counts), then undone and redone, in the session
and across restarts: undo must give back byte-identical store rows and voxels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from napari_connecto.proofreading.proofreader import Proofreader
from tests.proofreading.helpers import (
    Snapshot,
    Workspace,
    counted,
    far_site,
    neuron_counts,
    snapshot,
)

U64 = np.uint64


def check_counts(pr: Proofreader) -> None:
    """Every neuron's stored n_pre/n_post agree with the synapse table."""
    neurons = pr.store.neurons()
    synapses = pr.store.synapses(None, include_self=True)
    pre = synapses["pre_id"].value_counts()
    post = synapses["post_id"].value_counts()
    for nid, n_pre, n_post in zip(neurons["id"], neurons["n_pre"], neurons["n_post"]):
        assert (int(n_pre), int(n_post)) == (int(pre.get(nid, 0)), int(post.get(nid, 0))), nid
    partners = set(synapses["pre_id"]) | set(synapses["post_id"])
    assert partners - {U64(0)} <= set(neurons["id"]), "every synapse partner has a neuron row"


def partner(pr: Proofreader, sid: int) -> tuple[int, int]:
    return pr.store.synapse_neurons(sid)


# -- the edits ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """One kind of edit: optional set-up, the edit, and what the user must see after it."""

    setup: Callable[[Workspace, Proofreader], None]
    edit: Callable[[Workspace, Proofreader], Any]
    check: Callable[[Workspace, Proofreader, Any, Snapshot], None]


def nothing(ws: Workspace, pr: Proofreader) -> None:
    return None


def merge_ab(ws: Workspace, pr: Proofreader) -> int:
    a, b = ws.cells[0], ws.cells[1]
    return pr.merge(a.id, b.id)


def check_merge(ws: Workspace, pr: Proofreader, _: Any, before: Snapshot) -> None:
    a, b, c = ws.cells[:3]
    assert pr.segment_at([b.site(0), a.site(0), c.site(0)]).tolist() == [a.id, a.id, c.id]
    assert sorted(pr.fragments_of(a.id).tolist()) == sorted([a.id, b.id])
    assert pr.mapping()(np.array([b.id, c.id], dtype=U64)).tolist() == [a.id, c.id]
    assert pr.store.count_synapses(b.id) == 0
    assert partner(pr, 1) == (a.id, a.id)  # was A -> B
    assert partner(pr, 2) == (a.id, c.id)  # was B -> C
    assert neuron_counts(pr.store, a.id) == counted(pr.store, a.id) == (4, 4)
    assert neuron_counts(pr.store, b.id) == (0, 0)


def cleave_b(ws: Workspace, pr: Proofreader) -> tuple[int, int, set[int]]:
    a, b = ws.cells[0], ws.cells[1]
    known = set(np.unique(ws.labels).tolist()) | set(pr.store.neurons()["id"].tolist())
    return (*pr.cleave(a.id, [b.id]), known)


def check_cleave(ws: Workspace, pr: Proofreader, result: Any, before: Snapshot) -> None:
    a, b, c, d = ws.cells[:4]
    _, new, known = result
    assert new not in known
    assert new not in np.unique(pr.volume.read_voxels(0, (0, 0, 0), pr.volume.shape))
    assert pr.segment_at([b.site(2), a.site(2)]).tolist() == [new, a.id]
    assert b.id in pr.fragments_of(new).tolist()
    assert pr.fragments_of(a.id).tolist() == [a.id]
    # synapses with a site in B follow B to the new segment, the rest stay with A
    assert partner(pr, 1) == (a.id, new)
    assert partner(pr, 2) == (new, c.id)
    assert partner(pr, 5) == (d.id, new)
    assert partner(pr, 6) == (new, a.id)
    assert partner(pr, 4) == (a.id, d.id)
    assert neuron_counts(pr.store, new) == (2, 2)
    assert neuron_counts(pr.store, a.id) == (2, 2)


def _box_mask(ws: Workspace, cell: int, z: int, half: int) -> tuple[tuple[int, int, int], Any]:
    c = ws.cells[cell]
    y, x = c.interior[z]
    start = (z, max(0, y - half), max(0, x - half))
    block = ws.labels[z : z + 1, start[1] : y + half, start[2] : x + half]
    return start, block == U64(c.id)


def paint_a(ws: Workspace, pr: Proofreader) -> tuple[int | None, int, Any]:
    start, mask = _box_mask(ws, 0, 1, 12)
    new = pr.new_id()
    return pr.paint(start, mask, new), new, (start, mask)


def check_paint(ws: Workspace, pr: Proofreader, result: Any, before: Snapshot) -> None:
    seq, new, (start, mask) = result
    assert seq is not None
    a, b = ws.cells[0], ws.cells[1]
    finest = pr.volume.read_voxels(0, (0, 0, 0), pr.volume.shape)
    z, y0, x0 = start
    region = finest[z : z + 1, y0 : y0 + mask.shape[1], x0 : x0 + mask.shape[2]]
    assert (region[mask] == U64(new)).all()
    outside = np.ones(finest.shape, bool)
    outside[z : z + 1, y0 : y0 + mask.shape[1], x0 : x0 + mask.shape[2]] = ~mask
    assert np.array_equal(finest[outside], before.voxels[0][outside])
    y, x = a.interior[1]
    assert pr.volume.read_voxels(1, (1, y // 2, x // 2), (2, y // 2 + 1, x // 2 + 1)).item() == new
    assert pr.volume.read_voxels(2, (1, y // 4, x // 4), (2, y // 4 + 1, x // 4 + 1)).item() == new
    assert pr.segment_at([a.site(1)]).tolist() == [new]
    assert partner(pr, 1) == (new, b.id)  # its pre site was painted
    assert partner(pr, 4) == (a.id, ws.cells[3].id)  # plane 4: not painted
    assert neuron_counts(pr.store, new) == (1, 0)


def erase_b(ws: Workspace, pr: Proofreader) -> tuple[int | None, Any]:
    start, mask = _box_mask(ws, 1, 1, 6)
    return pr.erase(start, mask), (start, mask)


def check_erase(ws: Workspace, pr: Proofreader, result: Any, before: Snapshot) -> None:
    seq, (start, mask) = result
    assert seq is not None
    a, b = ws.cells[0], ws.cells[1]
    z, y0, x0 = start
    block = pr.volume.read_voxels(0, start, (z + 1, y0 + mask.shape[1], x0 + mask.shape[2]))
    assert (block[mask] == 0).all() and mask.sum() > 50
    assert partner(pr, 1) == (a.id, 0)  # its post site was erased
    assert neuron_counts(pr.store, b.id) == (2, 1)
    assert U64(0) not in set(pr.store.neurons()["id"])


def split_c(ws: Workspace, pr: Proofreader) -> tuple[int, list[int]]:
    c = ws.cells[2]
    return pr.split(c.id, {1: [c.site(3)], 2: [far_site(ws.labels, c, 3)]})


def check_split(ws: Workspace, pr: Proofreader, result: Any, before: Snapshot) -> None:
    c = ws.cells[2]
    _, (new,) = result
    finest = pr.volume.read_voxels(0, (0, 0, 0), pr.volume.shape)
    changed = finest != before.voxels[0]
    assert changed.any() and (before.voxels[0][changed] == U64(c.id)).all()
    assert (finest[changed] == U64(new)).all() and changed[3].sum() == changed.sum()
    assert pr.segment_at([c.site(3), far_site(ws.labels, c, 3)]).tolist() == [c.id, new]


def add_polyadic(ws: Workspace, pr: Proofreader) -> int:
    a, b, c = ws.cells[:3]
    return pr.add_synapse(a.site(7), [b.site(7), c.site(7)], confidence=0.9)


def check_add(ws: Workspace, pr: Proofreader, _: Any, before: Snapshot) -> None:
    a, b, c = ws.cells[:3]
    frame = pr.store.synapses(a.id, post=False)
    new = frame[frame["id"] > U64(6)]
    assert new["id"].tolist() == [7, 8]
    assert new["pre_id"].tolist() == [a.id, a.id]
    assert new["post_id"].tolist() == [b.id, c.id]
    assert new[["pre_z", "pre_y", "pre_x"]].drop_duplicates().shape[0] == 1
    assert new["status"].tolist() == ["unreviewed"] * 2
    assert new["confidence"].tolist() == [0.9, 0.9]
    assert neuron_counts(pr.store, a.id) == (4, 2)


def move_post(ws: Workspace, pr: Proofreader) -> int:
    return pr.move_synapse(1, post=ws.cells[2].site(1))


def check_move(ws: Workspace, pr: Proofreader, _: Any, before: Snapshot) -> None:
    a, b, c = ws.cells[:3]
    row = pr.store.synapse(1)
    assert (row["pre_id"], row["post_id"]) == (a.id, c.id)
    assert (row["post_z"], row["post_y"], row["post_x"]) == c.site(1)
    assert (row["pre_z"], row["pre_y"], row["pre_x"]) == a.site(1)
    assert row["y"] == (a.site(1)[1] + c.site(1)[1]) / 2
    assert neuron_counts(pr.store, b.id) == (2, 1)
    assert neuron_counts(pr.store, c.id) == (1, 2)


def delete_two(ws: Workspace, pr: Proofreader) -> int:
    return pr.delete_synapses([1, 2])


def check_delete(ws: Workspace, pr: Proofreader, _: Any, before: Snapshot) -> None:
    assert pr.store.synapses(None, include_self=True)["id"].tolist() == [3, 4, 5, 6]
    assert neuron_counts(pr.store, ws.cells[1].id) == (1, 1)


def set_partners(ws: Workspace, pr: Proofreader) -> int:
    return pr.set_partners(1, post_id=ws.cells[3].id)


def check_partners(ws: Workspace, pr: Proofreader, _: Any, before: Snapshot) -> None:
    assert partner(pr, 1) == (ws.cells[0].id, ws.cells[3].id)
    assert neuron_counts(pr.store, ws.cells[3].id) == (1, 2)


def verify_two(ws: Workspace, pr: Proofreader) -> int:
    return pr.verify([1, 2])


def check_verify(ws: Workspace, pr: Proofreader, _: Any, before: Snapshot) -> None:
    frame = pr.store.synapses(None, include_self=True).set_index("id")
    assert frame.loc[[1, 2], "status"].tolist() == ["verified"] * 2
    assert frame.loc[[1, 2], "reviewer"].tolist() == [pr.author] * 2
    assert frame.loc[[3], "status"].tolist() == ["unreviewed"]
    assert pr.store.review_progress().reviewed == 2


def reject_one(ws: Workspace, pr: Proofreader) -> int:
    return pr.reject(3)


def check_reject(ws: Workspace, pr: Proofreader, _: Any, before: Snapshot) -> None:
    assert pr.store.synapse(3)["status"] == "rejected"


KINDS = {
    "merge": Kind(nothing, merge_ab, check_merge),
    "cleave": Kind(lambda ws, pr: merge_ab(ws, pr) and None, cleave_b, check_cleave),
    "paint": Kind(nothing, paint_a, check_paint),
    "erase": Kind(nothing, erase_b, check_erase),
    "split": Kind(nothing, split_c, check_split),
    "synapse_add": Kind(nothing, add_polyadic, check_add),
    "synapse_move": Kind(nothing, move_post, check_move),
    "synapse_delete": Kind(nothing, delete_two, check_delete),
    "synapse_partners": Kind(nothing, set_partners, check_partners),
    "verify": Kind(nothing, verify_two, check_verify),
    "reject": Kind(nothing, reject_one, check_reject),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_edit_shows_then_undo_redo_restore_exactly_across_restarts(
    workspace: Workspace, name: str
) -> None:
    kind = KINDS[name]
    pr = workspace.open()
    kind.setup(workspace, pr)
    before = snapshot(pr)
    result = kind.edit(workspace, pr)
    after = snapshot(pr)
    assert after != before, "the edit changed nothing"
    kind.check(workspace, pr, result, before)
    check_counts(pr)

    edited = pr.history(limit=1)["seq"].iloc[0]
    assert pr.undo() == edited
    assert snapshot(pr) == before, snapshot(pr).diff(before)
    check_counts(pr)
    assert pr.redo() == edited
    assert snapshot(pr) == after, snapshot(pr).diff(after)

    pr = workspace.reopen(pr)
    assert pr.undo() == edited
    assert snapshot(pr) == before, snapshot(pr).diff(before)
    pr = workspace.reopen(pr)
    assert pr.redo() == edited
    assert snapshot(pr) == after, snapshot(pr).diff(after)
    kind.check(workspace, pr, result, before)
    assert pr.history(limit=5)["kind"].tolist()[:3] == ["redo", "undo", "redo"]


def test_mixed_history_undoes_and_redoes_in_order_with_background_writes(
    workspace: Workspace,
) -> None:
    ws = workspace
    pr = ws.open(background=True)
    states = [snapshot(pr)]
    edits = [merge_ab, add_polyadic, paint_a, verify_two, split_c, move_post, erase_b]
    for edit in edits:
        edit(ws, pr)
        states.append(snapshot(pr))
    _, new = pr.cleave(ws.cells[0].id, [ws.cells[1].id])
    states.append(snapshot(pr))
    check_counts(pr)
    for i in range(len(states) - 1, 0, -1):
        assert pr.undo() is not None
        if i == 4:  # halfway: the rest of the history is read back after a restart
            pr = ws.reopen(pr, background=True)
        assert snapshot(pr) == states[i - 1], snapshot(pr).diff(states[i - 1])
    assert pr.undo() is None
    for i in range(1, len(states)):
        assert pr.redo() is not None
        assert snapshot(pr) == states[i], snapshot(pr).diff(states[i])
    assert pr.redo() is None
    check_counts(pr)
    assert pr.segment_at([ws.cells[1].site(2)]).tolist() == [new]


def test_new_edit_after_undo_discards_the_redo_stack(workspace: Workspace) -> None:
    ws = workspace
    pr = ws.open()
    first = verify_two(ws, pr)
    second = reject_one(ws, pr)
    assert pr.undo() == second
    assert pr.undo() == first
    third = merge_ab(ws, pr)
    assert pr.redo() is None
    states = dict(zip(pr.history()["seq"], pr.history()["state"]))
    assert states[first] == states[second] == "discarded"
    assert states[third] == "applied"
    assert pr.store.synapse(3)["status"] == "unreviewed"
    assert pr.undo() == third and pr.undo() is None


def test_undo_and_redo_walk_only_the_own_authors_history(workspace: Workspace) -> None:
    ws = workspace
    alice, bob = ws.open("alice"), ws.open("bob")
    mine = verify_two(ws, alice)
    theirs = bob.reject(4)
    assert alice.undo() == mine
    assert bob.store.synapse(4)["status"] == "rejected"
    assert bob.undo() == theirs and bob.undo() is None
    assert alice.redo() == mine
    assert alice.history(everyone=True)["author"].tolist()[:2] == ["alice", "bob"]


def test_a_pending_write_back_is_finished_by_the_next_session(workspace: Workspace) -> None:
    ws = workspace
    pr = ws.open(background=True)
    assert pr._writeback is not None
    pr._kick = lambda: None  # type: ignore[method-assign]  # the write-back never starts
    start, mask = ((1, 10, 10), np.ones((1, 8, 8), bool))
    new = pr.new_id()
    pr.paint(start, mask, new)
    assert pr.pending() == 1
    pr._closing = True
    pr._wake.set()
    pr._thread.join()  # type: ignore[union-attr]
    pr.volume.close()
    ws.opened.remove(pr)
    pr.store.close()  # as if the process died: nothing written to the volume
    again = ws.open()
    assert again.pending() == 0
    block = again.volume.read_voxels(0, (1, 10, 10), (2, 18, 18))
    assert (block == U64(new)).all()


def test_painting_over_a_paint_not_yet_written_back_undoes_exactly(workspace: Workspace) -> None:
    ws = workspace
    pr = ws.open(background=True)
    assert pr._writeback is not None
    write = pr._writeback.run_pending

    def slow_write() -> int:
        time.sleep(0.2)  # a slow disk: the worker is still busy with the first paint
        return write()

    pr._writeback.run_pending = slow_write  # type: ignore[method-assign]
    first, second = pr.new_id(), pr.new_id()
    before = snapshot(pr)
    pr.paint((2, 10, 10), np.ones((1, 10, 10), bool), first)
    pr.paint((2, 15, 15), np.ones((1, 10, 10), bool), second)  # overlaps the first
    assert pr.undo() is not None
    assert pr.commit(timeout=30.0)
    block = pr.volume.read_voxels(0, (2, 10, 10), (3, 20, 20))
    assert (block == U64(first)).all()
    assert pr.undo() is not None
    assert snapshot(pr) == before
