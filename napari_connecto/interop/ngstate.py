"""Neuroglancer viewer states: a headless :class:`ViewState`, export to JSON and URL, import.

Coordinates. Our public frame is z, y, x in nm with voxel *centres* at ``origin + i * res``.
A Neuroglancer state's ``dimensions`` are x, y, z with the finest resolution of the first
volume (in metres), and ``position`` and annotation points are in those units. For
precomputed, N5, DVID and plain zarr the voxel with index ``i`` (voxel_offset included)
spans ``[i, i + 1]``, so its centre is ``i + 0.5``: ``ng = nm / res + 0.5``. For OME-Zarr
Neuroglancer shifts by half a voxel itself, so ``ng = nm / res``
(:func:`~napari_connecto.interop.ngsource.voxel_centre_shift`).

Zoom. napari's camera zoom is screen pixels per nm. ``crossSectionScale`` is canonical
voxels (the smallest dimension scale) per screen pixel, ``projectionScale`` canonical
voxels per viewport height.

Local files. Neuroglancer cannot read them: see :mod:`napari_connecto.interop.ngsource`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from napari_connecto.errors import MetadataError
from napari_connecto.geometry import Vec3
from napari_connecto.interop.ngsource import from_ng_source, to_ng_source, voxel_centre_shift
from napari_connecto.interop.ngvalidate import (
    NgStateError,
    dimensions_of,
    layer_source_urls,
    load_ng_state,
    number_field,
    segment_id,
    validate_state,
)

__all__ = [
    "DEFAULT_NG_HOST",
    "ExportResult",
    "LayerState",
    "NgStateError",
    "SynapseAnnotation",
    "ViewState",
    "from_ng_state",
    "load_ng_state",
    "ng_host",
    "ng_url",
    "to_ng_state",
    "validate_state",
]

logger = logging.getLogger(__name__)

DEFAULT_NG_HOST = "https://neuroglancer-demo.appspot.com"
NG_HOST_ENV = "NAPARI_CONNECTO_NG_HOST"
DEFAULT_CANVAS_HEIGHT = 800
"""Viewport height (pixels) assumed for ``projectionScale`` when none is known."""
Kind = Literal["image", "segmentation", "annotation"]


@dataclass(frozen=True, slots=True)
class SynapseAnnotation:
    """A synapse as a Neuroglancer LINE (pre -> post) or POINT annotation."""

    id: str
    """Annotation id (the synapse id as a decimal string for ours)."""
    pre: Vec3
    """Presynaptic site (or the point), nm z, y, x."""
    post: Vec3 | None = None
    """Postsynaptic site, nm z, y, x; ``None`` for a POINT annotation."""
    description: str = ""
    """Free text shown by Neuroglancer."""


@dataclass(frozen=True, slots=True)
class LayerState:
    """One layer of a view."""

    name: str
    """Layer name."""
    kind: Kind
    """``"image"``, ``"segmentation"`` or ``"annotation"``."""
    source: str = ""
    """Our source string; empty for inline annotation layers."""
    visible: bool = True
    """Whether the layer is shown."""
    opacity: float = 1.0
    """Layer opacity (segmentation: Neuroglancer's ``selectedAlpha``)."""
    segments: tuple[int, ...] = ()
    """Segments shown (segmentation layers); empty means all."""
    hidden_segments: tuple[int, ...] = ()
    """Segments listed but hidden (Neuroglancer's ``"!id"``)."""
    annotations: tuple[SynapseAnnotation, ...] = ()
    """Inline annotations (annotation layers)."""


@dataclass(frozen=True, slots=True)
class ViewState:
    """What a viewer shows: layers, position, zoom and 2D/3D, in our frame (nm, z, y, x)."""

    layers: tuple[LayerState, ...]
    """Layers, bottom first."""
    position: Vec3
    """Centre of the view, nm z, y, x."""
    resolution: Vec3
    """nm per voxel (z, y, x) of the Neuroglancer dimensions: the first volume's finest."""
    zoom: float | None = None
    """Screen pixels per nm (napari's camera zoom); ``None`` for Neuroglancer's default."""
    ndisplay: int = 2
    """2 for a cross section, 3 for a 3D view."""
    voxel_shift: float = 0.5
    """Neuroglancer coordinate of a voxel centre minus nm / resolution (see module doc)."""
    canvas_height: int = DEFAULT_CANVAS_HEIGHT
    """Viewport height in pixels (for ``projectionScale``)."""
    warnings: tuple[str, ...] = field(default=())
    """What could not be carried over (import: skipped layers; capture: proofread ids).

    :func:`to_ng_state` passes them on in :attr:`ExportResult.warnings`."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """A Neuroglancer state and what Neuroglancer will not be able to show of it."""

    state: dict[str, Any]
    """The JSON-able state."""
    warnings: tuple[str, ...] = ()
    """One line per problem (the view's own warnings, local files, HDF5 sources)."""

    def url(self, host: str | None = None) -> str:
        """The shareable URL: ``{host}/#!{url-encoded compact JSON}``."""
        return ng_url(self.state, host)


# -- export ------------------------------------------------------------------------------
def _to_ng(point: Vec3, view: ViewState) -> list[float]:
    """Map nm z, y, x to Neuroglancer x, y, z in dimension units."""
    res, s = view.resolution, view.voxel_shift
    return [point.x / res.x + s, point.y / res.y + s, point.z / res.z + s]


def _canonical_nm(resolution: Vec3) -> float:
    return min(resolution.as_tuple())


def _annotation_json(ann: SynapseAnnotation, view: ViewState) -> dict[str, Any]:
    out: dict[str, Any] = {"id": ann.id}
    if ann.post is None:
        out.update(type="point", point=_to_ng(ann.pre, view))
    else:
        out.update(type="line", pointA=_to_ng(ann.pre, view), pointB=_to_ng(ann.post, view))
    if ann.description:
        out["description"] = ann.description
    return out


def _layer_json(
    layer: LayerState, view: ViewState, url_map: Mapping[str, str]
) -> tuple[dict[str, Any], str]:
    """One layer's JSON and a warning ("" if none)."""
    out: dict[str, Any] = {"type": layer.kind, "name": layer.name}
    warning = ""
    if layer.kind == "annotation":
        out["source"] = (
            to_ng_source(layer.source, url_map).url if layer.source else "local://annotations"
        )
        out["annotations"] = [_annotation_json(a, view) for a in layer.annotations]
    else:
        ng = to_ng_source(layer.source, url_map)
        out["source"], warning = ng.url, ng.warning
    if layer.kind == "segmentation":
        out["segments"] = [str(s) for s in layer.segments] + [
            f"!{s}" for s in layer.hidden_segments
        ]
        out["selectedAlpha"] = float(layer.opacity)
    elif layer.kind == "image":
        out["opacity"] = float(layer.opacity)
    if not layer.visible:
        out["visible"] = False
    return out, warning


def to_ng_state(view: ViewState, *, url_map: Mapping[str, str] | None = None) -> ExportResult:
    """The Neuroglancer state of ``view``.

    Parameters
    ----------
    view : ViewState
        The view (nm, z, y, x).
    url_map : mapping of str to str, optional
        Local root folder -> http(s) URL it is served at (local paths become
        ``file://`` URLs otherwise, which Neuroglancer cannot open).

    Returns
    -------
    ExportResult
        The state (validated with :func:`validate_state`) and warnings.
    """
    res = view.resolution
    state: dict[str, Any] = {
        "dimensions": {
            "x": [res.x * 1e-9, "m"],
            "y": [res.y * 1e-9, "m"],
            "z": [res.z * 1e-9, "m"],
        },
        "position": _to_ng(view.position, view),
        "layers": [],
        "layout": "3d" if view.ndisplay == 3 else "xy",
    }
    if view.zoom is not None and view.zoom > 0:
        per_pixel = 1.0 / (view.zoom * _canonical_nm(res))
        state["crossSectionScale"] = per_pixel
        state["projectionScale"] = per_pixel * view.canvas_height
    warnings: list[str] = list(view.warnings)
    for layer in view.layers:
        entry, warning = _layer_json(layer, view, url_map or {})
        state["layers"].append(entry)
        if warning:
            warnings.append(warning)
    for line in warnings:
        logger.info("%s", line)
    validate_state(state)
    return ExportResult(state, tuple(warnings))


def ng_host(host: str | None = None) -> str:
    """``host``, else ``$NAPARI_CONNECTO_NG_HOST``, else :data:`DEFAULT_NG_HOST` (no trailing /)."""
    return (host or os.environ.get(NG_HOST_ENV) or DEFAULT_NG_HOST).rstrip("/")


def ng_url(state: Mapping[str, Any], host: str | None = None) -> str:
    """``{host}/#!{url-encoded compact JSON}`` for ``state``."""
    text = json.dumps(state, separators=(",", ":"), allow_nan=False)
    return f"{ng_host(host)}/#!{quote(text, safe='')}"


def _xyz_index(dims: dict[str, tuple[float, str]]) -> tuple[list[int], Vec3]:
    """Positions of x, y, z in the dimension order, and their resolution in nm (z, y, x)."""
    names = list(dims)
    index, nm = [], []
    for axis in "xyz":
        if axis not in dims:
            raise NgStateError("dimensions", f"no {axis!r} dimension (have {names})")
        scale, unit = dims[axis]
        if unit != "m":
            raise NgStateError(f"dimensions.{axis}", f"unit {unit!r} is not metres")
        index.append(names.index(axis))
        nm.append(scale * 1e9)
    return index, Vec3(nm[2], nm[1], nm[0])


def _from_ng(values: Sequence[float], index: Sequence[int], res: Vec3, shift: float) -> Vec3:
    x, y, z = (float(values[i]) for i in index)
    return Vec3((z - shift) * res.z, (y - shift) * res.y, (x - shift) * res.x)


def _import_annotations(
    layer: Mapping[str, Any], where: str, index: list[int], res: Vec3, shift: float
) -> tuple[tuple[SynapseAnnotation, ...], int]:
    """Inline POINT and LINE annotations (in global coordinates); how many others were skipped."""
    out, skipped = [], 0
    items = layer.get("annotations", [])
    if not isinstance(items, list):
        raise NgStateError(f"{where}.annotations", "expected a list")
    for i, item in enumerate(items):
        at = f"{where}.annotations[{i}]"
        if not isinstance(item, dict):
            raise NgStateError(at, "expected an object")
        kind = item.get("type")
        keys = {"point": ("point",), "line": ("pointA", "pointB")}.get(kind)  # type: ignore[arg-type]
        if keys is None:
            skipped += 1
            continue
        points = []
        for key in keys:
            value = item.get(key)
            if not isinstance(value, list) or len(value) <= max(index):
                raise NgStateError(f"{at}.{key}", f"expected coordinates, got {value!r:.100}")
            points.append(
                _from_ng([number_field(v, f"{at}.{key}") for v in value], index, res, shift)
            )
        ident = str(item.get("id", i))
        out.append(
            SynapseAnnotation(
                ident,
                points[0],
                points[1] if len(points) > 1 else None,
                str(item.get("description", "")),
            )
        )
    return tuple(out), skipped


def _import_layer(
    layer: Mapping[str, Any], where: str, ctx: dict[str, Any]
) -> tuple[LayerState | None, str]:
    """A :class:`LayerState` (or ``None`` with the reason it was skipped)."""
    kind, name = layer["type"], layer["name"]
    if kind not in ("image", "segmentation", "annotation"):
        return None, f"layer {name!r}: Neuroglancer layer type {kind!r} is not supported; skipped"
    source = ""
    if kind != "annotation" or "source" in layer:
        urls = layer_source_urls(layer, where)
        if kind == "annotation" and all(u.startswith("local://") for u in urls):
            urls = []
        for i, url in enumerate(urls):
            try:
                source = from_ng_source(url, ctx["url_map"], f"{where}.source[{i}]")
                break
            except MetadataError as exc:
                problem = str(exc)
        if urls and not source:
            return None, f"layer {name!r}: {problem}; skipped"
    segments = [segment_id(s, f"{where}.segments") for s in layer.get("segments", [])]
    default_alpha = 0.5 if kind == "segmentation" else 1.0
    alpha = layer.get("selectedAlpha" if kind == "segmentation" else "opacity", default_alpha)
    annotations: tuple[SynapseAnnotation, ...] = ()
    if kind == "annotation":
        annotations, skipped = _import_annotations(
            layer, where, ctx["index"], ctx["res"], ctx["shift"]
        )
        if skipped:
            ctx["warnings"].append(
                f"layer {name!r}: {skipped} annotation(s) neither point nor line; skipped"
            )
    return (
        LayerState(
            name=name,
            kind=kind,
            source=source,
            visible=bool(layer.get("visible", True)),
            opacity=number_field(alpha, f"{where}.opacity"),
            segments=tuple(s for s, hidden in segments if not hidden),
            hidden_segments=tuple(s for s, hidden in segments if hidden),
            annotations=annotations,
        ),
        "",
    )


def _first_volume_source(state: Mapping[str, Any], url_map: Mapping[str, str]) -> str:
    for layer in state.get("layers", []):
        if layer.get("type") in ("image", "segmentation"):
            for url in layer_source_urls(layer, "layers"):
                try:
                    return from_ng_source(url, url_map)
                except MetadataError:
                    continue
    return ""


def _layout_ndisplay(layout: Any) -> int:
    if isinstance(layout, dict):
        layout = layout.get("type")
    return 3 if layout == "3d" else 2


def from_ng_state(
    state: Mapping[str, Any] | str | os.PathLike[str],
    *,
    url_map: Mapping[str, str] | None = None,
    canvas_height: int = DEFAULT_CANVAS_HEIGHT,
) -> ViewState:
    """The :class:`ViewState` of a Neuroglancer state (a dict, JSON file, JSON text or URL).

    Unknown layer types and data sources napari-connecto cannot open are skipped and
    named in :attr:`ViewState.warnings` (and logged).

    Parameters
    ----------
    state : dict, str or os.PathLike
        The state, or anything :func:`load_ng_state` reads.
    url_map : mapping of str to str, optional
        Local root folder -> served URL, to turn served URLs back into local paths.
    canvas_height : int
        Viewport height (pixels) for converting ``projectionScale`` into a zoom.

    Raises
    ------
    NgStateError
        If the state is malformed (naming the field).
    """
    if not isinstance(state, Mapping):
        state = load_ng_state(state)
    validate_state(state)
    index, res = _xyz_index(dimensions_of(state))
    url_map = url_map or {}
    shift = voxel_centre_shift(_first_volume_source(state, url_map))
    ctx: dict[str, Any] = {
        "url_map": url_map,
        "index": index,
        "res": res,
        "shift": shift,
        "warnings": [],
    }
    layers = []
    for i, entry in enumerate(state.get("layers", [])):
        layer, warning = _import_layer(entry, f"layers[{i}]", ctx)
        if layer is None:
            ctx["warnings"].append(warning)
        else:
            layers.append(layer)
    ndisplay = _layout_ndisplay(state.get("layout", "xy"))
    canonical = _canonical_nm(res)
    zoom = None
    if ndisplay == 3 and "projectionScale" in state:
        zoom = canvas_height / (float(state["projectionScale"]) * canonical)
    elif "crossSectionScale" in state:
        zoom = 1.0 / (float(state["crossSectionScale"]) * canonical)
    position = (
        _from_ng(state.get("position", []), index, res, shift)
        if "position" in state
        else Vec3(0.0, 0.0, 0.0)
    )
    for line in ctx["warnings"]:
        logger.info("%s", line)
    return ViewState(
        layers=tuple(layers),
        position=position,
        resolution=res,
        zoom=zoom,
        ndisplay=ndisplay,
        voxel_shift=shift,
        canvas_height=canvas_height,
        warnings=tuple(ctx["warnings"]),
    )
