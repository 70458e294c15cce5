"""Neuroglancer states in a napari viewer: capture the view, apply a state, menu dialogs.

:func:`capture_view_state` reads the plugin's layers (their ``connecto_source``), the
position (dims slider z, camera y, x), the zoom and 2D/3D; :func:`apply_view_state` opens
each source the way the reader does (streaming), then moves the camera.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_connecto.errors import ConnectoError
from napari_connecto.export._atomic import write_text_atomic
from napari_connecto.interop.ngbuild import (
    ANNOTATION_ID_COLUMN,
    annotations_from_frame,
    annotations_from_points,
)
from napari_connecto.interop.ngsource import voxel_centre_shift
from napari_connecto.interop.ngstate import (
    ExportResult,
    LayerState,
    SynapseAnnotation,
    ViewState,
    from_ng_state,
    to_ng_state,
)
from napari_connecto.source import parse_source

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels, Layer

    from napari_connecto.annotations.store import AnnotationStore

__all__ = [
    "VISIBLE_SEGMENTS_KEY",
    "apply_view_state",
    "capture_view_state",
    "export_ng_state",
    "export_ng_state_dialog",
    "open_ng_state",
    "open_ng_state_dialog",
]

logger = logging.getLogger(__name__)

VISIBLE_SEGMENTS_KEY = "connecto_visible_segments"
"""Labels-layer metadata key: the segments shown (a list of ints), e.g. from a state."""
PRE_COLOR, POST_COLOR = "#ff3b30", "#2f7bff"
POINT_SIZE_VOXELS = 12.0


def _segments_of(layer: Labels, explicit: Sequence[int] | None) -> tuple[int, ...]:
    """Segments a labels layer shows: the explicit list, else the marked ones, else the selected."""
    if explicit is not None:
        return tuple(int(s) for s in explicit)
    marked = [int(s) for s in layer.metadata.get(VISIBLE_SEGMENTS_KEY, ())]
    if layer.show_selected_label:
        selected = int(layer.selected_label)
        return tuple(dict.fromkeys([selected, *marked]))
    return tuple(marked)


def _volume_layer_state(layer: Layer, segments: Mapping[str, Sequence[int]]) -> LayerState:
    from napari.layers import Labels

    is_labels = isinstance(layer, Labels)
    return LayerState(
        name=layer.name,
        kind="segmentation" if is_labels else "image",
        source=str(layer.metadata["connecto_source"]),
        visible=bool(layer.visible),
        opacity=float(layer.opacity),
        segments=_segments_of(layer, segments.get(layer.name)) if is_labels else (),
    )


def _points_synapses(layer: Layer) -> tuple[SynapseAnnotation, ...]:
    """Synapses of a Points layer (data in world nm), ``()`` if it holds none."""
    features = layer.features
    if not isinstance(features, pd.DataFrame) or not len(features):
        return ()
    world = np.asarray(layer.data, dtype=np.float64)[:, -3:] * np.asarray(layer.scale[-3:])
    world = world + np.asarray(layer.translate[-3:])
    return annotations_from_points(world, features)


def capture_view_state(
    viewer: napari.Viewer,
    *,
    annotations: AnnotationStore | None = None,
    segments: Mapping[str, Sequence[int]] | None = None,
) -> ViewState:
    """What ``viewer`` shows, as a :class:`~napari_connecto.interop.ngstate.ViewState`.

    Parameters
    ----------
    viewer : napari.Viewer
        A viewer with layers the plugin made (others are ignored).
    annotations : AnnotationStore, optional
        The synapses in the box around the view come from here (instead of from points
        layers with pre/post sites).
    segments : mapping of str to sequence of int, optional
        Labels layer name -> segments to show; default the layer's selected label when
        it shows only that one, plus any listed under :data:`VISIBLE_SEGMENTS_KEY`.

    Returns
    -------
    ViewState
        The view; its ``warnings`` name labels layers whose ids are proofread segments
        (read through a local remap) that the Neuroglancer source does not know.

    Raises
    ------
    ValueError
        If no layer of the viewer came from the plugin.
    """
    from napari.layers import Image, Labels, Points

    from napari_connecto.viewer.synapse_overlay import view_box, view_position

    layers: list[LayerState] = []
    synapses: list[SynapseAnnotation] = []
    warnings: list[str] = []
    first = None
    for layer in viewer.layers:
        if isinstance(layer, Image | Labels) and "connecto_source" in layer.metadata:
            first = first or layer
            layers.append(_volume_layer_state(layer, segments or {}))
            if isinstance(layer, Labels) and _reads_remapped(layer):
                warnings.append(
                    f"{layer.name}: segment ids are proofread segments (a local remap of "
                    "fragments); Neuroglancer's source does not know them and shows the "
                    "stored fragments"
                )
        elif isinstance(layer, Points) and annotations is None and layer.visible:
            synapses.extend(_points_synapses(layer))
    if first is None:
        raise ValueError("no napari-connecto image or labels layer in the viewer")
    if annotations is not None:
        synapses.extend(annotations_from_frame(annotations.synapses_in_box(view_box(viewer))))
    if synapses:
        layers.append(LayerState("synapses", "annotation", annotations=tuple(synapses)))
    from napari_connecto.geometry import Vec3

    return ViewState(
        layers=tuple(layers),
        position=view_position(viewer),
        resolution=Vec3(*(float(v) for v in first.scale[-3:])),
        zoom=float(viewer.scene.camera.zoom),
        ndisplay=int(viewer.dims.ndisplay),
        voxel_shift=voxel_centre_shift(str(first.metadata["connecto_source"])),
        canvas_height=max(1, int(viewer.canvas.size[0])),
        warnings=tuple(warnings),
    )


def _reads_remapped(layer: Labels) -> bool:
    """Whether a labels layer streams through read processors (e.g. the proofreading remap)."""
    from napari_connecto.viewer.streaming import stream_of

    stream = stream_of(layer)
    return stream is not None and bool(stream.volume.volume.read_processors)


def _add_volume(viewer: napari.Viewer, layer: LayerState) -> Layer:
    """Open one volume of ``layer.source`` as a streaming layer (as the reader does)."""
    from napari_connecto.viewer.layers import napari_layer_data
    from napari_connecto.viewer.streaming import controller_for

    controller_for(viewer)
    wanted = str(parse_source(layer.source))
    kind = "labels" if layer.kind == "segmentation" else "image"
    candidates = [item for item in napari_layer_data(layer.source) if item[2] == kind]
    if not candidates:
        raise ConnectoError(f"{layer.source}: no {layer.kind} volume")
    exact = [c for c in candidates if c[1]["metadata"]["connecto_source"] == wanted]
    data, meta, _ = (exact or candidates)[0]
    meta.update(name=layer.name, visible=layer.visible, opacity=layer.opacity)
    added = getattr(viewer, f"add_{kind}")(data, **meta)
    if layer.kind == "segmentation" and layer.segments:
        added.metadata[VISIBLE_SEGMENTS_KEY] = [int(s) for s in layer.segments]
        added.selected_label = int(layer.segments[0])
        added.show_selected_label = True
    return added


def _synapse_numbers(annotations: Sequence[SynapseAnnotation]) -> list[int]:
    """A uint64 per annotation: its id if decimal, else a number no decimal id uses."""
    numeric = [
        int(a.id) if a.id.isascii() and a.id.isdigit() and int(a.id) < 2**64 else None
        for a in annotations
    ]
    taken = {n for n in numeric if n is not None}
    spare = (n for n in itertools.count(1) if n not in taken)
    return [n if n is not None else next(spare) for n in numeric]


def _add_annotations(viewer: napari.Viewer, layer: LayerState, state: ViewState) -> Layer:
    """A Points layer of the annotation sites (pre red, post blue, point red).

    Features ``synapse`` (uint64), ``site`` (pre/post/point) and ``annotation`` (the
    Neuroglancer id, so ids that are not numbers survive a round trip).
    """
    rows = []
    for ident, ann in zip(_synapse_numbers(layer.annotations), layer.annotations, strict=True):
        rows.append((ann.pre.as_tuple(), ident, "pre" if ann.post is not None else "point", ann.id))
        if ann.post is not None:
            rows.append((ann.post.as_tuple(), ident, "post", ann.id))
    data = np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, 3)
    features = pd.DataFrame(
        {
            "synapse": np.array([r[1] for r in rows], dtype=np.uint64),
            "site": [r[2] for r in rows],
            ANNOTATION_ID_COLUMN: [r[3] for r in rows],
        }
    )
    size = POINT_SIZE_VOXELS * float(min(state.resolution.y, state.resolution.x))
    return viewer.add_points(
        data,
        ndim=3,
        name=layer.name,
        features=features,
        face_color=[POST_COLOR if r[2] == "post" else PRE_COLOR for r in rows] or PRE_COLOR,
        border_color="white",
        size=size,
        visible=layer.visible,
        units=("nm", "nm", "nm"),
        axis_labels=("z", "y", "x"),
        metadata={"connecto_ng_annotations": True},
    )


def apply_view_state(viewer: napari.Viewer, state: ViewState) -> list[Layer]:
    """Open the layers of ``state`` in ``viewer`` and move the camera to its position and zoom.

    Layers whose source cannot be opened are skipped with a warning (one bad source must
    not lose the rest); the others stream as usual.

    Returns
    -------
    list of napari.layers.Layer
        The layers added.
    """
    from napari_connecto.viewer.launch import go_to

    added = []
    for layer in state.layers:
        try:
            if layer.kind == "annotation":
                if layer.annotations:
                    added.append(_add_annotations(viewer, layer, state))
            else:
                added.append(_add_volume(viewer, layer))
        except ConnectoError as exc:
            logger.warning("layer %r not opened: %s", layer.name, exc)
    viewer.dims.ndisplay = state.ndisplay
    go_to(viewer, state.position.as_tuple(), zoom=state.zoom)
    return added


def export_ng_state(
    viewer: napari.Viewer,
    path: str | Path | None = None,
    *,
    host: str | None = None,
    url_map: Mapping[str, str] | None = None,
    annotations: AnnotationStore | None = None,
) -> tuple[ExportResult, str]:
    """Capture ``viewer``, write the state as JSON to ``path`` (if given); return it and its URL."""
    result = to_ng_state(capture_view_state(viewer, annotations=annotations), url_map=url_map)
    if path is not None:
        write_text_atomic(Path(path), json.dumps(result.state, indent=2) + "\n")
    return result, result.url(host)


def open_ng_state(viewer: napari.Viewer, text: str, **kwargs: Any) -> ViewState:
    """Read a state (JSON file, JSON text or URL) and apply it to ``viewer``."""
    height = max(1, int(viewer.canvas.size[0]))
    state = from_ng_state(text, canvas_height=height, **kwargs)
    apply_view_state(viewer, state)
    return state


def export_ng_state_dialog(viewer: napari.Viewer, path: str | None = None) -> str | None:
    """Menu action: ask for a file, write the state, copy the URL to the clipboard, show it.

    Returns
    -------
    str or None
        The URL, or ``None`` if the user cancelled or the view could not be exported.
    """
    from napari.utils.notifications import show_info, show_warning
    from qtpy.QtWidgets import QApplication, QFileDialog

    if path is None:
        path, _ = QFileDialog.getSaveFileName(
            None, "Export Neuroglancer state", "neuroglancer_state.json", "JSON (*.json)"
        )
        if not path:
            return None
    try:
        result, url = export_ng_state(viewer, path)
    except (ConnectoError, ValueError, OSError) as exc:
        show_warning(f"Neuroglancer export failed: {exc}")
        return None
    QApplication.clipboard().setText(url)
    for line in result.warnings:
        show_warning(line)
    show_info(f"Neuroglancer state written to {path}; URL copied to the clipboard:\n{url}")
    return url


def open_ng_state_dialog(viewer: napari.Viewer, text: str | None = None) -> ViewState | None:
    """Menu action: ask for a pasted Neuroglancer URL/JSON (or, left empty, a file) and open it."""
    from napari.utils.notifications import show_warning
    from qtpy.QtWidgets import QFileDialog, QInputDialog

    if text is None:
        text, ok = QInputDialog.getText(
            None,
            "Open Neuroglancer state",
            "Neuroglancer URL or JSON (leave empty to choose a file):",
        )
        if not ok:
            return None
        if not text.strip():
            text, _ = QFileDialog.getOpenFileName(
                None, "Open Neuroglancer state", "", "JSON (*.json)"
            )
            if not text:
                return None
    try:
        state = open_ng_state(viewer, text)
    except ConnectoError as exc:
        show_warning(f"Cannot open Neuroglancer state: {exc}")
        return None
    for line in state.warnings:
        show_warning(line)
    return state
