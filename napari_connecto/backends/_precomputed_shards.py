"""Reading chunks out of ``neuroglancer_uint64_sharded_v1`` shard files by byte ranges.

A volume chunk's id is the compressed Morton code of its grid position. The id,
shifted right by ``preshift_bits`` and hashed (identity or the low 64 bits of
``murmurhash3_x86_128``), picks a minishard (low ``minishard_bits``) and a shard
(the next ``shard_bits``). A shard file starts with its index: one
``[start, end)`` uint64 pair per minishard, pointing at that minishard's index,
which lists ``(chunk id, offset, size)`` delta-encoded in three rows. Offsets
count from the end of the shard index.

Only the bytes needed are fetched: 16 bytes of the shard index, then the
minishard index (kept in a small LRU, since neighbouring chunks share one),
then the chunk itself.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.backends._precomputed_codecs import gunzip

if TYPE_CHECKING:
    from collections.abc import Callable

    from napari_connecto.volume.scale import Index3

__all__ = ["ShardReader", "ShardSpec", "compressed_morton_code", "murmurhash3_x86_128_low64"]

_M32 = 0xFFFFFFFF
_MAX_MINISHARD_BYTES = 64 * 2**20
_MAX_CHUNK_BYTES = 1 << 31


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def murmurhash3_x86_128_low64(key: int) -> int:
    """Low 64 bits of MurmurHash3 x86_128 (seed 0) of ``key`` as 8 little-endian bytes."""
    data = (key & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    c1, c2, c3 = 0x239B961B, 0xAB0E9789, 0x38B34AE5
    h1 = h2 = h3 = h4 = 0
    k2 = int.from_bytes(data[4:8], "little")
    k2 = (_rotl32((k2 * c2) & _M32, 16) * c3) & _M32
    h2 ^= k2
    k1 = int.from_bytes(data[0:4], "little")
    k1 = (_rotl32((k1 * c1) & _M32, 15) * c2) & _M32
    h1 ^= k1
    h1, h2, h3, h4 = h1 ^ 8, h2 ^ 8, h3 ^ 8, h4 ^ 8
    h1 = (h1 + h2 + h3 + h4) & _M32
    h2, h3, h4 = (h2 + h1) & _M32, (h3 + h1) & _M32, (h4 + h1) & _M32
    h1, h2, h3, h4 = _fmix32(h1), _fmix32(h2), _fmix32(h3), _fmix32(h4)
    h1 = (h1 + h2 + h3 + h4) & _M32
    h2 = (h2 + h1) & _M32
    return h1 | (h2 << 32)


def compressed_morton_code(position_xyz: tuple[int, ...], grid_xyz: tuple[int, ...]) -> int:
    """Interleave the bits of a chunk's grid position, each axis using only the bits it needs."""
    bits = [max(0, math.ceil(math.log2(n))) if n > 1 else 0 for n in grid_xyz]
    code, out_bit = 0, 0
    for i in range(max(bits, default=0)):
        for axis in range(3):
            if i < bits[axis]:
                code |= ((position_xyz[axis] >> i) & 1) << out_bit
                out_bit += 1
    return code


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """A validated ``sharding`` object of one scale."""

    preshift_bits: int
    minishard_bits: int
    shard_bits: int
    hash: str
    minishard_index_encoding: str
    data_encoding: str

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ShardSpec:
        """From an ``info`` scale's (already validated) ``sharding`` object."""
        return cls(
            int(doc["preshift_bits"]),
            int(doc["minishard_bits"]),
            int(doc["shard_bits"]),
            str(doc["hash"]),
            str(doc.get("minishard_index_encoding", "raw")),
            str(doc.get("data_encoding", "raw")),
        )

    def locate(self, chunk_id: int) -> tuple[int, int]:
        """``(shard, minishard)`` holding ``chunk_id``."""
        key = chunk_id >> self.preshift_bits
        hashed = key if self.hash == "identity" else murmurhash3_x86_128_low64(key)
        minishard = hashed & ((1 << self.minishard_bits) - 1)
        shard = (hashed >> self.minishard_bits) & ((1 << self.shard_bits) - 1)
        return shard, minishard

    def shard_name(self, shard: int) -> str:
        """File name of a shard: its number in hex, zero-padded, ``.shard``."""
        digits = max(1, -(-self.shard_bits // 4))
        return f"{shard:0{digits}x}.shard"

    @property
    def index_bytes(self) -> int:
        """Size of the shard index at the start of every shard file."""
        return 16 << self.minishard_bits


class ShardReader:
    """Fetches single chunks of one sharded scale.

    Parameters
    ----------
    spec : ShardSpec
        The scale's sharding.
    grid_xyz : tuple of int
        Number of chunks along x, y, z.
    get_range : callable
        ``get_range(file_name, start, length) -> bytes | None`` (``None`` when the
        shard file does not exist).
    cache_size : int
        Minishard indexes kept.
    """

    def __init__(
        self,
        spec: ShardSpec,
        grid_xyz: tuple[int, int, int],
        get_range: Callable[[str, int, int], bytes | None],
        cache_size: int = 512,
    ) -> None:
        self.spec = spec
        self.grid_xyz = grid_xyz
        self._get_range = get_range
        self._cache: OrderedDict[tuple[int, int], dict[int, tuple[int, int]] | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def chunk_bytes(self, grid_zyx: Index3) -> bytes | None:
        """The stored (``data_encoding``-decoded) bytes of one chunk, or ``None`` if absent.

        Raises
        ------
        ValueError
            If a shard or minishard index is malformed, or the chunk is truncated.
        """
        chunk_id = compressed_morton_code(grid_zyx[::-1], self.grid_xyz)
        shard, minishard = self.spec.locate(chunk_id)
        index = self._minishard(shard, minishard)
        if index is None or chunk_id not in index:
            return None
        offset, size = index[chunk_id]
        name = self.spec.shard_name(shard)
        data = self._get_range(name, self.spec.index_bytes + offset, size)
        if data is None or len(data) != size:
            raise ValueError(f"{name}: chunk {chunk_id} is truncated")
        if self.spec.data_encoding == "gzip":
            data = gunzip(data, _MAX_CHUNK_BYTES)
        return data

    def _minishard(self, shard: int, minishard: int) -> dict[int, tuple[int, int]] | None:
        key = (shard, minishard)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        index = self._read_minishard(shard, minishard)
        with self._lock:
            self._cache[key] = index
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return index

    def _read_minishard(self, shard: int, minishard: int) -> dict[int, tuple[int, int]] | None:
        """Chunk id -> (offset after the shard index, size) of one minishard; ``None`` if empty."""
        name = self.spec.shard_name(shard)
        entry = self._get_range(name, 16 * minishard, 16)
        if entry is None:
            return None
        if len(entry) != 16:
            raise ValueError(f"{name}: shard index entry {minishard} is truncated")
        start, end = (int(v) for v in np.frombuffer(entry, dtype="<u8"))
        if end < start or end - start > _MAX_MINISHARD_BYTES:
            raise ValueError(f"{name}: minishard {minishard} has a bad range [{start}, {end})")
        if end == start:
            return None
        raw = self._get_range(name, self.spec.index_bytes + start, end - start)
        if raw is None or len(raw) != end - start:
            raise ValueError(f"{name}: minishard index {minishard} is truncated")
        if self.spec.minishard_index_encoding == "gzip":
            raw = gunzip(raw, _MAX_MINISHARD_BYTES)
        if len(raw) % 24:
            raise ValueError(f"{name}: minishard index {minishard} has a bad length {len(raw)}")
        rows = np.frombuffer(raw, dtype="<u8").reshape(3, -1).astype(np.uint64)
        ids = np.cumsum(rows[0], dtype=np.uint64)
        sizes = rows[2]
        starts = np.empty_like(sizes)
        position = 0
        for i, (delta, size) in enumerate(zip(rows[1].tolist(), sizes.tolist(), strict=True)):
            starts[i] = position + delta
            position = int(starts[i]) + size
        return {int(c): (int(o), int(s)) for c, o, s in zip(ids, starts, sizes, strict=True)}
