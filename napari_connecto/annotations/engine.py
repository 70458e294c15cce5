"""Database engines for the annotation store: SQLite files (WAL) and PostgreSQL URLs."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from napari_connecto.errors import AnnotationError, SourceNotFoundError, StoreLockedError

__all__ = ["LOCK_RETRIES", "make_engine", "normalize_url", "retry_locked"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_RETRIES = 6
"""Attempts on a locked SQLite database before :class:`StoreLockedError` (each waits
``busy_timeout`` inside SQLite, then a jittered backoff)."""
BUSY_TIMEOUT_MS = 2000
SQLITE_CACHE_KIB = 65536
"""SQLite page cache per connection (64 MiB): big imports and index builds stay in memory."""


def normalize_url(target: str | os.PathLike[str]) -> str:
    """A path or URL -> a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).

    Parameters
    ----------
    target : str or os.PathLike
        A file path (SQLite), ``sqlite:///path``, or ``postgresql://user:pw@host/db``.

    Returns
    -------
    str
        The URL to connect with.

    Raises
    ------
    AnnotationError
        For a URL of another database or a malformed URL.
    """
    text = os.fspath(target)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise AnnotationError(f"not a database URL: {_redact(text)} ({exc})") from None
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if url.get_backend_name() == "sqlite":
        return text
    raise AnnotationError(
        f"annotation stores live in SQLite files or PostgreSQL, not {url.get_backend_name()!r}"
    )


def _redact(text: str) -> str:
    """A URL with its password hidden, for messages and logs."""
    try:
        return make_url(text).render_as_string(hide_password=True)
    except ArgumentError:
        return text.rsplit("@", maxsplit=1)[-1]


def make_engine(
    target: str | os.PathLike[str], *, create: bool = True, autocommit: bool = False
) -> Engine:
    """Open an engine; SQLite files get WAL, ``synchronous=NORMAL`` and a busy timeout.

    Parameters
    ----------
    target : str or os.PathLike
        Path or URL (see :func:`normalize_url`).
    create : bool
        Whether a missing SQLite file may be created.
    autocommit : bool
        Connections without transactions (for reads: one round trip per query).

    Returns
    -------
    sqlalchemy.Engine
        The engine (nothing connected yet).

    Raises
    ------
    SourceNotFoundError
        A missing SQLite file (or its folder) with ``create=False`` (or no folder).
    """
    url = normalize_url(target)
    parsed = make_url(url)
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if parsed.get_backend_name() == "postgresql":
        # no pre-ping: it costs a round trip per query; a dropped connection is retried once
        engine = create_engine(url, connect_args={"connect_timeout": 10}, **options)
        event.listen(engine, "connect", _postgres_session)
        return engine
    database = parsed.database or ""
    if database and database != ":memory:":
        path = Path(database)
        if not path.parent.is_dir() or (not create and not path.exists()):
            raise SourceNotFoundError(str(path), "annotation database")
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        **options,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _postgres_session(dbapi_connection: Any, _record: Any) -> None:
    """No JIT: compiling a plan costs ~5 ms, more than the store's queries take to run."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # a SET inside a rolled-back transaction is undone
    try:
        dbapi_connection.execute("SET jit = off")
    finally:
        dbapi_connection.autocommit = autocommit


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers never block the writer), NORMAL sync (safe against process kills)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _is_locked(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


def retry_locked(action: Callable[[], T], *, where: str, attempts: int = LOCK_RETRIES) -> T:
    """Run ``action``; retry it while SQLite reports the database locked.

    Parameters
    ----------
    action : callable
        A whole transaction (it is run again from the start).
    where : str
        The database, for the error.
    attempts : int
        How many times to try.

    Returns
    -------
    object
        What ``action`` returned.

    Raises
    ------
    StoreLockedError
        If the database is still locked after the last attempt.
    """
    for attempt in range(attempts):
        try:
            return action()
        except OperationalError as exc:
            if not _is_locked(exc):
                raise
            logger.info("%s is locked (attempt %d of %d)", where, attempt + 1, attempts)
            if attempt + 1 < attempts:
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise StoreLockedError(
        f"{where} stayed locked by another writer through {attempts} attempts; "
        "nothing was written, try again"
    )
