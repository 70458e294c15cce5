"""A scale bar drawn onto a screenshot: a round length, white with a dark outline.

Headless (Pillow only). The viewer side works out nm per screenshot pixel from the
camera zoom; this module only draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["ScaleBar", "draw_scale_bar", "format_length", "nice_length"]

Corner = Literal["bottom-right", "bottom-left", "top-right", "top-left"]

_FONT_FILES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf")
_WHITE = (255, 255, 255, 255)
_DARK = (20, 20, 20, 255)


@dataclass(frozen=True, slots=True)
class ScaleBar:
    """Where a scale bar was drawn and what it says."""

    length_nm: float
    """The length the bar stands for, in nm."""
    length_px: int
    """Its length in image pixels (the white part)."""
    label: str
    """The text drawn above it, e.g. ``"500 nm"`` or ``"2 µm"``."""
    box: tuple[int, int, int, int]
    """The white bar as ``(x0, y0, x1, y1)`` pixels, stop exclusive."""


def nice_length(max_nm: float) -> float:
    """The largest of 1, 2, 5 x 10^k nm not above ``max_nm``.

    Raises
    ------
    ValueError
        If ``max_nm`` is not a positive finite number.
    """
    if not (math.isfinite(max_nm) and max_nm > 0):
        raise ValueError(f"need a positive length, got {max_nm}")
    exponent = math.floor(math.log10(max_nm))
    for step in (5.0, 2.0, 1.0):
        length = step * 10.0**exponent
        if length <= max_nm * (1 + 1e-9):
            return length
    return 10.0 ** (exponent - 1) * 5.0


def format_length(nm: float, *, micro: str = "µ") -> str:
    """``"500 nm"`` below 1 µm, ``"2 µm"`` from 1 µm, ``"1 mm"`` from 1 mm."""
    if nm >= 1e6:
        return f"{nm / 1e6:g} mm"
    if nm >= 1e3:
        return f"{nm / 1e3:g} {micro}m"
    return f"{nm:g} nm"


def _font(size: int) -> tuple[object, bool]:
    """A bold sans font of ``size`` px and whether it has the µ glyph."""
    from PIL import ImageFont

    for name in _FONT_FILES:
        try:
            return ImageFont.truetype(name, size), True
        except OSError:
            continue
    return ImageFont.load_default(size=size), False  # Pillow's bundled font has no µ


def draw_scale_bar(
    image: np.ndarray,
    nm_per_pixel: float,
    *,
    corner: Corner = "bottom-right",
    fraction: float = 0.2,
) -> tuple[np.ndarray, ScaleBar]:
    """Draw a scale bar of a round length onto a copy of ``image``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(h, w, 3)`` or ``(h, w, 4)`` uint8 (a napari screenshot is RGBA).
    nm_per_pixel : float
        Size in nm of one image pixel.
    corner : str
        Where the bar goes.
    fraction : float
        The bar is at most this fraction of the image width.

    Returns
    -------
    tuple
        The new image (same shape and dtype) and the :class:`ScaleBar` drawn.

    Raises
    ------
    ValueError
        If the image is not RGB(A) uint8 or ``nm_per_pixel`` is not positive.
    """
    from PIL import Image, ImageDraw

    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"need an (h, w, 3|4) uint8 image, got {image.shape} {image.dtype}")
    if not (math.isfinite(nm_per_pixel) and nm_per_pixel > 0):
        raise ValueError(f"nm per pixel must be positive, got {nm_per_pixel}")
    h, w = image.shape[:2]
    length_nm = nice_length(fraction * w * nm_per_pixel)
    length_px = max(1, round(length_nm / nm_per_pixel))
    thick = max(4, round(h / 120))
    outline = max(1, thick // 3)
    margin = max(12, round(min(h, w) / 30))
    font, has_micro = _font(max(12, round(h / 28)))
    label = format_length(length_nm, micro="µ" if has_micro else "u")
    x0 = w - margin - length_px if corner.endswith("right") else margin
    text_h = font.getbbox(label)[3] + thick  # type: ignore[attr-defined]
    y0 = h - margin - thick if corner.startswith("bottom") else margin + text_h
    box = (x0, y0, x0 + length_px, y0 + thick)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle(
        (x0 - outline, y0 - outline, box[2] - 1 + outline, box[3] - 1 + outline), fill=_DARK
    )
    draw.rectangle((x0, y0, box[2] - 1, box[3] - 1), fill=_WHITE)
    draw.text(
        ((box[0] + box[2]) / 2, y0 - thick),
        label,
        font=font,
        anchor="md",
        fill=_WHITE,
        stroke_width=max(1, thick // 3),
        stroke_fill=_DARK,
    )
    return np.asarray(canvas).copy(), ScaleBar(length_nm, length_px, label, box)
