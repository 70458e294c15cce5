"""Named locks shared by every process using one annotation store, released by a crash."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["lock_key", "store_lock"]


def lock_key(name: str) -> int:
    """A signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def store_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock ``name`` of the store behind ``engine`` (blocking until it is free).

    PostgreSQL: a session advisory lock on a connection of its own. SQLite: ``flock`` on a
    lock file beside the database. Either is released when the holder dies, so a killed
    process never leaves a lock behind.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(name)})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
                conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # one process only
        return
    path = Path(f"{database}.lock-{lock_key(name) & 0xFFFFFFFFFFFF:012x}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
