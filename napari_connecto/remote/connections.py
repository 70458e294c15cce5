"""Keep-alive HTTP/1.1 connections, pooled per origin.

:class:`OriginPools` hands out one :class:`ConnectionPool` per ``(scheme,
host:port)``; a pool lends :class:`~napari_connecto.remote.wire.Connection`
objects (TLS with the default SSL context for ``https``) to one request at a
time and takes them back once their answer was read to the end. This replaces
urllib3, whose per-request bookkeeping cost more than the rest of a GET on
loopback; what it did for us is kept:

- a connection is opened within the *connect* timeout and then reads with the
  *read* timeout (:class:`ConnectError` tells a failure to connect from one
  after);
- a pool never blocks: a request finding no idle connection opens one, and at
  most ``maxsize`` idle connections are kept (the rest are closed when given
  back);
- a pooled connection the server has closed is dropped when taken (its socket
  is readable: end of stream) and, for an idempotent request, a reused
  connection that fails before the first byte of an answer (the server closed
  it meanwhile) is retried once, at once, on a fresh connection
  (:attr:`Exchange.stale`). A pooled connection holding bytes beyond its last
  answer (a server sending more than it framed) is dropped too: read as the
  next answer, they would be wrong data.

Everything here is thread-safe; the idle lists are guarded by one lock per pool.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from napari_connecto.remote.wire import Connection, build_request

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

    from napari_connecto.remote.wire import Head

__all__ = ["ConnectError", "ConnectionPool", "Exchange", "OriginPools", "split_url"]

Origin = tuple[str, str]
"""``(scheme, netloc)``, the scheme lower case."""


class ConnectError(Exception):
    """No connection could be opened (refused, unresolvable, timed out, TLS failed).

    Parameters
    ----------
    cause : OSError
        What :mod:`socket` or :mod:`ssl` raised.
    """

    def __init__(self, cause: OSError) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.timed_out = isinstance(cause, TimeoutError)
        """Whether the connect timeout expired."""


@dataclass(slots=True)
class Exchange:
    """One request sent and its answer's head received; the body is still to be read."""

    head: Head
    """The answer's status, headers and framing."""
    connection: Connection
    """The connection it came on; give it back with :meth:`ConnectionPool.release`."""
    stale: bool
    """Whether a reused connection failed first and the request was sent again on a fresh one."""


def split_url(url: str) -> tuple[Origin, str] | None:
    """``((scheme, netloc), target)`` of an ``http(s)`` URL, fragment cut; ``None`` otherwise."""
    scheme, sep, rest = url.partition("://")
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, target = rest[:end], rest[end:].split("#", 1)[0]  # fragments are not sent
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https") or not netloc.rpartition("@")[2]:
        return None
    return (scheme, netloc), target if target.startswith("/") else "/" + target


class ConnectionPool:
    """Keep-alive connections to one origin.

    Parameters
    ----------
    origin : (str, str)
        ``(scheme, netloc)``; a user name in ``netloc`` is ignored.
    maxsize : int
        Idle connections kept at most.
    connect_timeout, read_timeout : float
        Seconds to open a connection (TLS handshake included), and to wait for
        the next bytes of an answer.
    ssl_context : ssl.SSLContext, optional
        For ``https``; the default context (system certificates, host names
        checked) if not given.

    Raises
    ------
    ValueError
        If ``netloc`` has no host or a bad port.
    """

    def __init__(
        self,
        origin: Origin,
        *,
        maxsize: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin = origin
        self.maxsize = max(0, maxsize)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._authority = origin[1].rpartition("@")[2]
        self._host, self._port = _host_port(self._authority, 443 if origin[0] == "https" else 80)
        if origin[0] == "https" and ssl_context is None:
            import ssl

            ssl_context = ssl.create_default_context()
        self._ssl_context = ssl_context if origin[0] == "https" else None
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def idle(self) -> int:
        """How many connections wait in the pool."""
        return len(self._idle)

    def exchange(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        idempotent: bool = True,
    ) -> Exchange:
        """Send one request and read the head of its answer.

        Raises
        ------
        ValueError
            If the target or a header cannot be sent (spaces, line breaks).
        ConnectError
            If no connection could be opened.
        OSError
            If sending or receiving failed (``TimeoutError`` for the read
            timeout, :class:`~napari_connecto.remote.wire.ProtocolError` for a
            malformed answer); the connection is then closed.
        """
        request = build_request(method, target, self._authority, headers, body)
        connection, reused = self._take()
        try:
            connection.send(request, body)
            head = connection.read_head(method)
        except ConnectionError:  # reset, broken pipe, closed before any answer
            connection.close()
            if not (reused and idempotent):
                raise
            connection = self._open()
            try:
                connection.send(request, body)
                head = connection.read_head(method)
            except BaseException:
                connection.close()
                raise
            return Exchange(head, connection, stale=True)
        except BaseException:
            connection.close()
            raise
        return Exchange(head, connection, stale=False)

    def release(self, connection: Connection, *, reusable: bool) -> None:
        """Give a connection back: kept if ``reusable`` and there is room, else closed.

        ``reusable`` means its last answer was read to the end and the server
        did not ask to close.
        """
        if reusable and connection.sock is not None:
            with self._lock:
                if not self._closed and len(self._idle) < self.maxsize:
                    self._idle.append(connection)
                    return
        connection.close()

    def close(self) -> None:
        """Close the idle connections; those lent out are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> tuple[Connection, bool]:
        """A live idle connection (most recently used first), else a new one; and if reused."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._open(), False
            if _alive(connection):
                return connection, True
            connection.close()

    def _open(self) -> Connection:
        """A new connection, connected, reading with the read timeout."""
        try:
            return Connection(
                self._host,
                self._port,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                ssl_context=self._ssl_context,
            )
        except OSError as exc:
            raise ConnectError(exc) from None


def _host_port(authority: str, default: int) -> tuple[str, int]:
    """Host and port of ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = authority.partition(":")
    if not host or (port and not port.isdigit()) or int(port or default) > 65535:
        raise ValueError(f"bad host or port in {authority!r}")
    return host, int(port or default)


def _alive(connection: Connection) -> bool:
    """Whether an idle connection can be used: open, nothing buffered, nothing to read.

    Anything readable (end of stream, or bytes the server sent beyond its last
    answer) makes it unusable.
    """
    sock = connection.sock
    if sock is None or connection.pending:
        return False
    try:
        return not connection.peer_sent_something()
    except (OSError, ValueError):  # closed meanwhile
        return False


class OriginPools:
    """One :class:`ConnectionPool` per origin, the oldest closed past ``max_origins``.

    Parameters
    ----------
    maxsize, connect_timeout, read_timeout
        As :class:`ConnectionPool`.
    max_origins : int
        Pools kept at most.
    """

    def __init__(
        self, *, maxsize: int, connect_timeout: float, read_timeout: float, max_origins: int = 16
    ) -> None:
        self.maxsize = maxsize
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_origins = max_origins
        self._pools: dict[Origin, ConnectionPool] = {}
        self._lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None

    def pool(self, origin: Origin) -> ConnectionPool:
        """The pool of ``origin``, made on first use."""
        pool = self._pools.get(origin)  # lock-free: the dict is replaced, never changed
        if pool is not None:
            return pool
        with self._lock:
            pool = self._pools.get(origin)
            if pool is None:
                if origin[0] == "https" and self._ssl_context is None:
                    import ssl

                    self._ssl_context = ssl.create_default_context()
                pool = ConnectionPool(
                    origin,
                    maxsize=self.maxsize,
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                    ssl_context=self._ssl_context,
                )
                pools = dict(self._pools)
                pools[origin] = pool
                while len(pools) > self.max_origins:
                    pools.pop(next(iter(pools))).close()
                self._pools = pools
        return pool

    def close(self) -> None:
        """Close every pool."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
