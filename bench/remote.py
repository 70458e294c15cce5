"""Remote read throughput over loopback HTTP and DVID, against raw tensorstore and thin clients.

One run writes a test volume with tensorstore (the reference writer) into a temporary folder:
a uint8 image as neuroglancer precomputed (raw), zarr v3 (bytes + zstd) and N5 (gzip), and a
uint64 segmentation as precomputed compressed_segmentation, all in 64^3 chunks. The same data
is seeded into a ``DvidServer`` (``uint8blk`` grayscale and ``labelmap`` segmentation, 64^3
blocks) whose state is saved to a data folder (``DvidServer.save``: JSON + ``.npy``).

For every latency (0 and 50 ms by default) each server is started afresh from its command line
in a child process, the latency added to every answer:
``python -m napari_connecto.testing.http_server FOLDER --port 0 --latency L`` and
``python -m napari_connecto.testing.dvid_server --port 0 --data DIR --latency L``; both write
their URL on stdout once they listen, and are stopped with SIGTERM (then waited for; killed
if they do not exit) when the latency is done, on an error or on Ctrl-C alike. A child process
keeps the Python servers off the benchmark's GIL: in-process, their threads would slow a
Python client (napari-connecto) but not tensorstore's C++ client, which measures the server,
not the client (``--server-in-process`` shows that case: the same server classes, run on
threads of this process). Nothing is pickled: the servers take their data from files and
their settings from the command line, and answer only over HTTP. The benchmark stopping
(Ctrl-C, SIGTERM, an error) stops the servers too.

For every (dataset, latency) every scale-0 chunk is read once, one chunk-aligned read per
chunk, by a fixed number of threads: the number the streaming cache lets the backend have in
flight, ``min(CacheSettings.workers, backend.max_concurrency)``. Paths:

- ``connecto``: ``nc.open_volume(url).read_voxels(0, start, stop)``;
- ``tensorstore`` (HTTP formats): ``ts.open`` over its ``http`` kvstore, chunk cache off,
  ``http_request_concurrency`` = the same number, one ``view[region].read()`` per chunk
  (precomputed and N5 read through ``.T`` so that both sides return the same z, y, x array);
- ``urllib3 GET`` (precomputed raw only): bare ``urllib3`` GETs of the chunk files, bytes
  viewed as the array: the floor of any Python HTTP client on this machine;
- ``thin raw`` (DVID): bare ``urllib3`` GETs of the same ``/raw/0_1_2`` boxes (lz4 for the
  labelmap, as our backend asks), decoded with no checks;
- ``thin blocks`` / ``thin blocks/row`` (DVID labelmap): ``GET .../blocks/...?compression=lz4``,
  one block per request, or one row of blocks along x per request.

MB/s is decoded bytes (10^6) over wall time: the median of the timed passes, and the best
one. Passes are taken in rounds, one pass of every path per round (A B C, then C B A, ...),
after one untimed warm-up round, so that background load hits every path alike; there are
``--repeats`` rounds, or more (up to 4x) where a pass is short, so that each path runs for
at least 3 s.
``ratio`` is the median over the rounds of each round's MB/s over the reference row's MB/s
in the same round: on a shared 2-core machine a pass can run 30 % slower or faster than the
one before it, and pairing passes in time cancels that drift where a best-of would
compare two outliers. ``q1-q3`` is the first and third quartile of those per-round ratios.
The median still moves by about 0.1 from one run of the whole script to the next on such a
machine (the Python test servers share its two cores), so judge a target from several runs.
``requests`` and ``wire MB`` (response body bytes, as received; no server here sends
a ``Content-Encoding``) are counted by each client during its pass, never by the server:
connecto by its transport (``default_client().stats``, ``requests`` and ``bytes``),
tensorstore by its metrics (``/tensorstore/http/request_started``,
``/tensorstore/kvstore/http/bytes_read``), the thin clients by themselves; ``n/a`` where a
counter is missing (e.g. a tensorstore without those metrics). Every pass is checked against
the ground truth. The reference row of a group is tensorstore for HTTP, thin raw for DVID;
the target for connecto is a ratio >= 0.9.

Run: ``python bench/remote.py [--shape 256,512,512] [--seg-shape 128,384,384]
[--latency 0,50] [--repeats 9] [--concurrency N] [--skip-dvid] [--server-in-process]
[--quick] [--json PATH]``. Defaults take about 6 minutes on 2 cores, ``--quick`` 30 s.
"""

from __future__ import annotations

import argparse
import json
import math
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import tensorstore as ts

CHUNK = 64
TARGET = 0.9
MIN_TIMED_SECONDS = 3.0
"""Timed seconds per path below which more rounds are taken (passes of 0.1 s are noisy)."""
MAX_ROUNDS_FACTOR = 4
MB = 1e6
Box = tuple[tuple[int, int, int], tuple[int, int, int]]
"""A chunk-aligned region: (start, stop), z, y, x."""


# -- ground truth and the reference writer ----------------------------------------------------
def make_image(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """EM-like uint8: smooth structure plus 5 bits of noise (zstd/gzip get ~1.5x)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.meshgrid(np.arange(y), np.arange(x), indexing="ij")
    plane = 110 + 50 * np.sin(xx / 9.0) + 40 * np.cos(yy / 13.0)
    out = np.empty(shape, np.uint8)
    for k in range(z):
        noise = rng.integers(0, 32, (y, x), dtype=np.uint8)
        out[k] = (plane + 20 * np.sin(k / 5.0)).astype(np.uint8) + noise
    return out


def make_segmentation(shape: tuple[int, int, int], seed: int = 1) -> np.ndarray:
    """uint64 labels of irregular boxes (a few labels per 8^3 block), large ids."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    zi, yi, xi = np.arange(z) // 12, np.arange(y) // 20, np.arange(x) // 28
    cells = (int(zi[-1]) + 1, int(yi[-1]) + 1, int(xi[-1]) + 1)
    ids = rng.integers(1, 2**40, math.prod(cells), dtype=np.uint64).reshape(cells)
    return ids[zi[:, None, None], yi[None, :, None], xi[None, None, :]]


def _create(spec: dict[str, Any], data: np.ndarray, transpose: bool) -> None:
    store = ts.open({**spec, "create": True, "delete_existing": True}).result()
    view = store[..., 0] if spec["driver"] == "neuroglancer_precomputed" else store
    (view.T if transpose else view).write(data).result()


def write_datasets(root: Path, image: np.ndarray, seg: np.ndarray) -> dict[str, dict[str, Any]]:
    """Write every HTTP dataset; return name -> {key, ts spec (no kvstore), dtype, truth}."""
    zyx, xyz = list(image.shape), list(image.shape[::-1])
    chunks = [CHUNK] * 3
    pre = {"driver": "neuroglancer_precomputed"}
    specs: dict[str, dict[str, Any]] = {
        "precomputed raw u8": {
            "key": "img_precomputed",
            "prefix": "precomputed",
            "truth": image,
            "transpose": True,
            "spec": {
                **pre,
                "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
                "scale_metadata": {
                    "size": xyz,
                    "resolution": [4, 4, 40],
                    "encoding": "raw",
                    "chunk_size": chunks,
                },
            },
        },
        "zarr3 zstd u8": {
            "key": "img.zarr",
            "prefix": "zarr",
            "truth": image,
            "transpose": False,
            "spec": {
                "driver": "zarr3",
                "metadata": {
                    "shape": zyx,
                    "data_type": "uint8",
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
                    "codecs": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 3}}],
                },
            },
        },
        "n5 gzip u8": {
            "key": "img.n5",
            "prefix": "n5",
            "truth": image,
            "transpose": True,
            "spec": {
                "driver": "n5",
                "metadata": {
                    "dimensions": xyz,
                    "blockSize": chunks,
                    "dataType": "uint8",
                    "compression": {"type": "gzip", "level": 5},
                },
            },
        },
        "precomputed cseg u64": {
            "key": "seg_precomputed",
            "prefix": "precomputed",
            "truth": seg,
            "transpose": True,
            "spec": {
                **pre,
                "multiscale_metadata": {
                    "type": "segmentation",
                    "data_type": "uint64",
                    "num_channels": 1,
                },
                "scale_metadata": {
                    "size": list(seg.shape[::-1]),
                    "resolution": [8, 8, 8],
                    "encoding": "compressed_segmentation",
                    "compressed_segmentation_block_size": [8, 8, 8],
                    "chunk_size": chunks,
                },
            },
        },
    }
    for case in specs.values():
        kv = {"driver": "file", "path": str(root / case["key"])}
        _create({**case["spec"], "kvstore": kv}, case["truth"], case["transpose"])
    return specs


def seed_dvid(image: np.ndarray, seg: np.ndarray, data_dir: Path | None) -> tuple[Any, str]:
    """A ``DvidServer`` (not serving) holding the image and segmentation; its root uuid.

    With ``data_dir`` its state is saved there (JSON + ``.npy``; the uuid is kept) for the
    server's command line to load.
    """
    from napari_connecto.testing.dvid_server import DvidServer

    server = DvidServer(data_dir=data_dir)
    uuid = server.create_repo("bench")
    server.create_instance(uuid, "uint8blk", "grayscale", BlockSize="64,64,64")
    server.create_instance(uuid, "labelmap", "segmentation", BlockSize="64,64,64")
    server.put_voxels(uuid, "grayscale", (0, 0, 0), image)
    server.put_voxels(uuid, "segmentation", (0, 0, 0), seg)
    if data_dir is not None:
        server.save()
    return server, uuid


def boxes(shape: Iterable[int], chunk: Iterable[int]) -> list[Box]:
    """Every chunk-aligned region of a grid, z, y, x order."""
    shape, chunk = tuple(shape), tuple(chunk)
    axes = [range(0, n, c) for n, c in zip(shape, chunk, strict=True)]
    out = []
    for z in axes[0]:
        for y in axes[1]:
            for x in axes[2]:
                start = (z, y, x)
                stop = tuple(min(a + c, n) for a, c, n in zip(start, chunk, shape, strict=True))
                out.append((start, stop))
    return out  # type: ignore[return-value]


# -- servers --------------------------------------------------------------------------------
class ChildServer:
    """A loopback server started from its command line in a child process.

    ``python -m MODULE ARGS``; the first line it writes to stdout, less ``prefix``, is its URL.
    Its log (stderr) goes to ``log``, shown if it fails to start. :meth:`close` sends SIGTERM
    and waits (SIGKILL after ``stop_timeout`` s); it runs when startup fails too.
    """

    def __init__(
        self,
        module: str,
        args: list[str],
        log: Path,
        *,
        prefix: str = "",
        start_timeout: float = 300.0,
        stop_timeout: float = 120.0,
    ) -> None:
        self.name, self.log, self.stop_timeout = module.rsplit(".", 1)[-1], log, stop_timeout
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        try:
            self.url = self._first_line(start_timeout).strip().removeprefix(prefix).strip()
            if not self.url.startswith("http://"):
                raise RuntimeError(f"{self.name}: unexpected first line {self.url!r}")
        except BaseException:
            self.close()
            raise

    def _first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            line = self.proc.stdout.readline() if ready else ""
            if line:
                return line
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before listening:\n{tail}"
                )
        raise TimeoutError(f"{self.name} did not print its URL within {timeout:.0f} s")

    def close(self) -> None:
        """SIGTERM, wait; SIGKILL if it does not exit in time (idempotent)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class LocalServer:
    """``HttpFolderServer`` or ``DvidServer`` on threads of this process (shares its GIL)."""

    def __init__(self, server: Any, latency: float) -> None:
        from napari_connecto.testing.chaos import ChaosConfig

        self.server = server
        server.set_chaos(ChaosConfig(latency_seconds=latency))
        self.url = server.start()

    def close(self) -> None:
        self.server.stop()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# -- counters (client side) -----------------------------------------------------------------
Counts = tuple[int | None, int | None]
"""Cumulative (requests, response body bytes) of one client; ``None``: not measurable."""


class Tally:
    """Requests and response body bytes of a thin client, counted by itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += n

    def counts(self) -> Counts:
        with self._lock:
            return self.requests, self.bytes


def connecto_counts() -> Counts:
    """napari-connecto's transport counters (every remote backend uses ``default_client``)."""
    from napari_connecto.remote.http import default_client

    stats = default_client().stats
    return stats.get("requests"), stats.get("bytes")


TS_REQUESTS, TS_BYTES = "/tensorstore/http/request_started", "/tensorstore/kvstore/http/bytes_read"


def tensorstore_counts() -> Counts:
    """tensorstore's process-wide HTTP metrics (absent until its first HTTP request)."""
    found = {
        m["name"]: m["values"][0].get("value")
        for m in ts.experimental_collect_matching_metrics("/tensorstore/")
        if m["name"] in (TS_REQUESTS, TS_BYTES) and m.get("values")
    }
    return found.get(TS_REQUESTS), found.get(TS_BYTES)


def _delta(before: int | None, after: int | None) -> int | None:
    return None if after is None else after - (before or 0)


# -- measuring ------------------------------------------------------------------------------
@dataclass(slots=True)
class Row:
    """One measured path over one dataset at one latency."""

    group: str
    path: str
    latency_ms: float
    concurrency: int
    chunks: int
    mbps: float
    """Median pass."""
    best_mbps: float
    seconds: float
    """Of the median pass."""
    requests: int | None
    """HTTP requests the client made in the pass (``None``: not measurable)."""
    wire_mb: float | None
    """Response body MB (10^6) the client received in the pass (``None``: not measurable)."""
    verified: bool
    ratio: float = float("nan")
    """Median over rounds of MB/s over the group's reference row (tensorstore, or thin raw)."""
    spread: tuple[float, float] = (float("nan"), float("nan"))
    """First and third quartile of those per-round ratios: how much they vary within the run."""


@dataclass(slots=True)
class Runner:
    """Measures read paths against one server at one latency."""

    latency: float
    repeats: int
    concurrency: int | None
    """Reader threads; ``None``: what the streaming cache allows the backend."""

    def workers(self, vol: Any) -> int:
        """Fetches in flight: the override, or ``min(CacheSettings.workers, max_concurrency)``."""
        from napari_connecto.cache.service import CacheSettings

        if self.concurrency:
            return self.concurrency
        default = int(CacheSettings.__dataclass_fields__["workers"].default)
        return max(1, min(default, int(vol.backend.max_concurrency)))

    def compare(
        self, dataset: str, paths: list[ReadPath], truth: np.ndarray, workers: int
    ) -> list[Row]:
        """Rounds of one pass per path, each reading its regions with ``workers`` threads.

        Rounds take the paths in turns, forwards then backwards (A B C, C B A, ...), so that a
        change of background load hits every path alike; one more round runs first, untimed,
        to open connections, warm the server and time a pass. There are ``repeats`` rounds,
        more where passes are short (enough for every path to run ``MIN_TIMED_SECONDS``, at
        most ``repeats * MAX_ROUNDS_FACTOR``), always an odd number. A path's row is its
        median pass, with its best MB/s; its ratio is the median of its per-round ratios to
        the first path.
        """
        ok = [True] * len(paths)

        def one_round(attempt: int) -> list[Row]:
            order = list(range(len(paths)))
            rows: list[Row | None] = [None] * len(paths)
            for i in order if attempt % 2 else reversed(order):
                rows[i], good = self._pass(dataset, paths[i], truth, workers)
                ok[i] = ok[i] and good
            return rows  # type: ignore[return-value]

        warm_up = one_round(0)  # untimed; short passes are noisy: take more of them (odd)
        wanted = math.ceil(MIN_TIMED_SECONDS / max(min(r.seconds for r in warm_up), 1e-3))
        rounds = min(max(self.repeats, wanted), self.repeats * MAX_ROUNDS_FACTOR) | 1
        timed = [one_round(attempt) for attempt in range(1, rounds + 1)]
        passes = [list(runs) for runs in zip(*timed, strict=True)]
        rows = []
        for runs, good in zip(passes, ok, strict=True):
            row = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]  # odd count: the median
            row.best_mbps = max(r.mbps for r in runs)
            ratios = [r.mbps / ref.mbps for r, ref in zip(runs, passes[0], strict=True)]
            row.verified, row.ratio = good, float(np.median(ratios))
            row.spread = (float(np.quantile(ratios, 0.25)), float(np.quantile(ratios, 0.75)))
            rows.append(row)
        return rows

    def _pass(
        self, dataset: str, path: ReadPath, truth: np.ndarray, workers: int
    ) -> tuple[Row, bool]:
        """One timed pass of one path, and whether every region matched the truth."""
        with ThreadPoolExecutor(workers) as pool:
            requests, sent = path.counts()
            t0 = time.perf_counter()
            out = list(pool.map(path.read, path.regions))
            seconds = time.perf_counter() - t0
            requests_after, sent_after = path.counts()
        requests, sent = _delta(requests, requests_after), _delta(sent, sent_after)
        nbytes = sum(a.nbytes for a in out)
        row = Row(
            dataset,
            path.name,
            latency_ms=self.latency * 1e3,
            concurrency=workers,
            chunks=len(path.regions),
            mbps=nbytes / MB / seconds,
            best_mbps=nbytes / MB / seconds,
            seconds=seconds,
            requests=requests,
            wire_mb=None if sent is None else sent / MB,
            verified=True,
        )
        return row, _matches(out, path.regions, truth)


@dataclass(frozen=True, slots=True)
class ReadPath:
    """One way of reading a dataset: a name, a per-region reader, the regions it reads."""

    name: str
    read: Callable[[Box], np.ndarray]
    regions: list[Box]
    counts: Callable[[], Counts]
    """The client's cumulative (requests, body bytes), read before and after each pass."""


def _matches(out: list[np.ndarray], regions: list[Box], truth: np.ndarray) -> bool:
    return all(
        np.array_equal(a, truth[tuple(slice(s, e) for s, e in zip(*box, strict=True))])
        for a, box in zip(out, regions, strict=True)
    )


def _region(view: Any, box: Box) -> Any:
    (z0, y0, x0), (z1, y1, x1) = box
    return view[z0:z1, y0:y1, x0:x1]


def _reader(vol: Any) -> Callable[[Box], np.ndarray]:
    """One chunk-aligned read through napari-connecto, as the streaming cache does it."""
    return lambda box: vol.read_voxels(0, *box)


def bench_http(specs: dict[str, dict[str, Any]], run: Runner, url: str) -> list[Row]:
    """connecto vs tensorstore's http kvstore for every HTTP dataset at one latency."""
    import napari_connecto as nc

    rows = []
    for name, case in specs.items():
        truth = case["truth"]
        vol = nc.open_volume(f"{case['prefix']}://{url}/{case['key']}")
        assert tuple(vol.scales[0].shape) == truth.shape, (vol.scales[0].shape, truth.shape)
        workers = run.workers(vol)
        regions = boxes(truth.shape, vol.scales[0].chunk_shape)
        context = ts.Context(
            {"cache_pool": {"total_bytes_limit": 0}, "http_request_concurrency": {"limit": workers}}
        )
        spec = {**case["spec"], "kvstore": {"driver": "http", "base_url": f"{url}/{case['key']}"}}
        store = ts.open(spec, context=context, read=True).result()
        view = store[..., 0] if spec["driver"] == "neuroglancer_precomputed" else store
        view = view.T if case["transpose"] else view

        def ts_read(box: Box, view: Any = view) -> np.ndarray:
            return _region(view, box).read().result()

        paths = [
            ReadPath("tensorstore", ts_read, regions, tensorstore_counts),
            ReadPath("connecto", _reader(vol), regions, connecto_counts),
        ]
        if case["spec"].get("scale_metadata", {}).get("encoding") == "raw":
            base = f"{url}/{case['key']}/{vol.scales[0].key}"
            tally = Tally()
            read = _thin_precomputed(base, truth.dtype, workers, tally)
            paths.append(ReadPath("urllib3 GET", read, regions, tally.counts))
        rows += run.compare(name, paths, truth, workers)
    return rows


def _thin_precomputed(
    base: str, dtype: np.dtype, workers: int, tally: Tally
) -> Callable[[Box], np.ndarray]:
    """Bare ``urllib3`` GETs of raw precomputed chunks: the floor of a Python HTTP client."""
    import urllib3

    pool = urllib3.PoolManager(maxsize=workers, retries=False)

    def read(box: Box) -> np.ndarray:
        (z0, y0, x0), (z1, y1, x1) = box
        data = pool.request("GET", f"{base}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}").data
        tally.add(len(data))
        return np.frombuffer(data, dtype).reshape((z1 - z0, y1 - y0, x1 - x0))

    return read


# -- DVID -----------------------------------------------------------------------------------
def _xyz(values: Iterable[int]) -> str:
    return "_".join(str(int(v)) for v in reversed(tuple(values)))


def _thin_raw(
    pool: Any, base: str, dtype: np.dtype, compressed: bool, tally: Tally
) -> Callable[[Box], np.ndarray]:
    """Bare GETs of ``/raw/0_1_2`` boxes (``?compression=lz4`` when ``compressed``), no checks."""
    import lz4.block

    def read(box: Box) -> np.ndarray:
        start, stop = box
        shape = tuple(b - a for a, b in zip(start, stop, strict=True))
        query = "?compression=lz4" if compressed else ""
        data = pool.request("GET", f"{base}/raw/0_1_2/{_xyz(shape)}/{_xyz(start)}{query}").data
        tally.add(len(data))
        if compressed:
            data = lz4.block.decompress(data, uncompressed_size=math.prod(shape) * dtype.itemsize)
        return np.frombuffer(data, dtype).reshape(shape)

    return read


def _thin_blocks(pool: Any, base: str, tally: Tally) -> Callable[[Box], np.ndarray]:
    """``GET .../blocks/size/offset?compression=lz4`` decoded into one z, y, x array."""
    import lz4.block

    block_bytes = CHUNK**3 * 8

    def read(box: Box) -> np.ndarray:
        start, stop = box
        shape = tuple(b - a for a, b in zip(start, stop, strict=True))
        url = f"{base}/blocks/{_xyz(shape)}/{_xyz(start)}?compression=lz4"
        data = pool.request("GET", url).data
        tally.add(len(data))
        out = np.zeros(shape, np.uint64)
        pos = 0
        while pos < len(data):
            bx, by, bz, n = struct.unpack_from("<iiii", data, pos)
            pos += 16
            raw = lz4.block.decompress(data[pos : pos + n], uncompressed_size=block_bytes)
            pos += n
            z, y, x = (b * CHUNK - a for b, a in zip((bz, by, bx), start, strict=True))
            block = np.frombuffer(raw, np.uint64).reshape((CHUNK,) * 3)
            out[z : z + CHUNK, y : y + CHUNK, x : x + CHUNK] = block
        return out

    return read


def bench_dvid(run: Runner, url: str, uuid: str, image: np.ndarray, seg: np.ndarray) -> list[Row]:
    """connecto's DvidBackend vs thin urllib3 GETs (raw, and blocks for the labelmap)."""
    rows = []
    for name, instance, truth in (
        ("dvid uint8blk", "grayscale", image),
        ("dvid labelmap lz4", "segmentation", seg),
    ):
        rows += _dvid_group(run, url, uuid, name, instance, truth)
    return rows


def _dvid_group(  # noqa: PLR0917 - private
    run: Runner, url: str, uuid: str, name: str, instance: str, truth: np.ndarray
) -> list[Row]:
    """The rows of one DVID instance."""
    import urllib3

    import napari_connecto as nc

    vol = nc.open_volume(f"dvid://{url.removeprefix('http://')}/{uuid}/{instance}")
    assert tuple(vol.scales[0].shape) == truth.shape, (vol.scales[0].shape, truth.shape)
    workers = run.workers(vol)
    regions = boxes(truth.shape, vol.scales[0].chunk_shape)
    pool = urllib3.PoolManager(maxsize=workers, retries=False)
    base = f"{url}/api/node/{uuid}/{instance}"
    is_seg = truth.dtype == np.uint64
    raw, blocks, per_row = Tally(), Tally(), Tally()
    paths = [
        ReadPath("thin raw", _thin_raw(pool, base, truth.dtype, is_seg, raw), regions, raw.counts),
        ReadPath("connecto", _reader(vol), regions, connecto_counts),
    ]
    if is_seg:
        x = truth.shape[2]
        rows_x = [((a[0], a[1], 0), (b[0], b[1], x)) for a, b in regions if a[2] == 0]
        paths += [
            ReadPath("thin blocks", _thin_blocks(pool, base, blocks), regions, blocks.counts),
            ReadPath("thin blocks/row", _thin_blocks(pool, base, per_row), rows_x, per_row.counts),
        ]
    group = run.compare(name, paths, truth, workers)
    pool.clear()
    return group


# -- report ---------------------------------------------------------------------------------
HEAD = (
    f"{'dataset':22} {'path':16} {'lat ms':>6} {'conc':>4} {'chunks':>6} {'MB/s':>8} "
    f"{'best':>8} {'s':>6} {'requests':>8} {'wire MB':>8} {'ratio':>6} {'q1-q3':>9}  check"
)


def show(row: Row) -> None:
    mark = "ok" if row.verified else "MISMATCH"
    requests = "n/a" if row.requests is None else f"{row.requests:d}"
    wire = "n/a" if row.wire_mb is None else f"{row.wire_mb:.1f}"
    print(
        f"{row.group:22} {row.path:16} {row.latency_ms:6.0f} {row.concurrency:4d} {row.chunks:6d} "
        f"{row.mbps:8.1f} {row.best_mbps:8.1f} {row.seconds:6.2f} {requests:>8} {wire:>8} "
        f"{row.ratio:6.2f} {f'{row.spread[0]:.2f}-{row.spread[1]:.2f}':>9}  {mark}",
        flush=True,
    )


def show_all(rows: list[Row]) -> list[Row]:
    for row in rows:
        show(row)
    return rows


def summary(rows: list[Row], latency_ms: float) -> str:
    parts = []
    for r in rows:
        if r.path == "connecto" and r.latency_ms == latency_ms:
            verdict = (
                "" if r.group.startswith("dvid") else (" ok" if r.ratio >= TARGET else " MISSED")
            )
            parts.append(f"{r.group} {r.ratio:.2f}{verdict}")
    return f"latency {latency_ms:.0f} ms, connecto / reference: " + "; ".join(parts)


def parse_shape(text: str) -> tuple[int, int, int]:
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 3 or any(v <= 0 or v % CHUNK for v in values):
        raise argparse.ArgumentTypeError(f"need z,y,x multiples of {CHUNK}, got {text!r}")
    return values  # type: ignore[return-value]


@dataclass(slots=True)
class Servers:
    """Starts each server for one latency: a child process from its CLI, or in this process."""

    folder: Path
    dvid_dir: Path
    in_process: bool
    local_dvid: Any = None
    """The seeded ``DvidServer`` (``in_process`` only)."""

    def http(self, latency: float) -> ChildServer | LocalServer:
        if self.in_process:
            from napari_connecto.testing.http_server import HttpFolderServer

            return LocalServer(HttpFolderServer(self.folder), latency)
        args = [str(self.folder), "--port", "0", "--latency", repr(latency)]
        log = self.folder.parent / "http_server.log"
        return ChildServer("napari_connecto.testing.http_server", args, log)

    def dvid(self, latency: float) -> ChildServer | LocalServer:
        if self.in_process:
            return LocalServer(self.local_dvid, latency)
        args = ["--port", "0", "--data", str(self.dvid_dir), "--latency", repr(latency)]
        log = self.dvid_dir.parent / "dvid_server.log"
        return ChildServer(
            "napari_connecto.testing.dvid_server", args, log, prefix="DVID test server at"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=parse_shape, default=(256, 512, 512), help="image z,y,x (multiples of 64)"
    )
    parser.add_argument(
        "--seg-shape", type=parse_shape, default=(128, 384, 384), help="segmentation z,y,x (uint64)"
    )
    parser.add_argument("--latency", default="0,50", help="injected latencies, ms")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (medians kept)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="reader threads (default: what the streaming cache allows)",
    )
    parser.add_argument("--skip-dvid", action="store_true")
    parser.add_argument(
        "--server-in-process",
        action="store_true",
        help="run the servers on threads of this process (they share its GIL)",
    )
    parser.add_argument("--quick", action="store_true", help="small volumes, 3 rounds")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: the servers are stopped and the temporary folder removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.quick:
        args.shape, args.seg_shape, args.repeats = (128, 256, 256), (64, 256, 256), 3
    latencies = [float(v) / 1e3 for v in args.latency.split(",")]
    t_start = time.perf_counter()
    image, seg = make_image(args.shape), make_segmentation(args.seg_shape)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        servers = Servers(Path(tmp) / "http", Path(tmp) / "dvid", args.server_in_process)
        servers.folder.mkdir()
        specs = write_datasets(servers.folder, image, seg)
        uuid = ""
        if not args.skip_dvid:
            dvid, uuid = seed_dvid(image, seg, None if args.server_in_process else servers.dvid_dir)
            servers.local_dvid = dvid if args.server_in_process else None
            del dvid
        print(
            f"image {args.shape} uint8 ({image.nbytes / MB:.0f} MB), segmentation "
            f"{args.seg_shape} uint64 ({seg.nbytes / MB:.0f} MB), chunks {CHUNK}^3, "
            f"median of {args.repeats}+ rounds, servers "
            f"{'in this process' if args.server_in_process else 'in child processes (CLI)'}; "
            f"written in {time.perf_counter() - t_start:.1f}s"
        )
        print(HEAD, flush=True)
        for latency in latencies:
            run = Runner(latency, args.repeats, args.concurrency)
            with servers.http(latency) as server:
                rows += show_all(bench_http(specs, run, server.url))
            if not args.skip_dvid:
                with servers.dvid(latency) as server:
                    rows += show_all(bench_dvid(run, server.url, uuid, image, seg))
    print()
    for latency in latencies:
        print(summary(rows, latency * 1e3))
    print(f"total {time.perf_counter() - t_start:.0f}s")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
