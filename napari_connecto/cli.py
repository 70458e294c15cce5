"""The ``napari-connecto`` command: ``view``, ``info`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from napari_connecto.errors import ConnectoError
from napari_connecto.opening import list_contents, open_points, open_volume

if TYPE_CHECKING:
    import napari

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _position(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X in nm, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X in nm, got {text!r}")
    return values  # type: ignore[return-value]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-connecto",
        description="Browse connectomics volumes, segmentations and synapses in napari.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    view = sub.add_parser("view", help="open sources in a napari viewer")
    view.add_argument("sources", nargs="+", help="paths or URLs (zarr, n5, h5, precomputed)")
    view.add_argument("--at", type=_position, help="centre on Z,Y,X (nm)")
    _add_screenshot(view)

    info = sub.add_parser("info", help="print scales, dtype, chunking and encoding")
    info.add_argument("source", help="path or URL")
    info.add_argument("--json", action="store_true", help="print JSON")

    demo = sub.add_parser("demo", help="generate (once) and open the synthetic EM sample")
    demo.add_argument("--at", type=_position, help="centre on Z,Y,X (nm)")
    _add_screenshot(demo)
    return parser


def _size(text: str) -> int:
    from napari_connecto.cache.service import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 2G or 512M, got {text!r}") from None


def _add_screenshot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--screenshot", metavar="PNG", help="save a screenshot of the canvas and exit"
    )
    parser.add_argument(
        "--cache",
        type=_size,
        metavar="SIZE",
        help="chunk cache budget, e.g. 2G (default: an eighth of RAM, at most 8G; "
        "or $NAPARI_CONNECTO_CACHE_BYTES)",
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="chunk fetches in flight (default 16)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        _configure_cache(args)
        if args.command == "info":
            return _info(args.source, as_json=args.json)
        if args.command == "demo":
            from napari_connecto.sample import ensure_sample

            paths = ensure_sample()
            at = args.at
            if at is None:  # open on the first synapse, as a proofreader would
                at = tuple(open_points(paths.cremi_synapses).positions_nm[0])
            return _view([paths.ome_zarr, paths.cremi_synapses], at, args.screenshot)
        return _view(args.sources, args.at, args.screenshot)
    except ConnectoError as exc:
        sys.stderr.write(f"napari-connecto: {exc}\n")
        return 2


def _configure_cache(args: argparse.Namespace) -> None:
    changes = {}
    if getattr(args, "cache", None) is not None:
        changes["budget_bytes"] = args.cache
    if getattr(args, "workers", None) is not None:
        changes["workers"] = args.workers
    if changes:
        from napari_connecto.cache.service import default_service

        try:
            default_service().configure(**changes)
        except ValueError as exc:
            raise SystemExit(f"napari-connecto: {exc}") from None


def _info(source: str, *, as_json: bool) -> int:
    report: list[dict[str, Any]] = []
    for entry in list_contents(source):
        if entry.kind == "points":
            points = open_points(entry.source)
            report.append(
                {"source": str(entry.source), "kind": "points", "count": len(points.positions_nm)}
            )
        else:
            with open_volume(entry.source) as volume:
                report.append(volume.describe())
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write("".join(_describe_text(item) for item in report))
    return 0


def _describe_text(item: dict[str, Any]) -> str:
    if item["kind"] == "points":
        return f"{item['source']}\n  points: {item['count']}\n"
    lines = [f"{item['source']}", f"  format {item['format']}, {item['kind']}, {item['dtype']}"]
    for i, sc in enumerate(item["scales"]):
        shape = "x".join(str(v) for v in sc["shape_zyx"])
        res = "x".join(f"{v:g}" for v in sc["resolution_nm_zyx"])
        chunk = "x".join(str(v) for v in sc["chunk_zyx"])
        size = _human_bytes(sc["nbytes"])
        lines.append(
            f"  scale {i}: {shape} voxels (z,y,x) at {res} nm, chunks {chunk}, "
            f"{sc['encoding']}, {size}"
        )
    return "\n".join(lines) + "\n"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _view(sources: Sequence[Any], at: Any, screenshot: str | None) -> int:
    import napari

    from napari_connecto.viewer.launch import go_to, view

    for source in sources:  # fail with a clear message before any window opens
        list_contents(source)
    viewer = view(*sources, at=at)
    if screenshot:
        viewer.window.resize(1400, 900)
        if at is not None:
            go_to(viewer, at)  # again, for the resized canvas
        _save_screenshot(viewer, screenshot)
        viewer.close()
        return 0
    napari.run()
    return 0


def _save_screenshot(viewer: napari.Viewer, path: str) -> None:
    from qtpy.QtWidgets import QApplication

    from napari_connecto.viewer.streaming import wait_until_loaded

    for _ in range(5):
        QApplication.processEvents()
    if not wait_until_loaded(viewer, timeout=120):
        logger.warning("some chunks were still loading when the screenshot was taken")
    viewer.screenshot(path, canvas_only=False)
    logger.info("screenshot saved to %s", path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
