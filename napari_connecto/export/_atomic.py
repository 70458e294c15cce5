"""Write a set of files all or nothing: temporary names beside them, renamed at the end."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from napari_connecto.errors import ConnectoError

__all__ = ["ExportError", "atomic_files", "check_destination"]

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
    """Yield temporary paths for ``paths``; rename them into place only if the body succeeds.

    On any error the temporary files are removed and nothing at ``paths`` changes; any other
    ``OSError`` while writing (disk full, permissions) becomes :class:`ExportError`.
    """
    check_destination(paths)
    token = uuid.uuid4().hex[:12]
    temps = [p.with_name(f".{p.stem}.{token}.part{p.suffix}") for p in paths]
    finished = False
    try:
        yield temps
        for temp, path in zip(temps, paths, strict=True):
            os.replace(temp, path)
        finished = True
    except ConnectoError:  # a chunk that failed, a region error: passed on as it is
        raise
    except OSError as exc:
        raise ExportError(f"cannot write {paths[0]}: {exc}") from exc
    finally:
        if not finished:
            _remove(temps)


def _remove(temps: Sequence[Path]) -> None:
    """Delete whichever temporary files exist."""
    for temp in temps:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            logger.debug("removed unfinished %s", temp)
