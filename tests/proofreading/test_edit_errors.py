"""Edits that cannot be made: a clear EditError, nothing journaled, nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from napari_connecto.errors import EditError
from napari_connecto.proofreading.patches import VoxelPatch
from napari_connecto.proofreading.proofreader import Proofreader
from tests.proofreading.helpers import Workspace, snapshot

NAN = float("nan")


def cases(ws: Workspace) -> list[tuple[str, Callable[[Proofreader], Any], str]]:
    a, b, c, _, e = (cell.id for cell in ws.cells)
    site = ws.cells[0].site(1)
    one = np.ones((1, 2, 2), bool)
    block = np.zeros((1, 2, 2), np.uint64)
    return [
        ("merge itself", lambda pr: pr.merge(a, a), "one segment already"),
        ("merge absorbed", lambda pr: pr.merge(c, b), f"absorb={b} is no segment"),
        ("merge into absorbed", lambda pr: pr.merge(b, c), f"keep={b} is no segment"),
        ("merge absorbed again", lambda pr: pr.merge(a, b), "one segment|no segment"),
        ("cleave foreign", lambda pr: pr.cleave(a, [c]), f"{c} are not part of segment {a}"),
        ("cleave all", lambda pr: pr.cleave(a, [a, b]), "every fragment"),
        ("cleave none", lambda pr: pr.cleave(a, []), "at least one fragment"),
        ("cleave single", lambda pr: pr.cleave(e, [e]), "every fragment"),
        ("delete missing", lambda pr: pr.delete_synapses([99]), "there is no synapse 99"),
        ("delete some missing", lambda pr: pr.delete_synapses([1, 99]), "no synapse 99"),
        ("verify missing", lambda pr: pr.verify(99), "no synapse 99"),
        ("status", lambda pr: pr.set_status(1, "maybe"), "status must be one of"),
        ("partners missing", lambda pr: pr.set_partners(99, pre_id=a), "no synapse 99"),
        ("partners none", lambda pr: pr.set_partners(1), "pre_id, post_id or both"),
        ("move missing", lambda pr: pr.move_synapse(99, pre=site), "no synapse 99"),
        ("move nowhere", lambda pr: pr.move_synapse(1), "new pre site, post site"),
        ("move nan", lambda pr: pr.move_synapse(1, post=(NAN, 0, 0)), "the post site must be"),
        ("add nan", lambda pr: pr.add_synapse((0, NAN, 0), [site]), "the pre site must be"),
        ("add 2d", lambda pr: pr.add_synapse((1, 2), [site]), "the pre site must be"),
        ("add text", lambda pr: pr.add_synapse(site, ["here"]), "a post site must be"),
        ("add no post", lambda pr: pr.add_synapse(site, []), "at least one post site"),
        ("add ids", lambda pr: pr.add_synapse(site, [site], post_ids=[1, 2]), "1 post sites"),
        ("paint 2d", lambda pr: pr.paint((0, 0, 0), one[0], a), "z, y, x block"),
        (
            "patch outside",
            lambda pr: pr.paint_patch(VoxelPatch((7, 127, 0), block, block + 1)),
            "leaves the volume",
        ),
        (
            "patch scale",
            lambda pr: pr.paint_patch(VoxelPatch((0, 0, 0), block, block + 1, scale=1)),
            "full resolution",
        ),
    ]


def test_bad_edits_raise_clear_errors_and_change_nothing(workspace: Workspace) -> None:
    ws = workspace
    pr = ws.open()
    pr.merge(ws.cells[0].id, ws.cells[1].id)  # so some ids are no segment any more
    state, top = snapshot(pr), pr.journal.high_water()
    for name, edit, match in cases(ws):
        with pytest.raises(EditError, match=match):
            edit(pr)
        assert pr.journal.high_water() == top, name
    assert snapshot(pr) == state
    assert pr.undo() is not None and pr.undo() is None  # only the merge is in the history
