"""Repos, version nodes and the DAG, with DVID's naming and locking rules.

Mirrors ``datastore/repo_local.go``: every node has a UUID (32 lowercase hex)
and a server-local integer VersionID; ``Parents``/``Children`` hold VersionIDs.
The master branch is the empty branch name ``""`` (``"master"`` is accepted as
its alias). ``newversion`` and ``branch`` need a committed (locked) parent.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from napari_connecto.testing.dvid_server.protocol import BadRequest, go_rfc3339, go_time

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.instances import Instance

__all__ = ["INITIAL_MUTATION_ID", "Node", "Repo", "RepoManager"]

INITIAL_MUTATION_ID = 1_000_000_000
"""DVID's ``InitialMutationID`` (a billion): the first mutation ID of a new repo."""


@dataclass(slots=True)
class Node:
    """One version node of a repo's DAG."""

    uuid: str
    version: int
    branch: str = ""
    note: str = ""
    log: list[str] = field(default_factory=list)
    locked: bool = False
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The node as ``GET /api/repo/{uuid}/info`` lists it."""
        return {
            "Branch": self.branch,
            "Note": self.note,
            "Log": list(self.log),
            "UUID": self.uuid,
            "VersionID": self.version,
            "Locked": self.locked,
            "Parents": list(self.parents),
            "Children": list(self.children),
            "Created": go_time(self.created),
            "Updated": go_time(self.updated),
        }


@dataclass(slots=True)
class Repo:
    """A repo: its DAG, metadata and data instances."""

    root: str
    alias: str = ""
    description: str = ""
    log: list[str] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    nodes: dict[int, Node] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    branch_leaf: dict[str, str] = field(default_factory=dict)
    mutation_id: int = INITIAL_MUTATION_ID
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def new_mutation_id(self) -> int:
        """Hand out the current mutation ID and advance it (``repoT.newMutationID``)."""
        mut = self.mutation_id
        self.mutation_id += 1
        return mut

    def add_log(self, messages: list[str]) -> None:
        """Append time-stamped messages to the repo log."""
        now = time.time()
        self.log.extend(f"{go_rfc3339(now)}  {m}" for m in messages)
        self.updated = now


class RepoManager:
    """All repos of a server, and the UUID <-> VersionID maps."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.uuid_to_version: dict[str, int] = {}
        self.version_to_uuid: dict[int, str] = {}
        self.repo_of_version: dict[int, Repo] = {}
        self.next_version = 1

    # -- creation ---------------------------------------------------------------------------

    def _new_node(self, repo: Repo, assign: str | None) -> Node:
        node_uuid = assign or uuidlib.uuid4().hex
        if node_uuid in self.uuid_to_version:
            raise BadRequest("UUID already exists in datastore")
        version = self.next_version
        self.next_version += 1
        node = Node(node_uuid, version)
        repo.nodes[version] = node
        self.uuid_to_version[node_uuid] = version
        self.version_to_uuid[version] = node_uuid
        self.repo_of_version[version] = repo
        return node

    def new_repo(self, alias: str, description: str, root: str | None = None) -> Repo:
        """Create a repo with one unlocked root node on the master branch."""
        repo = Repo(root="")
        node = self._new_node(repo, root)
        repo.root = node.uuid
        repo.alias, repo.description = alias, description
        repo.branch_leaf["master"] = node.uuid
        self.repos[repo.root] = repo
        return repo

    def new_version(self, parent_uuid: str, note: str = "", branch: str = "") -> str:
        """Add a child of a locked node; ``branch`` ``""`` keeps the parent's branch."""
        repo, node = self.node(parent_uuid)
        if not node.locked:
            raise BadRequest("can't branch an unlocked node")
        if branch in ("", node.branch):
            branch = node.branch
            if any(repo.nodes[c].branch == branch for c in node.children):
                raise BadRequest("branch already exists with given name")
        elif any(other.branch == branch for other in repo.nodes.values()):
            raise BadRequest("branch already exists with given name")
        child = self._new_node(repo, None)
        child.parents = [node.version]
        child.note = note
        child.branch = branch
        node.children.append(child.version)
        node.updated = repo.updated = time.time()
        repo.branch_leaf[branch or "master"] = child.uuid
        return child.uuid

    def commit(self, node_uuid: str, note: str = "", log: list[str] | None = None) -> None:
        """Lock a node (``POST /api/node/{uuid}/commit``)."""
        repo, node = self.node(node_uuid)
        if node.locked:
            raise BadRequest(f"node {node_uuid} already committed")
        node.locked = True
        if note:
            node.note = note
        now = time.time()
        node.log.extend(f"{go_rfc3339(now)}  {m}" for m in log or [])
        node.updated = repo.updated = now

    # -- lookup -----------------------------------------------------------------------------

    def match(self, text: str) -> tuple[str, int]:
        """Resolve a UUID prefix, ``prefix:branch`` or ``:branch`` (``datastore.MatchingUUID``)."""
        pieces = text.split(":")
        branch = ""
        if len(pieces) == 2:
            text, branch = pieces
            if not text:
                return self._branch_version(None, branch)
        elif len(pieces) > 2:
            raise BadRequest(f"bad UUID specification {text!r}")
        matches = [u for u in self.uuid_to_version if u.startswith(text)]
        if len(matches) > 1:
            raise BadRequest(f"more than one UUID matches {text}")
        if not matches:
            raise BadRequest(f"could not find UUID with partial match to {text}")
        if branch:
            return self._branch_version(matches[0], branch)
        return matches[0], self.uuid_to_version[matches[0]]

    def _branch_version(self, node_uuid: str | None, branch: str) -> tuple[str, int]:
        if node_uuid is None:
            if len(self.repos) != 1:
                raise BadRequest("UUID must be specified if more than one repo exists")
            repo = next(iter(self.repos.values()))
        else:
            repo = self.repo_of_version[self.uuid_to_version[node_uuid]]
        if "~" in branch:
            name, _, back = branch.partition("~")
            ancestry = self.branch_versions(repo, name)
            if not back.isdigit():
                raise BadRequest(f"can't parse parent {back!r} in branch {name!r}")
            if int(back) >= len(ancestry):
                raise BadRequest(f"parent {back} is out of range for branch {name!r}")
            leaf = ancestry[int(back)]
        else:
            leaf = repo.branch_leaf.get(branch or "master", "")
            if not leaf:
                raise BadRequest(f"branch {branch!r} not found in repo {node_uuid or ''!r}")
        return leaf, self.uuid_to_version[leaf]

    def node(self, node_uuid: str) -> tuple[Repo, Node]:
        """The repo and node of a full UUID."""
        version = self.uuid_to_version.get(node_uuid)
        if version is None:
            raise BadRequest("UUID is not present in datastore")
        repo = self.repo_of_version[version]
        return repo, repo.nodes[version]

    def repo_of(self, node_uuid: str) -> Repo:
        """The repo holding a full UUID."""
        return self.node(node_uuid)[0]

    def ancestry(self, version: int) -> list[int]:
        """``version`` and its ancestors along first parents, leaf first."""
        repo = self.repo_of_version[version]
        out = [version]
        node = repo.nodes[version]
        while node.parents:
            node = repo.nodes[node.parents[0]]
            out.append(node.version)
        return out

    def master_leaf_version(self, repo: Repo) -> int:
        """VersionID of the leaf of the master branch."""
        return self.uuid_to_version[repo.branch_leaf["master"]]

    def branch_versions(self, repo: Repo, branch: str) -> list[str]:
        """UUIDs from the leaf of ``branch`` to the root (``getAncestryByBranch``)."""
        start = None
        for node in repo.nodes.values():
            if node.branch == branch or (branch == "master" and node.branch == ""):
                start = node
        if start is None:
            return []
        name = start.branch
        while True:
            nxt = [repo.nodes[c] for c in start.children if repo.nodes[c].branch == name]
            if not nxt:
                break
            start = nxt[0]
        out: list[str] = []
        node = start
        while True:
            out.append(node.uuid)
            if not node.parents:
                break
            out.extend(repo.nodes[p].uuid for p in node.parents[:-1])
            node = repo.nodes[node.parents[-1]]
        return out

    # -- JSON -------------------------------------------------------------------------------

    def repo_json(self, repo: Repo) -> dict[str, Any]:
        """``GET /api/repo/{uuid}/info``: the repo, its DAG and data instances."""
        leaf = self.master_leaf_version(repo)
        return {
            "Root": repo.root,
            "Alias": repo.alias,
            "Description": repo.description,
            "Log": list(repo.log),
            "Properties": dict(repo.properties),
            "DataInstances": {
                name: inst.info(self.ancestry(leaf)) for name, inst in repo.instances.items()
            },
            "DAG": {
                "Root": repo.root,
                "Nodes": {n.uuid: n.to_json() for n in repo.nodes.values()},
            },
            "MutationID": repo.mutation_id,
            "SavedMutationID": repo.mutation_id + 100,
            "Created": go_time(repo.created),
            "Updated": go_time(repo.updated),
        }
