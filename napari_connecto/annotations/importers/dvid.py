"""Synapses from a DVID ``annotation`` instance (``dvid://host:port/<uuid>/<instance>``).

Each PreSyn element and each of its ``PreSynTo`` partners make one synapse (pre
at the T-bar, post at the PostSyn, centre halfway). The neurons are the labels
at those positions in the instance's synced labelmap (one ``labels`` request per
10,000 points); positions are scaled to nm by the labelmap's voxel size
(``resolution`` overrides it). Synapses carry no ids
(DVID has none): a re-import is recognised by neurons and position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from napari_connecto.annotations.importers.batch import (
    checked_resolution,
    make_batch,
    normalized_synapses,
)
from napari_connecto.errors import ConnectoError, ImportFormatError

if TYPE_CHECKING:
    from napari_connecto.annotations.frames import ImportBatch
    from napari_connecto.annotations.importers.registry import ReadOptions
    from napari_connecto.dvid.address import DvidAddress
    from napari_connecto.dvid.client import DvidClient

__all__ = ["is_dvid", "read_dvid"]

_LABELS_PER_REQUEST = 10_000


def is_dvid(source: str) -> bool:
    """Whether an import source names a DVID instance."""
    return source.startswith("dvid://")


def read_dvid(source: str, options: ReadOptions) -> ImportBatch:
    """Read an annotation instance's synapses (see the module docstring).

    Raises
    ------
    ImportFormatError
        If the source is not an annotation instance, has no labelmap to find the
        neurons in, or the server fails (its message kept).
    """
    from napari_connecto.dvid.address import parse_dvid
    from napari_connecto.dvid.annotations import read_elements, synapse_pairs
    from napari_connecto.dvid.client import DvidClient

    try:
        address = parse_dvid(source.removeprefix("dvid://"))
        client = DvidClient.of(address)
        info = client.instance_info(address.uuid, address.instance)
        if (info.get("Base") or {}).get("TypeName") != "annotation":
            raise ImportFormatError(source, "not a DVID annotation instance")
        found = read_elements(client, address, info)
        pairs = synapse_pairs(found, source)
        if found.labelmap is None:
            raise ImportFormatError(source, "the instance is synced to no labelmap: no neurons")
        ids = _neuron_ids(client, address, found.labelmap, pairs)
    except ImportFormatError:
        raise
    except (ConnectoError, ValueError) as exc:
        raise ImportFormatError(source, f"cannot read the annotations ({exc})") from exc
    scale = np.asarray(checked_resolution(options.resolution, source) or found.voxel_zyx)
    frame = pd.DataFrame({"pre_id": ids[: len(pairs)], "post_id": ids[len(pairs) :]})
    for side in ("pre", "post"):
        block = pairs[[f"{side}_z", f"{side}_y", f"{side}_x"]].to_numpy(float) * scale
        for i, axis in enumerate("zyx"):
            frame[f"{side}_{axis}"] = block[:, i]
    frame["confidence"] = pairs["confidence"].to_numpy()
    return make_batch(source, synapses=normalized_synapses(frame, source))


def _neuron_ids(
    client: DvidClient, address: DvidAddress, labelmap: str, pairs: pd.DataFrame
) -> np.ndarray:
    """Labels at every pre position, then every post position."""
    points = np.concatenate(
        [
            pairs[["pre_z", "pre_y", "pre_x"]].to_numpy(np.int64),
            pairs[["post_z", "post_y", "post_x"]].to_numpy(np.int64),
        ]
    )
    chunks = [
        client.labels_at(address.uuid, labelmap, points[i : i + _LABELS_PER_REQUEST])
        for i in range(0, len(points), _LABELS_PER_REQUEST)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint64)
