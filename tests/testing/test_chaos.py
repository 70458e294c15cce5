"""The seeded fault schedule and ``respond`` on a bare loopback server."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from napari_connecto.testing.chaos import (
    FAULT_KINDS,
    Chaos,
    ChaosConfig,
    LoopbackHTTPServer,
    QuietRequestHandler,
    respond,
)

BODY = bytes(range(256)) * 40
TIMEOUT = (2.0, 5.0)


# -- the schedule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": -0.1},
        {"rate": 1.5},
        {"kinds": ()},
        {"kinds": ("503", "explode")},
        {"stall_seconds": -1.0},
        {"latency_seconds": -0.5},
    ],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ChaosConfig(**kwargs)


def test_config_defaults_and_kinds_as_tuple() -> None:
    assert ChaosConfig().rate == 0.0
    assert ChaosConfig().kinds == FAULT_KINDS
    config = ChaosConfig(kinds=["503", "reset"])  # type: ignore[arg-type]
    assert config.kinds == ("503", "reset")
    hash(config)  # frozen and hashable even when given a list


def test_rate_zero_never_faults_and_rate_one_always_does() -> None:
    quiet = Chaos()
    assert [quiet.draw() for _ in range(200)] == [None] * 200
    assert quiet.requests == 200 and not quiet.injected
    loud = Chaos(ChaosConfig(rate=1.0, kinds=("503", "reset")))
    draws = [loud.draw() for _ in range(200)]
    assert None not in draws and set(draws) == {"503", "reset"}
    assert sum(loud.injected.values()) == 200 == loud.requests
    assert loud.injected == Counter(draws)


def test_same_seed_same_schedule_other_seed_differs() -> None:
    config = ChaosConfig(rate=0.4, seed=1234)
    one, two = Chaos(config), Chaos(config)
    first = [one.draw() for _ in range(300)]
    assert first == [two.draw() for _ in range(300)]
    other = Chaos(ChaosConfig(rate=0.4, seed=4321))
    assert first != [other.draw() for _ in range(300)]


def test_rate_is_roughly_the_fraction_faulted() -> None:
    chaos = Chaos(ChaosConfig(rate=0.25, seed=3))
    faults = sum(chaos.draw() is not None for _ in range(2000))
    assert 400 < faults < 600  # seeded, so this is one fixed number


def test_draw_is_thread_safe() -> None:
    chaos = Chaos(ChaosConfig(rate=0.5, seed=9))
    with ThreadPoolExecutor(8) as pool:
        draws = list(pool.map(lambda _: chaos.draw(), range(4000)))
    assert chaos.requests == 4000
    assert sum(chaos.injected.values()) == sum(d is not None for d in draws)


# -- respond on a real socket ------------------------------------------------------------

_state: dict[str, Chaos | None] = {"chaos": None}
_sent: list[int] = []
_announced: list[int] = []


class _Handler(QuietRequestHandler):
    def do_GET(self) -> None:
        extra = {"X-Test": "yes", "Content-Length": "999999"}  # must be ignored
        chaos = _state["chaos"]
        _sent.append(
            respond(self, 200, BODY, headers=extra, chaos=chaos, on_body=_announced.append)
        )

    def do_HEAD(self) -> None:
        _sent.append(respond(self, 200, BODY, chaos=_state["chaos"], head=True))


class _PlainHandler(BaseHTTPRequestHandler):
    """A handler on the standard library's own server, as other helpers may write."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        respond(self, 200, BODY, chaos=_state["chaos"])

    def log_message(self, format: str, *args: object) -> None:
        pass


def _eventually(predicate: Callable[[], bool], seconds: float = 2.0) -> bool:
    """Poll ``predicate`` (handlers finish after the client has its answer)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    _sent.clear()
    _announced.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        _state["chaos"] = None
        server.shutdown()
        if isinstance(server, LoopbackHTTPServer):
            server.close_connections()
        server.server_close()
        thread.join(5)


@pytest.fixture
def url() -> Iterator[str]:
    yield from _serve(LoopbackHTTPServer(("127.0.0.1", 0), _Handler))


@pytest.fixture
def plain_url() -> Iterator[str]:
    yield from _serve(ThreadingHTTPServer(("127.0.0.1", 0), _PlainHandler))


def test_normal_answer_counts_bytes_and_ignores_given_length(url: str) -> None:
    with requests.Session() as session:
        response = session.get(url, timeout=TIMEOUT)
        head = session.head(url, timeout=TIMEOUT)
    assert response.status_code == 200 and response.content == BODY
    assert response.headers["Content-Length"] == str(len(BODY))
    assert response.headers["X-Test"] == "yes"
    assert _announced == [len(BODY)]  # reported before the write, so no waiting needed
    assert head.headers["Content-Length"] == str(len(BODY)) and head.content == b""
    assert _eventually(lambda: len(_sent) == 2)
    assert _sent == [len(BODY), 0]


def test_truncate_sends_half_and_counts_it(url: str) -> None:
    _state["chaos"] = Chaos(ChaosConfig(rate=1.0, kinds=("truncate",)))
    response = requests.get(url, timeout=TIMEOUT)
    assert response.status_code == 200  # the trap: no error from requests
    assert "Content-Length" not in response.headers
    assert response.content == BODY[: len(BODY) // 2]
    assert _announced == [len(BODY) // 2]
    assert _eventually(lambda: len(_sent) == 1)
    assert _sent == [len(BODY) // 2]


@pytest.mark.parametrize("server_kind", ["loopback", "plain"])
def test_reset_and_stall_print_no_tracebacks(
    server_kind: str,
    url: str,
    plain_url: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = url if server_kind == "loopback" else plain_url
    for kind in ("reset", "stall"):
        _state["chaos"] = Chaos(ChaosConfig(rate=1.0, kinds=(kind,), stall_seconds=0.15))
        for _ in range(2):
            with pytest.raises(requests.RequestException):
                requests.get(target, timeout=(2.0, 0.1))
    time.sleep(0.25)  # let the stalled handlers wake up and write to gone clients
    _state["chaos"] = None
    assert requests.get(target, timeout=TIMEOUT).content == BODY
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_client_reset_on_keep_alive_is_not_an_error(
    url: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    sock = socket.create_connection((host, int(port)), timeout=2)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /half")  # then abort mid-request
    time.sleep(0.05)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    time.sleep(0.1)
    assert requests.get(url, timeout=TIMEOUT).content == BODY
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_close_connections_ends_keep_alive() -> None:
    server = LoopbackHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        sock = socket.create_connection(server.server_address, timeout=2)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while len(received) < len(BODY):
            received += sock.recv(65536)
        server.close_connections()
        sock.settimeout(2)
        rest = b""
        while chunk := sock.recv(65536):  # EOF, not a hang
            rest += chunk
        sock.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
