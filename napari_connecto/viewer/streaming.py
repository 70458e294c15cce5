"""The viewer bridge: streamed layers refresh on the main thread as their chunks arrive.

Worker threads never touch Qt or napari: they fill the cache and raise a flag on the
layer's :class:`~napari_connecto.cache.LayerStream`. A ``QTimer`` on the main thread
polls those flags, refreshing each changed layer at most once per tick (16 ms): however
many chunks arrived since, one refresh. It also updates the outline of failed chunks.
Every refresh costs a whole frame on the main thread, so while a view loads it is redrawn
when its coarse preview is complete, when a chunk of it failed and when it is sharp, and
otherwise only now and then; chunks only the layer list's thumbnail shows update the
thumbnail (at most once a second) without redrawing the canvas. The layers' wish lists
are planned on the service's planner thread, so the main thread only composes what is
cached. View changes (camera centre and zoom, dims, canvas size, 2D/3D) are debounced
with a second ``QTimer``; when the view settles the layers prefetch around it, and in 3D
each streamed layer is pinned to the finest level that fits.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.cache.level import StreamingLevel
from napari_connecto.cache.service import StreamingService, default_service

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from napari_connecto.cache.streaming import LayerStream

__all__ = [
    "MAX_3D_VOXELS",
    "StreamingController",
    "StreamingStatus",
    "controller_for",
    "stream_of",
    "wait_until_loaded",
]

logger = logging.getLogger(__name__)

REFRESH_INTERVAL_MS = 16
"""At most one refresh per layer per tick: one per frame at 60 Hz."""
REDRAW_SHARE_DIVISOR = 2.0
"""While a view loads, wait this many times a layer's last redraw cost before the next."""
PROGRESS_INTERVAL_S = 0.4
"""While a view loads, a partial redraw at most this often (after the last draw of it).

Each redraw costs a full frame on the main thread (slicing, texture upload, GL draw and
the window composition: ~35-45 ms under software GL). So while chunks stream in the view
is redrawn when its coarse preview is complete, when it is sharp, and otherwise at most
this often; every frame in between would only show a few more chunks."""
FINISHING_WAIT_S = 1.0
"""... and at most this often once every missing chunk of the view is being fetched."""
SETTLE_MS = 100
"""A view change counts as finished after this long without another."""
THUMBNAIL_INTERVAL_S = 1.0
"""Layer-list thumbnails are refreshed at most this often while data streams in."""
MAX_3D_VOXELS = 2**24
"""In 3D each streamed layer shows the finest level with at most this many voxels."""
MAX_3D_SIDE = 2048
"""... and no side longer than this (GL texture limits)."""
FAILED_LAYER_NAME = "failed chunks"


@dataclass(frozen=True, slots=True)
class StreamingStatus:
    """What the status panel shows: Neuroglancer-style chunk statistics."""

    queued: int
    loading: int
    failed: int
    fetched: int
    cache_bytes: int
    budget_bytes: int
    layers: int
    last_error: str = ""
    """Why the latest failed chunk failed, while any chunk is failed."""


def stream_of(layer: Layer) -> LayerStream | None:
    """The stream behind a layer's data, if it is a streamed volume."""
    data = getattr(layer, "data", None)
    if getattr(layer, "multiscale", False):
        data = data[0]
    return data.stream if isinstance(data, StreamingLevel) else None


class StreamingController:
    """Keeps the streamed layers of one viewer up to date. Create with :func:`controller_for`.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer to serve.
    service : StreamingService, optional
        Cache and scheduler; default the process-wide one.
    """

    def __init__(self, viewer: napari.Viewer, service: StreamingService | None = None) -> None:
        from qtpy.QtCore import QTimer

        self._viewer_ref = weakref.ref(viewer)
        self.service = service or default_service()
        self._layers: dict[int, tuple[weakref.ReferenceType[Layer], LayerStream]] = {}
        self._pinned_3d: set[int] = set()
        self._last_thumbnail = 0.0
        self._refresh_cost: dict[int, float] = {}
        self._last_refresh: dict[int, float] = {}
        self._failed_layer: Any = None
        self._tick = QTimer()
        self._tick.setInterval(REFRESH_INTERVAL_MS)
        self._tick.timeout.connect(self._on_tick)
        self._settle = QTimer()
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self._on_settled)
        self.refresh_count = 0
        """How many layer refreshes arriving chunks caused (for tests and benchmarks)."""
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.scene.camera.events.center.connect(self._on_view_changed)
        viewer.scene.camera.events.zoom.connect(self._on_view_changed)
        viewer.dims.events.current_step.connect(self._on_view_changed)
        viewer.dims.events.ndisplay.connect(self._on_view_changed)
        viewer.canvas.events.size.connect(self._on_view_changed)
        for layer in list(viewer.layers):
            self._adopt(layer)

    # -- layers ------------------------------------------------------------------------
    @property
    def viewer(self) -> napari.Viewer | None:
        """The viewer, while it exists."""
        return self._viewer_ref()

    def streams(self) -> list[tuple[Layer, LayerStream]]:
        """Every streamed layer still in the viewer, with its stream."""
        out = []
        for ref, stream in list(self._layers.values()):
            layer = ref()
            if layer is not None:
                out.append((layer, stream))
        return out

    def _on_inserted(self, event: Any) -> None:
        self._adopt(event.value)

    def _on_removed(self, event: Any) -> None:
        self._release(event.value)
        if not self._layers:
            self._tick.stop()

    def _release(self, layer: Layer) -> None:
        entry = self._layers.pop(id(layer), None)
        if entry is None:
            return
        stream = entry[1]
        if not any(other is stream for _, other in self.streams()):  # not shared
            stream.close()

    def _adopt(self, layer: Layer) -> None:
        stream = stream_of(layer)
        if stream is None or id(layer) in self._layers:
            return
        ref = weakref.ref(layer)

        def current_level() -> int:
            lay = ref()
            return int(lay.data_level) if lay is not None and lay.multiscale else 0

        def visibility_changed(event: Any = None) -> None:
            lay = ref()
            if lay is not None and not lay.visible:
                stream.pause()

        def data_changed(event: Any = None) -> None:
            lay = ref()
            if lay is not None and stream_of(lay) is not stream:
                self._release(lay)
                lay.events.data.disconnect(data_changed)
                lay.events.visible.disconnect(visibility_changed)
                self._adopt(lay)

        if not stream.streaming:
            stream.reopen()
        stream.current_level = current_level
        stream.planner = self.service.planner  # wish lists are planned off the main thread
        layer.events.visible.connect(visibility_changed)
        layer.events.data.connect(data_changed)
        self._layers[id(layer)] = (ref, stream)
        self._tick.start()
        if self.viewer is not None and self.viewer.dims.ndisplay == 3:
            self._fit_3d(layer)

    # -- ticks (main thread) -------------------------------------------------------------
    def _on_tick(self) -> None:
        now = time.monotonic()
        thumbnails = now - self._last_thumbnail >= THUMBNAIL_INTERVAL_S
        refreshed = False
        for layer, stream in self.streams():
            if not stream.peek_dirty():
                if thumbnails and stream.peek_thumbnail_dirty():
                    # only the layer list's thumbnail changed: slice it anew, but leave
                    # the canvas alone (a redraw costs a whole frame)
                    stream.take_thumbnail_dirty()
                    layer.refresh(data_displayed=False, extent=False, highlight=False)
                    refreshed = True
                continue
            complete = stream.complete()
            if not (complete or stream.preview_ready() or stream.failed_unseen()):
                # While chunks still stream in, redraw sparingly: each redraw is a whole
                # frame on the main thread, which holds the interpreter lock the fetch
                # threads need all along (Qt composes the window under it). The preview,
                # a failure and the last chunk of the view draw at once; when all missing
                # is already on its way, wait for it rather than draw a partial frame.
                quiet = max(
                    FINISHING_WAIT_S if stream.finishing() else PROGRESS_INTERVAL_S,
                    self._refresh_cost.get(id(layer), 0.0) * REDRAW_SHARE_DIVISOR,
                )
                last = max(self._last_refresh.get(id(layer), 0.0), stream.last_read)
                if now - last < quiet:
                    continue
            stream.take_dirty()
            started = time.monotonic()
            # thumbnails repaint the layer list: only once nothing more is on its way
            final = complete or self.service.scheduler.idle()
            if thumbnails and final:
                stream.take_thumbnail_dirty()  # this refresh shows the thumbnail too
            layer.refresh(thumbnail=thumbnails and final, extent=False, highlight=False)
            done = time.monotonic()
            self._refresh_cost[id(layer)] = done - started
            self._last_refresh[id(layer)] = done
            self.refresh_count += 1
            refreshed = refreshed or final
        if refreshed and thumbnails:
            self._last_thumbnail = now
        outline = self._failed_layer
        if self.service.scheduler.has_failures() or (outline is not None and outline.visible):
            self._update_failed_outline()

    def _on_view_changed(self, event: Any = None) -> None:
        self._settle.start()

    def _on_settled(self) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        three_d = viewer.dims.ndisplay == 3
        for layer, stream in self.streams():
            if three_d:
                self._fit_3d(layer)
            else:
                self._unfit_3d(layer)
                stream.settle()

    def prefetch_locations(self, positions_nm: np.ndarray) -> int:
        """Fetch, at prefetch priority, the views the user is likely to jump to next.

        For every visible streamed layer, one view-sized region (the size of what the
        layer shows now, at its current level, on the section of the position) is hinted
        around each position; earlier positions first. A new call replaces the last.

        Parameters
        ----------
        positions_nm : numpy.ndarray
            ``(N, 3)`` world positions, z, y, x nm (e.g. the next synapses to review).

        Returns
        -------
        int
            Blocks that were not cached and are now wanted.
        """
        viewer = self.viewer
        if viewer is None or viewer.dims.ndisplay != 2:
            return 0
        points = np.asarray(positions_nm, dtype=np.float64).reshape(-1, 3)
        wanted = 0
        for layer, stream in self.streams():
            shown = stream.shown
            if not layer.visible or shown is None or layer.ndim != 3:
                continue
            level, start, stop = shown
            factor = np.asarray(layer.downsample_factors[level]) if layer.multiscale else np.ones(3)
            half = (np.asarray(stop) - np.asarray(start)) / 2
            centres = (points - np.asarray(layer.translate)) / np.asarray(layer.scale) / factor
            regions = []
            for centre in centres:
                lo = np.floor(centre - half).astype(int)
                hi = np.ceil(centre + half).astype(int)
                lo[0], hi[0] = math.floor(centre[0]), math.floor(centre[0]) + 1
                regions.append((tuple(lo.tolist()), tuple(hi.tolist())))
            wanted += stream.hint(regions, level=level)
        return wanted

    # -- 3D --------------------------------------------------------------------------------
    def _fit_3d(self, layer: Layer) -> None:
        if not layer.multiscale or layer.locked_data_level is not None:
            return
        shapes = [tuple(level.shape) for level in layer.data]
        fitting = [
            i
            for i, shape in enumerate(shapes)
            if math.prod(shape) <= MAX_3D_VOXELS and max(shape) <= MAX_3D_SIDE
        ]
        layer.locked_data_level = fitting[0] if fitting else len(shapes) - 1
        self._pinned_3d.add(id(layer))

    def _unfit_3d(self, layer: Layer) -> None:
        if id(layer) in self._pinned_3d:
            self._pinned_3d.discard(id(layer))
            layer.locked_data_level = None

    # -- failures ---------------------------------------------------------------------------
    def _update_failed_outline(self) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        rects = []
        if viewer.dims.ndisplay == 2:
            for layer, stream in self.streams():
                if not layer.visible:
                    continue
                for failed in stream.failed_blocks():
                    rects.append(self._world_rect(layer, failed.level, failed.start, failed.stop))
        self._show_failed(viewer, rects)

    @staticmethod
    def _world_rect(
        layer: Layer, level: int, start: tuple[int, ...], stop: tuple[int, ...]
    ) -> np.ndarray:
        factor = np.asarray(layer.downsample_factors[level]) if layer.multiscale else np.ones(3)
        scale, translate = np.asarray(layer.scale), np.asarray(layer.translate)
        lo = translate + np.asarray(start) * factor * scale
        hi = translate + np.asarray(stop) * factor * scale
        return np.array([[lo[1], lo[2]], [lo[1], hi[2]], [hi[1], hi[2]], [hi[1], lo[2]]])

    def _show_failed(self, viewer: napari.Viewer, rects: list[np.ndarray]) -> None:
        # The outline layer is emptied and hidden, never removed: removing a Shapes layer
        # can crash vispy's GL drawing under Mesa (napari issue #6472).
        layer = self._failed_layer
        if layer is not None and layer not in viewer.layers:
            layer = self._failed_layer = None
        if layer is None:
            if not rects:
                return
            self._failed_layer = viewer.add_shapes(
                rects,
                shape_type="polygon",
                name=FAILED_LAYER_NAME,
                edge_color="#ff3b30",
                face_color=[1.0, 0.23, 0.19, 0.25],
                edge_width=float(np.ptp(rects[0][:, 0])) / 24 or 1.0,
                metadata={"connecto_failed_chunks": True},
            )
            viewer.layers.selection.clear()
            return
        same = len(layer.data) == len(rects) and all(
            np.allclose(a, b) for a, b in zip(layer.data, rects, strict=True)
        )
        if not same:
            if rects:
                layer.data = rects
                layer.shape_type = "polygon"
            else:
                layer.data = []
        layer.visible = bool(rects)

    def failed_outline(self) -> list[np.ndarray]:
        """The outlines (y, x corners in nm) of failed chunks now shown in the viewer."""
        layer = self._failed_layer
        if layer is None or not layer.visible:
            return []
        return [np.asarray(r) for r in layer.data]

    # -- status and commands ---------------------------------------------------------------
    def status(self) -> StreamingStatus:
        """Chunk statistics and cache use right now."""
        sched = self.service.scheduler.stats()
        cache = self.service.cache.stats()
        return StreamingStatus(
            queued=sched.queued,
            loading=sched.loading,
            failed=sched.failed,
            fetched=sched.fetched,
            cache_bytes=cache.nbytes,
            budget_bytes=cache.budget,
            layers=len(self._layers),
            last_error=sched.last_error,
        )

    def retry_failed(self) -> int:
        """Fetch every failed chunk in view again now; return how many."""
        count = self.service.scheduler.retry_failed()
        for _, stream in self.streams():
            stream.mark_dirty()
        return count

    def settled(self) -> bool:
        """Whether every wanted chunk has arrived or failed for good and every layer is drawn."""
        if self._settle.isActive() or not self.service.planner.idle():
            return False
        if not self.service.scheduler.idle():
            return False
        return not any(
            stream.peek_dirty() or stream.peek_thumbnail_dirty() for _, stream in self.streams()
        )

    def close(self) -> None:
        """Stop refreshing and release every stream."""
        self._tick.stop()
        self._settle.stop()
        for _, stream in self.streams():
            stream.close()
        self._layers.clear()


_controllers: dict[int, StreamingController] = {}


def controller_for(viewer: napari.Viewer) -> StreamingController:
    """The streaming controller of ``viewer``, created on first use."""
    controller = _controllers.get(id(viewer))
    if controller is None or controller.viewer is not viewer:
        controller = StreamingController(viewer)
        _controllers[id(viewer)] = controller
        weakref.finalize(viewer, _controllers.pop, id(viewer), None)
    return controller


def wait_until_loaded(viewer: napari.Viewer, timeout: float = 30.0) -> bool:
    """Process Qt events until the streamed layers of ``viewer`` are complete.

    Returns whether they completed within ``timeout`` seconds (for screenshots and tests).
    """
    from qtpy.QtWidgets import QApplication

    controller = controller_for(viewer)
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        QApplication.processEvents()
        if controller.settled():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 2 * REFRESH_INTERVAL_MS / 1000:
                return True
        else:
            quiet_since = None
        time.sleep(0.005)
    return False
