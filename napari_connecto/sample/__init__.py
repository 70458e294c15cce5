"""The synthetic sample: EM-like raw, neuron segmentation and synapses, generated and cached.

:func:`generate_sample` makes the arrays (numpy/scipy only); :func:`write_sample`
stores them as OME-Zarr and CREMI HDF5; :func:`ensure_sample` does both once and
reuses the cached files afterwards.
"""

from __future__ import annotations

from napari_connecto.sample.generate import (
    DEFAULT_SHAPE,
    POST,
    PRE,
    RESOLUTION,
    SampleData,
    Synapses,
    generate_sample,
)
from napari_connecto.sample.write import (
    SamplePaths,
    ensure_sample,
    sample_directory,
    write_sample,
)

__all__ = [
    "DEFAULT_SHAPE",
    "POST",
    "PRE",
    "RESOLUTION",
    "SampleData",
    "SamplePaths",
    "Synapses",
    "ensure_sample",
    "generate_sample",
    "sample_directory",
    "write_sample",
]
