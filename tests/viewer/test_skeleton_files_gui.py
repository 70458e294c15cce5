"""SWC import and export through the menu actions, in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.objects.swc import read_swc
from napari_connecto.viewer.skeleton_files import export_swc_dialog, import_swc_dialog

pytestmark = pytest.mark.gui

SWC_UM = """# a neuron traced in micrometres (no unit header: SWC's convention)
1 1 1.0 2.0 0.5 0.25 -1
2 3 1.5 2.0 0.5 0.10 1
3 3 1.5 2.5 0.54 0.10 2
"""


def test_an_swc_file_imports_in_nm_and_exports_back(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    source = tmp_path / "cell.swc"
    source.write_text(SWC_UM)
    controller = import_swc_dialog(viewer, str(source))
    assert controller is not None
    nodes = controller.nodes
    world = np.asarray(nodes.data) * np.asarray(nodes.scale)  # z, y, x nm
    np.testing.assert_allclose(world[0], (500.0, 2000.0, 1000.0), atol=1e-3)
    np.testing.assert_allclose(controller.skeleton.radius, (250.0, 100.0, 100.0), rtol=1e-6)

    viewer.layers.selection.active = controller.edges  # either layer of the skeleton
    out = export_swc_dialog(viewer, str(tmp_path / "out.swc"), unit="nm")
    assert out is not None
    assert "# unit: nm" in out.read_text()
    again = read_swc(out)  # the header says nm: no unit needed
    np.testing.assert_allclose(
        np.sort(again.vertices, axis=0), np.sort(controller.skeleton.vertices, axis=0), atol=1e-3
    )


def test_a_bad_swc_file_is_reported_and_adds_nothing(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    bad = tmp_path / "bad.swc"
    bad.write_text("1 1 0 0 0 1 -1\n2 3 zero 0 0 1 1\n")
    assert import_swc_dialog(viewer, str(bad)) is None
    assert len(viewer.layers) == 0
    viewer.add_points(np.zeros((1, 3)))
    assert export_swc_dialog(viewer, str(tmp_path / "x.swc")) is None  # not a skeleton
    assert not (tmp_path / "x.swc").exists()
