"""A volume's data generation: a marker file the write-back bumps after every write.

Caches of what is derived from a segmentation (segment attributes, generated meshes)
are keyed by this mark, so they go stale the moment proofreading writes voxels back,
whether this process wrote them or another one did. A chunk replaced in a nested chunk
folder changes neither the volume folder's nor the level folder's modification time,
so those alone cannot tell. Writes made by other programs are not seen (recompute with
``refresh=True`` there).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_connecto.volume.volume import Volume

__all__ = ["GENERATION_FILE", "bump_generation", "generation_mark", "generation_path"]

GENERATION_FILE = ".connecto-generation"


def generation_path(volume: Volume) -> Path | None:
    """Where a local volume's mark lives (next to a file volume, e.g. HDF5); ``None`` if remote."""
    source = volume.source
    if source.is_remote:
        return None
    path = Path(source.location)
    if path.is_dir():
        return path / GENERATION_FILE
    return path.with_name(f".{path.name}{GENERATION_FILE}")


def bump_generation(volume: Volume) -> None:
    """Record that the volume's voxels changed (after a write-back); best effort.

    Raises nothing: a read-only folder only means caches are not invalidated for it.
    """
    path = generation_path(volume)
    if path is None:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, str(time.time_ns()).encode())
        finally:
            os.close(fd)
    except OSError:
        return


def generation_mark(volume: Volume) -> str:
    """The volume's current mark (``""`` if it was never written by a write-back)."""
    path = generation_path(volume)
    if path is None:
        return ""
    try:
        return path.read_text(encoding="ascii").strip()[:32]
    except (OSError, UnicodeDecodeError):
        return ""
