"""Inflating gzip and zlib streams with a cap, through libdeflate where the system has it.

Chunks fetched over HTTP (N5 ``gzip`` blocks, gzip'd precomputed chunks, zarr
``gzip``/``zlib`` chunks) are inflated here. libdeflate (``libdeflate.so.0``,
found through :mod:`ctypes.util`; no Python package needed) inflates about
twice as fast as zlib, in one call, with the GIL released by :mod:`ctypes`,
into a buffer of exactly the allowed size: a stream that would be larger fails
(``INSUFFICIENT_SPACE``) rather than being cut, and a corrupt or truncated one
fails its checksum (``BAD_DATA``). Without libdeflate, :mod:`zlib` is used
with ``max_length``. Either way the result is the first stream's data
(anything after it is ignored, as zlib does) and every failure is a
:class:`ValueError`.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import zlib

import numpy as np

from napari_connecto.remote._clib import system_library

__all__ = ["inflate"]

_GZIP_MAGIC = b"\x1f\x8b"
_SUCCESS, _BAD_DATA, _SHORT_OUTPUT, _INSUFFICIENT_SPACE = 0, 1, 2, 3
_local = threading.local()


def _declare(lib: ctypes.CDLL) -> None:
    """Signatures of the libdeflate functions used."""
    lib.libdeflate_alloc_decompressor.restype = ctypes.c_void_p
    lib.libdeflate_alloc_decompressor.argtypes = []
    lib.libdeflate_free_decompressor.restype = None
    lib.libdeflate_free_decompressor.argtypes = [ctypes.c_void_p]
    size_p = ctypes.POINTER(ctypes.c_size_t)
    for fn in (lib.libdeflate_gzip_decompress_ex, lib.libdeflate_zlib_decompress_ex):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        fn.argtypes += [ctypes.c_void_p, ctypes.c_size_t, size_p, size_p]


@functools.cache
def _library() -> ctypes.CDLL | None:
    """Libdeflate with its signatures declared, or ``None`` if the system has none."""
    return system_library("deflate", _declare)


class _Decompressor:
    """One libdeflate decompressor, freed with the thread that made it."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.handle = lib.libdeflate_alloc_decompressor()
        if not self.handle:
            raise MemoryError("libdeflate could not allocate a decompressor")

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self.lib.libdeflate_free_decompressor(self.handle)


def _decompressor(lib: ctypes.CDLL) -> int:
    """The calling thread's libdeflate decompressor (they are not thread-safe)."""
    own = getattr(_local, "decompressor", None)
    if own is None:
        own = _local.decompressor = _Decompressor(lib)
    return own.handle  # type: ignore[no-any-return]


def inflate(data: bytes | memoryview, cap: int, *, zlib_too: bool = False) -> bytes | memoryview:
    """The data of one gzip stream (or zlib stream, if ``zlib_too``), at most ``cap`` bytes.

    Raises
    ------
    ValueError
        If the stream is corrupt, truncated or inflates to more than ``cap`` bytes.
    """
    gzip = bytes(data[:2]) == _GZIP_MAGIC
    lib = _library() if cap > 0 and (gzip or zlib_too) else None
    if lib is None:
        return _zlib(data, cap, zlib_too=zlib_too)
    source = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(cap, dtype=np.uint8)
    used, made = ctypes.c_size_t(0), ctypes.c_size_t(0)
    call = lib.libdeflate_gzip_decompress_ex if gzip else lib.libdeflate_zlib_decompress_ex
    result = call(
        _decompressor(lib),
        source.ctypes.data,
        len(source),
        out.ctypes.data,
        cap,
        ctypes.byref(used),
        ctypes.byref(made),
    )
    if result == _INSUFFICIENT_SPACE:
        raise ValueError(f"{'gzip' if gzip else 'zlib'} data inflates to more than {cap} bytes")
    if result != _SUCCESS:
        raise ValueError(f"corrupt or truncated {'gzip' if gzip else 'zlib'} data")
    return memoryview(out)[: made.value]


def _zlib(data: bytes | memoryview, cap: int, *, zlib_too: bool) -> bytes:
    """:func:`inflate` with :mod:`zlib` (gzip header only, unless ``zlib_too``)."""
    inflater = zlib.decompressobj(wbits=(32 if zlib_too else 16) + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error as exc:
        raise ValueError(f"corrupt gzip data ({exc})") from None
    if len(out) > cap:
        raise ValueError(f"gzip data inflates to more than {cap} bytes")
    if not inflater.eof:
        raise ValueError("truncated gzip data")
    return out
