"""Seeded network faults for the loopback test servers.

Both :mod:`napari_connecto.testing.http_server` and
:mod:`napari_connecto.testing.dvid_server` answer every request through
:func:`respond`, which first sleeps the injected latency and then, for a drawn
fraction of requests, misbehaves the way real servers and networks do:

``"503"``
    ``503 Service Unavailable`` with a short text body (no ``Retry-After``, so
    clients fall back to their own backoff).
``"stall"``
    Sleep :attr:`ChaosConfig.stall_seconds` before answering (a client whose
    read timeout is shorter gives up and retries).
``"truncate"``
    Send the headers *without* ``Content-Length`` (``Connection: close``), half
    the body, and close: the case where ``requests`` returns half a chunk with
    status 200. ``HEAD`` answers and empty bodies cannot be cut and are sent
    whole (the fault is still counted).
``"reset"``
    Close the socket with ``SO_LINGER`` 0, so the client sees a connection reset.

Faults are drawn from one :class:`random.Random` seeded by the config, under a
lock, so a run with the same seed and the same request order faults the same
requests.

A client that gives up (a read timeout during a stall) or resets its side makes
the server's next write or read fail; :func:`respond` and
:class:`LoopbackHTTPServer` treat that as routine and log it at ``DEBUG``
instead of printing a traceback per connection.
"""

from __future__ import annotations

import logging
import random
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "FAULT_KINDS",
    "Chaos",
    "ChaosConfig",
    "LoopbackHTTPServer",
    "QuietRequestHandler",
    "respond",
]

logger = logging.getLogger(__name__)

FAULT_KINDS: tuple[str, ...] = ("503", "stall", "truncate", "reset")
"""Every fault :func:`respond` can inject."""


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """How a test server misbehaves.

    Raises
    ------
    ValueError
        If the rate is outside 0..1, a delay is negative, or a kind is unknown.
    """

    rate: float = 0.0
    """Fraction of requests (0..1) that get a fault."""
    seed: int = 0
    """Seed of the fault schedule."""
    kinds: tuple[str, ...] = FAULT_KINDS
    """Which faults to draw from, uniformly (any sequence; stored as a tuple)."""
    stall_seconds: float = 2.0
    """How long a ``"stall"`` waits before answering."""
    latency_seconds: float = 0.0
    """Delay before every answer (faulted or not), like a distant server."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"chaos rate must be within 0..1, not {self.rate}")
        if self.stall_seconds < 0 or self.latency_seconds < 0:
            raise ValueError("chaos stall_seconds and latency_seconds must not be negative")
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")


class Chaos:
    """A thread-safe fault schedule with counters of what it injected.

    Parameters
    ----------
    config : ChaosConfig, optional
        Rate, seed, kinds and delays; the default injects nothing.
    """

    def __init__(self, config: ChaosConfig | None = None) -> None:
        self.config = config or ChaosConfig()
        self._random = random.Random(self.config.seed)
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        """How many faults of each kind were injected."""
        self.requests = 0
        """How many requests were answered (faulted or not)."""

    def draw(self) -> str | None:
        """The fault for the next request, or ``None`` to answer normally.

        Returns
        -------
        str or None
            One of :attr:`ChaosConfig.kinds`, or ``None``.
        """
        with self._lock:
            self.requests += 1
            if self.config.rate <= 0 or self._random.random() >= self.config.rate:
                return None
            kind = self._random.choice(self.config.kinds)
            self.injected[kind] += 1
            return kind


def respond(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    *,
    content_type: str = "application/octet-stream",
    headers: Mapping[str, str] | None = None,
    chaos: Chaos | None = None,
    head: bool = False,
    on_body: Callable[[int], None] | None = None,
) -> int:
    """Send one complete response, after the latency and perhaps a fault.

    Parameters
    ----------
    handler : BaseHTTPRequestHandler
        The request being answered (``protocol_version`` ``HTTP/1.1`` keeps
        connections alive between requests).
    status : int
        HTTP status of a normal answer.
    body : bytes
        Body of a normal answer.
    content_type : str
        ``Content-Type`` of a normal answer.
    headers : mapping, optional
        Extra headers of a normal answer (a ``Content-Length`` among them is
        ignored: it is always computed from ``body``).
    chaos : Chaos, optional
        Fault schedule; ``None`` answers normally.
    head : bool
        Answer a ``HEAD`` request: headers only.
    on_body : callable, optional
        Called with the number of body bytes about to be written, *before* they
        are, so that a counter is up to date by the time the client has them.

    Returns
    -------
    int
        How many body bytes were written (0 for ``HEAD``, a reset, or a client
        that went away).
    """
    fault = None
    if chaos is not None:
        if chaos.config.latency_seconds > 0:
            time.sleep(chaos.config.latency_seconds)
        fault = chaos.draw()
    if fault == "reset":
        _reset(handler)
        return 0
    if fault == "503":
        status, body, content_type, headers = 503, b"Server busy (chaos)", "text/plain", None
    elif fault == "stall" and chaos is not None:
        time.sleep(chaos.config.stall_seconds)
    cut = fault == "truncate" and not head and len(body) > 0
    try:
        return _send(
            handler, status, body, content_type, headers, head=head, truncate=cut, on_body=on_body
        )
    except ConnectionError as error:
        # The client gave up (e.g. its read timeout fired during a stall).
        logger.debug("client %s went away: %s", handler.client_address, error)
        handler.close_connection = True
        return 0


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None,
    *,
    head: bool,
    truncate: bool,
    on_body: Callable[[int], None] | None,
) -> int:
    """Write status line, headers and (all or half of) the body; return body bytes written."""
    _no_delay(handler.connection)
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        if name.lower() != "content-length":
            handler.send_header(name, value)
    if truncate:
        handler.send_header("Connection", "close")
        handler.end_headers()
        part = body[: len(body) // 2]
        if on_body is not None:
            on_body(len(part))
        handler.wfile.write(part)
        handler.wfile.flush()
        handler.close_connection = True
        return len(part)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if head:
        return 0
    if on_body is not None:
        on_body(len(body))
    handler.wfile.write(body)
    return len(body)


def _no_delay(sock: socket.socket) -> None:
    """Set ``TCP_NODELAY``: headers and body are two writes, Nagle would delay the second."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as error:
        logger.debug("cannot set TCP_NODELAY: %s", error)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Abort the connection so that the client sees ``ECONNRESET``.

    The socket is only marked closed here; the descriptor is released (and the
    RST sent) when the handler's ``finish()`` closes its file objects, so
    nothing the handler does afterwards touches a dead descriptor.
    """
    sock: socket.socket = handler.connection
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError as error:
        logger.debug("cannot set SO_LINGER for a reset: %s", error)
    handler.close_connection = True
    try:
        sock.close()
    except OSError as error:
        logger.debug("closing a reset connection failed: %s", error)


class QuietRequestHandler(BaseHTTPRequestHandler):
    """An ``HTTP/1.1`` keep-alive request handler that logs through :mod:`logging`.

    Access lines go to ``DEBUG`` instead of ``stderr``; an idle keep-alive
    connection is dropped after :attr:`timeout` seconds; ``TCP_NODELAY`` is set,
    as headers and body are separate writes, which Nagle's algorithm and the
    client's delayed ACK would otherwise hold back ~40 ms per keep-alive request.
    """

    protocol_version = "HTTP/1.1"
    timeout = 60.0
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """Log one access or error line at ``DEBUG``."""
        logger.debug("%s %s", self.address_string(), format % args)


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that tolerates the faults it injects.

    Handler threads are daemons; connection errors (a client reset or timed
    out) are logged at ``DEBUG`` instead of printed; :meth:`close_connections`
    drops every open keep-alive connection so that stopping really stops.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        server_address: tuple[str, int],
        handler_class: type[BaseHTTPRequestHandler],
    ) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(server_address, handler_class)

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup ``HTTPServer`` does (slow offline)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        """Track the connection, then serve it on its own thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        """Forget the connection, then shut it down and close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection (their handler threads then exit)."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as error:
                logger.debug("connection already closed: %s", error)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a connection error at ``DEBUG``, anything else with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            logger.debug("connection from %s ended: %s", client_address, error)
        else:
            logger.error("error serving %s", client_address, exc_info=True)
