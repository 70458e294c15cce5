"""Export a region of an EM image and/or its segmentation for a figure.

``export_region(out, image=..., labels=..., box=...)`` writes, by the suffix of ``out``:

* ``.tif`` / ``.tiff``: TIFF stacks with the voxel size in nm. Image only: the grey
  stack. Segmentation only: the id stack. Both: ``out`` is the RGB colour view, with
  ``<stem>_em.tif`` (grey) and ``<stem>_ids.tif`` (ids) beside it.
* ``.png``: one PNG per z-plane, ``<stem>_z0000.png`` ... numbered by the absolute z
  voxel index of the exported scale (grey, or the colour view if there are labels).
* ``.gif`` (or ``.mp4`` etc. with imageio-ffmpeg): a z-sweep movie of the same frames.

Planes are read one at a time; every file set is written under temporary names, synced, and
renamed into place only when complete, the main file last. A set of several files is not
replaced all at once: see :mod:`napari_connecto.export._atomic`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.export._atomic import ExportError, atomic_files, check_destination
from napari_connecto.export.colors import ColorFn, colour_view, hash_colors
from napari_connecto.export.region import RegionPlan, align_plan, iter_planes, plan_region
from napari_connecto.export.writers import (
    MOVIE_SUFFIXES,
    id_dtype,
    write_movie,
    write_png,
    write_tiff_stack,
)

if TYPE_CHECKING:
    from os import PathLike

    from napari_connecto.geometry import BBox
    from napari_connecto.volume.volume import Volume

__all__ = ["ExportResult", "ViewStyle", "export_region", "png_paths"]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with ``(planes done, planes in all)`` after each plane."""


@dataclass(frozen=True, slots=True)
class ViewStyle:
    """How segments are drawn over the EM in the colour view."""

    opacity: float = 0.5
    """Weight of the segment colour, 0 to 1."""
    outline: bool = False
    """Draw segment boundaries at full colour."""
    colors: ColorFn = hash_colors
    """Colour per segment id (the viewer passes napari's layer colours)."""
    background: int | None = None
    """Id left transparent; default the segmentation's background label."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    paths: tuple[Path, ...]
    """Every file written, the main one first."""
    plan: RegionPlan
    """The exported voxels (of the image, or of the segmentation if there is no image)."""


@dataclass(frozen=True, slots=True)
class _Job:
    """The resolved inputs of one export."""

    image: Volume | None
    labels: Volume | None
    plan: RegionPlan
    label_plan: RegionPlan | None
    style: ViewStyle
    background: int
    progress: Progress | None

    @property
    def depth(self) -> int:
        return self.plan.shape[0]


def png_paths(out: Path, plan: RegionPlan) -> list[Path]:
    """The per-plane PNG files of ``out`` (``<stem>_z0000.png`` ...) for ``plan``."""
    return [out.with_name(f"{out.stem}_z{z:04d}.png") for z in range(plan.start[0], plan.stop[0])]


def export_region(
    out: str | PathLike[str],
    *,
    box: BBox,
    image: Volume | None = None,
    labels: Volume | None = None,
    scale: int | None = None,
    resolution: Sequence[float] | None = None,
    style: ViewStyle | None = None,
    fps: float = 5.0,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a nm region of ``image`` and/or ``labels`` as TIFF, PNGs or a movie.

    Parameters
    ----------
    out : path
        Destination; its suffix picks the output (see the module docstring).
    box : BBox
        Region in nm (z, y, x), clipped to the volume; a z-range is its z extent.
    image, labels : Volume, optional
        The EM image and the segmentation (at least one).
    scale : int, optional
        Scale index of the first volume given (default 0).
    resolution : sequence of float, optional
        Pick the scale by voxel size (nm, z, y, x) instead.
    style : ViewStyle, optional
        Colour view settings.
    fps : float
        Frame rate of a movie.
    progress : callable, optional
        Called with ``(done, total)`` planes.

    Returns
    -------
    ExportResult

    Raises
    ------
    RegionError
        Empty region, region outside the volume, or no matching scale.
    ExportError
        Unwritable destination, unknown suffix, or no writer for a movie format.
    """
    out = Path(out)
    primary = image if image is not None else labels
    if primary is None:
        raise ExportError("nothing to export: give an image, a segmentation, or both")
    style = style or ViewStyle()
    if not 0.0 <= style.opacity <= 1.0:
        raise ExportError(f"opacity must be within 0..1, got {style.opacity}")
    suffix = out.suffix.lower()
    check_destination([out])
    plan = plan_region(primary, box, scale=scale, resolution=resolution)
    label_plan = None
    if labels is not None:
        label_plan = align_plan(plan, labels) if image is not None else plan
    background = style.background
    if background is None:
        background = int(labels.backend.background_label) if labels is not None else 0
    job = _Job(image, labels, plan, label_plan, style, background, progress)
    if suffix in (".tif", ".tiff"):
        paths = _export_tiff(out, job)
    elif suffix == ".png":
        paths = _export_pngs(out, job)
    elif suffix in MOVIE_SUFFIXES:
        paths = _export_movie(out, job, fps, suffix)
    else:
        raise ExportError(
            f"cannot tell what to write from {out.name!r}: use .tif, .png or "
            f"{', '.join(MOVIE_SUFFIXES)}"
        )
    logger.info("exported %s planes to %s", job.depth, ", ".join(str(p) for p in paths))
    return ExportResult(tuple(paths), plan)


def _frames(job: _Job, max_id: list[int] | None = None) -> Iterator[np.ndarray]:
    """Grey planes, or colour-view planes if there is a segmentation; tracks the max id."""
    greys = iter_planes(job.image, job.plan) if job.image is not None else None
    ids = iter_planes(job.labels, job.label_plan) if job.labels is not None else None
    for done in range(1, job.depth + 1):
        grey = next(greys) if greys is not None else None
        if ids is None:
            frame = grey
        else:
            plane = next(ids)
            if max_id is not None and plane.size:
                max_id[0] = max(max_id[0], int(plane.max()))
            frame = colour_view(
                None if grey is None else _as_uint8(grey),
                plane,
                colors=job.style.colors,
                opacity=job.style.opacity,
                background=job.background,
                outline=job.style.outline,
            )
        if job.progress is not None:
            job.progress(done, job.depth)
        yield _as_uint8(frame) if frame.ndim == 2 else frame


def _as_uint8(grey: np.ndarray) -> np.ndarray:
    """EM planes for display: uint8 as is; other types scaled from their dtype's range."""
    if grey.dtype == np.uint8:
        return grey
    if grey.dtype.kind in "ui":
        info = np.iinfo(grey.dtype)
        scaled = (grey.astype(np.float64) - info.min) / (info.max - info.min) * 255.0
    else:
        scaled = np.clip(grey.astype(np.float64), 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def _export_tiff(out: Path, job: _Job) -> list[Path]:
    """One stack, or the colour view with its grey and id stacks."""
    (depth, h, w), res = job.plan.shape, job.plan.resolution
    grey_shape, rgb_shape = (depth, h, w), (depth, h, w, 3)
    if job.labels is None:
        assert job.image is not None
        with atomic_files([out]) as (tmp,):
            planes = iter_planes(job.image, job.plan)
            write_tiff_stack(tmp, planes, shape=grey_shape, dtype=job.image.dtype, resolution=res)
        return [out]
    paths = [out] if job.image is None else [out, _beside(out, "_em"), _beside(out, "_ids")]
    with atomic_files(paths) as temps:
        max_id = [0]
        if job.image is not None:
            frames = _frames(job, max_id)
            write_tiff_stack(temps[0], frames, shape=rgb_shape, dtype=np.uint8, resolution=res)
            grey, em_dtype = iter_planes(job.image, job.plan), job.image.dtype
            write_tiff_stack(temps[1], grey, shape=grey_shape, dtype=em_dtype, resolution=res)
        else:
            for plane in iter_planes(job.labels, job.label_plan):
                max_id[0] = max(max_id[0], int(plane.max()) if plane.size else 0)
        dtype = job.labels.dtype if job.labels.dtype.itemsize <= 2 else id_dtype(max_id[0])
        ids = iter_planes(job.labels, job.label_plan)
        write_tiff_stack(temps[-1], ids, shape=grey_shape, dtype=dtype, resolution=res)
    return paths


def _beside(out: Path, tag: str) -> Path:
    """``out`` with ``tag`` added to its stem."""
    return out.with_name(f"{out.stem}{tag}{out.suffix}")


def _export_pngs(out: Path, job: _Job) -> list[Path]:
    """One PNG per plane."""
    paths = png_paths(out, job.plan)
    with atomic_files(paths) as temps:
        for tmp, frame in zip(temps, _frames(job), strict=True):
            write_png(tmp, frame)
    return paths


def _export_movie(out: Path, job: _Job, fps: float, suffix: str) -> list[Path]:
    """A z-sweep movie."""
    with atomic_files([out]) as (tmp,):
        write_movie(tmp, _frames(job), fps=fps, suffix=suffix)
    return [out]
