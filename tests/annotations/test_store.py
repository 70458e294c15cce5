"""The annotation store on SQLite and PostgreSQL: imports, queries, edits, bookmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_connecto.annotations import AnnotationStore, FilterError, ImportBatch
from napari_connecto.errors import ConflictError, ImportFormatError
from napari_connecto.geometry import BBox, Vec3

BIG = 2**63 + 12345  # stored as a negative int64
MID = 2**53 + 1  # loses its last digit through float64
NEURONS = [10, 11, 12, BIG, MID]


def synapse_frame(rows: list[tuple]) -> pd.DataFrame:
    """(id, pre, post, z, y, x) rows with pre/post sites 20 nm either side in x."""
    frame = pd.DataFrame(rows, columns=["id", "pre_id", "post_id", "z", "y", "x"])
    frame["id"] = frame["id"].astype(np.uint64)
    frame["pre_id"] = frame["pre_id"].astype(np.uint64)
    frame["post_id"] = frame["post_id"].astype(np.uint64)
    for axis in "zy":
        frame[f"pre_{axis}"] = frame[axis].astype(float)
        frame[f"post_{axis}"] = frame[axis].astype(float)
    frame["pre_x"] = frame["x"] - 20.0
    frame["post_x"] = frame["x"] + 20.0
    return frame


SYNAPSES = [
    (1, 10, 11, 0, 100, 100),
    (2, 10, 12, 40, 200, 300),
    (3, 11, 10, 80, 5000, 5000),
    (4, 10, 10, 120, 100, 100),  # a self-synapse
    (5, BIG, 10, 160, -3000, 2500),
    (6, 10, MID, 200, 9000, 9000),
    (7, 12, 11, 240, 300, 300),
    (8, 10, 11, 280, 150, 150),
]


@pytest.fixture
def filled(store: AnnotationStore) -> AnnotationStore:
    neurons = pd.DataFrame(
        {
            "id": np.array([10, 11, 12], dtype=np.uint64),
            "name": ["KC-alpha", "PN-1", "MBON-3"],
            "type": ["KC", "PN", "MBON"],
            "z": [0.0, 40.0, 80.0],
            "y": [100.0, 200.0, 300.0],
            "x": [110.0, 210.0, 310.0],
        }
    )
    store.import_batch(ImportBatch("test", neurons=neurons, synapses=synapse_frame(SYNAPSES)))
    return store


def test_ids_round_trip_exactly(filled: AnnotationStore) -> None:
    neurons = filled.neurons()
    assert sorted(int(i) for i in neurons["id"]) == sorted(NEURONS)
    assert neurons["id"].dtype == np.uint64
    synapses = filled.synapses(include_self=True)
    assert [int(i) for i in synapses["pre_id"]] == [row[1] for row in SYNAPSES]
    assert [int(i) for i in synapses["post_id"]] == [row[2] for row in SYNAPSES]
    assert int(filled.synapse(5)["pre_id"]) == BIG
    assert filled.synapse_neurons(6) == (10, MID)


def test_synapses_of_a_neuron_pre_post_and_self(filled: AnnotationStore) -> None:
    ids = lambda frame: [int(i) for i in frame["id"]]  # noqa: E731
    assert ids(filled.synapses(10)) == [1, 2, 3, 5, 6, 8]  # self-synapse 4 dropped
    assert ids(filled.synapses(10, include_self=True)) == [1, 2, 3, 4, 5, 6, 8]
    assert ids(filled.synapses(10, post=False)) == [1, 2, 6, 8]  # 10 is presynaptic
    assert ids(filled.synapses(10, pre=False)) == [3, 5]
    assert ids(filled.synapses([11, 12], pre=False)) == [1, 2, 7, 8]
    assert ids(filled.synapses(BIG)) == [5]
    assert ids(filled.synapses(10, start=1, stop=3)) == [2, 3]
    assert filled.count_synapses(10) == 6
    assert filled.synapses(999).empty


def test_synapse_positions_split_in_nm(filled: AnnotationStore) -> None:
    row = filled.synapse(2)
    assert (row["z"], row["y"], row["x"]) == (40.0, 200.0, 300.0)
    assert (row["pre_x"], row["post_x"]) == (280.0, 320.0)
    assert filled.synapse_location(3) == Vec3(80.0, 5000.0, 5000.0)
    with pytest.raises(KeyError):
        filled.synapse(404)


def test_synapses_of_marks_direction_and_partner(filled: AnnotationStore) -> None:
    frame = filled.synapses_of(10)
    by_id = {int(r.id): (r.direction, int(r.partner)) for r in frame.itertuples()}
    assert by_id[1] == ("out", 11)
    assert by_id[3] == ("in", 11)
    assert by_id[5] == ("in", BIG)
    assert by_id[6] == ("out", MID)


def test_partners_count_each_way(filled: AnnotationStore) -> None:
    frame = filled.partners(10)
    rows = {int(r.partner): (r.outgoing, r.incoming, r.total, r.name) for r in frame.itertuples()}
    assert rows == {
        11: (2, 1, 3, "PN-1"),
        12: (1, 0, 1, "MBON-3"),
        BIG: (0, 1, 1, ""),
        MID: (1, 0, 1, ""),
    }
    assert int(frame["partner"].iloc[0]) == 11  # most connected first
    assert 10 not in rows
    assert int(filled.partners(10, include_self=True).set_index("partner").loc[10, "total"]) == 2


def test_neuron_counts_and_bare_partner_rows(filled: AnnotationStore) -> None:
    neurons = filled.neurons([10, BIG, 404])  # order kept, missing ids left out
    assert [int(i) for i in neurons["id"]] == [10, BIG]
    assert (neurons["n_pre"].tolist(), neurons["n_post"].tolist()) == ([5, 1], [3, 0])
    assert filled.neuron_keypoint(10) == Vec3(0.0, 100.0, 110.0)
    assert filled.neuron_keypoint(BIG) is None  # a partner seen only in synapses
    assert filled.has_neurons([10, 404, MID]).tolist() == [True, False, True]
    assert filled.has_synapses([8, 9]).tolist() == [True, False]


def test_synapses_in_box_match_brute_force(store: AnnotationStore) -> None:
    rng = np.random.default_rng(3)
    n = 3000
    centres = rng.uniform([-2000, -20000, -20000], [2000, 20000, 20000], size=(n, 3))
    frame = pd.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.uint64),
            "pre_id": rng.integers(1, 50, n).astype(np.uint64),
            "post_id": rng.integers(50, 100, n).astype(np.uint64),
            "z": centres[:, 0],
            "y": centres[:, 1],
            "x": centres[:, 2],
        }
    )
    store.add_synapses(frame)
    boxes = [
        BBox.of((-100, -1000, -1000), (100, 1000, 1000)),  # across cell corners at 0
        BBox.of((0, 2048, 2048), (320, 4096, 4096)),  # exactly one cell
        BBox.of((-2000, -20000, -20000), (2000, 20000, 20000)),  # everything: bounds only
        BBox.of((5000, 0, 0), (6000, 10, 10)),  # empty
        BBox.of((-500, -7000, 1234.5), (900, -2222, 9999)),
    ]
    for box in boxes:
        inside = np.all((centres >= box.start.as_tuple()) & (centres < box.stop.as_tuple()), axis=1)
        expected = sorted((np.flatnonzero(inside) + 1).tolist())
        got = [int(i) for i in store.synapses_in_box(box)["id"]]
        assert got == expected, box
    assert len(store.synapses_in_box(boxes[2], limit=10)) == 10


def test_reimport_is_harmless_and_keeps_review_state(filled: AnnotationStore) -> None:
    filled.set_synapse_status([1, 2], "verified", reviewer="ana")
    summary = filled.add_synapses(synapse_frame(SYNAPSES))
    assert (summary.synapses_added, summary.synapses_unchanged) == (0, len(SYNAPSES))
    assert filled.synapse(1)["status"] == "verified"
    assert filled.synapse(1)["reviewer"] == "ana"
    assert filled.neurons([10])["n_pre"].item() == 5  # counts not doubled


def test_files_without_synapse_ids_can_be_imported_again(store: AnnotationStore) -> None:
    rows = synapse_frame([(0, 10, 11, 0, 1, 2), (0, 10, 11, 40, 1, 2), (0, BIG, 10, 4, 5, 6)])
    assert store.add_synapses(rows).synapses_added == 3
    again = store.add_synapses(pd.concat([rows, synapse_frame([(0, 12, 10, 9, 9, 9)])]))
    assert (again.synapses_added, again.synapses_unchanged) == (1, 3)
    assert store.count_synapses(include_self=True) == 4
    assert store.neurons([10])["n_post"].item() == 2


def test_conflicting_import_is_refused_whole(filled: AnnotationStore) -> None:
    changed = synapse_frame([(1, 10, 12, 0, 100, 100), (100, 10, 11, 7, 7, 7)])
    with pytest.raises(ConflictError) as info:
        filled.add_synapses(changed)
    assert info.value.ids == (1,)
    assert not filled.has_synapses([100]).any()  # the valid new row was not imported either
    assert filled.synapse_neurons(1) == (10, 11)


def test_duplicates_within_one_file(store: AnnotationStore) -> None:
    rows = synapse_frame([(1, 10, 11, 0, 0, 0), (1, 10, 11, 0, 0, 0), (2, 10, 11, 5, 5, 5)])
    assert store.add_synapses(rows).synapses_added == 2  # the exact repeat is dropped
    clash = synapse_frame([(3, 10, 11, 0, 0, 0), (3, 10, 12, 0, 0, 0)])
    with pytest.raises(ConflictError, match="within"):
        store.add_synapses(clash)
    assert store.count_synapses(include_self=True) == 2


def test_neuron_fields_fill_or_conflict(filled: AnnotationStore) -> None:
    update = pd.DataFrame({"id": [BIG, 10], "name": ["DN-1", ""], "notes": ["", "checked"]})
    summary = filled.add_neurons(update)
    assert (summary.neurons_added, summary.neurons_filled) == (0, 2)
    assert filled.neuron(BIG)["name"] == "DN-1"
    assert (filled.neuron(10)["name"], filled.neuron(10)["notes"]) == ("KC-alpha", "checked")
    with pytest.raises(ConflictError) as info:
        filled.add_neurons(pd.DataFrame({"id": [10, 11], "name": ["KC-beta", "PN-1"]}))
    assert info.value.ids == (10,)
    assert filled.neuron(10)["name"] == "KC-alpha"


def test_assigned_synapse_ids_follow_stored_ones(filled: AnnotationStore) -> None:
    fresh = synapse_frame([(0, 11, 12, 1, 1, 1), (0, 12, 10, 2, 2, 2)])
    assert filled.add_synapses(fresh).synapses_added == 2
    assert [int(i) for i in filled.synapses(12, post=False)["id"]] == [7, 10]
    assert filled.synapse_neurons(9) == (11, 12)


def test_malformed_rows_name_row_and_column(store: AnnotationStore) -> None:
    bad = pd.DataFrame(
        {"pre_id": ["1", "2", "x"], "post_id": [3, 4, 5], "z": [0, 0, 0], "y": [0, 0, 0],
         "x": [0, "?", 0]}
    )  # fmt: skip
    with pytest.raises(ImportFormatError) as info:
        store.add_synapses(bad, source="bad.csv")
    assert (info.value.row, info.value.column) in {(2, "pre_id"), (1, "x")}
    assert "bad.csv" in str(info.value)
    with pytest.raises(ImportFormatError, match=r"row 1.*status"):
        bad_status = {"pre_id": [1, 2], "post_id": [3, 4], "z": [0, 0], "y": [0, 0], "x": [0, 0]}
        store.add_synapses(pd.DataFrame({**bad_status, "status": ["verified", "maybe"]}))
    assert store.count_synapses(include_self=True) == 0


def test_review_status_and_progress(filled: AnnotationStore) -> None:
    assert filled.review_progress(10).total == 7  # every synapse of 10, self included
    assert filled.set_synapse_status([1, 3], "verified", reviewer="ana") == 2
    assert filled.set_synapse_status(2, "rejected") == 1
    progress = filled.review_progress(10)
    assert (progress.verified, progress.rejected, progress.reviewed) == (2, 1, 3)
    assert progress.fraction == pytest.approx(3 / 7)
    assert filled.review_progress().total == len(SYNAPSES)
    assert [int(i) for i in filled.synapses(status="verified")["id"]] == [1, 3]
    with pytest.raises(ValueError, match="status"):
        filled.set_synapse_status(1, "approved")


def test_neuron_ids_sorted_and_filtered(filled: AnnotationStore) -> None:
    ids = lambda **kw: [int(i) for i in filled.neuron_ids(**kw)]  # noqa: E731
    assert ids(order_by="n_pre", descending=True)[0] == 10
    assert ids(order_by="name")[-3:] == [10, 12, 11]  # KC-alpha, MBON-3, PN-1
    assert ids(filter_text="type=KC") == [10]
    assert ids(filter_text="n_post >= 2") == [10, 11]
    assert ids(filter_text="pn") == [11]  # free text, case-insensitive
    assert ids(filter_text=str(BIG)) == [BIG]  # an id typed in the search box
    assert ids(filter_text="n_post>0 name~kc") == [10]
    assert filled.count_neurons("n_pre = 0") == 1
    with pytest.raises(FilterError, match="unknown column"):
        filled.neuron_ids("colour=red")
    with pytest.raises(FilterError, match="number"):
        filled.neuron_ids("n_pre > many")


def test_keypoints_and_neuron_edits(filled: AnnotationStore) -> None:
    assert filled.set_keypoints([BIG, MID], np.array([[1, 2, 3], [4, 5, 6]])) == 2
    assert filled.neuron_keypoint(BIG) == Vec3(1.0, 2.0, 3.0)
    filled.update_neuron(11, status="done", notes="traced to soma")
    assert (filled.neuron(11)["status"], filled.neuron(11)["notes"]) == ("done", "traced to soma")
    with pytest.raises(KeyError):
        filled.update_neuron(404, name="x")


def test_bookmarks_persist_across_reopen(store_url: str) -> None:
    with AnnotationStore.open(store_url) as store:
        first = store.add_bookmark((40.0, 1000.5, 2000.25), "merge error here", ["merge", "todo"])
        second = store.add_bookmark((80.0, 1.0, 2.0))
        store.update_bookmark(second, note="fixed?")
        assert store.delete_bookmark(second)
        assert not store.delete_bookmark(second)
    with AnnotationStore.open(store_url) as store:
        marks = store.bookmarks()
        assert marks["id"].tolist() == [first]
        row = marks.iloc[0]
        assert (row["z"], row["y"], row["x"]) == (40.0, 1000.5, 2000.25)
        assert (row["note"], row["tags"]) == ("merge error here", "merge,todo")
        with pytest.raises(KeyError):
            store.update_bookmark(second, note="gone")


def test_settings_round_trip(store: AnnotationStore) -> None:
    assert store.get_setting("dataset") is None
    store.set_setting("dataset", "a.zarr")
    store.set_setting("dataset", "b.zarr")
    assert store.get_setting("dataset") == "b.zarr"
