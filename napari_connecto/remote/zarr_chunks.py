"""Reading plain zarr chunks over HTTP directly, without zarr-python's event loop.

zarr-python runs every read as a coroutine on its event-loop thread, fetches
each chunk on an executor and decodes it through its codec pipeline; for the
common layouts that machinery costs several times the fetch itself. A
:class:`ChunkReader` covers those layouts (a regular grid; zarr v3 ``bytes``
with at most one of ``zstd``, ``gzip`` or ``blosc``; zarr v2 without filters,
compressor ``zstd``, ``gzip``, ``zlib``, ``blosc`` or none; numeric types): it
fetches the chunk keys through :meth:`HttpStore.fetch` (so an unverified body
that does not decode is retried as a probable truncation), decompresses with a
cap at the chunk's size and checks the decoded size exactly.

Everything else is left to zarr-python: :func:`chunk_reader` returns ``None``
for a layout it does not know, and :meth:`ChunkReader.read` returns ``None``
for a region it cannot read this way (a chunk the server does not have, whose
fill value is zarr-python's to apply; a zstd frame that does not state its size).
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.remote.inflate import inflate
from napari_connecto.remote.unzstd import decompress_into

if TYPE_CHECKING:
    from collections.abc import Mapping

    from napari_connecto.remote.store import HttpStore

__all__ = ["ChunkReader", "chunk_reader"]

_V3_COMPRESSORS = {"zstd": "zstd", "gzip": "gzip", "blosc": "blosc"}
_V2_COMPRESSORS = {"zstd": "zstd", "gzip": "gzip", "zlib": "gzip", "blosc": "blosc"}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _FallbackError(Exception):
    """A chunk zarr-python must read (this reader does not know how)."""


@dataclass(frozen=True, slots=True)
class ChunkReader:
    """Reads regions of one plain zarr array straight from its chunk keys."""

    store: HttpStore
    """Keys below the array's directory."""
    shape: tuple[int, ...]
    """Array shape."""
    chunks: tuple[int, ...]
    """Chunk shape."""
    dtype: np.dtype
    """Stored element type, byte order included."""
    out_dtype: np.dtype
    """Element type of what :meth:`read` returns (zarr-python's ``Array.dtype``)."""
    order: str
    """``C`` or ``F``: the element order inside a chunk."""
    compressor: str | None
    """``zstd``, ``gzip`` (gzip or zlib streams), ``blosc`` or ``None``."""
    prefix: str
    """Key prefix of every chunk (``c/`` for v3 default keys)."""
    separator: str
    """Between chunk indices in a key."""

    def read(self, index: tuple[slice | int, ...]) -> np.ndarray | None:
        """``array[index]`` as zarr-python gives it; ``None``: let zarr-python read it.

        Raises
        ------
        ValueError
            If a chunk is corrupt, truncated or of the wrong size.
        RemoteError
            If the server fails.
        """
        bounds = _bounds(index, self.shape)
        if bounds is None:
            return None
        size = tuple(b - a for a, b in bounds)
        starts = tuple(a for a, _ in bounds)
        if size == self.chunks and all(a % c == 0 for a, c in zip(starts, size, strict=True)):
            try:  # exactly one chunk: decoded into memory of its own, handed over whole
                whole = self._whole(tuple(a // c for a, c in zip(starts, size, strict=True)))
            except _FallbackError:
                return None
            return whole[tuple(0 if isinstance(i, int) else slice(None) for i in index)]
        out = np.empty(size, dtype=self.out_dtype)
        ranges = [range(a // c, -(-b // c)) for (a, b), c in zip(bounds, self.chunks, strict=True)]
        try:
            for grid in itertools.product(*ranges) if out.size else ():
                self._copy(grid, bounds, out)
        except _FallbackError:
            return None
        return out[tuple(0 if isinstance(i, int) else slice(None) for i in index)]

    def _whole(self, grid: tuple[int, ...]) -> np.ndarray:
        """One whole chunk as a writable C-ordered array of ``out_dtype``."""
        key = self.prefix + self.separator.join(str(g) for g in grid)
        chunk = self.store.fetch(key, self._decode)
        if chunk is None:  # missing: its fill value is zarr-python's business
            raise _FallbackError
        flags = chunk.flags
        if flags.writeable and flags.c_contiguous and chunk.dtype == self.out_dtype:
            return chunk
        return chunk.astype(self.out_dtype, order="C")

    def _copy(self, grid: tuple[int, ...], bounds: list[tuple[int, int]], out: np.ndarray) -> None:
        """Fetch, decode and copy one chunk's part of the region into ``out``."""
        key = self.prefix + self.separator.join(str(g) for g in grid)
        chunk = self.store.fetch(key, self._decode)
        if chunk is None:  # missing: its fill value is zarr-python's business
            raise _FallbackError
        src, dst = [], []
        for g, c, (a, b) in zip(grid, self.chunks, bounds, strict=True):
            lo, hi = max(a, g * c), min(b, g * c + c)
            src.append(slice(lo - g * c, hi - g * c))
            dst.append(slice(lo - a, hi - a))
        out[tuple(dst)] = chunk[tuple(src)]

    def _decode(self, data: bytes) -> np.ndarray:
        """One chunk's bytes as an array of the chunk shape (``ValueError`` if wrong)."""
        expected = math.prod(self.chunks) * self.dtype.itemsize
        raw = _decompress(self.compressor, data, expected)
        if len(raw) != expected:
            raise ValueError(f"chunk holds {len(raw)} bytes, expected {expected}")
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.chunks, order=self.order)  # type: ignore[call-overload]


def _bounds(index: tuple[slice | int, ...], shape: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """``(start, stop)`` per axis of a basic in-bounds index, or ``None`` for anything else."""
    if len(index) != len(shape):
        return None
    bounds = []
    for i, n in zip(index, shape, strict=True):
        if isinstance(i, int):
            if not 0 <= i < n:
                return None
            bounds.append((i, i + 1))
        elif isinstance(i, slice) and i.step in (None, 1):
            a, b = 0 if i.start is None else i.start, n if i.stop is None else i.stop
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b <= n):
                return None
            bounds.append((a, b))
        else:
            return None
    return bounds


def _decompress(kind: str | None, data: bytes, cap: int) -> bytes:
    """Undo a chunk's compression, refusing output larger than ``cap`` bytes."""
    if kind is None:
        return data
    if kind == "gzip":
        return inflate(data, cap, zlib_too=True)  # gzip or zlib header
    if kind == "zstd":
        return _zstd(data, cap)
    return _blosc(data, cap)


def _zstd(data: bytes, cap: int) -> bytes:
    """A zstd frame that states its size, decoded into a buffer of exactly ``cap`` bytes."""
    import numcodecs.zstd

    stated = _zstd_content_size(data)
    if stated is None or stated < cap:  # unstated, or more frames may follow: zarr-python's
        raise _FallbackError
    if stated > cap:
        raise ValueError(f"zstd frame announces {stated} bytes, the chunk holds {cap}")
    out = np.empty(cap, dtype=np.uint8)
    try:
        if not decompress_into(data, out):  # libzstd, the GIL released; else numcodecs
            numcodecs.zstd.decompress(data, out)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"corrupt zstd chunk ({exc})") from None
    return out.data  # type: ignore[return-value]


def _zstd_content_size(data: bytes) -> int | None:
    """The ``Frame_Content_Size`` of a zstd frame header (RFC 8878), if it states one."""
    if len(data) < 6 or data[:4] != _ZSTD_MAGIC:  # a skippable frame first, or no zstd
        raise _FallbackError
    descriptor = data[4]
    single = descriptor >> 5 & 1
    fcs_bytes = (single, 2, 4, 8)[descriptor >> 6]
    if not fcs_bytes:
        return None
    at = 5 + (1 - single) + (0, 1, 2, 4)[descriptor & 3]
    if len(data) < at + fcs_bytes:
        raise ValueError("truncated zstd frame header")
    value = int.from_bytes(data[at : at + fcs_bytes], "little")
    return value + 256 if fcs_bytes == 2 else value


def _blosc(data: bytes, cap: int) -> bytes:
    """A blosc buffer whose header announces exactly ``cap`` bytes in exactly its length."""
    import numcodecs.blosc

    if len(data) < 16:
        raise ValueError("blosc chunk shorter than its header")
    nbytes, _, cbytes = struct.unpack_from("<III", data, 4)  # after version, flags, typesize
    if nbytes != cap or cbytes != len(data):
        raise ValueError(f"blosc header announces {nbytes} bytes in {cbytes}, expected {cap}")
    try:
        return numcodecs.blosc.decompress(data)  # type: ignore[no-any-return]
    except RuntimeError as exc:
        raise ValueError(f"corrupt blosc chunk ({exc})") from None


def chunk_reader(
    store: HttpStore, known: Mapping[str, bytes], zarr_format: int, out_dtype: np.dtype
) -> ChunkReader | None:
    """A :class:`ChunkReader` for an array whose metadata zarr-python accepted, if plain enough.

    ``known`` holds the metadata bodies already fetched (``.zarray`` or ``zarr.json``);
    ``out_dtype`` is the element type zarr-python reads the array as.
    """
    name = ".zarray" if zarr_format == 2 else "zarr.json"
    try:
        doc = json.loads(known[name])
        layout = _v2(doc) if zarr_format == 2 else _v3(doc)
        if layout is None:
            return None
        shape = tuple(int(n) for n in doc["shape"])
        chunks = tuple(int(c) for c in layout.pop("chunks"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    dtype = layout["dtype"]
    if dtype.kind not in "biuf" or len(chunks) != len(shape) or min(chunks, default=0) <= 0:
        return None
    if out_dtype.newbyteorder("=") != dtype.newbyteorder("="):
        return None
    return ChunkReader(store, shape, chunks, out_dtype=out_dtype, **layout)


def _v2(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The layout of a v2 ``.zarray`` (``None``: not plain)."""
    compressor = doc.get("compressor")
    if doc.get("filters") or (
        compressor is not None and compressor.get("id") not in _V2_COMPRESSORS
    ):
        return None
    separator = doc.get("dimension_separator") or "."
    if separator not in (".", "/") or doc.get("order", "C") not in ("C", "F"):
        return None
    return {
        "chunks": doc["chunks"],
        "dtype": np.dtype(doc["dtype"]),
        "order": doc.get("order", "C"),
        "compressor": None if compressor is None else _V2_COMPRESSORS[compressor["id"]],
        "prefix": "",
        "separator": separator,
    }


def _v3(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The layout of a v3 ``zarr.json`` (``None``: not plain)."""
    grid, encoding = doc["chunk_grid"], doc.get("chunk_key_encoding", {"name": "default"})
    if grid.get("name") != "regular" or doc.get("storage_transformers"):
        return None
    codecs = [c if isinstance(c, dict) else {"name": c} for c in doc["codecs"]]
    if not 1 <= len(codecs) <= 2 or codecs[0].get("name") != "bytes":
        return None
    if len(codecs) == 2 and codecs[1].get("name") not in _V3_COMPRESSORS:
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    kind = encoding.get("name")
    separator = (encoding.get("configuration") or {}).get("separator")
    if kind == "default" and separator in (None, "/", "."):
        prefix, separator = "c" + (separator or "/"), separator or "/"
    elif kind == "v2" and separator in (None, "/", "."):
        prefix, separator = "", separator or "."
    else:
        return None
    if endian not in ("little", "big"):
        return None
    dtype = np.dtype(doc["data_type"]).newbyteorder("<" if endian == "little" else ">")
    return {
        "chunks": grid["configuration"]["chunk_shape"],
        "dtype": dtype,
        "order": "C",
        "compressor": _V3_COMPRESSORS[codecs[1]["name"]] if len(codecs) == 2 else None,
        "prefix": prefix,
        "separator": separator,
    }
