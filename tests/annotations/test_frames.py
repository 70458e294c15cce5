"""Normalising import frames: exact ids, dates, defaults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_connecto.annotations.frames import as_uint64, normalize_synapses
from napari_connecto.errors import ImportFormatError


def test_dates_become_epoch_seconds() -> None:
    frame = pd.DataFrame(
        {"pre_id": [1, 2], "post_id": [2, 3], "z": [0, 0], "y": [0, 0], "x": [0, 0],
         "created": ["2020-11-04 06:48:42+00", None]}
    )  # fmt: skip
    out = normalize_synapses(frame, "t.csv", now=5.0)
    assert out["created"].tolist() == [1604472522.0, 5.0]
    assert out["updated"].tolist() == [5.0, 5.0]
    assert out["status"].tolist() == ["unreviewed", "unreviewed"]


def test_midpoint_centre_and_text_ids() -> None:
    frame = pd.DataFrame(
        {"pre_id": [str(2**64 - 1)], "post_id": ["9007199254740993"],
         "pre_z": [0.0], "pre_y": [10.0], "pre_x": [20.0],
         "post_z": [40.0], "post_y": [30.0], "post_x": [20.0]}
    )  # fmt: skip
    row = normalize_synapses(frame, "t.csv").iloc[0]
    assert (int(row["pre_id"]), int(row["post_id"])) == (2**64 - 1, 2**53 + 1)
    assert (row["z"], row["y"], row["x"]) == (20.0, 20.0, 20.0)


@pytest.mark.parametrize("bad", [-1, 1.5, 2.0**60, "12a", "", None, True])
def test_bad_ids_name_the_row(bad: object) -> None:
    with pytest.raises(ImportFormatError) as info:
        as_uint64(pd.Series([1, bad], dtype=object), path="f.csv", column="pre_id")
    assert (info.value.row, info.value.column) == (1, "pre_id")


def test_integer_columns_convert_without_python_loops() -> None:
    ids = np.array([0, 2**63 + 7], dtype=np.uint64)
    assert as_uint64(pd.Series(ids), path="f", column="id").tolist() == [0, 2**63 + 7]
