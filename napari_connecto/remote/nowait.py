"""Socket reads that cannot wait, made without releasing the GIL.

Python releases the GIL around every socket call, however short. With a dozen
reader threads, taking it back afterwards is a wait of its own (and usually a
thread switch), and it costs more than the call: a ``recv`` of bytes already
received takes microseconds, and so does checking that an idle connection has
nothing to read. The calls here ask the kernel not to wait (``MSG_DONTWAIT``)
and are made through libc with :class:`ctypes.PyDLL`, which keeps the GIL.
When nothing has arrived yet, they say so and the caller makes the ordinary,
blocking call with the GIL released.

Sends are left to Python: on loopback a send wakes the receiving process at
once, and a sender holding the GIL that the scheduler then sets aside stalls
every other Python thread (measured: compressed_segmentation reads 3-8 %
slower with sends made this way).

Linux only (the flags and ``errno`` values are Linux's); elsewhere
:func:`available` is ``False`` and callers keep Python's socket calls.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import sys
from collections.abc import Callable

__all__ = ["available", "peer_sent_something", "recv_now"]

_NOT_YET = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})
"""``errno`` of a call that had nothing to do yet (EINTR: the caller's blocking call follows)."""
_MOST = 2**18
"""Bytes one read takes at most: copying them holds the GIL (256 KiB: some 50 microseconds)."""
# plain ints: or-ing the IntFlag members costs microseconds (Windows has no MSG_DONTWAIT)
_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
_PEEK = _DONTWAIT | int(socket.MSG_PEEK)
_PROBE = ctypes.create_string_buffer(1)
"""Where a peek puts the byte it looks at (never read; shared by every thread)."""


@functools.cache
def _libc_recv() -> Callable[..., int] | None:
    """``recv`` of libc, called with the GIL held (``None`` off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        recv = libc.recv
    except (OSError, AttributeError):
        return None
    recv.restype = ctypes.c_ssize_t
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return recv  # type: ignore[no-any-return]


def _required() -> Callable[..., int]:
    """The ``recv`` of libc; ``RuntimeError`` where :func:`available` is ``False``."""
    recv = _libc_recv()
    if recv is None:
        raise RuntimeError("non-waiting socket calls are not available here")
    return recv


def available() -> bool:
    """Whether the calls can be made here (Linux, libc found)."""
    return _libc_recv() is not None


def _not_yet(result: int) -> bool:
    """``True`` if the call found nothing to do yet; raises the ``OSError`` of a real failure."""
    if result >= 0:
        return False
    code = ctypes.get_errno()
    if code in _NOT_YET:
        return True
    raise OSError(code, os.strerror(code))  # ConnectionResetError etc., as Python raises them


def recv_now(fd: int, view: memoryview) -> int | None:
    """Read what has already arrived into ``view``, without waiting.

    At most 256 KiB are taken per call, since the copy holds the GIL; callers
    loop on short reads anyway.

    Parameters
    ----------
    fd : int
        A connected stream socket.
    view : memoryview
        Writable, C-contiguous, not empty (its bytes are filled, whatever its format).

    Returns
    -------
    int or None
        Bytes read (0: the peer closed); ``None`` if nothing has arrived yet.

    Raises
    ------
    OSError
        If the connection failed (``ConnectionResetError`` for a reset).
    """
    recv = _required()
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    result = recv(fd, address, min(view.nbytes, _MOST), _DONTWAIT)
    return None if _not_yet(result) else result


def peer_sent_something(fd: int) -> bool:
    """Whether anything can be read: bytes, the end of the stream, or an error.

    No bytes are consumed (``MSG_PEEK``), but a pending socket error (a reset)
    is reported here once and cleared by the kernel: the socket then reads as
    ended. Close a connection for which this is ``True``; an idle keep-alive
    connection must never be used for another request then.

    Parameters
    ----------
    fd : int
        A connected stream socket.

    Returns
    -------
    bool
        ``True`` for bytes, the end of the stream or any error (the error itself
        is not raised).
    """
    result = _required()(fd, _PROBE, 1, _PEEK)
    try:
        return not _not_yet(result)
    except OSError:
        return True
