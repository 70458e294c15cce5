"""What the DVID browser shows, as plain values: repositories, version DAGs, instances.

No Qt here. :func:`parse_repos` turns the JSON of ``GET /api/repos/info`` into frozen
:class:`RepoEntry` values whose :meth:`RepoEntry.layout` places every version node under
its parent (DVID names parents and children by numeric ``VersionID``; they are mapped to
UUIDs through the ``DAG.Nodes`` entries). The ``*_html`` functions render the details
pane, including what ``GET /api/node/{uuid}/{name}/info`` says about an instance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from html import escape
from typing import Any

from napari_connecto.dvid.address import DvidAddress, parse_dvid

__all__ = [
    "LAYER_KINDS",
    "InstanceEntry",
    "NodeEntry",
    "RepoEntry",
    "instance_html",
    "instance_source",
    "node_html",
    "parse_repo",
    "parse_repos",
    "repo_html",
    "server_address",
    "server_summary",
    "short_uuid",
]

LAYER_KINDS = {
    "uint8blk": "image",
    "labelmap": "labels",
    "labelarray": "labels",
    "annotation": "points",
}
"""DVID instance types the viewer can show, and the napari layer each becomes."""
SHORT_UUID = 8
"""Characters of a UUID shown in the tree (DVID accepts any unique prefix)."""
_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)")


def short_uuid(uuid: str) -> str:
    """The first :data:`SHORT_UUID` characters of ``uuid``."""
    return uuid[:SHORT_UUID]


def server_address(text: str) -> str:
    """The base URL of a server typed by a user.

    Parameters
    ----------
    text : str
        ``host:port``, ``http://host:port``, ``https://host`` or a ``dvid://`` address;
        a path after the host is ignored.

    Returns
    -------
    str
        ``http://host:port`` (or ``https://...``).

    Raises
    ------
    ValueError
        If ``text`` names no host.
    """
    text = text.strip()
    if not text:
        raise ValueError("enter a DVID server, e.g. localhost:8000")
    location = text.removeprefix("dvid://").split("?", 1)[0]
    scheme, sep, rest = location.partition("://")
    if sep and scheme not in ("http", "https"):
        raise ValueError(f"not a DVID server address: {text!r}")
    host = rest.split("/", 1)[0] if sep else location.split("/", 1)[0]
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"not a DVID server address: {text!r}")
    return parse_dvid(f"{scheme}://{host}" if sep else host).server


def instance_source(server: str, uuid: str, instance: str, *, supervoxels: bool = False) -> str:
    """The ``dvid://host:port/<uuid>/<instance>`` source of an instance at a node.

    Parameters
    ----------
    server : str
        Base URL of the server.
    uuid : str
        Version node UUID.
    instance : str
        Data instance name.
    supervoxels : bool
        Append ``?supervoxels=true`` (labelmaps: supervoxel ids, not agglomerated labels).

    Returns
    -------
    str
        The source string, as File > Open and :func:`napari_connecto.open_volume` accept.
    """
    return str(DvidAddress(server, uuid, instance, supervoxels=supervoxels))


@dataclass(frozen=True, slots=True)
class InstanceEntry:
    """A data instance of a repository (visible at every version node)."""

    name: str
    """Instance name, e.g. ``"grayscale"``."""
    typename: str
    """DVID type, e.g. ``"uint8blk"``, ``"labelmap"``, ``"annotation"``, ``"keyvalue"``."""

    @property
    def layer_kind(self) -> str | None:
        """``"image"``, ``"labels"`` or ``"points"``; ``None`` if it cannot be shown."""
        return LAYER_KINDS.get(self.typename)


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One version node of a repository's DAG."""

    uuid: str
    """Full node UUID."""
    version_id: int
    """DVID's numeric id of the node within the server."""
    branch: str
    """Branch name; empty for the default (master) branch."""
    note: str
    """The commit note."""
    locked: bool
    """Whether the node is committed (read-only)."""
    parents: tuple[str, ...]
    """Parent UUIDs (more than one for a merge)."""
    children: tuple[str, ...]
    """Child UUIDs."""
    created: str = ""
    """Creation time as DVID reports it."""
    updated: str = ""
    """Last update time as DVID reports it."""

    @property
    def short(self) -> str:
        """The UUID's first characters."""
        return short_uuid(self.uuid)

    @property
    def branch_name(self) -> str:
        """The branch name, ``"master"`` for the default branch."""
        return self.branch or "master"

    @property
    def state(self) -> str:
        """``"locked"`` or ``"open"``."""
        return "locked" if self.locked else "open"


@dataclass(frozen=True, slots=True)
class RepoEntry:
    """A repository: alias, version DAG and data instances."""

    root: str
    """Root UUID (the key of ``/repos/info``)."""
    alias: str
    """Short name."""
    description: str
    """Free text."""
    nodes: tuple[NodeEntry, ...]
    """Every version node, by ``VersionID``."""
    instances: tuple[InstanceEntry, ...]
    """Data instances, by name."""
    created: str = ""
    """Creation time as DVID reports it."""
    updated: str = ""
    """Last update time as DVID reports it."""

    @property
    def short(self) -> str:
        """The root UUID's first characters."""
        return short_uuid(self.root)

    def node(self, uuid: str) -> NodeEntry | None:
        """The node with this UUID, if it belongs to the repository."""
        return next((n for n in self.nodes if n.uuid == uuid), None)

    def layout(self) -> list[tuple[NodeEntry, str | None]]:
        """Every node with the UUID of the node to show it under (``None``: top level).

        Parents come before their children. A node sits under its first parent (a merge
        node has several); nodes without a known parent, or unreachable from one because
        the DAG is malformed, are placed at the top level. Every node appears once.
        """
        by_uuid = {n.uuid: n for n in self.nodes}
        placed: dict[str, str | None] = {}
        order: list[tuple[NodeEntry, str | None]] = []

        def place(start: NodeEntry, parent: str | None) -> None:
            stack = [(start, parent)]
            while stack:
                node, above = stack.pop()
                if node.uuid in placed:
                    continue
                placed[node.uuid] = above
                order.append((node, above))
                kids = [by_uuid[c] for c in node.children if c in by_uuid]
                kids = [k for k in kids if k.parents[:1] in ((node.uuid,), ())]
                for kid in sorted(kids, key=lambda n: n.version_id, reverse=True):
                    stack.append((kid, node.uuid))

        for node in self.nodes:  # roots first, by version id
            if not any(p in by_uuid for p in node.parents):
                place(node, None)
        for node in self.nodes:  # a node whose first parent is unknown, or a cycle
            if node.uuid not in placed:
                first = next((p for p in node.parents if p in placed), None)
                place(node, first)
        return order


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    return value if isinstance(value, str) else ""


def _ids(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return [int(v) for v in value if isinstance(v, int | float) and not isinstance(v, bool)]


def _typename(info: Any) -> str:
    base = info.get("Base") if isinstance(info, dict) else None
    name = base.get("TypeName") if isinstance(base, dict) else None
    return name if isinstance(name, str) else "unknown"


def parse_repo(doc: Any, root: str = "") -> RepoEntry:
    """One repository from its ``/repo/{uuid}/info`` (or ``/repos/info`` entry) JSON.

    Parameters
    ----------
    doc : dict
        The repository's JSON object.
    root : str
        Its root UUID if ``doc`` lacks ``"Root"``.

    Returns
    -------
    RepoEntry
        The repository, nodes ordered by ``VersionID``, instances by name.

    Raises
    ------
    ValueError
        If ``doc`` is not a JSON object.
    """
    if not isinstance(doc, dict):
        raise ValueError(f"repository info is not a JSON object: {doc!r:.80}")
    dag = doc.get("DAG") if isinstance(doc.get("DAG"), dict) else {}
    raw_nodes = dag.get("Nodes") if isinstance(dag.get("Nodes"), dict) else {}
    nodes = {_text(n, "UUID") or key: n for key, n in raw_nodes.items() if isinstance(n, dict)}
    version_uuid = {
        int(n["VersionID"]): uuid
        for uuid, n in nodes.items()
        if isinstance(n.get("VersionID"), int)
    }
    entries = []
    for uuid, n in nodes.items():
        version = n.get("VersionID")
        entries.append(
            NodeEntry(
                uuid=uuid,
                version_id=version if isinstance(version, int) else -1,
                branch=_text(n, "Branch"),
                note=_text(n, "Note"),
                locked=n.get("Locked") is True,
                parents=tuple(version_uuid[v] for v in _ids(n.get("Parents")) if v in version_uuid),
                children=tuple(
                    version_uuid[v] for v in _ids(n.get("Children")) if v in version_uuid
                ),
                created=_text(n, "Created"),
                updated=_text(n, "Updated"),
            )
        )
    data = doc.get("DataInstances") if isinstance(doc.get("DataInstances"), dict) else {}
    instances = tuple(
        InstanceEntry(str(name), _typename(info)) for name, info in sorted(data.items())
    )
    return RepoEntry(
        root=_text(doc, "Root") or _text(dag, "Root") or root,
        alias=_text(doc, "Alias"),
        description=_text(doc, "Description"),
        nodes=tuple(sorted(entries, key=lambda e: (e.version_id, e.uuid))),
        instances=instances,
        created=_text(doc, "Created"),
        updated=_text(doc, "Updated"),
    )


def parse_repos(doc: Any) -> list[RepoEntry]:
    """Every repository of ``GET /api/repos/info``, ordered by alias then root UUID.

    Raises
    ------
    ValueError
        If the answer is not a JSON object of repositories.
    """
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise ValueError(f"repos info is not a JSON object: {doc!r:.80}")
    repos = [parse_repo(info, root) for root, info in doc.items()]
    return sorted(repos, key=lambda r: (r.alias.lower(), r.root))


def server_summary(info: Any) -> str:
    """One line about a server: ``"DVID v1.0.0 · basholeveldb"`` (plus read-only mode)."""
    if not isinstance(info, dict):
        return "DVID (no server info)"
    parts = [f"DVID {info.get('DVID Version') or '(unknown version)'}"]
    if info.get("Storage backend"):
        parts.append(str(info["Storage backend"]))
    if info.get("Mode"):
        parts.append(str(info["Mode"]))
    return " · ".join(parts)


# -- details --------------------------------------------------------------------------------
def _when(text: str) -> str:
    """DVID's timestamp cut to seconds: ``2024-05-01 12:00:00``."""
    match = _TIME.match(text)
    return f"{match[1]} {match[2]}" if match else text


def _table(title: str, rows: list[tuple[str, str]]) -> str:
    """A heading and a two-column table; values are escaped here."""
    cells = "".join(
        f"<tr><td><b>{escape(key)}</b>&nbsp;&nbsp;</td><td>{escape(value)}</td></tr>"
        for key, value in rows
        if value != ""
    )
    return f"<h3>{escape(title)}</h3><table>{cells}</table>"


def repo_html(repo: RepoEntry) -> str:
    """The details pane of a repository."""
    rows = [
        ("Alias", repo.alias or "(none)"),
        ("Description", repo.description),
        ("Root UUID", repo.root),
        ("Versions", str(len(repo.nodes))),
        ("Locked", str(sum(n.locked for n in repo.nodes))),
        ("Data instances", ", ".join(f"{i.name} ({i.typename})" for i in repo.instances)),
        ("Created", _when(repo.created)),
        ("Updated", _when(repo.updated)),
    ]
    return _table(f"Repository {repo.alias or repo.short}", rows)


def node_html(repo: RepoEntry, node: NodeEntry) -> str:
    """The details pane of a version node."""
    state = "locked (committed, read-only)" if node.locked else "open (uncommitted, writable)"
    rows = [
        ("UUID", node.uuid),
        ("Branch", node.branch_name),
        ("State", state),
        ("Note", node.note or "(none)"),
        ("Version ID", str(node.version_id)),
        ("Parents", ", ".join(short_uuid(p) for p in node.parents) or "(root)"),
        ("Children", ", ".join(short_uuid(c) for c in node.children) or "(none: a leaf)"),
        ("Created", _when(node.created)),
        ("Updated", _when(node.updated)),
        ("Repository", f"{repo.alias} ({repo.short})"),
    ]
    return _table(f"Version {node.short}", rows)


def _xyz(value: Any) -> list[int] | None:
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value):
        return [int(v) for v in value]
    return None


def _triple(values: list[int] | list[float], unit: str = "") -> str:
    text = " \u00d7 ".join(f"{v:g}" for v in values)
    return f"{text} {unit}".strip()


def _voxel_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """Block size, voxel size and extents of a voxel instance (x, y, z like DVID)."""
    ext = info.get("Extended") if isinstance(info.get("Extended"), dict) else {}
    rows: list[tuple[str, str]] = []
    block = _xyz(ext.get("BlockSize"))
    if block:
        rows.append(("Block size", _triple(block, "voxels (x, y, z)")))
    voxel = ext.get("VoxelSize")
    units = ext.get("VoxelUnits")
    unit = units[0] if isinstance(units, list) and units and isinstance(units[0], str) else ""
    if isinstance(voxel, list) and len(voxel) == 3:
        rows.append(("Voxel size", _triple([float(v) for v in voxel], unit)))
    extents = info.get("Extents") if isinstance(info.get("Extents"), dict) else ext
    low, high = _xyz(extents.get("MinPoint")), _xyz(extents.get("MaxPoint"))
    if low and high:
        size = [b - a + 1 for a, b in zip(low, high, strict=True)]
        rows.append(("Extents", f"{low} to {high} (x, y, z, inclusive)"))
        rows.append(("Size", f"{_triple(size, 'voxels')} ({math.prod(size):,} voxels)"))
    elif "MinPoint" in ext or "MinPoint" in extents:
        rows.append(("Extents", "empty (no voxels stored yet)"))
    for key, label in (("MaxDownresLevel", "Down-res levels"), ("IndexedLabels", "Indexed")):
        if key in ext:
            rows.append((label, str(ext[key])))
    return rows


def instance_html(
    instance: InstanceEntry,
    node: NodeEntry,
    info: dict[str, Any] | None = None,
    *,
    error: str = "",
) -> str:
    """The details pane of an instance at a node.

    Parameters
    ----------
    instance : InstanceEntry
        The instance.
    node : NodeEntry
        The node it is seen at (its data are read at this version).
    info : dict, optional
        ``GET /api/node/{uuid}/{name}/info``; ``None`` while it is being fetched.
    error : str
        Why ``info`` could not be fetched.

    Returns
    -------
    str
        HTML for a ``QTextBrowser``.
    """
    kind = instance.layer_kind
    rows = [
        ("Type", instance.typename),
        ("Opens as", f"{kind} layer" if kind else "not viewable"),
        ("At version", f"{node.uuid} ({node.state})"),
    ]
    if info is not None:
        base = info.get("Base") if isinstance(info.get("Base"), dict) else {}
        rows.extend(_voxel_rows(info))
        syncs = base.get("Syncs")
        rows += [
            ("Compression", str(base.get("Compression", ""))),
            ("Versioned", str(base.get("Versioned", ""))),
            ("Syncs", ", ".join(map(str, syncs)) if isinstance(syncs, list) else ""),
            ("Data UUID", str(base.get("DataUUID", ""))),
        ]
    html = _table(f"{instance.name}", rows)
    if error:
        return html + f'<p style="color:#ff3b30;">Instance info unavailable: {escape(error)}</p>'
    if info is None:
        return html + "<p><i>Loading instance info…</i></p>"
    return html
