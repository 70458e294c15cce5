"""``napari-connecto version``: freeze, list, compare, export and delete annotation versions.

Hooked into :mod:`napari_connecto.cli` with :func:`add_parser` (building the subcommand)
and :func:`run` (its handler). Errors are raised as :class:`ConnectoError` subclasses,
which ``cli.main`` prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_connecto.errors import AnnotationError

if TYPE_CHECKING:
    from napari_connecto.annotations.version_diff import VersionDiff
    from napari_connecto.annotations.versions import VersionInfo

__all__ = ["add_parser", "run"]

LIVE = "live"
"""What the command line calls the live tables (no version may take this name)."""
_DB_HELP = "SQLite file or postgresql:// URL"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``version`` command (with its subcommands) to ``subparsers``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``version`` parser.
    """
    version = subparsers.add_parser(
        "version",
        help="freeze, list, compare and export versions of an annotation store",
        description="A version is an immutable snapshot of a store's synapses, neurons and "
        "fragment -> segment assignments; later edits change the live tables only.",
    )
    sub = version.add_subparsers(dest="version_command", required=True)
    create = sub.add_parser("create", help="freeze the store as it is now under NAME")
    create.add_argument("db", metavar="DB", help=_DB_HELP)
    create.add_argument("name", metavar="NAME", help="a unique version name")
    create.add_argument("--note", default="", help="free text kept with the version")
    create.add_argument("--author", help="who froze it (default: the login name)")
    listing = sub.add_parser("list", help="list the versions, oldest first")
    listing.add_argument("db", metavar="DB", help=_DB_HELP)
    listing.add_argument("--json", action="store_true", help="print JSON")
    diff = sub.add_parser("diff", help="what changed from version A to B (default: live)")
    diff.add_argument("db", metavar="DB", help=_DB_HELP)
    diff.add_argument("a", metavar="A", help=f"a version name (or {LIVE!r})")
    diff.add_argument("b", metavar="B", nargs="?", default=LIVE, help=f"default {LIVE!r}")
    diff.add_argument("--out", metavar="CSV", help="write the added/removed/changed synapses")
    export = sub.add_parser("export", help="write the synapses of a version to a file")
    export.add_argument("db", metavar="DB", help=_DB_HELP)
    export.add_argument("name", metavar="NAME", help=f"a version name (or {LIVE!r})")
    export.add_argument("out", metavar="OUT", help=".csv, .csv.gz, .parquet or CREMI .h5")
    delete = sub.add_parser("delete", help="delete a version and its frozen rows")
    delete.add_argument("db", metavar="DB", help=_DB_HELP)
    delete.add_argument("name", metavar="NAME")
    return version  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> int:
    """Run ``napari-connecto version ...``; return the exit status (0).

    Raises
    ------
    ConnectoError
        A missing store or version, a taken or bad name, an unwritable output.
    """
    from napari_connecto._cli_annotations import open_store

    command = args.version_command
    with open_store(args.db, create=False) as store:
        if command == "create":
            author = args.author if args.author is not None else _login()
            info = store.create_version(args.name, args.note, author=author)
            sys.stdout.write(f"{_line(info)}\n")
        elif command == "list":
            _list(store.versions(), as_json=args.json)
        elif command == "diff":
            diff = store.diff_versions(_side(args.a), _side(args.b))
            sys.stdout.write(_describe(diff))
            if args.out:
                _write(Path(args.out), lambda p: changed_synapses(diff).to_csv(p, index=False))
        elif command == "export":
            _export(store.synapses_at(_side(args.name), include_self=True), Path(args.out))
        else:
            info = store.delete_version(args.name)
            sys.stdout.write(f"deleted version {info.name!r} ({info.n_synapses} synapses)\n")
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or passwd database
        return ""


def _side(name: str) -> str | None:
    return None if name.strip().lower() == LIVE else name


def _line(info: VersionInfo) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
    author = f" by {info.author}" if info.author else ""
    note = f"  {info.note}" if info.note else ""
    return (
        f"{info.name}\t{when}{author}\tedit {info.journal_seq}\t{info.n_synapses} synapses, "
        f"{info.n_neurons} neurons, {info.n_assignments} assignments{note}"
    )


def _list(infos: list[VersionInfo], *, as_json: bool) -> None:
    if as_json:
        fields = ("id", "name", "created", "author", "note", "journal_seq", "n_synapses",
                  "n_neurons", "n_assignments")  # fmt: skip
        rows = [{f: getattr(i, f) for f in fields} for i in infos]
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return
    if not infos:
        sys.stdout.write("no versions\n")
    for info in infos:
        sys.stdout.write(f"{_line(info)}\n")


def _describe(diff: VersionDiff) -> str:
    """The diff's counts, a few lines of text."""
    c = diff.counts()
    kinds = ", ".join(
        f"{g} {c[k]}" for k in c if k.startswith("synapses_changed_") and c[k]
        for g in [k.removeprefix("synapses_changed_")]
    )  # fmt: skip
    return (
        f"{diff.a or LIVE} -> {diff.b or LIVE}\n"
        f"synapses: {c['synapses_added']} added, {c['synapses_removed']} removed, "
        f"{c['synapses_changed']} changed" + (f" ({kinds})" if kinds else "") + "\n"
        f"neurons: {c['neurons_added']} added, {c['neurons_removed']} removed, "
        f"{c['neurons_changed']} changed\n"
        f"assignments: {c['assignments_changed']} fragment(s) changed segment\n"
    )


def changed_synapses(diff: VersionDiff) -> pd.DataFrame:
    """One row per synapse added, removed or changed: ``id``, ``change``, ``changed``, a/b.

    Ids are nullable ``UInt64`` (exact; empty on the side the synapse is missing from).
    """
    shown = ("pre_id", "post_id", "status", "z", "y", "x")
    parts = [diff.synapses_changed.assign(change="changed")]
    for change, frame, side in (("added", diff.synapses_added, "b"),
                                ("removed", diff.synapses_removed, "a")):  # fmt: skip
        part = pd.DataFrame({"id": frame["id"], "changed": ""})
        part = part.assign(change=change, **{f"{c}_{side}": frame[c] for c in shown})
        parts.append(part)
    columns = ["id", "change", "changed", *(f"{c}_{s}" for s in "ab" for c in shown)]
    ids = [c for c in columns if c == "id" or c.startswith(("pre_id", "post_id"))]
    parts = [p.reindex(columns=columns) for p in parts]
    # exact ids: each part's id columns become nullable UInt64 before they are stacked
    parts = [p.assign(**{c: _uint64(p[c]) for c in ids}) for p in parts]
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["id", "change"], kind="stable").reset_index(drop=True)


def _uint64(series: pd.Series) -> pd.Series:
    """A column of uint64 ids (NaN where absent) as exact nullable ``UInt64``."""
    values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
              for v in series.astype(object)]  # fmt: skip
    return pd.Series(pd.array(values, dtype="UInt64"), index=series.index)


def _export(frame: pd.DataFrame, path: Path) -> None:
    from napari_connecto.annotations.exporters import export_synapses

    try:
        n = export_synapses(frame, path)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None
    except OSError as exc:
        raise AnnotationError(f"cannot write {path}: {exc.strerror or exc}") from None
    sys.stdout.write(f"{n} synapses -> {path}\n")


def _write(path: Path, write: Any) -> None:
    """Call ``write(temporary path)``, then put the file at ``path`` atomically and durably."""
    from napari_connecto.export._atomic import ExportError, atomic_files

    try:
        with atomic_files([path]) as (tmp,):
            write(tmp)
    except ExportError as exc:  # every OSError of the write, with the path named
        raise AnnotationError(str(exc)) from None
