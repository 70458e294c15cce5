"""A real HTTP server on loopback that serves a folder read-only, with chaos.

:class:`HttpFolderServer` is what tests and benchmarks point the HTTP backends at:
a ``ThreadingHTTPServer`` on ``127.0.0.1`` (``HTTP/1.1`` keep-alive, daemon
threads) that answers ``GET`` and ``HEAD`` from the files under one root, and
counts what it was asked for. Every answer, errors included, goes through
:func:`napari_connecto.testing.chaos.respond`, so the configured latency and
faults apply to all of them.

Behaviour
---------
- A missing file or a directory is ``404`` (``text/plain``); no listings.
- A path with a ``.`` or ``..`` segment (also percent-encoded), a backslash or a
  NUL, or one whose resolved target (symlinks followed) lies outside the root, is
  ``403``. Leading slashes (``//etc/passwd``) stay inside the root.
- ``Content-Type`` is ``application/json`` for ``*.json``, ``info``, ``.zarray``,
  ``.zattrs``, ``.zgroup`` (which covers ``attributes.json`` and ``zarr.json``),
  otherwise ``application/octet-stream``.
- ``Range: bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` give ``206`` with
  ``Content-Range``; a range starting at or past the end (or any range of an
  empty file) gives ``416`` with ``Content-Range: bytes */size``. A malformed
  header, another unit, or **several ranges** are ignored: ``200`` with the full
  body (RFC 9110 lets a server ignore ``Range``; no multipart answers).
- With ``gzip_suffix=True``, a request for ``X`` where only ``X.gz`` exists is
  answered with the stored bytes of ``X.gz`` and ``Content-Encoding: gzip``
  (the way GCS serves CloudVolume datasets); ``Content-Type`` follows ``X``, and
  ranges apply to the stored (compressed) bytes.
- ``POST``, ``PUT``, ``PATCH`` and ``DELETE`` are ``405`` (the connection is then
  closed, as any request body is left unread).

Run ``python -m napari_connecto.testing.http_server ROOT`` to serve a folder by
hand; the URL is written as one line on stdout once the server is ready.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from napari_connecto.testing.chaos import (
    FAULT_KINDS,
    Chaos,
    ChaosConfig,
    LoopbackHTTPServer,
    QuietRequestHandler,
    respond,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType, TracebackType

__all__ = ["JSON_NAMES", "HttpFolderServer", "content_type_for", "main"]

logger = logging.getLogger(__name__)

JSON_NAMES: frozenset[str] = frozenset({"info", ".zarray", ".zattrs", ".zgroup"})
"""File names served as ``application/json`` besides ``*.json``."""

_TEXT = "text/plain; charset=utf-8"


def content_type_for(name: str) -> str:
    """The ``Content-Type`` the server sends for a file name.

    Parameters
    ----------
    name : str
        Last path segment of the requested file.

    Returns
    -------
    str
        ``application/json`` for metadata files, else ``application/octet-stream``.
    """
    if name.endswith(".json") or name in JSON_NAMES:
        return "application/json"
    return "application/octet-stream"


@dataclass(frozen=True, slots=True)
class _Answer:
    """One response before chaos: status, body, type and extra headers."""

    status: int
    body: bytes
    content_type: str = _TEXT
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str) -> _Answer:
    """A short text answer for an error status."""
    return _Answer(status, f"{status} {message}\n".encode())


def _request_path(raw: str) -> str:
    """The decoded path of a request target, without query or fragment."""
    return unquote(urlsplit(raw).path, errors="strict")


def _resolve(root: Path, path: str) -> Path | _Answer:
    """The file under ``root`` a decoded request path names, or a 403/404 answer."""
    segments = [part for part in path.split("/") if part]
    if any(part in {".", ".."} or "\\" in part or "\0" in part for part in segments):
        return _error(403, "Forbidden")
    target = root.joinpath(*segments).resolve()
    if not target.is_relative_to(root):
        return _error(403, "Forbidden")
    return target


def _parse_spec(header: str | None) -> tuple[int | None, int | None] | None:
    """``(first, last)`` of a single ``bytes=`` range (either may be absent), or ``None``."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    valid = (
        unit.strip().lower() == "bytes"
        and "," not in spec
        and bool(dash)
        and bool(first or last)
        and all(part.isdigit() for part in (first, last) if part)
    )
    if not valid or (first and last and int(last) < int(first)):
        return None
    return (int(first) if first else None), (int(last) if last else None)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | _Answer | None:
    """``(start, stop)`` of one byte range, a 416 answer, or ``None`` to ignore the header."""
    spec = _parse_spec(header)
    if spec is None:
        return None
    first, last = spec
    if first is None:  # suffix range: the last n bytes
        n = last or 0
        return _unsatisfiable(size) if n == 0 or size == 0 else (max(size - n, 0), size)
    if first >= size:
        return _unsatisfiable(size)
    return first, size if last is None else min(last + 1, size)


def _unsatisfiable(size: int) -> _Answer:
    """A 416 answer naming the representation's size."""
    answer = _error(416, "Range Not Satisfiable")
    answer.headers["Content-Range"] = f"bytes */{size}"
    return answer


def _read(path: Path, start: int, stop: int) -> bytes:
    """Bytes ``[start, stop)`` of a file."""
    with path.open("rb") as file:
        file.seek(start)
        return file.read(stop - start)


class _FolderHandler(QuietRequestHandler):
    """Answers GET/HEAD from the owning :class:`HttpFolderServer`'s folder."""

    server: _FolderHTTPServer

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler override
        """Answer a ``GET``."""
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler override
        """Answer a ``HEAD``."""
        self._serve(head=True)

    def _refuse(self) -> None:
        """Answer a write method with 405 and close (its body is left unread)."""
        owner = self.server.owner
        owner._count(self.path)
        self.close_connection = True
        headers = {"Allow": "GET, HEAD", "Connection": "close"}
        body = b"405 Method Not Allowed\n"
        respond(self, 405, body, content_type=_TEXT, headers=headers, chaos=owner.chaos)

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse  # noqa: N815 - handler dispatch names

    def _serve(self, *, head: bool) -> None:
        """Count the request, build the answer, and send it through chaos."""
        owner = self.server.owner
        try:
            answer = owner._answer(self.path, self.headers.get("Range"))
        except (OSError, RuntimeError) as error:  # unreadable, name too long, symlink loop
            logger.debug("cannot serve %r: %s", self.path, error)
            answer = _error(404, "Not Found")
        owner._count(self.path)
        respond(
            self,
            answer.status,
            answer.body,
            content_type=answer.content_type,
            headers=answer.headers,
            chaos=owner.chaos,
            head=head,
            on_body=owner._count_bytes,
        )


class _FolderHTTPServer(LoopbackHTTPServer):
    """The socket server, holding a reference to its :class:`HttpFolderServer`."""

    def __init__(self, owner: HttpFolderServer, port: int) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", port), _FolderHandler)


class HttpFolderServer:
    """Serve a folder read-only over HTTP on ``127.0.0.1``, with latency and faults.

    Parameters
    ----------
    root : str or Path
        Folder to serve; nothing outside it is ever read.
    chaos : ChaosConfig, optional
        Latency and fault schedule; the default answers every request normally.
    gzip_suffix : bool
        Answer ``X`` from ``X.gz`` with ``Content-Encoding: gzip`` when only the
        latter exists.
    port : int
        Port to listen on; 0 picks a free one.

    Raises
    ------
    NotADirectoryError
        If ``root`` is not an existing folder.

    Examples
    --------
    >>> with HttpFolderServer(tmp_path) as server:  # doctest: +SKIP
    ...     requests.get(f"{server.url}/info", timeout=5).json()
    """

    def __init__(
        self,
        root: str | Path,
        chaos: ChaosConfig | None = None,
        *,
        gzip_suffix: bool = False,
        port: int = 0,
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"not a folder to serve: {root}")
        self.gzip_suffix = gzip_suffix
        self._port = port
        self._chaos = Chaos(chaos)
        self._lock = threading.Lock()
        self._requests = 0
        self._paths: Counter[str] = Counter()
        self._bytes_sent = 0
        self._server: _FolderHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> str:
        """Start serving on a background thread (a no-op if already serving).

        Returns
        -------
        str
            Base URL, ``http://127.0.0.1:PORT`` (no trailing slash).
        """
        if self._server is None:
            server = _FolderHTTPServer(self, self._port)
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"HttpFolderServer:{server.server_port}",
                daemon=True,
            )
            self._server = server
            self._thread.start()
            logger.debug("serving %s at %s", self.root, self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving and drop open connections (a no-op if not serving)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HttpFolderServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``.

        Raises
        ------
        RuntimeError
            If the server is not running.
        """
        if self._server is None:
            raise RuntimeError("HttpFolderServer is not running; call start()")
        return f"http://127.0.0.1:{self._server.server_port}"

    # -- chaos and counters ----------------------------------------------------------

    @property
    def chaos(self) -> Chaos:
        """The current fault schedule, with its counters."""
        return self._chaos

    def set_chaos(self, config: ChaosConfig | None) -> Chaos:
        """Replace the fault schedule for the following requests.

        Parameters
        ----------
        config : ChaosConfig or None
            New latency and faults (restarting the seeded schedule and the chaos
            counters); ``None`` turns chaos off.

        Returns
        -------
        Chaos
            The new schedule.
        """
        self._chaos = Chaos(config)
        return self._chaos

    @property
    def requests(self) -> int:
        """How many requests were received (any method, faulted or not)."""
        return self._requests

    @property
    def paths(self) -> Counter[str]:
        """A copy of the request count per decoded path (query dropped)."""
        with self._lock:
            return Counter(self._paths)

    @property
    def bytes_sent(self) -> int:
        """Body bytes handed to the socket (a truncated body counts the half sent).

        Counted just before each write, so it is complete once a client has its
        answers.
        """
        return self._bytes_sent

    def reset_counters(self) -> None:
        """Zero :attr:`requests`, :attr:`paths` and :attr:`bytes_sent`."""
        with self._lock:
            self._requests, self._bytes_sent = 0, 0
            self._paths.clear()

    def _count(self, raw_path: str) -> None:
        """Count one request."""
        try:
            path = _request_path(raw_path)
        except UnicodeDecodeError:
            path = raw_path
        with self._lock:
            self._requests += 1
            self._paths[path] += 1

    def _count_bytes(self, sent: int) -> None:
        """Count body bytes written."""
        with self._lock:
            self._bytes_sent += sent

    # -- answers ---------------------------------------------------------------------

    def _locate(self, path: str) -> tuple[Path, Path, bool] | _Answer:
        """``(requested, stored, gzipped)`` files for a decoded path, or a 403/404."""
        target = _resolve(self.root, path)
        if isinstance(target, _Answer) or target.is_file() or not self.gzip_suffix:
            return target if isinstance(target, _Answer) else (target, target, False)
        stored = _resolve(self.root, path + ".gz")
        return stored if isinstance(stored, _Answer) else (target, stored, True)

    def _answer(self, raw_path: str, range_header: str | None) -> _Answer:
        """The answer to a GET/HEAD of ``raw_path`` (body read only as far as needed)."""
        try:
            located = self._locate(_request_path(raw_path))
        except UnicodeDecodeError:
            return _error(404, "Not Found")
        if isinstance(located, _Answer):
            return located
        target, stored, gzipped = located
        if not stored.is_file():
            return _error(404, "Not Found")
        size = stored.stat().st_size
        span = _parse_range(range_header, size)
        if isinstance(span, _Answer):
            return span
        headers = {"Accept-Ranges": "bytes"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        content_type = content_type_for(target.name)
        if span is None:
            return _Answer(200, _read(stored, 0, size), content_type, headers)
        start, stop = span
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return _Answer(206, _read(stored, start, stop), content_type, headers)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="python -m napari_connecto.testing.http_server",
        description="Serve a folder read-only on 127.0.0.1, with optional latency and faults.",
    )
    parser.add_argument("root", type=Path, help="folder to serve")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--chaos", type=float, default=0.0, help="fault rate 0..1")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    parser.add_argument(
        "--kinds", default=",".join(FAULT_KINDS), help=f"faults to draw from ({FAULT_KINDS})"
    )
    parser.add_argument("--stall", type=float, default=2.0, help="seconds a stall lasts")
    parser.add_argument("--gzip-suffix", action="store_true", help="serve X from X.gz")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a folder until interrupted (SIGINT or SIGTERM).

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        Exit status: 0 after an interrupt.
    """
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
    config = ChaosConfig(
        rate=args.chaos,
        seed=args.seed,
        kinds=kinds,
        stall_seconds=args.stall,
        latency_seconds=args.latency,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    server = HttpFolderServer(args.root, config, gzip_suffix=args.gzip_suffix, port=args.port)
    with server:
        sys.stdout.write(f"{server.url}\n")
        sys.stdout.flush()
        logger.info("serving %s at %s (chaos %s)", server.root, server.url, config)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            logger.info("interrupted")
        logger.info("%d requests, %d body bytes sent", server.requests, server.bytes_sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
