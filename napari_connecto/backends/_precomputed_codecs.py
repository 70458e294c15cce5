"""Native decoding of precomputed chunks: local ``.gz`` chunk files and chunks fetched over HTTP.

CloudVolume writes local chunks gzip-compressed under a ``.gz`` name
(``x0-x1_y0-y1_z0-z1.gz``); tensorstore looks only for the plain name and would
read such a volume as all zeros. Scales whose directory holds ``.gz`` files are
read here instead: raw and compressed_segmentation chunks, gzip detected by its
magic bytes and decompressed with a cap at the size the chunk can have.

compressed_segmentation chunks are checked in numpy first, every offset the
decoder will follow (channel headers, block headers, encoded values, and the
lookup-table entry of the largest index each block can hold, computed exactly
where the table sits near the end): the C decoder of the
``compressed-segmentation`` package checks nothing and crashes the process on
malformed input, so it only ever sees bytes that passed. It is called through
:mod:`ctypes` (its exported ``DecompressChannels`` templates), which releases
the GIL while it decodes; the pure-numpy decoder remains for 32-bit blocks
(the C code's bit mask overflows there) and where the library is unavailable.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.backends import _large_arrays
from napari_connecto.backends._assemble import assemble
from napari_connecto.remote.inflate import inflate

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from napari_connecto.volume.scale import Index3

__all__ = [
    "COMPRESSED_SUFFIXES",
    "NATIVE_ENCODINGS",
    "ChunkGrid",
    "decode_chunk",
    "decode_compressed_segmentation",
    "decode_image",
    "decode_raw",
    "gunzip",
    "read_native",
    "scan_suffixes",
]

COMPRESSED_SUFFIXES = (".gz", ".br", ".zstd", ".zst", ".bz2", ".xz")
"""File name suffixes CloudFiles gives compressed chunk files."""
NATIVE_ENCODINGS = ("raw", "compressed_segmentation")
"""Encodings :func:`read_native` decodes."""
_GZIP_MAGIC = b"\x1f\x8b"
_CSEG_BITS = (0, 1, 2, 4, 8, 16, 32)
_SCAN_LIMIT = 256


def scan_suffixes(directory: Path, limit: int = _SCAN_LIMIT) -> set[str]:
    """Compression suffixes among the first ``limit`` entries of a scale directory.

    Cheap: :func:`os.scandir` reads directory entries in small batches, so a
    directory of millions of chunks costs no more than one of a few.
    """
    found: set[str] = set()
    try:
        with os.scandir(directory) as entries:
            for entry in itertools.islice(entries, limit):
                found.update(s for s in COMPRESSED_SUFFIXES if entry.name.endswith(s))
    except OSError:
        return set()
    return found


@dataclass(frozen=True, slots=True)
class ChunkGrid:
    """Where and how the chunks of one unsharded scale are stored (all z, y, x)."""

    directory: Path | None
    """The scale directory (``None`` for a remote scale)."""
    shape: Index3
    """Scale size in voxels."""
    chunk: Index3
    """Chunk size in voxels."""
    offset: Index3
    """``voxel_offset`` of the scale (chunk names use absolute coordinates)."""
    dtype: np.dtype
    """Voxel data type."""
    num_channels: int
    """Channels stored in each chunk."""
    encoding: str
    """``raw``, ``compressed_segmentation``, ``jpeg`` or ``png``."""
    block: Index3 = (8, 8, 8)
    """compressed_segmentation block size."""

    def bounds(self, grid: Index3) -> tuple[Index3, Index3]:
        """Scale-relative ``(start, stop)`` of one chunk, truncated at the edge."""
        start = tuple(g * c for g, c in zip(grid, self.chunk, strict=True))
        stop = tuple(min(a + c, n) for a, c, n in zip(start, self.chunk, self.shape, strict=True))
        return start, stop  # type: ignore[return-value]

    def name(self, grid: Index3) -> str:
        """File name of one chunk: ``x0-x1_y0-y1_z0-z1`` in absolute voxels."""
        start, stop = self.bounds(grid)
        parts = [f"{a + o}-{b + o}" for a, b, o in zip(start, stop, self.offset, strict=True)]
        return "_".join(reversed(parts))

    def max_bytes(self, shape: Index3) -> int:
        """Largest decoded size a chunk of ``shape`` can legitimately have."""
        voxels = math.prod(shape) * self.num_channels
        raw = voxels * self.dtype.itemsize
        if self.encoding in ("raw", "jpeg", "png"):
            return raw
        blocks = math.prod(-(-s // b) for s, b in zip(shape, self.block, strict=True))
        padded = blocks * math.prod(self.block) * self.num_channels
        return 4 * self.num_channels + self.num_channels * blocks * 8 + padded * 4 + raw


def gunzip(data: bytes, cap: int) -> bytes | memoryview:
    """Decompress one gzip stream, refusing output larger than ``cap`` bytes.

    Raises
    ------
    ValueError
        If the stream is corrupt, truncated or decompresses to more than ``cap``.
    """
    return inflate(data, cap)


def decode_raw(
    data: bytes | bytearray | memoryview, shape: Index3, dtype: np.dtype, channels: int
) -> np.ndarray:
    """Decode a raw chunk (``[x, y, z, c]`` Fortran order) into ``(c, z, y, x)``."""
    expected = math.prod(shape) * channels * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"raw chunk has {len(data)} bytes, expected {expected}")
    # one copy into memory of its own (none if the body already is, as inflated ones are)
    writable = isinstance(data, bytearray) or (isinstance(data, memoryview) and not data.readonly)
    own = data if writable else bytearray(data)
    chunk = np.frombuffer(own, dtype=dtype.newbyteorder("<")).reshape((channels, *shape))
    return chunk if chunk.dtype.isnative else chunk.astype(dtype)


def decode_compressed_segmentation(
    data: bytes, shape: Index3, dtype: np.dtype, channels: int, block: Index3
) -> np.ndarray:
    """Decode a compressed_segmentation chunk into ``(c, z, y, x)``, checking every offset.

    Parameters
    ----------
    data : bytes
        The chunk file contents (already decompressed if gzip'd).
    shape : tuple of int
        Chunk shape, z, y, x (truncated at the volume edge).
    dtype : numpy.dtype
        ``uint32`` or ``uint64``.
    channels : int
        Number of channels in the chunk.
    block : tuple of int
        Encoding block size, z, y, x.

    Raises
    ------
    ValueError
        If the data is malformed in any way.
    """
    if dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
        raise ValueError(f"compressed_segmentation needs uint32 or uint64, not {dtype}")
    if len(data) % 4:
        raise ValueError(f"length {len(data)} is not a multiple of 4 bytes")
    words = np.frombuffer(data, dtype="<u4")
    if len(words) < channels:
        raise ValueError("shorter than its channel header")
    out = _large_arrays.empty((channels, *shape), dtype)
    if 0 in shape:
        return out
    native = _native_decoder(dtype)
    bases = [int(words[c]) for c in range(channels)]
    if native is not None and all(_check_channel(words, b, shape, block, dtype) for b in bases):
        _decode_native(native, words, out, block)
        return out
    for c, base in enumerate(bases):
        _decode_channel(words, base, out[c], block)
    return out


_Sizes = ctypes.c_ssize_t * 4
_NATIVE_SYMBOLS = {
    4: "_ZN21compress_segmentation18DecompressChannelsIjEEvPKjPKlS4_S4_PT_",
    8: "_ZN21compress_segmentation18DecompressChannelsImEEvPKjPKlS4_S4_PT_",
}


@functools.cache
def _native_library() -> ctypes.CDLL | None:
    """The ``compressed_segmentation`` extension, opened for :mod:`ctypes` (``None`` if absent)."""
    try:
        import compressed_segmentation
    except ImportError:
        return None
    try:
        return ctypes.CDLL(compressed_segmentation.__file__)
    except OSError:
        return None


@functools.cache
def _native_function(itemsize: int) -> Callable[..., None] | None:
    """The C ``DecompressChannels<uint32/64>`` (GIL released by ctypes), or ``None``."""
    library = _native_library()
    symbol = _NATIVE_SYMBOLS[itemsize]
    if library is None or not hasattr(library, symbol):
        return None
    function = getattr(library, symbol)
    function.argtypes = [ctypes.c_void_p] * 5
    function.restype = None
    return function  # type: ignore[no-any-return]


def _native_decoder(dtype: np.dtype) -> Callable[..., None] | None:
    """:func:`_native_function` for ``dtype`` (``None``: decode in numpy)."""
    return _native_function(dtype.itemsize)


def _decode_native(
    function: Callable[..., None], words: np.ndarray, out: np.ndarray, block: Index3
) -> None:
    """Decode checked ``words`` into ``out`` (c, z, y, x, C order) with the C decoder."""
    channels, z, y, x = out.shape
    size = _Sizes(x, y, z, channels)
    blocks = _Sizes(block[2], block[1], block[0], 0)
    strides = _Sizes(1, x, x * y, x * y * z)
    function(words.ctypes.data, size, blocks, strides, out.ctypes.data)


def _block_headers(
    words: np.ndarray, base: int, shape: Index3, block: Index3
) -> tuple[Index3, int, np.ndarray, np.ndarray, np.ndarray]:
    """A channel's block grid, voxels per block, and per block: table, bits, values offset."""
    grid = tuple(-(-s // b) for s, b in zip(shape, block, strict=True))
    nblocks = math.prod(grid)
    if base + 2 * nblocks > len(words):
        raise ValueError("block headers run past the end of the data")
    headers = words[base : base + 2 * nblocks].astype(np.int64)
    table = base + (headers[0::2] & 0xFFFFFF)
    return grid, math.prod(block), table, headers[0::2] >> 24, base + headers[1::2]  # type: ignore[return-value]


def _check_channel(
    words: np.ndarray, base: int, shape: Index3, block: Index3, dtype: np.dtype
) -> bool:
    """Check every offset the C decoder follows for one channel; ``False``: use numpy instead.

    Accepts and refuses exactly what :func:`_decode_channel` does (same checks,
    same ``ValueError``); ``False`` for 32-bit blocks, which the C decoder gets wrong.
    A well-formed chunk takes nine numpy operations (there were about twenty):
    numpy releases the GIL in most of them, and with many reader threads each
    release can cost a context switch, more than the arithmetic.
    """
    nblocks = math.prod(-(-s // b) for s, b in zip(shape, block, strict=True))
    if base + 2 * nblocks > len(words):
        raise ValueError("block headers run past the end of the data")
    headers = words[base : base + 2 * nblocks].astype(np.int64)
    first, values = headers[0::2], headers[1::2]
    bits = first >> 24
    wpv = dtype.itemsize // 4
    per_bits = _header_sizes(math.prod(block), wpv)[bits]
    kinds = np.bincount(per_bits[:, 0], minlength=3)
    if kinds[0]:
        raise ValueError(f"invalid encoded bits {sorted(set(bits.tolist()) - set(_CSEG_BITS))}")
    if kinds[2]:
        return False
    limit = len(words) - base
    if (values + per_bits[:, 1]).max() > limit:
        raise ValueError("encoded values run past the end of the data")
    tables = first & 0xFFFFFF
    room = tables + per_bits[:, 2]
    if room.max() <= limit:  # every table has room for every index its bits can hold
        return True
    near_end = np.flatnonzero(room > limit)  # check these exactly
    for k in np.unique(bits[near_end]).tolist():
        sel = near_end[bits[near_end] == k]
        index = _block_indices(words, base + values[sel], int(k), math.prod(block))
        if (base + tables[sel] + (index.max(axis=1) + 1) * wpv > len(words)).any():
            raise ValueError("lookup table runs past the end of the data")
    return True


@functools.cache
def _header_sizes(per_block: int, wpv: int) -> np.ndarray:
    """Per encoded-bits value (a block header's top byte): kind, values words, table words.

    Kind 0 is invalid, 1 decodable in C, 2 (32 bits) numpy only. A block of 0
    bits has no encoded values (a large negative length: its offset is never
    followed); the table words are those its largest index can address.
    """
    sizes = np.zeros((256, 3), np.int64)
    sizes[:, 1] = -(2**40)
    for bits in _CSEG_BITS:
        length = -(-bits * per_block // 32) if bits else -(2**40)
        sizes[bits] = (2 if bits == 32 else 1, length, (1 << bits) * wpv)
    sizes.flags.writeable = False
    return sizes


def _decode_channel(words: np.ndarray, base: int, out: np.ndarray, block: Index3) -> None:
    """Decode the channel whose data starts at word ``base`` into ``out`` (z, y, x)."""
    shape, dtype = out.shape, out.dtype
    grid, per_block, table, bits, values_at = _block_headers(words, base, shape, block)
    nblocks = math.prod(grid)
    if not np.isin(bits, _CSEG_BITS).all():
        raise ValueError(f"invalid encoded bits {sorted(set(bits.tolist()) - set(_CSEG_BITS))}")
    wpv = dtype.itemsize // 4
    flat = np.empty((nblocks, per_block), dtype=dtype)
    for k in np.unique(bits).tolist():
        sel = np.flatnonzero(bits == k)
        index = _block_indices(words, values_at[sel], int(k), per_block)
        ends = table[sel] + (index.max(axis=1).astype(np.int64) + 1) * wpv
        if (ends > len(words)).any():
            raise ValueError("lookup table runs past the end of the data")
        flat[sel] = _lookup(words, table[sel], index, dtype)
    gz, gy, gx = grid
    bz, by, bx = block
    blocks = flat.reshape(gz, gy, gx, bz, by, bx).transpose(0, 3, 1, 4, 2, 5)
    if shape == (gz * bz, gy * by, gx * bx):  # whole blocks: one copy, straight into out
        np.copyto(out.reshape(gz, bz, gy, by, gx, bx), blocks)
        return
    padded = blocks.reshape(gz * bz, gy * by, gx * bx)
    out[...] = padded[: shape[0], : shape[1], : shape[2]]


def _lookup(words: np.ndarray, table: np.ndarray, index: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The table values of ``index`` (one row per block, its table starting at ``table``)."""
    if dtype.itemsize == 4:
        return words[table[:, None] + index]
    # uint64 values: gather them whole from the 8-byte view that puts each table on a
    # value boundary (tables start at even or odd words).
    odd = table % 2 == 1
    out = np.empty(index.shape, dtype=dtype)
    for parity in (0, 1):
        rows = np.flatnonzero(odd == bool(parity))
        if not rows.size:
            continue
        usable = (len(words) - parity) // 2 * 2
        view = words[parity : parity + usable].view("<u8")
        if not view.flags.aligned:  # numpy gathers unaligned 8-byte values slowly
            view = view.copy()
        found = view[((table[rows] - parity) // 2)[:, None] + index[rows]]
        if rows.size == len(table):
            return found
        out[rows] = found
    return out


def _block_indices(words: np.ndarray, starts: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Lookup-table indices of every voxel in the blocks encoded with ``bits`` bits.

    ``bits`` divides 32, so no value straddles two words.
    """
    if bits == 0:
        return np.zeros((len(starts), n), dtype=np.int64)
    nwords = -(-bits * n // 32)
    if (starts + nwords > len(words)).any():
        raise ValueError("encoded values run past the end of the data")
    position = np.arange(n, dtype=np.int64) * bits
    shift = (position & 31).astype(np.uint32)
    mask = np.uint32((1 << bits) - 1)
    return ((words[starts[:, None] + (position >> 5)] >> shift) & mask).astype(np.int64)


def _read_file(path: Path, limit: int) -> tuple[bytes, bool] | None:
    """Bytes of a chunk file (plain name first, then ``.gz``), at most ``limit`` + 1."""
    for candidate, gz in ((path, False), (path.with_name(path.name + ".gz"), True)):
        try:
            with open(candidate, "rb") as handle:
                return handle.read(limit + 1), gz
        except FileNotFoundError:
            continue
    return None


def decode_chunk(grid: ChunkGrid, data: bytes, shape: Index3, *, gz: bool = False) -> np.ndarray:
    """Decode one chunk's bytes into ``(c, z, y, x)``: any encoding, gzip'd or not.

    gzip is undone when ``gz`` says so or the data starts with its magic bytes
    (and is not a raw chunk of exactly the right size), with a cap at the
    largest size the chunk can have.

    Raises
    ------
    ValueError
        If the data is truncated, oversized or corrupt.
    """
    if grid.encoding in ("jpeg", "png"):
        return decode_image(data, shape, grid.dtype, grid.num_channels)
    cap = grid.max_bytes(shape)
    raw_size = math.prod(shape) * grid.num_channels * grid.dtype.itemsize
    sniffed = data[:2] == _GZIP_MAGIC and (grid.encoding != "raw" or len(data) != raw_size)
    if gz or sniffed:
        data = gunzip(data, cap)
    elif len(data) > cap:
        raise ValueError(f"chunk file is larger than the {cap} bytes it can hold")
    if grid.encoding == "raw":
        return decode_raw(data, shape, grid.dtype, grid.num_channels)
    return decode_compressed_segmentation(data, shape, grid.dtype, grid.num_channels, grid.block)


def decode_image(data: bytes, shape: Index3, dtype: np.dtype, channels: int) -> np.ndarray:
    """Decode a jpeg or png chunk (an image ``x`` wide and ``y * z`` high) into ``(c, z, y, x)``.

    Raises
    ------
    ValueError
        If the image is corrupt or its size, mode or channels do not fit the chunk.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    z, y, x = shape
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size != (x, y * z):
                raise ValueError(
                    f"image is {image.size[0]} x {image.size[1]}, expected {x} x {y * z}"
                )
            pixels = np.asarray(image)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ValueError(f"corrupt image chunk ({exc})") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] != channels:
        raise ValueError(f"image has {pixels.shape[-1]} channels, expected {channels}")
    return np.moveaxis(pixels.reshape(z, y, x, channels), -1, 0).astype(dtype, copy=False)


def read_native(
    grid: ChunkGrid, start: Index3, stop: Index3, channel: int, *, where: str, scale: int
) -> np.ndarray:
    """Read voxels ``[start, stop)`` of one channel from local chunk files (``.gz`` or plain).

    Raises
    ------
    ChunkError
        Naming the chunk file, if one is unreadable, truncated, corrupt or too large.
    """
    assert grid.directory is not None

    def load(_: Index3, name: str, shape: Index3) -> np.ndarray | None:
        found = _read_file(grid.directory / name, 2 * grid.max_bytes(shape) + 4096)  # type: ignore[operator]
        return None if found is None else decode_chunk(grid, found[0], shape, gz=found[1])

    return assemble(grid, start, stop, channel, load, where=where, scale=scale)
