"""Save and load the whole server state as JSON plus ``.npy`` arrays (never pickle).

Layout under the ``--data`` directory::

    snapshot/state.json        repos, DAGs, instance configs and small values
    snapshot/arrays/<n>.npy    one voxel block each

A new snapshot is written next to the old one and swapped in with renames, so
a crash while saving leaves the previous snapshot intact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.testing.dvid_server.instances import TYPES, Config
from napari_connecto.testing.dvid_server.repo import Node, Repo, RepoManager

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.instances import Instance

__all__ = ["Snapshot", "load_state", "save_state"]

_log = logging.getLogger(__name__)
FORMAT = 1


class Snapshot:
    """Where one snapshot's arrays go.

    Parameters
    ----------
    directory : Path
        The snapshot directory (``<data>/snapshot``).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.arrays = directory / "arrays"
        self._count = 0

    def save_array(self, array: np.ndarray) -> str:
        """Write one array; returns its file name."""
        self.arrays.mkdir(parents=True, exist_ok=True)
        name = f"{self._count}.npy"
        self._count += 1
        np.save(self.arrays / name, np.ascontiguousarray(array), allow_pickle=False)
        return name

    def load_array(self, name: str) -> np.ndarray:
        """Read one array written by :meth:`save_array` (no pickle, no path escapes)."""
        path = (self.arrays / name).resolve()
        if path.parent != self.arrays.resolve():
            raise ValueError(f"array name {name!r} escapes the snapshot")
        return np.load(path, allow_pickle=False)


def _instance_state(inst: Instance, snap: Snapshot) -> dict[str, Any]:
    return {
        "typename": inst.typename,
        "name": inst.name,
        "data_uuid": inst.data_uuid,
        "config": inst.config.raw(),
        "syncs": list(inst.syncs),
        "tags": dict(inst.tags),
        "state": inst.dump(snap),
    }


def _repo_state(repo: Repo, snap: Snapshot) -> dict[str, Any]:
    return {
        "root": repo.root,
        "alias": repo.alias,
        "description": repo.description,
        "log": repo.log,
        "properties": repo.properties,
        "branch_leaf": repo.branch_leaf,
        "mutation_id": repo.mutation_id,
        "created": repo.created,
        "updated": repo.updated,
        "nodes": [
            {
                "uuid": n.uuid,
                "version": n.version,
                "branch": n.branch,
                "note": n.note,
                "log": n.log,
                "locked": n.locked,
                "parents": n.parents,
                "children": n.children,
                "created": n.created,
                "updated": n.updated,
            }
            for n in repo.nodes.values()
        ],
        "instances": [_instance_state(i, snap) for i in repo.instances.values()],
    }


def save_state(manager: RepoManager, data_dir: Path) -> None:
    """Write a snapshot of every repo under ``data_dir/snapshot``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / ".snapshot-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    snap = Snapshot(tmp)
    state = {
        "format": FORMAT,
        "next_version": manager.next_version,
        "repos": [_repo_state(r, snap) for r in manager.repos.values()],
    }
    with open(tmp / "state.json", "w", encoding="utf-8") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    final, old = data_dir / "snapshot", data_dir / ".snapshot-old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    _log.info("DVID test server state saved to %s", final)


def load_state(data_dir: Path) -> RepoManager:
    """Rebuild the repos from ``data_dir/snapshot`` (an empty manager if there is none)."""
    manager = RepoManager()
    directory = data_dir / "snapshot"
    if not (directory / "state.json").exists():
        return manager
    snap = Snapshot(directory)
    state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    if state.get("format") != FORMAT:
        raise ValueError(f"unknown DVID test server snapshot format {state.get('format')!r}")
    for rs in state["repos"]:
        repo = Repo(
            root=rs["root"],
            alias=rs["alias"],
            description=rs["description"],
            log=list(rs["log"]),
            properties=dict(rs["properties"]),
            branch_leaf=dict(rs["branch_leaf"]),
            mutation_id=int(rs["mutation_id"]),
            created=float(rs["created"]),
            updated=float(rs["updated"]),
        )
        for ns in rs["nodes"]:
            node = Node(**ns)
            repo.nodes[node.version] = node
            manager.uuid_to_version[node.uuid] = node.version
            manager.version_to_uuid[node.version] = node.uuid
            manager.repo_of_version[node.version] = repo
        manager.repos[repo.root] = repo
        for ins in rs["instances"]:
            inst = TYPES[ins["typename"]](manager, repo, ins["name"], Config(ins["config"]))
            inst.data_uuid = ins["data_uuid"]
            inst.syncs = list(ins["syncs"])
            inst.tags = dict(ins["tags"])
            inst.load(ins["state"], snap)
            repo.instances[inst.name] = inst
    manager.next_version = int(state["next_version"])
    _log.info("DVID test server state loaded from %s", directory)
    return manager
