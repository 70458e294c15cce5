"""Writers of exported planes: TIFF stacks, one PNG per plane, and movies.

Every writer takes an iterator of 2-D planes (grey or ids) or ``(h, w, 3)`` RGB planes,
so a stack streams to disk plane by plane. Paths given here are final temporary paths;
atomicity is the caller's (:func:`napari_connecto.export._atomic.atomic_files`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.export._atomic import ExportError

if TYPE_CHECKING:
    from napari_connecto.geometry import Vec3

__all__ = ["MOVIE_SUFFIXES", "id_dtype", "write_movie", "write_png", "write_tiff_stack"]

logger = logging.getLogger(__name__)

MOVIE_SUFFIXES = (".gif", ".mp4", ".avi", ".mov", ".webm")
"""Suffixes written as movies (GIF through Pillow; the rest need imageio-ffmpeg)."""
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def id_dtype(max_id: int) -> np.dtype:
    """The narrowest of uint16, uint32, uint64 that holds ``max_id``."""
    for dtype in (np.uint16, np.uint32):
        if max_id <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def write_tiff_stack(
    path: Path,
    planes: Iterable[np.ndarray],
    *,
    shape: tuple[int, ...],
    dtype: np.dtype,
    resolution: Vec3,
) -> None:
    """Write ``planes`` as a multi-page TIFF with the voxel size in nm.

    uint8/uint16 grey and RGB stacks are ImageJ hyperstacks (``unit=nm``, ``spacing`` =
    z voxel size, X/YResolution = pixels per nm); wider ids are plain TIFF whose JSON
    description carries the same fields, since ImageJ has no 32/64-bit integer type.

    Parameters
    ----------
    path : Path
        File to write.
    planes : iterable of numpy.ndarray
        ``shape[0]`` planes of ``shape[1:]``, z ascending.
    shape : tuple of int
        ``(z, y, x)`` or ``(z, y, x, 3)`` for RGB.
    dtype : numpy.dtype
        The stored data type; planes are cast to it.
    resolution : Vec3
        Voxel size in nm (z, y, x).
    """
    import tifffile

    dtype = np.dtype(dtype)
    rgb = len(shape) == 4
    imagej = dtype in _IMAGEJ_DTYPES
    metadata: dict[str, object] = {"axes": "ZYXS" if rgb else "ZYX", "unit": "nm"}
    metadata["spacing"] = float(resolution.z)
    if not imagej:
        metadata["resolution_nm"] = list(resolution.as_tuple())
    cast = (np.asarray(p, dtype=dtype) for p in planes)
    with tifffile.TiffWriter(path, imagej=imagej, bigtiff=not imagej) as tif:
        tif.write(
            _counted(cast, shape[0]),
            shape=shape,
            dtype=dtype,
            photometric="rgb" if rgb else "minisblack",
            resolution=(1.0 / resolution.x, 1.0 / resolution.y),
            resolutionunit="NONE",
            metadata=metadata,
        )


def _counted(planes: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """Yield exactly ``n`` planes, or raise :class:`ExportError` if there are fewer."""
    count = 0
    for plane in planes:
        count += 1
        yield plane
    if count != n:
        raise ExportError(f"expected {n} planes, got {count}")


def write_png(path: Path, plane: np.ndarray) -> None:
    """Write one grey (2-D uint8) or RGB (``h, w, 3`` uint8) plane as PNG."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(plane)).save(path, format="PNG")


def write_movie(path: Path, frames: Iterator[np.ndarray], *, fps: float, suffix: str) -> int:
    """Write ``frames`` (grey or RGB uint8) as a looping GIF or, with imageio-ffmpeg, a video.

    Parameters
    ----------
    path : Path
        File to write.
    frames : iterator of numpy.ndarray
        The frames, in order.
    fps : float
        Frames per second.
    suffix : str
        The destination's suffix (decides the container, since ``path`` is temporary).

    Returns
    -------
    int
        Number of frames written.

    Raises
    ------
    ExportError
        If no writer for ``suffix`` is installed or ``fps`` is not positive.
    """
    if not fps > 0:
        raise ExportError(f"frame rate must be positive, got {fps}")
    if suffix == ".gif":
        return _write_gif(path, frames, fps)
    return _write_video(path, frames, fps, suffix)


def _write_gif(path: Path, frames: Iterator[np.ndarray], fps: float) -> int:
    """Animated GIF through Pillow (always available)."""
    from PIL import Image

    first = next(frames, None)
    if first is None:
        raise ExportError(f"no frames to write to {path}")
    count = [1]

    def rest() -> Iterator[Image.Image]:
        for frame in frames:
            count[0] += 1
            yield Image.fromarray(np.ascontiguousarray(frame))

    Image.fromarray(np.ascontiguousarray(first)).save(
        path,
        format="GIF",
        save_all=True,
        append_images=rest(),
        duration=round(1000.0 / fps),
        loop=0,
    )
    return count[0]


def _write_video(path: Path, frames: Iterator[np.ndarray], fps: float, suffix: str) -> int:
    """MP4 and friends through imageio's ffmpeg plugin, if installed."""
    try:
        import imageio.v2 as iio
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise ExportError(
            f"writing {suffix} movies needs imageio-ffmpeg (pip install imageio-ffmpeg); "
            "a .gif needs nothing extra"
        ) from None
    count = 0
    writer = iio.get_writer(path, format="FFMPEG", mode="I", fps=fps, macro_block_size=1)
    try:
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame))
            count += 1
    finally:
        writer.close()
    if count == 0:
        raise ExportError(f"no frames to write to {path}")
    return count
