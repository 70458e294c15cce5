"""Annotation glue for napari: jump to neurons and synapses, show synapses near the view.

The docked tables live in :mod:`napari_connecto._qt.annotation_panel`; this module holds
what touches the viewer: moving the view (dims z, camera centre, zoom) to a neuron's
keypoint or a synapse, highlighting the neuron in a Labels layer, a "synapses" Points
layer holding only the synapses in and around the view (re-queried when the view
settles, debounced with a ``QTimer``), review key bindings, and prefetching the chunks
around the synapses to review next. Everything runs on the main thread; the store
queries involved are indexed and fast.

Synapse points: the presynaptic site is red, the postsynaptic site blue; the outline
is the review status (white unreviewed, green verified, black rejected). The current
synapse is drawn twice as large.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_connecto.geometry import BBox, Vec3
from napari_connecto.viewer.launch import go_to

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels, Points

    from napari_connecto._qt.annotation_panel import AnnotationPanel
    from napari_connecto._qt.bookmarks import NotePrompt
    from napari_connecto.annotations.store import AnnotationStore

__all__ = [
    "MAX_OVERLAY_SYNAPSES", "OVERLAY_LAYER_NAME", "REVIEW_KEYS", "AnnotationNavigator",
    "SynapseOverlay", "attach_annotations", "bind_review_keys", "find_labels_layer",
    "go_to_neuron", "go_to_synapse", "highlight_neuron", "neuron_location",
    "prefetch_locations", "view_box", "view_position",
]  # fmt: skip

REVIEW_KEYS: dict[str, str] = {
    "next": ".", "previous": ",", "verify": "K", "reject": "J", "unreview": "U",
    "bookmark": "Shift+B",
}  # fmt: skip
"""Viewer keys of the review actions. None is bound by napari to the viewer or to any
layer type (V, X and B are: layer visibility, label swap and preserve labels), so they
work whichever layer is active."""
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


def find_labels_layer(viewer: napari.Viewer) -> Labels | None:
    """The first Labels layer of ``viewer`` (bottom of the layer list first), or ``None``."""
    from napari.layers import Labels

    return next((layer for layer in viewer.layers if isinstance(layer, Labels)), None)


def highlight_neuron(layer: Labels | None, neuron: int | None) -> None:
    """Show only ``neuron`` in a Labels layer (``None``: show every label again)."""
    if layer is None:
        return
    if neuron is None:
        layer.show_selected_label = False
        return
    layer.selected_label = int(neuron)
    layer.show_selected_label = True


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


def neuron_location(store: AnnotationStore, neuron: int) -> Vec3 | None:
    """Where to show a neuron: its keypoint, else its first synapse, else ``None``."""
    try:
        keypoint = store.neuron_keypoint(neuron)
    except KeyError:
        keypoint = None
    if keypoint is not None:
        return keypoint
    first = store.synapses(neuron, stop=1, include_self=True)
    if not len(first):
        return None
    return Vec3(*(float(first[c].iloc[0]) for c in ("z", "y", "x")))


def go_to_neuron(
    viewer: napari.Viewer,
    store: AnnotationStore,
    neuron: int,
    *,
    labels_layer: Labels | None = None,
    zoom: float | None = None,
) -> Vec3 | None:
    """Centre the view on a neuron (see :func:`neuron_location`) and highlight it.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer to move.
    store : AnnotationStore
        Where the neuron is.
    neuron : int
        Its id.
    labels_layer : napari.layers.Labels, optional
        Where to highlight it; default the first Labels layer.
    zoom : float, optional
        Camera zoom; default that of :func:`~napari_connecto.viewer.launch.go_to`.

    Returns
    -------
    Vec3 or None
        Where the view went; ``None`` if the neuron has no location (it is still
        highlighted).
    """
    at = neuron_location(store, neuron)
    if at is not None:
        go_to(viewer, at.as_tuple(), zoom=zoom)
    highlight_neuron(labels_layer or find_labels_layer(viewer), neuron)
    return at


def go_to_synapse(
    viewer: napari.Viewer,
    store: AnnotationStore,
    synapse: int,
    *,
    neuron: int | None = None,
    labels_layer: Labels | None = None,
    zoom: float | None = None,
) -> Vec3:
    """Centre the view on a synapse and highlight ``neuron`` (if given).

    Returns
    -------
    Vec3
        The synapse centre in nm.

    Raises
    ------
    KeyError
        No such synapse.
    """
    at = store.synapse_location(synapse)
    go_to(viewer, at.as_tuple(), zoom=zoom)
    if neuron is not None:
        highlight_neuron(labels_layer or find_labels_layer(viewer), neuron)
    return at


def prefetch_locations(viewer: napari.Viewer, positions_nm: np.ndarray) -> int:
    """Ask the streaming controller to fetch the chunks around ``positions_nm`` (N, 3).

    Returns how many chunks were queued (0 when nothing streams or nothing is given).
    """
    positions = np.asarray(positions_nm, dtype=np.float64).reshape(-1, 3)
    if not positions.size:
        return 0
    from napari_connecto.viewer.streaming import controller_for

    controller = controller_for(getattr(viewer, "__wrapped__", viewer))
    prefetch = getattr(controller, "prefetch_locations", None)
    return int(prefetch(positions)) if prefetch is not None else 0


def bind_review_keys(
    viewer: napari.Viewer,
    actions: Mapping[str, Callable[[], object]],
    keys: Mapping[str, str] = REVIEW_KEYS,
) -> Callable[[], None]:
    """Bind ``actions`` (by name, keys from ``keys``) on the viewer; return the unbinder.

    The unbinder restores whatever the viewer had bound to those keys before (if the
    bindings are still ours).
    """
    from napari.utils.key_bindings import coerce_keybinding

    bound: list[tuple[str, Callable[..., Any], Any]] = []
    for name, action in actions.items():
        key = keys[name]

        def handler(_viewer: Any, _action: Callable[[], object] = action) -> None:
            _action()

        handler.__doc__ = f"Annotation review: {name.replace('_', ' ')}"
        previous = viewer.bind_key(key, handler, overwrite=True)
        bound.append((key, handler, previous))

    def unbind() -> None:
        for key, handler, previous in reversed(bound):
            if viewer.keymap.get(coerce_keybinding(key)) is handler:
                viewer.bind_key(key, previous, overwrite=True)
        bound.clear()

    return unbind


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


class AnnotationNavigator:
    """Moves one viewer to neurons, synapses and places, keeping the user's zoom.

    The first jump uses the default zoom of :func:`~napari_connecto.viewer.launch.go_to`;
    once the user zooms, later jumps keep their zoom.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    store : AnnotationStore, optional
        Where neurons and synapses are.
    labels_layer : napari.layers.Labels, optional
        Where to highlight neurons; default the first Labels layer at each jump.
    overlay : bool
        Whether to show the synapses near the view as a Points layer.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        store: AnnotationStore | None = None,
        *,
        labels_layer: Labels | None = None,
        overlay: bool = True,
    ) -> None:
        self.viewer = viewer
        self.store = store
        self.labels_layer = labels_layer
        self.overlay = SynapseOverlay(viewer, store) if overlay else None
        self._zoom_after_jump: float | None = None
        self._highlighting = False
        if self.overlay is not None and store is not None:
            self.overlay.refresh()

    def set_store(self, store: AnnotationStore | None) -> None:
        """Navigate in another store."""
        self.store = store
        if self.overlay is not None:
            self.overlay.set_store(store)

    def labels(self) -> Labels | None:
        """The Labels layer to highlight in (the given one while it is in the viewer)."""
        layer = self.labels_layer
        if layer is not None and layer in self.viewer.layers:
            return layer
        return find_labels_layer(self.viewer)

    def _zoom(self) -> float | None:
        zoom = float(self.viewer.scene.camera.zoom)
        if self._zoom_after_jump is None or np.isclose(zoom, self._zoom_after_jump):
            return None
        return zoom

    def _moved(self) -> None:
        self._zoom_after_jump = float(self.viewer.scene.camera.zoom)
        if self.overlay is not None:
            self.overlay.refresh()

    def go_to(self, at: Sequence[float]) -> None:
        """Centre the view on ``at`` (z, y, x nm)."""
        go_to(self.viewer, tuple(at), zoom=self._zoom())
        self._moved()

    def neuron(self, neuron: int) -> Vec3 | None:
        """Go to a neuron and highlight it; see :func:`go_to_neuron`."""
        if self.store is None:
            return None
        at = go_to_neuron(
            self.viewer, self.store, neuron, labels_layer=self.labels(), zoom=self._zoom()
        )
        self._highlighting = True
        self._moved()
        return at

    def synapse(self, synapse: int, *, neuron: int | None = None) -> Vec3 | None:
        """Go to a synapse and highlight ``neuron``; ``None`` if the synapse is unknown."""
        if self.store is None:
            return None
        try:
            at = go_to_synapse(self.viewer, self.store, synapse, neuron=neuron,
                               labels_layer=self.labels(), zoom=self._zoom())  # fmt: skip
        except KeyError:
            return None
        if self.overlay is not None:
            self.overlay.current = int(synapse)
        self._highlighting = self._highlighting or neuron is not None
        self._moved()
        return at

    def highlight(self, neuron: int | None) -> None:
        """Highlight a neuron without moving (``None``: undo a highlight of ours)."""
        if neuron is None and not self._highlighting:
            return  # leave a Labels layer the user set up alone
        self._highlighting = neuron is not None
        highlight_neuron(self.labels(), neuron)

    def prefetch(self, positions_nm: np.ndarray) -> int:
        """Fetch the chunks around upcoming locations; see :func:`prefetch_locations`."""
        return prefetch_locations(self.viewer, positions_nm)

    def close(self, *, remove_layer: bool = True) -> None:
        """Stop the overlay and remove its layer (or keep it, e.g. when the viewer closes)."""
        if self.overlay is not None:
            if remove_layer:
                self.overlay.close()
            else:
                self.overlay.stop()


def attach_annotations(
    viewer: napari.Viewer,
    store: AnnotationStore,
    *,
    neuron: int | None = None,
    labels_layer: Labels | None = None,
    area: str = "right",
    note_prompt: NotePrompt | None = None,
) -> AnnotationPanel:
    """Dock the annotation tables of ``store`` in ``viewer``; select ``neuron`` if given.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    store : AnnotationStore
        The neurons, synapses and bookmarks.
    neuron : int, optional
        A neuron to select (and go to) at once.
    labels_layer : napari.layers.Labels, optional
        Where to highlight neurons; default the first Labels layer.
    area : str
        Dock area: ``"right"``, ``"left"``, ``"bottom"`` or ``"top"``.
    note_prompt : callable, optional
        How bookmark notes are asked for (default a dialog).

    Returns
    -------
    AnnotationPanel
        The docked panel (its review keys are bound until it closes).
    """
    from napari_connecto._qt.annotation_panel import AnnotationPanel

    panel = AnnotationPanel(viewer, store, labels_layer=labels_layer, note_prompt=note_prompt)
    viewer.window.add_dock_widget(panel, name="Annotations", area=area)
    if neuron is not None:
        panel.select_neuron(int(neuron))
    return panel
