"""Reading and writing one socket with as few releases of the GIL as the kernel allows.

Every socket call Python makes releases the GIL, and taking it back is where a
reader thread waits while others run Python: with a dozen readers that wait,
not the call, is what a request costs. A socket with a Python timeout makes
two calls per read or write (``poll`` for readiness, then ``recv``/``send``);
:class:`SocketStream` puts a plain socket in blocking mode and has the kernel
enforce the timeout instead (``SO_RCVTIMEO``/``SO_SNDTIMEO``), so each read or
write is one call. A TLS socket, and any socket off Linux, keeps its Python
timeout.

On such a plain socket the stream also tries each read first without waiting
and without releasing the GIL (:mod:`.nowait`): bytes that have already
arrived then cost no hand-over of the GIL at all. Only when nothing has
arrived yet does the stream make the blocking call, the GIL released.

The stream buffers what it read beyond a line, and hands bodies over by
reading straight into the caller's buffer once the buffered bytes are used.
A kernel timeout raises :class:`TimeoutError`, as Python's own does.
"""

from __future__ import annotations

import select
import socket
import struct
import sys

from napari_connecto.remote import nowait

__all__ = ["SocketStream"]

_FILL = 2**14
"""Bytes asked for per read while looking for a line end."""


class SocketStream:
    """A connected socket read through a small buffer, written whole.

    Parameters
    ----------
    sock : socket.socket
        Connected; a plain socket is switched to blocking mode with kernel timeouts.
    timeout : float
        Seconds a read or write may wait for the peer.
    capacity : int
        Buffer size, the longest line :meth:`readline` can return.
    """

    def __init__(self, sock: socket.socket, timeout: float, capacity: int) -> None:
        self.sock = sock
        self._buffer = bytearray(capacity)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        self._fd = -1
        """The socket's descriptor where reads are tried without waiting first (else -1)."""
        if not _kernel_timeouts(sock, timeout):
            sock.settimeout(timeout)
        elif nowait.available():
            self._fd = sock.fileno()

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet handed out."""
        return self._end - self._start

    def sendall(self, data: bytes | memoryview) -> None:
        """Write all of ``data``.

        Raises
        ------
        TimeoutError
            If the peer took nothing for the timeout.
        OSError
            If the connection failed.
        """
        try:
            self.sock.sendall(data)
        except BlockingIOError:  # SO_SNDTIMEO expired
            raise TimeoutError("timed out sending") from None

    def recv_into(self, view: memoryview) -> int:
        """One read into ``view`` (buffered bytes first); 0 at the end of the stream.

        Raises
        ------
        TimeoutError
            If nothing arrived for the timeout.
        """
        if self._start < self._end:
            n = min(len(view), self._end - self._start)
            view[:n] = self._view[self._start : self._start + n]
            self._start += n
            return n
        return self._recv(view)

    def _recv(self, view: memoryview) -> int:
        """One ``recv`` from the socket into ``view``; the kernel's timeout as TimeoutError."""
        if self._fd >= 0 and view.nbytes:
            got = nowait.recv_now(self._fd, view)
            if got is not None:
                return got
        try:
            return self.sock.recv_into(view)
        except BlockingIOError:  # SO_RCVTIMEO expired
            raise TimeoutError("timed out reading") from None

    def readline(self, limit: int) -> bytes:
        """Bytes up to and including the next line feed, at most ``limit + 1`` of them.

        Returns fewer bytes without a line end where the stream ended, and
        ``limit + 1`` bytes where no line end came within ``limit``.
        """
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n", self._start, min(self._end, self._start + limit + 1))
            if end >= 0:
                return self._take(end + 1 - self._start)
            if self._end - self._start > limit or not self._fill():
                return self._take(min(self._end - self._start, limit + 1))

    def _take(self, n: int) -> bytes:
        """The next ``n`` buffered bytes."""
        data = bytes(self._view[self._start : self._start + n])
        self._start += n
        if self._start == self._end:
            self._start = self._end = 0
        return data

    def _fill(self) -> bool:
        """Read more into the buffer (moved to its front first if needed); ``False`` at the end."""
        if self._start and len(self._buffer) - self._end < _FILL:
            kept = self._end - self._start
            self._view[:kept] = self._view[self._start : self._end]
            self._start, self._end = 0, kept
        room = min(len(self._buffer) - self._end, _FILL)
        if room <= 0:
            return False
        n = self._recv(self._view[self._end : self._end + room])
        self._end += n
        return n > 0

    def peer_sent_something(self) -> bool:
        """Whether the socket has anything to read (bytes, its end, an error); no bytes are read.

        A pending error may be cleared by the check (see
        :func:`.nowait.peer_sent_something`): close the stream when this is ``True``.
        """
        if self._fd >= 0:
            return nowait.peer_sent_something(self._fd)
        if not hasattr(select, "poll"):  # Windows
            return bool(select.select([self.sock], [], [], 0)[0])
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        """Close the socket."""
        self._fd = -1
        self._view.release()
        self.sock.close()


def _kernel_timeouts(sock: socket.socket, seconds: float) -> bool:
    """Blocking mode, ``seconds`` as the kernel's receive and send timeouts (``False``: not here).

    Linux only: Windows reads the option as milliseconds in a ``DWORD``, and
    other systems lay out ``struct timeval`` their own way. TLS sockets are left
    alone: an expired kernel timeout would surface there as an SSL error rather
    than a timeout.
    """
    import ssl

    if not sys.platform.startswith("linux") or isinstance(sock, ssl.SSLSocket):
        return False
    whole, part = divmod(max(seconds, 0.001), 1.0)
    value = struct.pack("@ll", int(whole), int(part * 1e6))  # struct timeval
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except (OSError, struct.error):
        return False
    sock.settimeout(None)
    return True
