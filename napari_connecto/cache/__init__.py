"""Stream chunks into napari in the background: one byte-budget cache, a priority scheduler."""

from napari_connecto.cache.chunk_cache import CacheStats, ChunkCache, ChunkKey
from napari_connecto.cache.level import StreamingLevel
from napari_connecto.cache.planner import Planner
from napari_connecto.cache.scheduler import FetchJob, FetchScheduler, Priority, SchedulerStats, Tier
from napari_connecto.cache.service import (
    CacheSettings,
    StreamingService,
    default_budget,
    default_service,
)
from napari_connecto.cache.streaming import FailedBlock, LayerStream, StreamingVolume

__all__ = [
    "CacheSettings",
    "CacheStats",
    "ChunkCache",
    "ChunkKey",
    "FailedBlock",
    "FetchJob",
    "FetchScheduler",
    "LayerStream",
    "Planner",
    "Priority",
    "SchedulerStats",
    "StreamingLevel",
    "StreamingService",
    "StreamingVolume",
    "Tier",
    "default_budget",
    "default_service",
]
