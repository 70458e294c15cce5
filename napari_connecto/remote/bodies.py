"""Reading one HTTP answer's body: every byte counted, size capped, content decoded.

:func:`read_body` reads the body of an answer whose head was read. A body of
stated length (``Content-Length``) that ends early, a chunked body whose
framing is cut, a ``gzip``/``deflate`` stream that is corrupt or cut, all raise
(:class:`~napari_connecto.remote.wire.BodyError`, or the ``OSError`` of the
socket), so that no caller ever sees half a body as a whole one. A body of
neither (ended by the server closing the connection) cannot be checked here: it
is returned as *unverified*.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from napari_connecto.remote.wire import BodyError, BodyTooLargeError

if TYPE_CHECKING:
    from napari_connecto.remote.wire import Connection, Head

__all__ = ["Body", "decode_content", "read_body"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Body:
    """One body read to its end."""

    data: bytes
    """The bytes, content-decoded (a ``bytearray`` of its own when read into one)."""
    verified: bool
    """Whether its length was checked against ``Content-Length`` or chunked framing."""


def read_body(
    connection: Connection, head: Head, max_bytes: int, *, own_buffer: bool = False
) -> Body:
    """The whole body of the answer ``head`` on ``connection``, refusing more than ``max_bytes``.

    With ``own_buffer``, a plain body of stated length is read straight into a
    ``bytearray`` of its own (no intermediate ``bytes``).

    Raises
    ------
    BodyTooLargeError
        If the body, sent or decoded, is larger than ``max_bytes``.
    BodyError
        If the body ends before its framing says, or does not decode.
    OSError
        From the connection (``TimeoutError`` for the read timeout).
    """
    encoding = (head.headers.get("content-encoding") or "").strip()
    if head.length is not None:
        if head.length > max_bytes:
            raise BodyTooLargeError(f"answer of {head.length} bytes is larger than allowed")
        data = connection.read_exact(head.length, own_buffer=own_buffer and not encoding)
    elif head.chunked:
        data = connection.read_chunked(max_bytes)
    else:
        data = connection.read_to_close(max_bytes)
    if encoding and data:
        data = decode_content(data, encoding, max_bytes)
    return Body(data, verified=head.length is not None or head.chunked)


def decode_content(data: bytes, encoding: str, max_bytes: int) -> bytes:
    """``data`` with its ``Content-Encoding`` (``gzip``, ``deflate``, ``br``) undone.

    Codings are undone last first; ``identity`` and unknown ones are left as
    they are (``br`` too where the :mod:`brotli` module is missing).

    Raises
    ------
    BodyError
        If a stream is corrupt or cut short.
    BodyTooLargeError
        If the decoded data is larger than ``max_bytes``.
    """
    for coding in reversed([c.strip().lower() for c in encoding.split(",")]):
        if coding in ("gzip", "x-gzip"):
            data = _gunzip(data, max_bytes)
        elif coding == "deflate":
            data = _inflate_deflate(data, max_bytes)
        elif coding == "br":
            data = _unbrotli(data, max_bytes)
    return data


def _inflate(data: bytes, wbits: int, room: int) -> tuple[bytes, bytes]:
    """One complete zlib/gzip/raw deflate stream: (its data, what follows it)."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, room + 1)
    except zlib.error as exc:
        raise BodyError(f"corrupt compressed body ({exc})") from None
    if len(out) > room:
        raise BodyTooLargeError("decoded answer is larger than allowed")
    if not inflater.eof:
        raise BodyError("compressed body ends before its stream does")
    return out, inflater.unused_data


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """Every gzip member of ``data`` (anything after the last one is ignored)."""
    parts: list[bytes] = []
    total = 0
    while True:
        out, data = _inflate(data, 16 + zlib.MAX_WBITS, max_bytes - total)
        parts.append(out)
        total += len(out)
        if not data.startswith(_GZIP_MAGIC):
            return b"".join(parts)


def _inflate_deflate(data: bytes, max_bytes: int) -> bytes:
    """``deflate`` as sent: zlib-wrapped as the standard says, or raw as some servers do."""
    try:
        return _inflate(data, zlib.MAX_WBITS, max_bytes)[0]
    except BodyError:
        return _inflate(data, -zlib.MAX_WBITS, max_bytes)[0]


def _unbrotli(data: bytes, max_bytes: int) -> bytes:
    """``br`` decoded with :mod:`brotli`, if it is installed (else left as is)."""
    try:
        import brotli
    except ImportError:
        return data
    try:
        out: bytes = brotli.decompress(data)
    except brotli.error as exc:
        raise BodyError(f"corrupt brotli body ({exc})") from None
    if len(out) > max_bytes:
        raise BodyTooLargeError("decoded answer is larger than allowed")
    return out
