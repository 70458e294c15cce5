"""Caches derived from the voxels (attributes, generated meshes) go stale with a write-back."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.objects.attributes import cached_attributes, load_or_compute
from napari_connecto.objects.mesh_source import MeshSource
from napari_connecto.volume.generation import generation_mark
from tests.proofreading.helpers import Workspace


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_write_back_outdates_attributes_and_generated_meshes(workspace: Workspace, cache) -> None:
    ws = workspace
    pr = ws.open()  # writes back before each call returns
    volume = pr.volume
    assert volume is not None
    cell = ws.cells[0]
    before = load_or_compute(volume)
    size = int(before.get(cell.id)["size_voxels"])
    assert cached_attributes(volume) is not None
    old_mesh = MeshSource.for_volume(volume).get(cell.id)
    mark = generation_mark(volume)

    new = pr.new_id()
    y, x = cell.interior[2]
    y0, x0 = max(0, y - 6), max(0, x - 6)
    region = ws.labels[2, y0 : y + 6, x0 : x + 6] == cell.id
    assert region.any()
    pr.paint((2, y0, x0), region[None], new)  # the cell loses these voxels
    assert generation_mark(volume) != mark
    assert cached_attributes(volume) is None  # stale: not served any more
    after = load_or_compute(volume)
    assert int(after.get(cell.id)["size_voxels"]) == size - int(region.sum())
    assert int(after.get(new)["size_voxels"]) == int(region.sum())
    new_mesh = MeshSource.for_volume(volume).get(cell.id)  # generated again, not the cached one
    assert new_mesh.vertices.shape != old_mesh.vertices.shape or not np.array_equal(
        new_mesh.vertices, old_mesh.vertices
    )
    assert len(list((cache / "meshes").rglob("*.npz"))) == 2
