"""Storage-agnostic volumes: scales, nm indexing, reads and writes, processors."""

from napari_connecto.volume.level import LevelArray
from napari_connecto.volume.processors import NormalizeIntensity, Processor, RemapIds
from napari_connecto.volume.scale import Scale
from napari_connecto.volume.volume import Volume

__all__ = ["LevelArray", "NormalizeIntensity", "Processor", "RemapIds", "Scale", "Volume"]
