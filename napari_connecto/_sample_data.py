"""npe2 shim for File > Open Sample: the synthetic EM neuropil, read back through the readers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_connecto.layers import layer_data_for_source
from napari_connecto.sample import ensure_sample

if TYPE_CHECKING:
    from napari_connecto.layers import LayerData

__all__ = ["make_sample_data"]


def make_sample_data() -> list[LayerData]:
    """Layers of the synthetic sample: EM image, segmentation and synapse sites.

    The sample is generated once into the cache (see
    :func:`napari_connecto.sample.ensure_sample`) and then opened with the
    plugin's own readers: the OME-Zarr for image and labels, the CREMI HDF5
    file for the synapses.

    Returns
    -------
    list of tuple
        napari ``LayerData`` tuples ``(data, kwargs, layer_type)``.
    """
    paths = ensure_sample()
    return layer_data_for_source(paths.ome_zarr) + layer_data_for_source(paths.cremi_synapses)
