"""A frozen version does not move with proofreading: merges, synapse edits, undo and redo.

The sample segmentation and its synapses come from ``tests/proofreading/conftest.py``
(synapses 1..6 between the sample's largest cells A..E, see ``helpers.SYNAPSES``); every
test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from napari_connecto.proofreading.proofreader import Proofreader
from tests.proofreading.conftest import sample_template, workspace  # noqa: F401 (fixtures)
from tests.proofreading.helpers import Workspace

U64 = np.uint64


def frozen_state(pr: Proofreader, version: str | None) -> dict[str, Any]:
    """What a user reads back at a version: synapses, neurons, the segment of each fragment."""
    store = pr.store
    frags, segs = store.assignments_at(version, pr.key)
    return {
        "synapses": store.synapses_at(version, include_self=True),
        "neurons": store.neurons_at(version),
        "assignments": dict(zip(frags.tolist(), segs.tolist(), strict=True)),
    }


def assert_same(left: dict[str, Any], right: dict[str, Any]) -> None:
    pd.testing.assert_frame_equal(left["synapses"], right["synapses"])
    pd.testing.assert_frame_equal(left["neurons"], right["neurons"])
    assert left["assignments"] == right["assignments"]


def edit(ws: Workspace, pr: Proofreader) -> int:
    """Merge B into A, add A -> C, move synapse 4's post site onto C, verify 3, delete 6."""
    a, b, c = ws.cells[:3]
    pr.merge(a.id, b.id)
    pr.add_synapse(a.site(7), [c.site(7)])
    pr.move_synapse(4, post=c.site(4))
    pr.verify(3)
    pr.delete_synapses(6)
    return 5


def check_diff(ws: Workspace, pr: Proofreader, diff: Any) -> None:
    """The diff from before :func:`edit` to after it holds exactly those edits."""
    a, b, c = ws.cells[:3]
    assert diff.synapses_added["id"].tolist() == [7]
    added = diff.synapses_added.iloc[0]
    assert (added["pre_id"], added["post_id"]) == (a.id, c.id)
    assert diff.synapses_removed["id"].tolist() == [6]
    assert (diff.synapses_removed.iloc[0]["pre_id"], diff.synapses_removed.iloc[0]["post_id"]) == (
        b.id, a.id,
    )  # fmt: skip
    changed = dict(zip(diff.synapses_changed["id"].tolist(), diff.synapses_changed["changed"]))
    # 1: A->B, 2: B->C, 5: D->B follow the merge; 4 moved from D onto C; 3 verified
    assert changed == {1: "partners", 2: "partners", 3: "status", 4: "partners,position",
                       5: "partners"}  # fmt: skip
    moved = diff.synapses_changed.set_index("id").loc[U64(4)]
    assert (moved["post_id_a"], moved["post_id_b"]) == (ws.cells[3].id, c.id)
    assignments = diff.assignments_changed
    assert assignments["volume"].tolist() == [pr.key]
    assert assignments["fragment"].tolist() == [b.id]
    assert (assignments["segment_a"].tolist(), assignments["segment_b"].tolist()) == (
        [b.id], [a.id],
    )  # fmt: skip
    assert diff.neurons_added.size == 0 and diff.neurons_removed.size == 0
    counts = dict(zip(diff.neurons_changed["id"].tolist(), diff.neurons_changed["changed"]))
    assert counts[b.id] == "counts" and counts[a.id] == "counts"  # n_pre/n_post followed


def test_a_version_stays_put_through_edits_undo_and_redo(workspace: Workspace) -> None:  # noqa: F811
    ws = workspace
    pr = ws.open()
    before = frozen_state(pr, None)
    info = pr.store.create_version("before-merge", "as imported")
    assert info.journal_seq == pr.journal.high_water() == 0
    assert (info.n_synapses, info.n_assignments) == (6, 0)
    assert_same(frozen_state(pr, "before-merge"), before)

    edits = edit(ws, pr)
    after = frozen_state(pr, None)
    assert after["assignments"] == {ws.cells[1].id: ws.cells[0].id}
    assert_same(frozen_state(pr, "before-merge"), before)  # the version did not move
    check_diff(ws, pr, pr.store.diff_versions("before-merge"))

    # a second version after the edits: the diff between the two is the same
    later = pr.store.create_version("after-merge")
    assert later.journal_seq == pr.journal.high_water()
    assert (later.n_synapses, later.n_assignments) == (6, 1)
    check_diff(ws, pr, pr.store.diff_versions("before-merge", "after-merge"))

    for _ in range(edits):
        assert pr.undo() is not None
    assert_same(frozen_state(pr, None), before)  # undone: live is as frozen again
    assert pr.store.diff_versions("before-merge").empty
    assert_same(frozen_state(pr, "after-merge"), after)  # ... and the later version kept
    back = pr.store.diff_versions("after-merge")
    assert back.synapses_removed["id"].tolist() == [7]
    assert back.synapses_added["id"].tolist() == [6]

    for _ in range(edits):
        assert pr.redo() is not None
    assert_same(frozen_state(pr, "before-merge"), before)
    check_diff(ws, pr, pr.store.diff_versions("before-merge"))
    assert pr.store.diff_versions("after-merge").empty  # redone: live is as frozen later
