"""Wavefront OBJ and binary PLY export (and import, for round trips) of meshes.

Files hold vertices in nanometres in **x, y, z** order, as OBJ and PLY readers
(Blender, MeshLab, trimesh) expect; :class:`~napari_connecto.objects.mesh.Mesh`
is z, y, x, so coordinates are reversed on the way out and back in. Both
formats are written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.errors import SourceNotFoundError, UnsupportedEncodingError
from napari_connecto.objects.mesh import Mesh, MeshDecodeError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

__all__ = ["read_mesh", "read_obj", "read_ply", "write_mesh", "write_obj", "write_ply"]

logger = logging.getLogger(__name__)

UNITS_NOTE = "units: nanometres; vertex order x y z (napari-connecto z,y,x reversed)"


def _atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("wrote mesh to %s", dest)
    return dest


def write_obj(mesh: Mesh, path: str | os.PathLike[str], *, name: str = "") -> Path:
    """Write ``mesh`` as Wavefront OBJ (``v x y z`` in nm, 1-based ``f``), atomically.

    Parameters
    ----------
    mesh : Mesh
        The mesh (z, y, x nm).
    path : str or os.PathLike
        Destination file; replaced if it exists.
    name : str
        Object name (``o`` line), e.g. ``segment 1234``.

    Returns
    -------
    Path
        The written file.
    """

    def write(fh: BinaryIO) -> None:
        fh.write(f"# napari-connecto mesh; {UNITS_NOTE}\n".encode())
        if name:
            fh.write(f"o {name}\n".encode())
        np.savetxt(fh, mesh.vertices[:, ::-1], fmt="v %.6g %.6g %.6g")
        if mesh.normals is not None:
            np.savetxt(fh, mesh.normals[:, ::-1], fmt="vn %.6g %.6g %.6g")
            f = mesh.faces.astype(np.int64) + 1
            np.savetxt(fh, np.repeat(f, 2, axis=1), fmt="f %d//%d %d//%d %d//%d")
        else:
            np.savetxt(fh, mesh.faces.astype(np.int64) + 1, fmt="f %d %d %d")

    return _atomic_write(path, write)


def read_obj(path: str | os.PathLike[str]) -> Mesh:
    """Read a triangle OBJ written by :func:`write_obj` (or any ``v``/``vn``/``f`` file).

    Raises
    ------
    SourceNotFoundError
        If the file does not exist.
    MeshDecodeError
        If a line cannot be parsed, a face is not a triangle or an index is out of range.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceNotFoundError(str(p))
    verts: list[list[float]] = []
    normals: list[list[float]] = []
    faces: list[list[int]] = []
    for number, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines()):
        parts = line.split()
        if not parts or parts[0] not in ("v", "vn", "f"):
            continue
        try:
            if parts[0] == "f":
                if len(parts) != 4:
                    raise ValueError("only triangles are supported")
                faces.append([int(t.split("/")[0]) - 1 for t in parts[1:]])
            else:
                (verts if parts[0] == "v" else normals).append([float(t) for t in parts[1:4]])
        except ValueError as exc:
            raise MeshDecodeError(str(p), f"line {number + 1}", str(exc)) from None
    n = np.asarray(normals, np.float32)[:, ::-1] if len(normals) == len(verts) and verts else None
    v = np.asarray(verts, np.float32).reshape(-1, 3)[:, ::-1]
    return Mesh.from_arrays(v, np.asarray(faces, np.int64).reshape(-1, 3), n, where=str(p))


def write_ply(mesh: Mesh, path: str | os.PathLike[str]) -> Path:
    """Write ``mesh`` as binary little-endian PLY (float x y z in nm, uchar/uint faces).

    Parameters
    ----------
    mesh : Mesh
        The mesh (z, y, x nm).
    path : str or os.PathLike
        Destination file; replaced if it exists.

    Returns
    -------
    Path
        The written file.
    """
    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment napari-connecto mesh; {UNITS_NOTE}",
        f"element vertex {len(mesh.vertices)}",
        "property float x",
        "property float y",
        "property float z",
        f"element face {len(mesh.faces)}",
        "property list uchar uint vertex_indices",
        "end_header",
    ]
    faces = np.empty(len(mesh.faces), dtype=[("n", "u1"), ("i", "<u4", (3,))])
    faces["n"] = 3
    faces["i"] = mesh.faces

    def write(fh: BinaryIO) -> None:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(np.ascontiguousarray(mesh.vertices[:, ::-1], dtype="<f4").tobytes())
        fh.write(faces.tobytes())

    return _atomic_write(path, write)


def read_ply(path: str | os.PathLike[str]) -> Mesh:
    """Read a binary little-endian triangle PLY as written by :func:`write_ply`.

    Raises
    ------
    SourceNotFoundError
        If the file does not exist.
    MeshDecodeError
        If the header is not the supported layout or the body is truncated.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceNotFoundError(str(p))
    data = p.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise MeshDecodeError(str(p), "header", "not a PLY file")
    lines = [ln.strip() for ln in data[:end].decode("ascii", "replace").splitlines()]
    if "format binary_little_endian 1.0" not in lines:
        raise MeshDecodeError(str(p), "format", "only binary_little_endian PLY is supported")
    counts = {ln.split()[1]: int(ln.split()[2]) for ln in lines if ln.startswith("element ")}
    nv, nf = counts.get("vertex", 0), counts.get("face", 0)
    props = [ln for ln in lines if ln.startswith("property ")]
    expected = ["property float x", "property float y", "property float z"]
    if props[:3] != expected or props[3:] != ["property list uchar uint vertex_indices"]:
        raise MeshDecodeError(str(p), "header", "unsupported vertex or face properties")
    body = data[end + len(b"end_header\n") :]
    face_dtype = np.dtype([("n", "u1"), ("i", "<u4", (3,))])
    if len(body) != nv * 12 + nf * face_dtype.itemsize:
        raise MeshDecodeError(str(p), "body", f"{len(body)} bytes do not match the header")
    v = np.frombuffer(body, "<f4", count=nv * 3).reshape(-1, 3)[:, ::-1]
    f = np.frombuffer(body, face_dtype, count=nf, offset=nv * 12)
    if nf and not (f["n"] == 3).all():
        raise MeshDecodeError(str(p), "faces", "only triangles are supported")
    return Mesh.from_arrays(v, f["i"].astype(np.int64), where=str(p))


def write_mesh(mesh: Mesh, path: str | os.PathLike[str], *, name: str = "") -> Path:
    """Write ``mesh`` as OBJ or PLY, chosen by the file suffix (``.obj`` or ``.ply``).

    Raises
    ------
    UnsupportedEncodingError
        For any other suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".obj":
        return write_obj(mesh, path, name=name)
    if suffix == ".ply":
        return write_ply(mesh, path)
    raise UnsupportedEncodingError(str(path), "suffix", "mesh files must end in .obj or .ply")


def read_mesh(path: str | os.PathLike[str]) -> Mesh:
    """Read an OBJ or PLY mesh, chosen by the file suffix.

    Raises
    ------
    UnsupportedEncodingError
        For a suffix other than ``.obj`` or ``.ply``.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".obj":
        return read_obj(path)
    if suffix == ".ply":
        return read_ply(path)
    raise UnsupportedEncodingError(str(path), "suffix", "mesh files must end in .obj or .ply")
