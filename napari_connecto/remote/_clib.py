"""Loading a system C library through :mod:`ctypes`, its signatures declared, or nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["system_library"]


def system_library(name: str, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """The system's ``lib<name>`` with ``declare(lib)`` applied; ``None`` if it is missing.

    Parameters
    ----------
    name : str
        The library name without ``lib`` and suffix (``"zstd"``, ``"deflate"``).
    declare : callable
        Sets ``restype``/``argtypes`` of the functions used; a missing symbol
        (``AttributeError``) counts as no library.

    Returns
    -------
    ctypes.CDLL or None
        The library, or ``None`` when it is not installed or not usable.
    """
    found = ctypes.util.find_library(name)
    if found is None:
        return None
    try:
        lib = ctypes.CDLL(found)
        declare(lib)
    except (OSError, AttributeError):
        return None
    return lib
