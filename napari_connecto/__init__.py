"""napari-connecto: a connectomics workstation in napari.

Open any of the field's volume formats as one resolution-aware :class:`Volume`
(z, y, x, nanometres) and view it in napari.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari_connecto.backends.base import Entry, PointSet, VolumeBackend
from napari_connecto.backends.registry import backend_names, register_backend
from napari_connecto.errors import ConnectoError
from napari_connecto.geometry import BBox, Vec3
from napari_connecto.opening import list_contents, open_points, open_volume
from napari_connecto.source import Source, parse_source
from napari_connecto.volume import NormalizeIntensity, RemapIds, Scale, Volume

if TYPE_CHECKING:
    import napari

__all__ = [
    "AnnotationStore",
    "BBox",
    "ConnectoError",
    "Entry",
    "NormalizeIntensity",
    "PointSet",
    "Proofreader",
    "RemapIds",
    "Scale",
    "Source",
    "Vec3",
    "Volume",
    "VolumeBackend",
    "backend_names",
    "list_contents",
    "open_points",
    "open_volume",
    "parse_source",
    "read_annotations",
    "register_backend",
    "view",
]

__version__ = "0.1.0"


def view(*sources: Any, at: Any = None, viewer: napari.Viewer | None = None) -> napari.Viewer:
    """Open ``sources`` in a napari viewer (created if not given) and return it.

    Parameters
    ----------
    *sources : str, os.PathLike or Source
        Anything :func:`open_volume` accepts; containers add all their layers.
    at : sequence of float, optional
        z, y, x position in nm to centre the view on.
    viewer : napari.Viewer, optional
        Add to this viewer instead of a new one.

    Returns
    -------
    napari.Viewer
        The viewer holding the new layers.
    """
    from napari_connecto.viewer.launch import view as _view

    return _view(*sources, at=at, viewer=viewer)


def __getattr__(name: str) -> Any:
    """Load the annotation store and proofreading (SQLAlchemy, pandas) only when asked for."""
    if name == "AnnotationStore":
        from napari_connecto.annotations.store import AnnotationStore

        return AnnotationStore
    if name == "Proofreader":
        from napari_connecto.proofreading.proofreader import Proofreader

        return Proofreader
    if name == "read_annotations":
        from napari_connecto.annotations.importers import read_annotations

        return read_annotations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
