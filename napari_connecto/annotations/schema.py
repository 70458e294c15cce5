"""The annotation store's tables (SQLAlchemy Core), schema version and migrations."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy.dialects import sqlite

from napari_connecto.errors import SchemaVersionError

__all__ = [
    "SCHEMA_VERSION",
    "assignments",
    "bookmarks",
    "edit_keys",
    "edit_voxels",
    "edits",
    "ensure_schema",
    "indexes_of",
    "meta",
    "metadata",
    "neurons",
    "synapses",
    "version_assignments",
    "version_neurons",
    "version_synapses",
    "versions",
]

SCHEMA_VERSION = 3
"""Version of the tables below; stored in ``connecto_meta`` under ``schema_version``."""

metadata = MetaData()

# INTEGER (not BIGINT) on SQLite makes the primary key the rowid: no second index.
_ID = BigInteger().with_variant(sqlite.INTEGER(), "sqlite")

meta = Table(
    "connecto_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

neurons = Table(
    "neurons",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("type", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False, server_default=""),
    Column("notes", Text, nullable=False, server_default=""),
    Column("z", Float),
    Column("y", Float),
    Column("x", Float),
    Column("n_pre", Integer, nullable=False, server_default="0"),
    Column("n_post", Integer, nullable=False, server_default="0"),
    # (column, id): the neuron table's sort order, ties by id, read straight off the index
    Index("ix_neurons_name", "name", "id"),
    Index("ix_neurons_type", "type", "id"),
    Index("ix_neurons_status", "status", "id"),
    Index("ix_neurons_n_pre", "n_pre", "id"),
    Index("ix_neurons_n_post", "n_post", "id"),
)

synapses = Table(
    "synapses",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=False),
    Column("pre_id", BigInteger, nullable=False),
    Column("post_id", BigInteger, nullable=False),
    *(
        Column(f"{site}_{axis}", Float, nullable=False)
        for site in ("pre", "post")
        for axis in "zyx"
    ),
    Column("z", Float, nullable=False),
    Column("y", Float, nullable=False),
    Column("x", Float, nullable=False),
    Column("cell", BigInteger, nullable=False),
    Column("confidence", Float),
    Column("status", String(16), nullable=False, server_default="unreviewed"),
    Column("reviewer", Text, nullable=False, server_default=""),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Index("ix_synapses_pre", "pre_id", "post_id"),
    Index("ix_synapses_post", "post_id", "pre_id"),
    Index("ix_synapses_status", "status"),
)

# The spatial index covers every column, so a box query reads the synapses of a view from
# a few neighbouring index pages instead of one scattered table row each (10M synapses:
# 15 -> 4 ms per view). It doubles the synapse table's size on disk. SQLite indexes every
# column as a key; PostgreSQL keys on the cell and position and INCLUDEs the rest (a key
# holds at most ~2.7 kB, and reviewer names are free text).
_SPATIAL_KEY = ("cell", "z", "y", "x")
_SPATIAL_REST = tuple(c.name for c in synapses.c if c.name not in _SPATIAL_KEY)
Index(
    "ix_synapses_cell",
    *(synapses.c[name] for name in (*_SPATIAL_KEY, *_SPATIAL_REST)),
    info={"dialect": "sqlite"},
).ddl_if(dialect="sqlite")
Index(
    "ix_synapses_cell_pg",
    *(synapses.c[name] for name in _SPATIAL_KEY),
    postgresql_include=list(_SPATIAL_REST),
    info={"dialect": "postgresql"},
).ddl_if(dialect="postgresql")


def indexes_of(table: Table, dialect: str) -> list[Index]:
    """The indexes of ``table`` that exist in a database of ``dialect``."""
    return [i for i in table.indexes if i.info.get("dialect", dialect) == dialect]


bookmarks = Table(
    "bookmarks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("z", Float, nullable=False),
    Column("y", Float, nullable=False),
    Column("x", Float, nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Column("tags", Text, nullable=False, server_default=""),
    Column("created", Float, nullable=False),
)

# -- proofreading (schema version 2) ----------------------------------------------------
# The edit journal: one row per edit, undo or redo, committed before the edit is applied
# anywhere else. ``writeback`` says whether voxels still have to reach the volume.
edits = Table(
    "edits",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("volume", Text, nullable=False, server_default=""),
    Column("kind", String(32), nullable=False),
    Column("ref", Integer),  # the edit an undo/redo acts on
    Column("state", String(16), nullable=False),  # applied | undone | discarded | marker
    Column("writeback", String(16), nullable=False),  # none | pending | done | failed
    Column("error", Text, nullable=False, server_default=""),
    Column("author", Text, nullable=False, server_default=""),
    Column("session", String(64), nullable=False, server_default=""),
    Column("request", String(64), nullable=False, unique=True),
    Column("created", Float, nullable=False),
    Column("summary", Text, nullable=False, server_default=""),
    Column("payload", Text, nullable=False, server_default="{}"),
    Index("ix_edits_author_state", "author", "state", "seq"),
    Index("ix_edits_writeback", "writeback", "seq"),
)

# What each edit touched ("seg:<volume>:<id>", "syn:<id>"): conflicts are found here.
edit_keys = Table(
    "edit_keys",
    metadata,
    Column("seq", Integer, nullable=False),
    Column("key", Text, nullable=False),
    Index("ix_edit_keys_key", "key", "seq"),
    Index("ix_edit_keys_seq", "seq"),
)

# Voxels a paint edit changed: the box it covers, before and after (zlib, little-endian).
edit_voxels = Table(
    "edit_voxels",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("scale", Integer, nullable=False, server_default="0"),
    *(Column(f"start_{a}", BigInteger, nullable=False) for a in "zyx"),
    *(Column(f"size_{a}", Integer, nullable=False) for a in "zyx"),
    Column("dtype", String(16), nullable=False),
    Column("before", LargeBinary, nullable=False),
    Column("after", LargeBinary, nullable=False),
)

# Fragment -> segment (the agglomeration). A fragment without a row is its own segment.
assignments = Table(
    "assignments",
    metadata,
    Column("volume", Text, primary_key=True),
    Column("fragment", BigInteger, primary_key=True, autoincrement=False),
    Column("segment", BigInteger, nullable=False),
    Index("ix_assignments_segment", "volume", "segment"),
)

_PROOFREADING = (edits, edit_keys, edit_voxels, assignments)

# -- versions (schema version 3) --------------------------------------------------------
# A version is an immutable snapshot of the synapses, neurons and assignments, copied in
# one transaction (see :mod:`.versions`). Snapshot rows are never updated; deleting a
# version deletes all of its rows.
versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created", Float, nullable=False),
    Column("author", Text, nullable=False, server_default=""),
    Column("note", Text, nullable=False, server_default=""),
    Column("journal_seq", Integer, nullable=False, server_default="0"),  # last edit frozen
    Column("n_synapses", Integer, nullable=False, server_default="0"),
    Column("n_neurons", Integer, nullable=False, server_default="0"),
    Column("n_assignments", Integer, nullable=False, server_default="0"),
)


def _snapshot_of(source: Table, *indexes: tuple[str, ...]) -> Table:
    """A table holding ``source``'s rows per version: ``version`` + its columns."""
    name = f"version_{source.name}"
    keys = ["version", *(c.name for c in source.primary_key.columns)]
    columns = [
        Column(c.name, BigInteger if c.name == "id" else c.type, nullable=c.nullable)
        for c in source.c
    ]
    return Table(
        name,
        metadata,
        Column("version", Integer, nullable=False),
        *columns,
        PrimaryKeyConstraint(*keys, name=f"pk_{name}"),
        *(Index(f"ix_{name}_{'_'.join(cols)}", "version", *cols) for cols in indexes),
    )


version_synapses = _snapshot_of(synapses, ("pre_id",), ("post_id",), ("cell",))
version_neurons = _snapshot_of(neurons)
version_assignments = _snapshot_of(assignments, ("volume", "segment"))

_VERSIONS = (versions, version_synapses, version_neurons, version_assignments)


def _add_proofreading(conn: Connection) -> None:
    """Version 1 -> 2: the edit journal and the fragment -> segment assignments."""
    for table in _PROOFREADING:
        table.create(conn, checkfirst=True)


def _add_versions(conn: Connection) -> None:
    """Version 2 -> 3: named, immutable snapshots (versions) and their rows."""
    for table in _VERSIONS:
        table.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_proofreading, 2: _add_versions}
"""``MIGRATIONS[v](conn)`` upgrades a version-``v`` store to ``v + 1``."""


def ensure_schema(conn: Connection, *, where: str) -> int:
    """Create the tables in an empty database, or migrate an older store; return its version.

    Parameters
    ----------
    conn : sqlalchemy.Connection
        An open connection inside a transaction.
    where : str
        The database, for messages.

    Returns
    -------
    int
        The schema version the database had before (0 for a new store).

    Raises
    ------
    SchemaVersionError
        If the database holds other tables and no store, or a newer schema version.
    """
    names = set(inspect(conn).get_table_names())
    if meta.name not in names:
        ours = {t.name for t in metadata.sorted_tables}
        if names - ours - {"sqlite_sequence"}:
            raise SchemaVersionError(
                f"{where} is a database with other tables and no annotation store "
                f"(found {', '.join(sorted(names)[:5])})"
            )
        metadata.create_all(conn)
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        return 0
    found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    try:
        version = int(found) if found is not None else -1
    except ValueError:
        version = -1
    if version < 1:
        raise SchemaVersionError(f"{where}: no valid schema_version in {meta.name} ({found!r})")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has schema version {version}; this napari-connecto reads up to "
            f"{SCHEMA_VERSION}: upgrade napari-connecto"
        )
    for step in range(version, SCHEMA_VERSION):
        MIGRATIONS[step](conn)
        conn.execute(
            meta.update().where(meta.c.key == "schema_version").values(value=str(step + 1))
        )
    return version
