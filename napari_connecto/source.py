"""Normalise what users type (paths, URLs, ``format://`` prefixes) into one :class:`Source`."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from napari_connecto.errors import SourceNotFoundError

__all__ = ["FORMAT_PREFIXES", "Source", "SourceLike", "parse_source"]

#: URL prefixes that force a format, mapped to the registered format name.
FORMAT_PREFIXES: dict[str, str] = {
    "zarr": "zarr",
    "zarr2": "zarr",
    "zarr3": "zarr",
    "n5": "n5",
    "precomputed": "precomputed",
    "hdf5": "hdf5",
    "h5": "hdf5",
    "dvid": "dvid",
}
_REMOTE_SCHEMES = ("http://", "https://", "gs://", "s3://")


@dataclass(frozen=True, slots=True)
class Source:
    """A normalised data source.

    Attributes are plain strings so that a source can be shown, compared and
    stored without touching the file system again.
    """

    location: str
    """Absolute local path, or a URL for remote sources."""
    inner: str = ""
    """Path inside a container file (an HDF5 group or dataset); empty otherwise."""
    format: str | None = None
    """Format forced by a ``format://`` prefix, or ``None`` to sniff."""

    @property
    def is_remote(self) -> bool:
        """Whether the location is a URL rather than a local path."""
        return self.location.startswith(_REMOTE_SCHEMES) or self.format == "dvid"

    @property
    def path(self) -> Path:
        """The local path; only meaningful when not remote."""
        return Path(self.location)

    @property
    def name(self) -> str:
        """A short display name: the last component of the inner path or location."""
        tail = self.inner.rstrip("/") or self.location.rstrip("/")
        return tail.rsplit("/", 1)[-1] or tail

    def child(self, relative: str) -> Source:
        """Return the source for ``relative`` below this one (directory or inner path)."""
        relative = relative.strip("/")
        if self.inner or not self._is_directory_like():
            inner = f"{self.inner.rstrip('/')}/{relative}".lstrip("/")
            return replace(self, inner=inner)
        return replace(self, location=f"{self.location.rstrip('/')}/{relative}")

    def _is_directory_like(self) -> bool:
        return self.is_remote or Path(self.location).is_dir()

    def __str__(self) -> str:
        text = self.location
        if self.inner:
            text += f"#{self.inner}"
        if self.format:
            text = f"{self.format}://{text}"
        return text


SourceLike = str | os.PathLike[str] | Source


def parse_source(source: SourceLike) -> Source:
    """Turn a user's path or URL into a :class:`Source`.

    Parameters
    ----------
    source : str, os.PathLike or Source
        A local path (``data.zarr``, ``cremi.h5/volumes/raw``, ``cremi.h5#volumes/raw``),
        a URL, optionally behind a format prefix (``zarr://``, ``n5://``,
        ``precomputed://``, ``hdf5://``, ``dvid://``) and/or ``file://``.

    Returns
    -------
    Source
        The normalised source.

    Raises
    ------
    SourceNotFoundError
        If a local path names nothing that exists.
    """
    if isinstance(source, Source):
        return source
    text = os.fspath(source).strip()
    fmt: str | None = None
    head, sep, rest = text.partition("://")
    if sep and head.lower() in FORMAT_PREFIXES:
        fmt = FORMAT_PREFIXES[head.lower()]
        text = rest
    if fmt == "dvid":
        return Source(location=text.rstrip("/"), format=fmt)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if text.startswith(_REMOTE_SCHEMES):
        location, _, inner = text.partition("#")
        return Source(location=location.rstrip("/"), inner=inner.strip("/"), format=fmt)
    return _parse_local(text, fmt)


def _parse_local(text: str, fmt: str | None) -> Source:
    whole = _absolute(text)
    if whole.exists():  # a path that itself contains '#'
        return Source(location=str(whole), format=fmt)
    location, _, inner = text.partition("#")
    path = _absolute(location)
    if path.exists():
        return Source(location=str(path), inner=inner.strip("/"), format=fmt)
    # ``file.h5/group/dataset``: the longest existing prefix must be a container file.
    for parent in path.parents:
        if parent.is_file():
            below = path.relative_to(parent).as_posix()
            inner = "/".join(p for p in (below, inner.strip("/")) if p)
            return Source(location=str(parent), inner=inner, format=fmt)
        if parent.exists():
            break
    raise SourceNotFoundError(text)


def _absolute(text: str) -> Path:
    """Absolute, normalised path (``..`` folded: tensorstore refuses it), links kept."""
    return Path(os.path.normpath(Path(text).expanduser().absolute()))
