"""Loopback HTTP servers for the remote tests, and a transport tuned to fail fast."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from napari_connecto.remote.http import HttpConfig, configure
from napari_connecto.testing.chaos import ChaosConfig
from napari_connecto.testing.http_server import HttpFolderServer
from tests.backends.contract import ContractCase

FAST = {"read_timeout": 1.0, "backoff_base": 0.01, "backoff_max": 0.1, "retries": 16}


@pytest.fixture(autouse=True)
def fast_http() -> Iterator[None]:
    """Short timeouts and backoffs (stalls of the chaos servers last longer than the timeout)."""
    configure(**FAST)
    yield
    configure(**dataclasses.asdict(HttpConfig()))


@pytest.fixture
def serve() -> Iterator[Callable[..., HttpFolderServer]]:
    """Start an :class:`HttpFolderServer` on a folder; every one is stopped afterwards."""
    servers: list[HttpFolderServer] = []

    def start(root: Path, chaos: ChaosConfig | None = None, **kw) -> HttpFolderServer:
        server = HttpFolderServer(root, chaos, **kw)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def over_http(case: ContractCase, root: Path, url: str) -> ContractCase:
    """The same case, its source read from ``url`` (which serves ``root``); read-only."""
    source = case.source.replace(str(root), url)
    assert source != case.source, "the case's source is not below the served root"
    return dataclasses.replace(case, source=source, writable=False)
