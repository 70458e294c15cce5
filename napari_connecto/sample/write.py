"""Write a generated sample as OME-Zarr and CREMI HDF5, atomically, and cache it.

Layout of a sample directory::

    sample.zarr/                  OME-Zarr 0.4 (Zarr v2), written by ome-zarr-py
        0, 1, 2                   raw uint8, 2x downsampled in y, x per level (z kept)
        labels/segmentation/0..2  uint64 neuron ids, downsampled by stride-2 picking
    sample_cremi.h5               CREMI layout: /volumes/raw, /volumes/labels/neuron_ids,
                                  /annotations (synapses)
    sample.json                   marker, written last: {"version", "seed", "shape", ...}

The whole directory is written under a temporary name next to its destination and
renamed into place, so a killed writer never leaves a half-written sample behind
that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.sample.generate import DEFAULT_SHAPE, SampleData, generate_sample

if TYPE_CHECKING:
    from napari_connecto.sample.generate import Synapses

__all__ = [
    "CACHE_ENV",
    "LEVELS",
    "SAMPLE_VERSION",
    "SamplePaths",
    "ensure_sample",
    "sample_directory",
    "write_sample",
]

logger = logging.getLogger(__name__)

SAMPLE_VERSION = 1
"""Bumped whenever the generator or the layout changes; older caches are regenerated."""
CACHE_ENV = "NAPARI_CONNECTO_CACHE"
"""Environment variable that overrides the cache root (default: the user cache dir)."""
LEVELS = 3
"""Number of pyramid levels written to the OME-Zarr (factor 2 in y, x between levels)."""
CHUNKS = (8, 128, 128)
OME_ZARR_NAME = "sample.zarr"
CREMI_NAME = "sample_cremi.h5"
MARKER_NAME = "sample.json"
LABELS_NAME = "segmentation"


@dataclass(frozen=True, slots=True)
class SamplePaths:
    """Where the files of one written sample are."""

    directory: Path
    """The sample directory."""
    ome_zarr: Path
    """OME-Zarr 0.4 image (``sample.zarr``) with labels at ``labels/segmentation``."""
    cremi: Path
    """CREMI-layout HDF5 file (``sample_cremi.h5``) with raw, neuron ids and synapses."""
    marker: Path
    """``sample.json``, present only when the sample is complete."""

    @property
    def cremi_synapses(self) -> str:
        """Source string of the synapse point set inside the CREMI file."""
        return f"{self.cremi}#annotations"

    @classmethod
    def in_directory(cls, directory: str | os.PathLike[str]) -> SamplePaths:
        """The paths a sample in ``directory`` has (whether or not it exists)."""
        d = Path(directory)
        return cls(d, d / OME_ZARR_NAME, d / CREMI_NAME, d / MARKER_NAME)


def write_sample(directory: str | os.PathLike[str], data: SampleData | None = None) -> SamplePaths:
    """Write ``data`` (default: a freshly generated sample) into ``directory``.

    Everything is written into a temporary sibling directory first, the marker
    last, then renamed onto ``directory`` (replacing an existing one).

    Parameters
    ----------
    directory : str or os.PathLike
        The sample directory to create or replace; its parent is created if needed.
    data : SampleData, optional
        What to write; :func:`generate_sample` with default arguments if omitted.

    Returns
    -------
    SamplePaths
        The paths of the written files (under ``directory``).

    Raises
    ------
    OSError
        If the files cannot be written or renamed into place.
    """
    dest = Path(directory)
    data = generate_sample() if data is None else data
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the sample is an ordinary directory
    try:
        paths = SamplePaths.in_directory(tmp)
        write_ome_zarr(paths.ome_zarr, data)
        write_cremi(paths.cremi, data)
        marker = {"version": SAMPLE_VERSION, "seed": data.seed, "shape": list(data.shape)}
        marker["resolution_nm"] = list(data.resolution)
        marker["synapse_sites"] = len(data.synapses.ids)
        paths.marker.write_text(json.dumps(marker, indent=1))
        _install(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote sample to %s", dest)
    return SamplePaths.in_directory(dest)


def _install(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` onto ``dest``, moving an existing ``dest`` aside first."""
    try:
        tmp.rename(dest)
        return
    except OSError:
        if not dest.exists():
            raise
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    dest.rename(old / dest.name)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def downsample_image(image: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block in y, x (z kept); odd edges are padded by repetition."""
    pad = [(0, 0), (0, image.shape[1] % 2), (0, image.shape[2] % 2)]
    p = np.pad(image, pad, mode="edge").astype(np.float32)
    mean = (p[:, ::2, ::2] + p[:, 1::2, ::2] + p[:, ::2, 1::2] + p[:, 1::2, 1::2]) / 4.0
    return np.round(mean).astype(image.dtype)


def downsample_labels(labels: np.ndarray) -> np.ndarray:
    """Every second voxel in y, x (z kept): ids are picked, never averaged."""
    return np.ascontiguousarray(labels[:, ::2, ::2])


def write_ome_zarr(path: Path, data: SampleData) -> None:
    """Write raw and segmentation as OME-Zarr 0.4 (Zarr v2) with ome-zarr-py.

    Level ``i`` has scale ``[rz, ry * 2**i, rx * 2**i]`` nm. Translations place
    every level pixel at the centre of the level-0 voxels it stands for: the
    mean-pooled raw level ``i`` is shifted by ``(2**i - 1) / 2`` level-0 voxels
    in y and x (2 nm, 6 nm), the stride-2 picked labels are not shifted at all.
    """
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscale, write_multiscale_labels

    raw = [np.asarray(data.raw)]
    seg = [np.asarray(data.segmentation)]
    for _ in range(LEVELS - 1):
        raw.append(downsample_image(raw[-1]))
        seg.append(downsample_labels(seg[-1]))
    rz, ry, rx = data.resolution
    common: dict[str, Any] = {
        "fmt": FormatV04(),
        "axes": ["z", "y", "x"],
        "axes_units": dict.fromkeys("zyx", "nanometer"),
        "scale": {"z": rz, "y": ry, "x": rx},
        "storage_options": {"chunks": CHUNKS},
    }
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_multiscale(raw, root, name="raw", **common)
    _set_transforms(root, data.resolution, centred=True)
    label_metadata = {"properties": [], "source": {"image": "../../"}}
    write_multiscale_labels(seg, root, LABELS_NAME, label_metadata=label_metadata, **common)
    _set_transforms(root[f"labels/{LABELS_NAME}"], data.resolution, centred=False)


def level_transforms(
    resolution: tuple[float, float, float], level: int, *, centred: bool
) -> list[dict[str, Any]]:
    """The scale and translation (nm) of pyramid ``level`` (factor 2 in y, x per level)."""
    f = 2**level
    rz, ry, rx = resolution
    shift = (f - 1) / 2 if centred else 0.0
    return [
        {"type": "scale", "scale": [rz, ry * f, rx * f]},
        {"type": "translation", "translation": [0.0, ry * shift, rx * shift]},
    ]


def _set_transforms(group: Any, resolution: tuple[float, float, float], *, centred: bool) -> None:
    """Rewrite the per-level transforms of a multiscales group in nm.

    ome-zarr-py 0.18 writes the ``scale=`` translations in level-0 pixels
    (0.5, 1.5) while the scales are in physical units, so they are replaced here.
    """
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscales_metadata

    multiscale = dict(group.attrs["multiscales"][0])
    datasets = []
    for level, ds in enumerate(multiscale["datasets"]):
        transforms = level_transforms(resolution, level, centred=centred)
        datasets.append({"path": ds["path"], "coordinateTransformations": transforms})
    write_multiscales_metadata(
        group, datasets, fmt=FormatV04(), axes=multiscale["axes"], name=multiscale.get("name")
    )


def write_cremi(path: Path, data: SampleData) -> None:
    """Write the CREMI layout (``file_format`` 0.2) with h5py, gzip-compressed and chunked."""
    import h5py

    res = np.asarray(data.resolution, np.float64)
    chunks = tuple(min(c, s) for c, s in zip(CHUNKS, data.shape, strict=True))
    with h5py.File(path, "w") as f:
        f.attrs["file_format"] = "0.2"
        for name, array in (
            ("volumes/raw", data.raw),
            ("volumes/labels/neuron_ids", data.segmentation),
        ):
            ds = f.create_dataset(name, data=array, chunks=chunks, compression="gzip")
            ds.attrs["resolution"] = res
        _write_annotations(f.create_group("annotations"), data.synapses)


def _write_annotations(group: Any, syn: Synapses) -> None:
    """``ids``, ``types``, ``locations`` (nm, offset 0, so no offset attr) and partners."""
    import h5py

    group.create_dataset("ids", data=np.asarray(syn.ids, np.uint64))
    group.create_dataset("types", data=list(syn.types), dtype=h5py.string_dtype())
    group.create_dataset("locations", data=np.asarray(syn.locations, np.float64).reshape(-1, 3))
    pre = group.create_group("presynaptic_site")
    pre.create_dataset("partners", data=np.asarray(syn.partners, np.uint64).reshape(-1, 2))


def sample_directory(shape: tuple[int, int, int] = DEFAULT_SHAPE, seed: int = 0) -> Path:
    """The cache directory of the sample with this shape and seed.

    ``$NAPARI_CONNECTO_CACHE/sample-v1`` if that variable is set, else
    ``platformdirs.user_cache_dir("napari-connecto")/sample-v1``, for the default
    shape and seed; other shapes and seeds get ``sample-v1-s{seed}-{z}x{y}x{x}``.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` voxels.
    seed : int
        Random seed.

    Returns
    -------
    Path
        The directory (not created).
    """
    root = os.environ.get(CACHE_ENV)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("napari-connecto")
    name = f"sample-v{SAMPLE_VERSION}"
    if tuple(shape) != DEFAULT_SHAPE or seed != 0:
        name += f"-s{seed}-{'x'.join(str(int(s)) for s in shape)}"
    return Path(root) / name


def ensure_sample(
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    seed: int = 0,
    directory: str | os.PathLike[str] | None = None,
) -> SamplePaths:
    """Return a complete sample, generating and writing it only if needed.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` voxels.
    seed : int
        Random seed.
    directory : str or os.PathLike, optional
        Where the sample lives; default :func:`sample_directory`.

    Returns
    -------
    SamplePaths
        Paths of the cached or newly written sample.

    Raises
    ------
    OSError
        If a new sample cannot be written.
    """
    dest = Path(directory) if directory is not None else sample_directory(shape, seed)
    paths = SamplePaths.in_directory(dest)
    if _is_complete(paths, shape, seed):
        logger.debug("reusing sample at %s", dest)
        return paths
    _remove_stale(dest)
    logger.info("generating sample %s seed %d into %s", tuple(shape), seed, dest)
    return write_sample(dest, generate_sample(shape, seed))


def _remove_stale(dest: Path, age_s: float = 3600.0) -> None:
    """Delete temporary siblings of ``dest`` left by writers killed over ``age_s`` ago."""
    if not dest.parent.is_dir():
        return
    now = time.time()
    for pattern in (f".{dest.name}.tmp-*", f".{dest.name}.old-*"):
        for path in dest.parent.glob(pattern):
            try:
                if now - path.stat().st_mtime > age_s:
                    logger.info("removing stale %s", path)
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue


def _is_complete(paths: SamplePaths, shape: tuple[int, int, int], seed: int) -> bool:
    """Whether the marker exists, matches, and the files it vouches for are there."""
    try:
        marker = json.loads(paths.marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict):
        return False
    expected = {"version": SAMPLE_VERSION, "seed": seed, "shape": [int(s) for s in shape]}
    if any(marker.get(k) != v for k, v in expected.items()):
        return False
    return paths.cremi.is_file() and (paths.ome_zarr / ".zattrs").is_file()
