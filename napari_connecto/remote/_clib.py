"""Loading a system C library through :mod:`ctypes`, its signatures declared, or nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["system_library"]


def system_library(
    name: str, declare: Callable[[ctypes.CDLL], None], *, hold_gil: bool = False
) -> ctypes.CDLL | None:
    """The system's ``lib<name>`` with ``declare(lib)`` applied; ``None`` if it is missing.

    Parameters
    ----------
    name : str
        The library name without ``lib`` and suffix (``"zstd"``, ``"deflate"``).
    declare : callable
        Sets ``restype``/``argtypes`` of the functions used; a missing symbol
        (``AttributeError``) counts as no library.
    hold_gil : bool
        Call with the GIL held (:class:`ctypes.PyDLL`) instead of released:
        cheaper for calls shorter than handing the GIL to another thread and
        waiting to take it back.

    Returns
    -------
    ctypes.CDLL or None
        The library, or ``None`` when it is not installed or not usable.
    """
    found = ctypes.util.find_library(name)
    if found is None:
        return None
    try:
        lib = (ctypes.PyDLL if hold_gil else ctypes.CDLL)(found)
        declare(lib)
    except (OSError, AttributeError):
        return None
    return lib
