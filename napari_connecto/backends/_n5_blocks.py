"""Decoding N5 blocks natively, for datasets read over HTTP.

A block file is a big-endian header (``uint16 mode``, ``uint16 ndim``, ``ndim x
uint32`` block size, fastest axis first, and for mode 1 a ``uint32`` element
count) followed by the compressed big-endian elements, fastest axis first. Edge
blocks may be smaller than ``blockSize``. Every decompressor is capped at the
size the block can have (no decompression bombs), and the decoded size must be
exactly what the header announces.
"""

from __future__ import annotations

import bz2
import lzma
import math
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.remote.inflate import inflate

if TYPE_CHECKING:
    from napari_connecto.volume.scale import Index3

__all__ = ["N5Grid", "decode_block", "decompress"]


@dataclass(frozen=True, slots=True)
class N5Grid:
    """The block grid of one N5 dataset, z, y, x (for :func:`~._assemble.assemble`)."""

    shape: Index3
    """Dataset size, z, y, x."""
    chunk: Index3
    """Block size, z, y, x."""
    dtype: np.dtype
    """Native-order voxel type."""

    def bounds(self, grid: Index3) -> tuple[Index3, Index3]:
        """``(start, stop)`` of one block, truncated at the edge."""
        start = tuple(g * c for g, c in zip(grid, self.chunk, strict=True))
        stop = tuple(min(a + c, n) for a, c, n in zip(start, self.chunk, self.shape, strict=True))
        return start, stop  # type: ignore[return-value]

    def name(self, grid: Index3) -> str:
        """The block's key below the dataset: ``x/y/z``."""
        return "/".join(str(g) for g in reversed(grid))


def decompress(payload: bytes, compression: dict[str, Any], cap: int) -> bytes:
    """Undo one block's compression, refusing output larger than ``cap`` bytes.

    Raises
    ------
    ValueError
        If the data is corrupt, truncated or too large, or the compression unknown.
    """
    kind = compression.get("type", "raw")
    try:
        if kind == "raw":
            out = payload
        elif kind == "gzip":
            out = _inflate(payload, cap)
        elif kind == "bzip2":
            out = bz2.BZ2Decompressor().decompress(payload, cap + 1)
        elif kind == "xz":
            out = lzma.LZMADecompressor().decompress(payload, cap + 1)
        elif kind in ("blosc", "zstd"):
            out = _numcodecs(kind, payload, cap)
        else:
            raise ValueError(f"unknown compression {kind!r}")
    except (OSError, EOFError, zlib.error, lzma.LZMAError, RuntimeError) as exc:
        raise ValueError(f"corrupt {kind} block ({exc})") from None
    if len(out) > cap:
        raise ValueError(f"{kind} block decompresses to more than {cap} bytes")
    return out


def _inflate(payload: bytes, cap: int) -> bytes | memoryview:
    """Gzip or zlib (N5's ``useZlib``), told apart by the header; libdeflate if present."""
    return inflate(payload, cap, zlib_too=True)


def _numcodecs(kind: str, payload: bytes, cap: int) -> bytes:
    """Blosc or zstd through numcodecs, the announced size checked before decoding."""
    import numcodecs

    if kind == "blosc":
        if len(payload) < 16:
            raise ValueError("blosc block shorter than its header")
        nbytes, _, cbytes = struct.unpack_from("<III", payload, 4)  # blosc header sizes
        if nbytes > cap or cbytes != len(payload):
            raise ValueError(f"blosc header announces {nbytes} bytes in {cbytes}")
        return bytes(numcodecs.Blosc().decode(payload))
    return bytes(numcodecs.Zstd().decode(payload))


def decode_block(
    data: bytes,
    *,
    ndim: int,
    block_xyz: tuple[int, ...],
    dtype: np.dtype,
    compression: dict[str, Any],
) -> np.ndarray:
    """Decode one block file into a native-order array, slowest axis first.

    Parameters
    ----------
    data : bytes
        The whole block file.
    ndim : int
        Dimensions of the dataset.
    block_xyz : tuple of int
        The dataset's ``blockSize`` (fastest first); a block may be smaller.
    dtype : numpy.dtype
        The dataset's element type.
    compression : dict
        The dataset's compression object.

    Raises
    ------
    ValueError
        If the header, the compressed data or the decoded size is wrong.
    """
    if len(data) < 4:
        raise ValueError(f"block of {len(data)} bytes is shorter than its header")
    mode, nd = struct.unpack(">HH", data[:4])
    if nd != ndim:
        raise ValueError(f"block header has {nd} dimensions, the dataset {ndim}")
    if mode not in (0, 1):
        raise ValueError(f"block mode {mode} is not supported (0 default, 1 varlength)")
    head = 4 + 4 * nd + (4 if mode == 1 else 0)
    if len(data) < head:
        raise ValueError("block header is truncated")
    shape = struct.unpack(f">{nd}I", data[4 : 4 + 4 * nd])
    if any(s > b for s, b in zip(shape, block_xyz, strict=True)):
        raise ValueError(f"block header size {list(shape)} exceeds blockSize {list(block_xyz)}")
    count = math.prod(shape)
    if mode == 1:
        (count,) = struct.unpack(">I", data[head - 4 : head])
        if count != math.prod(shape):
            raise ValueError("varlength blocks with a different element count are not supported")
    expected = count * dtype.itemsize
    raw = decompress(memoryview(data)[head:], compression, expected)
    if len(raw) != expected:
        raise ValueError(f"block holds {len(raw)} bytes, its header announces {expected}")
    array = np.frombuffer(raw, dtype=dtype.newbyteorder(">")).reshape(shape[::-1])
    if array.dtype.isnative and not array.flags.writeable:  # one copy, writable and native
        return array.copy()
    return array.astype(dtype.newbyteorder("="), copy=False)
