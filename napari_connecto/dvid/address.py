"""``dvid://host:port/<uuid>/<instance>`` addresses."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode

__all__ = ["DvidAddress", "parse_dvid"]

_TRUE = ("1", "true", "on", "yes")


@dataclass(frozen=True, slots=True)
class DvidAddress:
    """Where a DVID repository node or data instance lives."""

    server: str
    """Base URL of the server (``http://host:port``)."""
    uuid: str = ""
    """Node UUID (a unique prefix, or ``prefix:branch`` / ``:master``); empty for the server."""
    instance: str = ""
    """Data instance name; empty for a node."""
    supervoxels: bool = False
    """Read a labelmap's supervoxels instead of its agglomerated labels."""
    throttle: bool = False
    """Ask the server to throttle heavy reads (``throttle=true``; 503 while busy)."""

    def with_instance(self, instance: str) -> DvidAddress:
        """The address of another instance on the same node."""
        return replace(self, instance=instance)

    def with_uuid(self, uuid: str) -> DvidAddress:
        """The same instance on another node."""
        return replace(self, uuid=uuid)

    def __str__(self) -> str:
        host = self.server.removeprefix("http://")
        parts = [p for p in (host, self.uuid, self.instance) if p]
        query = {k: "true" for k in ("supervoxels", "throttle") if getattr(self, k)}
        return "dvid://" + "/".join(parts) + (f"?{urlencode(query)}" if query else "")


def parse_dvid(location: str) -> DvidAddress:
    """Parse the part of a ``dvid://`` source after the scheme.

    Parameters
    ----------
    location : str
        ``host:port[/uuid[/instance]][?supervoxels=true&throttle=true]``; the
        host may carry its own ``http://`` or ``https://`` (default ``http``).

    Returns
    -------
    DvidAddress
        The parsed address.

    Raises
    ------
    ValueError
        If there is no host, or the path has more than two parts.
    """
    text, _, query = location.strip().partition("?")
    options = {k.lower(): v.lower() for k, v in parse_qsl(query)}
    scheme = "http"
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            scheme, text = prefix[:-3], text[len(prefix) :]
    parts = [p for p in text.strip("/").split("/") if p]
    if not parts:
        raise ValueError(f"dvid address without a host: {location!r}")
    host, *path = parts
    if len(path) > 2:
        raise ValueError(f"dvid address must be host/uuid/instance, got {location!r}")
    uuid = path[0] if path else ""
    instance = path[1] if len(path) > 1 else ""
    return DvidAddress(
        server=f"{scheme}://{host}",
        uuid=uuid,
        instance=instance,
        supervoxels=options.get("supervoxels", "") in _TRUE,
        throttle=options.get("throttle", "") in _TRUE,
    )
