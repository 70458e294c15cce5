"""Build a :class:`~napari_connecto.interop.ngstate.ViewState` without a viewer (CLI, scripts).

Also turns synapse tables (an annotation store's frame, CREMI point features, the synapse
overlay's points, the points of an imported state) into LINE annotations, pre -> post, and
POINT annotations for single sites.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.errors import MetadataError
from napari_connecto.geometry import BBox, Vec3
from napari_connecto.interop.ngsource import voxel_centre_shift
from napari_connecto.interop.ngstate import LayerState, SynapseAnnotation, ViewState
from napari_connecto.opening import list_contents, open_points, open_volume

if TYPE_CHECKING:
    import pandas as pd

    from napari_connecto.annotations.store import AnnotationStore
    from napari_connecto.source import SourceLike

__all__ = [
    "ANNOTATION_ID_COLUMN",
    "annotations_from_frame",
    "annotations_from_points",
    "view_state_for_sources",
]

logger = logging.getLogger(__name__)

SYNAPSE_LAYER_NAME = "synapses"
LABELS_OPACITY = 0.4
ANNOTATION_BOX_VOXELS = (8, 1024, 1024)
"""Box (finest voxels, z, y, x) around the position whose synapses a CLI export includes."""
ANNOTATION_ID_COLUMN = "annotation"
"""Points feature holding a Neuroglancer annotation's own id (kept when it is not a number)."""


def annotations_from_frame(frame: pd.DataFrame) -> tuple[SynapseAnnotation, ...]:
    """LINE annotations pre -> post from an annotation store's synapse frame."""
    if not len(frame):
        return ()
    pre = frame[["pre_z", "pre_y", "pre_x"]].to_numpy(np.float64)
    post = frame[["post_z", "post_y", "post_x"]].to_numpy(np.float64)
    out = []
    for i, (sid, a, b) in enumerate(
        zip(
            frame["id"].to_numpy(),
            frame["pre_id"].to_numpy(),
            frame["post_id"].to_numpy(),
            strict=True,
        )
    ):
        out.append(
            SynapseAnnotation(
                str(int(sid)),
                Vec3(*pre[i]),
                Vec3(*post[i]),
                f"synapse {int(sid)}: {int(a)} -> {int(b)}",
            )
        )
    return tuple(out)


def annotations_from_points(
    positions: np.ndarray, features: pd.DataFrame
) -> tuple[SynapseAnnotation, ...]:
    """Synapses from a points layer's data (nm, z, y, x) and features.

    Understands the synapse overlay's ``synapse`` + ``site`` (pre/post/point) columns and
    CREMI's ``id`` + ``type`` + ``partner``; a pre site with its post partner becomes a LINE,
    any other site a POINT. Returns ``()`` for points that are not synapses.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if {"synapse", "site"} <= set(features.columns):
        return _pairs_by_synapse(positions, features)
    if {"id", "type"} <= set(features.columns):
        return _pairs_by_partner(positions, features)
    return ()


def _pairs_by_synapse(
    positions: np.ndarray, features: pd.DataFrame
) -> tuple[SynapseAnnotation, ...]:
    """One annotation per ``synapse``: a LINE pre -> post, else a POINT (pre, post or point).

    An ``annotation`` column (what an imported Neuroglancer state put there) gives the id.
    """
    sites: dict[int, dict[str, Vec3]] = {}
    names: dict[int, str] = {}
    labels = (
        features[ANNOTATION_ID_COLUMN].to_numpy(dtype=object)
        if ANNOTATION_ID_COLUMN in features.columns
        else None
    )
    for i, (pos, sid, site) in enumerate(
        zip(positions, features["synapse"].to_numpy(), features["site"].astype(str), strict=True)
    ):
        sites.setdefault(int(sid), {})[site] = Vec3(*pos)
        if labels is not None and isinstance(labels[i], str) and labels[i]:
            names.setdefault(int(sid), labels[i])
    out = []
    for sid, found in sites.items():
        pre, post = found.get("pre"), found.get("post")
        first = next((p for p in (pre, post, found.get("point")) if p is not None), None)
        if first is not None:
            out.append(
                SynapseAnnotation(
                    names.get(sid, str(sid)),
                    first,
                    post if pre is not None else None,
                    f"synapse {sid}",
                )
            )
    return tuple(out)


def _pairs_by_partner(
    positions: np.ndarray, features: pd.DataFrame
) -> tuple[SynapseAnnotation, ...]:
    ids = [int(v) for v in features["id"].to_numpy()]
    where = {sid: i for i, sid in enumerate(ids)}
    kinds = features["type"].astype(str).to_numpy()
    partners = (
        features["partner"].to_numpy() if "partner" in features.columns else np.zeros(len(ids))
    )
    used: set[int] = set()
    out = []
    for i, sid in enumerate(ids):
        partner = int(partners[i])
        if "pre" in kinds[i] and partner in where:
            j = where[partner]
            used.update((i, j))
            out.append(
                SynapseAnnotation(
                    str(sid),
                    Vec3(*positions[i]),
                    Vec3(*positions[j]),
                    f"synapse {sid} -> {partner}",
                )
            )
    for i, sid in enumerate(ids):
        if i not in used:
            out.append(SynapseAnnotation(str(sid), Vec3(*positions[i]), None, f"{kinds[i]} {sid}"))
    return tuple(out)


def view_state_for_sources(
    sources: Sequence[SourceLike],
    *,
    at: Sequence[float] | None = None,
    zoom: float | None = None,
    segments: Sequence[int] = (),
    store: AnnotationStore | None = None,
) -> ViewState:
    """The view that ``napari-connecto view SOURCES --at ...`` would show, as a :class:`ViewState`.

    Opens every volume (metadata only) for its kind and resolution; CREMI synapses in a
    source and, with ``store``, the stored synapses in a box around the position become a
    ``synapses`` annotation layer.

    Parameters
    ----------
    sources : sequence of source-like
        Paths or URLs; each may hold several volumes.
    at : sequence of float, optional
        Centre (z, y, x nm); default the centre of the first volume.
    zoom : float, optional
        Screen pixels per nm; default one finest voxel (x) per pixel.
    segments : sequence of int
        Segments to show in every segmentation layer.
    store : AnnotationStore, optional
        Synapses around the position come from here.

    Raises
    ------
    SourceNotFoundError, UnknownFormatError, MetadataError
        If a source cannot be opened, or holds no volume.
    """
    layers: list[LayerState] = []
    synapses: list[SynapseAnnotation] = []
    first = None
    for source in sources:
        for entry in list_contents(source):
            if entry.kind == "points":
                points = open_points(entry.source)
                synapses.extend(annotations_from_points(points.positions_nm, points.features))
                continue
            with open_volume(entry.source) as volume:
                first = first or volume.scales[0]
                seg = volume.kind == "segmentation"
                layers.append(
                    LayerState(
                        name=entry.name,
                        kind=volume.kind,
                        source=str(volume.source),
                        opacity=LABELS_OPACITY if seg else 1.0,
                        segments=tuple(int(s) for s in segments) if seg else (),
                    )
                )
    if first is None:
        raise MetadataError(
            ", ".join(str(s) for s in sources), "", "no image or segmentation volume"
        )
    res = first.resolution
    centre = Vec3.of(at) if at is not None else _centre(first.bbox, res)
    if store is not None:
        box = BBox.around(centre, Vec3.of(ANNOTATION_BOX_VOXELS) * res)
        synapses.extend(annotations_from_frame(store.synapses_in_box(box)))
    if synapses:
        layers.append(LayerState(SYNAPSE_LAYER_NAME, "annotation", annotations=tuple(synapses)))
    volume_source = next(lay.source for lay in layers if lay.kind != "annotation")
    return ViewState(
        layers=tuple(layers),
        position=centre,
        resolution=res,
        zoom=zoom if zoom is not None else 1.0 / res.x,
        voxel_shift=voxel_centre_shift(volume_source),
    )


def _centre(bbox: BBox, res: Vec3) -> Vec3:
    """Centre of the voxel in the middle of ``bbox`` (voxel centres are at origin + i * res)."""
    n = bbox.size / res
    return bbox.start + Vec3(*(np.floor(np.asarray(n.as_tuple()) / 2))) * res
