"""Skeletons in the viewer: nodes as a Points layer, edges as a Vectors layer, click to jump.

Both layers hold data in voxels of a display resolution (by default the finest
Image/Labels layer's voxel size) with ``scale`` set to that resolution, like the
volume layers, so their world coordinates are the skeleton's nm positions and a
2-D slice shows the nodes of the current section. Every edge is stored in both
directions, so in 2-D each node shows its edges to the neighbouring sections; in
3-D the whole skeleton is drawn. Both layer types slice and draw thousands of
nodes in one vectorised pass (a Shapes layer of paths triangulates every path).

Clicking a node in pan/zoom mode (press and release without dragging, nodes layer
selected) centres the view on it with :func:`~napari_connecto.viewer.launch.go_to`.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.errors import ConnectoError
from napari_connecto.viewer.launch import go_to
from napari_connecto.viewer.synapse_overlay import display_resolution

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    import napari
    from napari.layers import Points, Vectors

    from napari_connecto.objects.skeleton import Skeleton
    from napari_connecto.source import SourceLike

__all__ = [
    "DEFAULT_COLOR",
    "SkeletonController",
    "add_skeleton",
    "controller_of",
    "node_sizes",
    "show_segment_skeleton",
]

logger = logging.getLogger(__name__)

DEFAULT_COLOR = "#ffd60a"
"""Skeleton colour when none is given (a yellow that stands out on EM and labels)."""
NODE_SIZE = 3.0
"""Node diameter in display voxels (screen size kept between :data:`NODE_SCREEN_PX`)."""
NODE_SCREEN_PX = (5.0, 24.0)
RADIUS_SCREEN_PX = (3.0, 2000.0)
"""Screen size limits of nodes drawn at their radius (true size when zoomed in)."""
EDGE_WIDTH = 2.0
_UNITS = ("nm", "nm", "nm")
_CONTROLLERS: weakref.WeakValueDictionary[int, SkeletonController] = weakref.WeakValueDictionary()
"""Controllers by ``id`` of their layers (each layer's click callback keeps its controller)."""


_RUNNING: set[Any] = set()
"""Skeleton loads under way (held so their results arrive)."""


def controller_of(layer: Any) -> SkeletonController | None:
    """The controller of a skeleton's nodes or edges layer, else ``None``."""
    found = _CONTROLLERS.get(id(layer))
    return found if found is not None and layer in (found.nodes, found.edges) else None


class SkeletonController:
    """The two layers of one skeleton and the click-to-jump behaviour.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (held weakly).
    skeleton : Skeleton
        The skeleton shown.
    nodes : napari.layers.Points
        Its nodes.
    edges : napari.layers.Vectors
        Its edges.
    """

    def __init__(
        self, viewer: napari.Viewer, skeleton: Skeleton, nodes: Points, edges: Vectors
    ) -> None:
        self._viewer = weakref.ref(viewer)
        self.skeleton = skeleton
        self.nodes = nodes
        self.edges = edges
        self.jumps: list[int] = []
        nodes.mouse_drag_callbacks.append(self._on_press)
        _CONTROLLERS[id(nodes)] = self
        _CONTROLLERS[id(edges)] = self

    @property
    def viewer(self) -> napari.Viewer | None:
        """The viewer, while it exists."""
        return self._viewer()

    def position_of(self, node: int) -> tuple[float, float, float]:
        """The nm position (z, y, x) of ``node``."""
        return tuple(float(v) for v in self.skeleton.vertices[int(node)])  # type: ignore[return-value]

    def jump_to(self, node: int) -> None:
        """Centre the view on ``node``, keeping the zoom."""
        viewer = self.viewer
        if viewer is None:
            return
        self.jumps.append(int(node))
        go_to(viewer, self.position_of(node), zoom=viewer.scene.camera.zoom)
        viewer.status = f"skeleton node {int(node)} at {self._describe(node)}"

    def _describe(self, node: int) -> str:
        z, y, x = self.position_of(node)
        return f"z={z:.0f} y={y:.0f} x={x:.0f} nm"

    def _on_press(self, layer: Points, event: Any) -> Generator[None, None, None]:
        """Mouse press: remember the node under the cursor; jump on release if not dragged."""
        if layer.mode != "pan_zoom" or getattr(event, "button", 1) != 1:
            return
        node = layer.get_value(
            event.position,
            view_direction=event.view_direction,
            dims_displayed=list(event.dims_displayed),
            world=True,
        )
        if node is None:
            return
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        if not moved:
            self.jump_to(int(node))

    def remove(self) -> None:
        """Remove both layers from the viewer."""
        if self._on_press in self.nodes.mouse_drag_callbacks:
            self.nodes.mouse_drag_callbacks.remove(self._on_press)
        viewer = self.viewer
        if viewer is None:
            return
        for layer in (self.edges, self.nodes):
            if layer in viewer.layers:
                viewer.layers.remove(layer)


def add_skeleton(
    viewer: napari.Viewer,
    skeleton: Skeleton,
    name: str | None = None,
    color: Any = None,
    *,
    resolution: Sequence[float] | None = None,
) -> SkeletonController:
    """Show ``skeleton`` in ``viewer``, aligned in nm with the volume layers.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (3-D data expected; the skeleton is z, y, x).
    skeleton : Skeleton
        The skeleton, nm, z, y, x.
    name : str, optional
        Layer name (nodes); the edges layer is ``"<name> edges"``. Default
        ``"skeleton <segment id>"``.
    color : color, optional
        Any napari colour; default :data:`DEFAULT_COLOR`.
    resolution : sequence of float, optional
        Display voxel size (z, y, x nm); default the finest Image/Labels layer's.

    Returns
    -------
    SkeletonController
        The layers; clicking a node jumps to it.
    """
    from napari.utils.colormaps.standardize_color import transform_color

    res = np.asarray(
        resolution if resolution is not None else display_resolution(viewer).as_tuple(),
        dtype=np.float64,
    )
    rgba = transform_color(DEFAULT_COLOR if color is None else color)[0]
    name = name or (
        f"skeleton {skeleton.segment_id}" if skeleton.segment_id is not None else "skeleton"
    )
    data = skeleton.vertices.astype(np.float64) / res
    metadata = {"connecto_skeleton": True, "connecto_segment_id": skeleton.segment_id}
    edges = viewer.add_vectors(
        _edge_vectors(data, skeleton.edges),
        name=f"{name} edges",
        scale=res,
        units=_UNITS,
        edge_color=rgba,
        edge_width=EDGE_WIDTH,
        vector_style="line",
        projection_mode="all",
        metadata=dict(metadata),
    )
    features = {"node": np.arange(skeleton.num_vertices)}
    sizes, limits = node_sizes(skeleton, res), NODE_SCREEN_PX
    if skeleton.radius is not None and skeleton.radius.ndim == 1:
        features["radius_nm"] = skeleton.radius
        limits = RADIUS_SCREEN_PX
    nodes = viewer.add_points(
        data,
        name=name,
        scale=res,
        units=_UNITS,
        size=sizes,
        face_color=rgba,
        border_width=0,
        canvas_size_limits=limits,
        projection_mode="all",
        features=features,
        metadata=dict(metadata),
    )
    nodes.mode = "pan_zoom"
    return SkeletonController(viewer, skeleton, nodes, edges)


def node_sizes(skeleton: Skeleton, resolution: np.ndarray) -> np.ndarray:
    """Node diameters in display voxels: twice the radius where a skeleton has one.

    Parameters
    ----------
    skeleton : Skeleton
        The skeleton (its ``"radius"`` attribute in nm, if any).
    resolution : numpy.ndarray
        Display voxel size, z, y, x nm; points are sized in its in-plane (y, x) mean.

    Returns
    -------
    numpy.ndarray
        One diameter per vertex; :data:`NODE_SIZE` where a node has no usable radius
        (none stored, zero, negative or not finite).
    """
    sizes = np.full(skeleton.num_vertices, NODE_SIZE, dtype=np.float64)
    radius = skeleton.radius
    if radius is None or radius.ndim != 1:
        return sizes
    r = radius.astype(np.float64)
    usable = np.isfinite(r) & (r > 0)
    sizes[usable] = 2.0 * r[usable] / float(np.mean(resolution[-2:]))
    return sizes


def _edge_vectors(data: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Vectors data (2E, 2, 3): each edge from both of its ends."""
    if not len(edges):
        return np.zeros((0, 2, 3), dtype=np.float32)
    a, b = data[edges[:, 0]], data[edges[:, 1]]
    starts = np.concatenate([a, b])
    directions = np.concatenate([b - a, a - b])
    return np.stack([starts, directions], axis=1).astype(np.float32)


def show_segment_skeleton(
    viewer: napari.Viewer,
    volume_source: SourceLike,
    segment_id: int,
    *,
    color: Any = None,
    on_done: Callable[[SkeletonController | None], None] | None = None,
) -> Any:
    """Load a segment's precomputed skeleton on a worker thread, then show it.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    volume_source : str, os.PathLike or Source
        A precomputed segmentation whose ``info`` names ``"skeletons"`` (local or URL).
    segment_id : int
        The segment.
    color : color, optional
        Skeleton colour.
    on_done : callable, optional
        Called on the main thread with the controller, or ``None`` if loading failed
        (the error is then logged and shown in the status bar).

    Returns
    -------
    superqt.utils.FunctionWorker
        The started worker (its ``finished`` signal fires after the layers are added).
    """
    from superqt.utils import create_worker

    from napari_connecto.objects.precomputed_skeletons import read_skeleton

    viewer_ref = weakref.ref(viewer)
    worker = create_worker(read_skeleton, volume_source, int(segment_id), _ignore_errors=True)

    def added(skeleton: Skeleton) -> None:
        target = viewer_ref()
        if target is None:
            return
        controller = add_skeleton(target, skeleton, color=color)
        if on_done is not None:
            on_done(controller)

    def failed(exc: BaseException) -> None:
        text = f"no skeleton for segment {segment_id}: {exc}"
        if isinstance(exc, ConnectoError | OSError | ValueError):
            logger.warning("%s", text)
        else:
            logger.error("%s", text, exc_info=exc)
        target = viewer_ref()
        if target is not None:
            target.status = text
        if on_done is not None:
            on_done(None)

    worker.returned.connect(added)
    worker.errored.connect(failed)
    _RUNNING.add(worker)  # a menu action drops the worker it returns: keep it until done
    worker.finished.connect(lambda: _RUNNING.discard(worker))
    worker.start()
    return worker
