"""The id-keyed attribute store: binary-search lookups, joins, atomic persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_connecto.errors import MetadataError, SourceNotFoundError
from napari_connecto.objects.attributes import AttributeStore

BIG = [2**64 - 1, 2**63, 2**63 + 1, 2**53 + 1]


@pytest.fixture
def store() -> AttributeStore:
    rng = np.random.default_rng(5)
    ids = np.unique(rng.integers(1, 2**64 - 1, 500, dtype=np.uint64, endpoint=True))
    ids = np.concatenate([ids, np.array(BIG, dtype=np.uint64)])
    ids = np.unique(ids)[::-1].copy()  # given unsorted on purpose
    return AttributeStore(
        ids,
        {
            "size": (ids % np.uint64(1000)).astype(np.uint64),
            "score": ids.astype(np.float64) / 2**64,
            "name": [f"n{int(i)}" for i in ids],
        },
        meta={"source": "test"},
    )


def test_lookup_matches_a_dict_and_flags_missing_ids(store):
    truth = {int(i): (int(i) % 1000, f"n{int(i)}") for i in store.ids}
    assert np.all(np.diff(store.ids.astype(object)) > 0)  # sorted, exactly
    asked = [*BIG, 7, *list(truth)[:20], 2**64 - 2, BIG[0]]  # misses and a repeat
    found = store.lookup(asked)
    assert found.ids.dtype == np.uint64 and found.ids.tolist() == asked
    for k, segment in enumerate(asked):
        assert bool(found.found[k]) == (segment in truth)
        if segment in truth:
            assert int(found.columns["size"][k]) == truth[segment][0]
            assert found.columns["name"][k] == truth[segment][1]
        else:
            assert int(found.columns["size"][k]) == 0
            assert np.isnan(found.columns["score"][k])
            assert found.columns["name"][k] == ""
    frame = found.frame()
    assert list(frame.columns) == ["id", "found", "size", "score", "name"]
    assert frame["id"].dtype == np.uint64 and int(frame["id"].iloc[0]) == 2**64 - 1


def test_get_and_contains(store):
    assert store.get(2**64 - 1) == {
        "size": (2**64 - 1) % 1000,
        "score": pytest.approx(1.0),
        "name": f"n{2**64 - 1}",
    }
    assert store.get(7) is None
    assert 2**63 in store and 7 not in store
    assert -1 not in store and 2**64 not in store and "x" not in store
    empty = AttributeStore([], {})
    assert 1 not in empty and not empty.lookup([1]).found.any()


def test_bad_construction():
    with pytest.raises(ValueError, match="duplicate"):
        AttributeStore([3, 2**63, 3], {})
    with pytest.raises(ValueError, match="values for"):
        AttributeStore([1, 2], {"a": [1]})
    with pytest.raises(ValueError, match=r"\[0, 2\*\*64\)"):
        AttributeStore([-1], {})


def test_joins_by_id(store):
    extra_ids = [2**63, 2**64 - 1, 99]
    joined = store.with_columns(extra_ids, {"type": ["KC", "PN", "gone"], "n": [1.5, 2.5, 3.5]})
    assert len(joined) == len(store)  # left join: 99 dropped
    assert joined.get(2**63)["type"] == "KC" and joined.get(2**64 - 1)["n"] == 2.5
    other = next(int(i) for i in store.ids if int(i) not in extra_ids)
    assert joined.get(other)["type"] == "" and np.isnan(joined.get(other)["n"])
    outer = store.merge(AttributeStore([99], {"type": ["x"]}))
    assert 99 in outer and len(outer) == len(store) + 1
    assert outer.get(99)["size"] == 0 and outer.get(99)["type"] == "x"
    with pytest.raises(ValueError, match="both"):
        store.with_columns([1], {"size": [1]})


def test_save_load_round_trip_is_memory_mapped(store, tmp_path, no_pickle):
    path = store.save(tmp_path / "attrs")
    loaded = AttributeStore.load(path)
    assert isinstance(loaded.ids, np.memmap) or isinstance(loaded.ids.base, np.memmap)
    assert loaded.columns == store.columns and loaded.meta == {"source": "test"}
    assert np.array_equal(loaded.ids, store.ids)
    for name in store.columns:
        assert np.array_equal(loaded.column(name), store.column(name))
    assert loaded.get(2**63) == store.get(2**63)
    # overwrite in place: the new store replaces the old, no temporary directory is left
    AttributeStore([1], {"size": [5]}).save(path)
    assert AttributeStore.load(path).get(1) == {"size": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attrs"]


def test_broken_stores_give_typed_errors(store, tmp_path):
    with pytest.raises(SourceNotFoundError):
        AttributeStore.load(tmp_path / "missing")
    path = store.save(tmp_path / "attrs")
    manifest = json.loads((path / "manifest.json").read_text())
    column = path / manifest["columns"][0]["file"]
    column.write_bytes(column.read_bytes()[:-40])  # truncated array
    with pytest.raises(MetadataError, match=r"truncated|match"):
        AttributeStore.load(path)
    bad = dict(manifest, columns=[{"name": "x", "file": "../../etc/passwd", "dtype": "<u8"}])
    (path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(MetadataError, match="bad file name"):
        AttributeStore.load(path)
    (path / "manifest.json").write_text("{")
    with pytest.raises(MetadataError, match="JSON"):
        AttributeStore.load(path)
    (path / "manifest.json").write_text(json.dumps(dict(manifest, version=99)))
    with pytest.raises(MetadataError, match="layout"):
        AttributeStore.load(path)
    (path / "manifest.json").write_text(json.dumps(dict(manifest, count=3)))
    with pytest.raises(MetadataError, match="manifest"):
        AttributeStore.load(path)


def test_large_stores_search_exactly_like_numpy():
    """Stores past the two-level threshold agree with ``np.searchsorted`` everywhere."""
    rng = np.random.default_rng(9)
    ids = np.unique(rng.integers(2, 2**64 - 2, 70_000, dtype=np.uint64))
    store = AttributeStore(ids, {"k": np.arange(ids.size)})
    edges = [0, 1, int(ids[0]), int(ids[-1]), 2**64 - 1, *ids[::256][:50].tolist()]
    queries = np.concatenate(
        [
            np.array(edges, dtype=np.uint64),
            ids[::256][:50] + np.uint64(1),
            ids[::256][:50] - np.uint64(1),
            rng.choice(ids, 500),
            rng.integers(0, 2**64 - 1, 500, dtype=np.uint64, endpoint=True),
        ]
    )
    for batch in (queries, np.tile(queries, 5)):  # below and above the batch threshold
        rows, found = store.positions(batch)
        want = np.searchsorted(ids, batch)
        hit = want < ids.size
        hit[hit] = ids[want[hit]] == batch[hit]
        assert np.array_equal(found, hit)
        assert np.array_equal(rows[found], want[found])
        assert np.array_equal(store.lookup(batch).columns["k"][found], want[found])
