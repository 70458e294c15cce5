"""Shared test set-up: a no-pickle guard, and the report hook napari's viewer fixture needs."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

_GUARD = {"on": False}


def _no_pickle(event: str, args: tuple) -> None:
    if event == "pickle.find_class" and _GUARD["on"]:
        raise RuntimeError(f"unpickling attempted: {args!r}")


sys.addaudithook(_no_pickle)


@pytest.fixture
def no_pickle() -> Iterator[None]:
    """Fail on any ``pickle.find_class`` while the test body runs (no pickle, ever).

    Request it after the fixtures that write data: reference writers (dask via
    ome-zarr) may pickle while tokenising, the project's readers must not.
    """
    _GUARD["on"] = True
    yield
    _GUARD["on"] = False


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (napari's ``make_napari_viewer`` reads it)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
