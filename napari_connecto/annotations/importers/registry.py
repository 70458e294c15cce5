"""The importer registry: one entry per file format, asked in order to recognise a file.

Each format module defines an :class:`Importer` (a name, a cheap ``sniff`` and a ``read``);
:mod:`napari_connecto.annotations.importers` registers them in sniffing order. Sniffing
only looks at the file name, its first :data:`HEAD_BYTES` bytes (decompressed for
``.gz``), sibling file names and, for HDF5, the names of a few objects.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from napari_connecto.errors import ImportFormatError, SourceNotFoundError

if TYPE_CHECKING:
    from napari_connecto.annotations.frames import ImportBatch
    from napari_connecto.source import SourceLike

__all__ = [
    "HEAD_BYTES",
    "Importer",
    "Kind",
    "ReadOptions",
    "get_importer",
    "importer_names",
    "read_head",
    "register",
    "sniff_format",
]

logger = logging.getLogger(__name__)

HEAD_BYTES = 4096
"""How many bytes of a file (decompressed) sniffing may look at."""

Kind = Literal["synapses", "neurons"]
"""What rows a table holds."""


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """What the caller said about a file, handed to every format's reader."""

    mapping: Mapping[str, str] | None = None
    """File column -> normalised column (tables and CAVE exports)."""
    resolution: Sequence[float] | None = None
    """z, y, x nm per voxel of the file's positions, or ``None`` (format default)."""
    kind: Kind | None = None
    """Force the rows to be read as synapses or neurons; ``None`` sniffs it."""
    segmentation: SourceLike | None = None
    """A segmentation volume (CREMI files without ``neuron_ids`` look neurons up in it)."""


@dataclass(frozen=True, slots=True)
class Importer:
    """One import format."""

    name: str
    """Registry name (the ``format=`` argument)."""
    sniff: Callable[[Path, bytes], bool]
    """``sniff(path, head)``: whether the file is in this format; cheap, never raises."""
    read: Callable[[Path, ReadOptions], ImportBatch]
    """``read(path, options)``: the normalised batch; raises ImportFormatError."""
    description: str = ""
    """One line for users (``napari-connecto import --help``)."""


_IMPORTERS: dict[str, Importer] = {}


def register(importer: Importer, *, replace: bool = False) -> None:
    """Add an importer; later registrations are sniffed after earlier ones.

    Parameters
    ----------
    importer : Importer
        The format to add.
    replace : bool
        Allow replacing an importer of the same name (keeps its sniffing position).

    Raises
    ------
    ValueError
        If the name is taken and ``replace`` is false.
    """
    if importer.name in _IMPORTERS and not replace:
        raise ValueError(f"an importer named {importer.name!r} is already registered")
    _IMPORTERS[importer.name] = importer


def importer_names() -> tuple[str, ...]:
    """Names of the registered importers, in sniffing order."""
    return tuple(_IMPORTERS)


def get_importer(name: str, path: str) -> Importer:
    """The importer called ``name``.

    Raises
    ------
    ImportFormatError
        Naming ``path``, if no importer has that name.
    """
    try:
        return _IMPORTERS[name]
    except KeyError:
        known = ", ".join(_IMPORTERS)
        raise ImportFormatError(path, f"unknown import format {name!r}; known: {known}") from None


def read_head(path: Path) -> bytes:
    """The first :data:`HEAD_BYTES` bytes of ``path``, decompressed if it is gzip."""
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                return gz.read(HEAD_BYTES)
        except (OSError, EOFError, zlib.error):
            return b""
    return head


def sniff_format(path: Path) -> str:
    """Name of the first registered importer recognising ``path``.

    Raises
    ------
    SourceNotFoundError
        If ``path`` is not an existing file.
    ImportFormatError
        Naming the file, if no importer recognises it.
    """
    if not path.is_file():
        raise SourceNotFoundError(str(path), "not an existing file")
    head = read_head(path)
    for importer in _IMPORTERS.values():
        if importer.sniff(path, head):
            logger.debug("%s sniffed as %s", path, importer.name)
            return importer.name
    known = ", ".join(_IMPORTERS)
    raise ImportFormatError(
        str(path), f"cannot tell the annotation format (tried {known}); pass format="
    )
