"""Segment attribute columns in the neuron table, without a viewer.

The neuron rows come from an annotation store (SQL); the attribute cells from an
:class:`AttributeStore`, looked up by id for the fetched pages only. Attribute
columns do not sort (their headers ignore clicks); imported properties show too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt

from napari_connecto._qt.neuron_table import SEGMENT_COLUMNS, NeuronTable
from napari_connecto._qt.table_model import NEURON_COLUMNS
from napari_connecto.annotations import AnnotationStore
from napari_connecto.objects.attributes import ATTRIBUTE_COLUMNS, AttributeStore

N = 2000
BASE = 2**63 - 1000  # ids on both sides of 2**63
RES = (40.0, 4.0, 4.0)
ORIGIN = (400.0, 40.0, 20.0)


@pytest.fixture
def store(tmp_path):
    ids = np.uint64(BASE) + np.arange(N, dtype=np.uint64)
    frame = pd.DataFrame({"id": ids, "name": [f"n{i}" for i in range(N)], "type": "KC"})
    with AnnotationStore(str(tmp_path / "a.db")) as db:
        db.add_neurons(frame)
        yield db


def _attributes(with_props: bool = True) -> AttributeStore:
    """Attributes for every other neuron (odd offsets are not segments), plus a property."""
    ids = np.uint64(BASE) + np.arange(0, N, 2, dtype=np.uint64)
    k = np.arange(ids.size)
    columns = {name: k + i for i, name in enumerate(ATTRIBUTE_COLUMNS)}
    columns["size_voxels"] = (k * 10 + 1).astype(np.uint64)
    columns["size_nm3"] = columns["size_voxels"] * np.prod(RES)
    store = AttributeStore(ids, columns, {"origin_nm": ORIGIN, "resolution_nm": RES})
    if with_props:
        store = store.with_columns(ids[:3], {"cell_type": ["PN", "KC", "LN"]})
    return store


def _cell(table: NeuronTable, row: int, key: str) -> str:
    col = [c.key for c in table.model.columns].index(key)
    return table.model.data(table.model.index(row, col), Qt.ItemDataRole.DisplayRole)


def test_attribute_columns_show_looked_up_values(qtbot, store):
    table = NeuronTable(store)
    qtbot.addWidget(table)
    attrs = _attributes()
    table.set_attributes(attrs)
    keys = [c.key for c in table.model.columns]
    assert keys[: len(NEURON_COLUMNS)] == [c.key for c in NEURON_COLUMNS]
    assert keys[len(NEURON_COLUMNS) :] == [c.key for c in SEGMENT_COLUMNS] + ["prop:cell_type"]
    for row in (0, 2, 1500, N - 2):
        row_id = table.model.id_at(row)
        values = attrs.get(row_id)
        assert _cell(table, row, "seg_voxels") == str(values["size_voxels"])
        assert _cell(table, row, "seg_um3") == f"{values['size_nm3'] / 1e9:.4f}"
        z0, y0, x0 = (values[f"bbox_start_{a}"] for a in "zyx")
        assert _cell(table, row, "seg_bbox").startswith(f"{z0}:{values['bbox_stop_z']} {y0}:")
        point = [o + r * values[f"rep_{a}"] for o, r, a in zip(ORIGIN, RES, "zyx", strict=True)]
        assert _cell(table, row, "seg_point") == ", ".join(f"{v:g}" for v in point)
    assert _cell(table, 1, "seg_voxels") == "" and _cell(table, 1, "seg_point") == ""
    assert [_cell(table, r, "prop:cell_type") for r in range(5)] == ["PN", "", "KC", "", "LN"]
    assert table.model.row_values(N - 1)["id"] == BASE + N - 1  # ids beyond 2**63 exact
    # only the pages of the rows asked for were fetched and looked up
    assert table.model.pages_fetched <= 3
    table.set_attributes(None)
    assert [c.key for c in table.model.columns] == [c.key for c in NEURON_COLUMNS]


def test_attribute_headers_do_not_sort(qtbot, store):
    table = NeuronTable(store)
    qtbot.addWidget(table)
    table.set_attributes(_attributes(with_props=False))
    header = table.view.horizontalHeader()
    name_col = [c.key for c in table.model.columns].index("name")
    header.setSortIndicator(name_col, Qt.SortOrder.DescendingOrder)
    assert table.model.order == ("name", True)
    first = table.model.id_at(0)
    voxels_col = [c.key for c in table.model.columns].index("seg_voxels")
    header.setSortIndicator(voxels_col, Qt.SortOrder.AscendingOrder)
    assert table.model.order == ("name", True) and table.model.id_at(0) == first
    assert header.sortIndicatorSection() == name_col
    assert "not sortable" in table.model.headerData(
        voxels_col, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole
    )
    # filters still work with the extra columns present
    table.filter_edit.setText("name = n4")
    assert table.apply_filter()
    assert table.model.rowCount() == 1 and _cell(table, 0, "seg_voxels") == "21"
