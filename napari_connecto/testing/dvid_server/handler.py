"""Routing of ``/api/...`` requests and the HTTP request handler.

Routing follows ``server/web.go``: ``/api/server/*``, ``/api/repos``,
``/api/repo/{uuid}/{action}``, ``/api/node/{uuid}/{action}`` and
``/api/node/{uuid}/{data}/{keyword}/...``. The UUID is resolved (400 if
unknown) before the action is looked at; writes to locked nodes are refused
there too. Every answer, errors included, goes through
:func:`napari_connecto.testing.chaos.respond`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from napari_connecto.testing.chaos import respond
from napari_connecto.testing.dvid_server.instances import TYPES, Config, Ctx
from napari_connecto.testing.dvid_server.protocol import (
    TEXT,
    BadAPIRequest,
    BadRequest,
    HTTPStatus,
    Request,
    Response,
    Throttle,
    json_response,
)

if TYPE_CHECKING:
    from napari_connecto.testing.chaos import Chaos
    from napari_connecto.testing.dvid_server.repo import Repo, RepoManager

__all__ = ["DVID_VERSION", "DvidApp", "DvidRequestHandler"]

_log = logging.getLogger(__name__)

DVID_VERSION = "v1.0.0-napari-connecto-testserver"
"""What ``"DVID Version"`` reports."""
DATASTORE_VERSION = "0.10.0"
NOT_FOUND = Response(404, b"404 page not found\n", TEXT, {"X-Content-Type-Options": "nosniff"})


def _not_allowed() -> Response:
    return Response(405, b"Method Not Allowed\n", TEXT)


def _go_duration(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.6f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


class DvidApp:
    """The server's state and router (everything but the sockets).

    Parameters
    ----------
    manager : RepoManager
        Repos and DAGs.
    throttle_limit : int
        Maximum concurrent ``throttle=true`` operations.
    """

    def __init__(self, manager: RepoManager, throttle_limit: int = 1) -> None:
        self.manager = manager
        self.lock = threading.RLock()
        self.throttle = Throttle(throttle_limit)
        self.started = time.time()
        self.host = "127.0.0.1"

    # -- top level --------------------------------------------------------------------------

    def route(self, req: Request) -> Response:
        """Answer one request (errors raised as exceptions are formatted by the caller)."""
        parts = req.parts if req.path.startswith("/api/") else []
        fixed = {
            ("heartbeat",): self._heartbeat,
            ("repos",): self._new_repo,
            ("repos", "info"): self._repos_info,
        }.get(tuple(parts))
        if fixed is not None:
            return fixed(req)
        if len(parts) == 2 and parts[0] == "server":
            return self._server(req, parts[1])
        scoped = self._scoped(parts)
        if scoped is None:
            return NOT_FOUND
        with self.lock:
            return scoped(req, parts)

    def _scoped(self, parts: list[str]) -> Callable[[Request, list[str]], Response] | None:
        kind, depth = (parts[0] if parts else ""), len(parts)
        if kind == "repo" and 2 <= depth <= 4:
            return self._repo
        if kind == "node" and depth == 3:
            return self._node
        if kind == "node" and depth >= 4:
            return self._instance
        return None

    @staticmethod
    def _heartbeat(req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return _not_allowed()
        return Response(200, b"OK", "text/plain")

    def _repos_info(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return _not_allowed()
        with self.lock:
            return json_response(
                {r.root: self.manager.repo_json(r) for r in self.manager.repos.values()}
            )

    def _server(self, req: Request, action: str) -> Response:
        if action not in ("info", "types", "compiled-types", "note"):
            return NOT_FOUND
        if req.method not in ("GET", "HEAD"):
            return _not_allowed()
        if action == "note":
            return Response(200, b"", "text/plain")
        if action == "info":
            return json_response(self.server_info())
        with self.lock:
            if action == "types":
                used = {
                    i.typename for r in self.manager.repos.values() for i in r.instances.values()
                }
            else:
                used = set(TYPES)
        return json_response({name: TYPES[name].type_url for name in sorted(used)})

    def server_info(self) -> dict[str, str]:
        """``GET /api/server/info``: a flat object of strings."""
        now = time.time()
        cores = str(os.cpu_count() or 1)
        return {
            "Cores": cores,
            "Maximum Cores": cores,
            "Datastore Version": DATASTORE_VERSION,
            "DVID Version": DVID_VERSION,
            "Storage backend": "in-memory (napari-connecto test server)",
            "Server time": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(now)),
            "Server uptime": _go_duration(now - self.started),
            "RPC Address": "",
            "Host": self.host,
            "Note": "napari-connecto DVID test server",
            "TOML location": "",
        }

    def _new_repo(self, req: Request) -> Response:
        if req.method != "POST":
            return NOT_FOUND
        body = req.json_body("request")
        if not isinstance(body, dict):
            raise BadRequest("Error decoding POSTed JSON config for 'new': not an object")
        cfg = Config(body)
        alias, description = cfg.string("alias", "") or "", cfg.string("description", "") or ""
        with self.lock:
            repo = self.manager.new_repo(alias, description, cfg.string("root"))
        return Response(200, f'{{"root": "{repo.root}"}}'.encode(), "application/json")

    # -- repo -------------------------------------------------------------------------------

    def _repo(self, req: Request, parts: list[str]) -> Response:
        node_uuid, _ = self.manager.match(parts[1])
        repo = self.manager.repo_of(node_uuid)
        if len(parts) == 2:
            if req.method != "HEAD":
                return NOT_FOUND
            text = f"Repo available with root UUID {repo.root}\n"
            return Response(200, text.encode(), "text/plain")
        actions: dict[tuple[str, int], dict[str, Callable[[], Response]]] = {
            ("info", 3): {
                "GET": lambda: json_response(self.manager.repo_json(repo)),
                "POST": lambda: self._set_repo_info(req, repo),
            },
            ("instance", 3): {"POST": lambda: self._new_instance(req, node_uuid)},
            ("branch-versions", 4): {
                "GET": lambda: json_response(self.manager.branch_versions(repo, parts[-1]))
            },
            ("log", 3): {
                "GET": lambda: json_response({"log": repo.log}),
                "POST": lambda: self._add_repo_log(req, repo),
            },
        }
        by_method = actions.get((parts[2], len(parts)))
        if by_method is None:
            return NOT_FOUND
        fn = by_method.get("GET" if req.method == "HEAD" else req.method)
        return fn() if fn is not None else _not_allowed()

    @staticmethod
    def _set_repo_info(req: Request, repo: Repo) -> Response:
        cfg = Config(req.json_body("config") or {})
        repo.alias = cfg.string("alias", repo.alias) or ""
        repo.description = cfg.string("description", repo.description) or ""
        return Response()

    def _add_repo_log(self, req: Request, repo: Repo) -> Response:
        repo.add_log(self._log_body(req))
        return Response()

    @staticmethod
    def _log_body(req: Request) -> list[str]:
        body = req.json_body("request")
        if not isinstance(body, dict) or "log" not in body:
            raise BadRequest("Could not find 'log' value in POSTed JSON.")
        return [str(m) for m in body["log"]]

    def _new_instance(self, req: Request, node_uuid: str) -> Response:
        _, node = self.manager.node(node_uuid)
        if node.locked:
            raise BadRequest(f"New data instance cannot be created on locked node {node_uuid}")
        body = req.json_body("config")
        if not isinstance(body, dict):
            raise BadRequest("Error decoding POSTed JSON config for 'new': not an object")
        cfg = Config(body)
        typename, dataname = cfg.string("typename"), cfg.string("dataname")
        if not typename:
            raise BadRequest("POST on repo endpoint requires specification of valid 'typename'")
        if not dataname:
            raise BadRequest("POST on repo endpoint requires specification of valid 'dataname'")
        self.add_instance(node_uuid, typename, dataname, cfg)
        text = f'{{"result": "Added {dataname} [{typename}] to node {node_uuid}"}}'
        return Response(200, text.encode(), "application/json")

    def add_instance(self, node_uuid: str, typename: str, dataname: str, cfg: Config) -> Any:
        """Create a data instance in the repo of ``node_uuid``."""
        repo = self.manager.repo_of(node_uuid)
        cls = TYPES.get(typename)
        if cls is None:
            raise BadRequest(f"Data type {typename!r} is not supported in current DVID executable")
        if dataname in repo.instances:
            raise BadRequest(f"Data named {dataname!r} already exists in repo (root {repo.root})")
        if dataname in ("log", "branch", "note", "commit", "newversion", "status", "tag", "info"):
            raise BadRequest(f"cannot use reserved name {dataname!r}")
        inst = cls(self.manager, repo, dataname, cfg)
        sync = cfg.string("sync")
        if sync:
            inst.syncs = [s for s in sync.split(",") if s]
        repo.instances[dataname] = inst
        what = f"New data instance {json.dumps(dataname)} of type {json.dumps(typename)}"
        repo.add_log([f"{what} with config {cfg.raw()}"])
        return inst

    # -- node -------------------------------------------------------------------------------

    def _node(self, req: Request, parts: list[str]) -> Response:
        node_uuid, _ = self.manager.match(parts[1])
        _, node = self.manager.node(node_uuid)
        action = parts[2]
        get = req.method in ("GET", "HEAD")
        if node.locked and not get and action not in ("branch", "newversion", "tag"):
            raise BadRequest(f"Cannot do {req.method.lower()} on locked node {node_uuid}")
        handlers: dict[str, tuple[Callable[[], Response] | None, Callable[[], Response] | None]] = {
            "commit": (
                lambda: json_response({"Locked": node.locked}),
                lambda: self._commit(req, node_uuid),
            ),
            "status": (lambda: json_response({"Locked": node.locked}), None),
            "note": (lambda: json_response({"note": node.note}), lambda: self._set_note(req, node)),
            "log": (lambda: json_response({"log": node.log}), lambda: self._node_log(req, node)),
            "newversion": (None, lambda: self._child(req, node_uuid, branch=False)),
            "branch": (None, lambda: self._child(req, node_uuid, branch=True)),
        }
        if action not in handlers:
            return NOT_FOUND
        on_get, on_post = handlers[action]
        fn = on_get if get else on_post if req.method == "POST" else None
        return fn() if fn is not None else _not_allowed()

    def _commit(self, req: Request, node_uuid: str) -> Response:
        body = req.json_body("request") if req.body else {}
        if not isinstance(body, dict):
            raise BadRequest("Malformed JSON request in body: not an object")
        self.manager.commit(
            node_uuid, str(body.get("note", "")), [str(m) for m in body.get("log") or []]
        )
        return Response(200, f'{{"committed": "{node_uuid}"}}'.encode(), "application/json")

    def _child(self, req: Request, node_uuid: str, branch: bool) -> Response:
        body = req.json_body("request") if req.body else {}
        if not isinstance(body, dict):
            raise BadRequest("Malformed JSON request in body: not an object")
        name = str(body.get("branch", ""))
        if branch and name in ("", "master"):
            raise BadRequest("Cannot create a master branch")
        child = self.manager.new_version(
            node_uuid, str(body.get("note", "")), name if branch else ""
        )
        return Response(200, f'{{"child": "{child}"}}'.encode(), "application/json")

    @staticmethod
    def _set_note(req: Request, node: Any) -> Response:
        body = req.json_body("request")
        if not isinstance(body, dict) or "note" not in body:
            raise BadRequest("Could not find 'note' value in POSTed JSON.")
        node.note = str(body["note"])
        return Response()

    def _node_log(self, req: Request, node: Any) -> Response:
        msgs = self._log_body(req)
        node.log.extend(msgs)
        return Response()

    # -- instances --------------------------------------------------------------------------

    def _instance(self, req: Request, parts: list[str]) -> Response:
        node_uuid, version = self.manager.match(parts[1])
        repo, node = self.manager.node(node_uuid)
        inst = repo.instances.get(parts[2])
        if inst is None:
            raise BadRequest("invalid data instance name")
        keyword = parts[3]
        if inst.versioned and node.locked and inst.is_mutation(req.method, keyword):
            raise BadRequest(
                f'Cannot do {req.method} on endpoint "{keyword}" of locked node {node_uuid}'
            )
        ctx = Ctx(
            node_uuid,
            version,
            inst.ancestry(version),
            repo,
            self.throttle,
            req.query.get("u", ""),
            req.query.get("app", ""),
        )
        if not inst.versioned:
            ctx.version = ctx.ancestry[0]
        return inst.serve(req, ctx)


def format_error(req: Request, exc: Exception, host: str = "127.0.0.1") -> Response:
    """The answer DVID sends for a raised error."""
    if isinstance(exc, HTTPStatus):
        return Response(
            exc.status, exc.body, exc.content_type, {"X-Content-Type-Options": "nosniff"}
        )
    if isinstance(exc, BadAPIRequest):
        msg = (
            f"Bad API call ({req.path}) for data {json.dumps(exc.dataname)}.  "
            f"See API help at http://{host}/api/help/{exc.typename}"
        )
    else:
        msg = f"{exc.message if isinstance(exc, BadRequest) else exc} ({req.path})."
    return Response(400, (msg + "\n").encode(), TEXT, {"X-Content-Type-Options": "nosniff"})


class DvidRequestHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection of the DVID test server (keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "DVID-test-server"
    timeout = 60

    app: DvidApp
    chaos_source: Callable[[], Chaos]

    def log_message(self, format: str, *args: Any) -> None:
        """Route the stdlib access log to :mod:`logging` (debug level)."""
        _log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request.parse(self.command, self.path, body, headers)
        try:
            resp = self.app.route(req)
        except (BadRequest, BadAPIRequest, HTTPStatus) as exc:
            resp = format_error(req, exc, self.app.host)
        except Exception as exc:  # a bug in the test server: answer 500 like DVID's recover
            _log.exception("DVID test server failed on %s %s", req.method, req.path)
            resp = Response(500, f"Panic detected on request: {exc!r}\n".encode(), TEXT)
        try:
            respond(
                self,
                resp.status,
                resp.body,
                content_type=resp.content_type,
                headers=resp.headers,
                chaos=self.chaos_source(),
                head=req.method == "HEAD",
            )
        finally:
            if req.throttled:
                self.app.throttle.release()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle  # noqa: N815 - stdlib names
