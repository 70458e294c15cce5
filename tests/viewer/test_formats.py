"""Every format opens through the plugin in a real viewer, lined up in nm, pixels as stored."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tensorstore as ts

import napari_connecto as nc
from napari_connecto.viewer.streaming import wait_until_loaded
from tests.viewer.test_reader import screen_footprint

pytestmark = pytest.mark.gui

SHAPE = (4, 96, 128)


def _pattern() -> np.ndarray:
    image = np.full(SHAPE, 70, dtype=np.uint8)
    image[:, :, 64:] = 230
    image[:, 10:40, 10:50] = 150
    return image


def _labels() -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint64)
    seg[:, 20:70, 30:100] = np.uint64(2**63 + 9)
    return seg


def write_n5(tmp_path):
    for name, data in (("raw", _pattern()), ("neuron_ids", _labels())):
        ts.open({
            "driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "d.n5" / name)},
            "metadata": {"dimensions": list(SHAPE[::-1]), "blockSize": [32, 32, 2],
                         "dataType": str(data.dtype), "compression": {"type": "gzip"},
                         "resolution": [4, 4, 40], "units": ["nm", "nm", "nm"]},
            "create": True,
        }).result().write(data.transpose()).result()  # fmt: skip
    (tmp_path / "d.n5" / "attributes.json").write_text('{"n5": "4.0.0"}')
    return [str(tmp_path / "d.n5" / "raw"), str(tmp_path / "d.n5" / "neuron_ids")], (0, 0, 0)


def write_precomputed(tmp_path):
    sources = []
    for name, data, kind in (("em", _pattern(), "image"), ("seg", _labels(), "segmentation")):
        path = tmp_path / name
        store_at_zero = ts.open({
            "driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(path)},
            "multiscale_metadata": {"type": kind, "data_type": str(data.dtype), "num_channels": 1},
            "scale_metadata": {"size": list(SHAPE[::-1]), "resolution": [4, 4, 40],
                               "voxel_offset": [10, 20, 3], "chunk_size": [32, 32, 2],
                               "encoding": "raw"},
            "create": True,
        }).result()  # fmt: skip
        store = store_at_zero[ts.d[:].translate_to[0]]
        store.write(data.transpose()[..., None]).result()
        # napari's open() needs a URL with a host part: the Neuroglancer-style file:// form.
        sources.append(str(path) if kind == "image" else f"precomputed://file://{path}")
    return sources, (3 * 40.0, 20 * 4.0, 10 * 4.0)


def write_cremi(tmp_path):
    path = tmp_path / "cremi.h5"
    with h5py.File(path, "w") as f:
        f.attrs["file_format"] = "0.2"
        for key, data in (("volumes/raw", _pattern()), ("volumes/labels/neuron_ids", _labels())):
            ds = f.create_dataset(key, data=data, chunks=(2, 32, 32), compression="gzip")
            ds.attrs["resolution"] = [40.0, 4.0, 4.0]
            ds.attrs["offset"] = [80.0, 8.0, 4.0]
        f["annotations/ids"] = np.array([1, 2], dtype=np.uint64)
        f.create_dataset("annotations/types", data=["presynaptic_site", "postsynaptic_site"],
                         dtype=h5py.string_dtype())  # fmt: skip
        f["annotations/locations"] = np.array([[120.0, 200.0, 300.0], [120.0, 220.0, 330.0]])
        f["annotations/presynaptic_site/partners"] = np.array([[1, 2]], dtype=np.uint64)
    return [str(path)], (80.0, 8.0, 4.0)


@pytest.mark.parametrize("writer", [write_n5, write_precomputed, write_cremi])
def test_format_opens_aligned_with_stored_pixels(writer, make_napari_viewer, tmp_path):
    sources, origin = writer(tmp_path)
    viewer = make_napari_viewer(show=True)
    layers = []
    for source in sources:
        layers += viewer.open(source, plugin="napari-connecto")
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds[:2] == ["Image", "Labels"]
    for layer in layers[:2]:
        np.testing.assert_allclose(layer.scale, (40.0, 4.0, 4.0))
        np.testing.assert_allclose(layer.translate, origin)
    image, labels = layers[:2]
    assert wait_until_loaded(viewer, 30)
    # The exact uint64 id at a world position inside the labelled box.
    centre = np.array(origin) + np.array([40.0, 40 * 4.0, 60 * 4.0])
    assert labels.get_value(tuple(centre), world=True) == 2**63 + 9
    if writer is write_cremi:
        points = layers[2]
        assert type(points).__name__ == "Points"
        np.testing.assert_allclose(points.data[0], (120.0, 200.0, 300.0))
        assert list(points.features["partner"]) == [2, 1]
    labels.visible = False
    for layer in layers[2:]:
        layer.visible = False
    viewer.reset_view()
    assert wait_until_loaded(viewer, 30)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    seen = screen_footprint(shot, SHAPE[1:])
    close = np.abs(seen - _pattern()[0].astype(float)) <= 12
    assert close.mean() > 0.97, f"only {close.mean():.1%} of pixels match"


def test_cremi_background_id_is_transparent(make_napari_viewer, tmp_path):
    path = tmp_path / "bg.h5"
    seg = np.full(SHAPE, np.uint64(2**64 - 1))
    seg[:, :, :32] = 7
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("volumes/labels/neuron_ids", data=seg, chunks=(2, 32, 32))
        ds.attrs["resolution"] = [40.0, 4.0, 4.0]
    viewer = make_napari_viewer(show=True)
    nc.view(f"{path}#volumes/labels/neuron_ids", viewer=viewer)
    labels = viewer.layers[0]
    assert labels.colormap.background_value == 2**64 - 1
    viewer.reset_view()
    assert wait_until_loaded(viewer, 30)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    lit = shot.sum(axis=-1) > 30
    cols = np.nonzero(lit.any(axis=0))[0]
    width = cols.max() - cols.min() + 1
    # Only the quarter labelled 7 is coloured; the background id draws nothing.
    assert lit.any(axis=0).sum() < 0.4 * shot.shape[1]
    assert width < 0.4 * shot.shape[1]
