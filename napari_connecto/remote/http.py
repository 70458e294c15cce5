"""The HTTP transport every remote source shares.

One :class:`HttpClient` per process (:func:`default_client`) keeps pooled
keep-alive connections per host. Every request:

- has explicit connect and read timeouts (``requests`` and CloudVolume set none);
- is retried with jittered exponential backoff on 408/429/5xx, on connection
  errors, resets and timeouts (``Retry-After`` honoured, capped); a
  non-idempotent request (DVID merge) only where the server cannot have acted
  on it (it was refused with 429/503, or the connection never opened);
- has its body length checked: a body shorter than its ``Content-Length`` is an
  error (retried), and a body sent without one (ended by closing the
  connection) is *unverified*: :meth:`HttpClient.fetch` hands it to the
  caller's decoder, which checks the decoded size and shape, and a decode
  failure of an unverified body is retried as a probable truncation rather
  than shown as data;
- follows redirects only within the same scheme and host.

Errors are typed (:class:`~napari_connecto.errors.RemoteError` and its
subclasses) and name the URL; query strings holding tokens are never logged.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from napari_connecto.errors import (
    RemoteError,
    RemoteTimeoutError,
    ServerBusyError,
    TruncatedBodyError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "HttpClient",
    "HttpConfig",
    "HttpResponse",
    "configure",
    "default_client",
    "public_url",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_BUSY_STATUSES = frozenset({429, 503})
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_MAX_REDIRECTS = 3
_MAX_ERROR_TEXT = 500
_MAX_ORIGINS = 16


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Timeouts, retries and pool size of an :class:`HttpClient`."""

    connect_timeout: float = 3.05
    """Seconds to open a connection (neuclease's choice)."""
    read_timeout: float = 30.0
    """Seconds to wait for the next bytes of an answer."""
    retries: int = 8
    """Attempts after the first one before giving up."""
    connect_retries: int = 2
    """Attempts after the first one when no connection can be opened at all."""
    backoff_base: float = 0.05
    """Seconds of the first backoff; doubled each retry."""
    backoff_max: float = 4.0
    """Cap of one backoff, also of an honoured ``Retry-After``."""
    pool_size: int = 32
    """Keep-alive connections kept per host (match the reader concurrency)."""
    max_body_bytes: int = 2**31
    """Largest body accepted (a guard against runaway answers)."""
    user_agent: str = "napari-connecto"
    """``User-Agent`` header."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One complete answer."""

    status: int
    """HTTP status (2xx; errors raise instead)."""
    body: bytes
    """The whole body, content-decoded."""
    headers: Mapping[str, str]
    """Response headers (case-insensitive mapping)."""
    verified: bool
    """Whether the body length was checked against ``Content-Length`` or chunked framing."""

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not)."""
        import json

        return json.loads(self.body)


class _RetryError(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(
        self, error: RemoteError, delay: float | None = None, *, connect: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay
        self.connect = connect


def public_url(url: str) -> str:
    """``url`` with any query string cut (tokens), for messages and logs."""
    return url.split("?", 1)[0]


class HttpClient:
    """Pooled, retrying, length-checking HTTP requests.

    Parameters
    ----------
    config : HttpConfig, optional
        Timeouts, retries and pool size.
    """

    def __init__(self, config: HttpConfig | None = None) -> None:
        self.config = config or HttpConfig()
        # One connection pool per origin, kept here rather than in a PoolManager: its
        # per-request URL parsing and pool lookup cost as much as the rest of a GET.
        self._pools: dict[tuple[str, str], urllib3.HTTPConnectionPool] = {}
        self._timeout = urllib3.Timeout(
            connect=self.config.connect_timeout, read=self.config.read_timeout
        )
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        """Counters: ``requests``, ``retries``, ``bytes``, and one per retried cause."""

    # -- public verbs --------------------------------------------------------------
    def get(
        self,
        url: str,
        *,
        byte_range: tuple[int, int | None] | None = None,
        allow_missing: bool = False,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> bytes | None:
        """The body of ``GET url`` (``None`` for 404 when ``allow_missing``).

        Parameters
        ----------
        url : str
            The URL.
        byte_range : (int, int or None), optional
            ``(start, length)`` to fetch with an HTTP Range request; ``length``
            ``None`` reads to the end, and a negative ``start`` with ``length``
            ``None`` reads the last ``-start`` bytes.
        allow_missing : bool
            Return ``None`` for a 404 instead of raising.
        headers : mapping, optional
            Extra request headers.
        body : bytes, optional
            A request body (DVID's ``GET .../labels`` takes one).

        Raises
        ------
        RemoteError
            For a non-retryable HTTP error (its status and message kept), or
            :class:`ServerBusyError`, :class:`RemoteTimeoutError` or
            :class:`TruncatedBodyError` when every retry failed.
        """
        response = self.request(
            "GET",
            url,
            byte_range=byte_range,
            allow_missing=allow_missing,
            headers=headers,
            body=body,
        )
        return None if response is None else response.body

    def get_confirmed(
        self,
        url: str,
        *,
        byte_range: tuple[int, int | None] | None = None,
        allow_missing: bool = False,
    ) -> bytes | None:
        """Like :meth:`get`, for callers that cannot check a body themselves.

        A body whose length the server did not state (no ``Content-Length``, no
        chunked framing) may have been cut short. Its length is then asked of
        ``HEAD``: a body of the stated length is accepted, a shorter one fetched
        again. Where ``HEAD`` states no length either, two answers must agree.
        """
        previous: bytes | None = None
        for attempt in range(self.config.retries + 1):
            response = self.request("GET", url, byte_range=byte_range, allow_missing=allow_missing)
            if response is None:
                return None
            if response.verified:
                return response.body
            if byte_range is None:
                stated = self._stated_length(url)
                if stated is not None and stated == len(response.body):
                    return response.body
                if stated is None and response.body == previous:
                    return response.body
            elif response.body == previous:
                return response.body
            previous = response.body
            self._count("unverified body")
            time.sleep(self._backoff(attempt))
        raise TruncatedBodyError(public_url(url), "no complete answer of unstated length")

    def _stated_length(self, url: str) -> int | None:
        """``Content-Length`` of a ``HEAD`` answer, if the server states one."""
        head = self.request("HEAD", url, allow_missing=True)
        value = None if head is None else head.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    def get_json(self, url: str, *, allow_missing: bool = False, body: bytes | None = None) -> Any:
        """``GET url`` parsed as JSON; a truncated or malformed body is retried, then raised."""
        import json

        def decode(data: bytes) -> Any:
            try:
                return json.loads(data)
            except RecursionError:
                raise ValueError("JSON nested too deeply") from None

        return self.fetch(url, decode, allow_missing=allow_missing, body=body)

    def fetch(
        self,
        url: str,
        decode: Callable[[bytes], T],
        *,
        byte_range: tuple[int, int | None] | None = None,
        allow_missing: bool = False,
        body: bytes | None = None,
    ) -> T | None:
        """``GET url`` and ``decode`` its body; retry decode failures of unverified bodies.

        ``decode`` raises :class:`ValueError` for a body that is not what it must
        be (wrong size, corrupt). If the body's length was verified, that error is
        real and propagates at once; if not (no ``Content-Length``), the body may
        have been cut and the request is retried.

        ``decode`` is given a body of stated length as a ``bytearray`` of its own
        (read without a copy, so arrays decoded from it can be writable), other
        bodies as ``bytes``.

        Returns
        -------
        object or None
            What ``decode`` returned; ``None`` for a 404 when ``allow_missing``.

        Raises
        ------
        ValueError
            From ``decode``, for a verified body, or an unverified one on every try.
        RemoteError
            As :meth:`get`.
        """
        problem: ValueError | None = None
        for attempt in range(self.config.retries + 1):
            response = self.request(
                "GET",
                url,
                byte_range=byte_range,
                allow_missing=allow_missing,
                body=body,
                own_buffer=True,
            )
            if response is None:
                return None
            try:
                return decode(response.body)
            except ValueError as exc:
                if response.verified:
                    raise
                problem = exc
                self._count("unverified body")
                logger.debug(
                    "%s: unverified body did not decode (%s), retrying", public_url(url), exc
                )
                time.sleep(self._backoff(attempt))
        assert problem is not None
        raise problem

    def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = False,
    ) -> bytes:
        """The body of ``POST url``.

        Retried only where the server cannot have acted, unless ``idempotent``
        (e.g. block-aligned voxel writes, which may be repeated).
        """
        response = self.request("POST", url, body=body, headers=headers, idempotent=idempotent)
        assert response is not None
        return response.body

    def delete(self, url: str) -> None:
        """``DELETE url``."""
        self.request("DELETE", url)

    def exists(self, url: str) -> bool:
        """Whether ``HEAD url`` answers 2xx (404 -> ``False``)."""
        return self.request("HEAD", url, allow_missing=True) is not None

    # -- the retry loop ----------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        byte_range: tuple[int, int | None] | None = None,
        allow_missing: bool = False,
        idempotent: bool | None = None,
        own_buffer: bool = False,
    ) -> HttpResponse | None:
        """Send one request with retries; see the module docstring for the rules.

        With ``own_buffer``, a plain body of stated length is read straight into a
        ``bytearray`` of its own (no copy; arrays decoded from it can be writable).

        Returns
        -------
        HttpResponse or None
            The answer; ``None`` for a 404 when ``allow_missing``.
        """
        if idempotent is None:
            idempotent = method in _IDEMPOTENT
        all_headers = dict(headers or {})
        if byte_range is not None:
            start, length = byte_range
            if length is not None and length <= 0:
                return HttpResponse(206, b"", {}, verified=True)
            all_headers["Range"] = _range_header(start, length)
        last: RemoteError | None = None
        unreachable = 0
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._count("retries")
            try:
                response = self._once(
                    method, url, body, all_headers, idempotent, allow_missing, own_buffer=own_buffer
                )
                if response is not None and byte_range is not None:
                    response = _check_range(url, response, byte_range)
            except _RetryError as retry:
                last = retry.error
                unreachable = unreachable + 1 if retry.connect else 0
                if unreachable > self.config.connect_retries:
                    break
                delay = self._backoff(attempt) if retry.delay is None else retry.delay
                logger.debug("%s %s: %s; retry in %.2fs", method, public_url(url), last, delay)
                time.sleep(delay)
                continue
            return response
        assert last is not None
        raise last

    def _once(  # noqa: PLR0917 - private, called once
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        idempotent: bool,
        allow_missing: bool,
        *,
        own_buffer: bool = False,
    ) -> HttpResponse | None:
        """One attempt, redirects followed; raise :class:`_RetryError` for a retryable failure."""
        shown = public_url(url)
        headers = {"User-Agent": self.config.user_agent, **headers}
        for _ in range(_MAX_REDIRECTS + 1):
            self._count("requests")
            try:
                pool, target = self._connection_pool(url)
                raw = pool.urlopen(
                    method,
                    target,
                    body=body,
                    headers=headers,
                    timeout=self._timeout,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                )
            except NewConnectionError as exc:  # refused, or the name does not resolve
                error = self._cause(RemoteError, shown, exc, "connect")
                raise _RetryError(error, connect=True) from None
            except ConnectTimeoutError as exc:
                error = self._cause(RemoteTimeoutError, shown, exc, "connect")
                raise _RetryError(error, connect=True) from None
            except ReadTimeoutError as exc:
                error = self._cause(RemoteTimeoutError, shown, exc, "timeout")
                if not idempotent:
                    raise error from None
                raise _RetryError(error) from None
            except (ProtocolError, HTTPError, OSError) as exc:
                error = self._cause(RemoteError, shown, exc, "connection")
                if not idempotent:
                    raise error from None
                raise _RetryError(error) from None
            if 300 <= raw.status < 400 and raw.headers.get("Location"):
                raw.drain_conn()
                raw.release_conn()
                url = _same_origin_redirect(url, raw.headers["Location"])
                continue
            return self._answer(method, url, raw, idempotent, allow_missing, own_buffer=own_buffer)
        raise RemoteError(shown, f"more than {_MAX_REDIRECTS} redirects")

    def _answer(
        self,
        method: str,
        url: str,
        raw: urllib3.BaseHTTPResponse,
        idempotent: bool,
        allow_missing: bool,
        *,
        own_buffer: bool = False,
    ) -> HttpResponse | None:
        """Read and check one answer's body; classify its status."""
        shown = public_url(url)
        try:
            body = self._read_body(raw, shown, own_buffer=own_buffer)
        except (ReadTimeoutError, TimeoutError) as exc:
            raise _RetryError(self._cause(RemoteTimeoutError, shown, exc, "timeout")) from None
        except (ProtocolError, DecodeError, HTTPError, OSError) as exc:
            raise _RetryError(self._cause(TruncatedBodyError, shown, exc, "truncated")) from None
        finally:
            raw.release_conn()
        status = raw.status
        if status == 404 and allow_missing:
            return None
        if status in _RETRY_STATUSES:
            text = _error_text(body)
            cls = ServerBusyError if status in _BUSY_STATUSES else RemoteError
            error = cls(shown, text or "server error", status=status)
            self._count(f"status {status}")
            if idempotent or status in _BUSY_STATUSES:
                raise _RetryError(error, self._retry_after(raw))
            raise error
        if status >= 400:
            raise RemoteError(shown, _error_text(body) or raw.reason or "error", status=status)
        verified = (
            "content-length" in raw.headers
            or "chunked" in raw.headers.get("transfer-encoding", "").lower()
            or method == "HEAD"
        )
        self._count("bytes", len(body))
        return HttpResponse(status, body, raw.headers, verified)

    def _read_body(
        self, raw: urllib3.BaseHTTPResponse, shown: str, *, own_buffer: bool = False
    ) -> bytes:
        """The whole body, refusing more than ``max_body_bytes``."""
        headers = raw.headers
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            if int(length) > self.config.max_body_bytes:
                raise RemoteError(shown, f"answer of {length} bytes is larger than allowed")
            if not headers.get("content-encoding"):  # its size is known: one read
                plain = own_buffer and "transfer-encoding" not in headers
                return _read_into(raw, int(length)) if plain else raw.read()
        parts, total = [], 0
        for part in raw.stream(2**20, decode_content=True):
            total += len(part)
            if total > self.config.max_body_bytes:
                raise RemoteError(shown, "answer is larger than allowed")
            parts.append(part)
        return b"".join(parts)

    def _cause(self, cls: type[RemoteError], url: str, exc: BaseException, key: str) -> RemoteError:
        self._count(key)
        return cls(url, f"{type(exc).__name__}: {exc}")

    def _retry_after(self, raw: urllib3.BaseHTTPResponse) -> float | None:
        value = raw.headers.get("retry-after", "")
        try:
            return min(max(float(value), 0.0), self.config.backoff_max)
        except ValueError:
            return None

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _connection_pool(self, url: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The pool of ``url``'s origin (made on first use) and the request target.

        Raises
        ------
        urllib3.exceptions.LocationValueError
            For a URL that is not ``http(s)://host/...`` (an ``HTTPError``).
        """
        scheme, sep, rest = url.partition("://")
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        netloc, target = rest[:end], rest[end:].split("#", 1)[0]  # fragments are not sent
        origin = (scheme.lower(), netloc)
        pool = self._pools.get(origin)
        if pool is None:
            if not sep or origin[0] not in ("http", "https") or not netloc:
                raise LocationValueError(f"not an http(s) URL: {public_url(url)}")
            pool = self._new_pool(origin)
        return pool, target if target.startswith("/") else "/" + target

    def _new_pool(self, origin: tuple[str, str]) -> urllib3.HTTPConnectionPool:
        """A keep-alive pool for one origin; the oldest pool is closed past ``_MAX_ORIGINS``."""
        with self._lock:
            pool = self._pools.get(origin)
            if pool is None:
                pool = urllib3.connection_from_url(
                    f"{origin[0]}://{origin[1]}/",
                    maxsize=self.config.pool_size,
                    block=False,
                    retries=False,
                )
                pools = dict(self._pools)
                pools[origin] = pool
                while len(pools) > _MAX_ORIGINS:
                    pools.pop(next(iter(pools))).close()
                self._pools = pools  # replaced whole: lock-free readers see old or new
        return pool

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


def _read_into(raw: urllib3.BaseHTTPResponse, length: int) -> bytes:
    """A body of stated ``length`` read into a ``bytearray`` of its own, every byte checked.

    Reads through the ``http.client`` response under urllib3's (``readinto``
    fills the buffer without an intermediate ``bytes``); a body that ends early
    raises :class:`ProtocolError`. On any failure the connection is closed, not
    pooled, as urllib3 does.
    """
    source = getattr(raw, "_fp", None)
    if not hasattr(source, "readinto"):  # not the urllib3 we know: the plain way
        return bytearray(raw.read())
    buffer = bytearray(length)
    view, got = memoryview(buffer), 0
    try:
        while got < length:
            n = source.readinto(view[got:])  # type: ignore[union-attr]
            if not n:
                raise ProtocolError(f"body ended after {got} of {length} bytes")
            got += n
    except BaseException:
        raw.close()
        raise
    return buffer  # type: ignore[return-value]


def _range_header(start: int, length: int | None) -> str:
    """The ``Range`` header of ``(start, length)`` (see :meth:`HttpClient.get`)."""
    if length is not None:
        return f"bytes={start}-{start + length - 1}"
    return f"bytes={start}" if start < 0 else f"bytes={start}-"


def _check_range(
    url: str, response: HttpResponse, byte_range: tuple[int, int | None]
) -> HttpResponse:
    """A Range answer must be 206 with exactly the bytes asked for."""
    start, length = byte_range
    if response.status != 206:
        # A server ignoring Range sends everything: take the slice, but only if complete.
        body = response.body
        whole = response.status == 200 and response.verified
        if whole and (length is None or len(body) >= start + length):
            end = None if length is None else start + length
            return replace(response, body=body[start:end] if start >= 0 else body[start:])
        raise RemoteError(public_url(url), "the server does not support Range requests")
    expected = length if length is not None else (-start if start < 0 else None)
    if expected is not None and len(response.body) != expected:
        raise _RetryError(
            TruncatedBodyError(
                public_url(url), f"range answer has {len(response.body)} bytes, expected {expected}"
            )
        )
    if expected is None and not response.verified:
        raise _RetryError(
            TruncatedBodyError(public_url(url), "open-ended range answer of unknown length")
        )
    return response


def _same_origin_redirect(url: str, location: str) -> str:
    """The redirect target, refused if it changes scheme or host."""
    target = urljoin(url, location)
    a, b = urlsplit(url), urlsplit(target)
    if (a.scheme, a.netloc) != (b.scheme, b.netloc):
        raise RemoteError(
            public_url(url), f"refusing a redirect to another host or scheme ({public_url(target)})"
        )
    return target


def _error_text(body: bytes) -> str:
    """A server's error message, shortened, as text."""
    return body[:_MAX_ERROR_TEXT].decode("utf-8", "replace").strip()


_default: HttpClient | None = None
_default_lock = threading.Lock()


def default_client() -> HttpClient:
    """The process-wide client every remote source uses."""
    global _default  # noqa: PLW0603 - one pool per process
    with _default_lock:
        if _default is None:
            _default = HttpClient()
        return _default


def configure(**changes: Any) -> HttpConfig:
    """Replace the default client with one whose config has ``changes`` applied.

    Parameters
    ----------
    **changes
        Fields of :class:`HttpConfig` (``read_timeout=5``, ``retries=3``, ...).

    Returns
    -------
    HttpConfig
        The new configuration.
    """
    global _default  # noqa: PLW0603 - one pool per process
    with _default_lock:
        old = _default
        config = replace(old.config if old else HttpConfig(), **changes)
        _default = HttpClient(config)
    if old is not None:
        old.close()
    return config
