"""Edit modes of a proofreading session: what shift-clicks do, finishing, undo keys.

*merge* (shift-click two segments), *split* (shift-click the segment, then the
fragments to cut off, then finish: a cleave), *synapse* (shift-click the pre site, then
post sites, then finish); the mode is written on the canvas. Ctrl+Z / Ctrl+Shift+Z
undo and redo through the journal. Mixed into
:class:`~napari_connecto.viewer.proofreading.ProofreadingSession`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels

    from napari_connecto.proofreading.proofreader import Proofreader

__all__ = ["MODES", "EditModes"]

MODES = ("navigate", "merge", "split", "synapse")
_MODE_TEXT = {
    "merge": "MERGE: shift-click two segments",
    "split": "SPLIT: shift-click segment, then fragments",
    "synapse": "SYNAPSE: shift-click pre, then post sites",
}
_MODE_COLOR = {"merge": "#ffcc00", "split": "#ff6b6b", "synapse": "#00c7ff"}


class EditModes:
    """Modes, picks and key bindings of a proofreading session."""

    layer: Labels
    proofreader: Proofreader
    mode: str
    picks: list[tuple[int, np.ndarray]]
    synapse_sites: list[np.ndarray]
    notify: Callable[[str, bool], None]
    bind_target: Callable[[Any], None]

    if TYPE_CHECKING:  # provided by ProofreadingSession

        @property
        def viewer(self) -> napari.Viewer | None: ...  # noqa: D102

        def _submit(
            self, work: Callable[[], Any], done: Callable[[Any], None] | None = None
        ) -> Future[Any]: ...

        def merge(self, keep: int, absorb: int) -> Future[Any]: ...  # noqa: D102

        def cleave(self, segment: int, fragments: list[int]) -> Future[Any]: ...  # noqa: D102

        def add_synapse(self, pre: np.ndarray, posts: list[np.ndarray]) -> Future[Any]: ...  # noqa: D102

        def undo(self) -> Future[Any]: ...  # noqa: D102

        def redo(self) -> Future[Any]: ...  # noqa: D102

    def set_mode(self, mode: str) -> None:
        """Switch to ``navigate``, ``merge``, ``split`` or ``synapse``; the canvas shows it."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.picks = []
        self.synapse_sites = []
        viewer = self.viewer
        if viewer is None:
            return
        overlay = viewer.canvas.overlays.text
        overlay.visible = mode != "navigate"
        overlay.text = _MODE_TEXT.get(mode, "")
        overlay.color = _MODE_COLOR.get(mode, "white")
        overlay.font_size = 14
        overlay.position = "top_center"

    def pick(self, position_nm: np.ndarray) -> Future[Any]:
        """What a shift-click at ``position_nm`` does in the current mode."""
        pr = self.proofreader
        pos = self._voxel_centre(np.asarray(position_nm, dtype=np.float64)[-3:])
        if self.mode == "synapse":
            self.synapse_sites.append(pos)
            role = "pre" if len(self.synapse_sites) == 1 else "post"
            self.notify(f"{role} site {len(self.synapse_sites)} at {np.round(pos).tolist()}", False)
            return self._submit(lambda: None)
        if self.mode == "merge":
            return self._submit(
                lambda: int(pr.segment_at(pos)[0]), lambda s: self._merge_pick(s, pos)
            )
        if self.mode == "split":
            return self._submit(
                lambda: (int(pr.segment_at(pos)[0]), int(pr.fragment_at(pos)[0])),
                lambda ids: self._split_pick(ids[0] if not self.picks else ids[1], pos),
            )
        return self._submit(lambda: None)

    def _voxel_centre(self, position_nm: np.ndarray) -> np.ndarray:
        """The centre (nm) of the voxel napari draws at ``position_nm``.

        napari centres voxel ``i`` on ``translate + i * scale``; storage voxel ``i`` spans
        ``[origin + i * res, origin + (i + 1) * res)``, so the pick is snapped to the
        storage voxel's centre (a click on a voxel's left half picks that voxel too).
        """
        res = np.asarray(self.layer.scale[-3:], dtype=np.float64)
        origin = np.asarray(self.layer.translate[-3:], dtype=np.float64)
        index = np.round((position_nm - origin) / res)
        return origin + (index + 0.5) * res

    def _merge_pick(self, segment: int, pos: np.ndarray) -> None:
        background = (
            int(self.proofreader.volume.backend.background_label) if self.proofreader.volume else 0
        )
        if segment == background:
            self.notify("that is background; pick a segment", True)
            return
        self.picks.append((segment, pos))
        if len(self.picks) == 1:
            self.notify(f"merge: {segment} picked; shift-click the segment to merge into it", False)
            return
        (keep, _), (absorb, _) = self.picks[:2]
        self.picks = []
        if keep == absorb:
            self.notify(f"{keep} is one segment already", True)
            return
        self.merge(keep, absorb)

    def _split_pick(self, value: int, pos: np.ndarray) -> None:
        self.picks.append((value, pos))
        if len(self.picks) == 1:
            self.notify(f"split: segment {value}; shift-click the fragments to cut off", False)
        else:
            self.notify(f"split: fragment {value} picked ({len(self.picks) - 1} in all)", False)

    def finish(self) -> Future[Any] | None:
        """Cleave the picked fragments (split mode) or add the synapse (synapse mode)."""
        if self.mode == "split" and len(self.picks) >= 2:
            segment = self.picks[0][0]
            fragments = sorted({v for v, _ in self.picks[1:]})
            self.picks = []
            return self.cleave(segment, fragments)
        if self.mode == "synapse" and len(self.synapse_sites) >= 2:
            pre, *posts = self.synapse_sites
            self.synapse_sites = []
            return self.add_synapse(pre, posts)
        self.notify("nothing to finish: pick more first", True)
        return None

    def _on_click(self, layer: Labels, event: Any) -> Any:
        if self.mode == "navigate" or "Shift" not in event.modifiers:
            return
        yield  # a click, not a drag: act on release without moving
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        if not moved:
            self.pick(np.asarray(event.position))

    def _bind_keys(self, layer: Labels) -> Callable[[], None]:
        bound: list[tuple[Any, str]] = []

        def bind(target: Any) -> None:
            for key, fn in (("Control-Z", self.undo), ("Control-Shift-Z", self.redo)):
                target.bind_key(key, lambda *_a, f=fn: f() and None, overwrite=True)
                bound.append((target, key))

        bind(layer)
        viewer = self.viewer
        if viewer is not None:
            bind(viewer)

        def unbind() -> None:
            for target, key in bound:
                target.bind_key(key, None, overwrite=True)

        self.bind_target = bind
        return unbind
