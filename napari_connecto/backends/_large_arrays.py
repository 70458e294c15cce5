"""Decoded chunks of 2 MiB and more, in memory backed by transparent huge pages.

Fresh memory is mapped page by page as it is first written: decoding a 64^3
``uint64`` segmentation chunk (2 MiB) into a new array takes 512 page faults,
and in a virtual machine, where each costs microseconds, they can cost more
than the decoding. :func:`empty` gives an array of at least 2 MiB an anonymous
mapping of its own, advised for transparent huge pages (``MADV_HUGEPAGE``) and
starting on a 2 MiB boundary (the mapping is 2 MiB longer than the array; the
pages never touched cost no memory), so that one fault maps 2 MiB at a time.
The mapping is released with the last array viewing it. With the kernel's
``defrag`` setting at ``madvise`` (a common default) such a fault may compact
memory first, a pause of a decoding worker thread, never of the viewer's. Each
such array is one mapping: the kernel allows tens of thousands per process
(``vm.max_map_count``), far more than a cache budget of gigabytes holds in 2 MiB
chunks.

Where the kernel offers no transparent huge pages (not Linux, or
``/sys/kernel/mm/transparent_hugepage/enabled`` says ``never``), and for smaller
arrays, :func:`empty` is :func:`numpy.empty`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import mmap
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["HUGE_PAGE", "empty", "huge_pages_offered"]

HUGE_PAGE = 2**21
"""Bytes of a transparent huge page (x86-64 and arm64 with 4 KiB pages)."""
_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@functools.cache
def huge_pages_offered() -> bool:
    """Whether memory can be advised for transparent huge pages here."""
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        setting = _SETTING.read_text()
    except OSError:
        return False
    return "[always]" in setting or "[madvise]" in setting


def empty(shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """An uninitialised, writable, C-ordered array, huge-page backed from 2 MiB on.

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    dtype : numpy.dtype or anything numpy reads as one
        Element type.

    Returns
    -------
    numpy.ndarray
        Not a view of anything larger: either numpy's own memory, or a view of
        exactly its bytes of the mapping. Where no mapping can be made (out of
        memory or mappings), numpy's memory.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < HUGE_PAGE or not huge_pages_offered():
        return np.empty(shape, dtype=dtype)
    try:
        memory = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:
        return np.empty(shape, dtype=dtype)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(memory)) % HUGE_PAGE
    with contextlib.suppress(OSError):  # refused: ordinary pages, still correct
        memory.madvise(mmap.MADV_HUGEPAGE, start, nbytes)
    flat = np.frombuffer(memory, dtype=dtype, count=nbytes // dtype.itemsize, offset=start)
    return flat.reshape(shape)
