"""The loopback folder server, checked with two independent clients (requests, urllib3)."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import urllib3

from napari_connecto.testing.chaos import Chaos, ChaosConfig
from napari_connecto.testing.http_server import HttpFolderServer, content_type_for

TIMEOUT = (2.0, 5.0)
POOL_TIMEOUT = urllib3.Timeout(connect=2.0, read=5.0)
SHORT_READ = urllib3.Timeout(connect=2.0, read=0.1)
DATA = os.urandom(5000)
SHARD = bytes(range(256)) * 64  # 16 KiB
INFO = {"@type": "neuroglancer_multiscale_volume", "data_type": "uint8"}
JSON_FILES = ["info", "a/.zarray", "a/.zattrs", "a/.zgroup", "n5/attributes.json", "z/zarr.json"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "served"
    for name in JSON_FILES:
        (served / name).parent.mkdir(parents=True, exist_ok=True)
        (served / name).write_text(json.dumps(INFO))
    (served / "img" / "8_8_8").mkdir(parents=True)
    (served / "img" / "8_8_8" / "0-64_0-64_0-64").write_bytes(DATA)
    (served / "img" / "8_8_8" / "0.shard").write_bytes(SHARD)
    (served / "img" / "empty").write_bytes(b"")
    (served / "with space%.bin").write_bytes(b"spaced")
    (served / "gz").mkdir()
    (served / "gz" / "chunk.gz").write_bytes(gzip.compress(DATA))
    (served / "gz" / "info.gz").write_bytes(gzip.compress(json.dumps(INFO).encode()))
    (served / "gz" / "both").write_bytes(b"plain")
    (served / "gz" / "both.gz").write_bytes(gzip.compress(b"zipped"))
    (tmp_path / "secret.txt").write_bytes(b"SECRET outside the root")
    (served / "escape").symlink_to(tmp_path / "secret.txt")
    (served / "inside").symlink_to(served / "img" / "8_8_8" / "0.shard")
    return served


@pytest.fixture
def server(root: Path) -> Iterator[HttpFolderServer]:
    with HttpFolderServer(root) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        yield client


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    with urllib3.PoolManager(retries=False, timeout=POOL_TIMEOUT) as client:
        yield client


def _raw(server: HttpFolderServer, method: str, target: str) -> tuple[int, bytes]:
    """A request with the target sent byte for byte (clients normalise ``..``)."""
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- files ---------------------------------------------------------------------------------


def test_get_bodies_with_both_clients(
    server: HttpFolderServer, session: requests.Session, pool: urllib3.PoolManager
) -> None:
    url = f"{server.url}/img/8_8_8/0-64_0-64_0-64"
    for _ in range(3):  # keep-alive: several requests on one connection
        response = session.get(url, timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == DATA
        assert response.headers["Content-Length"] == str(len(DATA))
    answer = pool.request("GET", url)
    assert answer.status == 200 and answer.data == DATA
    assert session.get(f"{server.url}/info", timeout=TIMEOUT).json() == INFO
    assert session.get(f"{server.url}/with%20space%25.bin", timeout=TIMEOUT).content == b"spaced"
    assert session.get(f"{server.url}/info?alt=media", timeout=TIMEOUT).json() == INFO


@pytest.mark.parametrize("name", JSON_FILES)
def test_metadata_is_json(server: HttpFolderServer, pool: urllib3.PoolManager, name: str) -> None:
    answer = pool.request("GET", f"{server.url}/{name}")
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.data) == INFO


def test_content_type_for() -> None:
    assert content_type_for("info") == "application/json"
    assert content_type_for("x.json") == "application/json"
    assert content_type_for("0.0.0") == "application/octet-stream"
    assert content_type_for("information") == "application/octet-stream"


@pytest.mark.parametrize("path", ["/missing", "/img/8_8_8/9-9_9-9_9-9", "/img", "/img/", "/"])
def test_missing_files_and_folders_are_404(
    server: HttpFolderServer, session: requests.Session, pool: urllib3.PoolManager, path: str
) -> None:
    response = session.get(server.url + path, timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/plain")
    assert b"Not Found" in response.content
    assert pool.request("GET", server.url + path).status == 404


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/../secret.txt", 403),
        ("/img/../../secret.txt", 403),
        ("/%2e%2e/secret.txt", 403),
        ("/img/..%2f..%2fsecret.txt", 403),
        ("/./info", 403),
        ("/img\\..\\..\\secret.txt", 403),
        ("/escape", 403),  # a symlink leaving the root
        (f"/{Path('/etc/passwd').as_posix()}", 404),  # '//etc/passwd' stays inside the root
        ("/%2Fetc%2Fpasswd", 404),
        ("/info%00.json", 403),
    ],
)
def test_traversal_is_refused(server: HttpFolderServer, target: str, status: int) -> None:
    code, body = _raw(server, "GET", target)
    assert code == status
    assert b"SECRET" not in body and b"root:" not in body


def test_symlink_inside_root_is_served(server: HttpFolderServer, session: requests.Session) -> None:
    assert session.get(f"{server.url}/inside", timeout=TIMEOUT).content == SHARD


def test_head_has_headers_only(server: HttpFolderServer, pool: urllib3.PoolManager) -> None:
    answer = pool.request("HEAD", f"{server.url}/img/8_8_8/0.shard")
    assert answer.status == 200 and answer.data == b""
    assert answer.headers["Content-Length"] == str(len(SHARD))
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert pool.request("HEAD", f"{server.url}/missing").status == 404
    assert pool.request("GET", f"{server.url}/info").status == 200  # connection still in sync


def test_writes_are_refused(server: HttpFolderServer, session: requests.Session) -> None:
    response = session.put(f"{server.url}/info", data=b"{}", timeout=TIMEOUT)
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"
    assert json.loads((server.root / "info").read_text()) == INFO


# -- ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "span"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=100-100", (100, 101)),
        ("bytes=16000-", (16000, 16384)),
        ("bytes=-16", (16368, 16384)),
        ("bytes=-99999", (0, 16384)),
        ("bytes=16380-99999", (16380, 16384)),
    ],
)
def test_single_range_is_206(
    server: HttpFolderServer,
    session: requests.Session,
    pool: urllib3.PoolManager,
    spec: str,
    span: tuple[int, int],
) -> None:
    start, stop = span
    url = f"{server.url}/img/8_8_8/0.shard"
    response = session.get(url, headers={"Range": spec}, timeout=TIMEOUT)
    assert response.status_code == 206
    assert response.content == SHARD[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(SHARD)}"
    assert response.headers["Content-Length"] == str(stop - start)
    answer = pool.request("GET", url, headers={"Range": spec})
    assert answer.status == 206 and answer.data == SHARD[start:stop]
    head = pool.request("HEAD", url, headers={"Range": spec})
    assert head.status == 206 and head.headers["Content-Length"] == str(stop - start)


@pytest.mark.parametrize(
    ("path", "spec", "size"),
    [
        ("img/8_8_8/0.shard", "bytes=16384-", 16384),
        ("img/8_8_8/0.shard", "bytes=99999-100000", 16384),
        ("img/8_8_8/0.shard", "bytes=-0", 16384),
        ("img/empty", "bytes=0-0", 0),
        ("img/empty", "bytes=-5", 0),
    ],
)
def test_unsatisfiable_range_is_416(
    server: HttpFolderServer, pool: urllib3.PoolManager, path: str, spec: str, size: int
) -> None:
    answer = pool.request("GET", f"{server.url}/{path}", headers={"Range": spec})
    assert answer.status == 416
    assert answer.headers["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    "spec",
    ["bytes=0-1,5-6", "bytes=abc", "bytes=5-2", "items=0-1", "bytes=-", "bytes=0x1-2", "0-5"],
)
def test_multiple_or_malformed_ranges_get_the_full_body(
    server: HttpFolderServer, session: requests.Session, spec: str
) -> None:
    url = f"{server.url}/img/8_8_8/0.shard"
    response = session.get(url, headers={"Range": spec}, timeout=TIMEOUT)
    assert response.status_code == 200 and response.content == SHARD
    assert "Content-Range" not in response.headers


# -- gzip mode -----------------------------------------------------------------------------


def test_gzip_suffix_mode(root: Path, pool: urllib3.PoolManager) -> None:
    with HttpFolderServer(root, gzip_suffix=True) as server, requests.Session() as session:
        response = session.get(f"{server.url}/gz/chunk", timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == DATA  # decoded by requests
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"] == "application/octet-stream"
        raw = pool.request("GET", f"{server.url}/gz/chunk", decode_content=False)
        assert raw.data == (root / "gz" / "chunk.gz").read_bytes()
        info = pool.request("GET", f"{server.url}/gz/info")
        assert info.headers["Content-Type"] == "application/json"
        assert json.loads(info.data) == INFO
        assert session.get(f"{server.url}/gz/both", timeout=TIMEOUT).content == b"plain"
        stored = (root / "gz" / "chunk.gz").read_bytes()
        part = pool.request(
            "GET", f"{server.url}/gz/chunk", headers={"Range": "bytes=0-9"}, decode_content=False
        )
        assert part.status == 206 and part.data == stored[:10]  # ranges of the stored bytes
        assert session.get(f"{server.url}/gz/missing", timeout=TIMEOUT).status_code == 404


def test_without_gzip_suffix_mode_only_the_gz_name_exists(
    server: HttpFolderServer, pool: urllib3.PoolManager
) -> None:
    assert pool.request("GET", f"{server.url}/gz/chunk").status == 404
    answer = pool.request("GET", f"{server.url}/gz/chunk.gz", decode_content=False)
    assert answer.status == 200 and "Content-Encoding" not in answer.headers
    assert gzip.decompress(answer.data) == DATA


# -- latency and faults --------------------------------------------------------------------


def test_latency_is_applied(root: Path, pool: urllib3.PoolManager) -> None:
    latency = 0.15
    with HttpFolderServer(root, ChaosConfig(latency_seconds=latency)) as server:
        for path in ("/info", "/missing"):
            started = time.monotonic()
            answer = pool.request("GET", server.url + path)
            assert time.monotonic() - started >= latency
            assert answer.status in (200, 404)
        assert server.chaos.config.latency_seconds == latency


def test_503_at_rate_one(root: Path, pool: urllib3.PoolManager) -> None:
    with HttpFolderServer(root, ChaosConfig(rate=1.0, kinds=("503",))) as server:
        assert requests.get(f"{server.url}/info", timeout=TIMEOUT).status_code == 503
        assert pool.request("GET", f"{server.url}/info").status == 503
        assert server.chaos.injected["503"] == 2


def test_truncate_at_rate_one(root: Path, pool: urllib3.PoolManager) -> None:
    url_path = "/img/8_8_8/0-64_0-64_0-64"
    with HttpFolderServer(root, ChaosConfig(rate=1.0, kinds=("truncate",))) as server:
        response = requests.get(server.url + url_path, timeout=TIMEOUT)
        assert response.status_code == 200  # the trap the clients must guard against
        assert "Content-Length" not in response.headers
        assert 0 < len(response.content) < len(DATA)
        assert DATA.startswith(response.content)
        answer = pool.request("GET", server.url + url_path)
        assert answer.status == 200 and len(answer.data) < len(DATA)
        assert server.bytes_sent == 2 * (len(DATA) // 2)


def test_reset_at_rate_one(root: Path, pool: urllib3.PoolManager) -> None:
    with HttpFolderServer(root, ChaosConfig(rate=1.0, kinds=("reset",))) as server:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/info", timeout=TIMEOUT)
        with pytest.raises(urllib3.exceptions.ProtocolError):
            pool.request("GET", f"{server.url}/info")
        assert server.chaos.injected["reset"] == 2
        assert server.requests == 2


def test_stall_at_rate_one(root: Path, pool: urllib3.PoolManager) -> None:
    config = ChaosConfig(rate=1.0, kinds=("stall",), stall_seconds=0.5)
    with HttpFolderServer(root, config) as server:
        with pytest.raises(requests.ReadTimeout):
            requests.get(f"{server.url}/info", timeout=(2.0, 0.1))
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            pool.request("GET", f"{server.url}/info", timeout=SHORT_READ)
        server.set_chaos(None)
        assert requests.get(f"{server.url}/info", timeout=TIMEOUT).json() == INFO


def test_seeded_schedule_is_reproducible(root: Path) -> None:
    config = ChaosConfig(rate=0.5, seed=42, kinds=("503",))
    reference = Chaos(config)
    expected = [503 if reference.draw() else 200 for _ in range(24)]
    runs = []
    for _ in range(2):
        with HttpFolderServer(root, config) as server, requests.Session() as session:
            runs.append(
                [session.get(f"{server.url}/info", timeout=TIMEOUT).status_code for _ in range(24)]
            )
    assert runs[0] == runs[1] == expected
    assert 0 < expected.count(503) < 24


def test_counters(server: HttpFolderServer, session: requests.Session) -> None:
    for _ in range(3):
        session.get(f"{server.url}/info", timeout=TIMEOUT)
    session.get(f"{server.url}/img/8_8_8/0.shard", headers={"Range": "bytes=0-99"}, timeout=TIMEOUT)
    session.head(f"{server.url}/img/8_8_8/0.shard", timeout=TIMEOUT)
    session.get(f"{server.url}/missing?x=1", timeout=TIMEOUT)
    info_size = (server.root / "info").stat().st_size
    assert server.requests == 6 == server.chaos.requests
    assert server.paths == {"/info": 3, "/img/8_8_8/0.shard": 2, "/missing": 1}
    assert server.bytes_sent == 3 * info_size + 100 + len(b"404 Not Found\n")
    server.reset_counters()
    assert (server.requests, server.bytes_sent, server.paths) == (0, 0, {})
    chaos = server.set_chaos(ChaosConfig(rate=1.0, kinds=("503",)))
    assert server.chaos is chaos and chaos.requests == 0
    assert session.get(f"{server.url}/info", timeout=TIMEOUT).status_code == 503
    assert chaos.injected == {"503": 1} and server.requests == 1


def _fetch_until_whole(session: requests.Session, url: str, expected: bytes) -> int:
    """GET until the body is complete and correct; return how many attempts it took."""
    for attempt in range(1, 200):
        try:
            response = session.get(url, timeout=(2.0, 0.1))
        except requests.RequestException:
            continue
        if response.status_code == 200 and response.content == expected:
            return attempt
    raise AssertionError(f"{url} never came back whole")


def test_server_stays_healthy_after_many_faults(
    root: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    files = {
        "/img/8_8_8/0-64_0-64_0-64": DATA,
        "/img/8_8_8/0.shard": SHARD,
        "/info": (root / "info").read_bytes(),
    }
    config = ChaosConfig(rate=0.6, seed=5, stall_seconds=0.15)
    with HttpFolderServer(root, config) as server:
        with requests.Session() as session:
            attempts = [
                _fetch_until_whole(session, server.url + path, body)
                for _ in range(7)
                for path, body in files.items()
            ]
        assert max(attempts) > 1  # some fetches really were faulted
        assert sum(server.chaos.injected.values()) >= 20
        assert set(server.chaos.injected) == {"503", "stall", "truncate", "reset"}
        server.set_chaos(None)

        def fetch(path: str) -> bool:
            with requests.Session() as own:
                return all(
                    own.get(server.url + path, timeout=TIMEOUT).content == files[path]
                    for _ in range(5)
                )

        with ThreadPoolExecutor(8) as workers:
            assert all(workers.map(fetch, list(files) * 8))
    time.sleep(0.25)  # stalled handlers wake up and find their clients gone
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- life cycle and command line -----------------------------------------------------------


def test_life_cycle(root: Path, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        HttpFolderServer(tmp_path / "nowhere")
    server = HttpFolderServer(root)
    with pytest.raises(RuntimeError):
        _ = server.url
    url = server.start()
    assert url == server.url and url.startswith("http://127.0.0.1:")
    assert server.start() == url  # idempotent
    with requests.Session() as session:
        assert session.get(f"{url}/info", timeout=TIMEOUT).status_code == 200
        server.stop()
        server.stop()
        with pytest.raises(requests.ConnectionError):  # kept-alive connection dropped too
            session.get(f"{url}/info", timeout=TIMEOUT)


def _read_line(process: subprocess.Popen[str], seconds: float) -> str:
    """The first stdout line of a process, or fail after ``seconds``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    assert ready, "the server printed no URL"
    return process.stdout.readline().strip()


def test_cli_serves_and_stops(root: Path) -> None:
    command = [sys.executable, "-m", "napari_connecto.testing.http_server", str(root)]
    command += ["--latency", "0.01", "--chaos", "1", "--seed", "3", "--kinds", "503"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = _read_line(process, 20)
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/info", timeout=TIMEOUT).status_code == 503
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_cli_plain(root: Path) -> None:
    command = [sys.executable, "-m", "napari_connecto.testing.http_server", str(root)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = _read_line(process, 20)
        response = requests.get(f"{url}/img/8_8_8/0-64_0-64_0-64", timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == DATA
    finally:
        process.terminate()
        process.communicate(timeout=10)
