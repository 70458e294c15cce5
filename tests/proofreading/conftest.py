"""Proofreading fixtures: the sample segmentation, a store with synapses, on SQLite and PostgreSQL.

``workspace`` is a fresh copy of a small generated sample (8 x 128 x 128 voxels, three
scales whose coarser levels are the mode of the finest, so recomputed pyramids match
them exactly) plus an annotation store (``store_url``: a SQLite file or a fresh
PostgreSQL schema, see ``tests/annotations/conftest.py``) holding synapses between the
sample's largest cells. Select a backend with ``-k sqlite`` or ``-k postgresql``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from napari_connecto.annotations import AnnotationStore
from napari_connecto.opening import open_volume
from napari_connecto.proofreading.downsample import update_pyramid
from napari_connecto.sample.generate import generate_sample
from napari_connecto.sample.write import write_sample
from tests.annotations.conftest import postgres_server, postgres_url  # noqa: F401 (fixtures)
from tests.proofreading.helpers import SAMPLE_SHAPE, Workspace, cells_of, synapse_frame


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store's location: a SQLite file, or a PostgreSQL URL with its own schema."""
    if request.param == "sqlite":
        return str(tmp_path / "annotations.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The sample written once, with its label pyramid recomputed by mode."""
    data = generate_sample(SAMPLE_SHAPE)
    paths = write_sample(tmp_path_factory.mktemp("sample") / "sample", data)
    seg = open_volume(f"{paths.ome_zarr}/labels/segmentation", mode="r+")
    update_pyramid(seg, (0, 0, 0), seg.shape, labels=True)
    seg.close()
    return paths.ome_zarr, data


@pytest.fixture
def workspace(
    sample_template: tuple[Path, object], store_url: str, tmp_path: Path
) -> Iterator[Workspace]:
    """A private copy of the sample and a store with synapses between its largest cells."""
    source, data = sample_template
    copy = tmp_path / "sample.zarr"
    shutil.copytree(source, copy)
    labels = data.segmentation  # type: ignore[attr-defined]
    cells = cells_of(labels)
    with AnnotationStore.open(store_url) as store:
        store.add_synapses(synapse_frame(labels, cells))
    ws = Workspace(store_url, f"{copy}/labels/segmentation", str(copy), labels, cells)
    yield ws
    ws.close_all()
