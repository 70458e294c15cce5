"""``napari-connecto export``: a region of a volume as TIFF, PNGs or a movie, for a figure.

Hooked into :mod:`napari_connecto.cli` with :func:`add_parser` (building the subcommand)
and :func:`run` (its handler). Errors are raised as :class:`ConnectoError` subclasses,
which ``cli.main`` prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def _opacity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected an opacity from 0 to 1, got {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _resolution(text: str) -> tuple[float, float, float]:
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(_positive(p) for p in parts)
    except argparse.ArgumentTypeError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X nm per voxel (> 0), got {text!r}")
    return values  # type: ignore[return-value]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` command to ``subparsers``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``export`` parser.
    """
    export = subparsers.add_parser(
        "export",
        help="export a region as a TIFF stack, PNG per plane or a GIF movie",
        description="Export the nm box Z0 Y0 X0 Z1 Y1 X1 (stop exclusive, clipped to the "
        "volume). OUT.tif: the grey stack (with --labels: the colour view, plus "
        "OUT_em.tif and OUT_ids.tif); DIR/prefix.png: prefix_z0000.png per z plane; "
        "OUT.gif (or .mp4 with imageio-ffmpeg): a z-sweep movie.",
    )
    export.add_argument("source", help="EM image: path or URL (zarr, n5, h5, precomputed)")
    export.add_argument("--labels", metavar="SEG", help="segmentation to colour over the EM")
    export.add_argument(
        "--box",
        nargs=6,
        type=float,
        required=True,
        metavar=("Z0", "Y0", "X0", "Z1", "Y1", "X1"),
        help="region in nm, z y x start then stop",
    )
    level = export.add_mutually_exclusive_group()
    level.add_argument("--scale", type=int, metavar="N", help="scale index (0 = finest)")
    level.add_argument(
        "--resolution", type=_resolution, metavar="Z,Y,X", help="pick the scale by voxel nm"
    )
    export.add_argument("--out", required=True, help="OUT.tif, DIR/prefix.png or OUT.gif")
    export.add_argument(
        "--opacity", type=_opacity, default=0.5, help="segment colour weight (default 0.5)"
    )
    export.add_argument("--outline", action="store_true", help="draw segment boundaries")
    export.add_argument(
        "--fps", type=_positive, default=5.0, help="movie frames per second (default 5)"
    )
    return export


def run(args: argparse.Namespace) -> int:
    """Run ``export``; print the files written, one per line.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    ConnectoError
        Bad region, unreadable source, or unwritable destination.
    """
    from napari_connecto.errors import RegionError
    from napari_connecto.export.figure import ViewStyle, export_region
    from napari_connecto.geometry import BBox
    from napari_connecto.opening import open_volume

    try:
        box = BBox.of(args.box[:3], args.box[3:])
    except ValueError as exc:
        raise RegionError(str(exc)) from None
    image = open_volume(args.source)
    labels = open_volume(args.labels) if args.labels else None
    if image.kind == "segmentation" and labels is None:
        image, labels = None, image
    result = export_region(
        args.out,
        box=box,
        image=image,
        labels=labels,
        scale=args.scale,
        resolution=args.resolution,
        style=ViewStyle(opacity=args.opacity, outline=args.outline),
        fps=args.fps,
    )
    for path in result.paths:
        sys.stdout.write(f"{path}\n")
    return 0
