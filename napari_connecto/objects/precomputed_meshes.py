"""Neuroglancer precomputed meshes (legacy and multi-resolution), local or over HTTP.

Legacy (``neuroglancer_legacy_mesh``): ``<mesh dir>/<id>:0`` is a JSON manifest
``{"fragments": [...]}``; each fragment is ``uint32 n``, ``n * 3`` float32 x, y, z
(nm), then uint32 triangle triples. cloud-volume writes fragments gzip'd as
``<name>.gz``; both are read.

Multi-resolution (``neuroglancer_multilod_draco``): ``<id>.index`` is the binary
manifest and ``<id>`` the Draco fragments concatenated in manifest order (or, if
the mesh ``info`` has ``sharding``, the manifest is the shard entry of ``<id>``
and the fragments sit immediately before it in the same shard file). Fragment
vertices are integers ``q`` in ``[0, 2**bits)``; the stored model position is
``grid_origin + vertex_offsets[lod] + chunk_shape * 2**lod * (position + q /
(2**bits - 1))`` and ``transform`` (3 x 4, row-major) maps it to nm.

Precomputed nm are x, y, z with voxel ``i`` spanning ``[i, i+1) * res``; the
readers here return :class:`Mesh` in the project's frame (z, y, x, voxel centres
at ``i * res``), shifted by ``shift_zyx`` (normally ``-res / 2`` of the finest scale).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import numpy as np

from napari_connecto.backends._precomputed_codecs import gunzip
from napari_connecto.backends._precomputed_shards import ShardReader, ShardSpec
from napari_connecto.errors import MetadataError, UnsafeDataError
from napari_connecto.objects.mesh import Mesh, MeshDecodeError, MeshNotFoundError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from napari_connecto.remote.store import HttpStore

__all__ = [
    "HttpKeys",
    "KeyReader",
    "LocalKeys",
    "MeshInfo",
    "PrecomputedMeshes",
    "decode_legacy_fragment",
    "key_reader",
]

logger = logging.getLogger(__name__)

LEGACY = "neuroglancer_legacy_mesh"
MULTIRES = "neuroglancer_multilod_draco"
_MAX_BYTES = 1 << 30
_GZIP_MAGIC = b"\x1f\x8b"
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class KeyReader(Protocol):
    """Bytes of keys below one root (a local directory or a base URL)."""

    where: str

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key`` (gunzipped if stored as ``key.gz``), or ``None`` if absent."""

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        """``length`` bytes of ``key`` from ``start``, or ``None`` if absent."""

    def child(self, prefix: str) -> KeyReader:
        """The reader of the keys below ``prefix``."""


def _inflate(data: bytes, where: str) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gunzip(data, _MAX_BYTES)
    except ValueError as exc:
        raise MeshDecodeError(where, "", str(exc)) from None


def _check_key(where: str, key: str) -> None:
    if key.startswith("/") or any(p in ("..", ".") for p in key.split("/")):
        raise UnsafeDataError(where, key, "key escapes the mesh directory")


@dataclass(frozen=True, slots=True)
class LocalKeys:
    """Keys below a local directory."""

    root: Path
    """The directory."""

    @property
    def where(self) -> str:
        """The directory, for messages."""
        return str(self.root)

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key`` (or of ``key.gz``, gunzipped), or ``None``."""
        _check_key(self.where, key)
        for name in (key, key + ".gz"):
            path = self.root / name
            if path.is_file():
                return _inflate(path.read_bytes(), str(path))
        return None

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        """``length`` bytes of ``key`` from ``start``, or ``None``."""
        _check_key(self.where, key)
        path = self.root / key
        if not path.is_file():
            return None
        with path.open("rb") as fh:
            fh.seek(start)
            return fh.read(length)

    def child(self, prefix: str) -> LocalKeys:
        """The keys below ``prefix``."""
        _check_key(self.where, prefix.strip("/"))
        return LocalKeys(self.root / prefix.strip("/"))


@dataclass(frozen=True, slots=True)
class HttpKeys:
    """Keys below a base URL, fetched through :class:`HttpStore`."""

    store: HttpStore
    """The transport."""

    @property
    def where(self) -> str:
        """The base URL, for messages."""
        return self.store.url

    def _names(self, key: str) -> tuple[str, ...]:
        return (key, quote(key, safe="/")) if ":" in key else (key,)

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key`` (trying ``%3A`` for ``:`` and ``key.gz``), or ``None``."""
        for name in (*self._names(key), key + ".gz"):
            data = self.store.get(name)
            if data is not None:
                return _inflate(data, f"{self.where}/{name}")
        return None

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        """``length`` bytes of ``key`` from ``start`` (HTTP Range), or ``None``."""
        return self.store.get_range(key, start, length)

    def child(self, prefix: str) -> HttpKeys:
        """The keys below ``prefix``."""
        return HttpKeys(self.store.child(prefix))


def key_reader(location: str | Path) -> KeyReader:
    """A :class:`KeyReader` for a local directory or an ``http(s)://``/``gs://``/``s3://`` URL."""
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        from napari_connecto.remote.store import HttpStore

        return HttpKeys(HttpStore(text))
    return LocalKeys(Path(text.removeprefix("file://")))


@dataclass(frozen=True, slots=True)
class MeshInfo:
    """The validated ``info`` of a mesh directory."""

    kind: str
    """``"neuroglancer_legacy_mesh"`` or ``"neuroglancer_multilod_draco"``."""
    vertex_quantization_bits: int = 0
    """Multires only: 10 or 16."""
    transform: tuple[float, ...] = _IDENTITY
    """Multires only: 3 x 4 row-major stored-model -> nm (x, y, z)."""
    sharding: dict[str, Any] | None = None
    """Multires only: the sharding spec, if the meshes are sharded."""

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None, where: str) -> MeshInfo:
        """Validate a mesh ``info`` document (``None``: a legacy directory without ``info``).

        Raises
        ------
        MetadataError
            If the type is unknown or a multires field is missing or malformed.
        """
        if doc is None or doc.get("@type", LEGACY) == LEGACY:
            return cls(LEGACY)
        if doc.get("@type") != MULTIRES:
            raise MetadataError(where, "@type", f"unknown mesh type {doc.get('@type')!r}")
        bits = doc.get("vertex_quantization_bits")
        if bits not in (10, 16):
            raise MetadataError(where, "vertex_quantization_bits", f"must be 10 or 16: {bits!r}")
        transform = doc.get("transform", list(_IDENTITY))
        if not isinstance(transform, list) or len(transform) != 12:
            raise MetadataError(where, "transform", "must be a list of 12 numbers")
        try:
            values = tuple(float(t) for t in transform)
        except (TypeError, ValueError):
            raise MetadataError(where, "transform", "must be a list of 12 numbers") from None
        sharding = doc.get("sharding")
        if sharding is not None and not isinstance(sharding, dict):
            raise MetadataError(where, "sharding", "must be an object")
        return cls(MULTIRES, int(bits), values, sharding)


def decode_legacy_fragment(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices xyz nm (N, 3) float32, faces (M, 3) int64)`` of one legacy fragment.

    Raises
    ------
    MeshDecodeError
        If the fragment is truncated or its length does not fit the layout.
    """
    if len(data) < 4:
        raise MeshDecodeError(where, "", "fragment shorter than its vertex count")
    n = int(np.frombuffer(data, "<u4", count=1)[0])
    rest = len(data) - 4 - 12 * n
    if rest < 0 or rest % 12:
        raise MeshDecodeError(where, "", f"{len(data)} bytes do not hold {n} vertices + triangles")
    vertices = np.frombuffer(data, "<f4", count=3 * n, offset=4).reshape(-1, 3)
    faces = np.frombuffer(data, "<u4", offset=4 + 12 * n).reshape(-1, 3).astype(np.int64)
    return vertices, faces


@dataclass(frozen=True, slots=True)
class _Manifest:
    """A parsed multires ``.index`` manifest."""

    chunk_shape: np.ndarray
    grid_origin: np.ndarray
    lod_scales: np.ndarray
    vertex_offsets: np.ndarray
    positions: tuple[np.ndarray, ...]
    sizes: tuple[np.ndarray, ...]

    @property
    def num_lods(self) -> int:
        return len(self.lod_scales)

    @classmethod
    def parse(cls, data: bytes, where: str) -> _Manifest:
        """Parse the binary manifest; typed errors on truncation or trailing bytes."""
        if len(data) < 28:
            raise MeshDecodeError(where, "", "manifest shorter than its header")
        head = np.frombuffer(data, "<f4", count=6)
        lods = int(np.frombuffer(data, "<u4", count=1, offset=24)[0])
        fixed = 28 + lods * (4 + 12 + 4)
        if lods == 0 or lods > 64 or len(data) < fixed:
            raise MeshDecodeError(where, "num_lods", f"{lods} levels do not fit {len(data)} bytes")
        scales = np.frombuffer(data, "<f4", count=lods, offset=28)
        offsets = np.frombuffer(data, "<f4", count=3 * lods, offset=28 + 4 * lods).reshape(-1, 3)
        counts = np.frombuffer(data, "<u4", count=lods, offset=28 + 16 * lods).astype(np.int64)
        if len(data) != fixed + 16 * int(counts.sum()):
            raise MeshDecodeError(where, "", "manifest length does not match its fragment counts")
        positions, sizes, at = [], [], fixed
        for n in counts.tolist():
            positions.append(np.frombuffer(data, "<u4", count=3 * n, offset=at).reshape(3, n).T)
            sizes.append(np.frombuffer(data, "<u4", count=n, offset=at + 12 * n).astype(np.int64))
            at += 16 * n
        return cls(head[:3], head[3:], scales, offsets, tuple(positions), tuple(sizes))


class _IdShardReader(ShardReader):
    """Shard entries addressed by segment id (not by chunk grid position)."""

    def entry(self, segment_id: int) -> tuple[str, int, bytes] | None:
        """``(shard file, absolute offset, decoded bytes)`` of an id's entry, or ``None``."""
        shard, minishard = self.spec.locate(segment_id)
        index = self._minishard(shard, minishard)
        if index is None or segment_id not in index:
            return None
        offset, size = index[segment_id]
        name = self.spec.shard_name(shard)
        start = self.spec.index_bytes + offset
        data = self._get_range(name, start, size)
        if data is None or len(data) != size:
            raise ValueError(f"{name}: entry {segment_id} is truncated")
        if self.spec.data_encoding == "gzip":
            data = gunzip(data, _MAX_BYTES)
        return name, start, data


class PrecomputedMeshes:
    """The meshes of one precomputed mesh directory.

    Parameters
    ----------
    keys : KeyReader
        Reader of the mesh directory (the segmentation's ``info["mesh"]``).
    info : MeshInfo
        Its validated ``info``.
    shift_zyx : sequence of float
        Added to every vertex after reordering to z, y, x (nm).
    """

    def __init__(self, keys: KeyReader, info: MeshInfo, shift_zyx: Sequence[float]) -> None:
        self.keys = keys
        self.info = info
        self.shift_zyx = np.asarray(shift_zyx, dtype=np.float64)
        self._shards = None
        if info.sharding is not None:
            self._shards = _IdShardReader(
                ShardSpec.from_json(info.sharding), (1, 1, 1), keys.get_range
            )

    @classmethod
    def open(cls, keys: KeyReader, shift_zyx: Sequence[float] = (0, 0, 0)) -> PrecomputedMeshes:
        """Read ``info`` (if any) of the mesh directory ``keys``.

        Raises
        ------
        MetadataError
            If ``info`` is not JSON or not a known mesh type.
        """
        where = f"{keys.where}/info"
        raw = keys.get("info")
        doc = None
        if raw is not None:
            try:
                doc = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise MetadataError(where, "", f"not JSON ({exc})") from None
            if not isinstance(doc, dict):
                raise MetadataError(where, "", "not a JSON object")
        return cls(keys, MeshInfo.from_json(doc, where), shift_zyx)

    def __repr__(self) -> str:
        return f"PrecomputedMeshes({self.keys.where!r}, {self.info.kind})"

    def get(self, segment_id: int, lod: int = 0, *, max_bytes: int | None = None) -> Mesh:
        """The mesh of ``segment_id`` (multires: at level of detail ``lod``, 0 = finest).

        With ``max_bytes``, a multi-resolution mesh is read at the finest level whose
        encoded fragments fit in that many bytes (the coarsest if none does), ``lod``
        then being the finest level considered: a huge neuron is shown coarser instead
        of stalling the viewer with millions of triangles.

        Raises
        ------
        MeshNotFoundError
            If no manifest is stored for the segment.
        MeshDecodeError
            If the manifest or a fragment is corrupt.
        """
        return self.get_level(segment_id, lod, max_bytes=max_bytes)[0]

    def get_level(
        self, segment_id: int, lod: int = 0, *, max_bytes: int | None = None
    ) -> tuple[Mesh, int]:
        """:meth:`get`, and the level of detail read (0 for legacy meshes)."""
        if self.info.kind == LEGACY:
            return self._get_legacy(int(segment_id)), 0
        return self._get_multires(int(segment_id), lod, max_bytes)

    def _finish(self, xyz: np.ndarray, faces: np.ndarray, where: str) -> Mesh:
        zyx = xyz[:, ::-1].astype(np.float64) + self.shift_zyx
        return Mesh.from_arrays(zyx, faces, where=where)

    def _get_legacy(self, segment_id: int) -> Mesh:
        key = f"{segment_id}:0"
        where = f"{self.keys.where}/{key}"
        raw = self.keys.get(key)
        if raw is None:
            raise MeshNotFoundError(where, f"no mesh for segment {segment_id}")
        try:
            fragments = json.loads(raw)["fragments"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise MeshDecodeError(where, "fragments", f"not a mesh manifest ({exc})") from None
        if not isinstance(fragments, list) or not all(isinstance(f, str) for f in fragments):
            raise MeshDecodeError(where, "fragments", "must be a list of names")
        verts, faces, count = [], [], 0
        for name in fragments:
            data = self.keys.get(name)
            if data is None:
                raise MeshDecodeError(f"{self.keys.where}/{name}", "", "fragment file missing")
            v, f = decode_legacy_fragment(data, f"{self.keys.where}/{name}")
            verts.append(v)
            faces.append(f + count)
            count += len(v)
        if not verts:
            return Mesh.empty()
        return self._finish(np.concatenate(verts), np.concatenate(faces), where)

    def _manifest_and_data(
        self, segment_id: int, lod: int, max_bytes: int | None = None
    ) -> tuple[_Manifest, int, bytes, str]:
        if self._shards is None:
            where = f"{self.keys.where}/{segment_id}.index"
            raw = self.keys.get(f"{segment_id}.index")
            if raw is None:
                raise MeshNotFoundError(where, f"no mesh for segment {segment_id}")
            manifest = _Manifest.parse(raw, where)
            lod = _fitting_lod(manifest, _check_lod(manifest, lod, where), max_bytes)
            start = int(sum(int(s.sum()) for s in manifest.sizes[:lod]))
            length = int(manifest.sizes[lod].sum())
            data = self.keys.get_range(str(segment_id), start, length) if length else b""
            return manifest, lod, _whole(data, length, f"{self.keys.where}/{segment_id}"), where
        try:
            entry = self._shards.entry(segment_id)
        except ValueError as exc:
            raise MeshDecodeError(self.keys.where, "sharding", str(exc)) from None
        if entry is None:
            raise MeshNotFoundError(self.keys.where, f"no mesh for segment {segment_id}")
        name, at, raw = entry
        where = f"{self.keys.where}/{name}#{segment_id}"
        manifest = _Manifest.parse(raw, where)
        lod = _fitting_lod(manifest, _check_lod(manifest, lod, where), max_bytes)
        total = int(sum(int(s.sum()) for s in manifest.sizes))
        start = at - total + int(sum(int(s.sum()) for s in manifest.sizes[:lod]))
        length = int(manifest.sizes[lod].sum())
        if start < 0:
            raise MeshDecodeError(where, "", "fragments would start before the shard file")
        data = self.keys.get_range(name, start, length) if length else b""
        return manifest, lod, _whole(data, length, where), where

    def _get_multires(
        self, segment_id: int, lod: int, max_bytes: int | None = None
    ) -> tuple[Mesh, int]:
        import DracoPy

        manifest, lod, data, where = self._manifest_and_data(segment_id, lod, max_bytes)
        scale = manifest.chunk_shape.astype(np.float64) * 2.0**lod
        base = manifest.grid_origin.astype(np.float64) + manifest.vertex_offsets[lod]
        quant = 2.0**self.info.vertex_quantization_bits - 1
        transform = np.asarray(self.info.transform, dtype=np.float64).reshape(3, 4)
        verts, faces, count, at = [], [], 0, 0
        for position, size in zip(manifest.positions[lod], manifest.sizes[lod], strict=True):
            chunk, at = data[at : at + int(size)], at + int(size)
            if not size:
                continue
            try:
                decoded = DracoPy.decode(chunk)
            except (ValueError, RuntimeError, DracoPy.FileTypeException) as exc:
                raise MeshDecodeError(where, f"lod {lod}", f"bad Draco fragment ({exc})") from None
            q = np.asarray(decoded.points, dtype=np.float64).reshape(-1, 3)
            model = base + scale * (position.astype(np.float64) + q / quant)
            verts.append(model @ transform[:, :3].T + transform[:, 3])
            f = np.asarray(decoded.faces, dtype=np.int64).reshape(-1, 3)
            faces.append(f + count)
            count += len(q)
        if not verts:
            return Mesh.empty(), lod
        return self._finish(np.concatenate(verts), np.concatenate(faces), where), lod

    def num_lods(self, segment_id: int) -> int:
        """Levels of detail stored for a segment (1 for legacy meshes)."""
        if self.info.kind == LEGACY:
            return 1
        return self._manifest_and_data(int(segment_id), 0)[0].num_lods

    def lod_bytes(self, segment_id: int) -> list[int]:
        """Encoded bytes of each stored level of detail of a segment, finest first."""
        if self.info.kind == LEGACY:
            raise MeshDecodeError(self.keys.where, "", "legacy meshes have one level of detail")
        manifest = self._manifest_and_data(int(segment_id), -1)[0]
        return [int(s.sum()) for s in manifest.sizes]


def _check_lod(manifest: _Manifest, lod: int, where: str) -> int:
    lod = manifest.num_lods - 1 if lod == -1 else lod
    if not 0 <= lod < manifest.num_lods:
        raise MeshNotFoundError(where, f"level of detail {lod} of {manifest.num_lods} not stored")
    return lod


def _fitting_lod(manifest: _Manifest, finest: int, max_bytes: int | None) -> int:
    """The finest level from ``finest`` on whose fragments fit ``max_bytes`` (else the coarsest)."""
    if max_bytes is None:
        return finest
    for lod in range(finest, manifest.num_lods):
        if int(manifest.sizes[lod].sum()) <= max_bytes:
            return lod
    return manifest.num_lods - 1


def _whole(data: bytes | None, length: int, where: str) -> bytes:
    if data is None or len(data) != length:
        got = "nothing" if data is None else f"{len(data)} bytes"
        raise MeshDecodeError(where, "", f"fragment data truncated: wanted {length}, got {got}")
    return data
