"""Reading and writing through tensorstore, shared by the zarr, N5 and precomputed backends."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.errors import ChunkError, MetadataError, SourceNotFoundError

if TYPE_CHECKING:
    import tensorstore as ts

__all__ = ["context", "open_store", "read_region", "write_region"]


@functools.cache
def context() -> ts.Context:
    """One tensorstore context for the process, its cache kept tiny.

    The project's own chunk cache holds the memory budget, so tensorstore must
    not cache decoded chunks a second time.
    """
    import tensorstore as ts

    return ts.Context(
        {
            "cache_pool": {"total_bytes_limit": 0},
            "data_copy_concurrency": {"limit": 4},
            "file_io_concurrency": {"limit": 32},
        }
    )


def open_store(
    spec: dict[str, Any], *, where: str, write: bool = False, assume_metadata: bool = False
) -> ts.TensorStore:
    """Open a tensorstore spec, turning its errors into typed ones naming ``where``.

    ``assume_metadata`` takes the spec's metadata as given instead of reading the
    stored one (for metadata this project validated but tensorstore cannot parse).
    """
    import tensorstore as ts

    mode: dict[str, bool] = (
        {"assume_metadata": True} if assume_metadata else {"open": True, "create": False}
    )
    try:
        return ts.open(spec, read=True, write=write, context=context(), **mode).result()
    except ValueError as exc:
        message = str(exc)
        if "NOT_FOUND" in message:
            raise SourceNotFoundError(where, message) from None
        raise MetadataError(where, "", f"tensorstore cannot open it: {message}") from None


def read_region(
    store: ts.TensorStore, index: tuple[slice, ...], *, where: str, scale: int
) -> np.ndarray:
    """Read ``store[index]`` into a numpy array; decode errors become :class:`ChunkError`."""
    try:
        return np.asarray(store[index].read().result())
    except (ValueError, RuntimeError) as exc:
        region = ",".join(f"{s.start}:{s.stop}" for s in index)
        raise ChunkError(where, scale, region, str(exc)) from None


def write_region(
    store: ts.TensorStore, index: tuple[slice, ...], data: np.ndarray, *, where: str, scale: int
) -> None:
    """Write ``data`` to ``store[index]`` and wait until it is durable."""
    try:
        store[index].write(data).result()
    except (ValueError, RuntimeError) as exc:
        region = ",".join(f"{s.start}:{s.stop}" for s in index)
        raise ChunkError(where, scale, region, f"write failed: {exc}") from None
