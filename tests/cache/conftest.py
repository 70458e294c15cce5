"""Fixtures of the cache tests: private streaming services, gates opened at teardown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from napari_connecto.cache import CacheSettings, StreamingService


@pytest.fixture
def make_service() -> Iterator[Callable[..., StreamingService]]:
    made: list[StreamingService] = []

    def make(budget: int = 4 * 2**20, workers: int = 4, **kwargs) -> StreamingService:
        service = StreamingService(CacheSettings(budget_bytes=budget, workers=workers, **kwargs))
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def gates() -> Iterator[list[threading.Event]]:
    """Gates to open at teardown, so a failing test never leaves workers parked."""
    events: list[threading.Event] = []
    yield events
    for event in events:
        event.set()
