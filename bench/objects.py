"""Per-segment attributes: lookups in a 10M-id store, and blockwise computation throughput.

Prints (no assertions):

- building an :class:`AttributeStore` of ``--ids`` random uint64 ids (default 10,000,000)
  with four columns, saving it and opening it again memory-mapped;
- lookups of ``--batch`` random ids (default 1,000; half present, half absent) through
  ``store.positions`` (binary search only) and ``store.lookup`` (search + gather of every
  column): median and p99 ms per batch over ``--repeats`` repetitions (target <= 1 ms
  per 1,000 ids), on the in-memory and the memory-mapped store;
- the same-run baselines: pandas ``Index.get_indexer`` over the same ids and a Python
  ``dict`` of id -> row (their build time and memory too);
- attribute computation on the generated sample segmentation (OME-Zarr written to a
  temporary directory) in voxels/s and MB/s, against a same-run baseline of one
  whole-array ``np.unique(..., return_counts=True)`` (sizes only, no boxes, no I/O).

Run: ``python bench/objects.py [--ids 10000000] [--batch 1000] [--repeats 500]
[--shape 20 1024 1024]``. Other processes on the machine inflate the figures; the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from napari_connecto import open_volume
from napari_connecto.objects.attributes import AttributeStore, compute_attributes
from napari_connecto.sample import generate_sample
from napari_connecto.sample.write import write_sample


def _timings(fn: Callable[[np.ndarray], object], batches: list[np.ndarray]) -> np.ndarray:
    """Milliseconds per call of ``fn`` on each batch."""
    fn(batches[0])  # warm up
    out = np.empty(len(batches))
    for k, batch in enumerate(batches):
        start = time.perf_counter()
        fn(batch)
        out[k] = (time.perf_counter() - start) * 1e3
    return out


def _report(name: str, ms: np.ndarray, batch: int) -> None:
    scale = 1000 / batch
    print(
        f"  {name:<42s} median {np.median(ms) * scale:7.3f} ms  "
        f"p99 {np.percentile(ms, 99) * scale:7.3f} ms  per 1,000 ids"
    )


def _build(n: int, rng: np.random.Generator) -> tuple[np.ndarray, AttributeStore, float]:
    ids = np.unique(rng.integers(1, 2**64 - 1, n, dtype=np.uint64, endpoint=True))
    start = time.perf_counter()
    store = AttributeStore(
        ids,
        {
            "size_voxels": rng.integers(1, 10**9, ids.size, dtype=np.uint64),
            "size_nm3": rng.random(ids.size) * 1e12,
            "rep_z": rng.integers(0, 10**4, ids.size),
            "label": np.array(["KC", "PN", "MBON", "glia"])[rng.integers(0, 4, ids.size)],
        },
    )
    return ids, store, time.perf_counter() - start


def bench_lookups(n: int, batch: int, repeats: int) -> None:
    """Store build, save/open, lookups and baselines."""
    rng = np.random.default_rng(0)
    ids, store, build_s = _build(n, rng)
    print(f"store of {len(store):,} ids, columns {list(store.columns)}: built in {build_s:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = store.save(Path(tmp) / "attrs")
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        mapped = AttributeStore.load(path)
        open_ms = (time.perf_counter() - start) * 1e3
        size_mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        print(
            f"  saved {size_mb:,.0f} MB in {save_s:.2f} s; opened memory-mapped in {open_ms:.2f} ms"
        )
        batches = []
        for _ in range(repeats):
            present = rng.choice(ids, batch // 2)
            absent = rng.integers(1, 2**64 - 1, batch - batch // 2, dtype=np.uint64, endpoint=True)
            batches.append(np.concatenate([present, absent]))
        _report("AttributeStore.positions (in memory)", _timings(store.positions, batches), batch)
        _report(
            "AttributeStore.lookup, 4 columns (in memory)", _timings(store.lookup, batches), batch
        )
        _report(
            "AttributeStore.positions (memory-mapped)", _timings(mapped.positions, batches), batch
        )
        _report("AttributeStore.lookup (memory-mapped)", _timings(mapped.lookup, batches), batch)
        del mapped
    _baselines(ids, batches, batch)


def _rss_mb() -> float:
    """Resident memory of this process (Linux ``/proc``), MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _baselines(ids: np.ndarray, batches: list[np.ndarray], batch: int) -> None:
    before = _rss_mb()
    start = time.perf_counter()
    index = pd.Index(ids)
    index.get_indexer(batches[0])  # builds the hash table
    build_s = time.perf_counter() - start
    grew = _rss_mb() - before
    print(f"  baseline pandas Index: built with hash table in {build_s:.2f} s, +{grew:,.0f} MB RSS")
    _report("pandas Index.get_indexer", _timings(index.get_indexer, batches), batch)
    del index
    before = _rss_mb()
    start = time.perf_counter()
    table = dict(zip(ids.tolist(), range(ids.size), strict=True))
    build_s = time.perf_counter() - start
    grew = _rss_mb() - before
    print(f"  baseline Python dict: built in {build_s:.2f} s, +{grew:,.0f} MB RSS")
    _report(
        "dict.get per id", _timings(lambda b: [table.get(i) for i in b.tolist()], batches), batch
    )


def bench_compute(shape: tuple[int, int, int]) -> None:
    """Attribute computation on the sample segmentation against one whole-array np.unique."""
    sample = generate_sample(shape, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sample(tmp, sample)
        volume = open_volume(f"{paths.ome_zarr}/labels/segmentation")
        voxels = int(np.prod(volume.scales[0].shape))
        mb = voxels * volume.dtype.itemsize / 1e6
        start = time.perf_counter()
        store = compute_attributes(volume)
        took = time.perf_counter() - start
        print(
            f"sample segmentation {shape} ({voxels:,} voxels, {mb:,.0f} MB uint64), {len(store)} segments"
        )
        print(f"  compute_attributes (read + sizes, boxes, centroids, representatives): {took:.2f} s, "
              f"{voxels / took / 1e6:,.1f} Mvoxel/s, {mb / took:,.0f} MB/s")  # fmt: skip
        labels = np.asarray(sample.segmentation)
        start = time.perf_counter()
        np.unique(labels, return_counts=True)
        took = time.perf_counter() - start
        print(f"  baseline np.unique(whole array, return_counts) in memory: {took:.2f} s, "
              f"{voxels / took / 1e6:,.1f} Mvoxel/s, {mb / took:,.0f} MB/s")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--shape", type=int, nargs=3, default=(20, 1024, 1024))
    args = parser.parse_args(argv)
    print(
        f"load average {os.getloadavg()}, python {sys.version.split()[0]}, numpy {np.__version__}"
    )
    bench_lookups(args.ids, args.batch, args.repeats)
    bench_compute(tuple(args.shape))


if __name__ == "__main__":
    main()
