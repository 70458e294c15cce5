"""npe2 reader shim: sniff cheaply, hand the work to the backends."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from napari_connecto.backends.registry import sniff_backend
from napari_connecto.errors import ConnectoError
from napari_connecto.source import parse_source

__all__ = ["get_reader"]

logger = logging.getLogger(__name__)

ReaderFunction = Callable[[Any], list[tuple[Any, dict[str, Any], str]]]
PathOrPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def _as_list(path: PathOrPaths) -> list[str]:
    if isinstance(path, str | os.PathLike):
        return [os.fspath(path)]
    return [os.fspath(p) for p in path]


def get_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return a reader if every path is a source napari-connecto can open, else ``None``.

    Never raises and never reads chunk data; a bad path is answered with ``None``.
    """
    paths = _as_list(path)
    if not paths:
        return None
    for p in paths:
        try:
            source = parse_source(p)
            if source.is_remote:  # no network here: the reader reports what it finds
                continue
            if sniff_backend(source) is None:
                return None
        except (ConnectoError, OSError, ValueError) as exc:
            logger.debug("napari-connecto does not read %s: %s", p, exc)
            return None
    return read_sources


def read_sources(path: PathOrPaths) -> list[tuple[Any, dict[str, Any], str]]:
    """Read every layer of each path (images, segmentations, point sets).

    Inside a viewer the volumes stream in the background (the current viewer gets a
    streaming controller); without one they are read when sliced.
    """
    import napari

    from napari_connecto.viewer.layers import napari_layer_data
    from napari_connecto.viewer.streaming import controller_for

    viewer = napari.current_viewer()
    if viewer is not None:
        controller_for(viewer)
    paths = _as_list(path)
    layers = []
    for p in paths:
        layers.extend(napari_layer_data(p, streaming=viewer is not None))
    return layers
