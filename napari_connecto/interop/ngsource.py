"""Map our source strings to Neuroglancer data-source URLs and back (no I/O but cheap sniffing).

Neuroglancer runs in a browser: it cannot read local files. A local path becomes a
``file:///abs/path`` URL, which only works once someone serves that folder over HTTP and
the URL is rewritten; pass ``url_map={"/data/em": "https://files.lab.org/em"}`` (the CLI's
``--serve-prefix /data/em=https://files.lab.org/em``) to do that rewrite at export and to
undo it at import. HDF5/CREMI has no Neuroglancer data source at all: such layers are
exported with an ``hdf5://`` URL Neuroglancer shows as failed, and a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_connecto.errors import ConnectoError, MetadataError
from napari_connecto.source import Source, parse_source

__all__ = ["NgSource", "from_ng_source", "to_ng_source", "voxel_centre_shift"]

logger = logging.getLogger(__name__)

_NG_SCHEMES = {
    "precomputed": "precomputed",
    "neuroglancer-precomputed": "precomputed",
    "zarr": "zarr",
    "zarr2": "zarr",
    "zarr3": "zarr",
    "n5": "n5",
    "dvid": "dvid",
}
"""Neuroglancer data-source schemes we can open, mapped to our format names."""
_OUT_SCHEMES = {"precomputed": "precomputed", "zarr": "zarr", "n5": "n5"}
_KVSTORE_SCHEMES = ("http://", "https://", "gs://", "s3://", "file://")


@dataclass(frozen=True, slots=True)
class NgSource:
    """One source as Neuroglancer names it."""

    url: str
    """The Neuroglancer data-source URL (``precomputed://https://...``)."""
    warning: str = ""
    """Why Neuroglancer will not show it as is; empty when it will."""


def _backend_name(source: Source) -> str:
    """Our format name for ``source`` (the forced prefix, else the registry's sniff)."""
    if source.format:
        return source.format
    from napari_connecto.backends.registry import find_backend

    return find_backend(source).name


def _local_url(path: str, url_map: Mapping[str, str]) -> tuple[str, bool]:
    """``file://`` URL of a local path, or its served URL; whether it was mapped."""
    for root in sorted(url_map, key=len, reverse=True):
        base = str(Path(root).expanduser().absolute()).rstrip("/")
        if path == base or path.startswith(base + "/"):
            return url_map[root].rstrip("/") + path[len(base) :], True
    return f"file://{path}", False


def to_ng_source(source: str, url_map: Mapping[str, str] | None = None) -> NgSource:
    """The Neuroglancer data-source URL of one of our sources.

    Parameters
    ----------
    source : str
        A source string as :func:`~napari_connecto.parse_source` accepts.
    url_map : mapping of str to str, optional
        Local root folder -> the http(s) URL it is served at.

    Returns
    -------
    NgSource
        The URL and, for sources Neuroglancer cannot read, a warning.

    Raises
    ------
    SourceNotFoundError, UnknownFormatError
        If a local source does not exist or has no known format.
    """
    src = parse_source(source)
    fmt = _backend_name(src)
    if fmt == "dvid":
        location = src.location
        if not location.startswith(("http://", "https://")):
            location = f"http://{location}"
        return NgSource(f"dvid://{location}")
    warning = ""
    if src.is_remote:
        location = src.location
    else:
        location, mapped = _local_url(src.location, url_map or {})
        if not mapped:
            warning = (
                f"{source}: Neuroglancer cannot read local files; serve this folder over "
                "HTTP and map it (--serve-prefix LOCAL=URL)"
            )
    if fmt not in _OUT_SCHEMES:
        inner = f"#{src.inner}" if src.inner else ""
        problem = (
            f"{source}: {fmt} has no Neuroglancer data source; Neuroglancer will show it as failed"
        )
        return NgSource(f"{fmt}://{location}{inner}", problem)
    if src.inner and fmt in ("zarr", "n5"):  # a group or dataset inside: a path for Neuroglancer
        location = f"{location.rstrip('/')}/{src.inner.strip('/')}"
    elif src.inner:
        warning = warning or (
            f"{source}: Neuroglancer has no name for #{src.inner}; it will show {fmt} channel 0"
        )
    return NgSource(f"{_OUT_SCHEMES[fmt]}://{location}", warning)


def _split_ng_url(url: str, field: str) -> tuple[str, str]:
    """(format scheme, kvstore URL) of a legacy ``scheme://url`` or a ``url|scheme:`` pipeline."""
    text = url.strip()
    if "|" in text:
        base, *steps = text.split("|")
        scheme = steps[-1].split(":", 1)[0].strip().lower() if steps else ""
        if scheme in _NG_SCHEMES:
            return scheme, base.rstrip("/")
    head, sep, rest = text.partition("://")
    if sep and head.lower() in _NG_SCHEMES:
        return head.lower(), rest.rstrip("/")
    if sep and head.lower() in ("hdf5", "h5"):
        return "hdf5", rest.rstrip("/")
    raise MetadataError("neuroglancer state", field, f"unsupported data source {url!r:.200}")


def from_ng_source(
    url: str, url_map: Mapping[str, str] | None = None, field: str = "source"
) -> str:
    """Our source string for a Neuroglancer data-source URL.

    Parameters
    ----------
    url : str
        ``precomputed://https://...``, ``zarr://file:///...``, ``n5://...``,
        ``dvid://http://host:port/uuid/instance`` or a ``https://...|zarr2:`` pipeline.
    url_map : mapping of str to str, optional
        Local root folder -> served URL; served URLs are turned back into local paths.
    field : str
        How to name the field in errors.

    Returns
    -------
    str
        A source string :func:`~napari_connecto.open_volume` accepts.

    Raises
    ------
    MetadataError
        If the data source is not one napari-connecto can open.
    """
    scheme, location = _split_ng_url(url, field)
    fmt = _NG_SCHEMES.get(scheme, scheme)
    if fmt == "dvid":
        if location.startswith("http://"):
            location = location[len("http://") :]
        return f"dvid://{location}"
    for root, base in sorted((url_map or {}).items(), key=lambda kv: -len(kv[1])):
        served = base.rstrip("/")
        if location == served or location.startswith(served + "/"):
            location = str(Path(root).expanduser().absolute()).rstrip("/") + location[len(served) :]
            break
    if location.startswith("file://"):
        location = location[len("file://") :]
    if not location.startswith(_KVSTORE_SCHEMES) and not location.startswith("/"):
        raise MetadataError("neuroglancer state", field, f"unsupported location {url!r:.200}")
    return f"{fmt}://{location}"


def voxel_centre_shift(source: str) -> float:
    """Neuroglancer coordinate of a voxel's centre minus ``nm / resolution`` for ``source``.

    Precomputed, N5, DVID and plain zarr put voxel *corners* on integers (centre at
    ``i + 0.5``); for OME-Zarr Neuroglancer itself shifts by half a voxel, so the centres
    are on ``translation / scale + i``. Our layers put voxel centres at ``origin + i * res``.
    A zarr source is OME-Zarr when its node, or a group above it up to the source's root,
    carries OME ``multiscales`` (``.zattrs`` or ``zarr.json``); a remote source's metadata
    is fetched for that (one small GET per document).

    Parameters
    ----------
    source : str
        Our source string.

    Returns
    -------
    float
        0.0 for OME-Zarr, 0.5 otherwise (also when the metadata cannot be read).
    """
    try:
        src = parse_source(source)
    except ConnectoError:
        return 0.5
    if src.format not in (None, "zarr"):
        return 0.5
    read = _remote_reader(src.location) if src.is_remote else _local_reader(src.location)
    return 0.0 if any(_is_ome(read, node) for node in _nodes(src.inner)) else 0.5


def _nodes(inner: str) -> list[str]:
    """``inner`` and every group above it, innermost first, ending with the root ``""``."""
    parts = [p for p in inner.split("/") if p]
    return ["/".join(parts[:n]) for n in range(len(parts), -1, -1)]


_Reader = Callable[[str], Any]
"""Reads one JSON document by key below a source's root; ``None`` if absent or unreadable."""


def _local_reader(location: str) -> _Reader:
    root = Path(location)

    def read(key: str) -> Any:
        try:
            return json.loads((root / key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    return read


def _remote_reader(location: str) -> _Reader:
    from napari_connecto.remote.store import HttpStore

    store = HttpStore(location)

    def read(key: str) -> Any:
        try:
            return store.get_json(key, required=False)
        except ConnectoError as exc:  # unreachable, not JSON, unsafe key: not known as OME
            logger.debug("cannot read %s of %s: %s", key, location, exc)
            return None

    return read


def _is_ome(read: _Reader, node: str) -> bool:
    """Whether a zarr node carries OME multiscales metadata (v2 ``.zattrs`` or v3)."""
    prefix = f"{node}/" if node else ""
    for name in (".zattrs", "zarr.json"):
        doc = read(prefix + name)
        if not isinstance(doc, dict):
            continue
        attrs = doc.get("attributes", doc) if name == "zarr.json" else doc
        attrs = attrs.get("ome", attrs) if isinstance(attrs, dict) else {}
        if isinstance(attrs, dict) and "multiscales" in attrs:
            return True
    return False
