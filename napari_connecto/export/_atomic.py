"""Write files safely: temporary names beside them, fsync'd, renamed into place, folder fsync'd.

:func:`atomic_files` is the one writer of the package (figure exports, the Neuroglancer and
version CLIs, SWC skeletons). Each file on its own is replaced atomically and durably: it is
written under a temporary name, given the usual ``0o666 & ~umask`` mode, fsync'd, renamed over
the destination with :func:`os.replace`, and the folder is fsync'd so the rename survives a
power cut.

Several files together are **not** all or nothing: there is no multi-file rename. If the
process dies between two renames, some destinations hold the new files and others the old
ones (or none). The first path (the primary file of an export) is renamed last, after the
others are durable, so a primary file with new content means the whole set was written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from napari_connecto.errors import ConnectoError

__all__ = ["ExportError", "atomic_files", "check_destination", "write_text_atomic"]

logger = logging.getLogger(__name__)


class ExportError(ConnectoError, OSError):
    """An export that could not be written (destination missing or unwritable, no writer)."""


def check_destination(paths: Sequence[Path]) -> None:
    """Raise :class:`ExportError` unless every path's folder exists and is writable."""
    for path in paths:
        folder = path.parent
        if not folder.is_dir():
            raise ExportError(f"cannot write {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ExportError(f"cannot write {path}: folder {folder} is not writable")
        if path.is_dir():
            raise ExportError(f"cannot write {path}: it is a folder")


@contextlib.contextmanager
def atomic_files(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; put them in place only if the body succeeds.

    After the body each temporary file gets mode ``0o666 & ~umask`` and is fsync'd; then
    ``paths[1:]`` are renamed into place and their folders fsync'd, then ``paths[0]``.

    Parameters
    ----------
    paths : sequence of Path
        Destinations, the primary file first; their folders must exist.

    Yields
    ------
    list of Path
        One temporary path per destination, in the same folder, for the body to write.

    Raises
    ------
    ExportError
        If a folder is missing or unwritable, or on any ``OSError`` while writing or
        renaming (disk full, permissions). A :class:`ConnectoError` from the body is passed
        on as it is.

    Notes
    -----
    If the body fails, or a temporary file cannot be synced, every temporary file is
    removed and nothing at ``paths`` changes. A rename that fails part way through a set
    leaves the files renamed before it in place (see the module docstring).
    """
    paths = [Path(p) for p in paths]
    check_destination(paths)
    token = uuid.uuid4().hex[:12]
    temps = [p.with_name(f".{p.stem}.{token}.part{p.suffix}") for p in paths]
    finished = False
    try:
        yield temps
        mode = _default_mode()
        for temp in temps:
            _sync_file(temp, mode)
        _rename(temps[1:], paths[1:])
        _rename(temps[:1], paths[:1])
        finished = True
    except ConnectoError:  # a chunk that failed, a region error: passed on as it is
        raise
    except OSError as exc:
        raise ExportError(f"cannot write {paths[0]}: {exc}") from exc
    finally:
        if not finished:
            _remove(temps)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, Unix line ends) to ``path`` through :func:`atomic_files`.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist.
    text : str
        The whole content.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ExportError
        If the folder is missing or unwritable, or the write fails (the old file is kept).
    """
    target = Path(path)
    with atomic_files([target]) as (tmp,):
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return target


def _default_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/self/status", encoding="ascii", errors="replace") as fh,
    ):
        for line in fh:
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)  # no way to read it without setting it elsewhere
    os.umask(mask)
    return 0o666 & ~mask


def _sync_file(path: Path, mode: int) -> None:
    """Give ``path`` its mode and flush its data to disk."""
    os.chmod(path, mode)
    fd = os.open(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(temps: Sequence[Path], paths: Sequence[Path]) -> None:
    """Rename each temporary file over its destination, then fsync the folders."""
    for temp, path in zip(temps, paths, strict=True):
        os.replace(temp, path)
    for folder in dict.fromkeys(p.parent for p in paths):
        _fsync_directory(folder)


def _fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("cannot fsync directory %s", directory)
    finally:
        os.close(fd)


def _remove(temps: Sequence[Path]) -> None:
    """Delete whichever temporary files exist."""
    for temp in temps:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            logger.debug("removed unfinished %s", temp)
