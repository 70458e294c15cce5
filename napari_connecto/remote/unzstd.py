"""Decoding zstd chunks through the system's libzstd, with the GIL released.

``numcodecs.zstd.decompress`` holds the GIL for the whole decode (about 0.2 ms
for a 64^3 uint8 chunk), so reader threads decoding zstd chunks stall each
other's network I/O. libzstd (``libzstd.so.1``, found through
:mod:`ctypes.util`; no Python package needed) called through :mod:`ctypes`
decodes with the GIL released, into a buffer of exactly the expected size:
more output fails (``Destination buffer is too small``) rather than being cut.
Without libzstd, :func:`decompress_into` returns ``False`` and the caller uses
numcodecs. The error check after a decode takes a few nanoseconds and is made
with the GIL held (:class:`ctypes.PyDLL`): releasing it there would only make
the thread wait to take it back.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from napari_connecto.remote._clib import system_library

__all__ = ["decompress_into"]


def _declare(lib: ctypes.CDLL) -> None:
    """Signatures of the libzstd functions used (errors through a GIL-holding handle)."""
    lib.ZSTD_decompress.restype = ctypes.c_size_t
    buffer = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ZSTD_decompress.argtypes = buffer + buffer  # destination, then source
    # The same file opened again (the loader hands back the same library), as a
    # PyDLL: its calls keep the GIL. Should that fail, the zstd path is not used.
    held = ctypes.PyDLL(lib._name)
    lib.ZSTD_isError = held.ZSTD_isError
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    lib.ZSTD_getErrorName = held.ZSTD_getErrorName
    lib.ZSTD_getErrorName.restype = ctypes.c_char_p
    lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The system libzstd, its signatures declared (``None`` if there is none)."""
    return system_library("zstd", _declare)


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
    lib = _library()
    if lib is None:
        return False
    source = np.frombuffer(data, dtype=np.uint8)
    made = lib.ZSTD_decompress(out.ctypes.data, out.nbytes, source.ctypes.data, len(source))
    if lib.ZSTD_isError(made):
        raise ValueError(lib.ZSTD_getErrorName(made).decode("ascii", "replace"))
    if made != out.nbytes:
        raise ValueError(f"zstd data holds {made} bytes, expected {out.nbytes}")
    return True
