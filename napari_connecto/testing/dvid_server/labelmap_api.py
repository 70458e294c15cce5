"""HTTP endpoints of ``labelmap`` (``datatype/labelmap/handlers.go``).

JSON answers are formatted the way DVID's handlers print them (``fmt.Fprintf``
with their exact spacing), so byte-level comparisons with a real server hold.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_connecto.testing.dvid_server.codecs import compress, decompress, encode_rles, rle_runs
from napari_connecto.testing.dvid_server.imageblk import parse_subvolume
from napari_connecto.testing.dvid_server.instances import throttle
from napari_connecto.testing.dvid_server.protocol import (
    JSON,
    OCTET,
    TEXT,
    BadAPIRequest,
    BadRequest,
    HTTPStatus,
    Request,
    Response,
    json_response,
    parse_point,
    parse_uint,
)

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.instances import Ctx
    from napari_connecto.testing.dvid_server.labelmap import Labelmap

__all__ = ["serve"]

_PROTECTED = "Label 0 is protected background value and cannot be {}.\n"
_INDEXED_ONLY = {
    "sparsevol", "sparsevol-coarse", "maxlabel", "nextlabel", "cleave", "merge", "renumber",
}  # fmt: skip


def _text(body: str, content_type: str = JSON) -> Response:
    return Response(200, body.encode(), content_type)


def _go_list(values: Any) -> str:
    return "[" + " ".join(str(v) for v in values) + "]"


def _scale(req: Request) -> int:
    text = req.query.get("scale", "")
    if not text:
        return 0
    try:
        return int(text) & 0xFF
    except ValueError:
        raise BadRequest(
            f'bad scale specified: strconv.Atoi: parsing "{text}": invalid syntax'
        ) from None


def _label_arg(req: Request, what: str, protected: str) -> int:
    parts = req.parts
    if len(parts) < 5:
        raise BadRequest(f"DVID requires {what}")
    label = parse_uint(parts[4])
    if label == 0:
        raise BadRequest(_PROTECTED.format(protected))
    return label


def serve(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    """Answer one request under ``/api/node/{uuid}/{labelmap}/``."""
    parts = req.parts
    if len(parts) < 4:
        raise BadRequest("Incomplete API request")
    keyword = parts[3]
    if not lm.indexed and keyword in _INDEXED_ONLY:
        raise BadRequest(
            f'data "{lm.name}" is not label indexed (IndexedLabels=false): '
            f'"{keyword}" endpoint is not supported'
        )
    handler = _HANDLERS.get(keyword)
    if handler is None:
        raise BadAPIRequest(lm.name, lm.typename)
    return handler(lm, req, ctx)


def _info(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method == "POST":
        raise BadRequest("POST /info (config change) is not supported by the test server")
    return json_response(lm.info(ctx.ancestry))


def _help(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    return _text("labelmap test server: see DVID's labelmap help\n", TEXT)


def _label(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    parts = req.parts
    if len(parts) < 5:
        raise BadRequest("DVID requires coord to follow 'label' command")
    x, y, z = parse_point(parts[4])
    value = lm.read_volume(ctx, _scale(req), (z, y, x), (1, 1, 1), req)
    return _text(f'{{"Label": {int(value[0, 0, 0])}}}')


def _json_list_body(req: Request, what: str) -> list[Any]:
    try:
        body = json.loads(req.body or b"null")
    except ValueError as exc:
        raise BadRequest(f"Bad {what} request JSON: {exc}") from exc
    if not isinstance(body, list):
        raise BadRequest(f"Bad {what} request JSON: expected a list")
    return body


def _labels(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method != "GET":
        raise BadRequest("Batch labels query must be a GET request")
    coords = _json_list_body(req, "labels")
    points = []
    for c in coords:
        if not isinstance(c, list) or len(c) != 3:
            raise BadRequest(f"Bad labels request JSON: bad point {c!r}")
        points.append((int(c[2]), int(c[1]), int(c[0])))
    svs = lm.grid.values_at(ctx.ancestry, _scale(req), points)
    out = svs if req.flag("supervoxels") else lm.map_array(ctx.ancestry, svs)
    return _text("[" + ",".join(str(int(v)) for v in out) + "]")


def _mapping(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method != "GET":
        raise BadRequest("Batch mapping query must be a GET request")
    svs = [int(v) for v in _json_list_body(req, "mapping")]
    counts = lm.sv_index(ctx.ancestry).counts
    out = []
    for sv in svs:
        mapped = lm.mapping.get(sv, ctx.ancestry)
        if mapped is not None:
            out.append(int(mapped))
        elif req.flag("nolookup") or counts.get(sv):
            out.append(sv)
        else:
            out.append(0)
    return _text("[" + ",".join(map(str, out)) + "]")


def _supervoxels(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    label = _label_arg(req, "label to follow 'supervoxels' command", "queried as body")
    svs = lm.supervoxels_of(ctx.ancestry, label, lm.sv_index(ctx.ancestry))
    if not svs:
        raise HTTPStatus(404)
    return _text("[" + ",".join(str(s) for s in sorted(svs)) + "]")


def _size(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    label = _label_arg(req, "label to follow 'size' command", "queried as body")
    index = lm.sv_index(ctx.ancestry)
    size = sum(
        index.counts[sv] for sv in lm.members(ctx.ancestry, label, index, req.flag("supervoxels"))
    )
    if size == 0:
        raise HTTPStatus(404)
    return _text(f'{{"voxels": {size}}}')


def _sizes(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method != "GET":
        raise BadRequest("Batch sizes query must be a GET request")
    labels = [int(v) for v in _json_list_body(req, "mapping")]
    index = lm.sv_index(ctx.ancestry)
    sv_mode = req.flag("supervoxels")
    totals: dict[int, int] = {}
    for sv, count in index.counts.items():
        key = sv if sv_mode else lm.label_of(ctx.ancestry, sv)
        totals[key] = totals.get(key, 0) + count
    return _text("[" + ",".join(str(totals.get(lbl, 0) if lbl else 0) for lbl in labels) + "]")


def _sparsevol_size(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    label = _label_arg(req, "label ID to follow 'sparsevol-size' command", "used as sparse volume")
    if req.method != "GET":
        raise BadRequest(f"DVID does not support {req.method} on /sparsevol-size endpoint")
    index = lm.sv_index(ctx.ancestry)
    svs = lm.members(ctx.ancestry, label, index, req.flag("supervoxels"))
    blocks = set().union(*(index.blocks[sv] for sv in svs)) if svs else set()
    if not blocks:
        raise HTTPStatus(404)
    voxels = sum(index.counts[sv] for sv in svs)
    bz, by, bx = np.array(sorted(blocks)).T
    bsx, bsy, bsz = lm.block_xyz
    lo = (bx.min() * bsx, by.min() * bsy, bz.min() * bsz)
    hi = ((bx.max() + 1) * bsx - 1, (by.max() + 1) * bsy - 1, (bz.max() + 1) * bsz - 1)
    return _text(
        f'{{"voxels": {voxels}, "numblocks": {len(blocks)}, '
        f'"minvoxel": [{lo[0]}, {lo[1]}, {lo[2]}], "maxvoxel": [{hi[0]}, {hi[1]}, {hi[2]}]}}'
    )


def _bounds(req: Request) -> list[tuple[int | None, int | None]]:
    out = []
    for axis in "xyz":
        pair = []
        for end in ("min", "max"):
            text = req.query.get(end + axis, "")
            try:
                pair.append(int(text) if text else None)
            except ValueError:
                raise BadRequest(
                    f"error parsing bounds from query string: bad {end}{axis}"
                ) from None
        out.append((pair[0], pair[1]))
    return out


def _clip(
    mask: np.ndarray, origin_xyz: tuple[int, ...], bounds: list[tuple[int | None, int | None]]
) -> None:
    for axis, (lo, hi) in enumerate(bounds):
        dim = 2 - axis
        n = mask.shape[dim]
        coords = np.arange(n) + origin_xyz[axis]
        keep = np.ones(n, bool)
        if lo is not None:
            keep &= coords >= lo
        if hi is not None:
            keep &= coords <= hi
        shape = [1, 1, 1]
        shape[dim] = n
        mask &= keep.reshape(shape)


def _sparsevol_runs(lm: Labelmap, req: Request, ctx: Ctx, label: int) -> list[np.ndarray] | None:
    index = lm.sv_index(ctx.ancestry)
    svs = lm.members(ctx.ancestry, label, index, req.flag("supervoxels"))
    if not svs:
        return None
    scale, bounds = _scale(req), _bounds(req)
    wanted = np.fromiter(svs, np.uint64)
    runs = []
    for bzyx, block in lm.grid.blocks(ctx.ancestry, scale):
        if not svs.intersection(block.counts()):
            continue
        mask = np.isin(block.data, wanted)
        origin = tuple(b * s for b, s in zip(bzyx[::-1], lm.block_xyz, strict=True))
        _clip(mask, origin, bounds)
        runs.append(rle_runs(mask, origin))
    return runs


def _sparsevol(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    label = _label_arg(req, "label ID to follow 'sparsevol' command", "used as sparse volume")
    fmt = req.query.get("format", "rles")
    if fmt not in ("rles", ""):
        raise BadRequest(f"sparsevol format {fmt!r} is not supported by the test server")
    if req.method == "POST":
        raise BadRequest("POST of sparsevol not currently implemented\n")
    if req.method not in ("GET", "HEAD"):
        raise BadRequest(f"Unable to handle HTTP action {req.method} on sparsevol endpoint")
    runs = _sparsevol_runs(lm, req, ctx, label)
    found = bool(runs) and any(len(r) for r in runs)
    if req.method == "HEAD":
        return Response(200 if found else 204, content_type="text/html")
    if not found:
        raise HTTPStatus(404)
    body = encode_rles(runs or [])
    compression = req.query.get("compression", "")
    return Response(200, compress(body, compression), OCTET)


def _sparsevol_coarse(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    label = _label_arg(
        req, "label ID to follow 'sparsevol-coarse' command", "used as sparse volume"
    )
    index = lm.sv_index(ctx.ancestry)
    svs = lm.members(ctx.ancestry, label, index, req.flag("supervoxels"))
    blocks = sorted(set().union(*(index.blocks[sv] for sv in svs))) if svs else []
    if not blocks:
        raise HTTPStatus(404)
    bounds = [
        (None if lo is None else lo // b, None if hi is None else hi // b)
        for (lo, hi), b in zip(_bounds(req), lm.block_xyz, strict=True)
    ]
    arr = np.array(blocks)
    lo = arr.min(axis=0)
    mask = np.zeros(tuple(arr.max(axis=0) - lo + 1), bool)
    mask[tuple((arr - lo).T)] = True
    origin = tuple(int(v) for v in lo[::-1])
    _clip(mask, origin, bounds)
    return Response(200, encode_rles([rle_runs(mask, origin)]), OCTET)


def _lastmod(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    label = _label_arg(req, "label to follow 'lastmod' command", "queried as body")
    index = lm.sv_index(ctx.ancestry)
    if not lm.supervoxels_of(ctx.ancestry, label, index):
        raise HTTPStatus(404)
    info = lm.lastmod.get(label, ctx.ancestry) or {"mutid": 0, "user": "", "app": "", "time": ""}
    return _text(
        f'{{"mutation id": {info["mutid"]}, "last mod user": {json.dumps(info["user"])}, '
        f'"last mod app": {json.dumps(info["app"])}, "last mod time": {json.dumps(info["time"])} }}'
    )


def _maxlabel(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method == "GET":
        top = lm.effective_max_label(ctx.ancestry)
        if top is None:
            raise BadRequest(f"No maximum label found for {lm.name} version {ctx.version}\n")
        return _text(f'{{"maxlabel": {top}}}')
    if req.method == "POST":
        raise BadRequest("POST /maxlabel requires admin privileges (admintoken or DSG admin)")
    raise BadRequest(f"Unknown action {req.method!r} requested: {req.path}\n")


def _nextlabel(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method == "GET":
        return _text(f'{{"nextlabel": {(lm.next_label or lm.max_repo_label) + 1}}}')
    if req.method == "POST":
        if len(req.parts) < 5:
            raise BadRequest("DVID requires number of requested labels to follow POST /nextlabel")
        start, end = lm.new_labels(ctx, parse_uint(req.parts[4]))
        return _text(f'{{"start": {start}, "end": {end}}}')
    raise BadRequest(f"Unknown action {req.method!r} requested: {req.path}\n")


def _merge(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method != "POST":
        raise BadRequest("Merge requests must be POST actions.")
    try:
        labels = json.loads(req.body)
        labels = [int(v) for v in labels]
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"Bad merge op JSON: {exc}") from exc
    if len(labels) < 2:
        raise BadRequest(
            f"invalid merge tuple {_go_list(labels)}, need at least target and to-merge labels"
        )
    if 0 in labels[1:]:
        raise BadRequest(
            f"invalid merge tuple {_go_list(labels)} -- cannot contain background label 0"
        )
    mutid = lm.merge(ctx, labels[0], labels[1:])
    return _text(f'{{"MutationID": {mutid}}}')


def _cleave(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method != "POST":
        raise BadRequest("Cleave requests must be POST actions.")
    label = _label_arg(req, "label ID to follow 'cleave' command", "used as cleave target")
    if not req.body:
        raise BadRequest("no cleave supervoxels JSON was POSTed")
    try:
        svs = [int(v) for v in json.loads(req.body)]
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"bad cleave supervoxels JSON: {exc}") from exc
    new_label, mutid = lm.cleave(ctx, label, svs)
    return _text(f'{{"CleavedLabel": {new_label}, "MutationID": {mutid}}}')


def _renumber(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    if req.method != "POST":
        raise BadRequest("Renumber requests must be POST actions.")
    try:
        values = [int(v) for v in json.loads(req.body)]
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"Bad renumber JSON: {exc}") from exc
    if not values or len(values) % 2:
        raise BadRequest("renumber needs pairs of labels: [new1, old1, new2, old2, ...]")
    pairs = list(zip(values[::2], values[1::2], strict=True))
    if any(0 in pair for pair in pairs):
        raise BadRequest(_PROTECTED.format("renumbered"))
    lm.renumber(ctx, pairs)
    return _text("")


def _raw(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    parts = req.parts
    if len(parts) < 7:
        raise BadRequest(f"'{parts[3]}' must be followed by shape/size/offset")
    if parts[4] != "0_1_2":
        raise BadRequest(
            f"data shape {parts[4]!r} is not supported by the test server for labelmap"
        )
    scale = _scale(req)
    throttle(req, ctx)
    compression = req.query.get("compression", "")
    if compression in ("google", "googlegzip"):
        raise BadRequest(f"compression {compression!r} is not supported by the test server")
    offset, shape = parse_subvolume(parts[5], parts[6])
    nbytes = lm.check_size(shape)
    if req.method == "GET":
        data = lm.read_volume(ctx, scale, offset, shape, req).astype("<u8")
        return Response(200, compress(data.tobytes(), compression), OCTET)
    if parts[3] == "isotropic":
        raise BadRequest("can only POST 'raw' not 'isotropic' images")
    if not lm.grid.aligned(offset, shape):
        hi = [o + s - 1 for o, s in zip(offset, shape, strict=True)]
        raise BadRequest(lm.alignment_error(offset[::-1], hi[::-1]))
    raw = decompress(req.body, compression, nbytes)
    if len(raw) != nbytes:
        raise BadRequest(
            f'expected {nbytes} bytes for data "{lm.name}" label PUT '
            f"but only received {len(raw)} bytes"
        )
    lm.write_labels(ctx, offset, np.frombuffer(raw, "<u8").reshape(shape))
    return Response()


def _blocks(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    throttle(req, ctx)
    scale = _scale(req)
    if req.method != "GET":
        raise BadRequest("POST /blocks is not supported by the test server")
    parts = req.parts
    if len(parts) < 6:
        raise BadRequest("must specify size and offset with GET /blocks endpoint")
    compression = req.query.get("compression", "")
    if compression not in ("", "lz4", "gzip", "blocks", "uncompressed"):
        raise BadRequest('compression must be "lz4" (default), "gzip", "blocks" or "uncompressed"')
    if compression == "blocks":
        raise BadRequest(
            "compression 'blocks' (DVID block serialization) is not supported by the test server"
        )
    offset, shape = parse_subvolume(parts[4], parts[5])
    if not lm.grid.aligned(offset, shape):
        hi = [o + s - 1 for o, s in zip(offset, shape, strict=True)]
        raise BadRequest(
            "cannot use labels via 'blocks' endpoint in non-block aligned geometry "
            "({},{},{}) -> ({},{},{})".format(*offset[::-1], *hi[::-1])
        )
    codec = {"": "lz4", "lz4": "lz4", "gzip": "gzip", "uncompressed": ""}[compression]
    out = bytearray()
    for bzyx in lm.grid.block_range(offset, shape):
        block = lm.grid.get(ctx.ancestry, scale, bzyx)
        if block is None:
            continue
        data = block.data if req.flag("supervoxels") else lm.map_array(ctx.ancestry, block.data)
        payload = compress(data.astype("<u8").tobytes(), codec)
        out += struct.pack("<iiii", bzyx[2], bzyx[1], bzyx[0], len(payload)) + payload
    return Response(200, bytes(out), OCTET)


def _metadata(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    return lm.metadata(ctx.ancestry)


def _sync(lm: Labelmap, req: Request, ctx: Ctx) -> Response:
    return lm.set_syncs(req)


_HANDLERS: dict[str, Callable[[Labelmap, Request, Ctx], Response]] = {
    "help": _help,
    "info": _info,
    "metadata": _metadata,
    "sync": _sync,
    "label": _label,
    "labels": _labels,
    "mapping": _mapping,
    "blocks": _blocks,
    "raw": _raw,
    "isotropic": _raw,
    "lastmod": _lastmod,
    "supervoxels": _supervoxels,
    "size": _size,
    "sizes": _sizes,
    "sparsevol-size": _sparsevol_size,
    "sparsevol": _sparsevol,
    "sparsevol-coarse": _sparsevol_coarse,
    "maxlabel": _maxlabel,
    "nextlabel": _nextlabel,
    "merge": _merge,
    "cleave": _cleave,
    "renumber": _renumber,
}
