r"""Requests, responses and errors of the DVID test server, in DVID's own words.

DVID (``server/web.go``) answers almost every failure with ``http.Error`` and a
``400``: ``text/plain; charset=utf-8``, body ``"<msg> (<path>).\\n"``. A
malformed endpoint under an instance gives ``"Bad API call (<path>) for data
<name>..."``; a URL no router matches gives ``404 page not found``. This module
keeps those shapes in one place so every handler raises and the dispatcher
formats.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

__all__ = [
    "BadAPIRequest",
    "BadRequest",
    "HTTPStatus",
    "Request",
    "Response",
    "Throttle",
    "go_point",
    "go_rfc3339",
    "go_time",
    "json_response",
    "parse_point",
    "parse_uint",
]

TEXT = "text/plain; charset=utf-8"
"""Content type of Go's ``http.Error``."""
JSON = "application/json"
OCTET = "application/octet-stream"


class HTTPStatus(Exception):  # noqa: N818 - mirrors Go's http.Error, not an "error" per se
    """Abort a handler with a literal status and body (``http.Error`` in Go)."""

    def __init__(self, status: int, body: bytes = b"", content_type: str = TEXT) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.content_type = content_type


class BadRequest(Exception):  # noqa: N818 - named after DVID's server.BadRequest
    """A ``400`` whose body is ``"<msg> (<path>)."``, as DVID's ``server.BadRequest``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadAPIRequest(Exception):  # noqa: N818 - named after DVID's server.BadAPIRequest
    """A ``400`` for an endpoint the instance does not know."""

    def __init__(self, dataname: str, typename: str) -> None:
        super().__init__(dataname)
        self.dataname = dataname
        self.typename = typename


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    """Upper-case HTTP verb."""
    path: str
    """URL path without the query string."""
    query: dict[str, str]
    """First value of each query parameter."""
    body: bytes
    """Request body (empty for none)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers, names lower-cased."""
    throttled: bool = False
    """Set when the request holds one of the server's throttle slots."""

    @classmethod
    def parse(cls, method: str, target: str, body: bytes, headers: dict[str, str]) -> Request:
        """Split a request target into path and query."""
        path, _, qs = target.partition("?")
        path = unquote(path)
        query = {k: v[0] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        return cls(method.upper(), path, query, body, headers)

    @property
    def parts(self) -> list[str]:
        """Path segments after ``/api/``, trailing empty segment dropped (as DVID)."""
        parts = self.path[len("/api/") :].split("/")
        if parts and parts[-1] == "":
            parts = parts[:-1]
        return parts

    def flag(self, name: str) -> bool:
        """``True`` if query parameter ``name`` is ``"true"``."""
        return self.query.get(name) == "true"

    def json_body(self, what: str = "request") -> Any:
        """The body parsed as JSON, or a 400."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise BadRequest(f"Malformed JSON {what} in body: {exc}") from exc


class Throttle:
    """DVID's count of running ``throttle=true`` operations (``server.ThrottledHTTP``).

    Parameters
    ----------
    limit : int
        Maximum number of throttled operations at once (DVID's default is 1).
    """

    def __init__(self, limit: int = 1) -> None:
        self.limit = limit
        self.running = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take a slot, or raise the 503 DVID sends when all are taken."""
        with self._lock:
            if self.running < self.limit:
                self.running += 1
                return
            running = self.running
        message = f"Server already running {running} throttled operations (max = {self.limit})\n"
        raise HTTPStatus(503, message.encode())

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self.running = max(0, self.running - 1)


@dataclass(slots=True)
class Response:
    """A complete answer, sent through :func:`napari_connecto.testing.chaos.respond`."""

    status: int = 200
    body: bytes = b""
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200) -> Response:
    """A compact JSON answer like Go's ``json.Marshal``."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, JSON)


def _moment(timestamp: float) -> tuple[datetime, str]:
    moment = datetime.fromtimestamp(timestamp, UTC).astimezone()
    offset = moment.strftime("%z")
    zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return moment, zone


def go_time(timestamp: float) -> str:
    """RFC 3339 local time with nanoseconds, like Go's ``time.Time`` JSON."""
    moment, zone = _moment(timestamp)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000" + zone


def go_rfc3339(timestamp: float) -> str:
    """RFC 3339 local time in whole seconds, like Go's ``time.RFC3339`` layout."""
    moment, zone = _moment(timestamp)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + zone


def go_point(xyz: Any) -> str:
    """``(x,y,z)``: how DVID prints a point in messages (``dvid.Point3d.String``)."""
    return "({},{},{})".format(*xyz)


def parse_uint(text: str) -> int:
    """Parse a uint64 path segment as Go's ``strconv.ParseUint``, or a 400."""
    try:
        value = int(text, 10)
    except ValueError:
        raise BadRequest(f'strconv.ParseUint: parsing "{text}": invalid syntax') from None
    if not 0 <= value < 2**64 or not text.isdigit():
        raise BadRequest(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return value


def parse_point(text: str, sep: str = "_", ndim: int = 3) -> tuple[int, ...]:
    """Parse ``"x_y_z"`` into integers, or a 400 as ``dvid.StringToPoint``."""
    pieces = text.split(sep)
    if len(pieces) != ndim:
        raise BadRequest(f"Expected {ndim}d point, got {text!r}")
    try:
        return tuple(int(p) for p in pieces)
    except ValueError:
        raise BadRequest(f"Illegal point string: {text!r}") from None
