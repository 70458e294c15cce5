"""Merge and cleave of a DVID labelmap: journaled, sent to the server, undone exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import napari_connecto as nc
from napari_connecto.annotations import AnnotationStore
from napari_connecto.errors import EditError
from napari_connecto.proofreading.journal import Journal
from napari_connecto.proofreading.proofreader import Proofreader
from napari_connecto.proofreading.server_edits import agglomeration_of, apply_server_edit
from napari_connecto.testing.dvid_server import DvidServer

SHAPE = (64, 64, 192)  # z, y, x: whole 64^3 labelmap blocks
RES = 8.0


def _supervoxels() -> np.ndarray:
    """Supervoxels 1..3 side by side along x (64 voxels each), 4 below them in y."""
    z, y, x = np.indices(SHAPE)
    ids = (x // 64 + 1).astype(np.uint64)
    ids[:, 48:, :] = 4
    return ids


@pytest.fixture
def labelmap():
    """A fresh server (edits change it) with one unlocked node holding the supervoxels."""
    with DvidServer() as server:
        uuid = server.create_repo("edits", "proofreading on the server")
        server.create_instance(uuid, "labelmap", "seg", MaxDownresLevel=1)
        server.put_voxels(uuid, "seg", (0, 0, 0), _supervoxels())
        yield server, f"dvid://{server.url.removeprefix('http://')}/{uuid}/seg"


def _nm(zyx) -> np.ndarray:
    return np.asarray(zyx, dtype=float) * RES


def _read(source: str) -> np.ndarray:
    return nc.open_volume(source).read_voxels(0, (0, 0, 0), SHAPE)


def test_merge_goes_to_the_server_and_undo_restores_it_exactly(labelmap, tmp_path):
    server, source = labelmap
    before = _read(source)
    with Proofreader(tmp_path / "a.db", source, background=False) as pr:
        # a synapse from segment 1 onto segment 2: its partner follows the merge
        pr.add_synapse(_nm((5, 10, 10)), [_nm((5, 10, 100))])
        sid = int(pr.store.synapses()["id"].iloc[0])
        assert pr.store.synapse_neurons(sid) == (1, 2)

        assert pr.fragments_of(1).tolist() == [1]
        pr.merge(1, 2)
        assert pr.commit()
        assert pr.fragments_of(1).tolist() == [1, 2]  # the server's supervoxels of body 1
        merged = _read(source)
        expected = before.copy()
        expected[expected == 2] = 1
        np.testing.assert_array_equal(merged, expected)
        assert pr.store.synapse_neurons(sid) == (1, 1)
        assert "on the server" in pr.history()["summary"].iloc[0]

        pr.undo()
        assert pr.commit()
        np.testing.assert_array_equal(_read(source), before)  # byte-identical
        assert pr.server.supervoxels(2) == [2]
        assert pr.store.synapse_neurons(sid) == (1, 2)

        pr.redo()
        assert pr.commit()
        np.testing.assert_array_equal(_read(source), expected)
        assert set(pr.history(everyone=True)["writeback"]) <= {"done", "none"}


def test_cleave_uses_a_reserved_id_and_undo_merges_it_back(labelmap, tmp_path):
    _server, source = labelmap
    with Proofreader(tmp_path / "a.db", source, background=False) as pr:
        pr.merge(1, 2)
        pr.merge(1, 3)
        assert pr.commit()
        pr.add_synapse(_nm((5, 10, 10)), [_nm((5, 10, 160))])  # 1 -> 1 (on sv 3)
        sid = int(pr.store.synapses(include_self=True)["id"].iloc[0])
        before = _read(source)
        top = pr.server.client.max_label(pr.server.uuid, pr.server.instance)

        seq, new = pr.cleave(1, [2, 3])
        assert new > top  # reserved on the server, never an id in use
        assert pr.commit()
        after = _read(source)
        np.testing.assert_array_equal(after[:, :48, 64:], new)
        np.testing.assert_array_equal(after[:, :48, :64], 1)
        assert pr.store.synapse_neurons(sid) == (1, new)  # the post site was on sv 3

        pr.undo()
        assert pr.commit()
        np.testing.assert_array_equal(_read(source), before)
        assert pr.store.synapse_neurons(sid) == (1, 1)
        pr.redo()
        assert pr.commit()
        np.testing.assert_array_equal(_read(source), after)  # the same id again


def test_bad_merges_and_cleaves_are_refused_before_anything_is_journaled(labelmap, tmp_path):
    _server, source = labelmap
    with Proofreader(tmp_path / "a.db", source, background=False) as pr:
        with pytest.raises(EditError, match="no segment on the server"):
            pr.merge(1, 999)
        with pytest.raises(EditError, match="one segment already"):
            pr.merge(2, 2)
        with pytest.raises(EditError, match="not part of segment"):
            pr.cleave(1, [3])
        with pytest.raises(EditError, match="every supervoxel"):
            pr.cleave(1, [1])
        with pytest.raises(EditError, match="seeded split"):
            pr.split(1, {1: [_nm((5, 5, 5))], 2: [_nm((5, 5, 60))]})
        with pytest.raises(EditError, match="belongs to body 1"):  # sv 2 is part of body 1 now
            pr.merge(1, 2)
            assert pr.commit()
            pr.paint((5, 5, 5), np.ones((1, 2, 2), bool), 2)
        assert pr.history(everyone=True)["kind"].tolist() == ["merge"]
        return


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_connecto.proofreading.proofreader import Proofreader
    with Proofreader(sys.argv[1], sys.argv[2], background=False) as pr:
        pr.{call}
    """
)


@pytest.mark.parametrize(
    ("label", "call"),
    [
        ("between-store-and-volume", "merge(1, 2)"),
        ("mid-server-edit", "cleave(4, [4])"),
        ("between-store-and-volume", "paint((5, 40, 60), np.ones((2, 8, 8), bool), 77)"),
    ],
)
def test_a_writer_killed_mid_edit_is_finished_by_the_next_session(labelmap, tmp_path, label, call):
    _server, source = labelmap
    db = tmp_path / "a.db"
    if call.startswith("cleave"):  # 4 needs two supervoxels to cleave one
        with Proofreader(db, source, background=False) as pr:
            pr.merge(4, 3)
    _kill_writer(db, source, label, call)
    assert _last_entry(db).writeback == "pending"  # acknowledged: journaled, not yet sent
    with Proofreader(db, source, background=False) as pr:  # replays the write-back
        assert pr.pending() == 0
        entry = pr.journal.entry(pr.journal.high_water())
        assert entry.writeback == "done"
        labels = _read(source)
        if call.startswith("merge"):
            assert 2 not in labels
            assert (labels[:, :48, 64:128] == 1).all()
        elif call.startswith("paint"):
            assert (labels[5:7, 40:48, 60:68] == 77).all()
            assert np.count_nonzero(labels == 77) == 2 * 8 * 8
        else:
            new = pr.journal.payload(entry.seq)["new_segment"]
            np.testing.assert_array_equal(labels[:, 48:, :], new)  # renumbered after the crash
            np.testing.assert_array_equal(labels[:, :48, 128:], 4)


def _last_entry(db):
    with AnnotationStore.open(db) as store:
        journal = Journal(store, "reader")
        return journal.entry(journal.high_water())


def _kill_writer(db, source: str, label: str, call: str) -> None:
    env = {**os.environ, "NAPARI_CONNECTO_KILL_AT": label}
    done = subprocess.run(
        [sys.executable, "-c", WRITER.format(call=call), str(db), source],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def test_a_server_changed_elsewhere_fails_the_write_back_visibly(labelmap, tmp_path):
    """Another tool merged 2 away on the server before the write-back: no guessing."""
    _server, source = labelmap
    db = tmp_path / "a.db"
    _kill_writer(db, source, "between-store-and-volume", "merge(1, 2)")
    volume = nc.open_volume(source, mode="r+")
    agglomeration_of(volume).merge(4, 2)  # straight on the server
    with Proofreader(db, volume, background=False) as pr:
        row = pr.history().iloc[0]
        assert row["writeback"] == "failed"
        assert "changed elsewhere" in row["error"]
    assert set(np.unique(_read(source)).tolist()) == {1, 3, 4}  # the other tool's edit stands


def test_replaying_a_finished_server_edit_changes_nothing(labelmap, tmp_path):
    _server, source = labelmap
    with Proofreader(tmp_path / "a.db", source, background=False) as pr:
        seq = pr.merge(1, 2)
        assert pr.commit()
        merged = _read(source)
        server = agglomeration_of(pr.volume)
        payload = pr.journal.payload(seq)
        assert apply_server_edit(server, "merge", payload, "do") == [1, 2]
        np.testing.assert_array_equal(_read(source), merged)


def test_paint_writes_supervoxels_on_the_server_and_undo_restores_them(labelmap, tmp_path):
    """Painted across a block corner (64): the server's blocks are read, patched, written."""
    _server, source = labelmap
    sv_source = source + "?supervoxels=true"
    with Proofreader(tmp_path / "a.db", source, background=False) as pr:
        pr.merge(1, 2)
        pr.add_synapse(_nm((5, 10, 10)), [_nm((20, 42, 62))])  # post on sv 1 -> body 1
        sid = int(pr.store.synapses(include_self=True)["id"].iloc[0])
        assert pr.commit()
        labels, svs = _read(source), _read(sv_source)
        new = pr.new_id()
        assert new > max(int(labels.max()), int(svs.max()))  # reserved with nextlabel

        mask = np.zeros((3, 6, 6), bool)
        mask[:, 1:5, 1:5] = True
        pr.paint((19, 40, 60), mask, new)
        assert pr.commit()
        painted = _read(source)
        expected = labels.copy()
        expected[19:22, 41:45, 61:65] = new
        np.testing.assert_array_equal(painted, expected)
        sv_expected = svs.copy()
        sv_expected[19:22, 41:45, 61:65] = new
        np.testing.assert_array_equal(_read(sv_source), sv_expected)  # written as supervoxels
        assert pr.store.synapse_neurons(sid) == (1, new)  # the post site was painted over

        pr.paint((19, 40, 60), mask, 1)  # paint it back with the merged body's label
        assert pr.commit()
        assert (_read(source)[19:22, 41:45, 61:65] == 1).all()

        pr.undo()
        pr.undo()
        assert pr.commit()
        np.testing.assert_array_equal(_read(source), labels)  # byte-identical
        np.testing.assert_array_equal(_read(sv_source), svs)  # supervoxels too
        assert pr.store.synapse_neurons(sid) == (1, 1)
        pr.redo()
        assert pr.commit()
        np.testing.assert_array_equal(_read(source), expected)


def test_a_server_that_does_not_answer_keeps_the_edit_pending_until_it_does(labelmap, tmp_path):
    """503s past the transport's retries: the journaled merge waits, then goes through."""
    from napari_connecto.proofreading.server_edits import server_merge_record
    from napari_connecto.testing.chaos import ChaosConfig

    server, source = labelmap
    with Proofreader(tmp_path / "a.db", source, background=False) as pr:
        moved = pr.server.supervoxels(2)
        seq = pr.journal.commit(  # journaled (acknowledged), not yet written back
            lambda c: server_merge_record(c, pr.key, 1, 2, moved, time.time()), seen=pr.seen
        )
        server.set_chaos(ChaosConfig(rate=1.0, kinds=("503",)))
        assert not pr.commit()
        row = pr.history().iloc[0]
        assert (row["seq"], row["writeback"]) == (seq, "pending")
        assert "retrying" in row["error"]
        server.set_chaos(None)
        deadline = time.monotonic() + 10
        while not pr.commit() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pr.history().iloc[0]["writeback"] == "done"
    assert 2 not in _read(source)


def test_a_lost_answer_to_a_cleave_is_mended_on_the_next_try(labelmap, tmp_path):
    """The server cleaved but the answer never came: the orphan label is renumbered."""
    _server, source = labelmap
    with Proofreader(tmp_path / "a.db", source, background=False) as pr:
        pr.merge(1, 2)
        seq = pr.merge(1, 3)
        assert pr.commit()
        payload = pr.journal.payload(seq)
        orphan = pr.server.cleave(1, [3])  # what the lost request did on the server
        # the undo's write-back finds 3's supervoxels on the orphan label, not on 1
        assert apply_server_edit(pr.server, "merge", payload, "undo") == [1, 3]
        assert pr.server.supervoxels(3) == [3]
        assert orphan not in _read(source)
        # and a merge whose answer was lost after an undo's cleave: merged into 1 again
        orphan = pr.server.cleave(1, [2])
        assert apply_server_edit(pr.server, "merge", pr.journal.payload(seq - 1), "do")
        assert set(np.unique(_read(source)).tolist()) == {1, 3, 4}
