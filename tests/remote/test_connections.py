"""Keep-alive pooling, HTTP/1.1 framing and TLS of the transport, against real loopback sockets.

The servers here are raw TCP listeners scripted per connection, so that each test controls
exactly when a connection is closed and how a body is framed (or cut).
"""

from __future__ import annotations

import dataclasses
import gzip
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from napari_connecto.errors import RemoteError, RemoteTimeoutError, TruncatedBodyError
from napari_connecto.remote import stream
from napari_connecto.remote.http import HttpClient, HttpConfig

FAST = HttpConfig(read_timeout=1.0, backoff_base=0.002, backoff_max=0.01, retries=2)
BODY = bytes(range(256)) * 40


class RawServer:
    """A TCP listener on 127.0.0.1; every connection is handed to ``serve(conn, reader)``."""

    def __init__(self, serve: Callable[[RawServer, socket.socket, object], None]) -> None:
        self.serve = serve
        self.accepted = 0
        self.open = 0
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            self.serve(self, conn, reader)
        except OSError:
            pass
        finally:
            reader.close()
            conn.close()
            with self._lock:
                self.open -= 1

    def read_request(self, reader) -> bytes | None:
        """The next request line (headers and any body consumed), or None at end of stream."""
        line = reader.readline()
        if not line:
            return None
        length = 0
        while (header := reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        reader.read(length)
        with self._lock:
            self.requests.append(line.strip())
        return line

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(serve) -> RawServer:
        servers.append(RawServer(serve))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(params=["kernel", "python"])
def timeouts(request, monkeypatch) -> str:
    """Sockets with kernel timeouts, reads tried without waiting first; or Python's (off Linux)."""
    if request.param == "python":
        monkeypatch.setattr(stream, "_kernel_timeouts", lambda sock, seconds: False)
    return request.param


def answer(body: bytes = BODY, *, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


# -- keep-alive --------------------------------------------------------------------------------
def _one_answer_then_close_on_next_request(server, conn, reader):
    """Answer one request, keep the connection 'alive', close when the next one arrives."""
    if server.read_request(reader):
        conn.sendall(answer())
    server.read_request(reader)  # the next request is read, never answered


def test_a_stale_keepalive_connection_is_retried_once_on_a_fresh_one(raw_server):
    server = raw_server(_one_answer_then_close_on_next_request)
    client = HttpClient(FAST)
    for _ in range(4):
        assert client.get(f"{server.url}/x") == BODY
    assert client.stats["stale connection"] == 3
    assert client.stats["retries"] == 0 and client.stats["connection"] == 0
    assert server.accepted == 4


def test_a_post_is_never_sent_twice_on_a_stale_connection(raw_server):
    server = raw_server(_one_answer_then_close_on_next_request)
    client = HttpClient(FAST)
    assert client.get(f"{server.url}/x") == BODY
    with pytest.raises(RemoteError):  # the server may have acted on it: not repeated
        client.post(f"{server.url}/merge", b"[1, 2]")
    time.sleep(0.05)
    assert [r.split()[0] for r in server.requests] == [b"GET", b"POST"]


def _cut_answers(server, conn, reader):
    """Answer every request with a body cut short (Content-Length 100, 5 bytes sent)."""
    if server.read_request(reader):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")


def test_a_post_whose_answer_is_cut_is_not_sent_again(raw_server):
    server = raw_server(_cut_answers)
    client = HttpClient(FAST)
    with pytest.raises(TruncatedBodyError):  # the server acted on it: a merge is not repeated
        client.post(f"{server.url}/merge", b"[1, 2]")
    time.sleep(0.05)
    assert [r.split()[0] for r in server.requests] == [b"POST"]
    with pytest.raises(TruncatedBodyError):  # a GET is retried as configured
        client.get(f"{server.url}/x")
    time.sleep(0.05)
    assert [r.split()[0] for r in server.requests].count(b"GET") == FAST.retries + 1


def _one_answer_then_close(server, conn, reader):
    """Answer one request, then close the connection (without saying so in the answer)."""
    if server.read_request(reader):
        conn.sendall(answer())


def test_a_connection_closed_while_idle_is_replaced_before_use(raw_server, timeouts):
    server = raw_server(_one_answer_then_close)
    client = HttpClient(FAST)
    assert client.get(f"{server.url}/x") == BODY
    time.sleep(0.1)  # the server's close has arrived
    assert client.post(f"{server.url}/merge", b"[1, 2]") == BODY
    assert [r.split()[0] for r in server.requests] == [b"GET", b"POST"]
    assert client.stats["stale connection"] == 0 and client.stats["retries"] == 0


def _answers_then_junk(junk_delay: float | None):
    """Answer each request, then send a second, unasked-for answer (at once, or later)."""

    def serve(server, conn, reader):
        while server.read_request(reader):
            junk = answer(b"WRONG DATA", status="200 OK")
            if junk_delay is None:
                conn.sendall(answer() + junk)  # in the same write as the body
            else:
                conn.sendall(answer())
                time.sleep(junk_delay)
                conn.sendall(junk)

    return serve


@pytest.mark.parametrize("junk_delay", [None, 0.02], ids=["same write", "20 ms later"])
def test_bytes_after_an_answer_are_never_read_as_the_next_one(raw_server, junk_delay, timeouts):
    server = raw_server(_answers_then_junk(junk_delay))
    client = HttpClient(FAST)
    for _ in range(3):
        assert client.get(f"{server.url}/x") == BODY
        time.sleep(0.05)  # the late junk has arrived
    assert server.accepted == 3  # each dirty connection was dropped, not reused


def _keep_alive_slowly(server, conn, reader):
    while server.read_request(reader):
        time.sleep(0.02)
        conn.sendall(answer())


def test_the_pool_keeps_at_most_pool_size_connections(raw_server):
    server = raw_server(_keep_alive_slowly)
    client = HttpClient(dataclasses.replace(FAST, pool_size=2))
    url = f"{server.url}/x"
    with ThreadPoolExecutor(8) as pool:
        assert all(body == BODY for body in pool.map(lambda _: client.get(url), range(32)))
    assert server.accepted > 2  # the burst opened more than it keeps
    deadline = time.monotonic() + 2
    while server.open > 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.open == 2  # the rest were closed, not pooled
    opened = server.accepted
    for _ in range(10):
        assert client.get(url) == BODY
    assert server.accepted == opened  # serial requests reuse the pooled connections
    client.close()


# -- framing and truncation --------------------------------------------------------------------
def _serve_raw(payload: bytes, *, close: bool = True):
    def serve(server, conn, reader):
        while server.read_request(reader):
            conn.sendall(payload)
            if close:
                return

    return serve


def _chunked(body: bytes, size: int = 1000) -> bytes:
    out = b"".join(
        b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    )
    return out + b"0\r\nX-Trailer: 1\r\n\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
CUT = {
    "content-length short": b"HTTP/1.1 200 OK\r\nContent-Length: 10240\r\n\r\n" + BODY[:5000],
    "chunk cut": CHUNKED_HEAD + _chunked(BODY)[:5000],
    "last chunk missing": CHUNKED_HEAD + _chunked(BODY)[:-20],
    "gzip stream cut": answer(gzip.compress(BODY)[:-30], extra="Content-Encoding: gzip\r\n"),
    "headers cut": b"HTTP/1.1 200 OK\r\nContent-Len",
}


@pytest.mark.parametrize("case", CUT)
def test_a_cut_body_is_a_typed_error_never_data(raw_server, case):
    server = raw_server(_serve_raw(CUT[case]))
    client = HttpClient(FAST)
    with pytest.raises(RemoteError) as err:
        client.get(f"{server.url}/x")
    if case != "headers cut":
        assert isinstance(err.value, TruncatedBodyError)
    assert len(server.requests) == FAST.retries + 1


MALFORMED = {
    "non-ASCII length": b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",
    "non-ASCII status": b"HTTP/1.1 2\xb2\xb3 OK\r\nContent-Length: 2\r\n\r\nab",
    "unasked transfer coding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    + _chunked(gzip.compress(BODY)),
    "header line too long": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_answer_is_a_remote_error_never_data(raw_server, case):
    server = raw_server(_serve_raw(MALFORMED[case]))
    with pytest.raises(RemoteError):
        HttpClient(FAST).get(f"{server.url}/x")


def _stall_mid_body(server, conn, reader):
    """Send the head and half the body, then nothing for longer than the client waits."""
    big = BODY * 50
    if server.read_request(reader):
        conn.sendall(answer(big)[: len(big) // 2])
        time.sleep(2.0)


def _trickle(server, conn, reader):
    """Send a body in pieces, each arriving well within the read timeout."""
    while server.read_request(reader):
        whole = answer(BODY * 4)
        for at in range(0, len(whole), 8192):
            conn.sendall(whole[at : at + 8192])
            time.sleep(0.05)


def test_a_body_that_stops_arriving_times_out_and_one_that_trickles_does_not(raw_server, timeouts):
    quick = dataclasses.replace(FAST, read_timeout=0.3, retries=0)
    server = raw_server(_stall_mid_body)
    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError):
        HttpClient(quick).get(f"{server.url}/x")
    assert time.monotonic() - started < 1.5
    slow = raw_server(_trickle)  # 6 pieces, 0.05 s apart: 0.3 s in all, never 0.3 s of silence
    assert HttpClient(quick).get(f"{slow.url}/x") == BODY * 4


def test_chunked_with_a_content_length_is_read_then_the_connection_closed(raw_server):
    """Both framings at once (a smuggling pattern): chunked wins, the connection is not reused."""

    def serve(server, conn, reader):
        while server.read_request(reader):
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                + _chunked(BODY)
            )

    server = raw_server(serve)
    client = HttpClient(FAST)
    assert client.get(f"{server.url}/x") == BODY
    assert client.get(f"{server.url}/x") == BODY
    assert server.accepted == 2  # a fresh connection for the second request


def test_a_cut_body_without_length_is_unverified_then_refused(raw_server):
    """No Content-Length, cut by closing: get_confirmed asks HEAD, and refuses a short body."""

    def serve(server, conn, reader):
        line = server.read_request(reader)
        if line and line.startswith(b"HEAD"):
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode())
        elif line:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY[:5000])

    server = raw_server(serve)
    client = HttpClient(FAST)
    response = client.request("GET", f"{server.url}/x")
    assert response is not None and not response.verified and response.body == BODY[:5000]
    with pytest.raises(TruncatedBodyError):
        client.get_confirmed(f"{server.url}/x")
    with pytest.raises(RemoteError):  # a 200 to a Range request is sliced only if verified
        client.get(f"{server.url}/x", byte_range=(100, None))


def _deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


FRAMED = {
    "chunked": (CHUNKED_HEAD + _chunked(BODY), True),
    "http/1.0 close-delimited": (b"HTTP/1.0 200 OK\r\n\r\n" + BODY, False),
    "interim 100 skipped": (b"HTTP/1.1 100 Continue\r\n\r\n" + answer(), True),
    "gzip, two members": (
        answer(
            gzip.compress(BODY[:4000]) + gzip.compress(BODY[4000:]),
            extra="Content-Encoding: gzip\r\n",
        ),
        True,
    ),
    "deflate (zlib)": (answer(zlib.compress(BODY), extra="Content-Encoding: deflate\r\n"), True),
    "deflate (raw)": (answer(_deflate_raw(BODY), extra="Content-Encoding: deflate\r\n"), True),
    "gzip, chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunked(gzip.compress(BODY), 300),
        True,
    ),
}


@pytest.mark.parametrize("case", FRAMED)
def test_framings_and_content_encodings_are_read_whole(raw_server, case):
    payload, verified = FRAMED[case]
    server = raw_server(_serve_raw(payload, close=not verified))
    client = HttpClient(FAST)
    for _ in range(3):
        response = client.request("GET", f"{server.url}/x")
        assert response is not None and response.body == BODY
        assert response.verified is verified
    assert client.stats["retries"] == 0
    assert server.accepted == (1 if verified else 3)  # kept alive unless closed by the server


def test_headers_are_case_insensitive_and_retry_after_is_read(raw_server):
    server = raw_server(_serve_raw(answer(extra="X-Thing: a\r\nx-thing: b\r\n"), close=False))
    response = HttpClient(FAST).request("GET", f"{server.url}/x")
    assert response is not None
    assert response.headers["X-THING"] == "a, b" and "content-length" in response.headers


def test_urls_that_cannot_be_sent_fail_at_once(raw_server):
    server = raw_server(_serve_raw(answer(), close=False))
    client = HttpClient(FAST)
    for url in (f"{server.url}/a b", "ftp://host/x", "http:///x", "http://host:99999/x"):
        with pytest.raises(RemoteError):
            client.get(url)
    assert server.requests == [] and client.stats["retries"] == 0


# -- TLS ---------------------------------------------------------------------------------------
@pytest.fixture
def https_server(tmp_path):
    """A TLS server on 127.0.0.1 with a self-signed certificate for localhost; its cert file."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, cert_file
    server.shutdown()
    server.server_close()


def test_https_checks_the_certificate_and_keeps_connections_alive(https_server, monkeypatch):
    server, cert_file = https_server
    port = server.server_port
    with pytest.raises(RemoteError):  # not trusted
        HttpClient(FAST).get(f"https://localhost:{port}/x")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    client = HttpClient(FAST)
    for _ in range(3):
        assert client.get(f"https://localhost:{port}/x") == BODY
        assert client.get(f"https://localhost:{port}/x", byte_range=(0, 10)) == BODY[:10]
    assert client.stats["requests"] == 6 and client.stats["retries"] == 0


@pytest.mark.parametrize("size", [0, 1000, 3 * 2**20])
def test_request_bodies_arrive_whole(raw_server, size):
    sent = bytes(range(256)) * (size // 256)

    def serve(server, conn, reader):
        while line := reader.readline():
            headers = {}
            while (header := reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                headers[name.strip().lower()] = value.strip()
            got = reader.read(int(headers[b"content-length"]))
            conn.sendall(answer(b"same" if got == sent else b"different"))
            server.requests.append(line.strip())

    server = raw_server(serve)
    client = HttpClient(FAST)
    assert client.post(f"{server.url}/p", sent, idempotent=True) == b"same"
    assert client.request("GET", f"{server.url}/p", body=sent).body == b"same"
