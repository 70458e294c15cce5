"""Open a petabyte-declared volume per backend (metadata only), and compare read throughput.

For each backend this prints
- time and memory to open a volume declared at petabyte size (no chunk exists);
  memory is the RSS growth of a fresh subprocess from just before to just after open;
- read+decode throughput of ``Volume.read_voxels`` against the raw library
  (tensorstore for zarr/N5/precomputed, h5py for HDF5) on the same chunks, same run.

Run: ``python bench/open_and_read.py [--size-mib 64] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import tensorstore as ts

PETA_SHAPE_XYZ = [1_048_576, 1_048_576, 1_024]  # 2^50 voxels of uint8 = 1 PiB
TARGET_OPEN_S = 0.5
TARGET_OPEN_MB = 50


# -- writers of the petabyte-declared datasets (metadata only) ---------------------------
def _ts_create(spec: dict) -> None:
    ts.open({**spec, "create": True, "delete_existing": True}).result()


def make_peta(root: Path) -> dict[str, str]:
    """Declare a 1 PiB uint8 volume in each format; return backend -> source."""
    x, y, z = PETA_SHAPE_XYZ
    zyx = [z, y, x]
    _ts_create(
        {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": str(root / "peta_v2.zarr")},
            "metadata": {"shape": zyx, "chunks": [64, 64, 64], "dtype": "|u1"},
        }
    )
    _ts_create({
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(root / "peta_v3.zarr")},
        "metadata": {
            "shape": zyx, "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [256, 256, 256]}},
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [64, 64, 64], "codecs": [{"name": "bytes"}, {"name": "zstd"}]}}],
        },
    })  # fmt: skip
    _ts_create({
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(root / "peta.n5")},
        "metadata": {
            "dimensions": [x, y, z], "blockSize": [64, 64, 64], "dataType": "uint8",
            "compression": {"type": "gzip"},
        },
    })  # fmt: skip
    _ts_create({
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(root / "peta_precomputed")},
        "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
        "scale_metadata": {
            "size": [x, y, z], "resolution": [4, 4, 40], "encoding": "raw",
            "chunk_size": [64, 64, 64],
        },
    })  # fmt: skip
    with h5py.File(root / "peta.h5", "w") as f:
        ds = f.create_dataset("volumes/raw", shape=zyx, dtype="uint8", chunks=(64, 64, 64))
        ds.attrs["resolution"] = [40.0, 4.0, 4.0]
    return {
        "zarr v2": str(root / "peta_v2.zarr"),
        "zarr v3 sharded": str(root / "peta_v3.zarr"),
        "n5": str(root / "peta.n5"),
        "precomputed": str(root / "peta_precomputed"),
        "hdf5": str(root / "peta.h5") + "#volumes/raw",
    }


_OPEN_PROBE = """
import json, sys, time, psutil
import napari_connecto as nc
import numpy, tensorstore, h5py, zarr  # libraries imported before the baseline
from napari_connecto.backends.registry import get_backend
for name in ("zarr", "n5", "hdf5", "precomputed"):
    get_backend(name)
proc = psutil.Process()
rss0 = proc.memory_info().rss
t0 = time.perf_counter()
vol = nc.open_volume(sys.argv[1])
t1 = time.perf_counter()
rss1 = proc.memory_info().rss
print(json.dumps({"seconds": t1 - t0, "rss_mb": (rss1 - rss0) / 2**20,
                  "bytes": vol.scales[0].nbytes, "shape": vol.shape}))
"""


def bench_open(sources: dict[str, str]) -> None:
    print("\n== open a volume declared at 1 PiB (metadata only) ==")
    print(
        f"{'backend':18} {'declared':>10} {'open s':>8} {'RSS MB':>8}  target <{TARGET_OPEN_S}s <{TARGET_OPEN_MB}MB"
    )
    for name, source in sources.items():
        out = subprocess.run([sys.executable, "-c", _OPEN_PROBE, source], capture_output=True,
                             text=True, check=True)  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ok = r["seconds"] < TARGET_OPEN_S and r["rss_mb"] < TARGET_OPEN_MB
        print(
            f"{name:18} {r['bytes'] / 2**50:8.2f}PiB {r['seconds']:8.3f} {r['rss_mb']:8.1f}  {'ok' if ok else 'MISSED'}"
        )


# -- throughput ---------------------------------------------------------------------------
Reader = Callable[[], np.ndarray]


def make_data(
    root: Path, size_mib: int
) -> tuple[np.ndarray, dict[str, tuple[str, tuple[Reader, Reader]]]]:
    """Write one volume per backend; return truth and backend -> (source, raw-library reader)."""
    side = round((size_mib * 2**20 / 8) ** (1 / 3) / 64) * 64 or 64
    shape = (side, side, side)
    rng = np.random.default_rng(0)
    truth = (
        rng.integers(0, 50, shape, dtype=np.uint64) + np.arange(side, dtype=np.uint64)
    ) * np.uint64(1_000_003)
    out: dict[str, tuple[str, tuple[Reader, Reader]]] = {}
    from napari_connecto.backends._tensorstore import context as project_context

    def ts_writer(spec: dict) -> tuple[Reader, Reader]:
        store = ts.open({**spec, "create": True, "delete_existing": True}).result()
        data = truth if spec["driver"].startswith("zarr") else truth.transpose()
        if spec["driver"] == "neuroglancer_precomputed":
            data = data[..., np.newaxis]
        store.write(data).result()
        plain = ts.Context({"cache_pool": {"total_bytes_limit": 0}})
        default = ts.open(spec, context=plain).result()
        same = ts.open(spec, context=project_context()).result()
        return (
            lambda: np.asarray(default.read().result()),
            lambda: np.asarray(same.read().result()),
        )

    meta3 = {"shape": list(shape), "data_type": "uint64",
             "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [64, 64, 64]}},
             "codecs": [{"name": "bytes"}, {"name": "zstd"}]}  # fmt: skip
    path = str(root / "v3.zarr")
    out["zarr v3"] = (
        path,
        ts_writer(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}, "metadata": meta3}
        ),
    )
    path = str(root / "data.n5")
    out["n5"] = (path, ts_writer({"driver": "n5", "kvstore": {"driver": "file", "path": path}, "metadata": {
        "dimensions": list(shape[::-1]), "blockSize": [64, 64, 64], "dataType": "uint64",
        "compression": {"type": "zstd"}}}))  # fmt: skip
    path = str(root / "precomputed")
    out["precomputed"] = (path, ts_writer({
        "driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": path},
        "multiscale_metadata": {"type": "segmentation", "data_type": "uint64", "num_channels": 1},
        "scale_metadata": {"size": list(shape[::-1]), "resolution": [8, 8, 8],
                           "encoding": "compressed_segmentation",
                           "compressed_segmentation_block_size": [8, 8, 8], "chunk_size": [64, 64, 64]}}))  # fmt: skip
    h5 = root / "data.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset(
            "seg", data=truth, chunks=(64, 64, 64), compression="gzip", compression_opts=1
        )

    def h5_read() -> np.ndarray:
        with h5py.File(h5, "r", rdcc_nbytes=2**20) as f:
            return f["seg"][...]

    out["hdf5"] = (f"{h5}#seg", (h5_read, h5_read))
    return truth, out


def bench_read(size_mib: int, repeats: int) -> None:
    import napari_connecto as nc

    with tempfile.TemporaryDirectory() as tmp:
        truth, cases = make_data(Path(tmp), size_mib)
        mib = truth.nbytes / 2**20
        print(f"\n== read + decode {truth.shape} uint64 ({mib:.0f} MiB), best of {repeats} ==")
        print("raw lib: tensorstore with its default context (cache off) and with the project's")
        print("context (same I/O concurrency); h5py for HDF5. ratio = Volume vs the faster raw.")
        head = f"{'backend':14} {'raw default':>12} {'raw same ctx':>13} {'Volume MiB/s':>13}"
        print(f"{head} {'ratio':>6}  target >= 0.9x")
        for name, (source, (raw_default, raw_same)) in cases.items():
            vol = nc.open_volume(source)
            np.testing.assert_array_equal(vol.read_voxels(0, (0, 0, 0), truth.shape), truth)
            t_def = min(_timed(raw_default) for _ in range(repeats))
            t_same = min(_timed(raw_same) for _ in range(repeats))
            t_vol = min(
                _timed(lambda v=vol: v.read_voxels(0, (0, 0, 0), truth.shape))
                for _ in range(repeats)
            )
            ratio = min(t_def, t_same) / t_vol
            verdict = "ok" if ratio >= 0.9 else "MISSED"
            print(
                f"{name:14} {mib / t_def:12.0f} {mib / t_same:13.0f} {mib / t_vol:13.0f} "
                f"{ratio:6.2f}  {verdict}"
            )


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128, help="size of the throughput volume")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_open(make_peta(Path(tmp)))
    bench_read(args.size_mib, args.repeats)


if __name__ == "__main__":
    main()
