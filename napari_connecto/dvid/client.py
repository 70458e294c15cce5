"""A DVID HTTP client on the shared transport.

Covers what the workstation needs (see the reference sheet, section 1): server
info and types, repositories and their version DAG, node lock state, instance
info, ``uint8blk`` and ``labelmap`` voxels (scales, supervoxels, lz4/gzip,
block-aligned writes), labelmap queries and mutations, ``keyvalue`` and
``annotation`` elements. Errors keep DVID's own message: a 400 becomes a
:class:`~napari_connecto.errors.RemoteError` with the server's text, a write to
a locked node a :class:`~napari_connecto.errors.ReadOnlyError`, a throttled
server that stays busy a :class:`~napari_connecto.errors.ServerBusyError`.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from napari_connecto.dvid.address import DvidAddress
from napari_connecto.errors import ReadOnlyError, RemoteError
from napari_connecto.remote.http import HttpClient, default_client

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["DvidClient", "decode_voxels"]

_DTYPES = {"uint8blk": np.dtype(np.uint8), "labelmap": np.dtype(np.uint64),
           "labelarray": np.dtype(np.uint64), "uint16blk": np.dtype(np.uint16),
           "uint32blk": np.dtype(np.uint32), "uint64blk": np.dtype(np.uint64)}  # fmt: skip
_MAX_VOXELS = 1 << 30


def decode_voxels(
    data: bytes, shape: tuple[int, int, int], dtype: np.dtype, compression: str | None
) -> np.ndarray:
    """Decode a DVID raw voxel answer (ZYX, little-endian) of exactly ``shape``.

    Raises
    ------
    ValueError
        If the body is truncated, corrupt or of the wrong size.
    """
    size = math.prod(shape) * dtype.itemsize
    if compression == "lz4":
        import lz4.block

        try:
            data = lz4.block.decompress(data, uncompressed_size=size)
        except lz4.block.LZ4BlockError as exc:
            raise ValueError(f"corrupt lz4 voxels ({exc})") from None
    elif compression == "gzip":
        inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(data, size + 1)
        except zlib.error as exc:
            raise ValueError(f"corrupt gzip voxels ({exc})") from None
        if not inflater.eof:
            raise ValueError("truncated gzip voxels")
        data = out
    if len(data) != size:
        raise ValueError(f"voxel answer holds {len(data)} bytes, expected {size}")
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape).astype(dtype)


def _xyz(values: Sequence[int]) -> str:
    """``x_y_z`` from z, y, x integers."""
    return "_".join(str(int(v)) for v in reversed(values))


class DvidClient:
    """Requests to one DVID server.

    Parameters
    ----------
    server : str
        Base URL, ``http://host:port``.
    http : HttpClient, optional
        The transport; the process-wide one by default.
    user, app : str, optional
        Sent as ``u=`` and ``app=`` on every request, as DVID logs them.
    """

    def __init__(
        self,
        server: str,
        http: HttpClient | None = None,
        *,
        user: str = "",
        app: str = "napari-connecto",
    ) -> None:
        self.server = server.rstrip("/")
        self._http = http
        self._tags = {k: v for k, v in (("u", user), ("app", app)) if v}

    @classmethod
    def of(cls, address: DvidAddress) -> DvidClient:
        """The client of an address's server."""
        return cls(address.server)

    @property
    def http(self) -> HttpClient:
        """The transport."""
        return self._http or default_client()

    # -- plumbing ------------------------------------------------------------------
    def url(self, path: str, **query: Any) -> str:
        """The URL of ``/api/<path>`` and query options (``True`` -> ``true``, ``None`` dropped)."""
        params = {**self._tags}
        for key, value in query.items():
            if value is None or value is False:
                continue
            params[key] = "true" if value is True else str(value)
        text = "&".join(f"{k}={quote(str(v), safe=':,')}" for k, v in params.items())
        return f"{self.server}/api/{path.lstrip('/')}" + (f"?{text}" if text else "")

    def get_json(self, path: str, *, body: Any = None, **query: Any) -> Any:
        """``GET /api/<path>`` parsed as JSON (a JSON ``body`` for DVID's GET-with-body calls)."""
        data = None if body is None else json.dumps(body).encode()
        return self.http.get_json(self.url(path, **query), body=data)

    def post_json(self, path: str, body: Any, *, idempotent: bool = False, **query: Any) -> Any:
        """``POST /api/<path>`` with a JSON body; the answer parsed if it is JSON."""
        answer = self._post(path, json.dumps(body).encode(), idempotent=idempotent, **query)
        try:
            return json.loads(answer) if answer.strip() else None
        except ValueError:
            return answer.decode("utf-8", "replace")

    def _post(self, path: str, data: bytes, *, idempotent: bool = False, **query: Any) -> bytes:
        try:
            return self.http.post(self.url(path, **query), data, idempotent=idempotent)
        except RemoteError as exc:
            if exc.status == 400 and "locked node" in exc.problem:
                raise ReadOnlyError(
                    f"{exc.problem}: the node is committed (locked); make a new version to edit"
                ) from None
            raise

    # -- server and repositories -------------------------------------------------------
    def server_info(self) -> dict[str, Any]:
        """``/server/info``: version, storage backend, cores, uptime (all strings)."""
        return self.get_json("server/info")

    def server_types(self) -> dict[str, str]:
        """``/server/types``: type name -> type URL of the types in use."""
        return self.get_json("server/types")

    def repos(self) -> dict[str, Any]:
        """``/repos/info``: every repository keyed by its root UUID."""
        return self.get_json("repos/info") or {}

    def repo(self, uuid: str) -> dict[str, Any]:
        """``/repo/{uuid}/info``: one repository (alias, DAG, data instances)."""
        return self.get_json(f"repo/{uuid}/info")

    def branch_versions(self, uuid: str, branch: str) -> list[str]:
        """UUIDs of a branch from its leaf to the root."""
        return self.get_json(f"repo/{uuid}/branch-versions/{branch}")

    def create_repo(self, alias: str, description: str = "") -> str:
        """Make a repository; return its root UUID."""
        return self.post_json("repos", {"alias": alias, "description": description})["root"]

    def create_instance(self, uuid: str, typename: str, name: str, **config: Any) -> None:
        """Add a data instance (``BlockSize``, ``VoxelSize``... as config strings)."""
        body = {"typename": typename, "dataname": name, **{k: str(v) for k, v in config.items()}}
        self.post_json(f"repo/{uuid}/instance", body)

    def is_locked(self, uuid: str) -> bool:
        """Whether a node is committed (locked, read-only)."""
        return bool(self.get_json(f"node/{uuid}/commit").get("Locked"))

    def commit(self, uuid: str, note: str = "", log: Sequence[str] = ()) -> str:
        """Lock a node; return its UUID."""
        return self.post_json(f"node/{uuid}/commit", {"note": note, "log": list(log)})["committed"]

    def new_version(self, uuid: str) -> str:
        """A child of a committed node; return the child's UUID."""
        return self.post_json(f"node/{uuid}/newversion", {})["child"]

    def branch(self, uuid: str, name: str) -> str:
        """A new named branch below a committed node; return its UUID."""
        return self.post_json(f"node/{uuid}/branch", {"branch": name})["child"]

    def instance_info(self, uuid: str, instance: str) -> dict[str, Any]:
        """``/node/{uuid}/{instance}/info``: ``Base`` and ``Extended``."""
        return self.get_json(f"node/{uuid}/{instance}/info")

    # -- voxels -----------------------------------------------------------------------------
    def voxels(
        self,
        uuid: str,
        instance: str,
        start: Sequence[int],
        shape: Sequence[int],
        dtype: np.dtype,
        *,
        scale: int = 0,
        supervoxels: bool = False,
        compression: str | None = None,
        throttle: bool = False,
    ) -> np.ndarray:
        """Read a z, y, x box of voxels (absolute DVID coordinates of ``scale``).

        Raises
        ------
        ValueError
            If the answer is truncated or corrupt on every retry.
        RemoteError
            As the transport.
        """
        shape3 = tuple(int(n) for n in shape)
        if math.prod(shape3) > _MAX_VOXELS:
            raise ValueError(f"refusing to read {math.prod(shape3)} voxels at once")
        url = self.url(
            f"node/{uuid}/{instance}/raw/0_1_2/{_xyz(shape3)}/{_xyz(start)}",
            scale=scale or None,
            supervoxels=supervoxels,
            compression=compression,
            throttle=throttle,
        )
        found = self.http.fetch(url, lambda d: decode_voxels(d, shape3, dtype, compression))  # type: ignore[arg-type]
        assert found is not None
        return found

    def write_voxels(
        self,
        uuid: str,
        instance: str,
        start: Sequence[int],
        data: np.ndarray,
        *,
        dtype: np.dtype,
        throttle: bool = False,
    ) -> None:
        """Write a block-aligned z, y, x box (the server refuses unaligned writes)."""
        body = np.ascontiguousarray(data, dtype=dtype.newbyteorder("<")).tobytes()
        path = f"node/{uuid}/{instance}/raw/0_1_2/{_xyz(data.shape)}/{_xyz(start)}"
        self._post(path, body, idempotent=True, throttle=throttle)

    # -- labelmap ---------------------------------------------------------------------------
    def label_at(self, uuid: str, instance: str, point_zyx: Sequence[int], **query: Any) -> int:
        """The label at one voxel (0 for background)."""
        return int(
            self.get_json(f"node/{uuid}/{instance}/label/{_xyz(point_zyx)}", **query)["Label"]
        )

    def labels_at(
        self, uuid: str, instance: str, points_zyx: np.ndarray, **query: Any
    ) -> np.ndarray:
        """Labels at many voxels (one request)."""
        points = np.asarray(points_zyx, dtype=np.int64)[:, ::-1].tolist()
        if not points:
            return np.zeros(0, dtype=np.uint64)
        return np.asarray(
            self.get_json(f"node/{uuid}/{instance}/labels", body=points, **query), dtype=np.uint64
        )

    def supervoxels(self, uuid: str, instance: str, label: int) -> list[int]:
        """The supervoxels of a label."""
        return [int(v) for v in self.get_json(f"node/{uuid}/{instance}/supervoxels/{label}")]

    def size(self, uuid: str, instance: str, label: int, *, supervoxels: bool = False) -> int:
        """Voxel count of a label (or supervoxel)."""
        doc = self.get_json(f"node/{uuid}/{instance}/size/{label}", supervoxels=supervoxels)
        return int(doc["voxels"])

    def next_label(self, uuid: str, instance: str, count: int = 1) -> tuple[int, int]:
        """Reserve ``count`` new label ids; return the inclusive ``(start, end)``."""
        doc = self.post_json(f"node/{uuid}/{instance}/nextlabel/{count}", None)
        return int(doc["start"]), int(doc["end"])

    def max_label(self, uuid: str, instance: str) -> int:
        """The largest label id in use."""
        return int(self.get_json(f"node/{uuid}/{instance}/maxlabel")["maxlabel"])

    def merge(self, uuid: str, instance: str, target: int, others: Iterable[int]) -> int:
        """Merge ``others`` into ``target``; return the mutation id."""
        body = [int(target), *(int(o) for o in others)]
        return int(self.post_json(f"node/{uuid}/{instance}/merge", body)["MutationID"])

    def cleave(self, uuid: str, instance: str, label: int, supervoxels: Iterable[int]) -> int:
        """Split the given supervoxels off ``label``; return the new label."""
        body = [int(s) for s in supervoxels]
        return int(self.post_json(f"node/{uuid}/{instance}/cleave/{label}", body)["CleavedLabel"])

    def mapping(self, uuid: str, instance: str, supervoxels: Iterable[int]) -> list[int]:
        """The labels the given supervoxels belong to now (one request)."""
        body = [int(s) for s in supervoxels]
        if not body:
            return []
        return [int(v) for v in self.get_json(f"node/{uuid}/{instance}/mapping", body=body)]

    def renumber(self, uuid: str, instance: str, pairs: Iterable[tuple[int, int]]) -> None:
        """Give each ``old`` label of ``(new, old)`` pairs the id ``new``."""
        body = [int(v) for pair in pairs for v in pair]
        self.post_json(f"node/{uuid}/{instance}/renumber", body)

    # -- keyvalue --------------------------------------------------------------------------
    def keys(self, uuid: str, instance: str) -> list[str]:
        """Every key of a keyvalue instance."""
        return list(self.get_json(f"node/{uuid}/{instance}/keys") or [])

    def get_value(self, uuid: str, instance: str, key: str) -> bytes | None:
        """A key's value, ``None`` if absent."""
        return self.http.get(
            self.url(f"node/{uuid}/{instance}/key/{quote(key, safe='')}"), allow_missing=True
        )

    def put_value(self, uuid: str, instance: str, key: str, value: bytes) -> None:
        """Store a key's value (repeatable)."""
        self._post(f"node/{uuid}/{instance}/key/{quote(key, safe='')}", value, idempotent=True)

    def delete_value(self, uuid: str, instance: str, key: str) -> None:
        """Delete a key."""
        self.http.delete(self.url(f"node/{uuid}/{instance}/key/{quote(key, safe='')}"))

    # -- annotation ----------------------------------------------------------------------------
    def elements(
        self, uuid: str, instance: str, start_zyx: Sequence[int], shape_zyx: Sequence[int]
    ) -> list[dict[str, Any]]:
        """Annotation elements inside a box (``[]`` for none; DVID may answer ``null``)."""
        path = f"node/{uuid}/{instance}/elements/{_xyz(shape_zyx)}/{_xyz(start_zyx)}"
        return list(self.get_json(path) or [])

    def post_elements(self, uuid: str, instance: str, elements: list[dict[str, Any]]) -> None:
        """Add or replace annotation elements (by position)."""
        self.post_json(f"node/{uuid}/{instance}/elements", elements, idempotent=True)

    def delete_element(self, uuid: str, instance: str, point_zyx: Sequence[int]) -> None:
        """Delete the element at a position."""
        self.http.delete(self.url(f"node/{uuid}/{instance}/element/{_xyz(point_zyx)}"))
