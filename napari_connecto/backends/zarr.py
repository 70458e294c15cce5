"""Zarr v2 / v3 arrays and groups, OME-Zarr 0.4 / 0.5 multiscales with their ``labels/``.

Local or over HTTP(S): a remote node's metadata is validated by the same code
(through :class:`~napari_connecto.remote.path.UrlPath`) and its chunks are read
by zarr-python through the shared transport (read-only).

Chunks are decoded by tensorstore (``zarr`` / ``zarr3`` drivers, sharding included);
arrays with codecs tensorstore lacks (v2 filters, exotic codecs) fall back to
zarr-python. Pickle and object codecs are refused before either library sees them.
"""

from __future__ import annotations

import logging
import lzma
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from napari_connecto.backends._meta import (
    check_offset,
    check_resolution,
    guess_kind,
    load_json,
    safe_join,
)
from napari_connecto.backends._tensorstore import open_store, read_region, write_region
from napari_connecto.backends._zarr_meta import (
    ArrayMeta,
    node_kind,
    ome_attrs,
    read_array_meta,
    read_attributes,
    read_ome,
)
from napari_connecto.backends.base import Entry, Kind, VolumeBackend
from napari_connecto.errors import (
    AmbiguousSourceError,
    ChunkError,
    MetadataError,
    ReadOnlyError,
    SourceNotFoundError,
    UnsupportedEncodingError,
)
from napari_connecto.geometry import Vec3
from napari_connecto.volume.scale import Index3, Scale

if TYPE_CHECKING:
    from napari_connecto.remote.zarr_chunks import ChunkReader
    from napari_connecto.source import Source

__all__ = ["ZarrBackend"]

logger = logging.getLogger(__name__)

_MAX_WALK_DEPTH = 3
_SPATIAL = ("z", "y", "x")
# What zarr-python (and numcodecs under it) raise on metadata or codecs it cannot use:
# numcodecs.errors.UnknownCodecError and zarr.errors.BaseZarrError (MetadataValidationError,
# zarr's own UnknownCodecError, NodeNotFoundError) all derive from ValueError; a bad codec
# configuration (Delta(dtype="xx")) raises TypeError, a missing key KeyError.
_ZARR_OPEN_ERRORS = (ValueError, TypeError, KeyError, NotImplementedError)
# What decoding a chunk with zarr-python can raise: numcodecs' blosc/zstd/lz4 raise
# RuntimeError, gzip OSError, zlib zlib.error, lzma LZMAError, a size mismatch ValueError.
_ZARR_READ_ERRORS = (ValueError, RuntimeError, OSError, TypeError, zlib.error, lzma.LZMAError)


def _node_path(source: Source) -> Path:
    """The node's directory: a :class:`Path`, or a :class:`UrlPath` for a remote source."""
    if source.is_remote:
        from napari_connecto.remote.path import UrlPath

        path: Any = UrlPath(source.location)
    else:
        path = Path(source.location)
    return path / source.inner if source.inner else path


@dataclass(frozen=True, slots=True)
class _Level:
    """One opened array and how its axes map onto z, y, x."""

    meta: ArrayMeta
    store: Any  # tensorstore.TensorStore or zarr.Array
    axes: tuple[str | int, ...]  # per stored axis: "z", "y", "x" or a fixed index
    direct: ChunkReader | None = None  # plain remote arrays: chunks read without zarr-python

    def index(self, start: Index3, stop: Index3) -> tuple[slice | int, ...]:
        """The stored-order index of a z, y, x region."""
        bounds = {ax: slice(a, b) for ax, a, b in zip("zyx", start, stop, strict=True)}
        return tuple(bounds[a] if isinstance(a, str) else a for a in self.axes)

    def to_zyx(self, block: np.ndarray) -> np.ndarray:
        """Reorder a block read with :meth:`index` into z, y, x (adding z if absent)."""
        spatial = [a for a in self.axes if isinstance(a, str)]
        if "z" not in spatial:
            block, spatial = block[np.newaxis], ["z", *spatial]
        return np.ascontiguousarray(block.transpose([spatial.index(a) for a in "zyx"]))

    def from_zyx(self, block: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_zyx`, for writes."""
        spatial = [a for a in self.axes if isinstance(a, str)]
        order = [a for a in spatial if a != "z"] if "z" not in spatial else spatial
        out = block[0] if "z" not in spatial else block
        present = [a for a in "zyx" if a in order]
        return out.transpose([present.index(a) for a in order])


def _axis_roles(meta: ArrayMeta, names: list[str] | None) -> tuple[str | int, ...]:
    where = str(meta.path)
    ndim = len(meta.shape)
    if names is not None and len(names) != ndim:
        raise MetadataError(
            where, "shape", f"{ndim} dimensions, but the multiscale lists {len(names)} axes"
        )
    names = names or [n or "" for n in (meta.dimension_names or ())] or None
    if names:
        lowered = [n.lower() for n in names]
        spatial = [n for n in lowered if n in _SPATIAL]
        if len(set(spatial)) != len(spatial):
            raise MetadataError(where, "dimension_names", f"spatial axes repeat: {names!r}")
        if {"y", "x"} <= set(spatial):
            return tuple(n if n in _SPATIAL else 0 for n in lowered)
    if ndim < 2:
        raise MetadataError(where, "shape", f"expected at least 2 dimensions, got {ndim}")
    spatial_axes = _SPATIAL[-min(ndim, 3) :]
    return (0,) * (ndim - len(spatial_axes)) + spatial_axes


def _open_level(meta: ArrayMeta, names: list[str] | None, mode: str) -> _Level:
    where = str(meta.path)
    if not isinstance(meta.path, Path):
        array, direct = _open_remote(meta, mode)
        return _Level(meta, array, _axis_roles(meta, names), direct)
    if meta.tensorstore_ok:
        driver = "zarr" if meta.zarr_format == 2 else "zarr3"
        spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(meta.path)}}
        store = open_store(spec, where=where, write=mode == "r+")
    else:
        import zarr

        logger.info("%s: codecs %s need zarr-python", where, meta.encoding)
        try:
            store = zarr.open_array(store=str(meta.path), mode="r" if mode == "r" else "r+")
        except _ZARR_OPEN_ERRORS as exc:
            file = meta.path / (".zarray" if meta.zarr_format == 2 else "zarr.json")
            field = "filters/compressor" if meta.zarr_format == 2 else "codecs"
            raise UnsupportedEncodingError(
                str(file), field, f"zarr-python cannot open it ({type(exc).__name__}: {exc})"
            ) from None
    return _Level(meta, store, _axis_roles(meta, names))


def _open_remote(meta: ArrayMeta, mode: str) -> tuple[Any, ChunkReader | None]:
    """A zarr-python array reading through the shared HTTP transport (read-only).

    With it, for plain layouts, a :class:`ChunkReader` that reads the same chunks
    without zarr-python's event loop (several times cheaper per chunk).
    """
    import zarr

    from napari_connecto.remote.zarr_chunks import chunk_reader
    from napari_connecto.remote.zarr_store import HttpZarrStore

    if mode != "r":
        raise ReadOnlyError(f"{meta.path} is remote; remote zarr arrays are read-only")
    path: Any = meta.path  # a UrlPath: its metadata was just fetched, zarr-python reuses it
    http, known = path.store.child(path.key), path.fetched()
    store = HttpZarrStore(http, known)
    try:
        array = zarr.open_array(store=store, mode="r", zarr_format=meta.zarr_format)
    except _ZARR_OPEN_ERRORS as exc:
        raise UnsupportedEncodingError(
            str(meta.path), "", f"zarr-python cannot open it ({type(exc).__name__}: {exc})"
        ) from None
    return array, chunk_reader(http, known, meta.zarr_format, np.dtype(array.dtype))


def _scale_of(level: _Level, res: tuple[float, ...], shift: tuple[float, ...], key: str) -> Scale:
    roles = level.axes
    sizes = {a: n for a, n in zip(roles, level.meta.shape, strict=True) if isinstance(a, str)}
    chunks = {a: c for a, c in zip(roles, level.meta.chunks, strict=True) if isinstance(a, str)}
    return Scale(
        shape=(sizes.get("z", 1), sizes["y"], sizes["x"]),
        resolution=Vec3.of(res),
        chunk_shape=(chunks.get("z", 1), chunks["y"], chunks["x"]),
        dtype=level.meta.dtype,
        encoding=level.meta.encoding,
        key=key,
        translation_nm=Vec3.of(shift),
    )


class ZarrBackend(VolumeBackend):
    """Zarr v2/v3 arrays, OME-Zarr multiscale images and labels."""

    name = "zarr"
    supports_writes = True
    max_concurrency = 16

    def __init__(
        self, source: Source, levels: list[_Level], scales: list[Scale], kind: Kind, mode: str
    ) -> None:
        self.source = source
        self._levels = levels
        self.scales = tuple(scales)
        self.kind = kind
        self.writable = mode == "r+"
        self.contrast_limits: tuple[float, float] | None = None

    # -- discovery -------------------------------------------------------------------
    @classmethod
    def sniff(cls, source: Source) -> bool:
        """A local zarr array or group (v2 or v3), or a ``zarr://`` source."""
        if source.format == "zarr":
            return True
        if source.format is not None:
            return False
        return node_kind(_node_path(source)) is not None

    @classmethod
    def contents(cls, source: Source) -> list[Entry]:
        """The image (or arrays) in a node, plus OME ``labels/`` as segmentations."""
        path = _node_path(source)
        found = cls._node(source)
        if found[0] == "array":
            meta = read_array_meta(path)
            return [Entry(source, guess_kind(source.name, meta.dtype), source.name)]
        attrs = read_attributes(path, found[1])
        if read_ome(path, attrs) is not None:
            entries = [Entry(source, cls._ome_kind(path, attrs), _ome_name(source, path, attrs))]
            return entries + cls._ome_labels(source, path)
        return cls._walk(source, path, depth=0)

    @classmethod
    def _node(cls, source: Source) -> tuple[str, int]:
        path = _node_path(source)
        found = node_kind(path)
        if found is None:
            if not path.exists():
                raise SourceNotFoundError(str(source))
            if (path / "zarr.json").is_file():
                load_json(path / "zarr.json")  # raises the precise metadata error
            raise MetadataError(
                str(path), "", "not a zarr array or group (no .zarray, .zgroup or zarr.json)"
            )
        return found

    @staticmethod
    def _ome_kind(path: Path, attrs: dict[str, Any]) -> Kind:
        return "segmentation" if "image-label" in ome_attrs(path, attrs) else "image"

    @classmethod
    def _ome_labels(cls, source: Source, path: Path) -> list[Entry]:
        labels = path / "labels"
        found = node_kind(labels)
        if found is None or found[0] != "group":
            return []
        attrs = read_attributes(labels, found[1])
        names = ome_attrs(labels, attrs).get("labels", [])
        if not isinstance(names, list):
            raise MetadataError(
                str(labels), "labels", f"expected a list of names, got {names!r:.200}"
            )
        return [
            Entry(source.child(f"labels/{n}"), "segmentation", n)
            for n in names
            if isinstance(n, str)
            and node_kind(safe_join(labels, n, path=str(labels), field="labels")) is not None
        ]

    @classmethod
    def _walk(cls, source: Source, path: Path, depth: int) -> list[Entry]:
        entries: list[Entry] = []
        if depth > _MAX_WALK_DEPTH:
            return entries
        for child in sorted(p for p in path.iterdir() if p.is_dir()):
            sub = source.child(child.name)
            found = node_kind(child)
            if found is None:
                continue
            if found[0] == "array":
                meta = read_array_meta(child)
                if len(meta.shape) >= 2:
                    entries.append(Entry(sub, guess_kind(child.name, meta.dtype), child.name))
            elif read_ome(child, read_attributes(child, found[1])) is not None:
                entries.extend(cls.contents(sub))
            else:
                entries.extend(cls._walk(sub, child, depth + 1))
        return entries

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, source: Source, mode: Literal["r", "r+"] = "r") -> ZarrBackend:
        """Open an array, or an OME-Zarr multiscale group, or a group holding one volume."""
        path = _node_path(source)
        found = cls._node(source)
        if found[0] == "array":
            return cls._open_array(source, path, found[1], mode)
        attrs = read_attributes(path, found[1])
        ome = read_ome(path, attrs)
        if ome is not None:
            return cls._open_ome(source, path, attrs, ome, mode)
        entries = [e for e in cls._walk(source, path, 0) if e.kind != "points"]
        if len(entries) == 1:
            return cls.open(entries[0].source, mode)
        if not entries:
            hint = (
                " (HTTP cannot list a group: name the array in the URL)" if source.is_remote else ""
            )
            raise MetadataError(str(path), "", f"zarr group holds no volume{hint}")
        raise AmbiguousSourceError(str(source), [str(e.source) for e in entries])

    @classmethod
    def _open_array(cls, source: Source, path: Path, fmt: int, mode: str) -> ZarrBackend:
        meta = read_array_meta(path)
        attrs = read_attributes(path, fmt)
        where = str(path / (".zattrs" if fmt == 2 else "zarr.json"))
        res = (
            check_resolution(where, "resolution", attrs["resolution"])
            if "resolution" in attrs
            else (1.0, 1.0, 1.0)
        )
        shift = (
            check_offset(where, "offset", attrs["offset"]) if "offset" in attrs else (0.0, 0.0, 0.0)
        )
        level = _open_level(meta, None, mode)
        scale = _scale_of(level, res, shift, "")
        return cls(source, [level], [scale], guess_kind(source.name, meta.dtype), mode)

    @classmethod
    def _open_ome(
        cls, source: Source, path: Path, attrs: dict[str, Any], ome: tuple, mode: str
    ) -> ZarrBackend:
        names, ome_levels = ome
        levels, scales = [], []
        for lvl in ome_levels:
            array_path = safe_join(path, lvl.path, path=str(path), field="datasets.path")
            if node_kind(array_path) is None:
                raise SourceNotFoundError(str(source), f"multiscale level {lvl.path!r} is missing")
            level = _open_level(read_array_meta(array_path), names, mode)
            levels.append(level)
            scales.append(_scale_of(level, lvl.scale_nm, lvl.translation_nm, lvl.path))
        backend = cls(source, levels, scales, cls._ome_kind(path, attrs), mode)
        backend.contrast_limits = _omero_window(path, attrs)
        return backend

    # -- data --------------------------------------------------------------------------
    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Decode one z, y, x region of one scale."""
        level = self._levels[scale]
        index = level.index(start, stop)
        where = str(level.meta.path)
        if level.meta.tensorstore_ok and isinstance(level.meta.path, Path):
            block = read_region(level.store, index, where=where, scale=scale)  # type: ignore[arg-type]
        else:
            try:
                block = None if level.direct is None else level.direct.read(index)
                if block is None:
                    block = np.asarray(level.store[index])
            except _ZARR_READ_ERRORS as exc:
                raise ChunkError(where, scale, str(index), str(exc)) from None
        return level.to_zyx(block)

    def write(self, scale: int, start: Index3, data: np.ndarray) -> None:
        """Write one z, y, x block (tensorstore writes are atomic per chunk file)."""
        if not self.writable:
            raise ReadOnlyError(f"{self.source} was opened read-only")
        level = self._levels[scale]
        stop = tuple(a + n for a, n in zip(start, data.shape, strict=True))
        index = level.index(start, stop)  # type: ignore[arg-type]
        block = level.from_zyx(data)
        if level.meta.tensorstore_ok:
            write_region(level.store, index, block, where=str(level.meta.path), scale=scale)  # type: ignore[arg-type]
        else:
            level.store[index] = block

    def describe(self) -> dict[str, Any]:
        """Zarr format, codecs and sharding per level."""
        return {
            "zarr_format": self._levels[0].meta.zarr_format,
            "engine": [_engine(lv.meta) for lv in self._levels],
            "shards": [
                list(lv.meta.shard_shape) if lv.meta.shard_shape else None for lv in self._levels
            ],
        }


def _ome_name(source: Source, path: Path, attrs: dict[str, Any]) -> str:
    """The multiscale's own ``name`` if it has a meaningful one, else the directory name."""
    multiscales = ome_attrs(path, attrs).get("multiscales")
    first = multiscales[0] if isinstance(multiscales, list) and multiscales else None
    name = first.get("name") if isinstance(first, dict) else None
    if isinstance(name, str) and name.strip() and name not in ("image", "/"):
        return name.strip()
    return source.name


def _omero_window(path: Path, attrs: dict[str, Any]) -> tuple[float, float] | None:
    """The first channel's ``omero`` display window, if present and sane (else ``None``)."""
    omero = ome_attrs(path, attrs).get("omero")
    channels = omero.get("channels") if isinstance(omero, dict) else None
    first = channels[0] if isinstance(channels, list) and channels else None
    window = first.get("window") if isinstance(first, dict) else None
    if not isinstance(window, dict):
        return None
    try:
        start, end = float(window["start"]), float(window["end"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        return None
    return start, end


def _engine(meta: ArrayMeta) -> str:
    """Which library decodes an array's chunks (for ``describe``)."""
    if not isinstance(meta.path, Path):
        return "zarr-python over HTTP"
    return "tensorstore" if meta.tensorstore_ok else "zarr-python"
