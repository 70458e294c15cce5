"""The annotation commands: import, synapses (CSV/JSON, exact ids), view/demo with a store."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from napari_connecto import cli
from napari_connecto.annotations import AnnotationStore
from napari_connecto.annotations import engine as store_engine
from napari_connecto.cli import main

A = 720575940621039145  # a CAVE-style root id, above 2**53
B = 2**63 + 12345  # above int64: stored as a negative int64, must come back exact
C = 2**53 + 1  # the first integer a float64 cannot hold
HEADER = "id,pre_id,post_id,z,y,x,confidence\n"
ROWS = [
    (1, A, B, 40.0, 400.0, 800.0, 0.9),
    (2, A, C, 80.0, 404.0, 804.0, ""),
    (3, B, A, 120.0, 408.0, 808.0, 0.5),
    (4, A, A, 160.0, 412.0, 812.0, 0.7),  # an autapse
]


def write_table(path, rows=ROWS, header=HEADER):
    path.write_text(header + "".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "synapses.csv")


@pytest.fixture
def db(tmp_path, table, capsys):
    path = tmp_path / "store.db"
    assert main(["import", str(table), "--db", str(path)]) == 0
    capsys.readouterr()
    return path


def synapses_json(capsys, db, *extra):
    assert main(["synapses", "--db", str(db), *extra, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_import_prints_one_summary_line_and_reimport_is_unchanged(tmp_path, table, capsys):
    path = tmp_path / "store.db"
    assert main(["import", str(table), "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "synapses 4 added, 0 unchanged; neurons 3 added" in out
    assert main(["import", str(table), "--db", str(path)]) == 0
    assert "synapses 0 added, 4 unchanged; neurons 0 added, 0 filled, 3 unchanged" in (
        capsys.readouterr().out
    )
    with AnnotationStore.open(path, create=False) as store:
        assert store.count_synapses(include_self=True) == 4


def test_synapses_json_keeps_every_digit(db, capsys):
    rows = synapses_json(capsys, db, "--neuron", str(A))
    assert [r["id"] for r in rows] == [1, 2, 3]  # the autapse is dropped by default
    assert [r["direction"] for r in rows] == ["out", "out", "in"]
    assert [r["partner"] for r in rows] == [B, C, B]
    assert all(type(r["pre_id"]) is int and type(r["post_id"]) is int for r in rows)
    assert rows[0]["post_id"] == B and rows[1]["post_id"] == C and rows[2]["pre_id"] == B
    assert rows[1]["confidence"] is None  # NaN is null: the output is strict JSON
    assert rows[0]["z"] == 40.0 and rows[0]["status"] == "unreviewed"


def test_synapses_json_is_strict_and_integers_are_not_floats(db, capsys):
    assert main(["synapses", "--db", str(db), "--neuron", str(B), "--format", "json"]) == 0
    text = capsys.readouterr().out
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert str(B) in text and f"{float(B)}" not in text and "e+18" not in text


def test_pre_and_post_flags_select_the_neurons_side(db, capsys):
    outputs = synapses_json(capsys, db, "--neuron", str(A), "--pre")
    assert [r["id"] for r in outputs] == [1, 2]
    assert all(r["pre_id"] == A for r in outputs)
    inputs = synapses_json(capsys, db, "--neuron", str(A), "--post")
    assert [(r["id"], r["pre_id"]) for r in inputs] == [(3, B)]
    with_self = synapses_json(capsys, db, "--neuron", str(A), "--pre", "--include-self")
    assert [r["id"] for r in with_self] == [1, 2, 4]
    with pytest.raises(SystemExit):
        main(["synapses", "--db", str(db), "--neuron", str(A), "--pre", "--post"])


def test_synapses_csv_parses_back_exactly(db, capsys):
    assert main(["synapses", "--db", str(db), "--neuron", str(C)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    (row,) = rows
    assert (int(row["id"]), int(row["pre_id"]), int(row["post_id"])) == (2, A, C)
    assert (row["direction"], int(row["partner"])) == ("in", A)
    assert float(row["y"]) == 404.0 and row["confidence"] == ""


def test_a_neuron_without_synapses_gives_a_header_or_an_empty_list(tmp_path, db, capsys):
    neurons = write_table(tmp_path / "neurons.csv", [(99, "lonely")], "id,name\n")
    assert main(["import", str(neurons), "--db", str(db), "--kind", "neurons"]) == 0
    capsys.readouterr()
    assert synapses_json(capsys, db, "--neuron", "99") == []
    assert main(["synapses", "--db", str(db), "--neuron", "99"]) == 0
    assert capsys.readouterr().out.startswith("id,direction,partner,pre_id,post_id,")


def test_unknown_neuron_and_missing_database_are_one_line_errors(tmp_path, db, capsys):
    assert main(["synapses", "--db", str(db), "--neuron", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-connecto: ") and "no neuron 5" in err
    missing = tmp_path / "missing.db"
    assert main(["synapses", "--db", str(missing), "--neuron", "5"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not missing.exists()  # reading never creates a store


def test_bad_neuron_ids_are_refused_by_the_parser(db):
    for bad in ("abc", "-3", "0", str(2**64), "1e18"):
        with pytest.raises(SystemExit):
            main(["synapses", "--db", str(db), "--neuron", bad])


def test_a_malformed_file_fails_with_its_name_and_imports_nothing(tmp_path, table, capsys):
    bad = write_table(tmp_path / "bad.csv", [*ROWS[:2], (3, "oops", A, 1.0, 2.0, 3.0, "")])
    path = tmp_path / "store.db"
    assert main(["import", str(bad), "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "pre_id" in err
    assert not path.exists()  # the file is read before the database is touched
    assert main(["import", str(table), "--db", str(path)]) == 0
    conflicting = write_table(tmp_path / "conflict.csv", [(1, A, C, 40.0, 400.0, 800.0, 0.9)])
    capsys.readouterr()
    assert main(["import", str(conflicting), "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert "conflicting synapses" in err and "nothing imported" in err
    for missing in ("nowhere.csv", "nowhere.h5"):
        assert main(["import", str(tmp_path / missing), "--db", str(path)]) == 2
        assert missing in capsys.readouterr().err


def test_format_map_and_resolution_options(tmp_path, capsys):
    table = write_table(
        tmp_path / "cave.txt",
        [(7, A, B, 10, 100, 200)],
        "syn,from_root,to_root,cz,cy,cx\n",
    )
    path = tmp_path / "store.db"
    args = ["import", str(table), "--db", str(path), "--format", "table", "--kind", "synapses"]
    maps = ["id", "pre_id", "post_id", "z", "y", "x"]
    for name, target in zip(("syn", "from_root", "to_root", "cz", "cy", "cx"), maps):
        args += ["--map", f"{name}={target}"]
    assert main([*args, "--resolution", "40,4,4"]) == 0
    capsys.readouterr()
    (row,) = synapses_json(capsys, path, "--neuron", str(A))
    assert (row["id"], row["pre_id"], row["post_id"]) == (7, A, B)
    assert (row["z"], row["y"], row["x"]) == (400.0, 400.0, 800.0)
    with pytest.raises(SystemExit):
        main([*args, "--resolution", "40,4"])
    with pytest.raises(SystemExit):
        main([*args, "--map", "nonsense"])
    assert main([*args, "--format", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_import_of_a_cremi_file(tmp_path, capsys):
    from napari_connecto.sample import generate_sample
    from napari_connecto.sample.write import write_cremi

    data = generate_sample((8, 128, 128), 0)
    cremi = tmp_path / "small.h5"
    write_cremi(cremi, data)
    path = tmp_path / "store.db"
    assert main(["import", str(cremi), "--db", str(path)]) == 0
    assert f"{cremi} -> " in capsys.readouterr().out
    with AnnotationStore.open(path, create=False) as store:
        frame = store.synapses(include_self=True)
        assert len(frame) == len(data.synapses.partners) > 0
        neuron = int(frame["pre_id"].iloc[0])
    rows = synapses_json(capsys, path, "--neuron", str(neuron), "--pre", "--include-self")
    assert rows and all(r["pre_id"] == neuron for r in rows)


def test_a_locked_database_fails_cleanly(tmp_path, table, db, capsys, monkeypatch):
    monkeypatch.setattr(store_engine, "BUSY_TIMEOUT_MS", 20)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        more = write_table(tmp_path / "more.csv", [(9, A, C, 1.0, 2.0, 3.0, "")])
        assert main(["import", str(more), "--db", str(db)]) == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in capsys.readouterr().err
    assert main(["import", str(more), "--db", str(db)]) == 0  # fine once it is released


def test_a_database_url_of_another_kind_is_refused(table, capsys):
    assert main(["import", str(table), "--db", "mysql://u:secret@host/db"]) == 2
    err = capsys.readouterr().err
    assert "mysql" in err and "secret" not in err


def test_neuron_needs_annotations_for_view(tmp_path):
    with pytest.raises(SystemExit):
        main(["view", str(tmp_path / "x.zarr"), "--neuron", "5"])


def test_view_checks_the_store_before_opening_a_window(tmp_path, db, capsys):
    from napari_connecto.sample import generate_sample
    from napari_connecto.sample.write import write_cremi

    cremi = tmp_path / "small.h5"
    write_cremi(cremi, generate_sample((8, 128, 128), 0))
    assert main(["view", str(cremi), "--annotations", str(tmp_path / "none.db")]) == 2
    assert "none.db" in capsys.readouterr().err
    assert main(["view", str(cremi), "--annotations", str(db), "--neuron", "5"]) == 2
    assert "no neuron 5" in capsys.readouterr().err


@pytest.fixture
def sample_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_demo_imports_the_sample_synapses_once(sample_cache, monkeypatch):
    shown = []
    monkeypatch.setattr(cli, "_view", lambda *args: shown.append(args) or 0)
    assert main(["demo"]) == 0
    (sources, at, screenshot, db, neuron) = shown[0]
    from napari_connecto.sample import ensure_sample

    paths = ensure_sample()
    assert db == str(paths.directory / cli.DEMO_STORE_NAME)
    assert neuron is None and screenshot is None
    with AnnotationStore.open(db, create=False) as store:
        stored = store.synapses(include_self=True)
        assert len(stored) > 20
        at_synapse = np.abs(stored[["pre_z", "pre_y", "pre_x"]].to_numpy() - at).sum(axis=1)
        assert at_synapse.min() < 1  # it opens on a stored synapse
    calls = []
    real = AnnotationStore.import_batch
    monkeypatch.setattr(
        AnnotationStore, "import_batch", lambda self, b: calls.append(b) or real(self, b)
    )
    assert main(["demo"]) == 0 and calls == []  # imported once
    with AnnotationStore.open(db, create=False) as store:
        store.set_setting(cli._DEMO_SETTING, "stale")
    assert main(["demo"]) == 0 and len(calls) == 1  # a re-import is harmless
    with AnnotationStore.open(db, create=False) as store:
        assert len(store.synapses(include_self=True)) == len(stored)
    assert main(["demo", "--neuron", "42"]) == 0
    assert shown[-1][4] == 42


@pytest.mark.gui
def test_demo_docks_the_annotation_tables(sample_cache, tmp_path):
    shot = tmp_path / "demo.png"
    db = tmp_path / "demo.db"
    env = dict(os.environ, NAPARI_CONNECTO_CACHE=str(sample_cache))
    command = [sys.executable, "-m", "napari_connecto.cli", "demo", "--annotations", str(db)]
    result = subprocess.run(
        [*command, "--screenshot", str(shot)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert shot.stat().st_size > 0
    with AnnotationStore.open(db, create=False) as store:
        assert store.count_synapses(include_self=True) > 20


@pytest.mark.gui
def test_view_docks_the_tables_with_the_neuron_selected(
    tmp_path, db, monkeypatch, make_napari_viewer
):
    from napari_connecto.sample import generate_sample
    from napari_connecto.sample.write import write_cremi
    from napari_connecto.viewer import launch

    cremi = tmp_path / "small.h5"
    write_cremi(cremi, generate_sample((8, 128, 128), 0))
    real_view, seen = launch.view, {}

    def view(*sources, **kwargs):
        return real_view(*sources, viewer=make_napari_viewer(), **kwargs)

    def screenshot(viewer, path):
        seen["docks"] = list(viewer.window.dock_widgets)
        seen["selected"] = viewer.window.dock_widgets["Annotations"].selected_neurons()

    monkeypatch.setattr(launch, "view", view)
    monkeypatch.setattr(cli, "_save_screenshot", screenshot)
    args = ["view", f"{cremi}#volumes/raw", "--annotations", str(db), "--neuron", str(A)]
    assert main([*args, "--screenshot", str(tmp_path / "shot.png")]) == 0
    assert "Annotations" in seen["docks"]
    assert seen["selected"] == [A]
