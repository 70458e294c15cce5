"""A volume's data generation: a marker file the write-back bumps after every write.

Caches of what is derived from a segmentation (segment attributes, generated meshes)
are keyed by this mark, so they go stale the moment proofreading writes voxels back,
whether this process wrote them or another one did. A chunk replaced in a nested chunk
folder changes neither the volume folder's nor the level folder's modification time,
so those alone cannot tell. Writes made by other programs are not seen (recompute with
``refresh=True`` there).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from napari_connecto.volume.sidecar import sidecar_path

if TYPE_CHECKING:
    from napari_connecto.volume.volume import Volume

__all__ = ["GENERATION_FILE", "bump_generation", "generation_mark", "generation_path"]

GENERATION_FILE = ".connecto-generation"


def generation_path(volume: Volume) -> Path | None:
    """Where a local volume's mark lives (next to a file volume, e.g. HDF5); ``None`` if remote."""
    return sidecar_path(volume, GENERATION_FILE)


def bump_generation(volume: Volume) -> None:
    """Record that the volume's voxels changed (after a write-back); best effort.

    The mark is replaced atomically (a temporary file renamed over it), so a process
    killed meanwhile leaves the old mark or the new one, never an empty file. Raises
    nothing: a read-only folder only means caches are not invalidated for it.
    """
    path = generation_path(volume)
    if path is None:
        return
    temporary = path.with_name(f"{path.name}.{os.getpid()}.connecto-tmp")
    try:
        temporary.write_text(str(time.time_ns()), encoding="ascii")
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


def generation_mark(volume: Volume) -> str:
    """The volume's current mark (``""`` if it was never written by a write-back)."""
    path = generation_path(volume)
    if path is None:
        return ""
    try:
        return path.read_text(encoding="ascii").strip()[:32]
    except (OSError, UnicodeDecodeError):
        return ""
