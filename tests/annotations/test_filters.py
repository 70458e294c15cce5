"""The table filter language, on SQL (via the store tests) and on pandas frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_connecto.annotations.filters import FilterError, Term, parse_filter, to_mask

COLUMNS = {"id": "id", "partner": "id", "status": "text", "confidence": "number"}


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.array([1, 2, 2**63 + 1, 40], dtype=np.uint64),
            "partner": np.array([7, 8, 7, 2**64 - 1], dtype=np.uint64),
            "status": ["verified", "rejected", "unreviewed", "verified"],
            "confidence": [0.9, 0.2, np.nan, 0.5],
        }
    )


@pytest.mark.parametrize(
    "text",
    [
        "confidence > 0.4",
        "confidence>0.4",
        "confidence >0.4",
        "confidence> 0.4",
        "and confidence > 0.4",
    ],
)
def test_spacing_around_operators(text: str) -> None:
    assert parse_filter(text, COLUMNS) == [Term("confidence", ">", 0.4)]


def test_masks(frame: pd.DataFrame) -> None:
    mask = lambda text: to_mask(parse_filter(text, COLUMNS), frame, COLUMNS).tolist()  # noqa: E731
    assert mask("") == [True] * 4
    assert mask("status=verified") == [True, False, False, True]
    assert mask("status != verified") == [False, True, True, False]
    assert mask("confidence >= 0.5") == [True, False, False, True]
    assert mask("partner = 7 verified") == [True, False, False, False]
    assert mask(f"id={2**63 + 1}") == [False, False, True, False]  # exact above 2**63
    assert mask(str(2**64 - 1)) == [False, False, False, True]  # a bare id matches id columns
    assert mask("REJ") == [False, True, False, False]
    assert mask('status ~ "review"') == [False, False, True, False]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = red", "unknown column"),
        ("confidence > high", "number"),
        ("confidence ~ 3", "is a number"),
        ("confidence >", "needs a value"),
        ('status = "open', "cannot parse"),
        (f"id = {2**64}", "number"),
    ],
)
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(text, COLUMNS)
