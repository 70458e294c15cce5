"""Versions of the store: freezing, names, queries at a version, deleting, migration, locking.

Every test runs on SQLite and on PostgreSQL (see ``conftest.py``).
"""

from __future__ import annotations

import inspect
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from sqlalchemy import Connection, func, select

from napari_connecto.annotations import AnnotationStore, schema
from napari_connecto.annotations import engine as engine_module
from napari_connecto.annotations.versions import (
    JOURNAL_LOCK,
    VersionError,
    VersionExistsError,
    VersionNotFoundError,
)
from napari_connecto.errors import AnnotationError, StoreLockedError
from napari_connecto.geometry import BBox
from napari_connecto.proofreading.journal import Journal
from tests.annotations.conftest import _connect, _libpq_url

BIG = 2**63 + 7  # stored as a negative int64: must come back exact at a version


def synapse_rows(ids: list[int], pre: list[int], post: list[int], z0: float = 0.0) -> pd.DataFrame:
    """Synapses at distinct positions, ``z`` steps of 40 nm from ``z0``."""
    n = len(ids)
    z = z0 + 40.0 * np.arange(n)
    return pd.DataFrame(
        {
            "id": np.array(ids, dtype=np.uint64),
            "pre_id": np.array(pre, dtype=np.uint64),
            "post_id": np.array(post, dtype=np.uint64),
            "z": z,
            "y": 100.0 + 10 * np.arange(n),
            "x": 200.0 + 10 * np.arange(n),
            "confidence": np.linspace(0.5, 0.9, n),
        }
    )


@pytest.fixture
def filled(store: AnnotationStore) -> AnnotationStore:
    """Six synapses between neurons 1, 2, 3 and ``BIG`` (one autapse), three named neurons."""
    store.add_synapses(synapse_rows([1, 2, 3, 4, 5, 6], [1, 1, 2, 3, BIG, 2], [2, 3, 1, 3, 1, BIG]))
    store.update_neuron(1, name="alpha", type="KC")
    store.update_neuron(2, name="beta")
    store.set_keypoints([3], np.array([[40.0, 4.0, 4.0]]))
    return store


def test_a_version_freezes_counts_and_lists(filled: AnnotationStore) -> None:
    info = filled.create_version("  v1 ", "first import", author="ana")
    assert info.name == "v1"  # surrounding whitespace is dropped
    assert (info.n_synapses, info.n_neurons, info.n_assignments) == (6, 4, 0)
    assert (info.note, info.author, info.journal_seq) == ("first import", "ana", 0)
    second = filled.create_version("v2")
    assert [v.name for v in filled.versions()] == ["v1", "v2"]
    assert filled.version("v1") == info and second.id > info.id
    assert filled.version("v2").created >= info.created


def test_version_names_are_checked(filled: AnnotationStore) -> None:
    for bad in ("", "   ", "\t\n", "live", "LIVE", "a\x00b", "x" * 201):
        with pytest.raises(VersionError):
            filled.create_version(bad)
    filled.create_version("v1")
    with pytest.raises(VersionExistsError, match="exists already"):
        filled.create_version("v1")
    with pytest.raises(VersionExistsError):
        filled.create_version(" v1")
    with pytest.raises(VersionNotFoundError, match="latest: v1"):
        filled.synapses_at("v9")
    for call in (filled.version, filled.delete_version, filled.neurons_at):
        with pytest.raises(VersionNotFoundError):
            call("nope")
    assert [v.name for v in filled.versions()] == ["v1"]  # failures froze nothing
    assert issubclass(VersionExistsError, AnnotationError)


def test_queries_at_a_version_filter_like_live_queries(filled: AnnotationStore) -> None:
    filled.create_version("v1")
    box = BBox((0.0, 0.0, 0.0), (100.0, 1000.0, 1000.0))
    for neurons, options in [
        (None, {}),
        (None, {"include_self": True}),
        (1, {}),
        (1, {"pre": False}),
        ([2, BIG], {"post": False}),
        (None, {"bbox": box, "include_self": True}),
        (3, {"include_self": True, "status": "unreviewed"}),
        (None, {"status": ["verified"]}),
    ]:
        at = filled.synapses_at("v1", neurons, **options)
        live = filled.synapses(neurons, **options)
        pd.testing.assert_frame_equal(at, live)
    assert filled.synapses_at("v1", BIG, pre=False)["pre_id"].tolist() == [2]
    assert filled.synapses_at("v1", BIG, post=False)["post_id"].tolist() == [1]
    pd.testing.assert_frame_equal(filled.neurons_at("v1"), filled.neurons())
    pd.testing.assert_frame_equal(filled.neurons_at("v1", [BIG, 1]), filled.neurons([BIG, 1]))
    assert filled.neurons_at("v1", [BIG, 1])["id"].tolist() == [BIG, 1]


def test_store_edits_change_live_tables_only(filled: AnnotationStore) -> None:
    filled.create_version("v1")
    frozen = filled.synapses_at("v1", include_self=True)
    frozen_neurons = filled.neurons_at("v1")
    filled.set_synapse_status([2, 4], "verified", reviewer="bo")
    filled.update_neuron(1, name="gamma")
    filled.set_keypoints([2], np.array([[80.0, 8.0, 8.0]]))
    filled.add_synapses(synapse_rows([7], [2], [9], z0=4000.0))
    pd.testing.assert_frame_equal(filled.synapses_at("v1", include_self=True), frozen)
    pd.testing.assert_frame_equal(filled.neurons_at("v1"), frozen_neurons)
    assert filled.synapses(include_self=True)["status"].tolist()[:4] == [
        "unreviewed", "verified", "unreviewed", "verified"
    ]  # fmt: skip

    diff = filled.diff_versions("v1")  # against live
    assert diff.synapses_added["id"].tolist() == [7]
    assert diff.synapses_removed.empty
    changed = dict(zip(diff.synapses_changed["id"].tolist(), diff.synapses_changed["changed"]))
    assert changed == {2: "status", 4: "status"}
    assert diff.synapses_changed["status_a"].tolist() == ["unreviewed"] * 2
    assert diff.synapses_changed["status_b"].tolist() == ["verified"] * 2
    assert diff.neurons_added.tolist() == [9]
    assert diff.neurons_removed.tolist() == []
    neurons = dict(zip(diff.neurons_changed["id"].tolist(), diff.neurons_changed["changed"]))
    assert neurons == {1: "text", 2: "keypoint,counts"}
    assert diff.assignments_changed.empty
    assert diff.counts()["synapses_changed_status"] == 2 and not diff.empty
    assert filled.diff_versions("v1", "v1").empty
    back = filled.diff_versions(None, "v1")  # live -> v1 is the reverse
    assert back.synapses_removed["id"].tolist() == [7] and back.neurons_removed.tolist() == [9]


def test_diff_between_two_versions_sees_removed_and_moved_synapses(store: AnnotationStore) -> None:
    store.add_synapses(synapse_rows([1, 2, BIG], [1, 1, 2], [2, 3, 3]))
    store.create_version("a")

    def edit(conn: Connection) -> None:  # what proofreading does, without its journal
        s = schema.synapses
        conn.execute(s.delete().where(s.c.id == 2))
        conn.execute(s.update().where(s.c.id == 1).values(z=44.0, post_id=3))
        conn.execute(s.update().where(s.c.id == -(2**63) + 7).values(confidence=0.1))

    store.run_write(edit)
    store.create_version("b")
    store.add_synapses(synapse_rows([50], [1], [2], z0=5000.0))  # after b: not in the diff
    diff = store.diff_versions("a", "b")
    assert diff.synapses_removed["id"].tolist() == [2]
    assert diff.synapses_removed["post_id"].tolist() == [3]  # the row as it was at a
    assert diff.synapses_added.empty
    changed = dict(zip(diff.synapses_changed["id"].tolist(), diff.synapses_changed["changed"]))
    assert changed == {1: "partners,position", BIG: "confidence"}
    frame = diff.synapses_changed
    row = frame[frame["id"] == np.uint64(1)].iloc[0]
    assert (row["post_id_a"], row["post_id_b"], row["z_a"], row["z_b"]) == (2, 3, 0.0, 44.0)


def test_assignments_at_a_version(store: AnnotationStore) -> None:
    a = schema.assignments

    def assign(rows: list[tuple[str, int, int]]) -> None:
        store.run_write(
            lambda c: c.execute(
                a.insert(), [{"volume": v, "fragment": f, "segment": s} for v, f, s in rows]
            )
        )

    assign([("seg", 11, 10), ("seg", 12, 10), ("seg", BIG - 2**64, 10)])
    store.create_version("v1")
    frags, segs = store.assignments_at("v1")
    assert frags.dtype == np.uint64 and frags.tolist() == [11, 12, BIG]  # by stored value
    assert segs.tolist() == [10, 10, 10]
    store.run_write(lambda c: c.execute(a.update().where(a.c.fragment == 12).values(segment=20)))
    store.run_write(lambda c: c.execute(a.delete().where(a.c.fragment == 11)))
    assign([("seg", 13, 10), ("other", 1, 2)])
    assert store.assignments_at("v1", "seg")[1].tolist() == [10, 10, 10]  # unchanged
    with pytest.raises(AnnotationError, match="several segmentations"):
        store.assignments_at(None)
    assert store.assignments_at(None, "other")[0].tolist() == [1]
    changed = store.diff_versions("v1").assignments_changed
    assert changed["volume"].tolist() == ["other", "seg", "seg", "seg"]
    assert changed["fragment"].tolist() == [1, 11, 12, 13]
    assert changed["segment_a"].tolist() == [1, 10, 10, 13]  # no row: its own segment
    assert changed["segment_b"].tolist() == [2, 11, 20, 10]
    assert store.version("v1").n_assignments == 3


def test_deleting_a_version_removes_its_rows_only(filled: AnnotationStore) -> None:
    filled.create_version("v1")
    filled.create_version("v2", "kept")
    gone = filled.delete_version("v1")
    assert gone.name == "v1" and [v.name for v in filled.versions()] == ["v2"]

    def count(conn: Connection) -> int:
        t = schema.version_synapses
        return int(conn.execute(select(func.count()).select_from(t)).scalar())

    assert filled.run_read(count) == 6  # v2's rows only
    assert len(filled.synapses_at("v2", include_self=True)) == 6
    assert filled.create_version("v1").n_synapses == 6  # the name is free again
    with pytest.raises(VersionNotFoundError):
        filled.delete_version("v3")


def test_a_version_2_store_is_migrated(store_url: str) -> None:
    with AnnotationStore.open(store_url) as store:
        store.add_synapses(synapse_rows([5], [1], [2]))

        def to_v2(conn: Connection) -> None:
            for table in (schema.version_assignments, schema.version_neurons,
                          schema.version_synapses, schema.versions):  # fmt: skip
                table.drop(conn)
            meta = schema.meta
            conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))

        store.run_write(to_v2)
    with AnnotationStore.open(store_url) as store:
        version = store.run_read(
            lambda c: c.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            ).scalar()
        )
        assert version == str(schema.SCHEMA_VERSION) == "3"
        assert store.create_version("after-migration").n_synapses == 1
        assert store.synapses_at("after-migration")["id"].tolist() == [5]


def test_versions_take_the_journals_lock() -> None:
    # the PostgreSQL advisory lock key must be the journal's, or a version could land
    # between the statements of an edit
    assert str(JOURNAL_LOCK) in inspect.getsource(Journal._serialise)


def test_a_locked_sqlite_store_freezes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.db"
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_MS", 50)
    monkeypatch.setattr(engine_module, "LOCK_RETRIES", 2)
    with AnnotationStore.open(path) as store:
        store.add_synapses(synapse_rows([1], [1], [2]))
        blocker = sqlite3.connect(path, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")  # an edit holds the journal's write lock
        try:
            with pytest.raises(StoreLockedError):
                store.create_version("v1")
        finally:
            blocker.rollback()
            blocker.close()
        assert store.versions() == []
        assert store.create_version("v1").n_synapses == 1


def _wait_for_lock_wait(url: str, other_pid: int) -> None:
    """Until a store connection of this test (not ``other_pid``) waits on a lock."""
    name = url.rsplit("application_name=", 1)[1].split("&", maxsplit=1)[0]
    with _connect(url) as watch:
        for _ in range(600):  # polled, not timed: the bound only stops a hung test
            waiting = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND wait_event_type = 'Lock' AND pid <> %s",
                (name, other_pid),
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.05)
    pytest.fail("create_version never waited for the lock held by the other session")


@pytest.mark.parametrize("journal", [True, False], ids=["journal-edit", "plain-write"])
def test_a_version_waits_for_a_write_in_flight_and_includes_it(
    postgres_url: str, journal: bool
) -> None:
    with AnnotationStore.open(postgres_url) as store:
        store.add_synapses(synapse_rows([1, 2], [1, 1], [2, 3]))
        writer = psycopg.connect(_libpq_url(postgres_url), connect_timeout=5)
        frozen: list[object] = []
        freezer = threading.Thread(target=lambda: frozen.append(store.create_version("v1")))
        try:
            if journal:  # as an edit commits: the journal's lock first
                writer.execute("SELECT pg_advisory_xact_lock(%s)", (JOURNAL_LOCK,))
            writer.execute("UPDATE synapses SET status = 'verified' WHERE id = 1")
            freezer.start()
            _wait_for_lock_wait(postgres_url, writer.info.backend_pid)
            writer.commit()
        finally:
            writer.close()
            freezer.join(60)
        assert len(frozen) == 1  # it went through once the writer was done ...
        statuses = store.synapses_at("v1")["status"].tolist()
        assert statuses == ["verified", "unreviewed"]  # ... and holds what it committed
