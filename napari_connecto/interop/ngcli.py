"""``napari-connecto ng-state export|open``: Neuroglancer states from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_connecto.errors import RegionError
from napari_connecto.interop.ngstate import DEFAULT_NG_HOST, NG_HOST_ENV

__all__ = ["add_ng_state_parser", "run_ng_state"]


def _at(values: list[str]) -> tuple[float, float, float]:
    """``Z Y X`` or ``Z,Y,X`` (nm)."""
    text = ",".join(values).replace(" ", "")
    try:
        parts = tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise RegionError(f"--at: expected Z Y X in nm, got {' '.join(values)!r}")
    return parts  # type: ignore[return-value]


def _segment(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if not 0 < value < 2**64:
        raise argparse.ArgumentTypeError(f"expected a segment id (1 to 2**64-1), got {text!r}")
    return value


def _prefix(text: str) -> tuple[str, str]:
    local, sep, url = text.partition("=")
    if not sep or not local.strip() or not url.strip():
        raise argparse.ArgumentTypeError(f"expected LOCAL=URL, got {text!r}")
    return local.strip(), url.strip()


def add_ng_state_parser(sub: Any) -> None:
    """Add the ``ng-state`` subcommand (``export`` and ``open``) to ``sub``."""
    ng = sub.add_parser(
        "ng-state",
        help="export a view as a Neuroglancer state/URL, or open one in napari",
        description="Neuroglancer cannot read local files: local paths become file:// URLs "
        "unless --serve-prefix maps their folder to the http(s) URL it is served at.",
    )
    action = ng.add_subparsers(dest="ng_command", required=True)
    exp = action.add_parser("export", help="print the Neuroglancer URL of SOURCES at a position")
    exp.add_argument("sources", nargs="+", help="paths or URLs (zarr, n5, precomputed, dvid://)")
    exp.add_argument("--at", nargs="+", metavar="Z Y X", help="centre (nm; default the middle)")
    exp.add_argument("--zoom", type=float, help="screen pixels per nm (default one voxel/pixel)")
    exp.add_argument("--segments", nargs="+", type=_segment, default=[], metavar="ID")
    exp.add_argument("--annotations", metavar="DB", help="include this store's nearby synapses")
    exp.add_argument(
        "--host", help=f"Neuroglancer host (default ${NG_HOST_ENV} or {DEFAULT_NG_HOST})"
    )
    exp.add_argument("--out", metavar="FILE", help="write the JSON state here (default stdout)")
    exp.add_argument(
        "--serve-prefix",
        type=_prefix,
        action="append",
        default=[],
        metavar="LOCAL=URL",
        help="local folder LOCAL is served at URL (repeatable)",
    )
    opn = action.add_parser("open", help="open a Neuroglancer state (JSON file or URL) in napari")
    opn.add_argument("state", help="a JSON file, a Neuroglancer URL with #!, or JSON text")
    opn.add_argument(
        "--serve-prefix", type=_prefix, action="append", default=[], metavar="LOCAL=URL"
    )
    opn.add_argument("--screenshot", metavar="PNG", help="save a screenshot and exit")


def run_ng_state(args: argparse.Namespace) -> int:
    """Run ``ng-state export`` or ``ng-state open``; return the exit status."""
    if args.ng_command == "export":
        return _export(args)
    return _open(args)


def _export(args: argparse.Namespace) -> int:
    from napari_connecto.interop.ngbuild import view_state_for_sources
    from napari_connecto.interop.ngstate import to_ng_state

    at = _at(args.at) if args.at else None
    kwargs = {"at": at, "zoom": args.zoom, "segments": args.segments}
    if args.annotations:
        from napari_connecto._cli_annotations import open_store

        with open_store(args.annotations, create=False) as store:
            view = view_state_for_sources(args.sources, store=store, **kwargs)
    else:
        view = view_state_for_sources(args.sources, **kwargs)
    result = to_ng_state(view, url_map=dict(args.serve_prefix))
    text = json.dumps(result.state, indent=2) + "\n"
    for line in result.warnings:
        sys.stderr.write(f"napari-connecto: warning: {line}\n")
    if args.out:
        from napari_connecto.export._atomic import write_text_atomic

        write_text_atomic(Path(args.out), text)
        sys.stdout.write(result.url(args.host) + "\n")
    else:
        sys.stdout.write(result.url(args.host) + "\n" + text)
    return 0


def _open(args: argparse.Namespace) -> int:
    import napari

    from napari_connecto.interop.ngstate import from_ng_state

    state = from_ng_state(args.state, url_map=dict(args.serve_prefix))  # fail before a window
    for line in state.warnings:
        sys.stderr.write(f"napari-connecto: warning: {line}\n")
    from napari_connecto.viewer.launch import go_to
    from napari_connecto.viewer.ngstate import apply_view_state

    viewer = napari.Viewer(show=True)
    apply_view_state(viewer, state)
    if args.screenshot:
        from napari_connecto.cli import _save_screenshot

        viewer.window.resize(1400, 900)
        go_to(viewer, state.position.as_tuple(), zoom=state.zoom)
        _save_screenshot(viewer, args.screenshot)
        viewer.close()
        return 0
    napari.run()
    return 0
