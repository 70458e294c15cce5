"""Segment colours and the colour view: EM grey blended with one colour per segment id.

The default colours are a pure function of the uint64 id (a 64-bit mix of its bits), so
every export of the same segmentation colours a neuron alike without napari. The viewer
passes napari's own colours instead (``labels_layer.colormap.map``), through the
``colors`` parameter, so an export looks like the canvas.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ColorFn", "boundaries", "colour_view", "hash_colors"]

ColorFn = Callable[[np.ndarray], np.ndarray]
"""Maps a 1-D array of uint64 ids to an ``(n, 4)`` RGBA array (floats 0-1 or uint8)."""

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(ids: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of each id (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def hash_colors(ids: np.ndarray) -> np.ndarray:
    """Deterministic, well-spread RGBA colours (uint8, opaque) for uint64 segment ids.

    Parameters
    ----------
    ids : numpy.ndarray
        1-D array of segment ids.

    Returns
    -------
    numpy.ndarray
        ``(n, 4)`` uint8; each channel in 48..255 so no segment is near black.
    """
    h = _splitmix64(np.asarray(ids, dtype=np.uint64).ravel())
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (0, 16, 32)], axis=-1)
    rgb = 48 + (rgb.astype(np.uint16) * 207) // 255
    alpha = np.full((rgb.shape[0], 1), 255, dtype=np.uint16)
    return np.concatenate([rgb, alpha], axis=-1).astype(np.uint8)


def _as_rgba_uint8(colors: np.ndarray, n: int) -> np.ndarray:
    """Colours from a :data:`ColorFn` as ``(n, 4)`` uint8."""
    arr = np.asarray(colors)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] not in (3, 4):
        raise ValueError(f"a colour function must return ({n}, 3 or 4) colours, got {arr.shape}")
    if arr.dtype.kind == "f":
        arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0)
    arr = arr.astype(np.uint8)
    if arr.shape[1] == 3:
        arr = np.concatenate([arr, np.full((n, 1), 255, np.uint8)], axis=1)
    return arr


def boundaries(ids: np.ndarray) -> np.ndarray:
    """Pixels of a 2-D id image whose 4-neighbour (right or below) holds a different id."""
    edge = np.zeros(ids.shape, dtype=bool)
    diff_x = ids[:, 1:] != ids[:, :-1]
    diff_y = ids[1:, :] != ids[:-1, :]
    edge[:, 1:] |= diff_x
    edge[:, :-1] |= diff_x
    edge[1:, :] |= diff_y
    edge[:-1, :] |= diff_y
    return edge


def colour_view(
    grey: np.ndarray | None,
    ids: np.ndarray,
    *,
    colors: ColorFn = hash_colors,
    opacity: float = 0.5,
    background: int = 0,
    outline: bool = False,
) -> np.ndarray:
    """Blend one plane of EM grey with per-segment colours (butterfly's colour view).

    Each labelled pixel becomes ``grey * (1 - a) + colour * a`` with ``a = opacity *
    colour alpha``; background pixels keep their grey. With ``outline`` the pixels on
    segment boundaries take the full colour (``a = colour alpha``).

    Parameters
    ----------
    grey : numpy.ndarray or None
        2-D uint8 EM plane (``None``: black).
    ids : numpy.ndarray
        2-D segment ids, same shape.
    colors : ColorFn
        Colour per id; default :func:`hash_colors`.
    opacity : float
        Weight of the segment colour, 0 to 1.
    background : int
        The id left transparent.
    outline : bool
        Draw segment boundaries at full colour.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8 RGB.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be within 0..1, got {opacity}")
    if grey is None:
        grey = np.zeros(ids.shape, dtype=np.uint8)
    if grey.shape != ids.shape:
        raise ValueError(f"grey {grey.shape} and ids {ids.shape} differ in shape")
    unique, inverse = np.unique(ids, return_inverse=True)
    rgba = _as_rgba_uint8(colors(unique), unique.size).astype(np.float32) / 255.0
    rgba[unique == np.asarray(background).astype(unique.dtype)] = 0.0
    per_pixel = rgba[inverse.reshape(ids.shape)]
    alpha = per_pixel[..., 3] * np.float32(opacity)
    if outline:
        edge = boundaries(ids)
        alpha[edge] = per_pixel[..., 3][edge]
    g = grey.astype(np.float32)[..., None]
    a = alpha[..., None]
    out = g * (1.0 - a) + per_pixel[..., :3] * 255.0 * a
    return np.rint(out).astype(np.uint8)
