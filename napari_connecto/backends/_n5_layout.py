"""N5 layout: datasets and multiscale groups parsed from ``attributes.json``.

Used by :class:`~napari_connecto.backends.n5.N5Backend`: compression, data type and
block size checked per dataset, resolution / offset / downsampling factors turned into
z, y, x scales, containers walked (bounded depth and visits) to list their volumes,
and tensorstore ``n5`` stores opened as z, y, x views.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.backends._meta import (
    check_chunk,
    check_dtype,
    check_offset,
    check_positive_ints,
    check_resolution,
    check_vector_nm,
    guess_kind,
    load_json,
    safe_join,
)
from napari_connecto.backends._tensorstore import open_store
from napari_connecto.backends.base import Entry, Kind
from napari_connecto.errors import (
    MetadataError,
    UnsupportedEncodingError,
)
from napari_connecto.geometry import Vec3
from napari_connecto.volume.scale import Scale

if TYPE_CHECKING:
    import tensorstore as ts

    from napari_connecto.source import Source
    from napari_connecto.volume.scale import Index3

__all__ = [
    "COMPRESSIONS",
    "Dataset",
    "Layout",
    "find_layout",
    "is_dataset",
    "local_root",
    "looks_like_n5",
    "n5_version",
    "open_ts",
    "sniff_attrs",
    "walk",
    "zyx_view",
]

logger = logging.getLogger(__name__)

COMPRESSIONS = frozenset({"raw", "gzip", "bzip2", "xz", "blosc", "zstd"})
"""N5 compression types that can be decoded (those of tensorstore's ``n5`` driver)."""
_ATTRS = "attributes.json"
_MAX_DEPTH = 6
_MAX_VISITS = 2000
_MAX_LEVELS = 32
_SNIFF_BYTES = 1 << 20
_NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3,
    "micrometer": 1e3, "micrometers": 1e3, "micron": 1e3, "microns": 1e3, "mm": 1e6,
    "millimeter": 1e6, "m": 1e9, "angstrom": 0.1, "Å": 0.1, "pm": 1e-3,
}  # fmt: skip
_Doc = tuple[dict[str, Any], str]
_XYZ = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Dataset:
    """One validated N5 dataset (axes in N5 order, fastest first)."""

    path: Path
    doc: dict[str, Any]
    dims: tuple[int, ...]
    block: tuple[int, ...]
    dtype: np.dtype
    compression: dict[str, Any]
    legacy: bool

    @property
    def file(self) -> str:
        return str(self.path / _ATTRS)

    def spec(self) -> dict[str, Any]:
        """The tensorstore spec, constrained to the metadata validated here."""
        metadata: dict[str, Any] = {
            "dimensions": list(self.dims),
            "blockSize": list(self.block),
            "dataType": self.dtype.name,
        }
        if self.legacy:
            metadata["compression"] = self.compression
        kvstore = {"driver": "file", "path": f"{self.path}/"}
        return {"driver": "n5", "kvstore": kvstore, "metadata": metadata}


def _zyx(xyz: tuple[int, ...]) -> Index3:
    """N5-order extents to z, y, x (2D gets z = 1, extra slow axes dropped)."""
    x, y, *rest = xyz
    return (rest[0] if rest else 1, y, x)


def _compression(doc: dict[str, Any], file: str) -> tuple[dict[str, Any], bool]:
    """The compression dict, and whether it came from a pre-1.0 key (or none at all)."""
    if "compression" in doc:
        comp, field, legacy = doc["compression"], "compression.type", False
        if not isinstance(comp, dict):
            raise MetadataError(file, "compression", f"expected an object, got {comp!r}")
        name = comp.get("type")
    elif "compressionType" in doc:
        name, field, legacy = doc["compressionType"], "compressionType", True
        comp = {"type": name}
    else:
        logger.info("%s has no compression; assuming raw", file)
        name, field, legacy, comp = "raw", "compression", True, {"type": "raw"}
    if name == "lz4":
        raise UnsupportedEncodingError(
            file, field, "lz4 (Java LZ4Block) blocks cannot be decoded; recompress with zstd/gzip"
        )
    if not isinstance(name, str) or name not in COMPRESSIONS:
        known = ", ".join(sorted(COMPRESSIONS))
        raise UnsupportedEncodingError(file, field, f"unknown compression {name!r}; know {known}")
    return comp, legacy


def _load(path: Path, *, required: bool) -> dict[str, Any] | None:
    """``load_json`` of ``path/attributes.json``."""
    return load_json(path / _ATTRS, required=required)


def _parse_dataset(path: Path, doc: dict[str, Any] | None = None) -> Dataset:
    """Validate a dataset's attributes; nothing is allocated from them."""
    file = str(path / _ATTRS)
    if doc is None:
        doc = _load(path, required=True) or {}
    for field in ("dimensions", "blockSize", "dataType"):
        if field not in doc:
            raise MetadataError(file, field, "missing")
    raw_dims = doc["dimensions"]
    ndim = len(raw_dims) if isinstance(raw_dims, list) else 3
    if ndim < 2:
        raise UnsupportedEncodingError(file, "dimensions", f"need 2 or more axes, got {raw_dims!r}")
    dims = check_positive_ints(file, "dimensions", raw_dims, ndim)
    if any(d != 1 for d in dims[3:]):
        raise UnsupportedEncodingError(
            file, "dimensions", f"{dims}: axes beyond x, y, z must have size 1"
        )
    dtype = check_dtype(file, "dataType", doc["dataType"])
    if dtype.kind == "b":
        raise UnsupportedEncodingError(file, "dataType", "N5 has no boolean type")
    block = check_chunk(file, "blockSize", doc["blockSize"], ndim, dtype.itemsize)
    comp, legacy = _compression(doc, file)
    return Dataset(path, doc, dims, block, dtype, comp, legacy)


def sniff_attrs(path: Path) -> dict[str, Any] | None:
    """A small ``attributes.json`` below ``path`` as a dict, or ``None``; never raises."""
    file = path / _ATTRS
    try:
        if not file.is_file() or file.stat().st_size > _SNIFF_BYTES:
            return None
        doc = json.loads(file.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def is_dataset(doc: dict[str, Any] | None) -> bool:
    """Whether an ``attributes.json`` describes a dataset (not a group)."""
    return doc is not None and ("dimensions" in doc or "blockSize" in doc)


def n5_version(path: Path) -> str | None:
    """The ``n5`` version from the nearest container root at or above ``path``."""
    for p in [path, *path.parents][:8]:
        doc = sniff_attrs(p)
        if doc is not None and "n5" in doc:
            return str(doc["n5"])
    return None


def _kind(path: Path, dtype: np.dtype) -> Kind:
    """Segmentation for integer ids or label-like names (of a pyramid's group too)."""
    names = [path.name, path.parent.name] if re.fullmatch(r"s\d+", path.name) else [path.name]
    return guess_kind(names, dtype)


def _xyz_triple(values: tuple[float, ...], fill: float = 1.0) -> tuple[float, float, float]:
    padded = (*values[:3], *([fill] * (3 - len(values[:3]))))
    return padded[0], padded[1], padded[2]


def _nm_per(unit: Any, file: str) -> float:
    """Nanometres per ``unit`` (``None`` means nm; unknown units are taken as nm, logged)."""
    if unit is None:
        return 1.0
    if isinstance(unit, str) and unit in _NM_PER_UNIT:
        return _NM_PER_UNIT[unit]
    logger.warning("%s: unknown unit %r; taking it as nm", file, unit)
    return 1.0


def _resolution_xyz(doc: dict[str, Any], file: str) -> tuple[float, float, float] | None:
    """Voxel size in nm, x, y, z, from ``pixelResolution`` or ``resolution`` + ``units``."""
    units: Any = None
    if "pixelResolution" in doc:
        field, value = "pixelResolution", doc["pixelResolution"]
        if isinstance(value, dict):
            units, value = value.get("unit"), value.get("dimensions")
            field = "pixelResolution.dimensions"
    elif "resolution" in doc:
        field, value, units = "resolution", doc["resolution"], doc.get("units")
    else:
        return None
    ndim = len(value) if isinstance(value, list) and 2 <= len(value) <= 8 else 3
    res = check_resolution(file, field, value, ndim)
    units = units if isinstance(units, list) else [units] * ndim
    scaled = [v * _nm_per(u, file) for v, u in zip(res, units, strict=False)]
    return _xyz_triple(check_vector_nm(file, field, scaled, positive=True))


def _offset_xyz(doc: dict[str, Any], file: str) -> tuple[float, float, float] | None:
    """World position of voxel 0 in nm, x, y, z, from ``offset``; ``None`` if absent.

    As funlib/daisy write it: in the ``units`` of ``resolution`` (nm by default).
    """
    if "offset" not in doc:
        return None
    value = doc["offset"]
    ndim = len(value) if isinstance(value, list) and 2 <= len(value) <= 8 else 3
    offset = check_offset(file, "offset", value, ndim)
    units = doc.get("units")
    pixel = doc.get("pixelResolution")
    if units is None and isinstance(pixel, dict):
        units = pixel.get("unit")
    units = units if isinstance(units, list) else [units] * ndim
    scaled = [v * _nm_per(u, file) for v, u in zip(offset, units, strict=False)]
    return _xyz_triple(check_vector_nm(file, "offset", scaled, positive=False), fill=0.0)


def _factors_xyz(k: int, level: Dataset, base: Dataset, groups: tuple[_Doc, ...]) -> _XYZ:
    """Downsampling factors of level ``k`` relative to ``s0``, x, y, z."""
    value, file = level.doc.get("downsamplingFactors"), level.file
    for doc, group_file in () if value is not None else groups:
        listed = doc.get("scales", doc.get("downsamplingFactors"))
        if isinstance(listed, list) and k < len(listed) and isinstance(listed[k], list):
            value, file = listed[k], group_file
            break
    if value is not None:
        ndim = len(value) if isinstance(value, list) and 1 <= len(value) <= 8 else 3
        return _xyz_triple(check_resolution(file, "downsamplingFactors", value, ndim))
    if k:
        logger.info("%s has no downsamplingFactors; inferring them from its shape", file)
    ratio = tuple(float(max(1, round(a / b))) for a, b in zip(base.dims, level.dims, strict=True))
    return _xyz_triple(ratio)


@dataclass(frozen=True, slots=True)
class Layout:
    """One volume: a dataset, or the levels of a multiscale group, and where its metadata is."""

    root: Path
    levels: tuple[Dataset, ...]
    keys: tuple[str, ...]
    res_docs: tuple[_Doc, ...]
    """Attributes that may give the base resolution, first found wins."""
    factor_docs: tuple[_Doc, ...]
    """Group attributes that may list per-level downsampling factors."""

    @property
    def kind(self) -> Kind:
        return _kind(self.root, self.levels[0].dtype)

    def scales(self) -> list[Scale]:
        """Every level as a :class:`Scale`, z, y, x, nm.

        A level's ``offset`` (x, y, z, nm) is its own, else the first of the
        documents that give the resolution.
        """
        base = self.levels[0]
        res = next((r for d, f in self.res_docs if (r := _resolution_xyz(d, f))), None)
        if res is None:
            logger.info("%s gives no resolution; assuming 1 nm per axis", self.root)
            res = (1.0, 1.0, 1.0)
        scales = []
        for k, (level, key) in enumerate(zip(self.levels, self.keys, strict=True)):
            factors = _factors_xyz(k, level, base, self.factor_docs)
            level_res = [r * f for r, f in zip(res, factors, strict=True)]
            docs = ((level.doc, level.file), *self.res_docs)
            offset = next((o for d, f in docs if (o := _offset_xyz(d, f))), (0.0, 0.0, 0.0))
            scales.append(
                Scale(
                    shape=_zyx(level.dims),
                    resolution=Vec3.from_xyz(
                        check_vector_nm(level.file, "resolution", level_res, positive=True)
                    ),
                    chunk_shape=_zyx(level.block),
                    dtype=level.dtype,
                    encoding=str(level.compression.get("type")),
                    key=key,
                    translation_nm=Vec3.from_xyz(offset),
                )
            )
        return scales


def find_layout(root: Path) -> Layout | None:
    """The volume at ``root``, or ``None`` for a plain group."""
    doc = _load(root, required=False) or {}
    here: _Doc = (doc, str(root / _ATTRS))
    parent: _Doc = (sniff_attrs(root.parent) or {}, str(root.parent / _ATTRS))
    if is_dataset(doc):
        # ``sK`` opened alone takes its group's base resolution.
        docs = (here, parent) if re.fullmatch(r"s\d+", root.name) else (here,)
        return Layout(root, (_parse_dataset(root, doc),), ("",), docs, ())
    if not is_dataset(_load(root / "s0", required=False)):
        return None
    levels = [_parse_dataset(root / "s0")]
    while len(levels) < _MAX_LEVELS and (root / f"s{len(levels)}" / _ATTRS).is_file():
        levels.append(_parse_dataset(root / f"s{len(levels)}"))
    # BigDataViewer keeps the factors on ``setupN``, above ``timepointM``.
    groups = (here, parent) if root.name.startswith("timepoint") else (here,)
    keys = tuple(f"s{i}" for i in range(len(levels)))
    return Layout(root, tuple(levels), keys, (*groups, (levels[0].doc, levels[0].file)), groups)


def local_root(source: Source) -> Path:
    """The directory ``source`` names (its inner path joined below the location).

    A remote source gives a :class:`~napari_connecto.remote.path.UrlPath`.
    """
    base: Any = source.path
    if source.is_remote:
        from napari_connecto.remote.path import UrlPath

        base = UrlPath(source.location)
    if not source.inner:
        return base
    return safe_join(base, source.inner, path=source.location, field="inner")


def looks_like_n5(path: Path) -> bool:
    """Cheap test of a directory: N5 attributes here, an ``s0`` dataset, or a ``.n5`` above."""
    doc = sniff_attrs(path) or {}
    return (
        {"dimensions", "dataType"} <= doc.keys()
        or is_dataset(sniff_attrs(path / "s0"))
        or any(p.name.lower().endswith(".n5") for p in [path, *path.parents])
        or n5_version(path) is not None  # inside a container whose root says "n5"
    )


def walk(source: Source, root: Path) -> tuple[list[Entry], list[OSError | MetadataError]]:
    """Datasets and multiscale groups below ``root``, breadth first, bounded."""
    entries: list[Entry] = []
    broken: list[OSError | MetadataError] = []
    queue: list[tuple[Path, int]] = [(root, 0)]
    visits = 0
    while queue and visits < _MAX_VISITS:
        path, depth = queue.pop(0)
        visits += 1
        try:
            layout = find_layout(path)
        except (OSError, MetadataError) as exc:
            logger.warning("skipping %s: %s", path, exc)
            broken.append(exc)
            continue
        if layout is None:
            if depth < _MAX_DEPTH:
                queue += [(c, depth + 1) for c in _subdirs(path)]
            continue
        rel = path.relative_to(root).as_posix()
        entry_source = source.child(rel) if rel != "." else source
        entries.append(Entry(entry_source, layout.kind, entry_source.name))
    return entries, broken


def _subdirs(path: Path) -> list[Path]:
    try:
        children = sorted(path.iterdir())
    except OSError as exc:
        logger.warning("cannot list %s: %s", path, exc)
        return []
    return [
        c for c in children if c.is_dir() and not c.name.startswith(".") and not c.name.isdigit()
    ]


def open_ts(dataset: Dataset, write: bool) -> ts.TensorStore:
    """Open one dataset; pre-1.0 metadata is handed to tensorstore rather than read by it."""
    return open_store(
        dataset.spec(), where=str(dataset.path), write=write, assume_metadata=dataset.legacy
    )


def zyx_view(store: ts.TensorStore, ndim: int) -> ts.TensorStore:
    """A z, y, x view of an N5-ordered store (extra axes indexed at 0, 2D given z = 1)."""
    import tensorstore as ts

    if ndim > 3:
        store = store[(slice(None),) * 3 + (0,) * (ndim - 3)]
    view = store.T
    return view[ts.newaxis, ...] if ndim == 2 else view
