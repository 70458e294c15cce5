"""One streamed pyramid level as napari data (``LayerDataProtocol``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.volume.level import RegionView

if TYPE_CHECKING:
    from napari_connecto.cache.streaming import LayerStream

__all__ = ["StreamingLevel"]

_Range = tuple[int, int, int]


class StreamingLevel(RegionView):
    """A lazy view of one level of a streamed layer, in display index space.

    Slice-only indexing returns another lazy view. Indexing that drops an axis,
    or ``np.asarray``, reads: in streaming mode (inside the viewer) at once from
    the cache, queueing what is missing; in blocking mode (scripts) it waits for
    real data. Use :attr:`blocking` to force a waiting read from a streamed layer.

    Parameters
    ----------
    stream : LayerStream
        The layer's streaming state.
    level : int
        Index of the level (0 = finest).
    region : tuple of (start, stop, step), optional
        The part of the level this view shows; default all of it.
    force_blocking : bool
        Always wait for real data, whatever the stream's mode.
    """

    def __init__(
        self,
        stream: LayerStream,
        level: int,
        region: tuple[_Range, ...] | None = None,
        *,
        force_blocking: bool = False,
    ) -> None:
        self._stream = stream
        self._level = level
        geom = stream.volume.levels[level]
        self._region: tuple[_Range, ...] = region or tuple((0, n, 1) for n in geom.shape)
        self._force_blocking = force_blocking
        self.shape: tuple[int, ...] = tuple(len(range(*r)) for r in self._region)
        self.dtype: np.dtype = stream.volume.dtype
        self.chunks: tuple[int, ...] = geom.block

    @property
    def stream(self) -> LayerStream:
        """The layer's streaming state."""
        return self._stream

    @property
    def level(self) -> int:
        """Index of this level."""
        return self._level

    @property
    def blocking(self) -> StreamingLevel:
        """The same view, but reads always wait for real data."""
        return StreamingLevel(self._stream, self._level, self._region, force_blocking=True)

    def _view(self, region: tuple[_Range, ...]) -> StreamingLevel:
        return StreamingLevel(
            self._stream, self._level, region, force_blocking=self._force_blocking
        )

    def _fetch(self, start: tuple[int, ...], stop: tuple[int, ...], *, probe: bool) -> np.ndarray:
        stream = self._stream
        if self._force_blocking and stream.streaming:
            return stream.read_blocking(self._level, start, stop)  # type: ignore[arg-type]
        return stream.read(self._level, start, stop, probe=probe)  # type: ignore[arg-type]

    @property
    def _max_read_bytes(self) -> int:
        return self._stream.volume.volume.max_read_bytes

    def __deepcopy__(self, memo: dict[int, Any]) -> StreamingLevel:
        """A copy over a new stream of the same volume (napari's Duplicate Layer).

        The levels of one layer share one stream, so the copies do too (through ``memo``).
        """
        from napari_connecto.cache.streaming import LayerStream

        key = id(self._stream)
        stream = memo.get(key)
        if stream is None:
            stream = LayerStream(self._stream.volume)
            stream.streaming = self._stream.streaming
            memo[key] = stream
        return StreamingLevel(
            stream, self._level, self._region, force_blocking=self._force_blocking
        )

    def __repr__(self) -> str:
        where = ", ".join(f"{a}:{b}:{c}" for a, b, c in self._region)
        mode = "streaming" if self._stream.streaming and not self._force_blocking else "blocking"
        return (
            f"<StreamingLevel {self._stream.volume.volume.name!r} level {self._level} "
            f"[{where}] {self.shape} {self.dtype} {mode}>"
        )
