"""Turn volumes and point sets into napari ``LayerData`` tuples (no napari import here)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.cache.streaming import LayerStream, StreamingVolume
from napari_connecto.errors import ConnectoError
from napari_connecto.opening import list_contents, open_points, open_volume

if TYPE_CHECKING:
    from napari_connecto.backends.base import PointSet
    from napari_connecto.source import SourceLike
    from napari_connecto.volume.volume import Volume

__all__ = ["LayerData", "layer_data_for_source", "points_layer_data", "volume_layer_data"]

LayerData = tuple[Any, dict[str, Any], str]

logger = logging.getLogger(__name__)

LARGE_PLANE_VOXELS = 4096 * 4096
"""Single-level volumes with bigger planes are still shown as multiscale, so napari only
slices what is on screen."""
LABELS_OPACITY = 0.4
"""Segmentation over EM: see both (Neuroglancer's default too)."""
POINT_SIZE_NM = 90.0
"""Synapse marker diameter; with out-of-slice display it spans about three EM sections."""
PRE_COLOR = "#ff3b30"
POST_COLOR = "#00c7ff"
OTHER_COLOR = "#ffd60a"


def default_contrast_limits(volume: Volume) -> tuple[float, float]:
    """Display range from metadata, else from the dtype; never from scanning data."""
    hint = volume.backend.contrast_limits
    if hint is not None:
        return (float(hint[0]), float(hint[1]))
    dtype = volume.dtype
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    if dtype.kind == "b":
        return (0.0, 1.0)
    return (0.0, 1.0)


def volume_layer_data(
    volume: Volume, name: str | None = None, *, streaming: bool = False
) -> LayerData:
    """An image or labels ``LayerData`` tuple for ``volume``, placed in nm.

    The data are :class:`~napari_connecto.cache.StreamingLevel` arrays read through
    the shared chunk cache, one per level, in a display index space aligned to level 0.

    Parameters
    ----------
    volume : Volume
        The volume to show.
    name : str, optional
        Layer name; default the volume's name.
    streaming : bool
        Whether reads return at once from the cache and fetch in the background
        (inside a viewer with a streaming controller) instead of waiting for data.

    Returns
    -------
    tuple
        ``(data, kwargs, layer_type)`` as napari readers return.
    """
    stream = LayerStream(StreamingVolume(volume))
    stream.streaming = streaming
    levels = stream.levels()
    finest = volume.scales[0]
    large = math.prod(levels[0].shape[1:]) > LARGE_PLANE_VOXELS
    meta: dict[str, Any] = {
        "name": name or volume.name,
        "scale": finest.resolution.as_tuple(),
        "translate": finest.origin_nm.as_tuple(),
        "units": ("nm", "nm", "nm"),
        "axis_labels": ("z", "y", "x"),
        "multiscale": len(levels) > 1 or large,
        "metadata": {"connecto_source": str(volume.source), "connecto_format": volume.format},
    }
    data: Any = levels if len(levels) > 1 or large else levels[0]
    if volume.kind == "segmentation":
        meta["metadata"]["connecto_background_label"] = int(volume.backend.background_label)
        meta["opacity"] = LABELS_OPACITY
        return data, meta, "labels"
    meta["contrast_limits"] = default_contrast_limits(volume)
    meta["colormap"] = "gray"
    return data, meta, "image"


def points_layer_data(points: PointSet) -> LayerData:
    """A points ``LayerData`` tuple: synapse sites coloured pre/post, with their features."""
    features = points.features
    colors: Any = OTHER_COLOR
    sizes: Any = POINT_SIZE_NM
    if "type" in features.columns and len(features):
        kinds = features["type"].astype(str).to_numpy().astype(str)
        is_pre = np.char.find(kinds, "pre") >= 0
        is_post = np.char.find(kinds, "post") >= 0
        colors = np.where(is_pre, PRE_COLOR, np.where(is_post, POST_COLOR, OTHER_COLOR)).tolist()
        # Post sites drawn smaller, so a pre site under its partners stays visible.
        sizes = np.where(is_post, POINT_SIZE_NM * 0.6, POINT_SIZE_NM)
    meta: dict[str, Any] = {
        "name": points.name,
        "features": features,
        "face_color": colors,
        "border_color": "white",
        "border_width": 0.15,
        "size": sizes,
        "units": ("nm", "nm", "nm"),
        "axis_labels": ("z", "y", "x"),
        "metadata": dict(points.metadata),
    }
    return np.asarray(points.positions_nm, dtype=np.float64).reshape(-1, 3), meta, "points"


def layer_data_for_source(source: SourceLike, *, streaming: bool = False) -> list[LayerData]:
    """Every layer a source holds: images first, then segmentations, then points.

    ``streaming`` is passed on to :func:`volume_layer_data`.
    """
    order = {"image": 0, "segmentation": 1, "points": 2}
    entries = sorted(list_contents(source), key=lambda e: order[e.kind])
    layers: list[LayerData] = []
    failures: list[ConnectoError] = []
    for entry in entries:
        try:
            if entry.kind == "points":
                layers.append(points_layer_data(open_points(entry.source)))
            else:
                volume = open_volume(entry.source)
                layers.append(volume_layer_data(volume, name=entry.name, streaming=streaming))
        except ConnectoError as exc:  # one bad entry must not sink the others
            logger.warning("skipping %s: %s", entry.source, exc)
            failures.append(exc)
    if failures and not layers:
        raise failures[0]
    return layers
