"""``napari-connecto version``: create, list, diff (with a CSV of changes), export, delete.

The command is driven through argparse exactly as ``cli.main`` drives it: a parser with
:func:`add_parser` on its subcommands, then :func:`run` on the parsed arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from napari_connecto._cli_versions import add_parser, run
from napari_connecto.annotations import AnnotationStore
from napari_connecto.annotations.versions import VersionExistsError, VersionNotFoundError
from napari_connecto.errors import AnnotationError, SourceNotFoundError

A = 720575940621039145  # a CAVE-style root id, above 2**53
B = 2**63 + 12345  # above int64
C = 2**53 + 1  # the first integer a float64 cannot hold


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-connecto")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store with three synapses A->B, A->C, B->A."""
    path = tmp_path / "store.db"
    frame = pd.DataFrame(
        {
            "id": np.array([1, 2, 3], dtype=np.uint64),
            "pre_id": np.array([A, A, B], dtype=np.uint64),
            "post_id": np.array([B, C, A], dtype=np.uint64),
            "z": [40.0, 80.0, 120.0],
            "y": [400.0, 404.0, 408.0],
            "x": [800.0, 804.0, 808.0],
        }
    )
    with AnnotationStore.open(path) as store:
        store.add_synapses(frame)
    return path


def test_create_and_list(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "create", str(db), "v1", "--note", "first", "--author", "ana"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("v1\t") and "by ana" in out and "3 synapses, 3 neurons" in out
    assert main(["version", "create", str(db), "v2"]) == 0
    assert main(["version", "list", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines[1:]] == ["v1", "v2"]
    assert main(["version", "list", str(db), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["note"], r["n_synapses"]) for r in rows] == [
        ("v1", "first", 3), ("v2", "", 3)
    ]  # fmt: skip


def test_errors_are_typed(db: Path, tmp_path: Path) -> None:
    assert main(["version", "create", str(db), "v1"]) == 0
    with pytest.raises(VersionExistsError):
        main(["version", "create", str(db), "v1"])
    with pytest.raises(AnnotationError, match="live"):
        main(["version", "create", str(db), "live"])
    with pytest.raises(VersionNotFoundError, match="v7"):
        main(["version", "diff", str(db), "v7"])
    with pytest.raises(SourceNotFoundError):  # a typo'd database is not created
        main(["version", "list", str(tmp_path / "nope.db")])
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(AnnotationError, match="export format"):
        main(["version", "export", str(db), "v1", str(tmp_path / "out.xlsx")])
    with pytest.raises(SystemExit):  # argparse: a missing NAME
        main(["version", "create", str(db)])


def test_diff_prints_counts_and_writes_exact_csv(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["version", "create", str(db), "v1"]) == 0
    with AnnotationStore.open(db) as store:
        store.set_synapse_status([2], "verified")
        store.add_synapses(
            pd.DataFrame(
                {"id": np.array([B], dtype=np.uint64), "pre_id": np.array([C], dtype=np.uint64),
                 "post_id": np.array([A], dtype=np.uint64), "z": [9.0], "y": [9.0], "x": [9.0]}
            )
        )  # fmt: skip
    capsys.readouterr()
    out = tmp_path / "changes.csv"
    assert main(["version", "diff", str(db), "v1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "v1 -> live"
    assert "synapses: 1 added, 0 removed, 1 changed (status 1)" in text
    assert "neurons: 0 added, 0 removed, 2 changed" in text  # C -> A: both counts moved
    assert "assignments: 0 fragment(s) changed segment" in text
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["change"], r["changed"]) for r in rows] == [
        ("2", "changed", "status"), (str(B), "added", "")
    ]  # fmt: skip
    assert (rows[0]["post_id_a"], rows[0]["post_id_b"]) == (str(C), str(C))  # every digit
    assert (rows[0]["status_a"], rows[0]["status_b"]) == ("unreviewed", "verified")
    assert (rows[1]["pre_id_a"], rows[1]["pre_id_b"], rows[1]["post_id_b"]) == ("", str(C), str(A))

    assert main(["version", "create", str(db), "v2"]) == 0
    capsys.readouterr()
    assert main(["version", "diff", str(db), "v2", "v1"]) == 0  # backwards: B is removed
    assert "synapses: 0 added, 1 removed, 1 changed (status 1)" in capsys.readouterr().out


def test_export_writes_the_synapses_of_a_version(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["version", "create", str(db), "v1"]) == 0
    with AnnotationStore.open(db) as store:
        store.set_synapse_status([1, 3], "rejected")
        store.add_synapses(
            pd.DataFrame({"id": [9], "pre_id": [5], "post_id": [6], "z": [1.0], "y": [1.0],
                          "x": [1.0]})
        )  # fmt: skip
    target = tmp_path / "v1.parquet"
    assert main(["version", "export", str(db), "v1", str(target)]) == 0
    assert "3 synapses ->" in capsys.readouterr().out
    table = pq.read_table(target)
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("pre_id").to_pylist() == [A, A, B]  # exact uint64
    assert table.column("status").to_pylist() == ["unreviewed"] * 3  # as frozen, not as now
    live = tmp_path / "live.csv"
    assert main(["version", "export", str(db), "live", str(live)]) == 0
    frame = pd.read_csv(live, dtype=str)
    assert frame["id"].tolist() == ["1", "2", "3", "9"]
    assert frame["post_id"].tolist()[:3] == [str(B), str(C), str(A)]
    assert frame["status"].tolist() == ["rejected", "unreviewed", "rejected", "unreviewed"]


def test_delete(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "create", str(db), "v1"]) == 0
    assert main(["version", "delete", str(db), "v1"]) == 0
    assert "deleted version 'v1' (3 synapses)" in capsys.readouterr().out
    assert main(["version", "list", str(db)]) == 0
    assert capsys.readouterr().out == "no versions\n"
    with pytest.raises(VersionNotFoundError):
        main(["version", "delete", str(db), "v1"])


def test_diff_out_replaces_the_csv_atomically(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["version", "create", str(db), "v1"]) == 0
    with AnnotationStore.open(db) as store:
        store.set_synapse_status([2], "verified")
    out = tmp_path / "changes.csv"
    out.write_text("id,change\nold,old\n")

    def crash(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(AnnotationError, match="No space left"):
        main(["version", "diff", str(db), "v1", "--out", str(out)])
    assert out.read_text() == "id,change\nold,old\n"  # the previous CSV, whole
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]
    monkeypatch.undo()
    old = os.umask(0o022)
    try:
        assert main(["version", "diff", str(db), "v1", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    with out.open(newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["2"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    with pytest.raises(AnnotationError, match="does not exist"):
        main(["version", "diff", str(db), "v1", "--out", str(tmp_path / "no" / "c.csv")])
