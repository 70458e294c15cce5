"""The ``keyvalue`` data type (``datatype/keyvalue/keyvalue.go``)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from typing import TYPE_CHECKING, Any

from napari_connecto.testing.dvid_server.instances import Instance, register
from napari_connecto.testing.dvid_server.protocol import (
    JSON,
    OCTET,
    BadAPIRequest,
    BadRequest,
    HTTPStatus,
    Request,
    Response,
    json_response,
)
from napari_connecto.testing.dvid_server.versioned import VersionedStore

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.instances import Ctx
    from napari_connecto.testing.dvid_server.snapshot import Snapshot

__all__ = ["KeyValue"]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_keyvalues(pairs: list[tuple[str, bytes]]) -> bytes:
    """Protobuf ``KeyValues{repeated KeyValue kvs = 1}``, ``KeyValue{key = 1, value = 2}``."""
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in pairs)


@register
class KeyValue(Instance):
    """Versioned string keys with byte values."""

    typename = "keyvalue"
    type_url = "github.com/janelia-flyem/dvid/datatype/keyvalue"
    type_version = "0.2"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.store: VersionedStore[str, bytes] = VersionedStore()

    # -- seeding API ------------------------------------------------------------------------

    def put(self, key: str, version: int, value: bytes) -> None:
        """Store ``value`` under ``key`` in ``version``."""
        self.store.put(key, version, bytes(value))

    def sorted_keys(self, ancestry: list[int]) -> list[str]:
        """Visible keys in lexicographic (byte) order."""
        return sorted(self.store.keys(ancestry), key=lambda k: k.encode())

    # -- HTTP -------------------------------------------------------------------------------

    def serve(self, req: Request, ctx: Ctx) -> Response:
        """Answer ``info``, ``keys``, ``keyrange``, ``keyrangevalues``, ``keyvalues``, ``key``."""
        parts = req.parts
        if len(parts) < 4:
            raise BadRequest("incomplete API specification")
        keyword = parts[3]
        anc = ctx.ancestry
        if keyword in ("keyrange", "keyrangevalues"):
            return self._range(req, anc, keyword)
        handlers = {
            "info": lambda: json_response(self.info(anc)),
            "keys": lambda: json_response(self.sorted_keys(anc)),
            "keyvalues": lambda: self._keyvalues(req, ctx),
            "key": lambda: self._key(req, ctx),
            "sync": lambda: self.set_syncs(req),
        }
        if keyword not in handlers:
            raise BadAPIRequest(self.name, self.typename)
        return handlers[keyword]()

    def _range(self, req: Request, anc: list[int], keyword: str) -> Response:
        parts = req.parts
        if len(parts) < 6:
            raise BadRequest(f"expect beginning and end keys to follow '{keyword}' endpoint")
        lo, hi = parts[4].encode(), parts[5].encode()
        keys = [k for k in self.sorted_keys(anc) if lo <= k.encode() <= hi]
        if keyword == "keyrange":
            return json_response(keys)
        return self._range_values(req, anc, keys)

    def _key(self, req: Request, ctx: Ctx) -> Response:
        parts = req.parts
        if len(parts) < 5:
            raise BadRequest("expect key string to follow 'key' endpoint")
        key = parts[4]
        if req.method == "HEAD":
            if self.store.contains(key, ctx.ancestry):
                return Response(200, headers={"Accept-Ranges": "bytes"})
            return Response(404)
        if req.method == "GET":
            value = self.store.get(key, ctx.ancestry)
            if value is None:
                raise HTTPStatus(404, f"Key {json.dumps(key)} not found\n".encode())
            return Response(200, value, OCTET, {"Accept-Ranges": "bytes"})
        if req.method == "POST":
            self.store.put(key, ctx.version, req.body)
            return Response()
        if req.method == "DELETE":
            self.store.delete(key, ctx.version, ctx.ancestry)
            return Response()
        raise BadRequest(f"key endpoint does not support {req.method.lower()!r} HTTP verb")

    def _range_values(self, req: Request, anc: list[int], keys: list[str]) -> Response:
        as_tar = req.flag("jsontar") or req.flag("tar")
        as_json = req.flag("json")
        if as_tar and as_json:
            raise BadRequest("can only specify tar or json output, not both")
        values = [(k, self.store.get(k, anc)) for k in keys]
        if as_json:
            pieces = []
            for k, v in values:
                if v and req.flag("check"):
                    try:
                        json.loads(v)
                    except ValueError:
                        raise BadRequest(f"bad JSON for key {k!r}") from None
                pieces.append(f'"{k}":'.encode() + (v or b"{}"))
            return Response(200, b"{" + b",".join(pieces) + b"}", JSON)
        if as_tar:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for k, v in values:
                    member = tarfile.TarInfo(k)
                    member.size, member.mode = len(v), 0o755
                    tar.addfile(member, io.BytesIO(v))
            return Response(200, buf.getvalue(), "application/tar")
        return Response(200, encode_keyvalues(values), OCTET)

    def _keyvalues(self, req: Request, ctx: Ctx) -> Response:
        if req.method == "GET":
            if not req.flag("json"):
                raise BadRequest("GET /keyvalues: only json=true is supported by the test server")
            keys = req.json_body("keyvalues request")
            if not isinstance(keys, list):
                raise BadRequest("GET /keyvalues expects a JSON list of keys")
            out = {}
            for k in keys:
                value = self.store.get(str(k), ctx.ancestry)
                out[str(k)] = None if value is None else json.loads(value or b"{}")
            return json_response(out)
        raise BadRequest("POST /keyvalues (protobuf ingest) is not supported by the test server")

    # -- persistence ------------------------------------------------------------------------

    def dump(self, snap: Snapshot) -> dict[str, Any]:
        """Values as base64 in JSON."""
        return {"kv": self.store.dump(lambda v: base64.b64encode(v).decode())}

    def load(self, state: dict[str, Any], snap: Snapshot) -> None:
        """Restore values written by :meth:`dump`."""
        self.store.load(state.get("kv", []), base64.b64decode, str)
