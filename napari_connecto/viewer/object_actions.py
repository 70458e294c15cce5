"""Menu actions for objects: segment meshes and skeletons of the selected segment.

Each action works on the active plugin labels layer (else the first one) and its selected
label (napari's label picker, or the neuron selected in the tables).
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_connecto.errors import ConnectoError

if TYPE_CHECKING:
    from collections.abc import Callable

    import napari
    from napari.layers import Labels

    from napari_connecto.viewer.meshes import MeshController

__all__ = [
    "enable_meshes_action",
    "export_mesh_dialog",
    "segmentation_layer",
    "show_skeleton_action",
]

logger = logging.getLogger(__name__)


def segmentation_layer(viewer: napari.Viewer) -> Labels | None:
    """The active plugin labels layer, else the first one, else ``None``."""
    from napari.layers import Labels

    def ours(layer: Any) -> bool:
        return isinstance(layer, Labels) and "connecto_source" in layer.metadata

    active = viewer.layers.selection.active
    if ours(active):
        return active  # type: ignore[return-value]
    return next((lay for lay in viewer.layers if ours(lay)), None)  # type: ignore[return-value]


def enable_meshes_action(viewer: napari.Viewer) -> MeshController | None:
    """Meshes for the segmentation: Ctrl+click toggles, the neuron table's selection shows.

    Also shows the mesh of the layer's selected label at once (switch to 3D to see it).
    """
    from napari_connecto._qt.annotation_panel import panel_of_viewer
    from napari_connecto.viewer.meshes import attach_meshes

    layer = segmentation_layer(viewer)
    if layer is None:
        viewer.status = "Meshes need a segmentation opened with napari-connecto"
        return None
    controller = attach_meshes(viewer, layer, panel_of_viewer(viewer))
    selected = int(layer.selected_label)
    if selected and selected != int(layer.metadata.get("connecto_background_label", 0)):
        controller.show(selected)
    viewer.status = f"Meshes on {layer.name}: Ctrl+click a segment, or select neurons in the table"
    return controller


def export_mesh_dialog(
    viewer: napari.Viewer, path: str | None = None, segment: int | None = None
) -> Future[Path] | None:
    """Write the mesh of the selected segment as OBJ or PLY (nm, x y z), asking for a file.

    The mesh is the one shown (its finest level), else read or generated from the
    volume; either way on a worker thread, the viewer staying responsive.

    Returns
    -------
    concurrent.futures.Future or None
        Resolves to the file written (or to the error; a notification reports either);
        ``None`` if there was nothing to export or the dialog was cancelled.
    """
    from napari.utils.notifications import show_warning

    from napari_connecto.objects.mesh_source import export_segment_mesh
    from napari_connecto.viewer.meshes import mesh_controller_of

    layer = segmentation_layer(viewer)
    if layer is None:
        show_warning("Open a segmentation with napari-connecto first")
        return None
    segment = int(layer.selected_label) if segment is None else int(segment)
    if path is None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            None, f"Export mesh of segment {segment}", f"segment_{segment}.obj",
            "Meshes (*.obj *.ply)",
        )  # fmt: skip
        if not path:
            return None
    controller = mesh_controller_of(layer)
    if controller is not None and controller.mesh_of(segment) is not None:
        job = controller.export_job(segment, path)
    else:
        source = layer.metadata["connecto_source"]
        job = functools.partial(export_segment_mesh, source, segment, path)
    return _in_background(viewer, job, segment)


def _in_background(viewer: napari.Viewer, job: Callable[[], Path], segment: int) -> Future[Path]:
    """Run a mesh export on a worker thread; report its end on the main thread."""
    from napari.utils.notifications import show_error, show_info, show_warning

    from napari_connecto.viewer.background import run_in_background

    viewer.status = f"writing the mesh of segment {segment} ..."

    def done(written: Path) -> None:
        viewer.status = f"mesh of segment {segment} written to {written.name}"
        show_info(f"Mesh of segment {segment} written to {written} (nm, x y z)")

    def failed(exc: BaseException) -> None:
        viewer.status = f"no mesh written for segment {segment}"
        if isinstance(exc, ConnectoError | OSError):
            show_warning(f"No mesh written for segment {segment}: {exc}")
        else:
            logger.error("mesh export of segment %d failed", segment, exc_info=exc)
            show_error(f"Mesh export of segment {segment} failed: {exc!r}")

    return run_in_background(job, done=done, failed=failed)


def show_skeleton_action(viewer: napari.Viewer, segment: int | None = None) -> Any:
    """Show the precomputed skeleton of the selected segment (loaded in the background)."""
    from napari_connecto.viewer.skeletons import show_segment_skeleton

    layer = segmentation_layer(viewer)
    if layer is None:
        viewer.status = "Skeletons need a segmentation opened with napari-connecto"
        return None
    segment = int(layer.selected_label) if segment is None else int(segment)
    return show_segment_skeleton(
        viewer, layer.metadata["connecto_source"], segment, color=layer.get_color(segment)
    )
