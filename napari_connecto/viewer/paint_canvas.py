"""The paint canvas: an editable full-resolution Labels layer over the region in view.

napari's multiscale Labels are read-only, so painting happens on a single-scale Labels
layer placed (``scale``/``translate``) over the part of the segmentation in view, a few
sections deep. Each stroke, fill or erase is diffed against what the canvas held and
committed to the journal at once (off the main thread); the stroke shows immediately
and is written back to the volume in the background. A stroke the journal refuses (a
conflict with another session) is taken back off the canvas and reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QApplication

from napari_connecto.proofreading.patches import VoxelPatch
from napari_connecto.proofreading.voxels import current_voxels, overlay_patch
from napari_connecto.viewer.synapse_overlay import view_box

if TYPE_CHECKING:
    from concurrent.futures import Future

    from napari.layers import Labels

    from napari_connecto.proofreading.patches import Direction
    from napari_connecto.viewer.proofreading import ProofreadingSession

__all__ = ["MAX_CANVAS_VOXELS", "PaintCanvas", "canvas_region"]

logger = logging.getLogger(__name__)

MAX_CANVAS_VOXELS = 8 * 2**20
"""Largest canvas (8 Mi voxels: 64 MiB of uint64 per copy)."""
CANVAS_SUFFIX = " (paint)"


def canvas_region(
    session: ProofreadingSession, depth: int, max_voxels: int = MAX_CANVAS_VOXELS
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Voxel ``(start, stop)`` at full resolution of what is in view, ``depth`` sections deep."""
    viewer = session.viewer
    volume = session.proofreader.volume
    assert viewer is not None and volume is not None
    sc = volume.scales[0]
    box = view_box(viewer, margin=0.0)
    start, stop = box.to_voxels(sc.resolution, sc.origin_nm)
    z = (start[0] + stop[0]) // 2
    plane_y = (max(0, start[1]), min(sc.shape[1], stop[1]))
    plane_x = (max(0, start[2]), min(sc.shape[2], stop[2]))
    side = math.isqrt(max(1, max_voxels // max(1, depth)))
    ny, nx = (min(b - a, side) for a, b in (plane_y, plane_x))
    cy, cx = ((a + b) // 2 for a, b in (plane_y, plane_x))
    y0 = max(0, min(cy - ny // 2, sc.shape[1] - ny))
    x0 = max(0, min(cx - nx // 2, sc.shape[2] - nx))
    z0 = max(0, min(z - depth // 2, sc.shape[0] - depth))
    z1 = min(sc.shape[0], z0 + depth)
    return (int(z0), int(y0), int(x0)), (int(z1), int(y0 + ny), int(x0 + nx))


class PaintCanvas:
    """An editable Labels layer over part of a segmentation, journaling every stroke.

    Build one with :meth:`open` (reads the region off the main thread).
    """

    def __init__(
        self,
        session: ProofreadingSession,
        start: tuple[int, int, int],
        fragments: np.ndarray,
    ) -> None:
        self.session = session
        self.start = start
        self.raw = np.array(fragments, copy=True)
        """Fragment ids as stored (what patches are made of)."""
        shown = session.remap(self.raw)
        self._shadow = np.array(shown, copy=True)
        viewer = session.viewer
        assert viewer is not None
        seg = session.layer
        res = np.asarray(seg.scale[-3:], dtype=np.float64)
        origin = np.asarray(seg.translate[-3:], dtype=np.float64)
        self.layer: Labels = viewer.add_labels(
            np.array(shown, copy=True),
            name=f"{seg.name}{CANVAS_SUFFIX}",
            scale=tuple(res),
            translate=tuple(origin + np.asarray(start) * res),
            opacity=0.7,
            units=("nm", "nm", "nm"),
        )
        self.layer.events.paint.connect(self._on_paint)
        self.layer.mouse_drag_callbacks.append(session._on_click)
        session.bind_target(self.layer)
        self.layer.mode = "paint"
        self.pending = 0
        """Strokes sent to the journal and not yet acknowledged."""

    @classmethod
    def open(cls, session: ProofreadingSession, depth: int = 1) -> Future[Any]:
        """Read the region in view (worker) and put a canvas over it (main thread)."""
        pr = session.proofreader
        start, stop = canvas_region(session, depth)

        def work() -> tuple[np.ndarray, int]:
            # what the journal says, pending write-backs included (not only what is stored)
            voxels = current_voxels(pr.journal, pr.volume, pr.key, start, stop)  # type: ignore[arg-type]
            return voxels, pr.new_id()

        def done(result: tuple[np.ndarray, int]) -> None:
            fragments, label = result
            if session.canvas is not None:
                session.canvas.close()
            session.canvas = cls(session, start, fragments)
            session.canvas.layer.selected_label = label
            session.notify(f"painting {fragments.shape} voxels; new id {label} selected", False)

        return session._submit(work, done, what="start painting")

    @property
    def stop(self) -> tuple[int, int, int]:
        """One past the canvas's last voxel."""
        return tuple(a + n for a, n in zip(self.start, self.raw.shape, strict=True))  # type: ignore[return-value]

    def flush(self) -> None:
        """Journal any change napari did not announce with a paint event."""
        self._on_paint()

    def _on_paint(self, event: Any = None) -> None:
        """A stroke ended: journal what changed on the canvas."""
        data = np.asarray(self.layer.data)
        changed = data != self._shadow
        if not changed.any():
            return
        box = _bbox(changed)
        mask = changed[box]
        before = self.raw[box].copy()
        after = before.copy()
        after[mask] = data[box][mask].astype(before.dtype)
        begin = tuple(int(s.start) + a for s, a in zip(box, self.start, strict=True))
        patch = VoxelPatch(begin, before, after)  # type: ignore[arg-type]
        self.raw[box][mask] = after[mask]
        self._shadow[box][mask] = data[box][mask]
        what = (
            "erase"
            if self.layer.mode == "erase"
            else "fill"
            if self.layer.mode == "fill"
            else "paint"
        )
        self.pending += 1

        def done(entry: Any) -> None:
            self.pending -= 1
            self.session._edited(entry, what)

        def work() -> Any:
            try:
                seq = self.session.proofreader.paint_patch(patch, what)
            except Exception:
                self.session._bridge.call.emit(lambda: self._take_back(box, mask, before))
                raise
            return self.session.proofreader.journal.entry(seq)

        self.session._submit(work, done, what=what)

    def _take_back(self, box: tuple[slice, ...], mask: np.ndarray, before: np.ndarray) -> None:
        """A refused stroke: put the voxels back as they were."""
        self.pending -= 1
        self.raw[box][mask] = before[mask]
        shown = self.session.remap(before)
        self._shadow[box][mask] = shown[mask]
        self.layer.data[box][mask] = shown[mask]
        self.layer.refresh()

    def apply_patch(self, patch: VoxelPatch, direction: Direction) -> None:
        """Show an undo/redo (or another session's paint) where it overlaps the canvas."""
        here = overlay_patch(self.raw, self.start, patch, direction)
        if here is None:
            return
        shown = self.session.remap(self.raw[here])
        self._shadow[here] = shown
        self.layer.data[here] = shown
        self.layer.refresh()

    def show_remapped(
        self, snapshot: np.ndarray, shown: np.ndarray, remap: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        """Show ``shown`` (``snapshot`` remapped off the main thread) on the canvas.

        Voxels painted since the snapshot are remapped here (a stroke's worth at most).
        """
        moved = self.raw != snapshot
        if moved.any():
            shown[moved] = remap(self.raw[moved])
        self._shadow = np.array(shown, copy=True)
        self.layer.data[...] = shown
        self.layer.refresh()

    def close(self) -> None:
        """Journal what is left, then remove the canvas layer."""
        viewer = self.session.viewer
        if viewer is not None and viewer.layers.selection.active is self.layer:
            # hand the selection back and let Qt take that in before the layer goes:
            # removing the active painting layer crashed Mesa's llvmpipe on a later draw
            if self.session.layer in viewer.layers:
                viewer.layers.selection.active = self.session.layer
            QApplication.processEvents()
        self.flush()
        if viewer is not None and self.layer in viewer.layers:
            viewer.layers.remove(self.layer)
        if self.session.canvas is self:
            self.session.canvas = None


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel."""
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)
