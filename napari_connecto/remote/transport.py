"""One HTTP request with retries: the attempt loop under ``HttpClient``.

:class:`Transport` sends a request over pooled keep-alive connections
(:mod:`~napari_connecto.remote.connections`), reads and checks its body
(:mod:`~napari_connecto.remote.bodies`), classifies every failure into a typed
:class:`~napari_connecto.errors.RemoteError` and retries what is worth
retrying, with jittered exponential backoff; the rules are listed in
:mod:`napari_connecto.remote.http`, whose :class:`HttpClient` adds the verbs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from napari_connecto.errors import (
    RemoteError,
    RemoteTimeoutError,
    ServerBusyError,
    TruncatedBodyError,
)
from napari_connecto.remote.bodies import read_body
from napari_connecto.remote.connections import ConnectError, OriginPools, split_url
from napari_connecto.remote.ranges import check_range, range_header
from napari_connecto.remote.wire import BodyTooLargeError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from napari_connecto.remote.connections import ConnectionPool, Exchange
    from napari_connecto.remote.wire import Head

__all__ = ["HttpConfig", "HttpResponse", "Transport", "public_url"]

logger = logging.getLogger(__name__)

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


class Transport:
    """Pooled, retrying, length-checking HTTP requests (the verbs are :class:`HttpClient`'s).

    Parameters
    ----------
    config : HttpConfig, optional
        Timeouts, retries and pool size.
    """

    def __init__(self, config: HttpConfig | None = None) -> None:
        self.config = config or HttpConfig()
        self._pools = OriginPools(
            maxsize=self.config.pool_size,
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            max_origins=_MAX_ORIGINS,
        )
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        """Counters: ``requests``, ``retries``, ``bytes``, one per retried cause, and
        ``stale connection`` (a pooled connection the server had closed, the request
        sent again at once on a new one)."""

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
        """Send one request with retries, by the rules in :mod:`napari_connecto.remote.http`.

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
            all_headers["Range"] = range_header(start, length)
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
                    response = _checked_range(url, response, byte_range)
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
        headers = {"User-Agent": self.config.user_agent, **headers}
        for _ in range(_MAX_REDIRECTS + 1):
            self._count("requests")
            pool, target = self._connection_pool(url)
            exchange = self._exchange(pool, method, url, target, headers, body, idempotent)
            location = exchange.head.headers.get("location")
            if 300 <= exchange.head.status < 400 and location:
                _drain(pool, exchange)
                url = _same_origin_redirect(url, location)
                continue
            return self._answer(method, url, pool, exchange, idempotent, allow_missing, own_buffer)
        raise RemoteError(public_url(url), f"more than {_MAX_REDIRECTS} redirects")

    def _exchange(  # noqa: PLR0917 - private, called once
        self,
        pool: ConnectionPool,
        method: str,
        url: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
        idempotent: bool,
    ) -> Exchange:
        """Send the request and read its answer's head; classify a failure to."""
        shown = public_url(url)
        try:
            exchange = pool.exchange(method, target, headers, body, idempotent=idempotent)
        except ValueError as exc:  # a URL or header that cannot be sent
            raise RemoteError(shown, str(exc)) from None
        except ConnectError as exc:  # refused, unresolvable, timed out: never sent
            cls = RemoteTimeoutError if exc.timed_out else RemoteError
            raise _RetryError(self._cause(cls, shown, exc.cause, "connect"), connect=True) from None
        except TimeoutError as exc:
            error = self._cause(RemoteTimeoutError, shown, exc, "timeout")
            if not idempotent:
                raise error from None
            raise _RetryError(error) from None
        except OSError as exc:
            error = self._cause(RemoteError, shown, exc, "connection")
            if not idempotent:
                raise error from None
            raise _RetryError(error) from None
        if exchange.stale:
            self._count("stale connection")
            self._count("requests")
        return exchange

    def _answer(  # noqa: PLR0917 - private, called once
        self,
        method: str,
        url: str,
        pool: ConnectionPool,
        exchange: Exchange,
        idempotent: bool,
        allow_missing: bool,
        own_buffer: bool,
    ) -> HttpResponse | None:
        """Read and check one answer's body; classify its status."""
        shown = public_url(url)
        head, reusable = exchange.head, False
        try:
            read = read_body(
                exchange.connection, head, self.config.max_body_bytes, own_buffer=own_buffer
            )
            reusable = not head.will_close
        except BodyTooLargeError as exc:
            raise RemoteError(shown, str(exc)) from None
        except TimeoutError as exc:
            error: RemoteError = self._cause(RemoteTimeoutError, shown, exc, "timeout")
            raise _RetryError(error) if idempotent else error from None
        except (OSError, ValueError) as exc:
            error = self._cause(TruncatedBodyError, shown, exc, "truncated")
            # the server got the request and acted on it: a POST is never sent again
            raise _RetryError(error) if idempotent else error from None
        finally:
            pool.release(exchange.connection, reusable=reusable)
        body, status = read.data, head.status
        if status == 404 and allow_missing:
            return None
        if status in _RETRY_STATUSES:
            text = _error_text(body)
            cls = ServerBusyError if status in _BUSY_STATUSES else RemoteError
            error = cls(shown, text or "server error", status=status)
            self._count(f"status {status}")
            if idempotent or status in _BUSY_STATUSES:
                raise _RetryError(error, self._retry_after(head))
            raise error
        if status >= 400:
            raise RemoteError(shown, _error_text(body) or head.reason or "error", status=status)
        self._count("bytes", len(body))
        return HttpResponse(status, body, head.headers, read.verified or method == "HEAD")

    def _cause(self, cls: type[RemoteError], url: str, exc: BaseException, key: str) -> RemoteError:
        self._count(key)
        return cls(url, f"{type(exc).__name__}: {exc}")

    def _retry_after(self, head: Head) -> float | None:
        value = head.headers.get("retry-after") or ""
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

    def _connection_pool(self, url: str) -> tuple[ConnectionPool, str]:
        """The pool of ``url``'s origin (made on first use) and the request target.

        Raises
        ------
        RemoteError
            For a URL that is not ``http(s)://host/...``.
        """
        split = split_url(url)
        if split is None:
            raise RemoteError(public_url(url), "not an http(s) URL")
        origin, target = split
        try:
            return self._pools.pool(origin), target
        except ValueError as exc:
            raise RemoteError(public_url(url), str(exc)) from None

    def close(self) -> None:
        """Close every pooled connection."""
        self._pools.close()


def _drain(pool: ConnectionPool, exchange: Exchange) -> None:
    """Read a redirect's (small) body so that its connection can be reused, or close it."""
    reusable = False
    try:
        read_body(exchange.connection, exchange.head, 2**16)
        reusable = not exchange.head.will_close
    except (OSError, ValueError) as exc:
        logger.debug("redirect body not read: %s", exc)
    finally:
        pool.release(exchange.connection, reusable=reusable)


def _checked_range(
    url: str, response: HttpResponse, byte_range: tuple[int, int | None]
) -> HttpResponse:
    """:func:`~napari_connecto.remote.ranges.check_range`, a short answer made retryable."""
    try:
        return check_range(public_url(url), response, byte_range)
    except TruncatedBodyError as exc:
        raise _RetryError(exc) from None


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
