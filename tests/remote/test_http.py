"""The shared HTTP transport against real loopback servers: retries, checks, limits."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from napari_connecto.errors import (
    RemoteError,
    RemoteTimeoutError,
    ServerBusyError,
    TruncatedBodyError,
)
from napari_connecto.remote.http import HttpClient, HttpConfig
from napari_connecto.remote.store import HttpStore, https_url
from napari_connecto.testing.chaos import ChaosConfig

FAST = HttpConfig(read_timeout=0.5, backoff_base=0.005, backoff_max=0.05, retries=6)


@pytest.fixture
def folder(tmp_path, serve):
    data = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    (tmp_path / "blob").write_bytes(data)
    return serve(tmp_path), data


class _Scripted(BaseHTTPRequestHandler):
    """Answers from a per-server script: a list of (status, headers, body) popped per request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        self.server.seen.append((self.command, self.path))
        status, headers, body = (
            self.server.script.pop(0) if self.server.script else (200, {}, b"ok")
        )
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer()

    def do_HEAD(self):
        self._answer()

    def do_POST(self):  # consumes the body first
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.script, server.seen = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_plain_get_range_and_missing(folder):
    server, data = folder
    client = HttpClient(FAST)
    assert client.get(f"{server.url}/blob") == data
    assert client.get(f"{server.url}/blob", byte_range=(100, 50)) == data[100:150]
    assert client.get(f"{server.url}/blob", byte_range=(-10, None)) == data[-10:]
    assert client.get(f"{server.url}/blob", byte_range=(49_990, None)) == data[49_990:]
    assert client.get(f"{server.url}/nothing", allow_missing=True) is None
    with pytest.raises(RemoteError) as err:
        client.get(f"{server.url}/nothing")
    assert err.value.status == 404


@pytest.mark.parametrize("kind", ["503", "stall", "truncate", "reset"])
def test_each_fault_is_retried_until_the_body_is_whole(folder, kind):
    server, data = folder
    server.set_chaos(ChaosConfig(rate=0.5, seed=1, kinds=(kind,), stall_seconds=1.0))
    client = HttpClient(FAST)
    for _ in range(8):
        assert client.get_confirmed(f"{server.url}/blob") == data
        assert client.get(f"{server.url}/blob", byte_range=(1000, 2000)) == data[1000:3000]
    assert server.chaos.injected[kind] >= 2
    repeated = client.stats["retries"] + client.stats["unverified body"]
    assert repeated >= 2  # (a faulted HEAD, asked for a length, is not repeated)


def test_fetch_retries_an_unverified_body_that_does_not_decode(folder):
    server, data = folder
    server.set_chaos(ChaosConfig(rate=0.6, seed=2, kinds=("truncate",)))
    client = HttpClient(FAST)

    def decode(body: bytes) -> bytes:
        if len(body) != len(data):
            raise ValueError("wrong size")
        return body

    for _ in range(6):
        assert client.fetch(f"{server.url}/blob", decode) == data
    assert client.stats["unverified body"] >= 1


def test_a_verified_body_that_does_not_decode_is_not_retried(folder):
    server, _ = folder
    client = HttpClient(FAST)
    calls = []

    def decode(body: bytes) -> bytes:
        calls.append(1)
        raise ValueError("corrupt on the server")

    with pytest.raises(ValueError, match="corrupt"):
        client.fetch(f"{server.url}/blob", decode)
    assert len(calls) == 1


def test_persistent_faults_raise_typed_errors(folder):
    server, _ = folder
    client = HttpClient(
        HttpConfig(read_timeout=0.3, backoff_base=0.001, backoff_max=0.01, retries=2)
    )
    server.set_chaos(ChaosConfig(rate=1.0, kinds=("503",)))
    with pytest.raises(ServerBusyError) as busy:
        client.get(f"{server.url}/blob")
    assert busy.value.status == 503
    server.set_chaos(ChaosConfig(rate=1.0, kinds=("stall",), stall_seconds=1.0))
    with pytest.raises(RemoteTimeoutError):
        client.get(f"{server.url}/blob")
    server.set_chaos(ChaosConfig(rate=1.0, kinds=("truncate",)))
    with pytest.raises(TruncatedBodyError):
        client.get(f"{server.url}/blob", byte_range=(0, 1000))


def test_retry_after_is_honoured_and_400_is_not_retried(scripted):
    server, url = scripted
    client = HttpClient(FAST)
    server.script[:] = [(429, {"Retry-After": "0.01"}, b"slow down"), (200, {}, b"done")]
    assert client.get(f"{url}/x") == b"done"
    server.script[:] = [(400, {}, b"Bad API call (/api/x).")]
    with pytest.raises(RemoteError) as err:
        client.get(f"{url}/x")
    assert err.value.status == 400 and "Bad API call" in err.value.problem
    assert len(server.seen) == 3


def test_a_non_idempotent_post_is_retried_only_when_refused(scripted):
    server, url = scripted
    client = HttpClient(FAST)
    server.script[:] = [(503, {}, b"busy"), (200, {}, b'{"MutationID": 1}')]
    assert client.post(f"{url}/merge", b"[1, 2]") == b'{"MutationID": 1}'
    server.script[:] = [(500, {}, b"oops"), (200, {}, b"again")]
    with pytest.raises(RemoteError) as err:  # the server may have acted: never repeated
        client.post(f"{url}/merge", b"[1, 2]")
    assert err.value.status == 500
    assert [m for m, _ in server.seen] == ["POST"] * 3


def test_redirects_stay_on_their_origin(scripted, folder):
    server, url = scripted
    other, data = folder
    client = HttpClient(FAST)
    server.script[:] = [(302, {"Location": "/moved"}, b""), (200, {}, b"here")]
    assert client.get(f"{url}/x") == b"here"
    server.script[:] = [(302, {"Location": f"{other.url}/blob"}, b"")]
    with pytest.raises(RemoteError, match="another host"):
        client.get(f"{url}/x")


def test_tokens_never_appear_in_errors(scripted):
    server, url = scripted
    server.script[:] = [(403, {}, b"forbidden")]
    with pytest.raises(RemoteError) as err:
        HttpClient(FAST).get(f"{url}/x?token=SECRET")
    assert "SECRET" not in str(err.value)


def test_unreachable_server_fails_fast():
    client = HttpClient(FAST)
    with pytest.raises(RemoteError, match=r"127\.0\.0\.1:9"):
        client.get("http://127.0.0.1:9/x")
    assert client.stats["requests"] == FAST.connect_retries + 1


def test_keys_cannot_leave_the_dataset(folder):
    server, _ = folder
    store = HttpStore(server.url)
    for key in ("../etc/passwd", "a/../../b", "/abs", "http://evil/x"):
        with pytest.raises(Exception, match="escapes"):
            store.key_url(key)


def test_bucket_urls_map_to_public_endpoints():
    assert https_url("gs://bucket/a/b") == "https://storage.googleapis.com/bucket/a/b"
    assert https_url("s3://bucket/a/b") == "https://bucket.s3.amazonaws.com/a/b"
    assert https_url("https://host/x") == "https://host/x"
