"""The "synapses" Points layer: the synapses in and around the view, refreshed as it moves.

Synapse points: the presynaptic site is red, the postsynaptic site blue; the outline is
the review status (white unreviewed, green verified, black rejected). The current synapse
is drawn twice as large. The store is re-queried (an indexed box query) when the view
settles, debounced with a ``QTimer``, on the main thread.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_connecto.geometry import BBox, Vec3

if TYPE_CHECKING:
    import napari
    from napari.layers import Points

    from napari_connecto.annotations.store import AnnotationStore

__all__ = [
    "MAX_OVERLAY_SYNAPSES",
    "OVERLAY_LAYER_NAME",
    "SynapseOverlay",
    "display_resolution",
    "view_box",
    "view_position",
]

OVERLAY_LAYER_NAME = "synapses"
MAX_OVERLAY_SYNAPSES = 2000
"""At most this many synapses (two points each) are in the overlay at once."""
OVERLAY_DEBOUNCE_MS = 150
"""The overlay is re-queried this long after the view stops moving."""
OVERLAY_MARGIN = 0.5
"""The overlay covers the view plus this fraction of its size on every side."""
POINT_SIZE = 12.0
"""Synapse point diameter in finest voxels (the current synapse is twice as large)."""
PRE_COLOR, POST_COLOR = "#ff3b30", "#2f7bff"
STATUS_BORDER = {"unreviewed": "#ffffff", "verified": "#34c759", "rejected": "#000000"}


def display_resolution(viewer: napari.Viewer) -> Vec3:
    """The finest voxel size (z, y, x) of the Image and Labels layers; 1 nm without any."""
    from napari.layers import Image, Labels

    scales = [
        np.asarray(layer.scale[-3:], dtype=float)
        for layer in viewer.layers
        if isinstance(layer, Image | Labels) and layer.ndim >= 3
    ]
    if not scales:
        return Vec3(1.0, 1.0, 1.0)
    return Vec3(*np.min(np.stack(scales), axis=0).tolist())


def view_position(viewer: napari.Viewer) -> Vec3:
    """The centre of the view in nm: the dims slider's z and the camera's y, x."""
    centre = viewer.scene.camera.center
    z = float(viewer.dims.point[-3]) if viewer.dims.ndim >= 3 else 0.0
    if viewer.dims.ndisplay == 3:
        z = float(centre[-3])
    return Vec3(z, float(centre[-2]), float(centre[-1]))


def view_box(viewer: napari.Viewer, *, margin: float = OVERLAY_MARGIN) -> BBox:
    """The box (nm) in view plus ``margin`` of its size on each side.

    In 2D the box is one section of the finest layer thick around the slider's z on
    either side; in 3D it is a cube as wide as the canvas shows.
    """
    height, width = (max(1, int(s)) for s in viewer.canvas.size)
    zoom = max(float(viewer.scene.camera.zoom), 1e-12)
    grow = 1.0 + 2.0 * margin
    centre = view_position(viewer)
    half_y, half_x = height / zoom / 2 * grow, width / zoom / 2 * grow
    three_d = viewer.dims.ndisplay == 3
    half_z = max(half_y, half_x) if three_d else display_resolution(viewer).z
    return BBox.around(centre, (2 * half_z, 2 * half_y, 2 * half_x))


class SynapseOverlay:
    """A Points layer with the synapses in and around the view, refreshed as it moves.

    Parameters
    ----------
    viewer : napari.Viewer
        Where to show them.
    store : AnnotationStore, optional
        Where they are; nothing is shown without one.
    max_synapses : int
        At most this many synapses at once (the first by id in the box).
    margin : float
        Share of the view's size queried beyond it on each side.
    debounce_ms : int
        Delay after the last view change before re-querying.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        store: AnnotationStore | None = None,
        *,
        max_synapses: int = MAX_OVERLAY_SYNAPSES,
        margin: float = OVERLAY_MARGIN,
        debounce_ms: int = OVERLAY_DEBOUNCE_MS,
    ) -> None:
        from qtpy.QtCore import QTimer

        self.viewer = viewer
        self.store = store
        self.max_synapses = int(max_synapses)
        self.margin = float(margin)
        self.layer: Points | None = None
        self.current: int | None = None
        self.synapses = pd.DataFrame()
        """The synapses shown (store columns)."""
        self.queries = 0
        """How many times the store was queried (for tests)."""
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(debounce_ms))
        self._timer.timeout.connect(self.refresh)
        self._sources = (
            viewer.scene.camera.events.center,
            viewer.scene.camera.events.zoom,
            viewer.dims.events.current_step,
            viewer.dims.events.ndisplay,
            viewer.canvas.events.size,
        )
        for emitter in self._sources:
            emitter.connect(self._on_view_changed)

    def _on_view_changed(self, event: Any = None) -> None:
        self._timer.start()

    def set_store(self, store: AnnotationStore | None) -> None:
        """Show the synapses of another store."""
        self.store = store
        self.refresh()

    def refresh(self) -> int:
        """Query the synapses around the view now and show them; return how many."""
        self._timer.stop()
        if self.store is None:
            frame = pd.DataFrame()
        else:
            frame = self.store.synapses_in_box(
                view_box(self.viewer, margin=self.margin), limit=self.max_synapses
            )
            self.queries += 1
        self.synapses = frame
        self._show()
        return len(frame)

    def _sizes(self) -> np.ndarray:
        ids = self.synapses["id"].to_numpy(dtype=np.uint64)
        big = (
            ids == np.uint64(self.current) if self.current is not None else np.zeros(len(ids), bool)
        )
        return np.tile(np.where(big, 2 * POINT_SIZE, POINT_SIZE), 2)

    def _contents(self) -> dict[str, Any]:
        """The layer's data (finest-voxel units), features, colours, sizes and scale."""
        frame, n = self.synapses, len(self.synapses)
        scale = np.asarray(display_resolution(self.viewer).as_tuple())
        if not n:
            features = pd.DataFrame({"synapse": np.empty(0, np.uint64), "site": [], "status": []})
            return {"data": np.empty((0, 3)), "features": features, "scale": scale}
        sites = [
            frame[[f"{s}_z", f"{s}_y", f"{s}_x"]].to_numpy(np.float64) for s in ("pre", "post")
        ]
        status = frame["status"].astype(str).to_numpy()
        features = pd.DataFrame(
            {
                "synapse": np.tile(frame["id"].to_numpy(dtype=np.uint64), 2),
                "site": np.repeat(["pre", "post"], n),
                "status": np.tile(status, 2),
            }
        )
        return {
            "data": np.concatenate(sites) / scale,
            "features": features,
            "scale": scale,
            "face_color": list(np.repeat([PRE_COLOR, POST_COLOR], n)),
            "border_color": [STATUS_BORDER.get(s, "#ffffff") for s in np.tile(status, 2)],
            "size": self._sizes(),
        }

    def _show(self) -> None:
        """Put the current synapses into the layer (created on first use)."""
        contents = self._contents()
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            self._add_layer(contents)
            return
        for name, value in contents.items():  # data first: colours and sizes follow it
            setattr(layer, name, value)

    def _add_layer(self, contents: dict[str, Any]) -> None:
        viewer = self.viewer
        active = viewer.layers.selection.active
        data = contents.pop("data")
        self.layer = viewer.add_points(
            data,
            ndim=3,
            name=OVERLAY_LAYER_NAME,
            border_width=0.15,
            border_width_is_relative=True,
            opacity=0.85,
            metadata={"connecto_synapses": True},
            **{"size": POINT_SIZE, "face_color": PRE_COLOR, **contents},
        )
        if active is not None:  # keep the layer the user works on active
            viewer.layers.selection.active = active

    def stop(self) -> None:
        """Stop following the view (the layer stays)."""
        with contextlib.suppress(RuntimeError):  # Qt deleted it already (app quitting)
            self._timer.stop()
        for emitter in self._sources:
            emitter.disconnect(self._on_view_changed)
        self._sources = ()

    def close(self) -> None:
        """Stop following the view and remove the layer."""
        self.stop()
        layer, self.layer = self.layer, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
