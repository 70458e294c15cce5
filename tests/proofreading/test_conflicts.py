"""Two sessions on one store: stale edits, undos and redos are refused, nothing is lost."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.errors import EditConflictError
from napari_connecto.proofreading.patches import VoxelPatch
from tests.proofreading.helpers import Workspace, snapshot
from tests.proofreading.test_proofreader import check_counts

U64 = np.uint64


def test_stale_edit_of_the_same_segment_is_refused_until_synced(workspace: Workspace) -> None:
    ws = workspace
    a, b, c, d = (cell.id for cell in ws.cells[:4])
    alice = ws.open("alice")
    bob = ws.open("bob", auto_sync=False)  # a viewer: syncs on a timer, not per edit
    merged = alice.merge(a, b)
    state, top = snapshot(alice), alice.journal.high_water()

    with pytest.raises(EditConflictError) as err:
        bob.merge(a, c)  # bob's view predates alice's merge into a
    assert err.value.edits == (merged,)
    with pytest.raises(EditConflictError):
        bob.paint((2, 0, 0), ws.labels[2:3] == U64(b), d)  # b's voxels are part of a now
    assert snapshot(alice) == state
    assert alice.journal.high_water() == top

    bob.merge(c, ws.cells[4].id)  # segments and synapses alice did not touch: no conflict
    assert [e.seq for e in bob.sync()] == [merged]
    bob.merge(a, c)  # seen now
    assert alice.segment_at([ws.cells[2].site(0)]).tolist() == [a]
    check_counts(alice)


def test_undo_of_an_edit_someone_edited_after_is_refused(workspace: Workspace) -> None:
    ws = workspace
    a, b = ws.cells[0].id, ws.cells[1].id
    alice, bob = ws.open("alice"), ws.open("bob")
    alice.merge(a, b)
    later = bob.set_partners(3, pre_id=ws.cells[4].id)  # synapse 3 is not in alice's edit
    assert alice.undo() is not None  # so undoing the merge is fine
    assert alice.redo() is not None
    painted = bob.paint((3, 0, 0), np.ones((1, 4, 4), bool), a)  # touches segment a
    state = snapshot(alice)
    with pytest.raises(EditConflictError) as err:
        alice.undo()
    assert err.value.edits == (painted,)
    assert snapshot(alice) == state
    assert bob.undo() == painted
    assert alice.undo() is not None  # the way is clear again
    assert bob.undo() == later
    check_counts(alice)


def test_redo_on_a_state_someone_else_changed_since_is_refused(workspace: Workspace) -> None:
    ws = workspace
    a, b = ws.cells[0], ws.cells[1]
    alice, bob = ws.open("alice"), ws.open("bob")
    alice.add_synapse(a.site(7), [b.site(7)])  # synapse 7
    bob.verify(7)
    assert bob.undo() is not None
    assert alice.undo() is not None  # synapse 7 is gone again
    state = snapshot(alice)
    with pytest.raises(EditConflictError):
        bob.redo()  # would bring back a verified synapse 7 that nobody added
    assert snapshot(alice) == state
    with pytest.raises(KeyError):
        alice.store.synapse(7)
    assert alice.redo() is not None
    assert bob.redo() is not None  # on the state it was made on: fine
    assert alice.store.synapse(7)["status"] == "verified"


def test_undo_keeps_a_new_neuron_row_another_synapse_still_names(workspace: Workspace) -> None:
    ws = workspace
    a, b = ws.cells[0], ws.cells[1]
    alice, bob = ws.open("alice"), ws.open("bob")
    new = alice.new_id()
    alice.add_synapse(a.site(7), [b.site(7)], pre_id=new)  # creates neuron `new`
    bob.add_synapse(a.site(6), [b.site(6)], pre_id=new)
    assert alice.undo() is not None
    assert alice.store.neuron(new)["n_pre"] == 1
    check_counts(alice)
    assert bob.undo() is not None
    assert alice.store.count_synapses(new) == 0
    check_counts(alice)


def test_redo_of_a_paint_after_someone_undid_under_it_is_refused(workspace: Workspace) -> None:
    ws = workspace
    alice, bob = ws.open("alice"), ws.open("bob")
    box = np.ones((1, 6, 6), bool)
    alice.paint((4, 20, 20), box, alice.new_id())
    bob.paint((4, 22, 22), box, bob.new_id())  # over alice's new segment
    assert bob.undo() is not None
    assert alice.undo() is not None
    state = snapshot(alice)
    with pytest.raises(EditConflictError):
        bob.redo()  # its "before" voxels are alice's paint, which is gone
    assert snapshot(alice) == state


def test_a_patch_drawn_on_voxels_changed_since_is_refused(workspace: Workspace) -> None:
    ws = workspace
    alice = ws.open("alice", auto_sync=False)  # a viewer whose canvas was read earlier
    bob = ws.open("bob")
    canvas = ws.labels[5:6, 30:40, 30:40].copy()  # what alice's canvas holds
    bob.paint((5, 35, 35), np.ones((1, 2, 2), bool), bob.new_id())
    alice.sync()  # the journal is synced, the canvas is not
    state, top = snapshot(alice), alice.journal.high_water()
    drawn = canvas.copy()
    drawn[:] = alice.new_id()
    with pytest.raises(EditConflictError, match="4 of the 100 voxels"):
        alice.paint_patch(VoxelPatch((5, 30, 30), canvas, drawn))
    assert snapshot(alice) == state and alice.journal.high_water() == top
