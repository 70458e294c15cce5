"""The HTTP transport every remote source shares.

One :class:`HttpClient` per process (:func:`default_client`) keeps pooled
keep-alive connections per host (at most :attr:`HttpConfig.pool_size` idle
ones; a pooled connection the server closed meanwhile is replaced, and the
request sent again on a new one at once). Every request:

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

Layers: the verbs here; the retry loop and failure classification in
:mod:`~napari_connecto.remote.transport`; pools in
:mod:`~napari_connecto.remote.connections`; HTTP/1.1 framing on one socket in
:mod:`~napari_connecto.remote.wire` (neither urllib3 nor :mod:`http.client`:
their per-request cost was most of a loopback GET); bodies, content decoding
and Range checks in :mod:`~napari_connecto.remote.bodies` and
:mod:`~napari_connecto.remote.ranges`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from napari_connecto.errors import TruncatedBodyError
from napari_connecto.remote.transport import HttpConfig, HttpResponse, Transport, public_url

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


class HttpClient(Transport):
    """Pooled, retrying, length-checking HTTP requests.

    Parameters
    ----------
    config : HttpConfig, optional
        Timeouts, retries and pool size.
    """

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
