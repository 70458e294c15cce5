"""Imported segment properties (neuroglancer precomputed) and CSV/Parquet tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorstore as ts

from napari_connecto.errors import ImportFormatError, MetadataError, SourceNotFoundError
from napari_connecto.objects.attributes import (
    AttributeStore,
    parse_segment_properties,
    read_segment_properties,
    read_table,
)
from napari_connecto.testing.http_server import HttpFolderServer

IDS = [5, 2**63 + 11, 2**64 - 1]
PROPERTIES = {
    "@type": "neuroglancer_segment_properties",
    "inline": {
        "ids": [str(i) for i in IDS],
        "properties": [
            {"id": "label", "type": "label", "values": ["KC-1", "PN-2", ""]},
            {"id": "desc", "type": "description", "values": ["a", "b", "c"]},
            {"id": "volume", "type": "number", "data_type": "float32", "values": [1.5, 2, 3]},
            {"id": "n_syn", "type": "number", "data_type": "uint32", "values": [7, 0, 4000000000]},
            {"id": "side", "type": "string", "values": ["L", "R", "L"]},
            {
                "id": "tags",
                "type": "tags",
                "tags": ["axon", "soma", "glia"],
                "tag_descriptions": ["Axon", "Soma", "Glia"],
                "values": [[0, 1], [], [2]],
            },
        ],
    },
}


@pytest.fixture
def segmentation_with_properties(tmp_path) -> Path:
    """A tensorstore-written precomputed segmentation whose info names ``props``."""
    root = tmp_path / "seg"
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(root)},
        "multiscale_metadata": {"type": "segmentation", "data_type": "uint64", "num_channels": 1},
        "scale_metadata": {"size": [8, 8, 2], "resolution": [4, 4, 40], "encoding": "raw"},
    }
    store = ts.open(spec, create=True, open=True).result()
    store[...] = np.full((8, 8, 2, 1), IDS[1], dtype=np.uint64)
    info = json.loads((root / "info").read_text())
    info["segment_properties"] = "props"
    (root / "info").write_text(json.dumps(info))
    (root / "props").mkdir()
    (root / "props" / "info").write_text(json.dumps(PROPERTIES))
    return root


def _check(store: AttributeStore) -> None:
    assert store.ids.tolist() == IDS
    assert store.columns == ("label", "desc", "volume", "n_syn", "side", "tags")
    assert store.get(2**63 + 11) == {
        "label": "PN-2", "desc": "b", "volume": 2.0, "n_syn": 0, "side": "R", "tags": "",
    }  # fmt: skip
    assert store.get(5)["tags"] == "axon soma"
    assert store.column("n_syn").dtype == np.uint32 and store.get(2**64 - 1)["n_syn"] == 4000000000
    assert store.column("volume").dtype == np.float32
    assert [p["type"] for p in store.meta["properties"]][:3] == ["label", "description", "number"]


def test_segment_properties_via_the_segmentation_info(segmentation_with_properties):
    _check(read_segment_properties(segmentation_with_properties))
    _check(read_segment_properties(segmentation_with_properties / "props"))
    _check(read_segment_properties(f"{segmentation_with_properties}/props/info"))


def test_segment_properties_over_http(segmentation_with_properties):
    with HttpFolderServer(segmentation_with_properties.parent) as server:
        _check(read_segment_properties(f"{server.url}/seg"))
        with pytest.raises(SourceNotFoundError):
            read_segment_properties(f"{server.url}/nothing")


def _broken(mutate) -> dict:
    doc = json.loads(json.dumps(PROPERTIES))
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update({"@type": "neuroglancer_multiscale_volume"}), "@type"),
        (lambda d: d.pop("inline"), "inline"),
        (lambda d: d["inline"].update(ids="1,2,3"), "inline.ids"),
        (lambda d: d["inline"]["ids"].__setitem__(1, "-4"), "inline.ids[1]"),
        (lambda d: d["inline"]["ids"].__setitem__(1, str(2**64)), "inline.ids[1]"),
        (lambda d: d["inline"]["ids"].__setitem__(1, 5), "inline.ids[1]"),
        (lambda d: d["inline"]["ids"].__setitem__(1, "5"), "inline.ids"),  # duplicate
        (lambda d: d["inline"]["properties"][0]["values"].pop(), "properties[0].values"),
        (lambda d: d["inline"]["properties"][2].update(data_type="float64"), "data_type"),
        (lambda d: d["inline"]["properties"][3]["values"].__setitem__(0, -1), "properties[3]"),
        (lambda d: d["inline"]["properties"][3]["values"].__setitem__(0, "7"), "properties[3]"),
        (lambda d: d["inline"]["properties"][5]["values"].__setitem__(0, [3]), "values[0]"),
        (lambda d: d["inline"]["properties"][4].update(type="colour"), "properties[4].type"),
        (lambda d: d["inline"]["properties"][4].update(id="label"), "duplicate"),
        (lambda d: d["inline"]["properties"][1].pop("id"), "properties[1]"),
    ],
)
def test_malformed_segment_properties(mutate, field):
    with pytest.raises(MetadataError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_segment_properties(_broken(mutate), "props/info")


def test_unreadable_properties_files(tmp_path, segmentation_with_properties):
    with pytest.raises(SourceNotFoundError):
        read_segment_properties(tmp_path / "none")
    (segmentation_with_properties / "props" / "info").write_text('{"@type": ')
    with pytest.raises(MetadataError, match="JSON"):
        read_segment_properties(segmentation_with_properties)
    info = json.loads((segmentation_with_properties / "info").read_text())
    info["segment_properties"] = "../elsewhere"
    (segmentation_with_properties / "info").write_text(json.dumps(info))
    with pytest.raises(MetadataError, match="relative"):
        read_segment_properties(segmentation_with_properties)


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "segment": np.array(IDS, dtype=np.uint64),
            "type": ["KC", "PN", None],
            "depth": [1.25, np.nan, 3.0],
            "n": [1, 2, 3],
        }
    )


def test_csv_and_parquet_tables_keep_uint64_ids_exactly(tmp_path):
    frame = _table()
    frame.to_csv(tmp_path / "t.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        store = read_table(tmp_path / name, id_column="segment")
        assert store.ids.tolist() == IDS, name
        assert store.columns == ("type", "depth", "n")
        assert store.get(2**64 - 1)["type"] == "" and store.get(2**63 + 11)["type"] == "PN"
        assert np.isnan(store.get(2**63 + 11)["depth"]) and store.get(5)["depth"] == 1.25
        assert store.get(5)["n"] == 1
    attrs = AttributeStore(IDS[:2], {"size_voxels": np.array([10, 20], dtype=np.uint64)})
    joined = attrs.merge(read_table(tmp_path / "t.csv", id_column="segment"), how="left")
    assert joined.get(2**63 + 11) == {
        "size_voxels": 20, "type": "PN", "depth": pytest.approx(np.nan, nan_ok=True), "n": 2,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("segment,type\n1,a\n-2,b\n", "row 1"),
        ("segment,type\n1,a\n18446744073709551616,b\n", "row 1"),
        ("segment,type\n1,a\n1.5,b\n", "row 1"),
        ("segment,type\n1,a\n,b\n", "row 1"),
        ("segment,type\n1,a\n1,b\n", "duplicate"),
        ("id,type\n1,a\n", "no id column"),
        ('segment,type\n1,"a\n', "unreadable"),
    ],
)
def test_malformed_tables(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ImportFormatError, match=match):
        read_table(tmp_path / "bad.csv", id_column="segment")


def test_missing_and_corrupt_parquet(tmp_path):
    with pytest.raises(SourceNotFoundError):
        read_table(tmp_path / "nope.parquet")
    pq.write_table(pa.Table.from_pandas(_table(), preserve_index=False), tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImportFormatError, match="unreadable"):
        read_table(tmp_path / "t.parquet", id_column="segment")
    signed = pd.DataFrame({"id": np.array([3, -1], dtype=np.int64), "v": [1, 2]})
    signed.to_parquet(tmp_path / "s.parquet")
    with pytest.raises(ImportFormatError, match="negative"):
        read_table(tmp_path / "s.parquet")
