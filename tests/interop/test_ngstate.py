"""Neuroglancer states headless: coordinates, sources, round trips, validation, CLI export."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np
import pandas as pd
import pytest
import tensorstore as ts
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.io import parse_url
from ome_zarr.writer import write_multiscale, write_multiscale_labels

import napari_connecto as nc
from napari_connecto.annotations import AnnotationStore
from napari_connecto.cli import main
from napari_connecto.errors import MetadataError, SourceNotFoundError
from napari_connecto.geometry import Vec3
from napari_connecto.interop.ngbuild import annotations_from_points, view_state_for_sources
from napari_connecto.interop.ngsource import from_ng_source, to_ng_source, voxel_centre_shift
from napari_connecto.interop.ngstate import (
    DEFAULT_NG_HOST,
    LayerState,
    NgStateError,
    ViewState,
    from_ng_state,
    load_ng_state,
    ng_url,
    to_ng_state,
    validate_state,
)
from napari_connecto.source import parse_source
from napari_connecto.testing.http_server import HttpFolderServer

SHAPE = (4, 64, 96)  # z, y, x
RES = (40.0, 4.0, 4.0)
OFFSET_XYZ = (10, 20, 3)
SEG_ID = 2**63 + 9


def _write_precomputed(root: Path, name: str, data: np.ndarray, kind: str) -> str:
    store = ts.open({
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(root / name)},
        "multiscale_metadata": {"type": kind, "data_type": str(data.dtype), "num_channels": 1},
        "scale_metadata": {"size": list(SHAPE[::-1]), "resolution": list(RES[::-1]),
                           "voxel_offset": list(OFFSET_XYZ), "chunk_size": [32, 32, 2],
                           "encoding": "raw"},
        "create": True,
    }).result()  # fmt: skip
    store[ts.d[:].translate_to[0]].write(data.transpose()[..., None]).result()
    return f"precomputed://file://{root / name}"


@pytest.fixture
def precomputed(tmp_path) -> tuple[str, str]:
    """A tensorstore-written image and segmentation, voxel_offset (10, 20, 3) x, y, z."""
    image = np.full(SHAPE, 90, dtype=np.uint8)
    seg = np.zeros(SHAPE, dtype=np.uint64)
    seg[:, 10:50, 20:80] = np.uint64(SEG_ID)
    return (
        _write_precomputed(tmp_path / "data", "em", image, "image"),
        _write_precomputed(tmp_path / "data", "seg", seg, "segmentation"),
    )


@pytest.fixture
def ome(tmp_path) -> Path:
    """An OME-Zarr image with a labels image, translated by (400, 40, 20) nm."""
    image = np.full(SHAPE, 60, dtype=np.uint8)
    labels = np.zeros(SHAPE, dtype=np.uint64)
    labels[:, 16:48, 16:48] = 5
    root = zarr.group(store=parse_url(str(tmp_path / "em.zarr"), mode="w").store)
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    transforms = [[{"type": "scale", "scale": list(RES)},
                   {"type": "translation", "translation": [400.0, 40.0, 20.0]}]]  # fmt: skip
    write_multiscale([image], root, axes=axes, coordinate_transformations=transforms)
    write_multiscale_labels(
        [labels], root, name="cells", axes=axes, coordinate_transformations=transforms
    )
    return tmp_path / "em.zarr"


def _same_source(a: str, b: str) -> bool:
    """The same dataset: ``em.zarr#labels/cells`` is ``em.zarr/labels/cells`` (a path for NG)."""

    def path(text: str) -> str:
        src = parse_source(text)
        return "/".join(p.strip("/") for p in (src.location, src.inner) if p)

    return path(a) == path(b)


# -- coordinates -------------------------------------------------------------------------
def test_position_is_the_voxel_centre_in_neuroglancer_voxels(precomputed):
    image, seg = precomputed
    with nc.open_volume(seg) as volume:
        origin = volume.scales[0].origin_nm  # voxel_offset * resolution
    # voxel (z, y, x) = (2, 10, 10) of the stored array; napari puts its centre here:
    at = (origin.z + 2 * 40.0, origin.y + 10 * 4.0, origin.x + 10 * 4.0)
    view = view_state_for_sources([image, seg], at=at, zoom=0.125, segments=[SEG_ID])
    state = to_ng_state(view).state
    assert state["dimensions"] == {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]}
    # Neuroglancer: voxel_offset + index, and + 0.5 for the centre of that voxel (x, y, z).
    assert state["position"] == pytest.approx([10 + 10 + 0.5, 20 + 10 + 0.5, 3 + 2 + 0.5])
    # 0.125 screen pixels per nm = 8 nm = 2 canonical (4 nm) voxels per pixel.
    assert state["crossSectionScale"] == pytest.approx(2.0)
    assert state["projectionScale"] == pytest.approx(2.0 * 800)
    assert state["layout"] == "xy"
    em, segmentation = state["layers"]
    assert em == {"type": "image", "name": "em", "opacity": 1.0,
                  "source": f"precomputed://file://{image.split('file://')[1]}"}  # fmt: skip
    assert segmentation["type"] == "segmentation"
    assert segmentation["segments"] == [str(SEG_ID)]  # exact uint64, as a string
    validate_state(state)


def test_ome_zarr_positions_need_no_half_voxel(ome):
    """Neuroglancer shifts OME-Zarr by half a voxel itself (translation = voxel centre)."""
    at = (400.0 + 40.0, 40.0 + 4.0 * 10, 20.0 + 4.0 * 7)  # voxel (1, 10, 7)
    state = to_ng_state(view_state_for_sources([ome], at=at)).state
    assert state["position"] == pytest.approx([20.0 / 4 + 7, 40.0 / 4 + 10, 400.0 / 40 + 1])
    assert [layer["source"] for layer in state["layers"]] == [
        f"zarr://file://{ome}",
        f"zarr://file://{ome}/labels/cells",
    ]
    assert from_ng_state(state).position == Vec3(*at)


def test_remote_ome_zarr_positions_need_no_half_voxel(ome, tmp_path):
    """Served over HTTP, OME-Zarr (0.5 and 0.4) is still centred like the local copy."""
    at = (400.0 + 40.0, 40.0 + 4.0 * 10, 20.0 + 4.0 * 7)  # voxel (1, 10, 7)
    want = [20.0 / 4 + 7, 40.0 / 4 + 10, 400.0 / 40 + 1]
    v04 = zarr.group(store=parse_url(str(tmp_path / "v04.zarr"), mode="w", fmt=FormatV04()).store)
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    scale = [[{"type": "scale", "scale": list(RES)}]]
    write_multiscale(
        [np.zeros(SHAPE, np.uint8)],
        v04,
        axes=axes,
        fmt=FormatV04(),
        coordinate_transformations=scale,
    )
    plain = zarr.open_array(
        str(tmp_path / "plain.zarr"), mode="w", shape=SHAPE, dtype="uint8", zarr_format=2
    )
    plain.attrs["resolution"] = list(RES)
    with HttpFolderServer(tmp_path) as server:
        url = f"{server.url}/{ome.name}"
        state = to_ng_state(view_state_for_sources([url], at=at)).state
        assert state["position"] == pytest.approx(want)
        assert state["layers"][0]["source"] == f"zarr://{url}"
        assert from_ng_state(state).position == Vec3(*at)
        for source in (f"{url}/labels/cells", f"{url}#labels/cells", f"zarr://{url}#s0",
                       f"{server.url}/v04.zarr"):  # fmt: skip
            assert voxel_centre_shift(source) == 0.0, source
        # plain zarr, a missing dataset and a server that is gone: corners on integers
        assert voxel_centre_shift(f"{server.url}/plain.zarr") == 0.5
        assert voxel_centre_shift(f"{server.url}/nothing.zarr") == 0.5
        assert voxel_centre_shift(f"precomputed://{url}") == 0.5
    assert voxel_centre_shift(url) == 0.5


# -- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["precomputed", "ome"])
def test_export_then_import_gives_the_same_view(which, precomputed, ome):
    sources = list(precomputed) if which == "precomputed" else [str(ome)]
    view = view_state_for_sources(sources, at=(200.0, 131.0, 77.5), zoom=0.3, segments=[5, 7])
    url = to_ng_state(view).url()
    assert url.startswith(f"{DEFAULT_NG_HOST}/#!%7B")
    back = from_ng_state(url)
    assert [(lay.name, lay.kind) for lay in back.layers] == [
        (lay.name, lay.kind) for lay in view.layers
    ]
    for before, after in zip(view.layers, back.layers, strict=True):
        assert _same_source(before.source, after.source)
        assert after.segments == before.segments
        assert after.opacity == pytest.approx(before.opacity)
        with nc.open_volume(after.source) as volume:  # what came back opens
            assert volume.kind == after.kind
    assert back.position.as_tuple() == pytest.approx(view.position.as_tuple())
    assert back.zoom == pytest.approx(0.3)
    assert back.resolution == Vec3(*RES)


def test_serve_prefix_maps_local_folders_to_urls_and_back(precomputed, tmp_path):
    image, seg = precomputed
    served = {str(tmp_path / "data"): "https://files.lab.org/em-data"}
    view = view_state_for_sources([image, seg])
    result = to_ng_state(view, url_map=served)
    assert [lay["source"] for lay in result.state["layers"]] == [
        "precomputed://https://files.lab.org/em-data/em",
        "precomputed://https://files.lab.org/em-data/seg",
    ]
    assert result.warnings == ()
    unmapped = to_ng_state(view)
    assert len(unmapped.warnings) == 2
    assert "cannot read local files" in unmapped.warnings[0]
    back = from_ng_state(result.state, url_map=served)
    assert [parse_source(lay.source).location for lay in back.layers] == [
        str(tmp_path / "data" / "em"),
        str(tmp_path / "data" / "seg"),
    ]
    # Without the map the served URL stays a remote source.
    assert from_ng_state(result.state).layers[0].source == (
        "precomputed://https://files.lab.org/em-data/em"
    )


def test_remote_and_dvid_sources_map_to_neuroglancer_urls():
    dvid = "dvid://emdata.example.org:8000/a1b2c3/segmentation"
    assert to_ng_source(dvid).url == "dvid://http://emdata.example.org:8000/a1b2c3/segmentation"
    assert from_ng_source(to_ng_source(dvid).url) == dvid
    web = "precomputed://https://example.org/fafb/seg"
    assert to_ng_source(web).url == web and to_ng_source(web).warning == ""
    assert from_ng_source(web) == web
    # The newer pipeline syntax and gs:// buckets.
    assert (
        from_ng_source("https://example.org/x.zarr/|zarr2:") == "zarr://https://example.org/x.zarr"
    )
    assert from_ng_source("gs://bucket/vol|neuroglancer-precomputed:") == (
        "precomputed://gs://bucket/vol"
    )
    with pytest.raises(MetadataError, match="unsupported data source"):
        from_ng_source("graphene://https://example.org/table")


def test_dvid_layer_round_trips_without_any_server():
    view = ViewState(
        layers=(
            LayerState("grayscale", "image", "dvid://emdata.example.org:8000/a1b2c3/grayscale"),
            LayerState(
                "segmentation",
                "segmentation",
                "dvid://emdata.example.org:8000/a1b2c3/segmentation",
                segments=(SEG_ID,),
            ),
        ),
        position=Vec3(4000.0, 8000.0, 8000.0),
        resolution=Vec3(8.0, 8.0, 8.0),
        zoom=0.25,
    )
    state = to_ng_state(view).state
    assert state["layers"][1]["source"] == (
        "dvid://http://emdata.example.org:8000/a1b2c3/segmentation"
    )
    assert state["position"] == [1000.5, 1000.5, 500.5]
    back = from_ng_state(json.dumps(state))
    assert [lay.source for lay in back.layers] == [lay.source for lay in view.layers]
    assert back.layers[1].segments == (SEG_ID,)
    assert back.position == view.position


def test_hdf5_has_no_neuroglancer_source_and_says_so(tmp_path):
    path = tmp_path / "cremi.h5"
    with h5py.File(path, "w") as f:
        f.attrs["file_format"] = "0.2"
        ds = f.create_dataset("volumes/raw", data=np.zeros(SHAPE, np.uint8), chunks=(2, 32, 32))
        ds.attrs["resolution"] = list(RES)
    result = to_ng_state(view_state_for_sources([str(path)]))
    (layer,) = result.state["layers"]
    assert layer["source"].startswith("hdf5://file://")
    assert any("no Neuroglancer data source" in w for w in result.warnings)
    assert _same_source(from_ng_state(result.state).layers[0].source, f"{path}#volumes/raw")


# -- synapses ----------------------------------------------------------------------------
def test_store_synapses_become_line_annotations(precomputed, tmp_path):
    image, seg = precomputed
    with nc.open_volume(seg) as volume:
        o = volume.scales[0].origin_nm
    pre, post = (o.z + 80.0, o.y + 40.0, o.x + 40.0), (o.z + 80.0, o.y + 60.0, o.x + 48.0)
    far = (o.z + 80.0, o.y + 90000.0, o.x + 40.0)
    ids = {name: np.array(v, np.uint64) for name, v in (("id", [11, 12]), ("pre_id", [3, 3]))}
    synapses = pd.DataFrame({**ids, "post_id": np.array([4, 4], np.uint64)})
    for k, axis in enumerate("zyx"):
        synapses[f"pre_{axis}"] = [pre[k], far[k]]
        synapses[f"post_{axis}"] = [post[k], far[k]]
    with AnnotationStore.open(str(tmp_path / "a.db")) as store:
        store.add_neurons(pd.DataFrame({"id": np.array([3, 4], np.uint64)}))
        store.add_synapses(synapses)
        view = view_state_for_sources([image, seg], at=pre, store=store)
    state = to_ng_state(view).state
    layer = state["layers"][-1]
    assert layer["type"] == "annotation" and layer["source"] == "local://annotations"
    (line,) = layer["annotations"]  # the far synapse is out of the box
    assert line["type"] == "line" and line["id"] == "11"
    assert line["pointA"] == pytest.approx(state["position"])  # pre is where we stand
    assert line["pointB"] == pytest.approx(np.add(state["position"], [2, 5, 0]).tolist())
    (ann,) = from_ng_state(state).layers[-1].annotations
    assert ann.pre.as_tuple() == pytest.approx(pre)
    assert ann.post.as_tuple() == pytest.approx(post)


def test_point_sites_become_point_annotations_with_their_own_ids():
    """What an imported state's points layer holds comes back out, points and odd ids too."""
    positions = np.array([[480.0, 290.0, 190.0], [480.0, 320.0, 230.0],
                          [520.0, 100.0, 60.0], [560.0, 104.0, 64.0]])  # fmt: skip
    features = pd.DataFrame({
        "synapse": np.array([77, 77, 1, 2], np.uint64),
        "site": ["pre", "post", "point", "point"],
        "annotation": ["77", "77", "1", "cell-body"],
    })  # fmt: skip
    line, point, named = annotations_from_points(positions, features)
    assert (line.id, line.pre.as_tuple(), line.post.as_tuple()) == (
        "77", tuple(positions[0]), tuple(positions[1])
    )  # fmt: skip
    assert (point.id, point.pre.as_tuple(), point.post) == ("1", tuple(positions[2]), None)
    assert (named.id, named.pre.as_tuple(), named.post) == ("cell-body", tuple(positions[3]), None)
    # without the annotation column (the synapse overlay's points) the number is the id
    (only,) = annotations_from_points(positions[2:3], features.iloc[2:3, :2])
    assert only.id == "1" and only.post is None


# -- Neuroglancer's variants -------------------------------------------------------------
def test_import_accepts_what_neuroglancer_writes():
    state = {
        "dimensions": {"z": [4e-8, "m"], "y": [4e-9, "m"], "x": [4e-9, "m"]},  # z first
        "position": [5.5, 30.5, 20.5],
        "projectionScale": 1600,
        "layout": {"type": "3d", "orthographicProjection": True},
        "layers": [
            {"type": "image", "name": "em",
             "source": {"url": "precomputed://https://example.org/em", "subsources": {}}},
            {"type": "segmentation", "name": "seg",
             "source": [{"url": "precomputed://https://example.org/seg"}, "https://x/mesh|zarr:"],
             "segments": [42, "43", "!44"], "selectedAlpha": 0.7, "visible": False},
            {"type": "segmentation_with_graph", "name": "pcg", "source": "graphene://https://x"},
            {"type": "annotation", "name": "notes", "source": "local://annotations",
             "annotations": [{"type": "point", "id": "a1", "point": [5.5, 30.5, 20.5]},
                             {"type": "ellipsoid", "id": "e", "center": [1, 2, 3]}]},
        ],
    }  # fmt: skip
    view = from_ng_state(state, canvas_height=400)
    assert [lay.name for lay in view.layers] == ["em", "seg", "notes"]
    em, seg, notes = view.layers
    assert em.source == "precomputed://https://example.org/em"
    assert seg.segments == (42, 43) and seg.hidden_segments == (44,)
    assert seg.opacity == pytest.approx(0.7) and not seg.visible
    assert view.ndisplay == 3
    assert view.zoom == pytest.approx(400 / (1600 * 4.0))
    assert view.position == Vec3(5 * 40.0, 30 * 4.0, 20 * 4.0)
    assert notes.annotations[0].pre == view.position and notes.annotations[0].post is None
    assert any("segmentation_with_graph" in w for w in view.warnings)
    assert any("neither point nor line" in w for w in view.warnings)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"position": [1.0, 2.0]}, "position"),
        ({"position": [1.0, "a", 2.0]}, "position[1]"),
        ({"crossSectionScale": -1}, "crossSectionScale"),
        ({"dimensions": {"x": [4e-9, "m"], "y": [4e-9]}}, "dimensions.y"),
        ({"layers": [{"type": "image", "source": "precomputed://https://e/x"}]}, "layers[0].name"),
        ({"layers": [{"type": "image", "name": "a"}]}, "layers[0].source[0]"),
        (
            {
                "layers": [
                    {
                        "type": "segmentation",
                        "name": "s",
                        "source": "precomputed://https://e/x",
                        "segments": ["12a"],
                    }
                ]
            },
            "layers[0].segments[0]",
        ),
        (
            {
                "layers": [
                    {
                        "type": "segmentation",
                        "name": "s",
                        "source": "precomputed://https://e/x",
                        "segments": [str(2**64)],
                    }
                ]
            },
            "layers[0].segments[0]",
        ),
    ],
)
def test_malformed_states_name_the_field(change, field):
    state = {"dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]},
             "position": [1.0, 2.0, 3.0], "layers": []}  # fmt: skip
    state.update(change)
    with pytest.raises(NgStateError) as info:
        validate_state(state)
    assert info.value.field == field
    with pytest.raises(MetadataError):
        from_ng_state(state)


def test_unreadable_state_text_and_files_are_typed_errors(tmp_path):
    good = {"dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]}, "layers": []}
    truncated = tmp_path / "state.json"
    truncated.write_text(json.dumps(good)[:-7])
    with pytest.raises(NgStateError, match="not valid JSON") as info:
        load_ng_state(truncated)
    assert info.value.path == str(truncated)
    with pytest.raises(SourceNotFoundError):
        load_ng_state(tmp_path / "missing.json")
    with pytest.raises(NgStateError, match="not valid JSON"):
        load_ng_state("https://neuroglancer-demo.appspot.com/#!%7B%22layers%22%3A")
    with pytest.raises(NgStateError, match="remote state file"):
        load_ng_state("https://neuroglancer-demo.appspot.com/#!gs://bucket/state.json")
    with pytest.raises(NgStateError, match="no 'z' dimension"):
        from_ng_state({"dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"]}, "layers": []})
    assert load_ng_state(json.dumps(good)) == good


def test_host_comes_from_the_argument_then_the_environment(monkeypatch):
    state = {"dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]}, "layers": []}
    assert ng_url(state).startswith("https://neuroglancer-demo.appspot.com/#!")
    monkeypatch.setenv("NAPARI_CONNECTO_NG_HOST", "https://ng.lab.org/")
    assert ng_url(state).startswith("https://ng.lab.org/#!")
    url = ng_url(state, "http://localhost:8080")
    assert url.startswith("http://localhost:8080/#!")
    assert json.loads(unquote(url.split("#!", 1)[1])) == state


# -- CLI ---------------------------------------------------------------------------------
def test_cli_export_prints_the_url_and_writes_the_state(precomputed, tmp_path, capsys):
    image, seg = precomputed
    out = tmp_path / "state.json"
    code = main(["ng-state", "export", image, seg, "--at", "200", "120", "80",
                 "--segments", str(SEG_ID), "--host", "https://ng.lab.org", "--out", str(out),
                 "--serve-prefix", f"{tmp_path / 'data'}=https://files.lab.org/d"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    url = captured.out.strip()
    assert url.startswith("https://ng.lab.org/#!")
    state = json.loads(out.read_text())
    assert json.loads(unquote(url.split("#!", 1)[1])) == state
    validate_state(state)
    assert state["layers"][1]["segments"] == [str(SEG_ID)]
    assert state["layers"][1]["source"] == "precomputed://https://files.lab.org/d/seg"
    assert state["position"] == pytest.approx([20.5, 30.5, 5.5])
    assert captured.err == ""


def test_cli_export_to_stdout_warns_about_local_files(precomputed, capsys):
    assert main(["ng-state", "export", precomputed[0]]) == 0
    captured = capsys.readouterr()
    url, text = captured.out.split("\n", 1)
    assert json.loads(text)["layers"][0]["source"].startswith("precomputed://file:///")
    assert "cannot read local files" in captured.err
    assert len(captured.err.strip().splitlines()) == 1  # said once


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["ng-state", "export", str(tmp_path / "missing.zarr")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["ng-state", "open", str(bad)]) == 2  # before any window opens
    err = capsys.readouterr().err
    assert "not valid JSON" in err and len(err.strip().splitlines()) == 1
    assert main(["ng-state", "export", str(tmp_path), "--at", "1", "2"]) == 2


def test_cli_export_out_replaces_the_state_file_atomically(precomputed, tmp_path, monkeypatch):
    image, _ = precomputed
    out = tmp_path / "state.json"
    out.write_text('{"old": "state"}\n')

    def crash(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", crash)
    assert main(["ng-state", "export", image, "--out", str(out)]) == 2
    assert json.loads(out.read_text()) == {"old": "state"}  # not a half-written state
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "state.json"]
    monkeypatch.undo()
    old = os.umask(0o022)
    try:
        assert main(["ng-state", "export", image, "--out", str(out)]) == 0
    finally:
        os.umask(old)
    validate_state(json.loads(out.read_text()))
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "state.json"]


def test_an_inner_path_becomes_part_of_the_neuroglancer_url(ome):
    """``em.zarr#labels/cells`` is the labels group, not the image at the root."""
    view = view_state_for_sources([f"{ome}#labels/cells"])
    (layer,) = to_ng_state(view).state["layers"]
    assert layer["type"] == "segmentation"
    assert layer["source"] == f"zarr://file://{ome}/labels/cells"
    (back,) = from_ng_state(to_ng_state(view).state).layers
    with nc.open_volume(back.source) as volume:
        assert volume.kind == "segmentation"
