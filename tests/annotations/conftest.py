"""Annotation-store fixtures: every store test runs on SQLite and on PostgreSQL.

``store_url`` is parametrised over ``sqlite`` (a fresh file in ``tmp_path``) and
``postgresql`` (a fresh schema in the server named by ``$NAPARI_CONNECTO_TEST_POSTGRES``,
default :data:`DEFAULT_POSTGRES`, dropped with everything in it after the test). Select
one backend with ``-k sqlite`` or ``-k postgresql``.

Without a reachable server the PostgreSQL half is skipped with the reason, except when
``$CI`` is set: there it fails, so CI never passes by silently skipping PostgreSQL
(``.ci/install`` installs, starts and provisions the server).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from napari_connecto.annotations import AnnotationStore

POSTGRES_ENV = "NAPARI_CONNECTO_TEST_POSTGRES"
DEFAULT_POSTGRES = "postgresql://connecto:connecto@127.0.0.1:5432/connecto_test"
_CONNECT_TIMEOUT_S = 5
_LOCK_TIMEOUT = "10s"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _libpq_url(url: str) -> str:
    """The URL libpq understands (SQLAlchemy's ``+driver`` suffix dropped)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":")[0]
    return f"{scheme}://{user}:***@{host}"


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server URL for tests, checked once; skipped (or failed in CI) if down."""
    url = os.environ.get(POSTGRES_ENV, "").strip() or DEFAULT_POSTGRES
    try:
        with _connect(url) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = (
            f"PostgreSQL not reachable at {_redacted(url)} "
            f"(set ${POSTGRES_ENV}; `bash .ci/install` provisions one): "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        )
        if _in_ci():
            pytest.fail(f"{reason}; $CI is set, so this is an error, not a skip", pytrace=False)
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose connections live in a fresh schema of their own, dropped afterwards.

    The schema is set through libpq's ``options=-csearch_path=...``; connections get an
    ``application_name`` equal to the schema, so any the test leaks are terminated
    before the schema is dropped.
    """
    name = f"test_{uuid.uuid4().hex[:16]}"
    with _connect(postgres_server) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    glue = "&" if "?" in postgres_server else "?"
    options = quote(f"-csearch_path={name}", safe="")
    yield f"{postgres_server}{glue}options={options}&application_name={name}"
    with _connect(postgres_server) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f"SET lock_timeout = '{_LOCK_TIMEOUT}'")
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where to open an empty store: a SQLite file path, or a PostgreSQL URL (own schema)."""
    if request.param == "sqlite":
        return str(tmp_path / "annotations.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str) -> Iterator[AnnotationStore]:
    """An empty :class:`AnnotationStore` at ``store_url``, closed after the test."""
    opened = AnnotationStore.open(store_url)
    yield opened
    opened.close()
