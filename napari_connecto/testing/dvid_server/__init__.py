"""A protocol-faithful DVID server for tests: in memory, on loopback, with fault injection.

Implements the parts of DVID's HTTP API (``/api/...``) that connectomics
clients use: server and repo info, versioned nodes (commit, newversion,
branch, locking), and the ``keyvalue``, ``uint8blk``, ``labelmap`` and
``annotation`` data types with copy-on-write versioning. Every response passes
through :func:`napari_connecto.testing.chaos.respond`, so latency and faults
(503, stalls, truncated bodies, resets) apply to all endpoints.

Use it from Python::

    from napari_connecto.testing.dvid_server import DvidServer

    with DvidServer() as server:
        uuid = server.create_repo("demo")
        server.create_instance(uuid, "labelmap", "segmentation", MaxDownresLevel=2)

or run ``python -m napari_connecto.testing.dvid_server --port 8000``.
"""

from __future__ import annotations

from napari_connecto.testing.chaos import Chaos, ChaosConfig
from napari_connecto.testing.dvid_server.cli import main, serve
from napari_connecto.testing.dvid_server.server import DvidServer, SeedError

__all__ = ["Chaos", "ChaosConfig", "DvidServer", "SeedError", "main", "serve"]
