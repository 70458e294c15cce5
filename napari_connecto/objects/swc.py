"""SWC skeleton files, with the length unit stated.

An SWC file has ``#`` comment lines and one node per line:
``id type x y z radius parent`` (``parent`` -1 for a root; types 1 soma, 2 axon,
3 basal dendrite, 4 apical dendrite). SWC does not fix a length unit: µm by
convention, nm in much of connectomics. This module writes the unit as a header
comment (``# unit: nm``) and reads it back from one; a caller may override it,
and a file without one is read as µm (with a log message). Inside the project
everything is nm, z, y, x: SWC ``x y z`` become vertex ``(z, y, x)`` and are
scaled to nm. Positions are taken as-is in the project frame (no voxel shift).

Node ids need not be contiguous nor sorted; parents may follow their children;
several roots (a forest) are fine. The original ids and types are kept as the
``"swc_id"`` and ``"type"`` attributes, the radius as ``"radius"`` (nm).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_connecto.errors import ImportFormatError, SourceNotFoundError
from napari_connecto.export._atomic import write_text_atomic
from napari_connecto.objects.skeleton import Skeleton, SkeletonError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["SWC_TYPES", "UNITS_NM", "SwcFormatError", "read_swc", "write_swc"]

logger = logging.getLogger(__name__)

SWC_TYPES = {0: "undefined", 1: "soma", 2: "axon", 3: "basal dendrite", 4: "apical dendrite"}
"""The standard SWC node types."""

UNITS_NM: dict[str, float] = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometers": 1e3,
    "mm": 1e6,
}
"""Nanometres per unit, for every unit name understood."""

_UNIT_HEADER = re.compile(r"^#\s*units?\s*[:=]\s*(\S+)", re.IGNORECASE)
_SEGMENT_HEADER = re.compile(r"^#\s*segment_id\s*[:=]\s*(\d+)\s*$", re.IGNORECASE)
_MAX_BYTES = 1 << 30


class SwcFormatError(ImportFormatError):
    """A malformed SWC file; names the file and the (1-based) line at fault.

    Parameters
    ----------
    path : str
        The file.
    problem : str
        What is wrong.
    line : int, optional
        1-based line number.
    """

    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(path, problem if line is None else f"line {line}: {problem}")


def unit_factor(unit: str) -> float:
    """Nanometres per ``unit`` (``"nm"``, ``"um"``/``"µm"``, ``"mm"``, ...).

    Raises
    ------
    ValueError
        For an unknown unit.
    """
    key = unit.strip().lower()
    if key not in UNITS_NM:
        raise ValueError(f"unknown length unit {unit!r}; use one of {', '.join(sorted(UNITS_NM))}")
    return UNITS_NM[key]


def read_swc(path: str | os.PathLike[str], unit: str | None = None) -> Skeleton:
    """Read an SWC file into a :class:`Skeleton` (nm, z, y, x).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    unit : str, optional
        Length unit of the file's positions and radii, overriding its ``# unit:``
        header; without either, µm (the SWC convention).

    Returns
    -------
    Skeleton
        One vertex per node in file order; an edge child -> parent per non-root
        node; attributes ``"radius"`` (nm, float32), ``"type"`` (int32) and
        ``"swc_id"`` (int64); ``segment_id`` from a ``# segment_id: N`` header.

    Raises
    ------
    SourceNotFoundError
        If the file does not exist.
    SwcFormatError
        For a malformed line (named), duplicate ids, a missing parent, an unknown
        unit in the header, or a file without nodes.
    """
    where = os.fspath(path)
    lines = _read_lines(Path(where))
    header_unit: str | None = None
    segment_id: int | None = None
    rows: list[tuple[int, int, float, float, float, float, int, int]] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            match = _UNIT_HEADER.match(text)
            if match and header_unit is None:
                header_unit = match.group(1)
                _check_unit(where, header_unit, number)
            elif (found := _SEGMENT_HEADER.match(text)) and int(found.group(1)) < 1 << 64:
                segment_id = int(found.group(1))
            continue
        rows.append(_parse_row(where, number, text))
    if not rows:
        raise SwcFormatError(where, "no nodes")
    chosen = unit or header_unit
    if chosen is None:
        logger.info("%s states no unit; reading it as µm (the SWC convention)", where)
        chosen = "um"
    factor = _check_unit(where, chosen, None)
    return _build(where, rows, factor, segment_id)


def _read_lines(path: Path) -> list[str]:
    """The file's text lines (UTF-8, capped); typed errors otherwise."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise SourceNotFoundError(str(path)) from None
    except IsADirectoryError:
        raise SwcFormatError(str(path), "is a directory, expected an SWC file") from None
    except OSError as exc:
        raise SwcFormatError(str(path), f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > _MAX_BYTES:
        raise SwcFormatError(str(path), f"larger than {_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise SwcFormatError(
            str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def _check_unit(where: str, unit: str, line: int | None) -> float:
    """Nanometres per ``unit``, or a :class:`SwcFormatError`."""
    try:
        return unit_factor(unit)
    except ValueError as exc:
        raise SwcFormatError(where, str(exc), line) from None


def _parse_row(
    where: str, number: int, text: str
) -> tuple[int, int, float, float, float, float, int, int]:
    """``(id, type, x, y, z, radius, parent, line)`` of one node line."""
    fields = text.split()
    if len(fields) < 7:
        raise SwcFormatError(
            where, f"expected 7 fields 'id type x y z radius parent', got {len(fields)}", number
        )
    try:
        node, kind, parent = int(fields[0]), int(fields[1]), int(fields[6])
    except ValueError:
        raise SwcFormatError(where, "id, type and parent must be integers", number) from None
    try:
        x, y, z, radius = (float(v) for v in fields[2:6])
    except ValueError:
        raise SwcFormatError(where, "x, y, z and radius must be numbers", number) from None
    if not all(math.isfinite(v) for v in (x, y, z, radius)):
        raise SwcFormatError(where, "x, y, z and radius must be finite", number)
    if node < 0:
        raise SwcFormatError(where, f"negative node id {node}", number)
    return node, kind, x, y, z, radius, parent, number


def _build(
    where: str,
    rows: list[tuple[int, int, float, float, float, float, int, int]],
    factor: float,
    segment_id: int | None,
) -> Skeleton:
    """The skeleton of parsed rows (positions and radii scaled by ``factor`` to nm)."""
    index: dict[int, int] = {}
    for i, row in enumerate(rows):
        if row[0] in index:
            raise SwcFormatError(where, f"duplicate node id {row[0]}", row[7])
        index[row[0]] = i
    edges = []
    for i, row in enumerate(rows):
        parent = row[6]
        if parent < 0:
            continue
        if parent not in index:
            raise SwcFormatError(where, f"parent {parent} of node {row[0]} does not exist", row[7])
        if parent == row[0]:
            raise SwcFormatError(where, f"node {row[0]} is its own parent", row[7])
        edges.append((i, index[parent]))
    table = np.array([r[:7] for r in rows], dtype=np.float64)
    vertices = table[:, [4, 3, 2]] * factor
    attributes = {
        "radius": (table[:, 5] * factor).astype(np.float32),
        "type": np.array([r[1] for r in rows], dtype=np.int32),
        "swc_id": np.array([r[0] for r in rows], dtype=np.int64),
    }
    try:
        edge_array = np.array(edges, dtype=np.int64).reshape(-1, 2)
        return Skeleton(vertices, edge_array, attributes, segment_id)
    except SkeletonError as exc:
        raise SwcFormatError(where, str(exc)) from None


def write_swc(skeleton: Skeleton, path: str | os.PathLike[str], unit: str = "nm") -> Path:
    """Write ``skeleton`` as SWC, atomically, stating ``unit`` in a ``# unit:`` header.

    Nodes are written parents first (breadth first from each root); a root is a
    soma node (``"type"`` 1) of its component if there is one, else its first
    vertex. Ids are the ``"swc_id"`` attribute when present, else 1..N in write
    order; types are the ``"type"`` attribute, else 0; radii ``"radius"`` (nm), else 0.

    Parameters
    ----------
    skeleton : Skeleton
        The skeleton (nm, z, y, x); its edges must form a forest.
    path : str or os.PathLike
        Destination (missing folders are made); replaced atomically and durably
        (temporary file with the usual ``0o666 & ~umask`` mode, fsync, rename,
        folder fsync).
    unit : str
        Length unit of the positions and radii written (``"nm"``, ``"um"``, ...).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        For an unknown unit.
    SkeletonError
        If the edges contain a cycle (SWC stores trees only).
    ExportError
        If the file cannot be written (an ``OSError``; the old file is kept).
    """
    factor = unit_factor(unit)
    order, parents = _forest(skeleton)
    if "swc_id" in skeleton.attributes:
        ids = np.asarray(skeleton.attributes["swc_id"], dtype=np.int64)
        if len(np.unique(ids)) != len(ids) or (ids < 0).any():
            raise SkeletonError("attribute 'swc_id' must hold distinct non-negative ids")
    else:
        ids = np.empty(skeleton.num_vertices, dtype=np.int64)
        ids[order] = np.arange(1, len(order) + 1)
    types = skeleton.attributes.get("type", np.zeros(skeleton.num_vertices, dtype=np.int64))
    radius = skeleton.attributes.get("radius", np.zeros(skeleton.num_vertices))
    positions = skeleton.vertices.astype(np.float64) / factor
    radii = np.asarray(radius, dtype=np.float64).reshape(skeleton.num_vertices, -1)[:, 0] / factor
    lines = [
        "# SWC written by napari-connecto",
        f"# unit: {unit}",
        "# id type x y z radius parent",
    ]
    if skeleton.segment_id is not None:
        lines.insert(1, f"# segment_id: {skeleton.segment_id}")
    for i in order:
        z, y, x = positions[i]
        parent = -1 if parents[i] < 0 else int(ids[parents[i]])
        lines.append(
            f"{int(ids[i])} {int(types[i])} {x:.9g} {y:.9g} {z:.9g} {radii[i]:.9g} {parent}"
        )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(target, "\n".join(lines) + "\n")


def _forest(skeleton: Skeleton) -> tuple[list[int], np.ndarray]:
    """Breadth-first write order and each vertex's parent (-1 for roots)."""
    n = skeleton.num_vertices
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in skeleton.edges.tolist():
        neighbours[a].append(b)
        neighbours[b].append(a)
    parents = np.full(n, -2, dtype=np.int64)
    order: list[int] = []
    types = skeleton.attributes.get("type")
    for root in _root_candidates(n, types):
        if parents[root] != -2:
            continue
        parents[root] = -1
        queue = deque([root])
        while queue:
            node = queue.popleft()
            order.append(node)
            for other in neighbours[node]:
                if other == parents[node]:
                    continue
                if parents[other] != -2:
                    raise SkeletonError("the skeleton has a cycle; SWC stores trees only")
                parents[other] = node
                queue.append(other)
    if len(skeleton.edges) != n - sum(1 for p in parents if p == -1):
        raise SkeletonError("the skeleton has a cycle or repeated edges; SWC stores trees only")
    return order, parents


def _root_candidates(n: int, types: np.ndarray | None) -> Iterable[int]:
    """Soma vertices first, then every vertex in order."""
    if types is not None:
        yield from np.flatnonzero(np.asarray(types).reshape(n, -1)[:, 0] == 1).tolist()
    yield from range(n)
