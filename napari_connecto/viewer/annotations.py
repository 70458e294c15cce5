"""Annotation glue for napari: jump to neurons and synapses, show synapses near the view.

The docked tables live in :mod:`napari_connecto._qt.annotation_panel`; this module holds
what touches the viewer: moving the view (dims z, camera centre, zoom) to a neuron's
keypoint or a synapse, highlighting the neuron in a Labels layer, review key bindings,
and prefetching the chunks around the synapses to review next. The "synapses" Points
layer is :mod:`napari_connecto.viewer.synapse_overlay`. Everything runs on the main
thread; the store queries involved are indexed and fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.geometry import Vec3
from napari_connecto.viewer.launch import go_to
from napari_connecto.viewer.synapse_overlay import (
    MAX_OVERLAY_SYNAPSES,
    OVERLAY_LAYER_NAME,
    SynapseOverlay,
    view_box,
    view_position,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

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
