"""Open sources: the one boundary where ``SourceLike`` becomes a :class:`Volume` or point set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from napari_connecto.backends.registry import find_backend
from napari_connecto.source import SourceLike, parse_source
from napari_connecto.volume.volume import Volume

if TYPE_CHECKING:
    from napari_connecto.backends.base import Entry, PointSet
    from napari_connecto.volume.processors import Processor

__all__ = ["list_contents", "open_points", "open_volume"]


def open_volume(
    source: SourceLike,
    mode: Literal["r", "r+"] = "r",
    *,
    read_processors: tuple[Processor, ...] = (),
    write_processors: tuple[Processor, ...] = (),
) -> Volume:
    """Open one volume from any supported format; reads metadata only.

    Parameters
    ----------
    source : str, os.PathLike or Source
        Path or URL, optionally with a format prefix (``zarr://``, ``n5://``,
        ``precomputed://``, ``hdf5://``) or an inner path (``file.h5#volumes/raw``).
    mode : {"r", "r+"}
        ``"r+"`` allows :meth:`Volume.write` where the format can be written.
    read_processors, write_processors : tuple of Processor
        Transformations applied to every block read or written.

    Returns
    -------
    Volume
        The opened volume.

    Raises
    ------
    SourceNotFoundError
        If the path does not exist.
    UnknownFormatError
        If no backend recognises the source.
    AmbiguousSourceError
        If the source is a container of several volumes.
    MetadataError
        If the metadata is malformed or unsupported.
    """
    src = parse_source(source)
    backend_cls = find_backend(src)
    backend = backend_cls.open(src, mode)
    return Volume(backend, read_processors, write_processors)


def list_contents(source: SourceLike) -> list[Entry]:
    """Every volume and point set that ``source`` holds, each with its own source.

    Raises
    ------
    SourceNotFoundError, UnknownFormatError, MetadataError
        As :func:`open_volume`.
    """
    src = parse_source(source)
    return find_backend(src).contents(src)


def open_points(source: SourceLike) -> PointSet:
    """Read a point set (e.g. CREMI synapses) listed by :func:`list_contents`."""
    src = parse_source(source)
    return find_backend(src).open_points(src)
