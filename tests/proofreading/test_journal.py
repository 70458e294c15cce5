"""The journal on its own: idempotent commits, schema migration, ids, history, markers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Connection, func, select

from napari_connecto.annotations import AnnotationStore, schema
from napari_connecto.errors import EditError
from napari_connecto.proofreading import synapse_edits
from napari_connecto.proofreading.ids import allocate_ids
from napari_connecto.proofreading.journal import EditRecord, Journal
from napari_connecto.proofreading.proofreader import Proofreader
from tests.proofreading.helpers import dump_store

PRE, POST = (100.0, 200.0, 300.0), (100.0, 220.0, 300.0)
BIG = 2**64 - 5


@pytest.fixture
def store(store_url: str) -> AnnotationStore:
    opened = AnnotationStore.open(store_url)
    yield opened  # type: ignore[misc]
    opened.close()


def adder(pre_id: int, post_ids: list[int], calls: list[int]) -> object:
    def build(conn: Connection) -> EditRecord:
        calls.append(1)
        return synapse_edits.add_record(
            conn, PRE, [POST] * len(post_ids), pre_id, post_ids, now=5.0
        )

    return build


def count_edits(store: AnnotationStore) -> int:
    return int(
        store.run_read(lambda c: c.execute(select(func.count()).select_from(schema.edits)).scalar())
    )


def test_a_repeated_request_is_committed_once(store: AnnotationStore) -> None:
    journal = Journal(store, "alice")
    calls: list[int] = []
    first = journal.commit(adder(1, [2], calls), seen=0, request="req-1")
    again = journal.commit(adder(1, [2], calls), seen=0, request="req-1")
    assert first == again
    assert calls == [1]  # the retry did not even build the edit
    assert count_edits(store) == 1
    assert store.synapses(None)["id"].tolist() == [1]
    other = journal.commit(adder(1, [3], calls), seen=0, request="req-2")
    assert other != first and len(store.synapses(None)) == 2


def test_a_failing_build_journals_nothing(store: AnnotationStore) -> None:
    journal = Journal(store, "alice")
    before = dump_store(store)

    def build(conn: Connection) -> EditRecord:
        synapse_edits.add_record(conn, PRE, [POST], 1, [2], now=5.0)
        raise EditError("changed my mind")

    with pytest.raises(EditError, match="changed my mind"):
        journal.commit(build, seen=0)
    assert count_edits(store) == 0 and dump_store(store) == before


def test_synapse_ids_of_deleted_synapses_are_never_given_again(store: AnnotationStore) -> None:
    pr = Proofreader(store, author="alice")
    pr.add_synapse(PRE, [POST, POST], pre_id=1, post_ids=[2, 3])  # 1, 2
    pr.delete_synapses([2])
    pr.undo()
    pr.undo()  # both gone
    pr.add_synapse(PRE, [POST], pre_id=1, post_ids=[2])
    assert store.synapses(None)["id"].tolist() == [3]
    pr.close()


def test_new_segment_ids_are_above_every_stored_id_even_past_2_63(
    store: AnnotationStore,
) -> None:
    frame = pd.DataFrame(
        {"id": np.array([1], np.uint64), "pre_id": np.array([BIG], np.uint64),
         "post_id": np.array([7], np.uint64), "z": [0.0], "y": [0.0], "x": [0.0]}
    )  # fmt: skip
    store.add_synapses(frame)
    journal = Journal(store, "alice")
    first = allocate_ids(journal, "vol", 2, floor=10)
    assert first == [BIG + 1, BIG + 2]
    assert allocate_ids(journal, "vol", 1) == [BIG + 3]
    assert allocate_ids(journal, "other", 1, floor=2**40) == [BIG + 1]
    assert allocate_ids(journal, "vol", 1) == [2**64 - 1]
    with pytest.raises(EditError, match="no new segment ids"):
        allocate_ids(journal, "vol", 1)


def test_history_lists_edits_and_markers_newest_first(store: AnnotationStore) -> None:
    pr = Proofreader(store, author="alice")
    pr.add_synapse(PRE, [POST], pre_id=1, post_ids=[2])
    pr.verify(1)
    pr.undo()
    history = pr.history()
    assert history["kind"].tolist() == ["undo", "synapse_status", "synapse_add"]
    assert history["state"].tolist() == ["marker", "undone", "applied"]
    assert history["ref"].iloc[0] == history["seq"].iloc[1]
    assert "verified synapse(s) 1" in history["summary"].iloc[1]
    pr.close()


def test_a_version_1_store_is_migrated_and_edits_work(store_url: str) -> None:
    with AnnotationStore.open(store_url) as store:

        def to_v1(conn: Connection) -> None:
            for table in (schema.edits, schema.edit_keys, schema.edit_voxels, schema.assignments):
                table.drop(conn)
            conn.execute(
                schema.meta.update().where(schema.meta.c.key == "schema_version").values(value="1")
            )

        store.run_write(to_v1)
        store.add_synapses(
            pd.DataFrame(
                {"id": [5], "pre_id": [1], "post_id": [2], "z": [0.0], "y": [0.0], "x": [0.0]}
            )
        )
    with AnnotationStore.open(store_url) as store:
        version = store.run_read(
            lambda c: c.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            ).scalar()
        )
        assert version == str(schema.SCHEMA_VERSION) == "3"  # 1 -> 2 -> 3
        pr = Proofreader(store, author="alice")
        pr.verify(5)
        assert store.synapse(5)["status"] == "verified"
        assert pr.undo() is not None
        assert store.synapse(5)["status"] == "unreviewed"
        pr.close()


def test_proofreader_without_a_volume_refuses_voxel_edits(tmp_path: Path) -> None:
    with Proofreader(tmp_path / "a.db", author="alice") as pr:
        with pytest.raises(EditError, match="no segmentation"):
            pr.merge(1, 2)
        with pytest.raises(EditError, match="give the partner id"):
            pr.add_synapse(PRE, [POST])
        assert pr.commit() and pr.pending() == 0
