"""The contract every backend passes: subclass :class:`BackendContract`, provide ``case``.

Fixtures must write real datasets with the format's reference writer
(zarr-python, ome-zarr, tensorstore, h5py, cloud-volume) and describe the
ground truth in a :class:`ContractCase`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

import napari_connecto as nc
from napari_connecto.backends.registry import sniff_backend
from napari_connecto.errors import ChunkError, SourceNotFoundError


@dataclass
class ContractCase:
    """A dataset written by a reference writer, and what reading it must give."""

    source: str
    """What a user would type to open it."""
    backend: str
    """Registry name of the backend that must open it."""
    expected: list[np.ndarray]
    """Ground truth per scale, z, y, x, finest first."""
    resolutions: list[tuple[float, float, float]]
    """Voxel size per scale, nm, z, y, x."""
    kind: str
    """``"image"`` or ``"segmentation"``."""
    chunk_shape: tuple[int, int, int]
    """Chunk shape of scale 0, z, y, x."""
    origin_nm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Position of voxel 0 of scale 0 in nm."""
    corrupt: Callable[[], tuple[int, tuple[int, int, int], tuple[int, int, int]]] | None = None
    """Damages one chunk on disk; returns (scale, start, stop) voxel region of that chunk."""
    writable: bool = False
    """Whether ``open_volume(source, mode="r+")`` must allow writes."""
    extra: dict[str, object] = field(default_factory=dict)


class BackendContract:
    """Behaviour every backend must show. Subclasses provide the ``case`` fixture."""

    @pytest.fixture
    def case(self, tmp_path) -> ContractCase:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _guard_pickle(self, case, no_pickle):
        """Reading must never unpickle (the guard starts after the fixture is written)."""

    @pytest.fixture
    def volume(self, case):
        vol = nc.open_volume(case.source)
        yield vol
        vol.close()

    def test_sniffed_by_its_backend(self, case):
        backend = sniff_backend(nc.parse_source(case.source))
        assert backend is not None and backend.name == case.backend

    def test_scales_shapes_resolutions(self, case, volume):
        assert volume.format == case.backend
        assert volume.kind == case.kind
        assert len(volume.scales) == len(case.expected)
        for sc, truth, res in zip(volume.scales, case.expected, case.resolutions, strict=True):
            assert sc.shape == truth.shape
            assert sc.dtype == truth.dtype
            assert sc.resolution.as_tuple() == pytest.approx(res)
        assert volume.scales[0].chunk_shape == case.chunk_shape
        assert volume.scales[0].origin_nm.as_tuple() == pytest.approx(case.origin_nm)

    def test_every_scale_voxel_for_voxel(self, case, volume):
        for i, truth in enumerate(case.expected):
            got = volume.read_voxels(i, (0, 0, 0), truth.shape)
            assert got.dtype == truth.dtype
            np.testing.assert_array_equal(got, truth, err_msg=f"scale {i}")

    def test_random_regions_across_chunks(self, case, volume):
        rng = np.random.default_rng(0)
        for i, truth in enumerate(case.expected):
            for _ in range(6):
                start = [int(rng.integers(0, n)) for n in truth.shape]
                stop = [int(rng.integers(s + 1, n + 1)) for s, n in zip(start, truth.shape)]
                got = volume.read_voxels(i, start, stop)
                np.testing.assert_array_equal(
                    got, truth[tuple(slice(a, b) for a, b in zip(start, stop))]
                )

    def test_level_arrays_index_like_numpy(self, case, volume):
        for level, truth in zip(volume.levels, case.expected, strict=True):
            assert level.shape == truth.shape and level.dtype == truth.dtype
            assert level.chunks == volume.scales[level.scale_index].chunk_shape
            z = truth.shape[0] // 2
            np.testing.assert_array_equal(np.asarray(level[z]), truth[z])
            np.testing.assert_array_equal(np.asarray(level[z, 1:-1, ::2]), truth[z, 1:-1, ::2])
            np.testing.assert_array_equal(np.asarray(level[..., -3:]), truth[..., -3:])

    def test_read_in_nm_and_padding_outside(self, case, volume):
        truth = case.expected[0]
        res = np.array(case.resolutions[0])
        origin = np.array(case.origin_nm)
        start = np.array([1, 2, 3])
        stop = np.minimum(start + [2, 5, 7], truth.shape)
        box = nc.BBox.of(origin + start * res, origin + stop * res)
        np.testing.assert_array_equal(
            volume.read(box), truth[tuple(slice(a, b) for a, b in zip(start, stop))]
        )
        outside = volume.read_voxels(0, (-2, 0, 0), (1, 2, 2))
        assert outside.shape == (3, 2, 2)
        assert (outside[:2] == 0).all()
        np.testing.assert_array_equal(outside[2], truth[0, :2, :2])

    def test_listed_in_contents(self, case):
        entries = nc.list_contents(case.source)
        assert any(e.kind == case.kind for e in entries)

    def test_describe_is_json(self, case, volume):
        text = json.dumps(volume.describe())
        assert case.backend in text

    def test_corrupt_chunk_fails_only_that_chunk(self, case):
        if case.corrupt is None:
            pytest.skip("no corruptible chunk for this case")
        scale, start, stop = case.corrupt()
        vol = nc.open_volume(case.source)
        with pytest.raises(ChunkError):
            vol.read_voxels(scale, start, stop)
        truth = case.expected[scale]
        # Any region not touching the damaged chunk still reads correctly.
        other = [(0, s) for s in truth.shape]
        axis = int(np.argmax([b - a < n for a, b, n in zip(start, stop, truth.shape)]))
        if start[axis] > 0:
            other[axis] = (0, start[axis])
        else:
            other[axis] = (stop[axis], truth.shape[axis])
        lo = [a for a, _ in other]
        hi = [b for _, b in other]
        np.testing.assert_array_equal(
            vol.read_voxels(scale, lo, hi), truth[tuple(slice(a, b) for a, b in other)]
        )

    def test_missing_path_is_typed(self, case, tmp_path):
        with pytest.raises(SourceNotFoundError) as err:
            nc.open_volume(str(tmp_path / "nothing-here" / "x"))
        assert "nothing-here" in str(err.value)
        assert isinstance(err.value, FileNotFoundError)

    def test_read_only_unless_asked(self, case, volume):
        with pytest.raises(PermissionError):
            volume.write(case.expected[0][:1, :1, :1], at=(0, 0, 0))

    def test_write_round_trip(self, case):
        if not case.writable:
            pytest.skip("format not writable here")
        vol = nc.open_volume(case.source, mode="r+")
        truth = case.expected[0]
        block = np.asarray(truth[:2, :3, :4]).copy()
        block[...] = 7
        vol.write(block, at=(1, 1, 1))
        vol.close()
        again = nc.open_volume(case.source)
        got = again.read_voxels(0, (0, 0, 0), truth.shape)
        want = truth.copy()
        want[1:3, 1:4, 1:5] = 7
        np.testing.assert_array_equal(got, want)
