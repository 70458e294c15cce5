"""Neuroglancer precomputed skeletons, from a local directory or over HTTP.

A segmentation's ``info`` names its skeleton directory (``"skeletons": "<dir>"``);
``<dir>/info`` is ``{"@type": "neuroglancer_skeletons", "transform": [12 numbers],
"vertex_attributes": [...], "sharding"?: {...}}``. One skeleton is
``u32 nv, u32 ne, nv*3 f32 positions, ne*2 u32 edges`` followed by every vertex
attribute (``nv * num_components`` values of its type), all little-endian;
unsharded it is the file ``<dir>/<segment id>`` (CloudVolume writes it locally
as ``<id>.gz``); sharded, the segment id is the key in the shard files.

Positions, mapped to nm by ``transform`` (3x4, row-major, x, y, z), use
Neuroglancer's corner convention (voxel ``i`` spans ``[i, i+1] * resolution``).
They are shifted by half a voxel of the finest scale and reversed to z, y, x, so
that they line up with the volume layers (voxel centres at ``i * resolution``).
Attributes are returned as stored: a ``"radius"`` is in nm when the transform
is the identity (CloudVolume's default); it is not rescaled by the transform.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.backends._meta import check_resolution, load_json, safe_join
from napari_connecto.backends._precomputed_codecs import gunzip
from napari_connecto.backends._precomputed_shards import ShardReader, ShardSpec
from napari_connecto.errors import MetadataError, SourceNotFoundError, UnsupportedEncodingError
from napari_connecto.objects.skeleton import Skeleton, SkeletonError
from napari_connecto.source import parse_source

if TYPE_CHECKING:
    from napari_connecto.remote.store import HttpStore
    from napari_connecto.source import SourceLike

__all__ = [
    "PrecomputedSkeletons",
    "SkeletonFormatError",
    "SkeletonInfo",
    "VertexAttribute",
    "decode_skeleton",
    "open_skeletons",
    "parse_skeleton_info",
    "read_skeleton",
]

logger = logging.getLogger(__name__)

_INFO_TYPE = "neuroglancer_skeletons"
_ATTRIBUTE_TYPES = ("float32", "uint8", "int8", "uint16", "int16", "uint32", "int32")
_MAX_SKELETON_BYTES = 1 << 30
_MAX_COMPONENTS = 64
_SHARD_HASHES = ("identity", "murmurhash3_x86_128")
_ANY_KEY_GRID = (1 << 64, 1, 1)
"""A chunk grid whose compressed Morton code of ``(key, 0, 0)`` is ``key`` itself."""


class SkeletonFormatError(MetadataError):
    """A skeleton file that is truncated, too long or inconsistent (names file and problem)."""


@dataclass(frozen=True, slots=True)
class VertexAttribute:
    """One entry of ``vertex_attributes``."""

    id: str
    """Attribute name (``"radius"``, ``"vertex_types"``, ...)."""
    dtype: np.dtype
    """Little-endian element type."""
    num_components: int
    """Values per vertex."""


@dataclass(frozen=True, slots=True)
class SkeletonInfo:
    """A validated skeleton ``info`` document."""

    path: str
    """Where it was read from (for messages)."""
    transform: np.ndarray
    """3x4 float64 matrix mapping stored x, y, z positions to nm x, y, z."""
    attributes: tuple[VertexAttribute, ...]
    """Vertex attributes, in file order."""
    sharding: ShardSpec | None
    """Sharding, or ``None`` for one file per segment."""


def parse_skeleton_info(doc: dict[str, Any], where: str) -> SkeletonInfo:
    """Validate a skeleton ``info`` document.

    Parameters
    ----------
    doc : dict
        The parsed JSON.
    where : str
        Its path or URL, named in errors.

    Returns
    -------
    SkeletonInfo

    Raises
    ------
    MetadataError
        If a field is missing or malformed; :class:`UnsupportedEncodingError` for
        an unknown ``@type``, attribute type or sharding.
    """
    at_type = doc.get("@type", _INFO_TYPE)
    if at_type != _INFO_TYPE:
        raise UnsupportedEncodingError(where, "@type", f"{at_type!r} is not {_INFO_TYPE!r}")
    raw = doc.get("transform", [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
    if (
        not isinstance(raw, list)
        or len(raw) != 12
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    ):
        raise MetadataError(where, "transform", "expected a list of 12 numbers")
    transform = np.array(raw, dtype=np.float64).reshape(3, 4)
    if not np.isfinite(transform).all() or abs(np.linalg.det(transform[:, :3])) == 0:
        raise MetadataError(where, "transform", "must be finite and invertible")
    attributes = doc.get("vertex_attributes", [])
    if not isinstance(attributes, list):
        raise MetadataError(where, "vertex_attributes", "expected a list")
    parsed = tuple(_attribute(where, i, a) for i, a in enumerate(attributes))
    sharding = doc.get("sharding")
    spec = None if sharding is None else _sharding(where, sharding)
    return SkeletonInfo(where, transform, parsed, spec)


def _attribute(where: str, i: int, item: Any) -> VertexAttribute:
    """One validated ``vertex_attributes`` entry."""
    field = f"vertex_attributes[{i}]"
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        raise MetadataError(where, field, "expected an object with a non-empty 'id'")
    kind = item.get("data_type")
    if kind not in _ATTRIBUTE_TYPES:
        raise UnsupportedEncodingError(where, f"{field}.data_type", f"unsupported type {kind!r}")
    count = item.get("num_components", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= _MAX_COMPONENTS:
        raise MetadataError(where, f"{field}.num_components", f"bad value {count!r}")
    return VertexAttribute(item["id"], np.dtype(kind).newbyteorder("<"), count)


def _sharding(where: str, doc: Any) -> ShardSpec:
    """A validated ``sharding`` object."""
    if not isinstance(doc, dict) or doc.get("@type") != "neuroglancer_uint64_sharded_v1":
        raise UnsupportedEncodingError(where, "sharding", "expected neuroglancer_uint64_sharded_v1")
    for name, limit in (("preshift_bits", 64), ("minishard_bits", 32), ("shard_bits", 64)):
        value = doc.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise MetadataError(where, f"sharding.{name}", f"bad value {value!r}")
    if doc.get("hash") not in _SHARD_HASHES:
        raise UnsupportedEncodingError(where, "sharding.hash", f"unknown hash {doc.get('hash')!r}")
    for name in ("minishard_index_encoding", "data_encoding"):
        if doc.get(name, "raw") not in ("raw", "gzip"):
            raise UnsupportedEncodingError(where, f"sharding.{name}", f"unknown {doc.get(name)!r}")
    return ShardSpec.from_json(doc)


def decode_skeleton(
    data: bytes,
    info: SkeletonInfo,
    *,
    where: str,
    segment_id: int | None = None,
    resolution_zyx: tuple[float, float, float] | None = None,
) -> Skeleton:
    """Decode one skeleton file into a :class:`Skeleton` in the project's frame.

    Parameters
    ----------
    data : bytes
        The (un-gzipped) file contents.
    info : SkeletonInfo
        The skeleton directory's ``info``.
    where : str
        File name for messages.
    segment_id : int, optional
        Recorded on the skeleton.
    resolution_zyx : tuple of float, optional
        The segmentation's finest resolution (nm); positions are shifted by half
        of it (corner to centre convention). ``None``: no shift.

    Returns
    -------
    Skeleton
        Vertices in nm, z, y, x; attributes by id (one component: shape (N,)).

    Raises
    ------
    SkeletonFormatError
        If the file is truncated, too long, or has out-of-range edges or non-finite positions.
    """
    if len(data) < 8:
        raise SkeletonFormatError(where, "", f"truncated: {len(data)} bytes, no header")
    nv, ne = (int(v) for v in np.frombuffer(data, dtype="<u4", count=2))
    sizes = [nv * 12, ne * 8] + [nv * a.num_components * a.dtype.itemsize for a in info.attributes]
    expected = 8 + sum(sizes)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise SkeletonFormatError(
            where, "", f"{problem}: {len(data)} bytes, expected {expected} for {nv} vertices"
        )
    offset = 8
    positions = np.frombuffer(data, dtype="<f4", count=nv * 3, offset=offset).reshape(nv, 3)
    offset += sizes[0]
    edges = np.frombuffer(data, dtype="<u4", count=ne * 2, offset=offset).reshape(ne, 2)
    offset += sizes[1]
    attributes: dict[str, np.ndarray] = {}
    for attribute, size in zip(info.attributes, sizes[2:], strict=True):
        values = np.frombuffer(
            data, dtype=attribute.dtype, count=size // attribute.dtype.itemsize, offset=offset
        )
        offset += size
        shape = (nv,) if attribute.num_components == 1 else (nv, attribute.num_components)
        attributes[attribute.id] = values.reshape(shape).astype(attribute.dtype.newbyteorder("="))
    nm_xyz = positions.astype(np.float64) @ info.transform[:, :3].T + info.transform[:, 3]
    zyx = nm_xyz[:, ::-1]
    if resolution_zyx is not None:
        zyx = zyx - 0.5 * np.asarray(resolution_zyx, dtype=np.float64)
    try:
        return Skeleton(zyx, edges, attributes, segment_id)
    except SkeletonError as exc:
        raise SkeletonFormatError(where, "", str(exc)) from None


class _Files:
    """Small reads below a local directory or an :class:`HttpStore`."""

    def __init__(self, root: Path | HttpStore) -> None:
        self.root = root

    def where(self, key: str) -> str:
        """A path or URL for messages."""
        if isinstance(self.root, Path):
            return str(self.root / key)
        from napari_connecto.remote.http import public_url

        return public_url(self.root.key_url(key))

    def get(self, key: str) -> bytes | None:
        """The whole of ``key`` (``None`` if missing); capped in size."""
        if not isinstance(self.root, Path):
            return self.root.get(key)
        path = safe_join(self.root, key, path=str(self.root), field="key")
        try:
            with open(path, "rb") as fh:
                data = fh.read(_MAX_SKELETON_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise SkeletonFormatError(str(path), "", f"cannot be read ({exc})") from None
        if len(data) > _MAX_SKELETON_BYTES:
            raise SkeletonFormatError(str(path), "", f"larger than {_MAX_SKELETON_BYTES} bytes")
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        """``length`` bytes of ``key`` from ``start`` (``None`` if missing)."""
        if not isinstance(self.root, Path):
            return self.root.get_range(key, start, length)
        path = safe_join(self.root, key, path=str(self.root), field="key")
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except (FileNotFoundError, NotADirectoryError):
            return None


class PrecomputedSkeletons:
    """The skeletons of one precomputed segmentation.

    Parameters
    ----------
    root : Path or HttpStore
        The skeleton directory (holding its ``info``).
    info : SkeletonInfo
        Its validated ``info``.
    resolution_zyx : tuple of float, optional
        The segmentation's finest resolution in nm (for the half-voxel shift).
    """

    def __init__(
        self,
        root: Path | HttpStore,
        info: SkeletonInfo,
        resolution_zyx: tuple[float, float, float] | None = None,
    ) -> None:
        self.info = info
        self.resolution_zyx = resolution_zyx
        self._files = _Files(root)
        self._shards = (
            None
            if info.sharding is None
            else ShardReader(info.sharding, _ANY_KEY_GRID, self._files.get_range, cache_size=64)
        )

    def __repr__(self) -> str:
        return f"PrecomputedSkeletons({self._files.where('')!r})"

    def get(self, segment_id: int) -> Skeleton:
        """The skeleton of ``segment_id``.

        Raises
        ------
        SourceNotFoundError
            If the segment has no skeleton.
        SkeletonFormatError
            If its file is truncated or malformed.
        RemoteError
            If the server fails.
        """
        segment_id = int(segment_id)
        if not 0 <= segment_id < 1 << 64:
            raise ValueError(f"segment id {segment_id} is not a uint64")
        data, where = self._raw(segment_id)
        if data is None:
            raise SourceNotFoundError(where, f"no skeleton for segment {segment_id}")
        return decode_skeleton(
            data,
            self.info,
            where=where,
            segment_id=segment_id,
            resolution_zyx=self.resolution_zyx,
        )

    def _raw(self, segment_id: int) -> tuple[bytes | None, str]:
        """The decoded (gunzipped) bytes of one skeleton and where they came from."""
        key = str(segment_id)
        if self._shards is not None:
            where = f"{self._files.where('')} (sharded) segment {segment_id}"
            try:
                return self._shards.chunk_bytes((0, 0, segment_id)), where
            except ValueError as exc:
                raise SkeletonFormatError(where, "", str(exc)) from None
        for name in (key, key + ".gz"):
            data = self._files.get(name)
            if data is not None:
                return _maybe_gunzip(
                    data, self._files.where(name), name.endswith(".gz")
                ), self._files.where(name)
        return None, self._files.where(key)


def _maybe_gunzip(data: bytes, where: str, named_gz: bool) -> bytes:
    """Gunzip CloudVolume's ``.gz`` files (and gzip bodies a server did not decode)."""
    if not (named_gz or data[:2] == b"\x1f\x8b"):
        return data
    try:
        return gunzip(data, _MAX_SKELETON_BYTES)
    except ValueError as exc:
        if named_gz:
            raise SkeletonFormatError(where, "", str(exc)) from None
        return data  # a raw file whose vertex count happens to start with the gzip magic


def open_skeletons(volume_source: SourceLike) -> PrecomputedSkeletons:
    """The skeletons of a precomputed segmentation (local directory or URL).

    Parameters
    ----------
    volume_source : str, os.PathLike or Source
        The segmentation (``precomputed://`` prefix optional), as for ``open_volume``.

    Returns
    -------
    PrecomputedSkeletons

    Raises
    ------
    SourceNotFoundError
        If the segmentation or its skeleton ``info`` does not exist.
    MetadataError
        If the segmentation has no ``"skeletons"`` or either ``info`` is malformed.
    """
    source = parse_source(volume_source)
    if source.is_remote:
        from napari_connecto.remote.store import HttpStore

        location = source.location.removesuffix("/info")
        store = HttpStore(location)
        doc = store.get_json("info")
        where = f"{location}/info"
        name = _skeleton_dir(doc, where)
        root: Path | HttpStore = store.child(name)
        sk_doc = root.get_json("info")
    else:
        path = Path(source.location)
        base = path.parent if path.name == "info" else path
        where = str(base / "info")
        doc = load_json(base / "info") or {}
        name = _skeleton_dir(doc, where)
        root = safe_join(base, name, path=where, field="skeletons")
        sk_doc = load_json(root / "info") or {}
    info = parse_skeleton_info(sk_doc, _Files(root).where("info"))
    return PrecomputedSkeletons(root, info, _finest_resolution(doc, where))


def _skeleton_dir(doc: dict[str, Any], where: str) -> str:
    """The ``skeletons`` key of a volume ``info``."""
    name = doc.get("skeletons")
    if name is None:
        raise MetadataError(where, "skeletons", "this segmentation has no skeletons")
    if not isinstance(name, str) or not name.strip("/"):
        raise MetadataError(where, "skeletons", f"expected a directory name, got {name!r}")
    return name.strip("/")


def _finest_resolution(doc: dict[str, Any], where: str) -> tuple[float, float, float] | None:
    """The first scale's resolution, z, y, x nm (``None`` if the info has no scales)."""
    scales = doc.get("scales")
    if not isinstance(scales, list) or not scales or not isinstance(scales[0], dict):
        logger.warning("%s: no scales; skeletons are not shifted to voxel centres", where)
        return None
    x, y, z = check_resolution(where, "scales[0].resolution", scales[0].get("resolution"))
    return (z, y, x)


def read_skeleton(volume_source: SourceLike | os.PathLike[str], segment_id: int) -> Skeleton:
    """The skeleton of one segment of a precomputed segmentation, in nm, z, y, x.

    Parameters
    ----------
    volume_source : str, os.PathLike or Source
        The segmentation.
    segment_id : int
        The segment.

    Returns
    -------
    Skeleton

    Raises
    ------
    SourceNotFoundError
        If the segmentation, its skeletons or this segment's skeleton is missing.
    MetadataError
        If metadata or the skeleton file is malformed (:class:`SkeletonFormatError`).
    """
    return open_skeletons(volume_source).get(segment_id)
