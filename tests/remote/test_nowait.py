"""Socket reads made without waiting (and with the GIL held), on real loopback TCP sockets."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest

from napari_connecto.remote import nowait
from napari_connecto.remote.stream import SocketStream

pytestmark = pytest.mark.skipif(not nowait.available(), reason="Linux only")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on 127.0.0.1: (ours, the peer's)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
    yield ours, peer
    ours.close()
    peer.close()


def _arrived(sock: socket.socket) -> None:
    """Wait (at most 2 s) until ``sock`` has something to read."""
    assert select.select([sock], [], [], 2.0)[0], "nothing arrived"


def test_a_read_takes_what_has_arrived_and_says_when_nothing_has(pair):
    ours, peer = pair
    buffer = bytearray(100)
    assert nowait.recv_now(ours.fileno(), memoryview(buffer)) is None
    peer.sendall(b"first answer")
    _arrived(ours)
    assert nowait.recv_now(ours.fileno(), memoryview(buffer)) == 12
    assert buffer[:12] == b"first answer"
    assert nowait.recv_now(ours.fileno(), memoryview(buffer)) is None  # all taken
    peer.close()
    _arrived(ours)
    assert nowait.recv_now(ours.fileno(), memoryview(buffer)) == 0  # end of stream


def test_a_reset_is_a_connection_reset_error_and_counts_as_something_sent(pair):
    ours, peer = pair
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()  # linger 0: the peer resets the connection
    _arrived(ours)
    with pytest.raises(ConnectionResetError):
        nowait.recv_now(ours.fileno(), memoryview(bytearray(10)))
    assert nowait.peer_sent_something(ours.fileno())  # the reset, reported, leaves its end


def test_a_reset_found_by_peeking_makes_the_connection_unusable(pair):
    ours, peer = pair
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()
    _arrived(ours)
    assert nowait.peer_sent_something(ours.fileno())
    assert nowait.peer_sent_something(ours.fileno())


def test_peeking_consumes_nothing(pair):
    ours, peer = pair
    assert not nowait.peer_sent_something(ours.fileno())
    peer.sendall(b"unasked")
    _arrived(ours)
    assert nowait.peer_sent_something(ours.fileno())
    assert nowait.peer_sent_something(ours.fileno())
    assert ours.recv(100) == b"unasked"
    assert not nowait.peer_sent_something(ours.fileno())


def test_a_stream_reads_a_line_and_a_body_arriving_in_pieces_whole(pair, monkeypatch):
    ours, peer = pair
    taken: list[int | None] = []

    def counted(fd: int, view: memoryview) -> int | None:
        got = recv_now(fd, view)
        taken.append(got)
        return got

    recv_now = nowait.recv_now
    monkeypatch.setattr(nowait, "recv_now", counted)
    stream = SocketStream(ours, timeout=2.0, capacity=1024)
    body = bytes(range(256)) * 4096  # 1 MiB

    def answer() -> None:
        peer.sendall(b"HTTP/1.1 200 OK\r\n")
        for at in range(0, len(body), 100_000):
            peer.sendall(body[at : at + 100_000])

    sender = threading.Thread(target=answer)
    sender.start()
    assert stream.readline(100) == b"HTTP/1.1 200 OK\r\n"
    got = bytearray(len(body))
    view, done = memoryview(got), 0
    while done < len(body):
        n = stream.recv_into(view[done:])
        assert n > 0
        done += n
    sender.join()
    assert got == body
    read_without_waiting = [n for n in taken if n]
    assert read_without_waiting, "the stream never read without waiting"
    assert max(read_without_waiting) <= 2**18  # one such read copies at most 256 KiB
    assert not stream.peer_sent_something()
    peer.close()
    _arrived(ours)
    assert stream.peer_sent_something()
