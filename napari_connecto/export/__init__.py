"""Exports for figures: region stacks as TIFF/PNG with segment colours, movies, scale bars.

Headless (no Qt, no napari); the viewer side is :mod:`napari_connecto.viewer.exports`.
"""

from __future__ import annotations

from napari_connecto.export._atomic import ExportError
from napari_connecto.export.colors import colour_view, hash_colors
from napari_connecto.export.figure import ExportResult, ViewStyle, export_region
from napari_connecto.export.region import RegionPlan, plan_region, z_range_box
from napari_connecto.export.scalebar import ScaleBar, draw_scale_bar, nice_length

__all__ = [
    "ExportError",
    "ExportResult",
    "RegionPlan",
    "ScaleBar",
    "ViewStyle",
    "colour_view",
    "draw_scale_bar",
    "export_region",
    "hash_colors",
    "nice_length",
    "plan_region",
    "z_range_box",
]
