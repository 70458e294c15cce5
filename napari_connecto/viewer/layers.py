"""Finish core ``LayerData`` with napari-specific objects (label colormaps)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_connecto.layers import LayerData, layer_data_for_source

if TYPE_CHECKING:
    from napari_connecto.source import SourceLike

__all__ = ["napari_layer_data"]


def napari_layer_data(source: SourceLike, *, streaming: bool = True) -> list[LayerData]:
    """All layers of ``source``, ready for ``viewer.add_<type>(data, **meta)``.

    Volumes stream by default: add them to a viewer that has a
    :func:`~napari_connecto.viewer.streaming.controller_for` controller.

    Labels whose background id is not 0 (CREMI's 0xFFFFFFFFFFFFFFFF) get a
    colormap that keeps that id transparent.
    """
    from napari.utils.colormaps import label_colormap

    layers = layer_data_for_source(source, streaming=streaming)
    for _, meta, kind in layers:
        background = meta.get("metadata", {}).get("connecto_background_label", 0)
        if kind == "labels" and background:
            meta["colormap"] = label_colormap(background_value=background)
    return layers
