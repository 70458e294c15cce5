"""Kill and two-process tests: tiny real segmentations and an independent checker.

Nothing here uses the proofreading package to decide what the data should be:

* datasets are written with the reference writers (tensorstore for N5 and OME-Zarr,
  h5py for HDF5), their coarser scales made by :func:`mode_reference`;
* :func:`read_levels` reads every scale back with those libraries, not the repo's
  backends, so a torn chunk fails to decode here;
* the expected store rows and voxels are rebuilt from the journal tables with
  ``sqlite3``, ``zlib`` and numpy (:func:`replay_journal`), and separately by a
  reference model of the edit sequence the writer announced (:mod:`._model`).
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tensorstore as ts

from napari_connecto.volume.generation import GENERATION_FILE

SHAPE = (6, 40, 44)
"""Finest scale, z, y, x (odd sizes, so coarser levels have cut edge blocks)."""
CHUNK = (3, 16, 16)
"""Chunk shape of every scale."""
FACTOR = (1, 2, 2)
"""Downsampling factor between consecutive scales."""
LEVELS = 3
RESOLUTION = (40.0, 8.0, 8.0)
"""Voxel size of the finest scale, nm, z, y, x."""
AUTHOR = "writer"
"""Whose history the writers edit (the same across a writer's lives)."""
FORMATS = ("n5", "zarr", "hdf5")
H5_GROUP = "seg"
METADATA_NAMES = frozenset({"attributes.json", ".zarray", ".zattrs", ".zgroup", "zarr.json"})
WRITEBACK_LOCK = ".connecto-writeback.lock"
_WRAP = 1 << 64


# -- datasets ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Dataset:
    """A segmentation and an annotation store in one directory."""

    root: str
    """Directory holding everything (copied whole to keep a crashed state)."""
    fmt: str
    """``"n5"``, ``"zarr"`` or ``"hdf5"``."""
    source: str
    """What the proofreader opens."""
    store: str
    """SQLite file of the annotation store."""
    fragments: list[int] = field(default_factory=list)
    """Fragment ids in the original volume (uint64 as Python ints)."""
    seed: int = 0

    def save(self) -> Path:
        """Write ``dataset.json`` next to the data; return its path."""
        path = Path(self.root) / "dataset.json"
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Read a ``dataset.json``."""
        return cls(**json.loads(Path(path).read_text()))

    def original(self) -> np.ndarray:
        """The finest scale as first written."""
        return original_labels(self.seed)


def original_labels(seed: int) -> np.ndarray:
    """A Voronoi tessellation of :data:`SHAPE` into ~12 fragments, some ids above 2**63."""
    rng = np.random.default_rng(seed)
    n = 12
    small = rng.integers(1, 5000, n - 4).astype(np.uint64)
    large = np.uint64(1 << 63) + rng.integers(1, 5000, 3).astype(np.uint64)
    ids = np.concatenate([small, large, np.zeros(1, np.uint64)])
    centres = rng.uniform(0, 1, (n, 3)) * np.asarray(SHAPE)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    scale = np.asarray(RESOLUTION) / RESOLUTION[-1]
    dist = (((grid[..., None, :] - centres) * scale) ** 2).sum(-1)
    return ids[np.argmin(dist, axis=-1)]


def mode_reference(block: np.ndarray, factor: tuple[int, ...]) -> np.ndarray:
    """Most frequent id of every ``factor`` block (ties: smallest id; edge blocks partial)."""
    out_shape = tuple(-(-n // f) for n, f in zip(block.shape, factor))
    out = np.empty(out_shape, block.dtype)
    for index in np.ndindex(*out_shape):
        tile = block[tuple(slice(i * f, i * f + f) for i, f in zip(index, factor))]
        values, counts = np.unique(tile, return_counts=True)
        out[index] = values[counts == counts.max()].min()
    return out


def reference_pyramid(finest: np.ndarray) -> list[np.ndarray]:
    """Every scale, each coarser one the mode of the next finer (as the pyramid is kept)."""
    levels = [finest]
    for _ in range(1, LEVELS):
        levels.append(mode_reference(levels[-1], FACTOR))
    return levels


def make_dataset(root: Path, fmt: str, seed: int = 0) -> Dataset:
    """Write a segmentation pyramid in ``fmt`` and an empty annotation store under ``root``."""
    from napari_connecto.annotations import AnnotationStore

    root.mkdir(parents=True, exist_ok=True)
    levels = reference_pyramid(original_labels(seed))
    writer = {"n5": _write_n5, "zarr": _write_zarr, "hdf5": _write_hdf5}[fmt]
    source = writer(root, levels)
    store = root / "annotations.db"
    AnnotationStore.open(store).close()
    ids = np.unique(levels[0])
    ds = Dataset(str(root), fmt, source, str(store), [int(i) for i in ids if i], seed)
    ds.save()
    return ds


def _res(level: int) -> list[float]:
    return [r * f**level for r, f in zip(RESOLUTION, FACTOR)]


def _write_n5(root: Path, levels: list[np.ndarray]) -> str:
    path = root / "seg.n5"
    for k, data in enumerate(levels):
        meta = {
            "dimensions": list(data.shape[::-1]),
            "blockSize": list(CHUNK[::-1]),
            "dataType": "uint64",
            "compression": {"type": "gzip"},
            "downsamplingFactors": [f**k for f in FACTOR[::-1]],
        }
        spec = {"driver": "n5", "kvstore": {"driver": "file", "path": f"{path}/s{k}/"}}
        store = ts.open({**spec, "metadata": meta}, create=True, open=True).result()
        store[...] = data.T
    attrs = {"n5": "2.3.0", "resolution": list(RESOLUTION[::-1]), "units": ["nm"] * 3}
    (path / "attributes.json").write_text(json.dumps(attrs))
    return str(path)


def _write_zarr(root: Path, levels: list[np.ndarray]) -> str:
    path = root / "seg.zarr"
    for k, data in enumerate(levels):
        meta = {
            "shape": list(data.shape),
            "chunks": list(CHUNK),
            "dtype": "<u8",
            "compressor": {"id": "zlib", "level": 1},
            "fill_value": 0,
        }
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": f"{path}/{k}/"}}
        store = ts.open({**spec, "metadata": meta}, create=True, open=True).result()
        store[...] = data
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    datasets = [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": _res(k)}]}
        for k in range(len(levels))
    ]
    ms = [{"version": "0.4", "name": "seg", "axes": axes, "datasets": datasets}]
    (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (path / ".zattrs").write_text(json.dumps({"multiscales": ms}))
    return str(path)


def _write_hdf5(root: Path, levels: list[np.ndarray]) -> str:
    path = root / "seg.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group(H5_GROUP)
        for k, data in enumerate(levels):
            chunks = tuple(min(c, n) for c, n in zip(CHUNK, data.shape))
            ds = group.create_dataset(f"s{k}", data=data, chunks=chunks, compression="gzip")
            ds.attrs["resolution"] = _res(k)
    return f"{path}/{H5_GROUP}"


def read_levels(ds: Dataset) -> list[np.ndarray]:
    """Every scale, read whole with the reference library (every chunk file decoded)."""
    root = Path(ds.root)
    if ds.fmt == "hdf5":
        with h5py.File(root / "seg.h5", "r") as h5:
            return [np.asarray(h5[f"{H5_GROUP}/s{k}"][...]) for k in range(LEVELS)]
    out = []
    for k in range(LEVELS):
        if ds.fmt == "n5":
            spec = {"driver": "n5", "kvstore": {"driver": "file", "path": f"{ds.source}/s{k}/"}}
            out.append(np.asarray(ts.open(spec, open=True).result().read().result()).T.copy())
        else:
            import zarr

            out.append(np.asarray(zarr.open_array(f"{ds.source}/{k}", mode="r")[...]))
    return out


def scan_files(ds: Dataset) -> tuple[list[str], list[str]]:
    """``(temporary, stray)`` files of the dataset: writers' leftovers, and anything unknown.

    Known leftovers are tensorstore's ``*.__lock`` files, HDF5 copy-on-write copies and
    generation marks being replaced (``*.connecto-tmp``); known files are the write-back
    lock and the generation mark. Chunk files must sit on the chunk grid.
    """
    root = Path(ds.root)
    temporary, stray = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        name = path.name
        known = name in METADATA_NAMES or name in (WRITEBACK_LOCK, GENERATION_FILE, "dataset.json")
        known |= rel.startswith("annotations.db") or rel in (
            "seg.h5",
            f".seg.h5{WRITEBACK_LOCK}",
            f".seg.h5{GENERATION_FILE}",
        )
        if name.endswith((".__lock", ".connecto-tmp")):
            temporary.append(rel)
        elif not known and not _on_grid(ds.fmt, rel):
            stray.append(rel)
    return temporary, stray


def _on_grid(fmt: str, rel: str) -> bool:
    """Whether ``rel`` names a chunk of one of the levels."""
    parts = rel.split("/")
    if fmt == "n5" and len(parts) == 5 and parts[1][0] == "s":
        level, key = int(parts[1][1:]), [int(p) for p in parts[2:]][::-1]
    elif fmt == "zarr" and len(parts) == 3:
        level, key = int(parts[1]), [int(p) for p in parts[2].split(".")]
    else:
        return False
    shape = [-(-n // f**level) for n, f in zip(SHAPE, FACTOR)]
    return level < LEVELS and all(0 <= k < -(-n // c) for k, n, c in zip(key, shape, CHUNK))


# -- what the writer did, from its stdout ----------------------------------------------
def paint_mask(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """The writer's paint mask for ``seed`` (about three quarters of the box)."""
    mask = np.random.default_rng(seed).random(shape) < 0.75
    mask.flat[0] = True
    return mask


def parse_lines(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(tag, payload)`` of every complete line (a line cut by the kill is dropped)."""
    out = []
    for line in text.split("\n")[:-1]:
        tag, _, body = line.partition(" ")
        out.append((tag, json.loads(body) if body else {}))
    return out


def from_db(value: int) -> int:
    """An int64 database id as the uint64 id."""
    return int(value) % _WRAP


# -- the journal, read with sqlite3 ------------------------------------------------------
def connect(ds: Dataset) -> sqlite3.Connection:
    """A plain sqlite3 connection to the store (rows as dicts)."""
    conn = sqlite3.connect(ds.store, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def journal_rows(ds: Dataset, after: int = 0) -> list[dict[str, Any]]:
    """Rows of ``edits`` after seq ``after``, oldest first."""
    with closing(connect(ds)) as conn:
        rows = conn.execute("SELECT * FROM edits WHERE seq > ? ORDER BY seq", (after,))
        return [dict(r) for r in rows]


def _patches(conn: sqlite3.Connection) -> dict[int, tuple[tuple[int, ...], np.ndarray, np.ndarray]]:
    """``seq -> (start, before, after)`` of every voxel patch, decoded here."""
    out = {}
    for r in conn.execute("SELECT * FROM edit_voxels"):
        assert r["scale"] == 0
        shape = tuple(r[f"size_{a}"] for a in "zyx")
        dtype = np.dtype(r["dtype"])
        before, after = (
            np.frombuffer(zlib.decompress(r[k]), dtype).reshape(shape).astype(np.uint64)
            for k in ("before", "after")
        )
        out[r["seq"]] = (tuple(r[f"start_{a}"] for a in "zyx"), before, after)
    return out


TABLE_KEYS = {"synapses": ("id",), "neurons": ("id",), "assignments": ("volume", "fragment")}


def _rows_now(conn: sqlite3.Connection) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    out = {}
    for table, key in TABLE_KEYS.items():
        rows = {}
        for r in conn.execute(f"SELECT * FROM {table}"):
            row = dict(r)
            if table == "neurons":
                row.pop("n_pre")
                row.pop("n_post")
            rows[tuple(row[k] for k in key)] = row
        out[table] = rows
    return out


@dataclass
class Replay:
    """The store rows and finest voxels the journal says there must be."""

    rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]]
    voxels: np.ndarray
    kinds: dict[int, tuple[str, int | None]]
    """``seq -> (kind, ref)``."""


def replay_journal(
    ds: Dataset, initial_rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] | None = None
) -> Replay:
    """Apply every journal row in order to the original data (undo and redo honoured)."""
    voxels = ds.original().copy()
    rows = {t: dict(v) for t, v in (initial_rows or {t: {} for t in TABLE_KEYS}).items()}
    kinds: dict[int, tuple[str, int | None]] = {}
    with closing(connect(ds)) as conn:
        patches = _patches(conn)
        payloads = {}
        for r in conn.execute("SELECT seq, kind, ref, payload FROM edits ORDER BY seq"):
            seq, kind, ref = r["seq"], r["kind"], r["ref"]
            kinds[seq] = (kind, ref)
            if kind in ("undo", "redo"):
                target, direction = ref, ("undo" if kind == "undo" else "do")
            else:
                payloads[seq] = json.loads(r["payload"])
                target, direction = seq, "do"
            for table, key, before, after in payloads[target].get("changes", []):
                state = after if direction == "do" else before
                rows[table].pop(tuple(key), None)
                if state is not None:
                    rows[table][tuple(key)] = state
            if target in patches:
                start, before, after = patches[target]
                box = tuple(slice(a, a + n) for a, n in zip(start, before.shape))
                changed = before != after
                voxels[box][changed] = (after if direction == "do" else before)[changed]
    return Replay(rows, voxels, kinds)


# -- the checks -------------------------------------------------------------------------
def integrity_ok(ds: Dataset) -> None:
    """``PRAGMA integrity_check`` is ``ok``."""
    with closing(connect(ds)) as conn:
        assert [tuple(r) for r in conn.execute("PRAGMA integrity_check")] == [("ok",)]


def check_store_rows(ds: Dataset, replay: Replay) -> None:
    """Store rows equal the journal's replay; neuron counts equal the synapse table."""
    with closing(connect(ds)) as conn:
        now = _rows_now(conn)
        for table in TABLE_KEYS:
            assert now[table] == replay.rows[table], f"{table} differs from the journal's replay"
        counts = conn.execute(
            "SELECT n.id, n.n_pre, n.n_post, "
            "(SELECT count(*) FROM synapses s WHERE s.pre_id = n.id), "
            "(SELECT count(*) FROM synapses s WHERE s.post_id = n.id) FROM neurons n"
        ).fetchall()
        for nid, n_pre, n_post, pre, post in counts:
            assert (n_pre, n_post) == (pre, post), f"neuron {nid} counts {n_pre, n_post}"
        states = conn.execute("SELECT seq, writeback, error FROM edits WHERE writeback "
                              "IN ('pending', 'failed')").fetchall()  # fmt: skip
        assert not states, f"write-backs left: {[tuple(s) for s in states]}"


def check_volume(ds: Dataset, replay: Replay) -> np.ndarray:
    """Every scale decodes; scale 0 is the replayed journal, coarser ones its modes."""
    levels = read_levels(ds)
    assert np.array_equal(levels[0], replay.voxels), (
        f"scale 0 differs from the journal's replay in {int((levels[0] != replay.voxels).sum())} "
        "voxels"
    )
    for k, (got, want) in enumerate(zip(levels, reference_pyramid(replay.voxels))):
        assert np.array_equal(got, want), f"scale {k} is not the mode of scale {k - 1}"
    from napari_connecto.opening import open_volume

    volume = open_volume(ds.source)  # the repo's own reader must not see temporary files
    try:
        for k, level in enumerate(levels):
            seen = volume.read_voxels(k, (0, 0, 0), level.shape)
            assert np.array_equal(seen, level), f"the repo reads scale {k} differently"
    finally:
        volume.close()
    return levels[0]


def volume_key(ds: Dataset) -> str:
    """The key the proofreader gives the volume in the journal."""
    from napari_connecto.opening import open_volume

    volume = open_volume(ds.source)
    try:
        return str(volume.source)
    finally:
        volume.close()
