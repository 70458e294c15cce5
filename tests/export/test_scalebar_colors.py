"""Scale bar lengths and labels, measured in the drawn pixels; segment colours."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.export.colors import colour_view, hash_colors
from napari_connecto.export.scalebar import draw_scale_bar, format_length, nice_length


@pytest.mark.parametrize(
    ("limit", "want"),
    [(999.0, 500.0), (1000.0, 1000.0), (4999.0, 2000.0), (1.9, 1.0), (0.3, 0.2), (7e4, 5e4)],
)
def test_nice_length_is_the_largest_round_length(limit, want):
    assert nice_length(limit) == pytest.approx(want)


def test_labels_switch_units():
    assert format_length(500) == "500 nm"
    assert format_length(2000) == "2 µm"
    assert format_length(2e6) == "2 mm"
    with pytest.raises(ValueError):
        nice_length(0)


def _white_run(image: np.ndarray, row: int) -> int:
    """Length of the longest run of pure white pixels in ``row``."""
    white = np.all(image[row, :, :3] == 255, axis=-1)
    best = run = 0
    for v in white:
        run = run + 1 if v else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("nm_per_px", [0.8, 3.7, 25.0, 160.0])
def test_bar_pixels_match_its_label(nm_per_px):
    image = np.full((480, 640, 4), 80, dtype=np.uint8)
    image[..., 3] = 255
    out, bar = draw_scale_bar(image, nm_per_px)
    x0, y0, x1, y1 = bar.box
    measured = _white_run(out, (y0 + y1) // 2)
    assert measured == x1 - x0 == bar.length_px
    number, unit = bar.label.split()
    nm = float(number) * {"nm": 1.0, "µm": 1e3, "mm": 1e6}[unit]
    assert nm == pytest.approx(bar.length_nm)
    assert measured * nm_per_px == pytest.approx(nm, abs=nm_per_px)  # within one pixel
    assert 0.08 * 640 <= measured <= 0.2 * 640 + 1  # a sensible size
    # the dark outline sits around the bar so it reads on white EM too
    assert np.all(out[y0 - 1, x0 + 1 : x1 - 1, :3] < 60)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_bar_refuses_bad_input():
    with pytest.raises(ValueError):
        draw_scale_bar(np.zeros((10, 10), np.uint8), 1.0)
    with pytest.raises(ValueError):
        draw_scale_bar(np.zeros((10, 10, 3), np.uint8), -1.0)


def test_hash_colours_are_deterministic_and_distinct():
    ids = np.array([1, 2, 3, 2**63 + 1, 2**64 - 1], dtype=np.uint64)
    a, b = hash_colors(ids), hash_colors(ids.copy())
    np.testing.assert_array_equal(a, b)
    assert len({tuple(c) for c in a}) == len(ids)
    assert a[:, :3].min() >= 48 and np.all(a[:, 3] == 255)


def test_background_is_transparent_and_opacity_blends():
    grey = np.full((2, 2), 100, np.uint8)
    ids = np.array([[0, 7], [7, 7]], dtype=np.uint64)
    red = lambda ids: np.tile([[1.0, 0.0, 0.0, 1.0]], (len(ids), 1))  # noqa: E731
    out = colour_view(grey, ids, colors=red, opacity=0.25)
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert tuple(out[1, 1]) == (139, 75, 75)  # 100 * 0.75 + 255 * 0.25 = 138.75
    with pytest.raises(ValueError):
        colour_view(grey, ids, opacity=1.5)
