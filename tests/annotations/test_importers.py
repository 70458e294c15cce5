"""Importers on real files written by h5py, numpy, pandas and pyarrow into ``tmp_path``.

Ids are checked at and above 2**63 (uint64 only) and between 2**53 and 2**63 (exact in
int64, not in float64); every malformed file must name the file, row and column.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from napari_connecto.annotations import AnnotationStore
from napari_connecto.annotations.importers import FORMATS, read_annotations, sniff_format
from napari_connecto.errors import ConflictError, ImportFormatError, SourceNotFoundError
from tests.annotations.test_keypoints import label_at, write_segmentation

BIG63 = 2**63 + 12345
BIG53 = 2**53 + 1
ROOT_A = 720575940621039145  # CAVE-style root ids, above 2**53
ROOT_B = 864691135012345678
BACKGROUND = 0xFFFF_FFFF_FFFF_FFFF


def ints(values: pd.Series) -> list[int]:
    return [int(v) for v in values]


def zyx(frame: pd.DataFrame, prefix: str = "") -> list[list[float]]:
    return frame[[f"{prefix}z", f"{prefix}y", f"{prefix}x"]].to_numpy().tolist()


def assert_names(exc: pytest.ExceptionInfo, path: Path, row: int | None, column: str) -> None:
    message = str(exc.value)
    assert str(path) in message
    assert f"column {column!r}" in message
    if row is not None:
        assert f"row {row}," in message or f"row {row}:" in message
        assert exc.value.row == row


# -- tables --------------------------------------------------------------------------------
def test_csv_common_names_keep_every_digit(tmp_path: Path) -> None:
    path = tmp_path / "syn.csv"
    path.write_text(
        "synapse_id,pre_pt_root_id,post_pt_root_id,ctr_x,ctr_y,ctr_z,score\n"
        f"5,{BIG63},{BIG53},10,20,30,0.5\n"
        f"6,{BIG53},{BIG63},11.5,21,31,0.25\n"
    )
    batch = read_annotations(path)
    syn = batch.synapses
    assert syn["id"].dtype == np.uint64
    assert ints(syn["id"]) == [5, 6]
    assert ints(syn["pre_id"]) == [BIG63, BIG53]
    assert ints(syn["post_id"]) == [BIG53, BIG63]
    assert zyx(syn) == [[30.0, 20.0, 10.0], [31.0, 21.0, 11.5]]
    assert zyx(syn, "pre_") == zyx(syn)
    assert syn["confidence"].tolist() == [0.5, 0.25]
    assert sorted(ints(batch.neurons["id"])) == [BIG53, BIG63]


def test_csv_explicit_mapping_and_voxel_resolution(tmp_path: Path) -> None:
    path = tmp_path / "edges.tsv"
    path.write_text("from\tto\tpz\tpy\tpx\tnote\n1\t2\t3\t4\t5\tx\n")
    mapping = {"from": "pre_id", "to": "post_id", "pz": "z", "py": "y", "px": "x"}
    batch = read_annotations(path, mapping=mapping, resolution=(40, 4, 8))
    assert ints(batch.synapses["pre_id"]) == [1]
    assert ints(batch.synapses["post_id"]) == [2]
    assert zyx(batch.synapses) == [[120.0, 16.0, 40.0]]


def test_mapping_naming_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "edges.csv"
    path.write_text("a,b,z,y,x\n1,2,3,4,5\n")
    with pytest.raises(ImportFormatError) as exc:
        read_annotations(path, mapping={"pre": "pre_id", "b": "post_id"})
    assert_names(exc, path, None, "pre")


def test_neuron_table_sniffed_root_id_beats_annotation_id(tmp_path: Path) -> None:
    path = tmp_path / "cells.csv"
    path.write_text(
        "id,pt_root_id,cell_type,pt_position\n"
        f'1,{ROOT_A},23P,"[10 20 30]"\n'
        f'2,{BIG63},BC,"(1, 2, 3)"\n'
    )
    batch = read_annotations(path, resolution=(40, 4, 4))
    assert batch.synapses is None
    neurons = batch.neurons
    assert ints(neurons["id"]) == [ROOT_A, BIG63]
    assert neurons["type"].tolist() == ["23P", "BC"]
    assert zyx(neurons) == [[1200.0, 80.0, 40.0], [120.0, 8.0, 4.0]]


def test_parquet_uint64_ids_and_list_positions(tmp_path: Path) -> None:
    path = tmp_path / "syn.parquet"
    table = pa.table(
        {
            "pre_pt_root_id": pa.array([BIG63, 3], pa.uint64()),
            "post_pt_root_id": pa.array([BIG53, BIG63], pa.uint64()),
            "ctr_pt_position": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            "status": ["verified", "unreviewed"],
        }
    )
    pq.write_table(table, path)
    syn = read_annotations(path).synapses
    assert ints(syn["pre_id"]) == [BIG63, 3]
    assert ints(syn["post_id"]) == [BIG53, BIG63]
    assert zyx(syn) == [[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]]
    assert syn["status"].tolist() == ["verified", "unreviewed"]


def test_parquet_float_ids_above_2_53_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "syn.parquet"
    frame = pd.DataFrame(
        {"pre_id": [1.0, float(2**53 + 2)], "post_id": [2.0, 3.0], "z": [0.0, 0], "y": 0.0, "x": 0}
    )
    frame.to_parquet(path)
    with pytest.raises(ImportFormatError) as exc:
        read_annotations(path)
    assert_names(exc, path, 1, "pre_id")


def test_table_valid_column_drops_rows_and_rows_keep_file_numbers(tmp_path: Path) -> None:
    path = tmp_path / "syn.csv"
    path.write_text("pre,post,z,y,x,valid\n1,2,0,0,0,t\n3,4,0,0,0,f\n5,6,0,0,0,True\n")
    assert ints(read_annotations(path).synapses["pre_id"]) == [1, 5]
    path.write_text("pre,post,z,y,x,valid\n1,2,0,0,0,f\n3,4,0,0,0,t\n5,6,0,abc,0,t\n")
    with pytest.raises(ImportFormatError) as exc:
        read_annotations(path)
    assert_names(exc, path, 2, "y")


@pytest.mark.parametrize(
    ("body", "row", "column"),
    [
        ("1,2,0,0,0\n1,2,0,0,0\n1,2,0,zero,0\n", 2, "y"),
        ("1,2,0,0,0\n-5,2,0,0,0\n", 1, "pre_root_id"),
        ("1,2,0,0,0\n1,,0,0,0\n", 1, "post"),
        ("1,2,0,0,0\n1,2.5,0,0,0\n", 1, "post"),
    ],
    ids=["non-numeric-position", "negative-id", "empty-id", "fractional-id"],
)
def test_malformed_table_values_are_named(tmp_path: Path, body: str, row: int, column: str) -> None:
    path = tmp_path / "syn.csv"
    path.write_text("pre_root_id,post,z,y,x\n" + body)
    with pytest.raises(ImportFormatError) as exc:
        read_annotations(path)
    assert_names(exc, path, row, column)


def test_missing_partner_column(tmp_path: Path) -> None:
    path = tmp_path / "syn.csv"
    path.write_text("pre_id,z,y,x\n1,0,0,0\n")
    with pytest.raises(ImportFormatError) as exc:
        read_annotations(path, kind="synapses")
    assert_names(exc, path, None, "post_id")
    path.write_text("pre,z,y,x\n1,0,0,0\n")
    with pytest.raises(ImportFormatError, match="cannot tell synapses from neurons") as exc:
        read_annotations(path)
    assert str(path) in str(exc.value)


def test_duplicate_ids_conflict_or_collapse(tmp_path: Path) -> None:
    path = tmp_path / "syn.csv"
    path.write_text("id,pre,post,z,y,x\n7,1,2,0,0,0\n7,1,2,0,0,0\n8,1,2,0,0,0\n")
    assert ints(read_annotations(path).synapses["id"]) == [7, 8]
    path.write_text("id,pre,post,z,y,x\n7,1,2,0,0,0\n7,1,2,9,0,0\n")
    with pytest.raises(ConflictError, match="7"):
        read_annotations(path)


def test_segmentation_fills_neuron_keypoints(tmp_path: Path) -> None:
    labels = np.zeros((4, 20, 20), dtype=np.uint64)
    labels[:, 2:18, 2:8] = BIG63
    labels[:, 2:18, 12:18] = 9
    seg = write_segmentation(tmp_path / "seg.h5", labels, resolution=(40.0, 4.0, 4.0))
    path = tmp_path / "syn.csv"
    path.write_text(f"pre,post,z,y,x\n{BIG63},9,40,40,40\n")
    neurons = read_annotations(path, segmentation=seg).neurons
    assert ints(neurons["id"]) == [9, BIG63]
    for seg_id, (z, y, x) in zip(ints(neurons["id"]), zyx(neurons), strict=True):
        assert label_at(labels, np.rint([z / 40, y / 4, x / 4])) == seg_id


# -- butterfly-style arrays ----------------------------------------------------------------
def test_hdf5_arrays_exact_ids_and_keypoints(tmp_path: Path) -> None:
    path = tmp_path / "butterfly.h5"
    synapses = np.array([[BIG63, BIG53, 1, 2, 3], [BIG53, 4, 5, 6, 7]], dtype=np.uint64)
    neurons = np.array([[BIG63, 10, 20, 30]], dtype=np.uint64)
    with h5py.File(path, "w") as f:
        f["data/Synapses"] = synapses
        f["neurons"] = neurons
    batch = read_annotations(path)
    syn = batch.synapses
    assert ints(syn["pre_id"]) == [BIG63, BIG53]
    assert ints(syn["post_id"]) == [BIG53, 4]
    assert zyx(syn) == [[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]]
    by_id = batch.neurons.set_index("id")
    assert sorted(int(i) for i in by_id.index) == [4, BIG53, BIG63]
    assert by_id.loc[np.uint64(BIG63), ["z", "y", "x"]].tolist() == [10.0, 20.0, 30.0]
    assert by_id.loc[np.uint64(4), ["z", "y", "x"]].isna().all()


def test_npy_synapses_in_voxels(tmp_path: Path) -> None:
    path = tmp_path / "synapses.npy"
    np.save(path, np.array([[3, BIG53, 1, 2, 3]], dtype=np.int64))
    syn = read_annotations(path, resolution=(40, 4, 4)).synapses
    assert ints(syn["post_id"]) == [BIG53]
    assert zyx(syn) == [[40.0, 8.0, 12.0]]


def test_npz_named_arrays(tmp_path: Path) -> None:
    path = tmp_path / "ann.npz"
    np.savez(
        path, synapse_connections=np.array([[1, 2, 0, 0, 0]]), keypoints=np.array([[1, 5, 6, 7]])
    )
    batch = read_annotations(path)
    assert ints(batch.synapses["pre_id"]) == [1]
    assert zyx(batch.neurons.set_index("id").loc[[np.uint64(1)]]) == [[5.0, 6.0, 7.0]]


def test_headerless_csv_arrays(tmp_path: Path) -> None:
    path = tmp_path / "neurons.csv"
    path.write_text(f"{BIG63},1,2,3\n{BIG53},4.5,5,6\n")
    assert sniff_format(path) == "arrays"
    neurons = read_annotations(path).neurons
    assert ints(neurons["id"]) == [BIG63, BIG53]
    assert zyx(neurons) == [[1.0, 2.0, 3.0], [4.5, 5.0, 6.0]]


def test_float_array_ids_above_2_53_refused(tmp_path: Path) -> None:
    path = tmp_path / "synapses.npy"
    np.save(path, np.array([[1.0, 2, 0, 0, 0], [float(2**53 + 2), 2, 0, 0, 0]]))
    with pytest.raises(ImportFormatError) as exc:
        read_annotations(path)
    assert_names(exc, path, 1, "synapses.npy[:, 0] (pre_id)")
    np.save(path, np.array([[1.0, 2, 0, 0, 0], [2**50, 2, 0, 0, 0]]))
    assert ints(read_annotations(path).synapses["pre_id"]) == [1, 2**50]


def test_negative_id_in_int_array_refused(tmp_path: Path) -> None:
    path = tmp_path / "arrays.h5"
    with h5py.File(path, "w") as f:
        f["synapses"] = np.array([[1, 2, 0, 0, 0], [1, -2, 0, 0, 0]], dtype=np.int64)
    with pytest.raises(ImportFormatError) as exc:
        read_annotations(path)
    assert_names(exc, path, 1, "/synapses[:, 1] (post_id)")


def test_wrong_width_names_the_dataset(tmp_path: Path) -> None:
    path = tmp_path / "arrays.h5"
    with h5py.File(path, "w") as f:
        f["synapses"] = np.zeros((3, 3), dtype=np.uint64)
    with pytest.raises(ImportFormatError, match=r"N x 5") as exc:
        read_annotations(path, format="arrays")
    assert_names(exc, path, None, "/synapses")


def test_object_npy_is_never_unpickled(tmp_path: Path, no_pickle: None) -> None:
    path = tmp_path / "synapses.npy"
    with path.open("wb") as fh:
        np.lib.format.write_array(fh, np.array([[1, 2, 0, 0, {}]], dtype=object), allow_pickle=True)
    with pytest.raises(ImportFormatError, match="pickle") as exc:
        read_annotations(path)
    assert str(path) in str(exc.value)


# -- CREMI -----------------------------------------------------------------------------------
RES = (40.0, 4.0, 4.0)
VOL_OFFSET = (80.0, 8.0, 4.0)
ANN_OFFSET = (40.0, 0.0, 0.0)


def cremi_labels() -> np.ndarray:
    labels = np.full((5, 20, 20), BACKGROUND, dtype=np.uint64)
    labels[:, :10, :] = BIG63
    labels[:, 10:, :10] = BIG53
    return labels


def site(voxel: tuple[int, int, int]) -> list[float]:
    """A location (relative to ANN_OFFSET) at the centre of a neuron_ids voxel."""
    absolute = np.array(VOL_OFFSET) + np.array(voxel) * np.array(RES)
    return (absolute - np.array(ANN_OFFSET)).tolist()


def write_cremi(
    path: Path,
    *,
    partners: np.ndarray | None = None,
    type_name: str = "types",
    labels: bool = True,
    locations: np.ndarray | None = None,
) -> None:
    ids = np.array([10, 11, 12, BIG63], dtype=np.uint64)
    if locations is None:
        locations = np.array(
            [site((1, 2, 3)), site((1, 12, 4)), site((1, 12, 15)), site((2, 3, 3))]
        )
    if partners is None:
        partners = np.array([[10, 11], [10, 12]], dtype=np.uint64)
    with h5py.File(path, "w") as f:
        f.attrs["file_format"] = "0.2"
        if labels:
            ds = f.create_dataset(
                "volumes/labels/neuron_ids", data=cremi_labels(), chunks=(2, 8, 8)
            )
            ds.attrs["resolution"] = RES
            ds.attrs["offset"] = VOL_OFFSET
        ann = f.create_group("annotations")
        ann.attrs["offset"] = ANN_OFFSET
        ann["ids"] = ids
        kinds = ["presynaptic_site", "postsynaptic_site", "postsynaptic_site", "presynaptic_site"]
        ann.create_dataset(type_name, data=kinds, dtype=h5py.string_dtype())
        ann["locations"] = locations
        if partners.size or partners.ndim == 2:
            ann["presynaptic_site/partners"] = partners


def test_cremi_neurons_from_neuron_ids_with_offsets(tmp_path: Path) -> None:
    path = tmp_path / "sample_A.hdf"
    write_cremi(path)
    batch = read_annotations(path)
    syn = batch.synapses
    assert ints(syn["id"]) == [11, 12]  # the post site ids
    assert ints(syn["pre_id"]) == [BIG63, BIG63]
    assert ints(syn["post_id"]) == [BIG53, 0]  # the second post site is on background
    pre = np.array(VOL_OFFSET) + np.array([1, 2, 3]) * np.array(RES)
    post = np.array(VOL_OFFSET) + np.array([1, 12, 4]) * np.array(RES)
    assert zyx(syn, "pre_")[0] == pre.tolist()
    assert zyx(syn, "post_")[0] == post.tolist()
    assert zyx(syn)[0] == ((pre + post) / 2).tolist()
    assert sorted(ints(batch.neurons["id"])) == [BIG53, BIG63]
    assert batch.neurons[["z", "y", "x"]].isna().all(axis=None)


@pytest.mark.parametrize("suffix", ["#annotations", "/annotations"])
def test_cremi_named_like_its_points_source(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "sample_A.h5"
    write_cremi(path)
    batch = read_annotations(f"{path}{suffix}")  # as list_contents names the synapses
    assert ints(batch.synapses["id"]) == [11, 12]
    with pytest.raises(SourceNotFoundError):
        read_annotations(f"{tmp_path / 'other.h5'}{suffix}")


def test_cremi_type_name_and_shared_post_sites_get_row_ids(tmp_path: Path) -> None:
    path = tmp_path / "cremi.h5"
    write_cremi(path, type_name="type", partners=np.array([[10, 11], [BIG63, 11]], np.uint64))
    syn = read_annotations(path).synapses
    assert ints(syn["id"]) == [1, 2]
    assert ints(syn["pre_id"]) == [BIG63, BIG63]
    assert ints(syn["post_id"]) == [BIG53, BIG53]


def test_cremi_without_neuron_ids_uses_the_segmentation(tmp_path: Path) -> None:
    path = tmp_path / "cremi.h5"
    write_cremi(path, labels=False)
    assert ints(read_annotations(path).synapses["pre_id"]) == [0, 0]
    seg = write_segmentation(tmp_path / "seg.h5", cremi_labels(), resolution=RES, offset=VOL_OFFSET)
    syn = read_annotations(path, segmentation=seg).synapses
    assert ints(syn["pre_id"]) == [BIG63, BIG63]
    assert ints(syn["post_id"]) == [BIG53, 0]


def test_cremi_missing_partners_names_the_dataset(tmp_path: Path) -> None:
    path = tmp_path / "cremi.h5"
    write_cremi(path, partners=np.zeros(0, dtype=np.uint64))
    with pytest.raises(ImportFormatError, match="missing") as exc:
        read_annotations(path)
    assert_names(exc, path, None, "/annotations/presynaptic_site/partners")


def test_cremi_unknown_site_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "cremi.h5"
    write_cremi(path, partners=np.array([[10, 11], [10, 99]], np.uint64))
    with pytest.raises(ImportFormatError, match="unknown post site id 99") as exc:
        read_annotations(path)
    assert_names(exc, path, 1, "/annotations/presynaptic_site/partners")


def test_cremi_short_locations_dataset(tmp_path: Path) -> None:
    path = tmp_path / "cremi.h5"
    write_cremi(path, locations=np.array([site((1, 2, 3))] * 3))
    with pytest.raises(ImportFormatError, match="3 locations for 4 ids") as exc:
        read_annotations(path)
    assert_names(exc, path, None, "/annotations/locations")


def test_truncated_hdf5_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cremi.h5"
    write_cremi(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImportFormatError, match="not a readable HDF5 file") as exc:
        read_annotations(path, format="cremi")
    assert str(path) in str(exc.value)
    with pytest.raises(ImportFormatError, match="cannot tell") as exc:
        read_annotations(path)
    assert str(path) in str(exc.value)


# -- CAVE exports ----------------------------------------------------------------------------
CAVE_COLUMNS = [
    "id", "created", "superceded_id", "valid", "pre_pt_position", "pre_pt_supervoxel_id",
    "pre_pt_root_id", "ctr_pt_position", "post_pt_position", "post_pt_supervoxel_id",
    "post_pt_root_id", "size",
]  # fmt: skip
CAVE_ROWS = [
    f'1,2020-11-04 06:48:42.862382+00,,t,"[10 20 30]",5,{ROOT_A},"[11 21 31]",'
    f'"[12 22 32]",6,{ROOT_B},100',
    f'2,2020-11-04 06:48:42+00,,f,"[10 20 30]",5,{ROOT_A},"[11 21 31]","[12 22 32]",6,{ROOT_B},50',
    f'3,2021-01-01 00:00:00+00,,t,"[1 2 3]",5,{ROOT_B},"[2 3 4]","[3 4 5]",6,{BIG63},7',
]  # fmt: skip


def write_cave(
    directory: Path, rows: list[str], *, header_file: bool = True, header_row: bool = False
) -> Path:
    version = directory / "v943"
    version.mkdir(parents=True, exist_ok=True)
    if header_file:
        (version / "synapses_pni_2_header.csv").write_text("\n".join(CAVE_COLUMNS) + "\n")
    lines = ([",".join(CAVE_COLUMNS)] if header_row else []) + rows
    path = version / "synapses_pni_2.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("header_file", "header_row"), [(True, False), (True, True), (False, True)]
)
def test_cave_export_header_variants_and_valid_filter(
    tmp_path: Path, header_file: bool, header_row: bool
) -> None:
    path = write_cave(tmp_path, CAVE_ROWS, header_file=header_file, header_row=header_row)
    assert sniff_format(path) == "cave"
    syn = read_annotations(path).synapses
    assert ints(syn["id"]) == [1, 3]
    assert ints(syn["pre_id"]) == [ROOT_A, ROOT_B]
    assert ints(syn["post_id"]) == [ROOT_B, BIG63]
    assert zyx(syn, "pre_")[0] == [1200.0, 80.0, 40.0]  # [x y z] voxels at (40, 4, 4) nm
    assert zyx(syn)[0] == [1240.0, 84.0, 44.0]
    assert zyx(syn, "post_")[0] == [1280.0, 88.0, 48.0]
    assert syn["created"].tolist()[0] == pytest.approx(1604472522.862382)
    assert "size" not in syn.columns
    assert syn["confidence"].isna().all()


def test_cave_header_row_with_other_spellings_is_skipped(tmp_path: Path) -> None:
    path = write_cave(tmp_path, [])
    own_header = ",".join(c.upper() if c != "size" else "cleft_size" for c in CAVE_COLUMNS)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join([own_header, CAVE_ROWS[0]]) + "\n")
    assert ints(read_annotations(path).synapses["id"]) == [1]


def test_cave_resolution_and_parenthesised_positions(tmp_path: Path) -> None:
    row = f'4,2021-01-01 00:00:00+00,,True,"(1, 2, 3)",5,{ROOT_A},"(2, 3, 4)","(3, 4, 5)",6,1,7'
    path = write_cave(tmp_path, [row])
    syn = read_annotations(path, resolution=(30, 8, 16)).synapses
    assert zyx(syn, "pre_") == [[90.0, 16.0, 16.0]]
    assert zyx(syn) == [[120.0, 24.0, 32.0]]


def test_cave_bad_position_names_the_file_row(tmp_path: Path) -> None:
    bad = CAVE_ROWS[2].replace('"[1 2 3]"', '"[1 2]"')
    path = write_cave(tmp_path, [*CAVE_ROWS[:2], bad], header_row=True)
    with pytest.raises(ImportFormatError, match=r"not an x, y, z position") as exc:
        read_annotations(path)
    assert_names(exc, path, 2, "pre_pt_position")


def test_cave_bad_valid_value(tmp_path: Path) -> None:
    path = write_cave(tmp_path, [CAVE_ROWS[0], CAVE_ROWS[1].replace(",f,", ",maybe,")])
    with pytest.raises(ImportFormatError, match="not a boolean") as exc:
        read_annotations(path)
    assert_names(exc, path, 1, "valid")


def test_cave_cell_type_table_becomes_neurons(tmp_path: Path) -> None:
    version = tmp_path / "v943"
    version.mkdir()
    header = ["id", "created", "superceded_id", "valid", "classification_system", "cell_type",
              "pt_position", "pt_supervoxel_id", "pt_root_id"]  # fmt: skip
    (version / "cells_header.csv").write_text("\n".join(header))
    with gzip.open(version / "cells.csv.gz", "wt") as fh:
        fh.write(f'17,2021-01-01 00:00:00+00,,t,aibs,23P,"[10 20 30]",3,{ROOT_A}\n')
    neurons = read_annotations(version / "cells.csv.gz").neurons
    assert ints(neurons["id"]) == [ROOT_A]
    assert neurons["type"].tolist() == ["23P"]
    assert zyx(neurons) == [[1200.0, 80.0, 40.0]]


# -- sniffing and unknown files ---------------------------------------------------------------
def test_every_format_is_sniffed(tmp_path: Path) -> None:
    cremi = tmp_path / "a.hdf"
    write_cremi(cremi)
    arrays_h5 = tmp_path / "b.h5"
    with h5py.File(arrays_h5, "w") as f:
        f["synapses"] = np.zeros((1, 5), np.uint64)
    npy = tmp_path / "c.npy"
    np.save(npy, np.zeros((1, 4), np.uint64))
    table = tmp_path / "d.csv"
    table.write_text("pre,post,z,y,x\n1,2,3,4,5\n")
    parquet = tmp_path / "e.data"
    pd.DataFrame({"pre": [1], "post": [2], "z": [0.0], "y": 0.0, "x": 0.0}).to_parquet(parquet)
    cave = write_cave(tmp_path, CAVE_ROWS)
    found = [sniff_format(p) for p in (cremi, arrays_h5, npy, table, parquet, cave)]
    assert found == ["cremi", "arrays", "arrays", "table", "table", "cave"]
    assert set(FORMATS) == {"cremi", "arrays", "table", "cave"}


@pytest.mark.parametrize("content", [b"\x00\x01garbage" * 10, b"hello\n", b""])
def test_unknown_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "mystery.bin"
    path.write_bytes(content)
    with pytest.raises(ImportFormatError, match="cannot tell the annotation format") as exc:
        read_annotations(path)
    assert str(path) in str(exc.value)


def test_unknown_format_name_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "syn.csv"
    path.write_text("pre,post,z,y,x\n1,2,3,4,5\n")
    with pytest.raises(ImportFormatError, match="unknown import format 'swc'") as exc:
        read_annotations(path, format="swc")
    assert str(path) in str(exc.value)
    with pytest.raises(SourceNotFoundError):
        read_annotations(tmp_path / "nothing.csv")


# -- into the store ----------------------------------------------------------------------------
def test_every_format_round_trips_through_a_sqlite_store(tmp_path: Path) -> None:
    cremi = tmp_path / "cremi.hdf"
    write_cremi(cremi)
    npy = tmp_path / "arrays.npy"
    np.save(npy, np.array([[BIG63, 77, 1, 2, 3]], dtype=np.uint64))
    table = tmp_path / "table.parquet"
    pq.write_table(
        pa.table({"id": pa.array([900], pa.uint64()), "pre": pa.array([BIG53], pa.uint64()),
                  "post": pa.array([BIG63], pa.uint64()), "z": [5.0], "y": [6.0], "x": [7.0]}),
        table,
    )  # fmt: skip
    cave = write_cave(tmp_path, CAVE_ROWS)
    with AnnotationStore.open(tmp_path / "store.db") as store:
        for path in (cremi, npy, table, cave):
            batch = read_annotations(path)
            summary = store.import_batch(batch)
            assert summary.synapses_added == len(batch.synapses)
            if path is not npy:  # files with synapse ids are recognised when imported again
                again = store.import_batch(read_annotations(path))
                assert again.synapses_added == 0
                assert again.synapses_unchanged == len(batch.synapses)
        every = store.synapses(include_self=True)
        assert len(every) == 2 + 1 + 1 + 2
        cremi_rows = every[every["id"].isin(np.array([11, 12], np.uint64))]
        assert ints(cremi_rows["post_id"]) == [BIG53, 0]
        outputs = store.synapses(BIG63, post=False)
        assert sorted(ints(outputs["post_id"])) == [0, 77, BIG53]
        inputs = store.synapses(BIG63, pre=False)
        assert sorted(ints(inputs["pre_id"])) == [BIG53, ROOT_B]
        row = inputs[inputs["id"] == np.uint64(900)]
        assert zyx(row) == [[5.0, 6.0, 7.0]]
        cave_row = every[every["id"] == np.uint64(1)]
        assert ints(cave_row["pre_id"]) == [ROOT_A]
        assert zyx(cave_row) == [[1240.0, 84.0, 44.0]]
        neuron_ids = set(ints(store.neurons()["id"]))
        assert {BIG53, BIG63, ROOT_A, ROOT_B, 77} <= neuron_ids
