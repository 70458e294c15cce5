"""Per-segment attributes: size, bounding box, representative point and imported properties.

The public face of :mod:`.attribute_store` (the id-keyed column store),
:mod:`.attribute_compute` (blockwise computation over a segmentation volume, cached)
and :mod:`.attribute_import` (neuroglancer segment properties, CSV/Parquet tables).

Examples
--------
>>> from napari_connecto import open_volume
>>> from napari_connecto.objects.attributes import load_or_compute
>>> seg = open_volume("sample.zarr/labels/segmentation")  # doctest: +SKIP
>>> attrs = load_or_compute(seg)  # doctest: +SKIP
>>> attrs.lookup([17, 42]).frame()  # doctest: +SKIP
"""

from __future__ import annotations

from napari_connecto.objects.attribute_compute import (
    ATTRIBUTE_COLUMNS,
    AttributesCancelledError,
    Progress,
    attribute_job,
    attributes_cache_path,
    block_plan,
    cached_attributes,
    compute_attributes,
    iter_attributes,
    load_or_compute,
    representative_nm,
)
from napari_connecto.objects.attribute_import import (
    parse_segment_properties,
    read_segment_properties,
    read_table,
)
from napari_connecto.objects.attribute_store import AttributeStore, Lookup, as_ids

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "AttributeStore",
    "AttributesCancelledError",
    "Lookup",
    "Progress",
    "as_ids",
    "attribute_job",
    "attributes_cache_path",
    "block_plan",
    "cached_attributes",
    "compute_attributes",
    "iter_attributes",
    "load_or_compute",
    "parse_segment_properties",
    "read_segment_properties",
    "read_table",
    "representative_nm",
]
