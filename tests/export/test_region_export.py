"""Region exports read back with tifffile / Pillow equal the volume voxel for voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import napari_connecto as nc
from napari_connecto.errors import ChunkError, RegionError
from napari_connecto.export._atomic import ExportError
from napari_connecto.export.figure import ViewStyle, export_region
from napari_connecto.geometry import BBox
from tests.export._data import ORIGIN, em_and_ids, write_ome

# voxels z 1..4, y 2..40, x 3..50 of the finest scale (origin 400, 40, 20 nm; 40x4x4 nm)
BOX = BBox.of((440.0, 48.0, 32.0), (560.0, 200.0, 220.0))
SL = np.s_[1:4, 2:40, 3:50]
PALETTE = {3: (255, 0, 0), 2**60 + 5: (0, 255, 0), 2**60 + 77: (0, 0, 255), 105: (9, 99, 199)}


def palette(ids: np.ndarray) -> np.ndarray:
    """A test colour table (uint8 RGB), independent of the module's hash colours."""
    return np.array([PALETTE.get(int(i), (128, 128, 128)) for i in ids], dtype=np.uint8)


def expected_composite(grey: np.ndarray, ids: np.ndarray, opacity: float, outline: bool):
    """The colour view, pixel by pixel, the slow obvious way."""
    out = np.zeros((*grey.shape, 3), dtype=np.uint8)
    h, w = grey.shape
    for y in range(h):
        for x in range(w):
            i = int(ids[y, x])
            a = opacity
            if outline:
                nbrs = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
                if any(0 <= v < h and 0 <= u < w and ids[v, u] != ids[y, x] for v, u in nbrs):
                    a = 1.0
            if i == 0:
                a = 0.0
            colour = np.array(PALETTE.get(i, (128, 128, 128)), dtype=float)
            out[y, x] = np.rint(grey[y, x] * (1 - a) + colour * a)
    return out


@pytest.fixture
def dataset(tmp_path):
    image, labels = em_and_ids()
    path = write_ome(tmp_path / "em.zarr", image, labels)
    return path, image, labels


def _volumes(path: Path):
    return nc.open_volume(str(path)), nc.open_volume(f"{path}/labels/cells")


def test_tiff_stacks_equal_the_volume_with_pixel_size(dataset, tmp_path):
    path, image, labels = dataset
    img, seg = _volumes(path)
    style = ViewStyle(opacity=0.4, colors=palette)
    result = export_region(tmp_path / "fig.tif", box=BOX, image=img, labels=seg, style=style)
    names = [p.name for p in result.paths]
    assert names == ["fig.tif", "fig_em.tif", "fig_ids.tif"]
    with tifffile.TiffFile(tmp_path / "fig_em.tif") as tif:
        assert tif.is_imagej
        np.testing.assert_array_equal(tif.asarray(), image[SL])
        assert tif.imagej_metadata["unit"] == "nm"
        assert tif.imagej_metadata["spacing"] == 40.0
        assert tif.pages[0].tags["XResolution"].value == (1, 4)  # 1 pixel per 4 nm
        assert tif.pages[0].tags["YResolution"].value == (1, 4)
    with tifffile.TiffFile(tmp_path / "fig_ids.tif") as tif:
        ids = tif.asarray()
        assert ids.dtype == np.uint64  # ids above 2**32 keep all their bits
        np.testing.assert_array_equal(ids, labels[SL])
        meta = tif.shaped_metadata[0]
        assert meta["resolution_nm"] == [40.0, 4.0, 4.0] and meta["unit"] == "nm"
    colour = tifffile.imread(tmp_path / "fig.tif")
    assert colour.shape == (3, 38, 47, 3)
    for z in range(3):
        want = expected_composite(image[SL][z], labels[SL][z], 0.4, outline=False)
        np.testing.assert_allclose(colour[z], want, atol=1)
    assert not list(tmp_path.glob(".*part*"))


def test_small_ids_are_an_imagej_uint16_stack(tmp_path):
    image, labels = em_and_ids(big_ids=False)
    path = write_ome(tmp_path / "small.zarr", image, labels)
    seg = nc.open_volume(f"{path}/labels/cells")
    result = export_region(tmp_path / "ids.tif", box=BOX, labels=seg)
    assert [p.name for p in result.paths] == ["ids.tif"]
    with tifffile.TiffFile(result.paths[0]) as tif:
        assert tif.is_imagej and tif.series[0].dtype == np.uint16
        np.testing.assert_array_equal(tif.asarray(), labels[SL])


def test_png_per_plane_equals_the_composite(dataset, tmp_path):
    path, image, labels = dataset
    img, seg = _volumes(path)
    style = ViewStyle(opacity=0.7, outline=True, colors=palette)
    out = tmp_path / "pngs" / "cells.png"
    out.parent.mkdir()
    result = export_region(out, box=BOX, image=img, labels=seg, style=style)
    assert [p.name for p in result.paths] == [
        "cells_z0001.png",
        "cells_z0002.png",
        "cells_z0003.png",
    ]
    for z, png in enumerate(result.paths):
        got = np.asarray(Image.open(png).convert("RGB"))
        want = expected_composite(image[SL][z], labels[SL][z], 0.7, outline=True)
        np.testing.assert_allclose(got, want, atol=1)
    assert sorted(p.name for p in out.parent.iterdir()) == [p.name for p in result.paths]


def test_coarser_scale_picked_by_resolution(dataset, tmp_path):
    path, image, _ = dataset
    img, _ = _volumes(path)
    result = export_region(tmp_path / "half.tif", box=BOX, image=img, resolution=(40, 8, 8))
    assert result.plan.scale == 1
    (z0, y0, x0), (z1, y1, x1) = result.plan.start, result.plan.stop
    np.testing.assert_array_equal(
        tifffile.imread(result.paths[0]), image[:, ::2, ::2][z0:z1, y0:y1, x0:x1]
    )
    assert tifffile.TiffFile(result.paths[0]).pages[0].tags["XResolution"].value == (1, 8)


def test_gif_movie_sweeps_z(dataset, tmp_path):
    path, image, _ = dataset
    img, _ = _volumes(path)
    box = BBox.of((ORIGIN[0], 48.0, 32.0), (ORIGIN[0] + 6 * 40, 200.0, 220.0))
    result = export_region(tmp_path / "sweep.gif", box=box, image=img, fps=4)
    with Image.open(result.paths[0]) as gif:
        assert gif.n_frames == 6
        assert gif.info["duration"] == 250
        for z in range(6):
            gif.seek(z)
            np.testing.assert_array_equal(np.asarray(gif.convert("L")), image[z, 2:40, 3:50])


def test_mp4_without_ffmpeg_is_a_typed_error(dataset, tmp_path):
    pytest.importorskip("imageio")
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("imageio-ffmpeg is installed")
    img, _ = _volumes(dataset[0])
    with pytest.raises(ExportError, match="imageio-ffmpeg"):
        export_region(tmp_path / "sweep.mp4", box=BOX, image=img)
    assert list(tmp_path.iterdir()) == [dataset[0]]


@pytest.mark.parametrize(
    ("box", "match"),
    [
        (BBox.of((0.0, 0.0, 0.0), (300.0, 30.0, 10.0)), "outside"),  # before the origin
        (BBox.of((440.0, 48.0, 32.0), (440.0, 200.0, 220.0)), "empty"),  # zero z-range
        (BBox.of((440.0, 48.0, 32.0), (400.0, 200.0, 220.0)), "empty"),  # inverted
    ],
)
def test_bad_regions_are_typed_errors_and_write_nothing(dataset, tmp_path, box, match):
    img, seg = _volumes(dataset[0])
    with pytest.raises(RegionError, match=match):
        export_region(tmp_path / "bad.tif", box=box, image=img, labels=seg)
    assert list(tmp_path.iterdir()) == [dataset[0]]


def test_bad_destinations_are_typed_errors(dataset, tmp_path):
    img, _ = _volumes(dataset[0])
    with pytest.raises(ExportError, match="does not exist"):
        export_region(tmp_path / "missing" / "a.tif", box=BOX, image=img)
    with pytest.raises(ExportError, match="is a folder"):
        export_region(tmp_path / "em.zarr", box=BOX, image=img)  # a .zarr folder, no suffix
    with pytest.raises(ExportError, match="cannot tell"):
        export_region(tmp_path / "a.jpg2", box=BOX, image=img)
    with pytest.raises(ExportError, match="nothing to export"):
        export_region(tmp_path / "a.tif", box=BOX)


def test_corrupt_chunk_mid_export_leaves_nothing_behind(dataset, tmp_path):
    path, _, _ = dataset
    img, seg = _volumes(path)
    chunk = path / "labels" / "cells" / "s0" / "c" / "0" / "0" / "0"  # the one chunk
    chunk.write_bytes(chunk.read_bytes()[:20])  # truncated after the image was read fine
    seg = nc.open_volume(f"{path}/labels/cells")
    with pytest.raises(ChunkError):
        export_region(tmp_path / "fig.tif", box=BOX, image=img, labels=seg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["em.zarr"]


def test_reads_stream_one_plane_at_a_time(dataset, tmp_path):
    path, image, labels = dataset
    img, seg = _volumes(path)
    img.max_read_bytes = 38 * 47  # one plane of the region, not two
    seg.max_read_bytes = 38 * 47 * 8
    with pytest.raises(RegionError):
        img.read_voxels(0, (1, 2, 3), (4, 40, 50))  # the whole region at once is refused
    result = export_region(tmp_path / "fig.tif", box=BOX, image=img, labels=seg)
    np.testing.assert_array_equal(tifffile.imread(result.paths[1]), image[SL])
    np.testing.assert_array_equal(tifffile.imread(result.paths[2]), labels[SL])
