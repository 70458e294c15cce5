"""Voxel data types: the shared ``imageblk`` machinery and ``uint8blk`` (grayscale).

Raw volumes travel as ``raw/0_1_2/{sx}_{sy}_{sz}/{x}_{y}_{z}``: x fastest, i.e.
a z, y, x array. POSTs must be block-aligned. Extents (``MinPoint`` /
``MaxPoint``, inclusive) grow with every POST and are versioned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from napari_connecto.testing.dvid_server.codecs import png
from napari_connecto.testing.dvid_server.instances import Instance, number, register, throttle
from napari_connecto.testing.dvid_server.protocol import (
    OCTET,
    BadAPIRequest,
    BadRequest,
    Request,
    Response,
    go_point,
    json_response,
    parse_point,
)
from napari_connecto.testing.dvid_server.versioned import VersionedStore
from napari_connecto.testing.dvid_server.voxels import BlockGrid

if TYPE_CHECKING:
    from napari_connecto.testing.dvid_server.instances import Ctx
    from napari_connecto.testing.dvid_server.snapshot import Snapshot

__all__ = ["MAX_REQUEST_BYTES", "Uint8Blk", "VoxelInstance", "parse_subvolume"]

MAX_REQUEST_BYTES = 1 << 30
"""Largest voxel request the test server allocates (DVID's ``MaxDataRequest`` idea)."""

_PLANES = {"xy": (0, 1), "xz": (0, 2), "yz": (1, 2), "0_1": (0, 1), "0_2": (0, 2), "1_2": (1, 2)}


def parse_subvolume(size: str, offset: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``"sx_sy_sz"``, ``"x_y_z"`` -> (offset z, y, x), (shape z, y, x); 400 if bad."""
    sxyz = parse_point(size)
    oxyz = parse_point(offset)
    if min(sxyz) <= 0:
        raise BadRequest(f"subvolume size must be positive, not {size!r}")
    return oxyz[::-1], sxyz[::-1]


class VoxelInstance(Instance):
    """Common part of block-stored voxel types (``imageblk.Data``)."""

    dtype: ClassVar[np.dtype[Any]] = np.dtype(np.uint8)
    value_label: ClassVar[str] = "uint8"
    interpolable: ClassVar[bool] = True
    default_block: ClassVar[int] = 32

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        cfg = self.config
        d = self.default_block
        self.block_xyz = cfg.triple("BlockSize", (d, d, d), int)
        if min(self.block_xyz) <= 0:
            raise BadRequest("BlockSize must be positive")
        self.voxel_size = cfg.triple("VoxelSize", (8.0, 8.0, 8.0), float)
        units = cfg.string("VoxelUnits") or "nanometers,nanometers,nanometers"
        self.voxel_units = units.split(",") if "," in units else [units] * 3
        self.background = cfg.integer("Background", 0)
        self.grid = BlockGrid(self.block_xyz[::-1], self.dtype)
        self.extents: VersionedStore[str, tuple[list[int], list[int]]] = VersionedStore()

    # -- description ------------------------------------------------------------------------

    def extent(self, ancestry: list[int]) -> tuple[list[int], list[int]] | None:
        """Inclusive ``(MinPoint, MaxPoint)`` x, y, z, or ``None`` before any write."""
        return self.extents.get("extents", ancestry)

    def grow_extents(
        self, version: int, ancestry: list[int], lo_xyz: list[int], hi_xyz: list[int]
    ) -> None:
        """Widen the version's extents to include an inclusive box."""
        old = self.extent(ancestry)
        if old is not None:
            lo_xyz = [min(a, b) for a, b in zip(old[0], lo_xyz, strict=True)]
            hi_xyz = [max(a, b) for a, b in zip(old[1], hi_xyz, strict=True)]
        self.extents.put("extents", version, (list(lo_xyz), list(hi_xyz)))

    def extended_json(self, ancestry: list[int]) -> dict[str, Any]:
        """``imageblk.Properties`` with the version's extents."""
        ext = self.extent(ancestry)
        lo, hi = ext if ext else (None, None)
        return {
            "Values": [{"DataType": self.dtype.name, "Label": self.value_label}],
            "Interpolable": self.interpolable,
            "BlockSize": list(self.block_xyz),
            "VoxelSize": [number(v) for v in self.voxel_size],
            "VoxelUnits": list(self.voxel_units),
            "MinPoint": lo,
            "MaxPoint": hi,
            "MinIndex": [p // b for p, b in zip(lo, self.block_xyz, strict=True)] if lo else None,
            "MaxIndex": [p // b for p, b in zip(hi, self.block_xyz, strict=True)] if hi else None,
            "Background": self.background,
            "GridStore": "",
            "ScaleLevel": 0,
        }

    def info(self, ancestry: list[int]) -> dict[str, Any]:
        """``Base``, ``Extended`` and top-level ``Extents``."""
        ext = self.extent(ancestry)
        return {
            "Base": self.base_json(),
            "Extended": self.extended_json(ancestry),
            "Extents": {"MinPoint": ext[0] if ext else None, "MaxPoint": ext[1] if ext else None},
        }

    def metadata(self, ancestry: list[int]) -> Response:
        """``GET .../metadata``: the ``application/vnd.dvid-nd-data+json`` description."""
        ext = self.extent(ancestry)
        size = [h - lo + 1 for lo, h in zip(*ext, strict=True)] if ext else [0, 0, 0]
        offset = ext[0] if ext else [0, 0, 0]
        axes = [
            {
                "Label": label,
                "Resolution": number(self.voxel_size[i]),
                "Units": self.voxel_units[i],
                "Size": size[i],
                "Offset": offset[i],
            }
            for i, label in enumerate("XYZ")
        ]
        props = self.extended_json(ancestry)
        body = json_response({"Axes": axes, "Properties": props}).body + b"\n"
        return Response(200, body, "application/vnd.dvid-nd-data+json")

    # -- voxel access -----------------------------------------------------------------------

    def check_size(self, shape_zyx: tuple[int, ...]) -> int:
        """Bytes of a request; 400 above :data:`MAX_REQUEST_BYTES`."""
        nbytes = int(np.prod(shape_zyx)) * self.dtype.itemsize
        if nbytes > MAX_REQUEST_BYTES:
            raise BadRequest(
                f"Requested payload ({nbytes} bytes) exceeds this DVID server's set limit "
                f"({MAX_REQUEST_BYTES})"
            )
        return nbytes

    def store_voxels(
        self, ctx: Ctx, offset_zyx: tuple[int, ...], array: np.ndarray
    ) -> list[tuple[int, int, int]]:
        """Write a block-aligned array at scale 0 and grow the extents."""
        if not self.grid.aligned(offset_zyx, array.shape):
            lo = offset_zyx[::-1]
            hi = [o + s - 1 for o, s in zip(offset_zyx, array.shape, strict=True)][::-1]
            raise BadRequest(self.alignment_error(lo, hi))
        written = self.grid.write(ctx.version, 0, offset_zyx, array)
        hi = [o + s - 1 for o, s in zip(offset_zyx, array.shape, strict=True)]
        self.grow_extents(ctx.version, ctx.ancestry, list(offset_zyx[::-1]), hi[::-1])
        return written

    def alignment_error(self, lo_xyz: Any, hi_xyz: Any) -> str:
        """The 400 message of a misaligned POST."""
        box = f"{go_point(lo_xyz)} -> {go_point(hi_xyz)}"
        return f"cannot store voxels in non-block aligned geometry {box}"

    def slice_image(self, req: Request, ctx: Ctx, scale: int = 0) -> Response:
        """``GET .../raw/{xy|xz|yz}/{w}_{h}/{x}_{y}_{z}[/png]``: a PNG slice."""
        parts = req.parts
        if req.method != "GET":
            raise BadRequest("DVID does not permit 2d mutations, only 3d block-aligned stores")
        w, h = parse_point(parts[5], ndim=2)
        oxyz = parse_point(parts[6])
        fmt = parts[7] if len(parts) > 7 else "png"
        if fmt != "png":
            raise BadRequest(f"image format {fmt!r} is not supported by the test server (png only)")
        axes = _PLANES[parts[4]]
        shape_xyz = [1, 1, 1]
        shape_xyz[axes[0]], shape_xyz[axes[1]] = w, h
        self.check_size(tuple(shape_xyz))
        vol = self.read_volume(ctx, scale, oxyz[::-1], tuple(shape_xyz[::-1]), req)
        image = vol.reshape(h, w)
        return Response(200, png(image), "image/png")

    def read_volume(
        self,
        ctx: Ctx,
        scale: int,
        offset_zyx: tuple[int, ...],
        shape_zyx: tuple[int, ...],
        req: Request,
    ) -> np.ndarray:
        """Voxels as a client sees them (labelmap maps supervoxels here)."""
        return self.grid.read(ctx.ancestry, scale, offset_zyx, shape_zyx)

    # -- persistence ------------------------------------------------------------------------

    def dump(self, snap: Snapshot) -> dict[str, Any]:
        """Blocks as ``.npy`` files, extents as JSON."""
        return {
            "blocks": self.grid.store.dump(lambda b: snap.save_array(b.data)),
            "extents": self.extents.dump(lambda e: [e[0], e[1]]),
        }

    def load(self, state: dict[str, Any], snap: Snapshot) -> None:
        """Restore blocks and extents."""
        from napari_connecto.testing.dvid_server.voxels import Block

        self.grid.store.load(state.get("blocks", []), lambda f: Block(snap.load_array(f)), tuple)
        self.extents.load(state.get("extents", []), lambda e: (e[0], e[1]), str)


@register
class Uint8Blk(VoxelInstance):
    """Grayscale ``uint8blk`` (multi-scale grayscale is one instance per scale in DVID)."""

    typename = "uint8blk"
    type_url = "github.com/janelia-flyem/dvid/datatype/imageblk/uint8.go"
    type_version = "0.2"

    def serve(self, req: Request, ctx: Ctx) -> Response:
        """Answer ``info``, ``metadata``, ``raw``/``isotropic`` and ``sync``."""
        if req.method not in ("GET", "POST"):
            raise BadRequest(f'Data "{self.name}" can only handle GET or POST HTTP verbs')
        parts = req.parts
        if len(parts) < 4:
            raise BadRequest("Incomplete API request")
        keyword = parts[3]
        if keyword == "info":
            if req.method != "GET":
                raise BadRequest("info endpoint only supports GET HTTP verb")
            return json_response(self.info(ctx.ancestry))
        if keyword == "metadata":
            return self.metadata(ctx.ancestry)
        if keyword == "sync":
            return self.set_syncs(req)
        if keyword in ("raw", "isotropic"):
            return self._raw(req, ctx, keyword)
        raise BadAPIRequest(self.name, self.typename)

    def _raw(self, req: Request, ctx: Ctx, keyword: str) -> Response:
        parts = req.parts
        if len(parts) < 7:
            raise BadRequest(f"{keyword!r} must be followed by shape/size/offset")
        if parts[4] in _PLANES:
            return self.slice_image(req, ctx)
        if parts[4] != "0_1_2":
            raise BadRequest(f"data shape {parts[4]!r} is not supported by the test server")
        throttle(req, ctx)
        offset, shape = parse_subvolume(parts[5], parts[6])
        nbytes = self.check_size(shape)
        if req.method == "GET":
            if len(parts) > 7 and parts[7] in ("jpeg", "jpg"):
                raise BadRequest("jpeg output is not supported by the test server")
            data = self.grid.read(ctx.ancestry, 0, offset, shape)
            return Response(200, data.tobytes(), OCTET)
        if keyword == "isotropic":
            raise BadRequest("can only POST 'raw' not 'isotropic' images")
        if len(req.body) != nbytes:
            raise BadRequest(
                f"voxels data was {len(req.body)} bytes, expected {nbytes} bytes for "
                f"subvolume {go_point(offset[::-1])} size {go_point(shape[::-1])}"
            )
        self.store_voxels(ctx, offset, np.frombuffer(req.body, self.dtype).reshape(shape))
        ctx.repo.new_mutation_id()
        return Response()
