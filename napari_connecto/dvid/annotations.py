"""DVID ``annotation`` instances: elements read in one box, as points or synapse pairs.

An element is ``{"Pos": [x, y, z], "Kind": "PreSyn"|"PostSyn"|..., "Tags", "Prop",
"Rels": [{"Rel": "PreSynTo"|"PostSynTo"|..., "To": [x, y, z]}]}``; positions are
voxels of the labelmap the instance is synced to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_connecto.backends.base import PointSet
from napari_connecto.errors import MetadataError, RemoteError

if TYPE_CHECKING:
    from napari_connecto.dvid.address import DvidAddress
    from napari_connecto.dvid.client import DvidClient

__all__ = ["Elements", "point_set", "read_elements", "synapse_pairs"]

_DEFAULT_EXTENT = 1 << 16
_DEFAULT_VOXEL = (8.0, 8.0, 8.0)


@dataclass(frozen=True, slots=True)
class Elements:
    """The elements of one annotation instance and how to place them."""

    elements: list[dict[str, Any]]
    """Element JSON objects as DVID sent them."""
    voxel_zyx: tuple[float, float, float]
    """nm per voxel of their positions (z, y, x)."""
    labelmap: str | None
    """The synced labelmap instance, if any (neuron ids at the positions)."""


def read_elements(client: DvidClient, address: DvidAddress, info: dict[str, Any]) -> Elements:
    """Every element of an annotation instance (inside its synced volume's extents).

    Without a synced volume, the box is ``0..65536`` voxels along each axis and
    voxels are taken as 8 nm.
    """
    syncs = (info.get("Base") or {}).get("Syncs") or []
    start, shape, voxel, labelmap = (0, 0, 0), (_DEFAULT_EXTENT,) * 3, _DEFAULT_VOXEL, None
    for name in syncs:
        try:
            synced = client.instance_info(address.uuid, name)
        except RemoteError:
            continue
        ext = synced.get("Extended") or {}
        lo, hi = ext.get("MinPoint"), ext.get("MaxPoint")
        if isinstance(lo, list) and isinstance(hi, list) and len(lo) == len(hi) == 3:
            start = tuple(int(v) for v in lo[::-1])
            shape = tuple(int(b) + 1 - a for a, b in zip(start, hi[::-1], strict=True))
            voxel = tuple(float(v) for v in (ext.get("VoxelSize") or [8, 8, 8])[::-1])
            if (synced.get("Base") or {}).get("TypeName") in ("labelmap", "labelarray"):
                labelmap = name
            break
    elements = client.elements(address.uuid, address.instance, start, shape)
    return Elements(elements, voxel, labelmap)  # type: ignore[arg-type]


def _position(element: Any, i: int, where: str) -> tuple[int, int, int]:
    pos = element.get("Pos") if isinstance(element, dict) else None
    if not isinstance(pos, list) or len(pos) != 3:
        raise MetadataError(where, f"elements[{i}].Pos", f"expected [x, y, z], got {pos!r:.100}")
    try:
        return int(pos[0]), int(pos[1]), int(pos[2])
    except (TypeError, ValueError):
        raise MetadataError(where, f"elements[{i}].Pos", f"not integers: {pos!r:.100}") from None


def _partners(element: dict[str, Any], rels: tuple[str, ...]) -> list[tuple[int, int, int]]:
    out = []
    for rel in element.get("Rels") or []:
        to = rel.get("To") if isinstance(rel, dict) else None
        if rel.get("Rel") in rels and isinstance(to, list) and len(to) == 3:
            out.append((int(to[0]), int(to[1]), int(to[2])))
    return out


def point_set(name: str, found: Elements, where: str) -> PointSet:
    """Elements -> points (z, y, x nm) with kind, tags and partner positions (``x_y_z``)."""
    rows, positions = [], []
    for i, el in enumerate(found.elements):
        x, y, z = _position(el, i, where)
        partners = _partners(el, ("PreSynTo", "PostSynTo"))
        positions.append((z, y, x))
        rows.append(
            {
                "kind": str(el.get("Kind", "Unknown")),
                "tags": ",".join(str(t) for t in (el.get("Tags") or [])),
                "partners": ";".join("_".join(str(v) for v in p) for p in partners),
                "n_partners": len(partners),
                "x": x,
                "y": y,
                "z": z,
            }
        )
    points = np.asarray(positions, dtype=np.float64).reshape(-1, 3) * np.asarray(found.voxel_zyx)
    metadata = {"source": where, "voxel_size_nm": list(found.voxel_zyx)}
    return PointSet(name, points, pd.DataFrame(rows), metadata)


def synapse_pairs(found: Elements, where: str) -> pd.DataFrame:
    """One row per PreSyn -> PostSyn partner pair, positions in voxels (z, y, x).

    Columns ``pre_z..``, ``post_z..`` and the PreSyn's ``confidence`` (``Prop``
    ``conf``/``confidence``) where it has one. A ``PreSynTo`` pointing at a
    position with no PostSyn element is kept (DVID allows it); a PostSyn whose
    PreSyn does not list it back is ignored.
    """
    rows = []
    for i, el in enumerate(found.elements):
        if el.get("Kind") != "PreSyn":
            continue
        x, y, z = _position(el, i, where)
        props = el.get("Prop") or {}
        conf = props.get("conf", props.get("confidence"))
        try:
            confidence = float(conf) if conf is not None else np.nan
        except (TypeError, ValueError):
            confidence = np.nan
        for px, py, pz in _partners(el, ("PreSynTo",)):
            rows.append((z, y, x, pz, py, px, confidence))
    columns = ["pre_z", "pre_y", "pre_x", "post_z", "post_y", "post_x", "confidence"]
    return pd.DataFrame(rows, columns=columns)
