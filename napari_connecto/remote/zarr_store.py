"""A read-only zarr-python store over the shared HTTP transport.

zarr-python decodes every codec of zarr v2 and v3 (sharding included); this
store only supplies bytes. Its fetches run on a dedicated thread pool, so that
many chunk reads can wait on a slow server at once (zarr's event loop would
otherwise share the small default executor).
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from zarr.abc.store import OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest

from napari_connecto.errors import ReadOnlyError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import Buffer, BufferPrototype

    from napari_connecto.remote.store import HttpStore

__all__ = ["HttpZarrStore"]

_FETCH_THREADS = 32


@functools.cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_FETCH_THREADS, thread_name_prefix="connecto-zarr-http")


class HttpZarrStore(Store):
    """zarr keys read from an :class:`~napari_connecto.remote.store.HttpStore`.

    Parameters
    ----------
    store : HttpStore
        Keys below the zarr hierarchy's root (or an array's directory).
    known : mapping, optional
        Bodies already fetched (the metadata just validated), served without a request.
    """

    supports_writes = False
    supports_deletes = False
    supports_listing = False
    supports_partial_writes = False

    def __init__(self, store: HttpStore, known: Mapping[str, bytes] | None = None) -> None:
        super().__init__(read_only=True)
        self._http = store
        self._known = dict(known or {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpZarrStore) and other._http.url == self._http.url

    def __hash__(self) -> int:
        return hash(self._http.url)

    def __repr__(self) -> str:
        return f"HttpZarrStore({self._http!r})"

    def _fetch(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        if byte_range is None and key in self._known:
            return self._known[key]
        url = self._http.key_url(key)
        client = self._http.client
        if byte_range is None:
            return client.get_confirmed(url, allow_missing=True)
        if isinstance(byte_range, RangeByteRequest):
            span: tuple[int, int | None] = (byte_range.start, byte_range.end - byte_range.start)
        elif isinstance(byte_range, OffsetByteRequest):
            span = (byte_range.offset, None)
        elif isinstance(byte_range, SuffixByteRequest):
            span = (-byte_range.suffix, None)
        else:
            raise TypeError(f"unknown byte range {byte_range!r}")
        return client.get_confirmed(url, byte_range=span, allow_missing=True)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """The bytes of ``key`` (or a range of them), ``None`` if the server has none."""
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(_executor(), self._fetch, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        """Several ranges at once."""
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        """Whether the server has ``key``."""
        loop = asyncio.get_running_loop()
        url = self._http.key_url(key)
        return await loop.run_in_executor(_executor(), self._http.client.exists, url)

    async def set(self, key: str, value: Buffer) -> None:
        """Refused: remote zarr is read-only."""
        raise ReadOnlyError(f"{self._http.url} is read-only")

    async def delete(self, key: str) -> None:
        """Refused: remote zarr is read-only."""
        raise ReadOnlyError(f"{self._http.url} is read-only")

    async def list(self) -> AsyncIterator[str]:
        """Nothing: HTTP cannot list."""
        return
        yield

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Nothing: HTTP cannot list."""
        return
        yield

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """Nothing: HTTP cannot list."""
        return
        yield

    def with_read_only(self, read_only: bool = False) -> Any:
        """Itself: it is read-only either way."""
        return self
