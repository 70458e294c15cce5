"""Files napari-connecto keeps beside a local volume's data (locks, generation marks)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_connecto.volume.volume import Volume

__all__ = ["sidecar_path"]


def sidecar_path(volume: Volume, name: str) -> Path | None:
    """Where a file of ours named ``name`` lives for a local volume (``None`` if remote).

    Inside a folder dataset (zarr, N5, precomputed) it is ``<folder>/<name>``; beside a
    file dataset (HDF5) it is ``.<file name><name>`` in the same folder.
    """
    source = volume.source
    if source.is_remote:
        return None
    path = Path(source.location)
    if path.is_dir():
        return path / name
    return path.with_name(f".{path.name}{name}")
