"""Neuroglancer precomputed volumes over HTTP (``precomputed://https://...``, ``gs://``, ``s3://``).

The ``info`` file is validated by the same code as a local one (through
:class:`~napari_connecto.remote.path.UrlPath`); chunks are fetched through the
shared transport and decoded natively (raw, compressed_segmentation, jpeg, png;
gzip by ``Content-Encoding`` or magic bytes), sharded scales by byte ranges. A
chunk the server does not have (404) reads as 0, as in Neuroglancer; every
other failure raises :class:`~napari_connecto.errors.ChunkError` for that chunk.
Remote volumes are read-only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from napari_connecto.backends._assemble import assemble
from napari_connecto.backends._precomputed_codecs import ChunkGrid, decode_chunk
from napari_connecto.backends._precomputed_shards import ShardReader, ShardSpec
from napari_connecto.backends.base import VolumeBackend
from napari_connecto.backends.precomputed import PrecomputedBackend, chunk_grid
from napari_connecto.remote.http import public_url

if TYPE_CHECKING:
    from napari_connecto.backends._precomputed_info import Info, Level
    from napari_connecto.remote.store import HttpStore
    from napari_connecto.source import Source
    from napari_connecto.volume.scale import Index3

__all__ = ["RemotePrecomputedBackend"]


class RemotePrecomputedBackend(VolumeBackend):
    """A precomputed volume read over HTTP (opened by :class:`PrecomputedBackend`)."""

    name = "precomputed"
    supports_writes = False
    max_concurrency: ClassVar[int] = 32

    def __init__(self, source: Source, store: HttpStore, info: Info, channel: int) -> None:
        self.source = source
        self.kind = info.kind
        self.scales = tuple(lv.scale for lv in info.levels)
        self._store = store
        self._info = info
        self._channel = channel
        self._grids = tuple(chunk_grid(info, lv, None) for lv in info.levels)
        self._shards = tuple(
            self._shard_reader(lv, g) for lv, g in zip(info.levels, self._grids, strict=True)
        )

    @classmethod
    def sniff(cls, source: Source) -> bool:
        """Never sniffed on its own: :class:`PrecomputedBackend` opens it."""
        return False

    @classmethod
    def open(cls, source: Source, mode: str = "r") -> RemotePrecomputedBackend:  # type: ignore[override]
        """Open through :class:`~napari_connecto.backends.precomputed.PrecomputedBackend`."""
        return PrecomputedBackend.open(source, mode)  # type: ignore[return-value,arg-type]

    def _shard_reader(self, level: Level, grid: ChunkGrid) -> ShardReader | None:
        if level.sharding is None:
            return None
        store = self._store.child(level.scale.key)
        grid_xyz = tuple(-(-n // c) for n, c in zip(grid.shape, grid.chunk, strict=True))[::-1]
        return ShardReader(
            ShardSpec.from_json(level.sharding),
            grid_xyz,
            store.get_range,  # type: ignore[arg-type]
        )

    def read(self, scale: int, start: Index3, stop: Index3) -> np.ndarray:
        """Fetch and decode the chunks of one z, y, x region (404 chunks read as 0)."""
        grid = self._grids[scale]
        key = self.scales[scale].key
        shards = self._shards[scale]
        where = public_url(str(self.source))

        def load(index: Index3, name: str, shape: Index3) -> np.ndarray | None:
            if shards is None:
                return self._store.fetch(
                    f"{key}/{name}", lambda data: decode_chunk(grid, data, shape)
                )
            data = shards.chunk_bytes(index)
            return None if data is None else decode_chunk(grid, data, shape)

        return assemble(grid, start, stop, self._channel, load, where=where, scale=scale)

    def describe(self) -> dict[str, Any]:
        """URL, type, channels and per-scale encoding and sharding."""
        return {
            "precomputed": {
                "url": public_url(self._store.url),
                "type": self.kind,
                "num_channels": self._info.num_channels,
                "channel": self._channel,
                "scales": [
                    {"key": lv.scale.key, "encoding": lv.scale.encoding, "sharding": lv.sharding}
                    for lv in self._info.levels
                ],
            }
        }
