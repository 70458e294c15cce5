"""The process-wide streaming service: one chunk cache, one fetch scheduler, their settings."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace

from napari_connecto.cache.chunk_cache import ChunkCache
from napari_connecto.cache.planner import Planner
from napari_connecto.cache.scheduler import FetchScheduler

__all__ = ["CacheSettings", "StreamingService", "default_budget", "default_service"]

logger = logging.getLogger(__name__)

BUDGET_ENV = "NAPARI_CONNECTO_CACHE_BYTES"
"""Environment variable overriding the default cache budget (bytes, or with a K/M/G suffix)."""
MIN_DEFAULT_BUDGET = 256 * 2**20
MAX_DEFAULT_BUDGET = 8 * 2**30


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def parse_bytes(text: str) -> int:
    """``"512M"`` -> 536870912; plain integers are bytes.

    Raises
    ------
    ValueError
        If ``text`` is not a positive size.
    """
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    value = int(float(number) * factor)
    if value <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return value


def default_budget() -> int:
    """An eighth of physical memory, between 256 MiB and 8 GiB, unless the environment says."""
    override = os.environ.get(BUDGET_ENV)
    if override:
        try:
            return parse_bytes(override)
        except ValueError:
            logger.warning("ignoring %s=%r: not a size", BUDGET_ENV, override)
    memory = _physical_memory() or 8 * 2**30
    return max(MIN_DEFAULT_BUDGET, min(MAX_DEFAULT_BUDGET, memory // 8))


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How the streaming service behaves; change it with :meth:`StreamingService.configure`."""

    budget_bytes: int
    """Most bytes of decoded chunks held at once."""
    workers: int = 16
    """Fetches in flight across all sources (each source also has its own limit)."""
    prefetch: bool = True
    """Fetch neighbouring z-planes and ahead of the movement after the visible chunks."""
    preview_levels: int = 2
    """How many levels coarser the quick preview is fetched from, before the sharp level."""

    def __post_init__(self) -> None:
        if self.budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {self.budget_bytes}")
        if not 1 <= self.workers <= 256:
            raise ValueError(f"workers must be between 1 and 256, got {self.workers}")
        if self.preview_levels < 0:
            raise ValueError(f"preview_levels must be >= 0, got {self.preview_levels}")


class StreamingService:
    """One chunk cache and one scheduler shared by every streamed layer.

    Parameters
    ----------
    settings : CacheSettings, optional
        Initial settings; default :func:`default_budget` and the class defaults.
    """

    def __init__(self, settings: CacheSettings | None = None) -> None:
        self._settings = settings or CacheSettings(budget_bytes=default_budget())
        self.cache = ChunkCache(self._settings.budget_bytes)
        self.scheduler = FetchScheduler(self.cache, self._settings.workers)
        self.planner = Planner()
        """Plans the wish lists of streamed layers shown in a viewer, off the main thread."""

    @property
    def settings(self) -> CacheSettings:
        """The current settings."""
        return self._settings

    def configure(self, **changes: int | bool) -> CacheSettings:
        """Change settings live (budget shrinks evict at once); return the new settings.

        Parameters
        ----------
        **changes
            Fields of :class:`CacheSettings`.
        """
        new = replace(self._settings, **changes)  # type: ignore[arg-type]
        if new.budget_bytes != self._settings.budget_bytes:
            self.cache.budget = new.budget_bytes
        if new.workers != self._settings.workers:
            self.scheduler.set_workers(new.workers)
        self._settings = new
        return new

    def close(self) -> None:
        """Stop the workers."""
        self.planner.close()
        self.scheduler.close()


_default: StreamingService | None = None
_default_lock = threading.Lock()


def default_service() -> StreamingService:
    """The process-wide service, created on first use."""
    global _default  # noqa: PLW0603 - one cache per process is the point
    with _default_lock:
        if _default is None:
            _default = StreamingService()
        return _default
