"""Menu actions for SWC files: import a skeleton into the viewer, export the selected one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from napari_connecto.errors import ConnectoError
from napari_connecto.objects.swc import read_swc, write_swc
from napari_connecto.viewer.skeletons import SkeletonController, add_skeleton, controller_of

if TYPE_CHECKING:
    import napari

__all__ = ["UNIT_CHOICES", "export_swc_dialog", "import_swc_dialog"]

logger = logging.getLogger(__name__)

UNIT_CHOICES = ("as the file says (# unit:), else µm", "nm", "µm")
"""What the import dialog offers for the unit of the file's coordinates and radii."""
_UNIT_OF = {UNIT_CHOICES[1]: "nm", UNIT_CHOICES[2]: "um"}


def import_swc_dialog(
    viewer: napari.Viewer, path: str | None = None, unit: str | None = None
) -> SkeletonController | None:
    """Ask for an SWC file and its unit, then show the skeleton aligned in nm.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the skeleton is added.
    path : str, optional
        The file (asked for if not given).
    unit : str, optional
        ``"nm"``, ``"um"``...; default: the file's ``# unit:`` header, else µm (asked for
        if ``path`` is not given).

    Returns
    -------
    SkeletonController or None
        The skeleton's layers, or ``None`` if cancelled or unreadable (shown as a warning).
    """
    from napari.utils.notifications import show_warning
    from qtpy.QtWidgets import QFileDialog, QInputDialog

    if path is None:
        path, _ = QFileDialog.getOpenFileName(None, "Import SWC skeleton", "", "SWC (*.swc)")
        if not path:
            return None
        choice, ok = QInputDialog.getItem(
            None, "SWC unit", "Coordinates and radii are in:", list(UNIT_CHOICES), 0, False
        )
        if not ok:
            return None
        unit = _UNIT_OF.get(choice)
    try:
        skeleton = read_swc(path, unit=unit)
    except (ConnectoError, OSError) as exc:
        show_warning(f"Could not import {path}: {exc}")
        return None
    return add_skeleton(viewer, skeleton, name=Path(path).stem)


def export_swc_dialog(
    viewer: napari.Viewer, path: str | None = None, unit: str = "nm"
) -> Path | None:
    """Write the selected skeleton layer (nodes or edges) as SWC, unit stated in the file.

    Returns
    -------
    pathlib.Path or None
        The file written, or ``None`` if no skeleton is selected or the user cancelled.
    """
    from napari.utils.notifications import show_info, show_warning
    from qtpy.QtWidgets import QFileDialog

    controller = controller_of(viewer.layers.selection.active)
    if controller is None:
        show_warning("Select a skeleton layer first (File > IO utilities > Import SWC...)")
        return None
    if path is None:
        path, _ = QFileDialog.getSaveFileName(
            None, "Export skeleton as SWC", f"{controller.nodes.name}.swc", "SWC (*.swc)"
        )
        if not path:
            return None
    try:
        write_swc(controller.skeleton, path, unit=unit)
    except (ConnectoError, OSError) as exc:
        show_warning(f"Could not write {path}: {exc}")
        return None
    show_info(f"Skeleton written to {path} ({unit})")
    return Path(path)
