"""Segment meshes in napari: one Surface layer per shown segment, loaded off the main thread.

A :class:`MeshController` belongs to one viewer and one segmentation labels
layer. :meth:`~MeshController.show` asks a worker thread for the mesh (read from
precomputed meshes, or generated and cached: see
:class:`~napari_connecto.objects.mesh_source.MeshSource`); the result comes back
through a queued Qt signal and becomes a Surface layer ``mesh <id>`` on the main
thread, coloured like the segment in the labels layer and placed in nm like the
volume layers. Requests carry a token, so a mesh hidden (or re-requested) while
it loads is dropped when it arrives. Failures go to the viewer status and the log.

:func:`attach_meshes` also wires Ctrl+click on the labels layer (toggle the mesh
of the segment under the cursor) and, given the annotation panel, shows the
meshes of the neurons selected in its neuron table.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QCoreApplication, QObject, Signal

from napari_connecto.errors import ConnectoError
from napari_connecto.objects.mesh import Mesh, MeshNotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import napari
    from napari.layers import Labels, Surface

    from napari_connecto.objects.mesh_source import MeshSource

__all__ = ["LAYER_PREFIX", "MeshController", "attach_meshes", "mesh_controller_of"]

logger = logging.getLogger(__name__)

LAYER_PREFIX = "mesh "
"""Surface layers are named ``mesh <segment id>``."""
VIEW_MESH_BYTES = 4 * 2**20
"""Encoded bytes a shown multi-resolution mesh may take (about a million triangles of
Draco): larger ones are shown at the finest coarser level that fits."""
_CONTROLLERS: weakref.WeakValueDictionary[int, MeshController] = weakref.WeakValueDictionary()
_LOAD_ERRORS = (ConnectoError, OSError, ValueError, RuntimeError)


def mesh_controller_of(labels_layer: Labels) -> MeshController | None:
    """The controller attached to ``labels_layer``, if any."""
    controller = _CONTROLLERS.get(id(labels_layer))
    return (
        controller if controller is not None and controller.labels_layer is labels_layer else None
    )


class _Relay(QObject):
    """Carries results to the main thread.

    Owned by the application, so it is only ever deleted there (a worker thread may
    drop the last Python reference to a controller).
    """

    loaded = Signal(object, object, object)
    changed = Signal()


class MeshController:
    """Shows and hides the meshes of segments of one labels layer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer to add Surface layers to.
    labels_layer : napari.layers.Labels
        The segmentation (a plugin layer: ``metadata["connecto_source"]``), for
        colours and, unless ``source`` is given, the volume to reopen.
    source : MeshSource, optional
        Where meshes come from; by default ``MeshSource.for_volume`` of the layer's
        volume, made on the worker thread on first use.
    workers : int
        Meshes loaded at once.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        labels_layer: Labels,
        source: MeshSource | None = None,
        *,
        workers: int = 2,
    ) -> None:
        self._relay = _Relay(QCoreApplication.instance())
        self.loaded = self._relay.loaded
        """``(segment id, token, Mesh or exception)``, emitted from the worker thread."""
        self.changed = self._relay.changed
        """A mesh layer was added or removed (or a load failed), on the main thread."""
        self.viewer = viewer
        self.labels_layer = labels_layer
        self._source = source
        self._source_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="connecto-mesh")
        self._tokens = itertools.count(1)
        self._pending: dict[int, int] = {}
        self._layers: dict[int, Surface] = {}
        self._meshes: dict[int, Mesh] = {}
        self._levels: dict[int, int] = {}
        """Level of detail of each shown mesh (0: the finest)."""
        self._levels_read: dict[int, int] = {}
        """Level of detail read per load token (written by the worker, read on arrival)."""
        self.errors: list[tuple[int, BaseException]] = []
        """Failed loads ``(segment id, error)``, newest last."""
        self.max_mesh_bytes: int | None = VIEW_MESH_BYTES
        """Stored multi-resolution meshes are shown at the finest level of detail whose
        encoded fragments fit this many bytes (``None``: always the finest)."""
        self._undo: list[Callable[[], None]] = []
        self.loaded.connect(self._apply)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self._undo.append(lambda: viewer.layers.events.removed.disconnect(self._on_layer_removed))
        _CONTROLLERS[id(labels_layer)] = self

    # -- public ----------------------------------------------------------------------
    @property
    def shown(self) -> frozenset[int]:
        """Segments whose mesh is shown or loading."""
        return frozenset(self._layers) | frozenset(self._pending)

    @property
    def loading(self) -> frozenset[int]:
        """Segments whose mesh is still being loaded."""
        return frozenset(self._pending)

    def layer_of(self, segment_id: int) -> Surface | None:
        """The Surface layer of a shown segment, or ``None``."""
        return self._layers.get(int(segment_id))

    def mesh_of(self, segment_id: int) -> Mesh | None:
        """The loaded mesh of a shown segment (nm, z, y, x), e.g. to export it."""
        return self._meshes.get(int(segment_id))

    def export(self, segment_id: int, path: str | os.PathLike[str]) -> Path:
        """Write the shown mesh of a segment as OBJ or PLY (by suffix; nm, x y z order).

        A stored multi-resolution mesh shown at a coarser level of detail is written at
        the finest one (read now: this call may block; see :meth:`export_job`).

        Raises
        ------
        MeshNotFoundError
            If the segment's mesh is not loaded.
        UnsupportedEncodingError
            If ``path`` does not end in ``.obj`` or ``.ply``.
        """
        return self.export_job(segment_id, path)()

    def export_job(self, segment_id: int, path: str | os.PathLike[str]) -> Callable[[], Path]:
        """What :meth:`export` does, as a function to run on a worker thread.

        The shown mesh and its level are taken now (on the main thread); opening the
        mesh source, reading the finest level and writing the file happen when the
        function is called.

        Raises
        ------
        MeshNotFoundError
            If the segment's mesh is not loaded.
        """
        from napari_connecto.objects import mesh_io

        segment_id = int(segment_id)
        shown = self.mesh_of(segment_id)
        if shown is None:
            raise MeshNotFoundError(str(path), f"the mesh of segment {segment_id} is not shown")
        coarser = self._levels.get(segment_id, 0) > 0
        mesh_source = self._mesh_source  # opening it may wait for a volume: in the job

        def job() -> Path:
            mesh = mesh_source().get(segment_id) if coarser else shown  # the finest level
            return mesh_io.write_mesh(mesh, path, name=f"segment {segment_id}")

        return job

    def show(self, segment_id: int) -> None:
        """Load the mesh of ``segment_id`` in the background and add it as a layer."""
        segment_id = int(segment_id)
        if segment_id in self.shown or segment_id == self._background():
            return
        token = next(self._tokens)
        self._pending[segment_id] = token
        self.viewer.status = f"loading mesh of segment {segment_id}"
        future = self._pool.submit(self._load, segment_id, token)
        future.add_done_callback(self._check_done)

    def hide(self, segment_id: int) -> None:
        """Remove the mesh of ``segment_id`` (a load under way is dropped when it ends)."""
        segment_id = int(segment_id)
        self._pending.pop(segment_id, None)
        self._meshes.pop(segment_id, None)
        self._levels.pop(segment_id, None)
        layer = self._layers.pop(segment_id, None)
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
            self.changed.emit()

    def toggle(self, segment_id: int) -> bool:
        """Show the mesh if hidden, hide it if shown; return whether it is now shown."""
        if int(segment_id) in self.shown:
            self.hide(segment_id)
            return False
        self.show(segment_id)
        return int(segment_id) in self.shown

    def set_shown(self, segment_ids: Iterable[int]) -> None:
        """Show exactly ``segment_ids`` (hiding every other mesh of this controller)."""
        wanted = [int(s) for s in segment_ids]
        for segment in self.shown - set(wanted):
            self.hide(segment)
        for segment in wanted:
            self.show(segment)

    def close(self) -> None:
        """Stop the workers (pending loads are dropped); layers stay in the viewer."""
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for undo in self._undo:
            undo()
        self._undo.clear()
        self._relay.deleteLater()
        if _CONTROLLERS.get(id(self.labels_layer)) is self:
            del _CONTROLLERS[id(self.labels_layer)]

    def _on_layer_removed(self, event: Any) -> None:
        if event.value is self.labels_layer:
            self.close()
            return
        # a mesh layer deleted by the user (by identity: layers compare by value)
        segment = next((s for s, lay in self._layers.items() if lay is event.value), None)
        if segment is not None:
            self._layers.pop(segment)
            self._meshes.pop(segment, None)
            self._levels.pop(segment, None)

    # -- worker thread -----------------------------------------------------------------
    def _mesh_source(self) -> MeshSource:
        with self._source_lock:
            if self._source is None:
                from napari_connecto import open_volume
                from napari_connecto.objects.mesh_source import GeneratedMeshes, MeshSource
                from napari_connecto.viewer.streaming import stream_of

                stream = stream_of(self.labels_layer)
                shown = stream.volume.volume if stream is not None else None
                if shown is not None and shown.read_processors:
                    # proofread: mesh the segments as displayed (fragments merged by the
                    # display remap, paints included), never from a cache that edits outdate
                    self._source = MeshSource(GeneratedMeshes(shown, cache=None))
                    return self._source
                location = self.labels_layer.metadata.get("connecto_source")
                if not location:
                    raise ConnectoError(
                        f"layer {self.labels_layer.name!r} was not opened by napari-connecto"
                    )
                self._source = MeshSource.for_volume(open_volume(location))
            return self._source

    def refresh(self) -> None:
        """Mesh the shown segments again (after edits); a segment gone is hidden."""
        with self._source_lock:
            self._source = None
        for segment in sorted(self.shown):
            token = next(self._tokens)
            self._pending[segment] = token
            future = self._pool.submit(self._load, segment, token)
            future.add_done_callback(self._check_done)

    def _check_done(self, future: Future[None]) -> None:
        """Log a load that died of an unexpected error (a bug), which ``_load`` lets through."""
        if not future.cancelled() and future.exception() is not None:
            logger.error("mesh loading crashed", exc_info=future.exception())

    def _load(self, segment_id: int, token: int) -> None:
        """Fetch one mesh (worker thread) and hand the result to the main thread."""
        try:
            result: Mesh | BaseException
            result, self._levels_read[token] = self._mesh_source().get_level(
                segment_id, max_bytes=self.max_mesh_bytes
            )
        except _LOAD_ERRORS as exc:
            result = exc
        try:
            self.loaded.emit(segment_id, token, result)
        except RuntimeError:  # the controller's Qt object is gone (viewer closed)
            logger.debug("mesh of segment %d arrived after the viewer closed", segment_id)

    # -- main thread -------------------------------------------------------------------
    def _apply(self, segment_id: int, token: int, result: Mesh | BaseException) -> None:
        level = self._levels_read.pop(token, 0)
        if self._pending.get(segment_id) != token:
            return  # hidden or re-requested meanwhile
        del self._pending[segment_id]
        old = self._layers.pop(segment_id, None)  # a refresh replaces the layer
        if old is not None and old in self.viewer.layers:
            self.viewer.layers.remove(old)
        if isinstance(result, BaseException):
            self.errors.append((segment_id, result))
            logger.warning("mesh of segment %d failed: %s", segment_id, result)
            self.viewer.status = f"mesh of segment {segment_id} failed: {result}"
            self.changed.emit()
            return
        if result.is_empty:
            self.viewer.status = f"segment {segment_id} has an empty mesh"
            self.changed.emit()
            return
        self._meshes[segment_id], self._levels[segment_id] = result, level
        self._layers[segment_id] = self.viewer.add_surface(
            (np.asarray(result.vertices), np.asarray(result.faces, dtype=np.int64)),
            name=f"{LAYER_PREFIX}{segment_id}",
            vertex_colors=np.tile(self._colour(segment_id), (len(result.vertices), 1)),
            shading="smooth",
            units=("nm", "nm", "nm"),
            axis_labels=("z", "y", "x"),
            metadata={"connecto_segment": segment_id},
        )
        self.viewer.status = f"mesh of segment {segment_id}: {len(result.faces)} triangles"
        self.changed.emit()

    def _colour(self, segment_id: int) -> np.ndarray:
        colour = self.labels_layer.get_color(segment_id)
        rgba = np.ones(4, np.float32) if colour is None else np.asarray(colour, np.float32)
        rgba[3] = 1.0
        return rgba

    def _background(self) -> int:
        return int(self.labels_layer.metadata.get("connecto_background_label", 0))

    # -- Ctrl+click --------------------------------------------------------------------
    def segment_at(self, position: Any, event: Any = None) -> int | None:
        """The segment id under a world position (``None`` for background or outside)."""
        kwargs: dict[str, Any] = {"world": True}
        if event is not None and self.viewer.dims.ndisplay == 3:
            kwargs["view_direction"] = event.view_direction
            kwargs["dims_displayed"] = list(event.dims_displayed)
        value = self.labels_layer.get_value(position, **kwargs)
        if isinstance(value, tuple):  # multiscale: (level, value)
            value = value[1]
        if value is None:
            return None
        segment = int(value)
        return None if segment == self._background() else segment

    def on_mouse(self, layer: Labels, event: Any) -> None:
        """``mouse_drag_callbacks`` hook: Ctrl+click toggles the mesh under the cursor."""
        if event.type != "mouse_press" or "Control" not in event.modifiers:
            return
        segment = self.segment_at(event.position, event)
        if segment is not None:
            self.toggle(segment)


def _selection_signal(panel: Any) -> Any:
    """The ``selectionChanged`` signal of an AnnotationPanel or a NeuronTable."""
    table = getattr(panel, "neuron_table", panel)
    return table.selectionChanged


def attach_meshes(
    viewer: napari.Viewer,
    labels_layer: Labels,
    panel: Any = None,
    *,
    source: MeshSource | None = None,
) -> MeshController:
    """Give a segmentation layer meshes: Ctrl+click toggles, table selection shows.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    labels_layer : napari.layers.Labels
        The segmentation layer.
    panel : AnnotationPanel or NeuronTable, optional
        If given, the meshes of the neurons selected in its neuron table are shown
        and those deselected hidden.
    source : MeshSource, optional
        Where meshes come from (default: from the layer's volume).

    Returns
    -------
    MeshController
        The controller (also found later with :func:`mesh_controller_of`).
    """
    existing = mesh_controller_of(labels_layer)
    controller = existing or MeshController(viewer, labels_layer, source)
    if existing is None:
        labels_layer.mouse_drag_callbacks.append(controller.on_mouse)
        controller._undo.append(lambda: _remove(labels_layer.mouse_drag_callbacks, controller))
    if panel is not None:
        selected: set[int] = set()

        def on_selection(ids: list[int]) -> None:
            now = {int(i) for i in ids}
            for segment in selected - now:
                controller.hide(segment)
            for segment in ids:
                controller.show(segment)
            selected.clear()
            selected.update(now)

        _selection_signal(panel).connect(on_selection)
        controller._undo.append(_disconnect(_selection_signal(panel), on_selection))
    return controller


def _remove(callbacks: list[Any], controller: MeshController) -> None:
    if controller.on_mouse in callbacks:
        callbacks.remove(controller.on_mouse)


def _disconnect(signal: Any, slot: Callable[..., None]) -> Callable[[], None]:
    def undo() -> None:
        with contextlib.suppress(TypeError, RuntimeError):  # already gone with its widget
            signal.disconnect(slot)

    return undo
