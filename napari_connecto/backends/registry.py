"""An open registry of backends, keyed by format name.

Built-in backends are registered by import path so that importing
:mod:`napari_connecto` stays cheap; third parties call :func:`register_backend`.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from napari_connecto.errors import UnknownFormatError

if TYPE_CHECKING:
    from napari_connecto.backends.base import VolumeBackend
    from napari_connecto.source import Source

__all__ = ["backend_names", "find_backend", "get_backend", "register_backend", "sniff_backend"]

logger = logging.getLogger(__name__)

# Sniffing order matters only where formats overlap (none of these do).
_BUILTIN: dict[str, str] = {
    "zarr": "napari_connecto.backends.zarr:ZarrBackend",
    "n5": "napari_connecto.backends.n5:N5Backend",
    "hdf5": "napari_connecto.backends.hdf5:HDF5Backend",
    "precomputed": "napari_connecto.backends.precomputed:PrecomputedBackend",
    "dvid": "napari_connecto.backends.dvid:DvidBackend",
}
_loaded: dict[str, type[VolumeBackend]] = {}
_registered: list[str] = list(_BUILTIN)


def register_backend(backend: type[VolumeBackend], *, first: bool = False) -> None:
    """Register ``backend`` under ``backend.name``.

    Parameters
    ----------
    backend : type of VolumeBackend
        The backend class.
    first : bool
        Sniff it before the built-in backends.
    """
    _loaded[backend.name] = backend
    if backend.name in _registered:
        _registered.remove(backend.name)
    _registered.insert(0 if first else len(_registered), backend.name)


def backend_names() -> list[str]:
    """Names of every registered backend, in sniffing order."""
    return list(_registered)


def get_backend(name: str) -> type[VolumeBackend]:
    """Return the backend class registered as ``name``.

    Raises
    ------
    KeyError
        If no backend has that name, or its module is not available.
    """
    if name in _loaded:
        return _loaded[name]
    target = _BUILTIN.get(name)
    if target is None:
        raise KeyError(f"no backend named {name!r}; known: {', '.join(_registered)}")
    module_name, _, attr = target.partition(":")
    try:
        _loaded[name] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        logger.warning("backend %r could not be loaded: %s", name, exc)
        raise KeyError(f"backend {name!r} is not available: {exc}") from exc
    return _loaded[name]


def _available() -> list[type[VolumeBackend]]:
    found = []
    for name in _registered:
        try:
            found.append(get_backend(name))
        except KeyError:
            logger.debug("backend %s not available", name)
    return found


def sniff_backend(source: Source) -> type[VolumeBackend] | None:
    """The backend that recognises ``source``, or ``None``; never raises."""
    if source.format is not None:
        try:
            return get_backend(source.format)
        except KeyError:
            return None
    if source.is_remote:
        return _sniff_remote(source)
    for backend in _available():
        if backend.sniff(source):
            return backend
    return None


def _sniff_remote(source: Source, *, quiet: bool = True) -> type[VolumeBackend] | None:
    """The backend of a URL, from the metadata documents at its root.

    With ``quiet=False`` an unreachable or failing server raises its
    :class:`~napari_connecto.errors.RemoteError`.
    """
    from napari_connecto.errors import RemoteError
    from napari_connecto.remote.sniff import remote_format

    try:
        name = remote_format(source.location)
    except RemoteError as exc:
        if not quiet:
            raise
        logger.warning("cannot sniff %s: %s", source, exc)
        return None
    try:
        return None if name is None else get_backend(name)
    except KeyError:
        return None


def find_backend(source: Source) -> type[VolumeBackend]:
    """Like :func:`sniff_backend`, but raise :class:`UnknownFormatError` when none fits."""
    if source.is_remote and source.format is None:
        backend = _sniff_remote(source, quiet=False)
    else:
        backend = sniff_backend(source)
    if backend is None:
        raise UnknownFormatError(str(source), [b.name for b in _available()])
    return backend
