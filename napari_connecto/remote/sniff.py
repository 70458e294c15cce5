"""Telling the format of a URL with as few requests as possible.

HTTP cannot list a directory, so the format is recognised by the metadata
documents each format keeps at its root, tried in a fixed order. A server that
cannot be reached raises at once (one request's retries) instead of once per
backend.
"""

from __future__ import annotations

from typing import Any

from napari_connecto.errors import MetadataError, SourceNotFoundError
from napari_connecto.remote.store import HttpStore

__all__ = ["remote_format"]

_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("zarr.json", "zarr"),
    (".zarray", "zarr"),
    (".zgroup", "zarr"),
    (".zattrs", "zarr"),
    ("info", "precomputed"),
    ("attributes.json", "n5"),
    ("s0/attributes.json", "n5"),
)


def _fits(fmt: str, key: str, doc: dict[str, Any]) -> bool:
    if fmt == "precomputed":
        return "scales" in doc
    if fmt == "n5":
        return "n5" in doc or "dimensions" in doc or key.startswith("s0/")
    if key == "zarr.json":
        return doc.get("node_type") in ("array", "group")
    return True


def remote_format(location: str) -> str | None:
    """The registered format name of the dataset at a URL, or ``None`` if none fits.

    Raises
    ------
    RemoteError
        If the server cannot be reached or keeps failing.
    """
    if location.rstrip("/").endswith("/info"):
        return "precomputed"
    store = HttpStore(location)
    for key, fmt in _CANDIDATES:
        try:
            doc = store.get_json(key, required=False)
        except MetadataError:
            continue
        except SourceNotFoundError:  # pragma: no cover - not raised when not required
            continue
        if doc is not None and _fits(fmt, key, doc):
            return fmt
    return None
