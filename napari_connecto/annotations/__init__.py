"""Annotation store: neurons, synapses and bookmarks in SQLite (default) or PostgreSQL.

Import once (:func:`read_annotations` reads CREMI, butterfly arrays, CSV/Parquet tables
and CAVE exports), then query from the docked tables, the command line or a script::

    from napari_connecto.annotations import AnnotationStore
    store = AnnotationStore.open("dataset.db")
    store.synapses(720575940621039145, pre=False)   # inputs of one neuron, a DataFrame
"""

from __future__ import annotations

from napari_connecto.annotations.filters import FilterError
from napari_connecto.annotations.frames import SYNAPSE_STATUSES, ImportBatch
from napari_connecto.annotations.merge import ImportSummary
from napari_connecto.annotations.store import AnnotationStore, ReviewProgress

__all__ = [
    "SYNAPSE_STATUSES",
    "AnnotationStore",
    "FilterError",
    "ImportBatch",
    "ImportSummary",
    "ReviewProgress",
]
