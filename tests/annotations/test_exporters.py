"""Exports read back exactly: CSV and Parquet by pandas/pyarrow and the importers, CREMI by h5py."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from napari_connecto.annotations import AnnotationStore, exporters
from napari_connecto.annotations.exporters import export_neurons, export_synapses
from napari_connecto.annotations.frames import (
    NEURON_COLUMNS,
    SYNAPSE_COLUMNS,
    normalize_neurons,
    normalize_synapses,
)
from napari_connecto.annotations.importers import read_annotations

BIG63 = 2**63 + 12345
BIG53 = 2**53 + 1
TOP = 2**64 - 2
RES = (40.0, 4.0, 4.0)


def synapses() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": np.array([BIG63, 5, BIG53], dtype=np.uint64),
            "pre_id": np.array([TOP, BIG53, 3], dtype=np.uint64),
            "post_id": np.array([BIG53, TOP, 4], dtype=np.uint64),
            "pre_z": [40.0, 80.0, 120.0],
            "pre_y": [8.0, 12.0, 16.0],
            "pre_x": [4.0, 8.0, 12.0],
            "post_z": [80.0, 120.0, 160.0],
            "post_y": [16.0, 20.0, 24.0],
            "post_x": [0.1, 8.0, 12.0],
            "confidence": [0.5, np.nan, 1 / 3],
            "status": ["verified", "unreviewed", "rejected"],
            "reviewer": ["ann", "", "bob"],
            "created": [1.7e9 + 0.25, 1.7e9, 1.6e9],
        }
    )
    return normalize_synapses(frame, "test", now=1.75e9)


def neurons() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": np.array([TOP, BIG53, 3], dtype=np.uint64),
            "name": ["a, with comma", "b", ""],
            "type": ["KC", "", "PN"],
            "z": [1.0, np.nan, 3.0],
            "y": [2.0, np.nan, 4.0],
            "x": [3.0, np.nan, 5.0],
        }
    )
    return normalize_neurons(frame, "test")


def assert_same(got: pd.DataFrame, want: pd.DataFrame, columns: tuple[str, ...]) -> None:
    for column in columns:
        if want[column].dtype == np.uint64:
            assert got[column].dtype == np.uint64, column
            assert [int(v) for v in got[column]] == [int(v) for v in want[column]], column
        elif want[column].dtype.kind == "f":
            np.testing.assert_array_equal(got[column].to_numpy(float), want[column].to_numpy(float))
        else:
            assert got[column].tolist() == want[column].tolist(), column


@pytest.mark.parametrize("name", ["syn.csv", "syn.csv.gz", "syn.parquet"])
def test_synapse_table_exports_read_back_exactly(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert export_synapses(synapses(), path) == 3
    assert_same(read_annotations(path).synapses, synapses(), SYNAPSE_COLUMNS)
    if name.endswith(".parquet"):
        ids = pq.read_table(path).column("pre_id").to_pylist()
    else:
        ids = [int(v) for v in pd.read_csv(path, dtype=str)["pre_id"]]
    assert ids == [TOP, BIG53, 3]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_neuron_exports_read_back_exactly(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"neurons.{fmt}"
    export_neurons(neurons(), path)
    assert_same(read_annotations(path).neurons, neurons(), NEURON_COLUMNS)
    raw = pd.read_csv(path, dtype=str) if fmt == "csv" else pq.read_table(path).to_pandas()
    assert [int(v) for v in raw["id"]] == [TOP, BIG53, 3]


def write_neuron_ids(path: Path, frame: pd.DataFrame) -> None:
    """A neuron_ids volume whose voxels at each site hold the synapse's pre/post neuron."""
    labels = np.full((6, 8, 8), 0xFFFF_FFFF_FFFF_FFFF, dtype=np.uint64)
    for prefix, column in (("pre_", "pre_id"), ("post_", "post_id")):
        coords = frame[[f"{prefix}z", f"{prefix}y", f"{prefix}x"]].to_numpy()
        for voxel, neuron in zip(np.rint(coords / RES).astype(int), frame[column], strict=True):
            labels[tuple(voxel)] = neuron
    with h5py.File(path, "a") as f:
        ds = f.create_dataset("volumes/labels/neuron_ids", data=labels)
        ds.attrs["resolution"] = RES
        f.create_dataset("volumes/raw", data=np.zeros((6, 8, 8), np.uint8))


def test_cremi_export_into_a_file_with_volumes_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sample.hdf"
    frame = synapses()
    write_neuron_ids(path, frame)
    with h5py.File(path, "a") as f:  # an old annotations group is replaced
        f["annotations/ids"] = np.array([1], np.uint64)
    assert export_synapses(frame, path) == 3
    with h5py.File(path, "r") as f:
        assert "volumes/raw" in f
        assert f["annotations/ids"].dtype == np.uint64
        assert f["annotations/ids"].shape == (6,)
        types = f["annotations/types"].asstr()[()].tolist()
        assert types == ["presynaptic_site"] * 3 + ["postsynaptic_site"] * 3
    back = read_annotations(path, format="cremi").synapses
    assert_same(back, frame, ("id", "pre_id", "post_id", "pre_z", "pre_y", "pre_x", "z", "y", "x"))
    assert_same(back, frame, ("post_z", "post_y", "post_x"))


def test_cremi_export_without_usable_ids_uses_fresh_site_ids(tmp_path: Path) -> None:
    frame = synapses()
    frame["id"] = np.array([0, 0, 9], dtype=np.uint64)
    path = tmp_path / "new.h5"
    export_synapses(frame, path, format="cremi")
    with h5py.File(path, "r") as f:
        assert f.attrs["file_format"] == "0.2"
        assert f["annotations/ids"][()].tolist() == [1, 2, 3, 4, 5, 6]
        assert f["annotations/presynaptic_site/partners"][()].tolist() == [[1, 4], [2, 5], [3, 6]]
        np.testing.assert_array_equal(
            f["annotations/locations"][3:], frame[["post_z", "post_y", "post_x"]].to_numpy()
        )


def test_store_export_is_paged_without_losing_or_repeating_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporters, "PAGE_ROWS", 2)
    with AnnotationStore.open(tmp_path / "store.db") as store:
        store.add_neurons(neurons())
        self_synapse = synapses().iloc[[2]].assign(id=np.uint64(77), post_id=np.uint64(3))
        store.add_synapses(pd.concat([synapses(), self_synapse], ignore_index=True))
        n = export_synapses(store, tmp_path / "all.csv")
        export_neurons(store, tmp_path / "neurons.parquet")
        with pytest.raises(ValueError, match="csv or parquet"):
            export_neurons(store, tmp_path / "neurons.h5")
    assert n == 4
    raw = pd.read_csv(tmp_path / "all.csv", dtype=str)
    assert sorted(int(v) for v in raw["id"]) == sorted([BIG63, 5, BIG53, 77])
    assert list(raw.columns[: len(SYNAPSE_COLUMNS)]) == list(SYNAPSE_COLUMNS)
    table = pq.read_table(tmp_path / "neurons.parquet").to_pandas()
    assert sorted(int(v) for v in table["id"]) == sorted([TOP, BIG53, 3, 4])
    counts = table.set_index("id").loc[np.uint64(3)]
    assert (int(counts["n_pre"]), int(counts["n_post"])) == (2, 1)


def test_unknown_export_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot tell the export format"):
        export_synapses(synapses(), tmp_path / "out.xlsx")
    with pytest.raises(ValueError, match="unknown export format"):
        export_synapses(synapses(), tmp_path / "out.csv", format="swc")
    assert not (tmp_path / "out.csv").exists()
