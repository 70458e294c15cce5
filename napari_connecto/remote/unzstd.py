"""Decoding zstd chunks through the system's libzstd, the GIL released for large ones.

libzstd (``libzstd.so.1``, found through :mod:`ctypes.util`; no Python package
needed) called through :mod:`ctypes` decodes into a buffer of exactly the
expected size: more output fails (``Destination buffer is too small``) rather
than being cut. Without libzstd, :func:`decompress_into` returns ``False`` and
the caller uses numcodecs.

Whether the GIL is released depends on the size. Decoding a 64^3 uint8 chunk
takes about 0.2 ms, less than what releasing the GIL costs with a dozen
reader threads: another thread takes it, and this one then waits to be
woken and scheduled to take it back (measured with ``bench/remote.py``: the
zstd rows read 4 to 6 % faster holding it). Decodes of more than
:data:`RELEASE_GIL_BYTES` (over about 1 ms) release it, so that one large
chunk never stalls the other threads, the viewer's among them.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from napari_connecto.remote._clib import system_library

__all__ = ["RELEASE_GIL_BYTES", "decompress_into"]

RELEASE_GIL_BYTES = 2**20
"""Decoded size from which the GIL is released during the decode."""


def _declare(lib: ctypes.CDLL) -> None:
    """Signatures of the libzstd functions used."""
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    buffer = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ZSTD_decompress.argtypes = buffer + buffer  # destination, then source
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    lib.ZSTD_getErrorName.restype = ctypes.c_char_p
    lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]


@functools.cache
def _library(hold_gil: bool) -> ctypes.CDLL | None:
    """The system libzstd, its signatures declared (``None`` if there is none)."""
    return system_library("zstd", _declare, hold_gil=hold_gil)


def decompress_into(data: bytes | memoryview, out: np.ndarray) -> bool:
    """Decode the zstd frames of ``data`` into ``out`` (C-contiguous, filled exactly).

    Parameters
    ----------
    data : bytes or memoryview
        One or more zstd frames.
    out : numpy.ndarray
        Where the decoded bytes go; writable, C-contiguous, exactly their size.

    Returns
    -------
    bool
        ``False`` if libzstd is not available (nothing was done).

    Raises
    ------
    ValueError
        If the data is corrupt or truncated, decodes to more or fewer bytes than
        ``out`` holds, or ``out`` is not a writable C-contiguous array.
    """
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("zstd output must be a writable C-contiguous array")
    lib = _library(out.nbytes < RELEASE_GIL_BYTES)
    if lib is None:
        return False
    source = np.frombuffer(data, dtype=np.uint8)
    made = lib.ZSTD_decompress(out.ctypes.data, out.nbytes, source.ctypes.data, len(source))
    if lib.ZSTD_isError(made):
        raise ValueError(lib.ZSTD_getErrorName(made).decode("ascii", "replace"))
    if made != out.nbytes:
        raise ValueError(f"zstd data holds {made} bytes, expected {out.nbytes}")
    return True
