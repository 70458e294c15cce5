"""Data instances: the common ``Base`` part, configuration and the type registry.

A data instance belongs to a repo (``RepoUUID`` is the repo root) and is read
at a version through that version's ancestry (see
:mod:`~napari_connecto.testing.dvid_server.versioned`). Unversioned instances
(``"Versioned": "false"``) map every version to the root.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from napari_connecto.testing.dvid_server.protocol import BadRequest, Request, Response, Throttle

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.repo import Repo, RepoManager
    from napari_connecto.testing.dvid_server.snapshot import Snapshot

__all__ = ["TYPES", "Config", "Ctx", "Instance", "number", "register", "throttle"]

TYPES: dict[str, type[Instance]] = {}
"""Compiled data types by type name."""

_COMPRESSION = {
    "none": "No compression",
    "snappy": "Go Snappy compression",
    "lz4": "LZ4 compression",
    "gzip": "gzip compression",
}


def register(cls: type[Instance]) -> type[Instance]:
    """Class decorator adding a data type to :data:`TYPES`."""
    TYPES[cls.typename] = cls
    return cls


def number(value: float) -> float | int:
    """``8.0`` -> ``8``: Go prints integral floats without a fraction."""
    return int(value) if float(value).is_integer() else value


class Config:
    """Instance configuration with case-insensitive keys (``dvid.Config``)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._values = {str(k).lower(): v for k, v in raw.items()}

    def raw(self) -> dict[str, Any]:
        """The configuration as given, keys lower-cased."""
        return dict(self._values)

    def string(self, name: str, default: str | None = None) -> str | None:
        """A value as a string (sequences joined by commas), or ``default``."""
        value = self._values.get(name.lower())
        if value is None:
            return default
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def integer(self, name: str, default: int) -> int:
        """A value as an integer, or ``default``; a 400 if unparsable."""
        text = self.string(name)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise BadRequest(f"Setting for {name!r} was not an integer: {text}") from None

    def boolean(self, name: str, default: bool) -> bool:
        """A value as a boolean (``true``/``false``/``1``/``0``), or ``default``."""
        text = self.string(name)
        if text is None:
            return default
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise BadRequest(f"Illegal setting for {name!r} (needs to be 'false', '0', 'true', or '1')")

    def triple(
        self, name: str, default: tuple[float, ...], kind: Callable[[str], Any]
    ) -> list[Any]:
        """A ``"a,b,c"`` value as three numbers, or ``default``."""
        text = self.string(name)
        if text is None:
            return list(default)
        try:
            values = [kind(p) for p in text.split(",")]
        except ValueError:
            raise BadRequest(f"bad {name} specification {text!r}") from None
        if len(values) != 3:
            raise BadRequest(f"{name} must have 3 values, not {text!r}")
        return values


@dataclass(slots=True)
class Ctx:
    """The version a request works on."""

    uuid: str
    """Full UUID of the node."""
    version: int
    """VersionID of the node."""
    ancestry: list[int]
    """The node and its ancestors, leaf first (or only the root if unversioned)."""
    repo: Repo
    """The repo of the node."""
    throttle: Throttle | None = None
    """The server's throttle, for ``throttle=true`` requests."""
    user: str = ""
    app: str = ""


def throttle(req: Request, ctx: Ctx) -> None:
    """Hold a throttle slot for ``throttle=true``/``on`` (released after the answer is sent)."""
    if (
        req.query.get("throttle") in ("true", "on")
        and ctx.throttle is not None
        and not req.throttled
    ):
        ctx.throttle.acquire()
        req.throttled = True


class Instance:
    """Common part of every data instance (``datastore.Data``).

    Parameters
    ----------
    manager : RepoManager
        The server's repos, for syncs and ancestry.
    repo : Repo
        Repo the instance is added to.
    name : str
        Instance name (unique in the repo).
    config : Config
        Creation configuration.
    """

    typename: ClassVar[str] = ""
    type_url: ClassVar[str] = ""
    type_version: ClassVar[str] = ""
    default_compression: ClassVar[str] = "lz4"

    def __init__(self, manager: RepoManager, repo: Repo, name: str, config: Config) -> None:
        self.manager = manager
        self.repo = repo
        self.name = name
        self.data_uuid = uuidlib.uuid4().hex
        self.config = config
        comp = (config.string("Compression") or self.default_compression).lower()
        if comp.split(":")[0] not in _COMPRESSION:
            raise BadRequest(f"Illegal compression specified: {comp}")
        level = comp.split(":")[1] if ":" in comp else "-1"
        self.compression = f"{_COMPRESSION[comp.split(':')[0]]}, level {level}"
        self.versioned = config.boolean("Versioned", True)
        self.tags: dict[str, str] = {}
        for assign in (config.string("Tags") or "").split(","):
            key, eq, value = assign.partition("=")
            if eq and key:
                self.tags[key] = value
        self.syncs: list[str] = []

    # -- description ------------------------------------------------------------------------

    def base_json(self) -> dict[str, Any]:
        """The ``"Base"`` object of ``/info``."""
        return {
            "TypeName": self.typename,
            "TypeURL": self.type_url,
            "TypeVersion": self.type_version,
            "DataUUID": self.data_uuid,
            "Name": self.name,
            "RepoUUID": self.repo.root,
            "Compression": self.compression,
            "Checksum": "No checksum",
            "Syncs": list(self.syncs),
            "Versioned": self.versioned,
            "KVStore": "in-memory test store",
            "LogStore": "no mutation log set",
            "Tags": dict(self.tags),
        }

    def info(self, ancestry: list[int]) -> dict[str, Any]:
        """``GET .../info`` at a version (override to add ``Extended``)."""
        return {"Base": self.base_json(), "Extended": {}}

    def ancestry(self, version: int) -> list[int]:
        """The versions a read at ``version`` looks through."""
        if not self.versioned:
            return [self.manager.uuid_to_version[self.repo.root]]
        return self.manager.ancestry(version)

    def is_mutation(self, method: str, keyword: str) -> bool:
        """Whether a request changes data (refused on locked nodes)."""
        return method in ("POST", "PUT", "DELETE")

    # -- serving ----------------------------------------------------------------------------

    def serve(self, req: Request, ctx: Ctx) -> Response:
        """Answer one request under ``/api/node/{uuid}/{name}/``."""
        raise NotImplementedError

    def set_syncs(self, req: Request) -> Response:
        """``POST .../sync`` with ``{"sync": "a,b"}`` (``?replace=true`` to replace)."""
        if req.method != "POST":
            raise BadRequest("Only POST allowed to sync endpoint")
        body = req.json_body("sync request")
        if not isinstance(body, dict) or "sync" not in body:
            raise BadRequest("Could not find 'sync' value in POSTed JSON to sync request.")
        names = [n for n in str(body["sync"]).split(",") if n]
        for n in names:
            if n not in self.repo.instances:
                raise BadRequest(
                    f"issue with requested sync name {n!r}: invalid data instance name"
                )
        if req.flag("replace"):
            self.syncs = []
        self.syncs.extend(n for n in names if n not in self.syncs)
        return Response()

    # -- persistence ------------------------------------------------------------------------

    def dump(self, snap: Snapshot) -> dict[str, Any]:
        """Type-specific state for a snapshot (override)."""
        return {}

    def load(self, state: dict[str, Any], snap: Snapshot) -> None:
        """Restore what :meth:`dump` wrote (override)."""
