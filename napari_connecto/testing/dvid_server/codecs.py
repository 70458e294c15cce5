"""Wire encodings of the DVID test server: LZ4 blocks, gzip, PNG, RLE sparse volumes."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterable, Sequence

import lz4.block
import numpy as np

from napari_connecto.testing.dvid_server.protocol import BadRequest

__all__ = [
    "compress",
    "decompress",
    "downres_labels",
    "encode_rles",
    "png",
    "rle_runs",
]


def compress(data: bytes, compression: str) -> bytes:
    """Encode ``data`` as DVID's ``compression=`` option asks (``""``, ``lz4``, ``gzip``)."""
    if compression == "":
        return data
    if compression == "lz4":
        return lz4.block.compress(data, store_size=False)
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    raise BadRequest(f"unknown compression type {compression!r}")


def decompress(data: bytes, compression: str, expected: int) -> bytes:
    """Decode a POSTed body; never inflates past ``expected`` bytes (no bombs)."""
    if compression == "":
        return data
    if compression == "lz4":
        if not data:
            raise BadRequest("received 0 LZ4 compressed bytes")
        try:
            return lz4.block.decompress(data, uncompressed_size=expected)
        except lz4.block.LZ4BlockError as exc:
            raise BadRequest(f"bad lz4 data: {exc}") from exc
    if compression == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            out = inflater.decompress(data, expected + 1)
        except zlib.error as exc:
            raise BadRequest(f"gzip: invalid data: {exc}") from exc
        return out
    raise BadRequest(f"unknown compression type {compression!r}")


def png(image: np.ndarray) -> bytes:
    """A grayscale PNG (8- or 16-bit) of a 2-D array, rows top to bottom."""
    image = np.ascontiguousarray(image)
    depth = {1: 8, 2: 16}.get(image.dtype.itemsize)
    if depth is None or image.ndim != 2:
        raise BadRequest(f"cannot make a PNG of {image.dtype} data")
    rows = image.astype(f">u{image.dtype.itemsize}")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", image.shape[1], image.shape[0], depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def rle_runs(mask: np.ndarray, origin_xyz: Sequence[int]) -> np.ndarray:
    """Runs along x of a z, y, x boolean mask: an ``(n, 4)`` int32 array of x, y, z, length."""
    padded = np.zeros((mask.shape[0], mask.shape[1], mask.shape[2] + 2), np.int8)
    padded[:, :, 1:-1] = mask
    edges = np.diff(padded, axis=2)
    sz, sy, sx = np.nonzero(edges == 1)
    _, _, ex = np.nonzero(edges == -1)
    runs = np.empty((len(sx), 4), np.int32)
    runs[:, 0] = sx + origin_xyz[0]
    runs[:, 1] = sy + origin_xyz[1]
    runs[:, 2] = sz + origin_xyz[2]
    runs[:, 3] = ex - sx
    return runs


def encode_rles(runs: Iterable[np.ndarray]) -> bytes:
    """DVID's legacy ``rles`` sparse volume: 12-byte header then int32 x, y, z, length spans."""
    spans = [r for r in runs if len(r)]
    body = np.concatenate(spans).astype("<i4") if spans else np.zeros((0, 4), "<i4")
    header = struct.pack("<BBBBII", 0, 3, 0, 0, 0, len(body))
    return header + body.tobytes()


def downres_labels(hires: np.ndarray) -> np.ndarray:
    """2x down-sampling of labels: the most frequent non-zero label, ties to the smaller.

    This is DVID's ``labels.DownresLabels`` rule (all-zero octants give 0).
    """
    z, y, x = (s // 2 for s in hires.shape)
    octs = (
        hires[: 2 * z, : 2 * y, : 2 * x]
        .reshape(z, 2, y, 2, x, 2)
        .transpose(0, 2, 4, 1, 3, 5)
        .reshape(-1, 8)
    )
    winner = octs[:, 0].copy()
    mixed = np.nonzero((octs != octs[:, :1]).any(axis=1))[0]
    if len(mixed):
        rows = octs[mixed]
        votes = (rows[:, :, None] == rows[:, None, :]).sum(axis=2)
        votes[rows == 0] = 0
        best = votes.max(axis=1, keepdims=True)
        candidates = np.where((votes == best) & (best > 0), rows, np.iinfo(np.uint64).max)
        chosen = candidates.min(axis=1)
        chosen[best[:, 0] == 0] = 0
        winner[mixed] = chosen
    return winner.astype(hires.dtype).reshape(z, y, x)
