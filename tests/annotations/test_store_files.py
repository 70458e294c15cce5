"""The SQLite file behind a store: WAL, locking, schema versions, foreign files, URLs."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Connection, text

from napari_connecto.annotations import AnnotationStore, schema
from napari_connecto.annotations import engine as engine_module
from napari_connecto.errors import (
    AnnotationError,
    SchemaVersionError,
    SourceNotFoundError,
    StoreLockedError,
)


def one_synapse(synapse_id: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [synapse_id], "pre_id": [1], "post_id": [2], "z": [0.0], "y": [0.0], "x": [0.0]}
    )


def test_sqlite_file_is_wal_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AnnotationStore.open(path) as store:
        store.add_synapses(one_synapse(1))
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT count(*) FROM synapses").fetchone()[0] == 1
    with AnnotationStore.open(path, create=False) as store:
        assert store.synapse_neurons(1) == (1, 2)


def test_missing_file_or_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError):
        AnnotationStore.open(tmp_path / "nope.db", create=False)
    with pytest.raises(SourceNotFoundError):
        AnnotationStore.open(tmp_path / "no" / "folder.db")


def test_other_databases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="mysql"):
        AnnotationStore.open("mysql://user@host/db")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(SchemaVersionError, match="other tables"):
        AnnotationStore.open(foreign)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    AnnotationStore.open(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE connecto_meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(SchemaVersionError, match="upgrade napari-connecto"):
        AnnotationStore.open(path)


def test_older_schema_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.db"
    with AnnotationStore.open(path) as store:
        store.add_synapses(one_synapse(7))

    def add_priority(conn: Connection) -> None:
        conn.execute(text("ALTER TABLE bookmarks ADD COLUMN priority INTEGER DEFAULT 0"))

    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(schema.MIGRATIONS, schema.SCHEMA_VERSION - 1, add_priority)
    with AnnotationStore.open(path) as store:
        assert store.synapse_neurons(7) == (1, 2)  # data kept
    with sqlite3.connect(path) as raw:
        version = raw.execute("SELECT value FROM connecto_meta WHERE key='schema_version'")
        assert int(version.fetchone()[0]) == schema.SCHEMA_VERSION
        columns = [row[1] for row in raw.execute("PRAGMA table_info(bookmarks)")]
        assert "priority" in columns


def test_locked_database_is_retried_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.db"
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_MS", 50)
    store = AnnotationStore.open(path)
    blocker = sqlite3.connect(path, timeout=0, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        with pytest.raises(StoreLockedError, match="locked"):
            store.add_synapses(one_synapse(1))
        # the lock goes away while the store is retrying: the write succeeds
        release = threading.Timer(0.15, blocker.rollback)
        release.start()
        started = time.monotonic()
        store.add_synapses(one_synapse(2))
        release.join()
        assert time.monotonic() - started >= 0.1
    finally:
        blocker.close()
    assert store.has_synapses([1, 2]).tolist() == [False, True]
    store.close()


def test_a_failed_import_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AnnotationStore.open(path) as store:
        store.add_synapses(one_synapse(1))
        frame = pd.concat([one_synapse(2), one_synapse(3)], ignore_index=True)
        frame.loc[1, "pre_id"] = np.uint64(5)
        frame = pd.concat([frame, one_synapse(1).assign(post_id=9)], ignore_index=True)
        with pytest.raises(AnnotationError):
            store.add_synapses(frame)
        assert store.count_synapses(include_self=True) == 1
        assert store.count_neurons() == 2  # no bare rows for 5 or 9 either
