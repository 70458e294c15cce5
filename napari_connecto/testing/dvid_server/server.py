"""The DVID test server: a real HTTP/1.1 server on 127.0.0.1 plus a seeding API."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.testing.chaos import Chaos, ChaosConfig, LoopbackHTTPServer
from napari_connecto.testing.dvid_server.annotation import Annotation
from napari_connecto.testing.dvid_server.handler import DvidApp, DvidRequestHandler
from napari_connecto.testing.dvid_server.imageblk import VoxelInstance
from napari_connecto.testing.dvid_server.instances import Config, Ctx
from napari_connecto.testing.dvid_server.keyvalue import KeyValue
from napari_connecto.testing.dvid_server.labelmap import Labelmap
from napari_connecto.testing.dvid_server.protocol import BadRequest, Throttle
from napari_connecto.testing.dvid_server.repo import RepoManager
from napari_connecto.testing.dvid_server.snapshot import load_state, save_state

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.instances import Instance

__all__ = ["DvidServer", "SeedError"]

_log = logging.getLogger(__name__)


class SeedError(ValueError):
    """A seeding call that DVID would have refused (the message is DVID's)."""


class DvidServer:
    """A protocol-faithful DVID server for tests, in memory, on loopback.

    Parameters
    ----------
    chaos : ChaosConfig, optional
        Fault injection applied to every response (none by default).
    throttle_limit : int
        How many ``throttle=true`` operations may run at once (DVID's default: 1).
    port : int
        Port to bind on 127.0.0.1; 0 picks a free one.
    data_dir : str or Path, optional
        Load state from this directory at start and save it there at stop.

    Examples
    --------
    >>> with DvidServer() as server:  # doctest: +SKIP
    ...     uuid = server.create_repo("demo")
    ...     requests.get(f"{server.url}/api/repo/{uuid}/info", timeout=5)
    """

    def __init__(
        self,
        chaos: ChaosConfig | None = None,
        throttle_limit: int = 1,
        *,
        port: int = 0,
        data_dir: str | Path | None = None,
    ) -> None:
        self.chaos = Chaos(chaos)
        self.port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        manager = load_state(self.data_dir) if self.data_dir is not None else RepoManager()
        self.app = DvidApp(manager, throttle_limit)
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (after :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("DvidServer is not running; call start() first")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> str:
        """Bind, serve on a daemon thread, and return the base URL."""
        if self._httpd is not None:
            return self.url
        handler = type(
            "BoundDvidHandler",
            (DvidRequestHandler,),
            {"app": self.app, "chaos_source": staticmethod(lambda: self.chaos)},
        )
        self._httpd = LoopbackHTTPServer(("127.0.0.1", self.port), handler)
        self.app.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="dvid-test-server", daemon=True
        )
        self._thread.start()
        _log.info("DVID test server listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Stop serving (and save the state if a data directory was given)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_connections()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.data_dir is not None:
            self.save()

    def save(self) -> None:
        """Write a snapshot to the data directory now."""
        if self.data_dir is None:
            raise RuntimeError("DvidServer has no data directory")
        with self.app.lock:
            save_state(self.app.manager, self.data_dir)

    def __enter__(self) -> DvidServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_chaos(self, config: ChaosConfig | None) -> Chaos:
        """Replace the fault schedule (fresh counters, re-seeded); returns the new one."""
        self.chaos = Chaos(config)
        return self.chaos

    @property
    def throttle(self) -> Throttle:
        """The server's count of running ``throttle=true`` operations."""
        return self.app.throttle

    # -- seeding API (no HTTP) --------------------------------------------------------------
    #
    # Every ``uuid`` below may be a full UUID, a unique prefix or ``prefix:branch``. A call
    # DVID would refuse raises :class:`SeedError` with DVID's message.

    def _node(self, uuid: str) -> tuple[Ctx, Any]:
        manager = self.app.manager
        try:
            full, version = manager.match(uuid)
        except BadRequest as exc:
            raise SeedError(exc.message) from exc
        repo, node = manager.node(full)
        return Ctx(full, version, manager.ancestry(version), repo, self.app.throttle), node

    def _instance(self, uuid: str, name: str, kind: type[Instance]) -> tuple[Ctx, Any]:
        ctx, node = self._node(uuid)
        inst = ctx.repo.instances.get(name)
        if inst is None:
            raise SeedError(f"no data instance {name!r} in repo {ctx.repo.root}")
        if not isinstance(inst, kind):
            wanted = kind.typename or "uint8blk/labelmap"
            raise SeedError(f"{name!r} is a {inst.typename} instance, not {wanted}")
        if node.locked and inst.versioned:
            raise SeedError(f'Cannot do POST on endpoint "{name}" of locked node {ctx.uuid}')
        ctx.ancestry = inst.ancestry(ctx.version)
        ctx.version = ctx.ancestry[0]
        return ctx, inst

    def create_repo(self, alias: str, description: str = "") -> str:
        """Create a repo with one unlocked root node.

        Parameters
        ----------
        alias : str
            Repo alias.
        description : str
            Repo description.

        Returns
        -------
        str
            The root UUID.
        """
        with self.app.lock:
            return self.app.manager.new_repo(alias, description).root

    def create_instance(self, uuid: str, typename: str, name: str, **config: Any) -> None:
        """Add a data instance (``POST /api/repo/{uuid}/instance``).

        Parameters
        ----------
        uuid : str
            A node of the repo.
        typename : str
            ``uint8blk``, ``labelmap``, ``annotation`` or ``keyvalue``.
        name : str
            Instance name.
        **config
            DVID instance settings, e.g. ``BlockSize="64,64,64"`` (or a tuple),
            ``MaxDownresLevel=2``, ``Versioned=False``, ``sync="segmentation"``.

        Raises
        ------
        SeedError
            If DVID would refuse the instance (locked node, duplicate name, bad config).
        """
        with self.app.lock:
            _, node = self._node(uuid)
            if node.locked:
                raise SeedError(f"New data instance cannot be created on locked node {node.uuid}")
            try:
                self.app.add_instance(node.uuid, typename, name, Config(config))
            except BadRequest as exc:
                raise SeedError(exc.message) from exc

    def put_voxels(
        self,
        uuid: str,
        name: str,
        offset_zyx: Sequence[int],
        array_zyx: np.ndarray,
        scale: int = 0,
    ) -> None:
        """Write voxels into a ``uint8blk`` or ``labelmap`` instance.

        Parameters
        ----------
        uuid : str
            An unlocked node.
        name : str
            Instance name.
        offset_zyx : sequence of int
            Block-aligned offset, z, y, x.
        array_zyx : numpy.ndarray
            Block-aligned z, y, x array (supervoxel ids for a labelmap, whose down-res
            levels are rebuilt).
        scale : int
            Labelmap only: write this down-res level directly (no down-res from it).

        Raises
        ------
        SeedError
            Misaligned box, locked node, wrong instance type, or ``scale`` on ``uint8blk``
            (DVID keeps each grayscale scale in its own instance: ``grayscale_1``, ...).
        """
        with self.app.lock:
            ctx, inst = self._instance(uuid, name, VoxelInstance)
            if scale and not isinstance(inst, Labelmap):
                raise SeedError(
                    "uint8blk has no scale levels: DVID keeps each grayscale scale in its own "
                    "instance (grayscale, grayscale_1, ...)"
                )
            array = np.asarray(array_zyx, inst.dtype)
            offset = tuple(int(o) for o in offset_zyx)
            try:
                if scale:
                    if not inst.grid.aligned(offset, array.shape):
                        raise BadRequest("cannot store voxels in non-block aligned geometry")
                    inst.grid.write(ctx.version, scale, offset, array)
                elif isinstance(inst, Labelmap):
                    inst.write_labels(ctx, offset, array)
                else:
                    inst.store_voxels(ctx, offset, array)
                    ctx.repo.new_mutation_id()
            except BadRequest as exc:
                raise SeedError(exc.message) from exc

    def put_elements(self, uuid: str, name: str, elements: Sequence[Mapping[str, Any]]) -> None:
        """Add or replace (by ``Pos``) annotation elements.

        Parameters
        ----------
        uuid : str
            An unlocked node.
        name : str
            Annotation instance name.
        elements : sequence of mapping
            DVID element JSON: ``Pos``, ``Kind``, ``Tags``, ``Prop``, ``Rels``.
        """
        with self.app.lock:
            ctx, inst = self._instance(uuid, name, Annotation)
            try:
                inst.add(ctx.version, ctx.ancestry, [dict(e) for e in elements])
            except BadRequest as exc:
                raise SeedError(exc.message) from exc

    def put_key(self, uuid: str, name: str, key: str, value: bytes | str) -> None:
        """Store one keyvalue entry (``str`` values are UTF-8 encoded).

        Parameters
        ----------
        uuid : str
            An unlocked node.
        name : str
            Keyvalue instance name.
        key : str
            The key.
        value : bytes or str
            The value.
        """
        with self.app.lock:
            ctx, inst = self._instance(uuid, name, KeyValue)
            inst.put(key, ctx.version, value.encode() if isinstance(value, str) else value)

    def merge(self, uuid: str, name: str, target: int, others: Sequence[int]) -> int:
        """Merge labels into ``target`` (``POST .../merge``).

        Parameters
        ----------
        uuid : str
            An unlocked node.
        name : str
            Labelmap instance name.
        target : int
            Label that absorbs the others.
        others : sequence of int
            Labels merged into ``target``.

        Returns
        -------
        int
            The mutation ID.
        """
        with self.app.lock:
            ctx, inst = self._instance(uuid, name, Labelmap)
            try:
                return inst.merge(ctx, int(target), [int(o) for o in others])
            except BadRequest as exc:
                raise SeedError(exc.message) from exc

    def commit(self, uuid: str, note: str = "") -> None:
        """Lock (commit) a node.

        Parameters
        ----------
        uuid : str
            The node.
        note : str
            Commit note.
        """
        with self.app.lock:
            _, node = self._node(uuid)
            try:
                self.app.manager.commit(node.uuid, note)
            except BadRequest as exc:
                raise SeedError(exc.message) from exc

    def new_version(self, uuid: str, note: str = "") -> str:
        """Add a child of a committed node on the node's branch.

        Parameters
        ----------
        uuid : str
            A committed node.
        note : str
            Note of the child.

        Returns
        -------
        str
            The child UUID.
        """
        return self._child(uuid, note, "")

    def branch(self, uuid: str, name: str, note: str = "") -> str:
        """Start branch ``name`` from a committed node.

        Parameters
        ----------
        uuid : str
            A committed node.
        name : str
            New branch name (not ``""`` or ``"master"``).
        note : str
            Note of the child.

        Returns
        -------
        str
            The child UUID (first node of the branch).
        """
        if name in ("", "master"):
            raise SeedError("Cannot create a master branch")
        return self._child(uuid, note, name)

    def _child(self, uuid: str, note: str, branch: str) -> str:
        with self.app.lock:
            _, node = self._node(uuid)
            try:
                return self.app.manager.new_version(node.uuid, note, branch)
            except BadRequest as exc:
                raise SeedError(exc.message) from exc
