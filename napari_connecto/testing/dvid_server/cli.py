"""Command line of the DVID test server.

``python -m napari_connecto.testing.dvid_server --port N [--data DIR]
[--chaos RATE --seed S --latency SECONDS]`` serves until interrupted, and
writes one line ``DVID test server at http://127.0.0.1:PORT`` to stdout once it
listens, so a parent process can read the URL (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from napari_connecto.testing.chaos import FAULT_KINDS, ChaosConfig
from napari_connecto.testing.dvid_server.server import DvidServer

__all__ = ["main", "serve"]

_log = logging.getLogger(__name__)


def serve(
    port: int = 0,
    data_dir: str | Path | None = None,
    chaos: ChaosConfig | None = None,
    throttle_limit: int = 1,
    stop: threading.Event | None = None,
) -> None:
    """Run a :class:`DvidServer` until ``stop`` is set (or SIGINT/SIGTERM in the main thread).

    Parameters
    ----------
    port : int
        Port on 127.0.0.1 (0 picks a free one).
    data_dir : str or Path, optional
        Directory to load state from and save it to on exit.
    chaos : ChaosConfig, optional
        Fault injection for every response.
    throttle_limit : int
        Concurrent ``throttle=true`` operations allowed.
    stop : threading.Event, optional
        Set it to stop serving; by default one is created and set by the signals.
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
    server = DvidServer(chaos, throttle_limit, port=port, data_dir=data_dir)
    url = server.start()
    sys.stdout.write(f"DVID test server at {url}\n")
    sys.stdout.flush()
    try:
        stop.wait()
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and serve; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m napari_connecto.testing.dvid_server",
        description="Protocol-faithful in-memory DVID server for tests.",
    )
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--data", type=Path, default=None, help="load/save state in this directory")
    parser.add_argument("--chaos", type=float, default=0.0, help="fraction of faulted responses")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    parser.add_argument("--latency", type=float, default=0.0, help="delay before every answer (s)")
    parser.add_argument(
        "--faults", default=",".join(FAULT_KINDS), help=f"fault kinds, from {','.join(FAULT_KINDS)}"
    )
    parser.add_argument("--stall", type=float, default=2.0, help="stall fault duration (s)")
    parser.add_argument(
        "--throttle", type=int, default=1, help="max concurrent throttled operations"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr)
    try:
        chaos = ChaosConfig(
            rate=args.chaos,
            seed=args.seed,
            kinds=tuple(k for k in args.faults.split(",") if k),
            stall_seconds=args.stall,
            latency_seconds=args.latency,
        )
    except ValueError as exc:
        parser.error(str(exc))
    serve(args.port, args.data, chaos, args.throttle)
    return 0
