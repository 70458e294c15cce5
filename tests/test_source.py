from __future__ import annotations

import pytest

from napari_connecto.errors import SourceNotFoundError
from napari_connecto.source import Source, parse_source


def test_local_paths_prefixes_and_inner_paths(tmp_path):
    h5 = tmp_path / "cremi.h5"
    h5.write_bytes(b"x")
    assert parse_source(str(h5)) == Source(str(h5))
    assert parse_source(f"{h5}/volumes/raw") == Source(str(h5), "volumes/raw")
    assert parse_source(f"{h5}#volumes/raw") == Source(str(h5), "volumes/raw")
    assert parse_source(f"hdf5://file://{h5}#/volumes/raw") == Source(
        str(h5), "volumes/raw", "hdf5"
    )
    assert parse_source(f"file://{tmp_path}").location == str(tmp_path)
    assert parse_source(f"n5://{tmp_path}").format == "n5"
    assert parse_source(f"zarr3://{tmp_path}").format == "zarr"


def test_remote_urls_are_kept_verbatim():
    src = parse_source("precomputed://https://example.org/em/")
    assert src == Source("https://example.org/em", "", "precomputed")
    assert src.is_remote
    assert parse_source("dvid://localhost:8000/abc123/grayscale").location == (
        "localhost:8000/abc123/grayscale"
    )


def test_missing_local_path_names_it(tmp_path):
    with pytest.raises(SourceNotFoundError) as err:
        parse_source(tmp_path / "nope.zarr" / "0")
    assert "nope.zarr" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_child_and_display(tmp_path):
    src = parse_source(tmp_path)
    assert src.child("labels/seg").location == f"{tmp_path}/labels/seg"
    h5 = tmp_path / "a.h5"
    h5.write_bytes(b"x")
    assert str(parse_source(h5).child("volumes/raw")) == f"{h5}#volumes/raw"
    assert parse_source(h5).child("volumes/raw").name == "raw"


def test_dot_dot_is_folded_and_hash_in_directory_names_works(tmp_path):
    (tmp_path / "rel").mkdir()
    (tmp_path / "run#3").mkdir()
    assert parse_source(f"{tmp_path}/rel/../rel").location == f"{tmp_path}/rel"
    assert parse_source(f"{tmp_path}/run#3") == Source(f"{tmp_path}/run#3")
