"""The annotation table models and widgets, without a viewer.

A million-neuron store opens at once (ids only), scrolls to its end fetching a page or
two, sorts and filters in SQL; uint64 ids above 2**63 are shown digit for digit. The
small tables (synapses, partners, bookmarks) sort, filter and edit in memory.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QModelIndex, Qt
from qtpy.QtWidgets import QApplication

from napari_connecto._qt.bookmarks import BookmarkTable
from napari_connecto._qt.frame_model import FrameTableModel
from napari_connecto._qt.neuron_table import NeuronTable
from napari_connecto._qt.partner_table import PartnerTable, merge_partners
from napari_connecto._qt.synapse_table import SynapseTable
from napari_connecto._qt.table_columns import Column
from napari_connecto._qt.table_model import NEURON_COLUMNS, NeuronTableModel
from napari_connecto.annotations import AnnotationStore

N_BIG = 1_000_000
ID_BASE = 2**63 - 500_000  # half the ids below 2**63, half above
TYPES = np.array(["KC", "PN", "MBON", "LN"], dtype=object)
TOP = 2**64 - 1
COL = {c.key: i for i, c in enumerate(NEURON_COLUMNS)}


def _text(model, row: int, key: str) -> str:
    return model.data(model.index(row, COL.get(key, 0)), Qt.ItemDataRole.DisplayRole)


def _big_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    i = np.arange(N_BIG)
    return pd.DataFrame(
        {
            "id": np.uint64(ID_BASE) + i.astype(np.uint64),
            "name": np.char.add("n", rng.permutation(N_BIG).astype(str)).astype(object),
            "type": TYPES[i % 4],
            "z": rng.uniform(0, 10_000, N_BIG).round(),
            "y": rng.uniform(0, 10_000, N_BIG).round(),
            "x": rng.uniform(0, 10_000, N_BIG).round(),
        }
    )


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[str, pd.DataFrame]:
    """A store file with a million neurons (ids around 2**63) and its frame."""
    path = str(tmp_path_factory.mktemp("big") / "million.db")
    frame = _big_frame()
    with AnnotationStore.open(path) as store:
        store.add_neurons(frame)
    return path, frame


@pytest.fixture
def big_store(big):
    store = AnnotationStore.open(big[0], create=False)
    yield store
    store.close()


@pytest.fixture
def small_store(tmp_path):
    """Five neurons (one with the largest uint64 id), no synapses."""
    store = AnnotationStore.open(tmp_path / "small.db")
    ids = np.array([3, 1, 2**63, 2**63 + 7, TOP], dtype=np.uint64)
    store.add_neurons(
        pd.DataFrame({"id": ids, "name": ["c", "A", "b", "E", "d"], "type": ["KC"] * 5})
    )
    yield store
    store.close()


# -- the lazy neuron model -----------------------------------------------------------------
@pytest.mark.slow
def test_a_million_neurons_open_fast_and_scroll_to_the_end(qtbot, big_store, big):
    frame = big[1]
    table = NeuronTable()
    qtbot.addWidget(table)
    table.resize(600, 400)
    table.show()
    started = time.perf_counter()
    table.set_store(big_store)
    QApplication.processEvents()
    opened = time.perf_counter() - started
    model = table.model
    assert model.rowCount() == N_BIG
    assert opened < 3.0, f"opening took {opened:.2f} s"
    assert model.pages_fetched <= 2, "only the rows on screen are read"
    assert table.count_label.text() == "1,000,000 neurons"
    started = time.perf_counter()
    table.view.scrollToBottom()
    QApplication.processEvents()
    assert time.perf_counter() - started < 1.0
    last = N_BIG - 1
    assert _text(model, last, "id") == str(ID_BASE + last)
    assert _text(model, last, "name") == frame["name"].iloc[last]
    assert model.pages_fetched <= 4
    assert len(model._pages) <= model.max_pages


@pytest.mark.slow
def test_sorting_a_million_neurons_queries_a_new_order(qtbot, big_store, big):
    frame = big[1]
    model = NeuronTableModel(big_store)
    model.sort(COL["name"], Qt.SortOrder.DescendingOrder)
    names = frame["name"].to_numpy()
    order = np.argsort(names)[::-1]
    assert _text(model, 0, "name") == names[order[0]]
    assert _text(model, 0, "id") == str(int(frame["id"].iloc[order[0]]))
    assert _text(model, N_BIG - 1, "name") == names[order[-1]]
    model.sort(COL["id"], Qt.SortOrder.DescendingOrder)
    assert _text(model, 0, "id") == str(ID_BASE + N_BIG - 1)
    assert model.order == ("id", True)


@pytest.mark.slow
def test_filtering_a_million_neurons_by_text_and_numbers(qtbot, big_store, big):
    frame = big[1]
    table = NeuronTable(big_store)
    qtbot.addWidget(table)
    table.filter_edit.setText("type=KC")
    assert table.apply_filter()
    assert table.model.rowCount() == int((frame["type"] == "KC").sum())
    assert table.count_label.text() == f"{table.model.rowCount():,} of 1,000,000 neurons"
    table.filter_edit.setText("z < 1000 y >= 5000 MBON")
    assert table.apply_filter()
    wanted = (frame["z"] < 1000) & (frame["y"] >= 5000) & (frame["type"] == "MBON")
    assert table.model.rowCount() == int(wanted.sum())
    expected = frame.loc[wanted, "id"].to_numpy()
    assert np.array_equal(np.sort(table.model.ids), np.sort(expected))
    shown = [int(v) for v in table.model.ids[:5]]
    assert [int(_text(table.model, r, "id")) for r in range(5)] == shown


@pytest.mark.slow
def test_a_bad_filter_keeps_the_rows_and_says_why(qtbot, big_store):
    table = NeuronTable(big_store)
    qtbot.addWidget(table)
    table.filter_edit.setText("type=PN")
    assert table.apply_filter()
    before = table.model.rowCount()
    table.filter_edit.setText("bogus > 3")
    assert not table.apply_filter()
    assert table.model.rowCount() == before
    assert table.model.filter_text == "type=PN"
    assert "unknown column 'bogus'" in table.filter_edit.toolTip()
    assert "ff3b30" in table.filter_edit.styleSheet()
    table.filter_edit.setText("n_post > many")
    assert not table.apply_filter()
    assert "needs a number" in table.filter_edit.toolTip()
    table.filter_edit.setText("")  # the clear button applies at once
    assert table.model.rowCount() == N_BIG
    assert table.filter_edit.styleSheet() == ""


def test_uint64_ids_at_and_above_2_63_show_exactly(qtbot, small_store):
    model = NeuronTableModel(small_store)
    assert [_text(model, r, "id") for r in range(5)] == [
        "1", "3", str(2**63), str(2**63 + 7), str(TOP)
    ]  # fmt: skip
    assert model.id_at(4) == TOP and isinstance(model.id_at(4), int)
    assert model.row_of(TOP) == 4
    assert model.row_of(2**64) is None
    model.sort(COL["name"], Qt.SortOrder.AscendingOrder)  # SQL collation: capitals first
    assert [model.id_at(r) for r in range(5)] == [1, 2**63 + 7, 2**63, 3, TOP]


def test_neuron_filter_with_an_id_above_2_63(qtbot, small_store):
    table = NeuronTable(small_store)
    qtbot.addWidget(table)
    table.filter_edit.setText(f"id = {2**63 + 7}")
    assert table.apply_filter()
    assert [int(i) for i in table.model.ids] == [2**63 + 7]
    table.filter_edit.setText(str(TOP))  # a bare number matches the id
    assert table.apply_filter()
    assert [int(i) for i in table.model.ids] == [TOP]
    table.filter_edit.setText(f"id != {TOP} id > 2")
    assert table.apply_filter()
    assert [int(i) for i in table.model.ids] == [3]  # the store compares ids below 2**63


def test_selection_survives_a_sort_and_is_announced(qtbot, small_store):
    table = NeuronTable(small_store)
    qtbot.addWidget(table)
    seen = []
    table.selectionChanged.connect(seen.append)
    assert table.select_ids([TOP])
    assert seen[-1] == [TOP]
    table.model.sort(COL["id"], Qt.SortOrder.DescendingOrder)
    assert table.selected_ids() == [TOP]
    assert table.view.selectionModel().selectedRows()[0].row() == 0
    table.filter_edit.setText("type=PN")  # hides every neuron: selection empties
    table.apply_filter()
    assert seen[-1] == []
    assert table.select_ids([1])  # clears the filter to show it
    assert table.model.filter_text == "" and seen[-1] == [1]


def test_an_empty_store_and_no_store(qtbot, tmp_path):
    table = NeuronTable()
    qtbot.addWidget(table)
    assert table.model.rowCount() == 0
    assert table.count_label.text() == "0 neurons"
    with AnnotationStore.open(tmp_path / "empty.db") as store:
        table.set_store(store)
        assert table.model.rowCount() == 0
        table.filter_edit.setText("n_pre > 1")
        assert table.apply_filter()
        assert not table.select_ids([5])
        assert table.model.data(table.model.index(0, 0)) is None


def test_rows_deleted_after_the_ids_were_read_show_their_id(qtbot, small_store, monkeypatch):
    model = NeuronTableModel(small_store)
    real = small_store.neurons
    monkeypatch.setattr(small_store, "neurons", lambda ids: real(ids).iloc[1:])
    assert _text(model, 0, "id") == "1"
    assert _text(model, 0, "name") == ""
    assert _text(model, 1, "name") == "c"


# -- frame tables --------------------------------------------------------------------------
def test_frame_model_sorts_uint64_text_and_missing_values():
    columns = (Column("id", "id", "id"), Column("name", "name"), Column("c", "c", "float", 2))
    model = FrameTableModel(columns)
    frame = pd.DataFrame(
        {
            "id": np.array([2**63 + 1, 5, TOP, 2**63], dtype=np.uint64),
            "name": ["b", "C", "a", "D"],
            "c": [0.5, np.nan, 0.25, 1.0],
        }
    )
    model.set_frame(frame)
    model.sort(0, Qt.SortOrder.AscendingOrder)
    assert [model.data(model.index(r, 0)) for r in range(4)] == [
        "5", str(2**63), str(2**63 + 1), str(TOP)
    ]  # fmt: skip
    model.sort(1, Qt.SortOrder.AscendingOrder)  # case-insensitive
    assert [model.data(model.index(r, 1)) for r in range(4)] == ["a", "b", "C", "D"]
    model.sort(2, Qt.SortOrder.DescendingOrder)
    assert [model.data(model.index(r, 2)) for r in range(4)] == ["1.00", "0.50", "0.25", ""]
    assert model.find("id", TOP) == 2
    model.set_mask(np.array([True, False, True, False]))
    assert model.rowCount() == 2 and model.find("id", 5) is None
    assert model.headerData(2, Qt.Orientation.Horizontal) == "c"
    assert model.data(QModelIndex()) is None


def _synapses() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.array([11, 12, 13, 2**63 + 14], dtype=np.uint64),
            "neuron": np.array([7, 7, 7, 7], dtype=np.uint64),
            "direction": ["out", "in", "out", "in"],
            "partner": np.array([8, 9, 8, TOP], dtype=np.uint64),
            "partner_name": ["eight", "nine", "eight", "top"],
            "partner_type": ["KC", "PN", "KC", "LN"],
            "confidence": [0.9, 0.2, np.nan, 0.7],
            "status": ["unreviewed", "verified", "unreviewed", "rejected"],
            "reviewer": ["", "ann", "", "bob"],
            "z": [0.0, 40.0, 80.0, 120.0],
            "y": [1.0, 2.0, 3.0, 4.0],
            "x": [5.0, 6.0, 7.0, 8.0],
        }
    )


def test_synapse_table_filters_by_text_status_and_direction(qtbot):
    table = SynapseTable()
    qtbot.addWidget(table)
    table.set_synapses(_synapses())
    assert table.visible_ids() == [11, 12, 13, 2**63 + 14]
    assert table.view.isColumnHidden(1), "one neuron: no neuron column"
    table.filter_edit.setText("confidence > 0.5")
    assert table.apply_filter()
    assert table.visible_ids() == [11, 2**63 + 14]
    table.filter_edit.setText(f"partner={TOP}")
    assert table.apply_filter()
    assert table.visible_ids() == [2**63 + 14]
    table.filter_edit.setText("KC")  # partner type
    assert table.apply_filter()
    assert table.visible_ids() == [11, 13]
    table.filter_edit.setText("confidence >")
    assert not table.apply_filter()
    assert table.visible_ids() == [11, 13], "a bad filter keeps the rows"
    table.filter_edit.setText("")
    table.status_combo.setCurrentText("unreviewed")
    assert table.visible_ids() == [11, 13]
    table.status_combo.setCurrentText("all")
    table.direction_combo.setCurrentIndex(1)  # inputs
    assert table.visible_ids() == [12, 2**63 + 14]


def test_synapse_table_steps_and_updates_status(qtbot):
    table = SynapseTable()
    qtbot.addWidget(table)
    table.set_synapses(_synapses())
    seen = []
    table.synapseActivated.connect(seen.append)
    assert table.step(1) == 11
    assert table.step(1) == 12
    assert table.step(-1) == 11
    assert table.step(-1) is None and table.current_synapse() == 11
    assert seen == [11, 12, 11]
    assert table.select_synapse(2**63 + 14)
    assert seen[-1] == 2**63 + 14
    assert table.step(1) is None
    assert np.allclose(table.upcoming_locations(3), np.empty((0, 3)))
    table.select_synapse(11, emit=False)
    assert seen[-1] == 2**63 + 14
    assert np.allclose(table.upcoming_locations(2), [[40, 2, 6], [80, 3, 7]])
    table.status_combo.setCurrentText("unreviewed")
    table.set_status([11], "verified", "me")
    assert table.visible_ids() == [13]
    assert table.row(11)["reviewer"] == "me"
    table.set_synapses(_synapses().iloc[:0])
    assert table.current_synapse() is None


def test_partner_table_merges_neurons(qtbot):
    one = pd.DataFrame(
        {
            "partner": np.array([8, TOP], dtype=np.uint64),
            "outgoing": [2, 0], "incoming": [1, 1], "total": [3, 1],
            "name": ["eight", "top"], "type": ["KC", ""],
        }
    )  # fmt: skip
    two = one.assign(outgoing=[0, 5], total=[1, 6])
    merged = merge_partners([one, two])
    assert [int(p) for p in merged["partner"]] == [TOP, 8]
    assert merged["total"].tolist() == [7, 4]
    table = PartnerTable()
    qtbot.addWidget(table)
    table.set_partners(merged, neurons=2)
    assert table.summary_label.text() == "2 partners, 11 synapses"
    assert table.model.data(table.model.index(0, 0)) == str(TOP)
    seen = []
    table.partnerActivated.connect(seen.append)
    table.view.activated.emit(table.model.index(0, 1))
    assert seen == [TOP]
    table.set_partners(merge_partners([]))
    assert table.summary_label.text() == "No neuron selected"


def test_bookmarks_add_edit_delete(qtbot, tmp_path):
    notes = iter(["first place", None])
    table = BookmarkTable(note_prompt=lambda parent, initial: next(notes))
    qtbot.addWidget(table)
    assert not table.add_button.isEnabled()
    assert table.add_at((1, 2, 3)) is None, "no store"
    store = AnnotationStore.open(tmp_path / "b.db")
    table.set_store(store)
    first = table.add_at((40.0, 100.5, 200.25))
    assert first is not None
    assert table.add_at((0, 0, 0)) is None, "cancelled prompt"
    second = table.add_at((80.0, 1.0, 2.0), note="given")
    assert table.model.rowCount() == 2
    note = table.model.index(0, 1)
    assert table.model.flags(note) & Qt.ItemFlag.ItemIsEditable
    assert table.model.setData(note, "renamed", Qt.ItemDataRole.EditRole)
    assert store.bookmarks()["note"].tolist() == ["renamed", "given"]
    jumps = []
    table.jumpRequested.connect(jumps.append)
    table.view.selectRow(1)
    assert table.jump_to_selected()
    assert jumps == [(80.0, 1.0, 2.0)]
    assert table.delete_selected() == 1
    assert store.bookmarks()["id"].tolist() == [first]
    assert second not in table.reload()["id"].tolist()
    store.close()
