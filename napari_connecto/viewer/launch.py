"""Open sources in a napari viewer and move it to a position in nm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from napari_connecto.viewer.layers import napari_layer_data

if TYPE_CHECKING:
    import napari

    from napari_connecto.source import SourceLike

__all__ = ["add_sources", "go_to", "view"]

DEFAULT_FIELD_OF_VIEW_VOXELS = 512
"""How many finest-scale voxels span the canvas after a jump."""


def add_sources(viewer: napari.Viewer, sources: Sequence[SourceLike]) -> list[Any]:
    """Add every layer of each source to ``viewer``; return the new layers.

    Volumes stream in the background through the viewer's streaming controller.
    """
    from napari_connecto.viewer.streaming import controller_for

    controller_for(viewer)
    added = []
    for source in sources:
        for data, meta, kind in napari_layer_data(source):
            added.append(getattr(viewer, f"add_{kind}")(data, **meta))
    return added


def go_to(viewer: napari.Viewer, at: Sequence[float], *, zoom: float | None = None) -> None:
    """Centre the view on ``at`` (z, y, x nm): dims slider at z, camera at y, x.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer to move.
    at : sequence of float
        Target position in nm, z, y, x.
    zoom : float, optional
        Camera zoom (screen pixels per nm); default shows
        :data:`DEFAULT_FIELD_OF_VIEW_VOXELS` voxels of the finest layer across.
    """
    z, y, x = (float(v) for v in at)
    if viewer.dims.ndim >= 3:
        viewer.dims.set_point(viewer.dims.ndim - 3, z)
    viewer.scene.camera.center = (z, y, x) if viewer.dims.ndisplay == 3 else (y, x)
    if zoom is None:
        from napari.layers import Image, Labels

        resolution = min(
            (float(lay.scale[-1]) for lay in viewer.layers if isinstance(lay, Image | Labels)),
            default=1.0,
        )
        width = _canvas_width(viewer)
        zoom = width / (DEFAULT_FIELD_OF_VIEW_VOXELS * resolution)
    viewer.scene.camera.zoom = zoom


def _canvas_width(viewer: napari.Viewer) -> float:
    width = viewer.canvas.size[1]
    return float(width) if width > 0 else 800.0


def view(
    *sources: SourceLike,
    at: Sequence[float] | None = None,
    viewer: napari.Viewer | None = None,
    show: bool = True,
) -> napari.Viewer:
    """Open ``sources`` in ``viewer`` (or a new one) and optionally centre on ``at`` nm.

    Returns
    -------
    napari.Viewer
        The viewer with the new layers.
    """
    import napari

    if viewer is None:
        viewer = napari.Viewer(show=show)
    add_sources(viewer, sources)
    if at is not None:
        go_to(viewer, at)
    return viewer
