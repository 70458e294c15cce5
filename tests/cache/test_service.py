"""Streaming service settings: sizes, the default budget, live reconfiguration."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.cache import CacheSettings, ChunkKey, StreamingService, default_budget
from napari_connecto.cache import service as service_module
from napari_connecto.cache.service import parse_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * 2**20),
        ("512MiB", 512 * 2**20),
        (" 2g ", 2 * 2**30),
        ("1.5K", 1536),
        ("64KB", 64 * 2**10),
        ("1T", 2**40),
        ("1000", 1000),
        ("10B", 10),
    ],
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-5M", "lots", "M", "B"])
def test_parse_bytes_rejects_non_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_default_budget_environment_override(monkeypatch) -> None:
    monkeypatch.setenv(service_module.BUDGET_ENV, "300M")
    assert default_budget() == 300 * 2**20


def test_default_budget_ignores_garbage_and_stays_in_bounds(monkeypatch, caplog) -> None:
    monkeypatch.setenv(service_module.BUDGET_ENV, "plenty")
    budget = default_budget()
    assert service_module.MIN_DEFAULT_BUDGET <= budget <= service_module.MAX_DEFAULT_BUDGET
    assert "ignoring" in caplog.text
    monkeypatch.delenv(service_module.BUDGET_ENV)
    monkeypatch.setattr(service_module, "_physical_memory", lambda: 2**30)
    assert default_budget() == service_module.MIN_DEFAULT_BUDGET
    monkeypatch.setattr(service_module, "_physical_memory", lambda: 2**40)
    assert default_budget() == service_module.MAX_DEFAULT_BUDGET
    monkeypatch.setattr(service_module, "_physical_memory", lambda: 16 * 2**30)
    assert default_budget() == 2 * 2**30


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget_bytes": 0},
        {"budget_bytes": 10, "workers": 0},
        {"budget_bytes": 10, "workers": 257},
        {"budget_bytes": 10, "preview_levels": -1},
    ],
)
def test_settings_are_validated(kwargs) -> None:
    with pytest.raises(ValueError):
        CacheSettings(**kwargs)


def test_configure_applies_budget_and_workers_live() -> None:
    service = StreamingService(CacheSettings(budget_bytes=1000, workers=2))
    try:
        for i in range(10):
            service.cache.put(ChunkKey(1, 0, (0, 0, i)), np.zeros(100, np.uint8))
        assert service.cache.nbytes == 1000
        new = service.configure(budget_bytes=300, workers=3, prefetch=False)
        assert new == service.settings
        assert (new.budget_bytes, new.workers, new.prefetch) == (300, 3, False)
        assert service.cache.budget == 300
        assert service.cache.nbytes == 300  # shrinking evicted at once
        assert service.scheduler.workers == 3
        with pytest.raises(ValueError):
            service.configure(workers=0)
        assert service.settings.workers == 3  # a rejected change changes nothing
    finally:
        service.close()
