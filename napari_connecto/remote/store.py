"""Keys below a base URL: what the remote zarr, N5 and precomputed readers fetch through.

``gs://bucket/path`` and ``s3://bucket/path`` are read as their public HTTPS
endpoints (``https://storage.googleapis.com/bucket/path``,
``https://bucket.s3.amazonaws.com/path``), as Neuroglancer does for public
buckets, so they share the one transport; buckets that need credentials are
not supported.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from napari_connecto.errors import MetadataError, RemoteError, SourceNotFoundError, UnsafeDataError
from napari_connecto.remote.http import HttpClient, default_client, public_url

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_METADATA_BYTES", "HttpStore", "https_url"]

T = TypeVar("T")
MAX_METADATA_BYTES = 16 * 2**20
"""Largest metadata document read (``info``, ``.zarray``, ``attributes.json``)."""


def https_url(location: str) -> str:
    """The HTTP(S) URL of a location (``gs://`` and ``s3://`` mapped to public endpoints)."""
    if location.startswith("gs://"):
        return "https://storage.googleapis.com/" + location[len("gs://") :]
    if location.startswith("s3://"):
        bucket, _, path = location[len("s3://") :].partition("/")
        return f"https://{bucket}.s3.amazonaws.com/{path}"
    return location


class HttpStore:
    """Read-only keys below one base URL.

    Parameters
    ----------
    url : str
        The base URL (``http(s)://``, ``gs://`` or ``s3://``).
    client : HttpClient, optional
        The transport; the process-wide one by default.
    """

    def __init__(self, url: str, client: HttpClient | None = None) -> None:
        self.url = https_url(url).rstrip("/")
        self._client = client

    @property
    def client(self) -> HttpClient:
        """The transport (the current default, so :func:`configure` takes effect)."""
        return self._client or default_client()

    def __repr__(self) -> str:
        return f"HttpStore({public_url(self.url)!r})"

    def key_url(self, key: str) -> str:
        """The URL of ``key``; keys that would leave the base URL are refused.

        Raises
        ------
        UnsafeDataError
            For ``..`` components, absolute keys or keys holding a scheme.
        """
        parts = key.split("/")
        if key.startswith("/") or "://" in key or any(p in ("..", ".") for p in parts):
            raise UnsafeDataError(public_url(self.url), key, "key escapes the dataset root")
        return f"{self.url}/{key}" if key else self.url

    def child(self, prefix: str) -> HttpStore:
        """The store of the keys below ``prefix``."""
        return HttpStore(self.key_url(prefix.strip("/")), self._client)

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key`` (confirmed complete), or ``None`` if the server has none (404)."""
        return self.client.get_confirmed(self.key_url(key), allow_missing=True)

    def get_range(self, key: str, start: int, length: int) -> bytes | None:
        """``length`` bytes of ``key`` from ``start`` (HTTP Range), or ``None`` if missing."""
        return self.client.get(self.key_url(key), byte_range=(start, length), allow_missing=True)

    def fetch(self, key: str, decode: Callable[[bytes], T]) -> T | None:
        """``decode(bytes of key)``, retried if an unverified body does not decode."""
        return self.client.fetch(self.key_url(key), decode, allow_missing=True)

    def get_json(self, key: str, *, required: bool = True) -> dict[str, Any] | None:
        """A JSON object stored at ``key``.

        Returns
        -------
        dict or None
            The object; ``None`` if absent and not ``required``.

        Raises
        ------
        SourceNotFoundError
            If absent and ``required``.
        MetadataError
            If the document is not a JSON object or too large.
        RemoteError
            If the server fails.
        """
        where = public_url(self.key_url(key))

        def decode(data: bytes) -> Any:
            if len(data) > MAX_METADATA_BYTES:
                raise MetadataError(where, "", f"larger than {MAX_METADATA_BYTES} bytes")
            try:
                return json.loads(data, parse_constant=_refuse_constant)
            except RecursionError:
                raise MetadataError(where, "", "JSON nested too deeply") from None

        try:
            doc = self.fetch(key, decode)
        except MetadataError:
            raise
        except ValueError as exc:
            raise MetadataError(where, "", f"not valid JSON ({exc})") from None
        if doc is None:
            if required:
                raise SourceNotFoundError(where, "the server has no such file (404)")
            return None
        if not isinstance(doc, dict):
            raise MetadataError(where, "", f"expected a JSON object, got {type(doc).__name__}")
        return doc

    def probe_json(self, key: str) -> dict[str, Any] | None:
        """Like :meth:`get_json` but ``None`` for anything that is not a readable object."""
        try:
            return self.get_json(key, required=False)
        except (MetadataError, RemoteError, SourceNotFoundError):
            return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
