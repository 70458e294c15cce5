"""A read-only, :class:`~pathlib.Path`-like view of a URL, for the metadata readers.

The zarr, N5 and precomputed metadata readers walk a dataset with ``/``,
``is_file()``, ``exists()`` and :func:`~napari_connecto.backends._meta.load_json`.
:class:`UrlPath` answers the same questions over HTTP, so one validation code
path serves local and remote datasets. A key's body is fetched once and kept
(metadata documents are small and few); HTTP cannot list directories, so
:meth:`UrlPath.iterdir` yields nothing and every non-file counts as a directory.
"""

from __future__ import annotations

import os
import posixpath
import threading
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from napari_connecto.errors import RemoteError
from napari_connecto.remote.http import public_url
from napari_connecto.remote.store import MAX_METADATA_BYTES, HttpStore

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["UrlPath"]


class _Bodies:
    """Bodies of metadata keys, fetched once per opened dataset."""

    def __init__(self, store: HttpStore) -> None:
        self.store = store
        self.known: dict[str, bytes | None] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self.lock:
            if key in self.known:
                return self.known[key]
        body = self.store.get(key)
        if body is not None and len(body) > MAX_METADATA_BYTES:
            body = body[: MAX_METADATA_BYTES + 1]
        with self.lock:
            self.known[key] = body
        return body


class UrlPath:
    """One key below a base URL, answering like a read-only :class:`~pathlib.Path`.

    Parameters
    ----------
    root : str or HttpStore
        The dataset's base URL (or its store).
    key : str
        The ``/``-separated key below it (``""`` for the root itself).
    """

    def __init__(self, root: str | HttpStore, key: str = "", *, _bodies: _Bodies | None = None):
        store = root if isinstance(root, HttpStore) else HttpStore(root)
        self._bodies = _bodies or _Bodies(store)
        self.key = posixpath.normpath(key).lstrip("/") if key else ""
        if self.key == ".":
            self.key = ""

    # -- path arithmetic -----------------------------------------------------------
    @property
    def store(self) -> HttpStore:
        """The store of the dataset root."""
        return self._bodies.store

    def __truediv__(self, other: str) -> UrlPath:
        key = f"{self.key}/{other}" if self.key else str(other)
        return UrlPath(self.store, key, _bodies=self._bodies)

    @property
    def name(self) -> str:
        """The last key component (the base URL's last component at the root)."""
        return self.key.rsplit("/", 1)[-1] if self.key else self.store.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> UrlPath:
        """The key one level up (the root is its own parent)."""
        return UrlPath(self.store, posixpath.dirname(self.key), _bodies=self._bodies)

    @property
    def parents(self) -> list[UrlPath]:
        """Every ancestor key up to the root."""
        out, node = [], self
        while node.key:
            node = node.parent
            out.append(node)
        return out

    @property
    def url(self) -> str:
        """The URL of this key."""
        return self.store.key_url(self.key)

    def relative_to(self, other: UrlPath) -> PurePosixPath:
        """The key relative to ``other``'s (``ValueError`` if not below it)."""
        if not other.key:
            return PurePosixPath(self.key or ".")
        return PurePosixPath(self.key).relative_to(other.key)

    def resolve(self) -> UrlPath:
        """Itself (keys are normalised on creation)."""
        return self

    def escapes_root(self) -> bool:
        """Whether the key climbs above the dataset root (``../``)."""
        return self.key == ".." or self.key.startswith("../")

    def __str__(self) -> str:
        return public_url(self.store.url + (f"/{self.key}" if self.key else ""))

    def __repr__(self) -> str:
        return f"UrlPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlPath) and (self.store.url, self.key) == (
            other.store.url,
            other.key,
        )

    def __hash__(self) -> int:
        return hash((self.store.url, self.key))

    def __lt__(self, other: UrlPath) -> bool:
        return self.key < other.key

    # -- questions -----------------------------------------------------------------
    def read_bytes(self) -> bytes:
        """The body of this key (fetched once).

        Raises
        ------
        FileNotFoundError
            If the server has no such key.
        RemoteError
            If the server fails.
        """
        if self.escapes_root():
            raise FileNotFoundError(str(self))
        body = self._bodies.get(self.key)
        if body is None:
            raise FileNotFoundError(str(self))
        return body

    def stat(self) -> os.stat_result:
        """A stat result whose ``st_size`` is the body's length (``FileNotFoundError`` if none)."""
        size = len(self.read_bytes())
        return os.stat_result((0o100444, 0, 0, 1, 0, 0, size, 0, 0, 0))

    def fetched(self) -> dict[str, bytes]:
        """Bodies already fetched below this key (keys relative to it; absent ones left out)."""
        prefix = f"{self.key}/" if self.key else ""
        with self._bodies.lock:
            known = dict(self._bodies.known)
        return {
            k[len(prefix) :]: v for k, v in known.items() if v is not None and k.startswith(prefix)
        }

    def is_file(self) -> bool:
        """Whether the server has a body at this key (fetched and kept); errors count as no."""
        try:
            self.read_bytes()
        except (FileNotFoundError, RemoteError):
            return False
        return True

    def is_dir(self) -> bool:
        """Whether this key is not a file (HTTP has no directories to check)."""
        return not self.escapes_root() and not self.is_file()

    def exists(self) -> bool:
        """Always true inside the root: a directory cannot be checked over HTTP."""
        return not self.escapes_root()

    def iterdir(self) -> Iterator[UrlPath]:
        """Nothing: HTTP cannot list a directory."""
        return iter(())
