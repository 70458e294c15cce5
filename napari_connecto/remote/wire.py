"""HTTP/1.1 on one keep-alive socket: requests written, answers framed and read.

:class:`Connection` is the part of an HTTP client that :mod:`http.client`
and urllib3 spend most of a small GET on (about 90 us and 250 us of Python per
request here, against about 40 us for this module): one request is written
with a single ``sendall``, and an answer's head is read line by line from a
:class:`~napari_connecto.remote.stream.SocketStream`, its headers into a plain
case-insensitive mapping. Framing follows RFC 9112 section 6:

- no body after ``HEAD`` and for ``1xx``, ``204`` and ``304``; interim
  ``1xx`` answers are skipped;
- ``Transfer-Encoding`` ending in ``chunked`` is decoded, its framing checked
  (a cut stream raises); any other transfer coding, and an answer with neither
  it nor ``Content-Length``, is read until the server closes;
- ``Content-Length`` bodies must be complete (:class:`BodyError` otherwise);
  conflicting ``Content-Length`` values are refused.

A connection the server closed before any byte of an answer raises
:class:`ClosedError` (a :class:`ConnectionResetError`), which
:mod:`~napari_connecto.remote.connections` retries once on a fresh connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from napari_connecto.remote.stream import SocketStream

if TYPE_CHECKING:
    import ssl

__all__ = [
    "BodyError",
    "BodyTooLargeError",
    "ClosedError",
    "Connection",
    "Head",
    "Headers",
    "ProtocolError",
    "build_request",
]

_MAX_LINE = 65536
_BUFFER = _MAX_LINE + 2**14
_MAX_HEADERS = 128
_STREAM_PART = 2**20
_SMALL_BODY = 2**16
_HEX = b"0123456789abcdefABCDEF"
_NO_BODY = frozenset({204, 304})
_BAD_TARGET = frozenset(map(chr, [*range(0x21), 0x7F]))


class ProtocolError(OSError):
    """An answer that is not well-formed HTTP/1.x."""


class ClosedError(ConnectionResetError):
    """The server closed the connection before sending any answer."""


class BodyError(ValueError):
    """A body shorter than its framing says, or one that does not decode."""


class BodyTooLargeError(ValueError):
    """A body (as sent or decoded) larger than allowed."""


class Headers(Mapping[str, str]):
    """Response headers: names case-insensitive, repeated fields joined with ``", "``."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, tuple[str, str]]) -> None:
        self._fields = fields  # lower-case name -> (name as sent, value)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The value of ``name`` (any case), or ``default``."""
        field = self._fields.get(name.lower())
        return default if field is None else field[1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True, slots=True)
class Head:
    """An answer's status line and headers, and how its body is framed."""

    status: int
    """HTTP status."""
    reason: str
    """Reason phrase."""
    headers: Headers
    """Header fields."""
    length: int | None
    """Body bytes by ``Content-Length`` (0 where there is no body); ``None`` otherwise."""
    chunked: bool
    """Whether the body is in chunked framing."""
    will_close: bool
    """Whether the server closes the connection after this answer."""


def build_request(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """A request's bytes: request line, ``Host``, ``headers``, ``Content-Length``, small body.

    A body of up to 64 KiB is appended (one ``sendall``); a larger one is not
    (:meth:`Connection.send` writes it after the head, without a copy).

    Raises
    ------
    ValueError
        For a target with spaces or control characters, or a header with a line break.
    """
    if not target.isascii() or not _BAD_TARGET.isdisjoint(target):
        raise ValueError("spaces or control characters in the URL")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise ValueError(f"invalid header {name!r}")
        lines.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body and len(body) <= _SMALL_BODY else head


class Connection:
    """One HTTP/1.1 connection: a connected socket (TLS if given a context) and its reader.

    Parameters
    ----------
    host, port
        Where to connect.
    connect_timeout, read_timeout : float
        Seconds to connect (with the TLS handshake), then to wait for bytes.
    ssl_context : ssl.SSLContext, optional
        Wrap the socket in TLS, checking the certificate for ``host``.

    Raises
    ------
    OSError
        If no connection can be opened (``TimeoutError`` past the timeout,
        ``ssl.SSLError`` for a failed handshake).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            self._stream = SocketStream(sock, read_timeout, _BUFFER)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket | None = sock

    @property
    def pending(self) -> bool:
        """Whether bytes beyond the last answer were received (the connection is not clean)."""
        return self._stream.buffered > 0

    def peer_sent_something(self) -> bool:
        """Whether the server sent anything unasked (bytes, its end, an error): then close it."""
        return self._stream.peer_sent_something()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            self._stream.close()

    def send(self, request: bytes, body: bytes | None = None) -> None:
        """Write one whole request: ``request`` from :func:`build_request`, and ``body``."""
        if self.sock is None:
            raise ClosedError("connection already closed")
        self._stream.sendall(request)
        if body is not None and len(body) > _SMALL_BODY:
            self._stream.sendall(body)

    def read_head(self, method: str) -> Head:
        """The next final answer's head (interim ``1xx`` skipped).

        Raises
        ------
        ClosedError
            If the server closed the connection before the first byte.
        ProtocolError
            If the answer is malformed.
        """
        while True:
            version, status, reason = self._status_line()
            headers = self._header_fields()
            if not 100 <= status < 200 or status == 101:
                break
        return _framing(method, version, status, reason, headers)

    def _line(self) -> bytes:
        line = self._stream.readline(_MAX_LINE)
        if len(line) > _MAX_LINE:
            raise ProtocolError("header line too long")
        return line

    def _status_line(self) -> tuple[str, int, str]:
        line = self._line()
        if not line:
            raise ClosedError("the server closed the connection without answering")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not _digits(code):
            raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
        return version, int(code), reason.strip()

    def _header_fields(self) -> dict[str, tuple[str, str]]:
        fields: dict[str, tuple[str, str]] = {}
        last = ""
        for _ in range(_MAX_HEADERS):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return fields
            if not line:
                raise ProtocolError("connection closed within the headers")
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last:  # obsolete line folding
                name, value = fields[last]
                fields[last] = (name, f"{value} {text.strip()}")
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            last, value = name.lower(), value.strip()
            known = fields.get(last)
            fields[last] = (name, value if known is None else f"{known[1]}, {value}")
        raise ProtocolError(f"more than {_MAX_HEADERS} header lines")

    # -- bodies -----------------------------------------------------------------------
    def read_exact(self, length: int, *, own_buffer: bool = False) -> bytes:
        """A body of ``length`` bytes (into a ``bytearray`` of its own with ``own_buffer``).

        Raises
        ------
        BodyError
            If the connection ends first.
        """
        buffer = bytearray(length)
        with memoryview(buffer) as view:
            got = 0
            while got < length:
                n = self._stream.recv_into(view[got:])
                if not n:
                    raise BodyError(f"body ended after {got} of {length} bytes")
                got += n
        return buffer if own_buffer else bytes(buffer)  # type: ignore[return-value]

    def read_chunked(self, max_bytes: int) -> bytes:
        """A chunked body, its framing checked, at most ``max_bytes``.

        Raises
        ------
        BodyError
            If the framing is cut or malformed.
        BodyTooLargeError
            If the body is larger than ``max_bytes``.
        """
        parts, total = [], 0
        while True:
            line = self._line()
            digits = line.split(b";", 1)[0].strip()
            if not digits or digits.lstrip(_HEX):
                raise BodyError(f"bad chunk size line {line[:40]!r}")
            size = int(digits, 16)
            if size == 0:
                break
            total += size
            if total > max_bytes:
                raise BodyTooLargeError("answer is larger than allowed")
            parts.append(self.read_exact(size))
            if self._line() not in (b"\r\n", b"\n"):
                raise BodyError("chunk not followed by a line end")
        self._header_fields()  # the trailer section, ignored
        return b"".join(parts)

    def read_to_close(self, max_bytes: int) -> bytes:
        """A body ended by the server closing the connection, at most ``max_bytes``.

        Raises
        ------
        BodyTooLargeError
            If the body is larger than ``max_bytes``.
        """
        parts, total = [], 0
        part = bytearray(_STREAM_PART)
        with memoryview(part) as view:
            while n := self._stream.recv_into(view):
                total += n
                if total > max_bytes:
                    raise BodyTooLargeError("answer is larger than allowed")
                parts.append(bytes(view[:n]))
        return b"".join(parts)


def _framing(
    method: str, version: str, status: int, reason: str, fields: dict[str, tuple[str, str]]
) -> Head:
    """How the body of an answer is delimited (RFC 9112 section 6.3)."""
    headers = Headers(fields)
    tokens = {t.strip().lower() for t in (headers.get("connection") or "").split(",")}
    keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    if method == "HEAD" or status in _NO_BODY or 100 <= status < 200:
        return Head(status, reason, headers, 0, chunked=False, will_close=not keep)
    coding = headers.get("transfer-encoding")
    if coding is not None:
        codings = [c.strip().lower() for c in coding.split(",") if c.strip()]
        if codings != ["chunked"]:  # none asked for (no TE sent): not undone, so refused
            raise ProtocolError(f"unsupported Transfer-Encoding {coding[:40]!r}")
        # with Content-Length too, the message may be smuggled: close after it (RFC 9112 6.1)
        closing = not keep or "content-length" in headers
        return Head(status, reason, headers, None, chunked=True, will_close=closing)
    length = headers.get("content-length")
    if length is None:
        return Head(status, reason, headers, None, chunked=False, will_close=True)
    values = {v.strip() for v in length.split(",")}
    if len(values) != 1 or not _digits(value := values.pop()):
        raise ProtocolError(f"bad Content-Length {length[:40]!r}")
    return Head(status, reason, headers, int(value), chunked=False, will_close=not keep)


def _digits(text: str) -> bool:
    """Whether ``text`` is ASCII digits only (``str.isdigit`` accepts ``"²"`` too)."""
    return text.isascii() and text.isdigit()
