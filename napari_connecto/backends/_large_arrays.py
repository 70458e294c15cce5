"""Decoded chunks of 2 MiB and more, in memory backed by transparent huge pages.

Fresh memory is mapped page by page as it is first written: decoding a 64^3
``uint64`` segmentation chunk (2 MiB) into a new array takes 512 page faults,
and in a virtual machine, where each costs microseconds, they can cost more
than the decoding. :func:`empty` gives an array of at least 2 MiB an anonymous
mapping of its own, advised for transparent huge pages (``MADV_HUGEPAGE``), so
that one fault maps 2 MiB at a time. The mapping is released with the last
array viewing it. Each such array is one mapping: the kernel allows tens of
thousands per process (``vm.max_map_count``), far more than a cache budget of
gigabytes holds in 2 MiB chunks.

Where the kernel offers no transparent huge pages (not Linux, or
``/sys/kernel/mm/transparent_hugepage/enabled`` says ``never``), and for smaller
arrays, :func:`empty` is :func:`numpy.empty`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import mmap
import sys
from pathlib import Path

import numpy as np

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


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised, writable, C-ordered array, huge-page backed from 2 MiB on.

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    dtype : numpy.dtype
        Element type.

    Returns
    -------
    numpy.ndarray
        Memory of its own either way (its ``base`` owns exactly its bytes).
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < HUGE_PAGE or not huge_pages_offered():
        return np.empty(shape, dtype=dtype)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # refused: ordinary pages, still correct
        memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)
