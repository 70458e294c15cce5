"""DVID data instances as volumes and point sets (``dvid://host:port/<uuid>/<instance>``).

- ``uint8blk`` grayscale is an image; ``labelmap`` a segmentation with its
  downres scales (``scale=N``, ``MaxDownresLevel``), agglomerated labels by
  default, supervoxels with ``?supervoxels=true``. Grayscale pyramids kept as
  sibling instances ``<name>_1``, ``<name>_2``... (DVID's convention) become
  scales too.
- The volume spans the instance's extents (``MinPoint``..``MaxPoint``,
  inclusive), its start aligned down so that every level starts at the same nm on
  a block boundary (reads are block-aligned).
  Labelmap voxels travel lz4-compressed; every answer's size is checked.
- ``annotation`` instances are point sets: one point per element, with its
  kind, tags and partners (``PreSynTo`` / ``PostSynTo``).
- ``dvid://host/<uuid>`` lists every instance of the node.
- Writes (``mode="r+"``) must be block-aligned and need an unlocked node: a
  committed node opens read-only with a clear message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from napari_connecto.backends.base import Entry, Kind, PointSet, VolumeBackend
from napari_connecto.dvid.address import DvidAddress, parse_dvid
from napari_connecto.dvid.annotations import point_set, read_elements
from napari_connecto.dvid.client import DvidClient
from napari_connecto.errors import (
    ChunkError,
    MetadataError,
    ReadOnlyError,
    RegionError,
    RemoteError,
    ServerBusyError,
    SourceNotFoundError,
    UnsupportedEncodingError,
)
from napari_connecto.geometry import Vec3
from napari_connecto.volume.scale import Scale

if TYPE_CHECKING:
    from napari_connecto.source import Source
    from napari_connecto.volume.scale import Index3

__all__ = ["DvidBackend"]

logger = logging.getLogger(__name__)

_VOLUME_TYPES: dict[str, tuple[Kind, np.dtype]] = {
    "uint8blk": ("image", np.dtype(np.uint8)),
    "labelmap": ("segmentation", np.dtype(np.uint64)),
    "labelarray": ("segmentation", np.dtype(np.uint64)),
}
_POINT_TYPES = ("annotation",)
_MIN_READ = 64
_MAX_SIBLING_SCALES = 10
_DEFAULT_EXTENT = 1 << 16


def _address(source: Source) -> DvidAddress:
    try:
        return parse_dvid(source.location)
    except ValueError as exc:
        raise SourceNotFoundError(str(source), str(exc)) from None


def _xyz3(doc: dict[str, Any], key: str, where: str, default: Any = None) -> tuple[int, ...] | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3:
        raise MetadataError(where, key, f"expected 3 numbers, got {value!r:.100}")
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise MetadataError(where, key, f"expected 3 numbers, got {value!r:.100}") from None


def _type_of(info: dict[str, Any], where: str) -> str:
    base = info.get("Base")
    if not isinstance(base, dict) or not isinstance(base.get("TypeName"), str):
        raise MetadataError(where, "Base.TypeName", "missing")
    return base["TypeName"]


class DvidBackend(VolumeBackend):
    """One ``uint8blk`` or ``labelmap`` instance of a DVID node."""

    name: ClassVar[str] = "dvid"
    supports_writes: ClassVar[bool] = True
    server_agglomeration: ClassVar[bool] = True
    max_concurrency: ClassVar[int] = 16

    def __init__(  # noqa: PLR0917 - built by open() only
        self,
        source: Source,
        address: DvidAddress,
        typename: str,
        scales: list[Scale],
        instances: list[str],
        block: Index3,
        mode: str,
    ) -> None:
        self.source = source
        self.address = address
        self.client = DvidClient.of(address)
        self.typename = typename
        self.kind, self._dtype = _VOLUME_TYPES[typename]
        self.scales = tuple(scales)
        self._instances = instances
        self._block = block
        self.writable = mode == "r+"

    # -- discovery -------------------------------------------------------------------
    @classmethod
    def sniff(cls, source: Source) -> bool:
        """Only ``dvid://`` sources."""
        return source.format == "dvid"

    @classmethod
    def contents(cls, source: Source) -> list[Entry]:
        """The instance itself, or every volume and annotation instance of a node."""
        address = _address(source)
        client = DvidClient.of(address)
        if not address.uuid:
            raise SourceNotFoundError(
                str(source), "name a node: dvid://host:port/<uuid>[/<instance>]"
            )
        if address.instance:
            info = client.instance_info(address.uuid, address.instance)
            typename = _type_of(info, str(source))
            kind = (
                "points" if typename in _POINT_TYPES else _VOLUME_TYPES.get(typename, ("", None))[0]
            )
            if not kind:
                raise UnsupportedEncodingError(
                    str(source), "Base.TypeName", f"{typename} is not shown"
                )
            return [Entry(source, kind, address.instance)]  # type: ignore[arg-type]
        repo = client.repo(address.uuid)
        entries = []
        for name, info in sorted((repo.get("DataInstances") or {}).items()):
            typename = info.get("Base", {}).get("TypeName") if isinstance(info, dict) else None
            child = source.__class__(
                str(address.with_instance(name))[len("dvid://") :], format="dvid"
            )
            if typename in _VOLUME_TYPES:
                entries.append(Entry(child, _VOLUME_TYPES[typename][0], name))
            elif typename in _POINT_TYPES:
                entries.append(Entry(child, "points", name))
        return entries

    @classmethod
    def open(cls, source: Source, mode: Literal["r", "r+"] = "r") -> DvidBackend:
        """Read the instance's info (and its siblings' for grayscale pyramids).

        Raises
        ------
        SourceNotFoundError
            If the address names no node or instance.
        UnsupportedEncodingError
            For instance types that are not volumes.
        ReadOnlyError
            For ``mode="r+"`` on a committed (locked) node.
        RemoteError
            If the server fails (its message kept).
        """
        address = _address(source)
        if not (address.uuid and address.instance):
            raise SourceNotFoundError(str(source), "expected dvid://host:port/<uuid>/<instance>")
        client = DvidClient.of(address)
        where = str(source)
        info = _instance_info(client, address)
        typename = _type_of(info, where)
        if typename not in _VOLUME_TYPES:
            raise UnsupportedEncodingError(
                where, "Base.TypeName", f"{typename} is not a volume (uint8blk or labelmap)"
            )
        if mode == "r+" and client.is_locked(address.uuid):
            raise ReadOnlyError(
                f"{source}: node {address.uuid} is committed (locked); make a new version to edit"
            )
        scales, instances, block = _scales(client, address, typename, info, where)
        return cls(source, address, typename, scales, instances, block, mode)

    @classmethod
    def open_points(cls, source: Source) -> PointSet:
        """An ``annotation`` instance's elements as points with kind, tags and partners."""
        address = _address(source)
        client = DvidClient.of(address)
        info = _instance_info(client, address)
        if _type_of(info, str(source)) not in _POINT_TYPES:
            raise UnsupportedEncodingError(
                str(source), "Base.TypeName", "not an annotation instance"
            )
        found = read_elements(client, address, info)
        return point_set(address.instance, found, str(source))

    # -- data --------------------------------------------------------------------------
    def _level(self, scale: int) -> tuple[str, int]:
        """Instance name and DVID ``scale=`` of one level."""
        if self.typename == "uint8blk":
            return self._instances[scale], 0
        return self._instances[0], scale

    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Fetch one z, y, x region (scale-relative) with one raw request."""
        sc = self.scales[scale]
        instance, level = self._level(scale)
        origin = tuple(a + o for a, o in zip(start, sc.voxel_offset, strict=True))
        shape = tuple(b - a for a, b in zip(start, stop, strict=True))
        compression = "lz4" if self.kind == "segmentation" else None
        try:
            return self.client.voxels(
                self.address.uuid,
                instance,
                origin,
                shape,
                self._dtype,
                scale=level,
                supervoxels=self.address.supervoxels,
                compression=compression,
                throttle=self.address.throttle,
            )
        except ServerBusyError as exc:
            raise ChunkError(
                str(self.source), scale, _region(start, stop), f"server busy ({exc.problem})"
            ) from None
        except (RemoteError, ValueError) as exc:
            raise ChunkError(str(self.source), scale, _region(start, stop), str(exc)) from None

    @property
    def write_block(self) -> Index3:
        """The z, y, x block size writes must be aligned to (in voxel-index space)."""
        return tuple(int(v) for v in self._block)  # type: ignore[return-value]

    def write(self, scale: int, start: Index3, data: np.ndarray) -> None:
        """Write a block-aligned z, y, x region of scale 0 (DVID computes the downres scales)."""
        if not self.writable:
            raise ReadOnlyError(f"{self.source} was opened read-only; open it with mode='r+'")
        if scale != 0:
            raise ReadOnlyError("DVID computes the coarser scales itself; write scale 0")
        sc = self.scales[0]
        origin = tuple(a + o for a, o in zip(start, sc.voxel_offset, strict=True))
        block = self._block
        aligned = all(
            o % b == 0 and n % b == 0 for o, n, b in zip(origin, data.shape, block, strict=True)
        )
        if not aligned:
            raise RegionError(
                f"DVID writes must be aligned to its {block[::-1]} (x, y, z) blocks: "
                f"offset {origin[::-1]}, size {data.shape[::-1]}"
            )
        self.client.write_voxels(
            self.address.uuid,
            self._instances[0],
            origin,
            data,
            dtype=self._dtype,
            throttle=self.address.throttle,
        )

    def describe(self) -> dict[str, Any]:
        """Server, node, instance, type and scales."""
        return {
            "dvid": {
                "server": self.address.server,
                "uuid": self.address.uuid,
                "instance": self.address.instance,
                "type": self.typename,
                "supervoxels": self.address.supervoxels,
                "scale_instances": self._instances,
            }
        }


def _region(start: Index3, stop: Index3) -> str:
    return ",".join(f"{a}:{b}" for a, b in zip(start, stop, strict=True))


def _instance_info(client: DvidClient, address: DvidAddress) -> dict[str, Any]:
    try:
        return client.instance_info(address.uuid, address.instance)
    except RemoteError as exc:
        if exc.status in (400, 404):
            raise SourceNotFoundError(f"dvid://{address}", exc.problem) from None
        raise


def _scales(
    client: DvidClient, address: DvidAddress, typename: str, info: dict[str, Any], where: str
) -> tuple[list[Scale], list[str], Index3]:
    """Scales, the instance serving each, and the block size (z, y, x) of a volume instance."""
    ext = info.get("Extended") or {}
    block = _xyz3(ext, "BlockSize", where, [64, 64, 64])[::-1]  # type: ignore[index]
    voxel = ext.get("VoxelSize") or [8, 8, 8]
    resolution = Vec3.from_xyz([float(v) for v in voxel])
    lo = _xyz3(ext, "MinPoint", where) or (0, 0, 0)
    hi = _xyz3(ext, "MaxPoint", where) or (_DEFAULT_EXTENT - 1,) * 3
    lo_zyx, hi_zyx = lo[::-1], tuple(v + 1 for v in hi[::-1])
    if typename == "uint8blk":
        instances = _grayscale_siblings(client, address)
        levels = len(instances)
    else:
        instances = [address.instance]
        levels = int(ext.get("MaxDownresLevel") or 0) + 1
    # Every level starts at the same nm (napari's levels share one origin), on a block
    # boundary of every level: level 0's start is aligned to block * 2**(levels - 1).
    origin = tuple(
        a // (b << (levels - 1)) * (b << (levels - 1)) for a, b in zip(lo_zyx, block, strict=True)
    )
    scales = []
    for k in range(levels):
        f = 2**k
        start = tuple(a // f for a in origin)
        stop = tuple(_ceil_div(a, f) for a in hi_zyx)
        chunk = tuple(max(b, _MIN_READ) for b in block)
        scales.append(
            Scale(
                shape=tuple(b - a for a, b in zip(start, stop, strict=True)),  # type: ignore[arg-type]
                resolution=resolution * f,
                chunk_shape=chunk,  # type: ignore[arg-type]
                dtype=_VOLUME_TYPES[typename][1],
                voxel_offset=start,  # type: ignore[arg-type]
                encoding="lz4" if typename != "uint8blk" else "raw",
                key=instances[min(k, len(instances) - 1)],
            )
        )
    return scales, instances, block  # type: ignore[return-value]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _grayscale_siblings(client: DvidClient, address: DvidAddress) -> list[str]:
    """``name``, then ``name_1``, ``name_2``... while the node has them."""
    try:
        names = set((client.repo(address.uuid).get("DataInstances") or {}).keys())
    except RemoteError as exc:
        logger.info("no repo info for %s (%s); one scale", address, exc)
        return [address.instance]
    found = [address.instance]
    while len(found) < _MAX_SIBLING_SCALES and f"{address.instance}_{len(found)}" in names:
        found.append(f"{address.instance}_{len(found)}")
    return found
