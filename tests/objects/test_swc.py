"""SWC import and export: units, forests, odd ids, malformed lines, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from napari_connecto.errors import ImportFormatError, SourceNotFoundError
from napari_connecto.objects.skeleton import Skeleton, SkeletonError
from napari_connecto.objects.swc import SwcFormatError, read_swc, write_swc

# A soma with two branches and, separately, a two-node fragment: a forest, ids
# neither contiguous nor sorted, one parent listed after its child. In µm.
HAND_WRITTEN_UM = """\
# a hand-written neuron
# unit: um
# id type x y z radius parent
10 1 1.0 2.0 3.0 2.5 -1
12 3 1.5 2.0 3.0 0.5 10
11 2 1.0 2.4 3.04 0.25 10
20 2 5.0 5.0 5.0 0.1 21
21 2 5.0 5.0 5.08 0.1 -1

"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_hand_written_um_file_reads_to_nm(tmp_path) -> None:
    sk = read_swc(_write(tmp_path / "n.swc", HAND_WRITTEN_UM))
    # x y z in µm become z, y, x in nm
    np.testing.assert_allclose(sk.vertices[0], [3000, 2000, 1000])
    np.testing.assert_allclose(sk.vertices[2], [3040, 2400, 1000], rtol=1e-6)
    np.testing.assert_allclose(sk.radius, [2500, 500, 250, 100, 100], rtol=1e-6)
    assert sk.attributes["swc_id"].tolist() == [10, 12, 11, 20, 21]
    assert sk.attributes["type"].tolist() == [1, 3, 2, 2, 2]
    # child -> parent by row index; 20's parent 21 comes after it
    assert sorted(map(tuple, sk.edges.tolist())) == [(1, 0), (2, 0), (3, 4)]
    assert sk.path_length == pytest.approx(500 + np.hypot(400, 40) + 80, rel=1e-6)


def test_caller_unit_overrides_header_and_default_is_um(tmp_path) -> None:
    path = _write(tmp_path / "n.swc", HAND_WRITTEN_UM)
    assert read_swc(path, unit="nm").vertices[0].tolist() == [3, 2, 1]
    bare = _write(tmp_path / "bare.swc", "1 1 1 2 3 1 -1\n")
    assert read_swc(bare).vertices[0].tolist() == [3000, 2000, 1000]
    nm = _write(tmp_path / "nm.swc", "# Units: nm\n1 1 1 2 3 1 -1\n")
    assert read_swc(nm).vertices[0].tolist() == [3, 2, 1]


def test_round_trip_in_nm_and_um(tmp_path) -> None:
    original = read_swc(_write(tmp_path / "n.swc", HAND_WRITTEN_UM))
    for unit in ("nm", "um"):
        out = write_swc(original, tmp_path / f"out_{unit}.swc", unit=unit)
        assert f"# unit: {unit}" in out.read_text().splitlines()
        back = read_swc(out)  # the unit comes from the header
        order = np.argsort(back.attributes["swc_id"])
        expect = np.argsort(original.attributes["swc_id"])
        np.testing.assert_allclose(back.vertices[order], original.vertices[expect], rtol=1e-6)
        np.testing.assert_allclose(back.radius[order], original.radius[expect], rtol=1e-6)
        assert (
            back.attributes["type"][order].tolist() == original.attributes["type"][expect].tolist()
        )
        assert _id_edges(back) == _id_edges(original)


def _id_edges(sk: Skeleton) -> set[frozenset[int]]:
    ids = sk.attributes["swc_id"]
    return {frozenset((int(ids[a]), int(ids[b]))) for a, b in sk.edges.tolist()}


def test_written_parents_come_first_and_roots_are_somas(tmp_path) -> None:
    # vertex 2 is the soma; without swc_id the ids are 1..N in write order
    sk = Skeleton(
        [[0, 0, 0], [0, 0, 4], [0, 0, 8], [0, 0, 12]],
        [[0, 1], [1, 2], [2, 3]],
        {"type": np.array([3, 3, 1, 2]), "radius": np.array([1, 1, 4, 1], np.float32)},
        segment_id=99,
    )
    text = write_swc(sk, tmp_path / "s.swc").read_text()
    rows = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert rows[0] == ["1", "1", "8", "0", "0", "4", "-1"]
    seen = set()
    for row in rows:
        assert int(row[6]) == -1 or int(row[6]) in seen
        seen.add(int(row[0]))
    assert "# segment_id: 99" in text
    back = read_swc(tmp_path / "s.swc")
    assert back.segment_id == 99
    assert back.path_length == pytest.approx(sk.path_length)


def test_cycles_cannot_be_written_and_nothing_is_left_behind(tmp_path) -> None:
    ring = Skeleton([[0, 0, 0], [0, 0, 1], [0, 1, 0]], [[0, 1], [1, 2], [2, 0]])
    with pytest.raises(SkeletonError, match="cycle"):
        write_swc(ring, tmp_path / "ring.swc")
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_atomically(tmp_path, monkeypatch) -> None:
    target = _write(tmp_path / "n.swc", HAND_WRITTEN_UM)
    sk = read_swc(target)

    def crash(*_args: object) -> None:
        raise OSError("disk died")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk died"):
        write_swc(sk, target, unit="nm")
    assert target.read_text() == HAND_WRITTEN_UM  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["n.swc"]  # no temporary left


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_file_has_the_usual_permissions(tmp_path, umask) -> None:
    """Others can read a shared skeleton as they can any file the user makes (not 0600)."""
    sk = read_swc(_write(tmp_path / "in.swc", HAND_WRITTEN_UM))
    old = os.umask(umask)
    try:
        out = write_swc(sk, tmp_path / "shared" / "n.swc")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert read_swc(out).num_vertices == sk.num_vertices


def test_write_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch) -> None:
    sk = read_swc(_write(tmp_path / "in.swc", HAND_WRITTEN_UM))
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged_replace(src: object, dst: object) -> None:
        events.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    out = write_swc(sk, tmp_path / "n.swc")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert ".n." in events[0][1] and events[1][1] == str(out)
    assert events[2][1] == str(tmp_path)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1 1 0 0 0 1 -1\n2 3 0 0 1 1\n", 2, "7 fields"),
        ("# unit: nm\n1 1 0 0 0 1 -1\n2 3 0 zero 1 1 1\n", 3, "numbers"),
        ("1 1 0 0 0 1 -1\n2.5 3 0 0 1 1 1\n", 2, "integers"),
        ("1 1 0 0 0 1 -1\n2 3 0 0 nan 1 1\n", 2, "finite"),
        ("1 1 0 0 0 1 -1\n1 3 0 0 1 1 1\n", 2, "duplicate"),
        ("1 1 0 0 0 1 -1\n2 3 0 0 1 1 7\n", 2, "parent 7"),
        ("1 1 0 0 0 1 1\n", 1, "own parent"),
        ("# unit: furlong\n1 1 0 0 0 1 -1\n", 1, "furlong"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, line, message) -> None:
    path = _write(tmp_path / "bad.swc", text)
    with pytest.raises(SwcFormatError, match=message) as info:
        read_swc(path)
    assert info.value.line == line
    assert str(path) in str(info.value) and f"line {line}" in str(info.value)
    assert isinstance(info.value, ImportFormatError)


def test_missing_empty_and_binary_files(tmp_path) -> None:
    with pytest.raises(SourceNotFoundError):
        read_swc(tmp_path / "nope.swc")
    with pytest.raises(SwcFormatError, match="no nodes"):
        read_swc(_write(tmp_path / "empty.swc", "# nothing\n"))
    (tmp_path / "bin.swc").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SwcFormatError, match="UTF-8"):
        read_swc(tmp_path / "bin.swc")
    with pytest.raises(ValueError, match="unknown length unit"):
        read_swc(_write(tmp_path / "ok.swc", "1 1 0 0 0 1 -1\n"), unit="parsec")
