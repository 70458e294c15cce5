"""Figure exports from a viewer: a screenshot with a scale bar, and the region on screen.

* :func:`screenshot_with_scale_bar` grabs the canvas and draws a round-length scale bar
  from the camera zoom.
* :func:`export_view_region` finds the plugin's image and segmentation layers, works out
  the nm region the canvas shows (current z plane, or a z-range), reads the volumes as
  the layers show them (a streamed layer's volume with its read processors, e.g. the
  proofreading remap of fragments to segments) and exports TIFF/PNG/movie on a worker
  thread, in napari's own segment colours.
* :func:`export_region_dialog` and :func:`screenshot_dialog` are the menu actions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.export._atomic import ExportError, atomic_files
from napari_connecto.export.figure import ExportResult, ViewStyle, export_region
from napari_connecto.export.scalebar import ScaleBar, draw_scale_bar
from napari_connecto.geometry import BBox
from napari_connecto.viewer.background import run_in_background

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from napari_connecto.volume.volume import Volume

__all__ = [
    "ExportChoice",
    "ask_export_choice",
    "export_region_dialog",
    "export_view_region",
    "nm_per_screen_pixel",
    "plane_range",
    "plugin_layers",
    "screenshot_dialog",
    "screenshot_with_scale_bar",
    "visible_box",
]

logger = logging.getLogger(__name__)

_SOURCE_KEY = "connecto_source"


def _require_2d(viewer: napari.Viewer) -> None:
    """Raise :class:`ExportError` unless the canvas shows a 2-D y, x slice."""
    if viewer.dims.ndisplay != 2:
        raise ExportError("switch the viewer to 2-D first: exports need a flat y, x view")
    ndim = viewer.dims.ndim
    if tuple(viewer.dims.displayed) != (ndim - 2, ndim - 1):
        raise ExportError("exports need the y, x axes displayed (reset the axis order)")


def _canvas_hw(viewer: napari.Viewer) -> tuple[float, float]:
    """The canvas size in logical pixels, height and width."""
    h, w = viewer.canvas.size
    if h <= 0 or w <= 0:
        raise ExportError("the canvas has no size yet (is the viewer shown?)")
    return float(h), float(w)


def nm_per_screen_pixel(viewer: napari.Viewer, image_width: int | None = None) -> float:
    """World nm per pixel of a canvas screenshot ``image_width`` pixels wide.

    ``camera.zoom`` is logical canvas pixels per nm; a screenshot taken with a scale
    factor (or on a high-DPI screen) has more pixels across the same nm.
    """
    _, w = _canvas_hw(viewer)
    pixels = w if image_width is None else float(image_width)
    return w / float(viewer.scene.camera.zoom) / pixels


def screenshot_with_scale_bar(
    viewer: napari.Viewer, path: str | Path, *, scale: float = 1, corner: str = "bottom-right"
) -> ScaleBar:
    """Save a canvas screenshot with a scale bar of a round length in nm or µm.

    Parameters
    ----------
    viewer : napari.Viewer
        A viewer showing a 2-D slice.
    path : path
        PNG (or any format Pillow writes by suffix) to write, atomically.
    scale : float
        Screenshot scale factor (2 gives twice the pixels; the bar stays true).
    corner : str
        ``"bottom-right"`` (default), ``"bottom-left"``, ``"top-right"``, ``"top-left"``.

    Returns
    -------
    ScaleBar
        The bar drawn (its nm length, pixel length, label and position).

    Raises
    ------
    ExportError
        If the view is 3-D or the destination cannot be written.
    """
    from PIL import Image

    _require_2d(viewer)
    path = Path(path)
    shot = np.asarray(viewer.screenshot(canvas_only=True, scale=scale, flash=False))
    nm_pp = nm_per_screen_pixel(viewer, shot.shape[1])
    drawn, bar = draw_scale_bar(shot, nm_pp, corner=corner)  # type: ignore[arg-type]
    with atomic_files([path]) as (tmp,):
        Image.fromarray(drawn).save(tmp)
    logger.info("screenshot with a %s scale bar saved to %s", bar.label, path)
    return bar


def plugin_layers(viewer: napari.Viewer) -> tuple[Layer | None, Layer | None]:
    """The topmost visible plugin image layer and labels layer (``None`` where absent)."""
    from napari.layers import Image, Labels

    image = labels = None
    for layer in reversed(viewer.layers):
        if not layer.visible or _SOURCE_KEY not in layer.metadata:
            continue
        if image is None and isinstance(layer, Image):
            image = layer
        elif labels is None and isinstance(layer, Labels):
            labels = layer
    return image, labels


def visible_box(
    viewer: napari.Viewer, layer: Layer, z_range: Sequence[float] | None = None
) -> BBox:
    """The region in volume nm that the canvas shows of ``layer``.

    napari puts voxel centres at ``translate + i * scale``; volumes index voxel corners,
    so the world rectangle is shifted by half a finest voxel. The z extent is the current
    plane unless ``z_range`` (volume nm, z0, z1) is given.
    """
    _require_2d(viewer)
    h, w = _canvas_hw(viewer)
    zoom = float(viewer.scene.camera.zoom)
    cy, cx = (float(v) for v in viewer.scene.camera.center[-2:])
    rz, ry, rx = (float(v) for v in layer.scale[-3:])
    tz = float(layer.translate[-3])
    if z_range is None:
        plane = round((float(viewer.dims.point[-3]) - tz) / rz)
        z0, z1 = tz + plane * rz, tz + (plane + 1) * rz
    else:
        z0, z1 = (float(v) for v in z_range)
    half_y, half_x = h / (2 * zoom), w / (2 * zoom)
    start = (z0 + 0.25 * rz, cy - half_y + ry / 2, cx - half_x + rx / 2)
    stop = (z1 - 0.25 * rz, cy + half_y + ry / 2, cx + half_x + rx / 2)
    return BBox.of(start, stop)


def _layer_colors(layer: Layer) -> Any:
    """The colour napari shows for each id (the layer's own colormap)."""
    colormap = layer.colormap

    def colors(ids: np.ndarray) -> np.ndarray:
        return np.asarray(colormap.map(ids), dtype=np.float32).reshape(len(ids), 4)

    return colors


def _displayed_volume(layer: Layer) -> Volume:
    """The volume as ``layer`` shows it: its stream's, read processors and all, else reopened.

    In a proofreading session the stream reads through the display remap (fragments ->
    segments); the stored source alone would give fragment ids and colours.
    """
    from napari_connecto.opening import open_volume
    from napari_connecto.viewer.streaming import stream_of

    stream = stream_of(layer)
    if stream is not None:
        return stream.volume.volume
    return open_volume(layer.metadata[_SOURCE_KEY])


def export_view_region(
    viewer: napari.Viewer,
    path: str | Path,
    *,
    z_range: Sequence[float] | None = None,
    scale: int | None = None,
    opacity: float | None = None,
    outline: bool = False,
    fps: float = 5.0,
) -> Future[ExportResult]:
    """Export what the canvas shows (current plane or ``z_range``) on a worker thread.

    Ids and colours are those on screen: a streamed layer is read through its volume's read
    processors (during proofreading, segments rather than stored fragment ids).

    Parameters
    ----------
    viewer : napari.Viewer
        A viewer with plugin layers (``metadata["connecto_source"]``), 2-D view.
    path : path
        ``.tif``, ``.png`` (one per plane) or ``.gif``; see
        :func:`napari_connecto.export.figure.export_region`.
    z_range : sequence of float, optional
        z0, z1 in nm (stop exclusive); default the plane on screen.
    scale : int, optional
        Scale index to export (default 0, the finest).
    opacity : float, optional
        Segment colour weight; default the labels layer's opacity.
    outline : bool
        Draw segment boundaries at full colour.
    fps : float
        Frame rate of a movie.

    Returns
    -------
    concurrent.futures.Future
        Resolves (on the main thread, as Qt delivers it) to the
        :class:`~napari_connecto.export.figure.ExportResult`, or to the error. The
        status bar reports either.

    Raises
    ------
    ExportError
        If there is no plugin layer or the view is 3-D.
    """
    image_layer, labels_layer = plugin_layers(viewer)
    first = image_layer or labels_layer
    if first is None:
        raise ExportError("no napari-connecto image or segmentation layer is visible")
    box = visible_box(viewer, first, z_range)
    style = ViewStyle()
    if labels_layer is not None:
        style = ViewStyle(
            opacity=float(labels_layer.opacity if opacity is None else opacity),
            outline=outline,
            colors=_layer_colors(labels_layer),
            background=labels_layer.metadata.get("connecto_background_label"),
        )
    image = _displayed_volume(image_layer) if image_layer is not None else None
    labels = _displayed_volume(labels_layer) if labels_layer is not None else None
    kwargs = {"box": box, "image": image, "labels": labels, "scale": scale, "style": style}
    path = Path(path)
    viewer.status = f"exporting to {path.name} ..."

    def done(result: ExportResult) -> None:
        viewer.status = f"exported {len(result.paths)} file(s): {result.paths[0]}"

    def failed(exc: BaseException) -> None:
        viewer.status = f"export failed: {exc}"
        logger.warning("export to %s failed: %s", path, exc)

    return run_in_background(export_region, path, fps=fps, done=done, failed=failed, **kwargs)


def plane_range(viewer: napari.Viewer, layer: Layer, planes: int) -> tuple[float, float]:
    """The nm z-range of ``planes`` finest planes of ``layer`` from the one on screen."""
    rz, tz = float(layer.scale[-3]), float(layer.translate[-3])
    plane = round((float(viewer.dims.point[-3]) - tz) / rz)
    return tz + plane * rz, tz + (plane + max(1, int(planes))) * rz


def screenshot_dialog(viewer: napari.Viewer) -> ScaleBar | None:
    """Ask for a PNG file and save the canvas with a scale bar there (menu action)."""
    from napari.utils.notifications import show_error, show_info
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(
        None, "Screenshot with scale bar", "screenshot.png", "PNG image (*.png)"
    )
    if not path:
        return None
    try:
        bar = screenshot_with_scale_bar(viewer, path)
    except ExportError as exc:
        show_error(str(exc))
        return None
    show_info(f"saved {path} (scale bar {bar.label})")
    return bar


def export_region_dialog(viewer: napari.Viewer) -> Future[ExportResult] | None:
    """Ask where and how many planes, then export the region on screen (menu action)."""
    from napari.utils.notifications import show_error

    choice = ask_export_choice()
    if choice is None:
        return None
    try:
        image_layer, labels_layer = plugin_layers(viewer)
        first = image_layer or labels_layer
        if first is None:
            raise ExportError("no napari-connecto image or segmentation layer is visible")
        return export_view_region(
            viewer,
            choice.path,
            z_range=plane_range(viewer, first, choice.planes),
            opacity=choice.opacity,
            outline=choice.outline,
            fps=choice.fps,
        )
    except ExportError as exc:
        show_error(str(exc))
        return None


_FILTERS = "TIFF stack (*.tif);;PNG per plane (*.png);;GIF movie (*.gif);;MP4 movie (*.mp4)"


@dataclass(frozen=True, slots=True)
class ExportChoice:
    """What the user asked for in the export dialog."""

    path: str
    """Destination (its suffix picks TIFF, PNGs or a movie)."""
    planes: int
    """Number of z-planes from the one on screen."""
    opacity: float
    """Segment colour weight."""
    outline: bool
    """Draw segment boundaries."""
    fps: float
    """Movie frame rate."""


def ask_export_choice(accept: bool | None = None) -> ExportChoice | None:
    """Show the export form; return the choice, or ``None`` if cancelled.

    ``accept`` (tests) skips the modal loop: ``True`` takes the defaults, ``False`` cancels.
    """
    from qtpy.QtWidgets import (
        QCheckBox,
        QDialog,
        QDialogButtonBox,
        QDoubleSpinBox,
        QFileDialog,
        QFormLayout,
        QLineEdit,
        QPushButton,
        QSpinBox,
    )

    dialog = QDialog()
    dialog.setWindowTitle("Export region on screen")
    path = QLineEdit("region.tif")
    browse = QPushButton("Browse...")

    def pick() -> None:
        chosen, _ = QFileDialog.getSaveFileName(dialog, "Export region", path.text(), _FILTERS)
        if chosen:
            path.setText(chosen)

    browse.clicked.connect(pick)
    planes, opacity, fps = QSpinBox(), QDoubleSpinBox(), QDoubleSpinBox()
    planes.setRange(1, 100000)
    opacity.setRange(0.0, 1.0)
    opacity.setSingleStep(0.1)
    opacity.setValue(0.5)
    fps.setRange(0.1, 120.0)
    fps.setValue(5.0)
    outline = QCheckBox("segment boundaries")
    buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form = QFormLayout(dialog)
    for label, widget in (("File", path), ("", browse), ("z-planes from this one", planes)):
        form.addRow(label, widget)
    for label, widget in (("Segment opacity", opacity), ("", outline), ("Movie fps", fps)):
        form.addRow(label, widget)
    form.addRow(buttons)
    ok = dialog.exec_() == QDialog.Accepted if accept is None else accept
    choice = ExportChoice(
        path.text().strip(), planes.value(), opacity.value(), outline.isChecked(), fps.value()
    )
    dialog.deleteLater()
    return choice if ok and choice.path else None
