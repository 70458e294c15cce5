"""The ``napari-connecto`` command.

Subcommands: view, info, demo, import, synapses, ng-state, version and export (import and
synapses in :mod:`._cli_annotations`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from napari_connecto._cli_annotations import (
    add_annotation_commands,
    neuron_id,
    open_store,
    run_import,
    run_synapses,
    summary_line,
)
from napari_connecto.errors import AnnotationError, ConnectoError
from napari_connecto.opening import list_contents, open_points, open_volume

if TYPE_CHECKING:
    import napari

    from napari_connecto.annotations import AnnotationStore
    from napari_connecto.sample import SamplePaths

__all__ = ["main"]

logger = logging.getLogger(__name__)

DEMO_STORE_NAME = "annotations.db"
"""The demo's SQLite store, inside the sample directory (replaced with the sample)."""
_DEMO_SETTING = "demo.sample"


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
    view.add_argument(
        "--annotations", metavar="DB", help="dock the neuron and synapse tables of this store"
    )
    view.add_argument("--neuron", type=neuron_id, metavar="ID", help="select this neuron")
    _add_screenshot(view)

    info = sub.add_parser("info", help="print scales, dtype, chunking and encoding")
    info.add_argument("source", help="path or URL")
    info.add_argument("--json", action="store_true", help="print JSON")

    demo = sub.add_parser("demo", help="generate (once) and open the synthetic EM sample")
    demo.add_argument("--at", type=_position, help="centre on Z,Y,X (nm)")
    demo.add_argument(
        "--annotations",
        metavar="DB",
        help="annotation store to import the sample's synapses into and dock "
        "(default: annotations.db in the sample directory)",
    )
    demo.add_argument("--neuron", type=neuron_id, metavar="ID", help="select this neuron")
    _add_screenshot(demo)
    add_annotation_commands(sub)
    from napari_connecto import _cli_export, _cli_versions
    from napari_connecto.interop.ngcli import add_ng_state_parser

    add_ng_state_parser(sub)
    _cli_versions.add_parser(sub)
    _cli_export.add_parser(sub)
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
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 after a clear one-line error on stderr.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "view" and args.neuron is not None and not args.annotations:
        parser.error("--neuron needs --annotations DB")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        _configure_cache(args)
        if args.command == "info":
            return _info(args.source, as_json=args.json)
        commands = {
            "import": run_import,
            "synapses": run_synapses,
            "demo": _demo,
            "ng-state": _ng_state,
            "version": _version,
            "export": _export,
        }
        if args.command in commands:
            return commands[args.command](args)
        return _view(args.sources, args.at, args.screenshot, args.annotations, args.neuron)
    except ConnectoError as exc:
        sys.stderr.write(f"napari-connecto: {exc}\n")
        return 2


def _ng_state(args: argparse.Namespace) -> int:
    from napari_connecto.interop.ngcli import run_ng_state

    return run_ng_state(args)


def _version(args: argparse.Namespace) -> int:
    from napari_connecto import _cli_versions

    return _cli_versions.run(args)


def _export(args: argparse.Namespace) -> int:
    from napari_connecto import _cli_export

    return _cli_export.run(args)


def _demo(args: argparse.Namespace) -> int:
    from napari_connecto.sample import ensure_sample

    paths = ensure_sample()
    at = args.at
    if at is None:  # open on the first synapse, as a proofreader would
        at = tuple(open_points(paths.cremi_synapses).positions_nm[0])
    db = args.annotations or str(paths.directory / DEMO_STORE_NAME)
    with open_store(db, create=True) as store:
        _import_sample(store, paths)
    # the synapses come from the store (the panel's layer, coloured by review status), not
    # a second time from the CREMI file
    return _view([paths.ome_zarr], at, args.screenshot, db, args.neuron)


def _import_sample(store: AnnotationStore, paths: SamplePaths) -> None:
    """Import the sample's CREMI synapses into ``store`` once (again would be unchanged)."""
    from napari_connecto.annotations.importers import read_annotations

    marker = paths.marker.read_text(encoding="utf-8").strip()
    if store.get_setting(_DEMO_SETTING) == marker:
        return
    summary = store.import_batch(read_annotations(paths.cremi, format="cremi"))
    store.set_setting(_DEMO_SETTING, marker)
    logger.info("%s", summary_line(summary, store.where))


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


def _view(
    sources: Sequence[Any],
    at: Any,
    screenshot: str | None,
    annotations: str | None = None,
    neuron: int | None = None,
) -> int:
    for source in sources:  # fail with a clear message before any window opens
        list_contents(source)
    if annotations is None:
        _show(sources, at, screenshot, None, None)
        return 0
    with open_store(annotations, create=False) as store:
        if neuron is not None and not bool(store.has_neurons([neuron])[0]):
            raise AnnotationError(f"no neuron {neuron} in {store.where}")
        _show(sources, at, screenshot, store, neuron)
    return 0


def _show(
    sources: Sequence[Any],
    at: Any,
    screenshot: str | None,
    store: AnnotationStore | None,
    neuron: int | None,
) -> None:
    """Open the viewer (with the annotation tables if ``store``); run it or screenshot it."""
    import napari

    from napari_connecto.viewer.launch import go_to, view

    viewer = view(*sources, at=at)
    if store is not None:
        from napari.layers import Labels

        from napari_connecto.viewer.annotations import attach_annotations
        from napari_connecto.viewer.meshes import attach_meshes
        from napari_connecto.viewer.proofreading import attach_proofreading

        labels = next((lay for lay in viewer.layers if isinstance(lay, Labels)), None)
        panel = attach_annotations(viewer, store, neuron=neuron, labels_layer=labels)
        if labels is not None:
            attach_proofreading(viewer, store, labels)
            attach_meshes(viewer, labels, panel)  # Ctrl+click or select neurons: 3D meshes
    if screenshot:
        viewer.window.resize(1400, 900)
        if at is not None:
            go_to(viewer, at)  # again, for the resized canvas
        _save_screenshot(viewer, screenshot)
        viewer.close()
        return
    napari.run()


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
