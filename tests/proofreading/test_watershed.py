"""Seeded watershed splits: the array step on made-up shapes, Proofreader.split on the sample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.errors import EditError
from napari_connecto.opening import open_volume
from napari_connecto.proofreading.watershed import seeded_split
from tests.proofreading.helpers import Workspace, far_site, snapshot

U64 = np.uint64


def dumbbell(planes: int = 1) -> np.ndarray:
    """Two discs (centres x = 12 and x = 48, radius 10) joined by a neck 3 voxels wide."""
    yy, xx = np.mgrid[:32, :60]
    disc = lambda cx: (yy - 16) ** 2 + (xx - cx) ** 2 <= 100  # noqa: E731
    plane = disc(12) | disc(48) | ((abs(yy - 16) <= 1) & (xx >= 12) & (xx <= 48))
    return np.repeat(plane[np.newaxis], planes, axis=0)


def test_without_an_image_the_cut_is_at_the_neck() -> None:
    mask = dumbbell()
    seeds = np.zeros(mask.shape, np.int32)
    seeds[0, 16, 6] = 1  # off-centre in the left disc
    seeds[0, 16, 40] = 2  # on the neck's right end, near the right disc
    out = seeded_split(np.ones(mask.shape, np.uint64), mask, seeds)
    assert out.dtype == np.int32
    assert (out[~mask] == 0).all()
    xx = np.broadcast_to(np.arange(60), mask.shape)
    assert (out[mask & (xx <= 22)] == 1).all()  # the whole left disc
    assert (out[mask & (xx >= 38)] == 2).all()  # the whole right disc
    assert set(np.unique(out[mask])) == {1, 2}


def test_a_thick_block_is_split_in_3d_from_seeds_in_different_planes() -> None:
    mask = dumbbell(planes=4)
    seeds = np.zeros(mask.shape, np.int32)
    seeds[0, 16, 12] = 1
    seeds[3, 16, 48] = 2
    out = seeded_split(np.ones(mask.shape, np.uint64), mask, seeds, sampling=(40.0, 4.0, 4.0))
    xx = np.broadcast_to(np.arange(60), mask.shape)
    assert (out[mask & (xx <= 22)] == 1).all()
    assert (out[mask & (xx >= 38)] == 2).all()


def bar_and_seeds() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((1, 20, 40), bool)
    mask[0, 4:16, :] = True
    seeds = np.zeros(mask.shape, np.int32)
    seeds[0, 10, 4] = 1
    seeds[0, 10, 36] = 2
    return mask, seeds


def test_an_image_puts_the_cut_on_the_membrane() -> None:
    mask, seeds = bar_and_seeds()
    image = np.full(mask.shape, 100.0, np.float32)
    image[:, :, 10] = 250.0  # a membrane across the bar, near seed 1
    out = seeded_split(np.ones(mask.shape, np.uint64), mask, seeds, image)
    assert (out[0, 4:16, :10] == 1).all()  # the cut is on the membrane's edges (9..11)
    assert (out[0, 4:16, 12:] == 2).all()
    plain = seeded_split(np.ones(mask.shape, np.uint64), mask, seeds)  # no image: elsewhere
    assert (plain[0, 4:16, 11:16] == 1).all()


def test_cuts_follow_fragment_boundaries() -> None:
    mask, seeds = bar_and_seeds()
    fragments = np.where(np.arange(40) < 28, 5, 6).astype(np.uint64)[np.newaxis, np.newaxis]
    fragments = np.broadcast_to(fragments, mask.shape)
    out = seeded_split(fragments, mask, seeds)
    assert (out[0, 4:16, :27] == 1).all()  # the cut is on the boundary voxels (27, 28)
    assert (out[0, 4:16, 29:] == 2).all()
    plain = seeded_split(np.ones(mask.shape, np.uint64), mask, seeds)
    assert (plain[0, 4:16, 24:27] == 2).all()  # one fragment: the cut is further left


def test_parts_no_seed_reaches_and_seeds_off_the_mask_get_no_group() -> None:
    mask, seeds = bar_and_seeds()
    mask[0, 18, :] = True  # an island not connected to the bar
    seeds[0, 0, 0] = 3  # off the mask: ignored
    out = seeded_split(np.ones(mask.shape, np.uint64), mask, seeds)
    assert (out[0, 18] == 0).all()
    assert set(np.unique(out)) == {0, 1, 2}


def test_bad_blocks_are_edit_errors() -> None:
    mask, seeds = bar_and_seeds()
    with pytest.raises(EditError, match="one shape"):
        seeded_split(np.ones((1, 20, 41), np.uint64), mask, seeds)
    with pytest.raises(EditError, match="one shape"):
        seeded_split(np.ones(mask.shape, np.uint64), mask, seeds, np.zeros((20, 40)))
    with pytest.raises(EditError, match="no seed lies on the segment"):
        seeded_split(np.ones(mask.shape, np.uint64), mask, np.where(mask, 0, 1))


# -- Proofreader.split on the sample -------------------------------------------------------
def test_split_cuts_one_cell_in_two_and_synapses_follow(workspace: Workspace) -> None:
    ws = workspace
    a, c = ws.cells[0], ws.cells[2]
    pr = ws.open()
    before = snapshot(pr)
    far = far_site(ws.labels, c, 3)
    seq, (new,) = pr.split(c.id, {1: [far], 2: [c.site(3)]})  # synapse 3's pre site in 2
    after = snapshot(pr)
    finest, old = after.voxels[0], before.voxels[0]
    changed = finest != old
    assert (old[changed] == U64(c.id)).all()  # only the cell's voxels
    assert (finest[changed] == U64(new)).all()
    assert changed[3].sum() == changed.sum()  # seeds in one plane: only that plane
    assert new not in np.unique(old)
    piece1 = (finest[3] == U64(c.id)).sum()
    piece2 = (finest[3] == U64(new)).sum()
    assert piece1 > 20 and piece2 > 20 and piece1 + piece2 == (old[3] == U64(c.id)).sum()
    assert pr.segment_at([far, c.site(3), c.site(2)]).tolist() == [c.id, new, c.id]
    assert pr.store.synapse_neurons(3) == (new, a.id)
    assert pr.store.synapse_neurons(2)[1] == c.id  # plane 2: not split
    y, x = c.interior[3]
    assert pr.volume.read_voxels(1, (3, y // 2, x // 2), (4, y // 2 + 1, x // 2 + 1)).item() == new
    assert pr.undo() == seq
    assert snapshot(pr) == before


def test_split_in_3d_with_the_em_image_guiding_the_cut(workspace: Workspace) -> None:
    ws = workspace
    c = ws.cells[2]
    pr = ws.open()
    image = open_volume(ws.image)
    old = snapshot(pr).voxels[0]
    seeds = {1: [c.site(2)], 2: [far_site(ws.labels, c, 4)], 3: [far_site(ws.labels, c, 2)]}
    _, ids = pr.split(c.id, seeds, image=image)
    image.close()
    finest = pr.volume.read_voxels(0, (0, 0, 0), pr.volume.shape)
    changed = finest != old
    assert len(ids) == 2 and ids[1] == ids[0] + 1
    assert (old[changed] == U64(c.id)).all()
    assert set(np.unique(finest[changed]).tolist()) == set(ids)
    assert changed[:2].sum() == changed[5:].sum() == 0  # region: planes 2..4 only
    got = pr.segment_at([c.site(2), far_site(ws.labels, c, 4), far_site(ws.labels, c, 2)])
    assert got.tolist() == [c.id, *ids]


def test_split_in_an_explicit_region_leaves_the_rest(workspace: Workspace) -> None:
    ws = workspace
    c = ws.cells[2]
    pr = ws.open()
    far = far_site(ws.labels, c, 3)
    lo = [min(p, q) - 10.0 for p, q in zip(far, c.site(3))]
    hi = [max(p, q) + 10.0 for p, q in zip(far, c.site(3))]
    old = snapshot(pr).voxels[0]
    pr.split(c.id, {1: [c.site(3)], 2: [far]}, region=(lo, hi))
    changed = pr.volume.read_voxels(0, (0, 0, 0), pr.volume.shape) != old
    res = np.array([40.0, 4.0, 4.0])
    first, last = np.floor(np.array(lo) / res), np.ceil(np.array(hi) / res)
    where = np.argwhere(changed)
    assert len(where) > 0
    assert (where >= first).all() and (where < last).all()


def test_bad_splits_are_refused_and_nothing_is_journaled(workspace: Workspace) -> None:
    ws = workspace
    a, c = ws.cells[0], ws.cells[2]
    pr = ws.open()
    state, top = snapshot(pr), pr.journal.high_water()
    far = far_site(ws.labels, c, 3)
    cases = [
        ({1: [c.site(3)]}, None, "group 1 and at least one more"),
        ({2: [c.site(3)], 3: [far]}, None, "group 1 and at least one more"),
        ({1: [c.site(3)], 2: []}, None, "group 2 has no seed"),
        ({1: [c.site(3)], 0: [far]}, None, "integers >= 1"),
        ({1: [c.site(3)], 2: [a.site(3)]}, None, f"lies on segment {a.id}, not on {c.id}"),
        ({1: [c.site(3)], 2: [(0.0, -50.0, 0.0)]}, None, "outside the volume"),
        ({1: [c.site(3)], 2: [(0.0, float("nan"), 0.0)]}, None, "finite z, y, x"),
        ({1: [c.site(3)], 2: [(1.0, 2.0)]}, None, "finite z, y, x"),
        ({1: [c.site(3)], 2: [c.site(3)]}, None, "share a seed voxel"),
        ({1: [c.site(3)], 2: [far]}, ((0, 0, 0), (1, 1, 1)), "does not hold every seed"),
        ([c.site(3), far], None, "mapping group"),
    ]
    for seeds, region, match in cases:
        with pytest.raises(EditError, match=match):
            pr.split(c.id, seeds, region=region)  # type: ignore[arg-type]
    assert pr.journal.high_water() == top
    assert snapshot(pr) == state
