"""The C compressed_segmentation decoder agrees with the numpy one, also on corrupt chunks.

Chunks are encoded by the ``compressed_segmentation`` package (the reference encoder);
every corrupt variant must be refused by both decoders alike (a ``ValueError``) or
decode to the same voxels: the C path is only taken after its offsets were checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_connecto.backends import _precomputed_codecs as codecs

compressed_segmentation = pytest.importorskip("compressed_segmentation")

BLOCK = (8, 8, 8)


def _encode(data: np.ndarray) -> bytes:
    """A z, y, x array as a precomputed chunk (x fastest)."""
    xyz = np.asfortranarray(data.transpose(2, 1, 0))
    return compressed_segmentation.compress(xyz, block_size=BLOCK, order="F")


def _numpy_decode(data: bytes, shape, dtype) -> np.ndarray:
    words = np.frombuffer(data, dtype="<u4")
    if len(words) < 1:
        raise ValueError("shorter than its channel header")
    out = np.empty((1, *shape), dtype=dtype)
    codecs._decode_channel(words, int(words[0]), out[0], BLOCK)
    return out


def _outcome(decode, data: bytes, shape, dtype):
    try:
        return decode(data, shape, dtype)
    except ValueError:
        return "refused"


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_both_decoders_give_the_encoded_voxels(dtype):
    assert codecs._native_decoder(np.dtype(dtype)) is not None  # the package ships it
    rng = np.random.default_rng(1)
    palette = np.array([0, 1, 7, 300, 2**31 + 5], dtype=np.uint64).astype(dtype)
    for shape in [(8, 8, 8), (10, 12, 20), (3, 17, 9), (16, 16, 16)]:
        data = rng.choice(palette[: rng.integers(1, len(palette) + 1)], size=shape)
        encoded = _encode(data)
        fast = codecs.decode_compressed_segmentation(encoded, shape, np.dtype(dtype), 1, BLOCK)
        np.testing.assert_array_equal(fast[0], data)
        np.testing.assert_array_equal(_numpy_decode(encoded, shape, np.dtype(dtype))[0], data)


def test_corrupt_chunks_are_refused_or_decoded_alike_by_both():
    rng = np.random.default_rng(2)
    dtype = np.dtype(np.uint64)
    shape = (10, 12, 20)
    data = rng.choice(np.array([1, 2, 3, 2**62 + 9], np.uint64), size=shape)
    encoded = bytearray(_encode(data))
    refused = 0
    for trial in range(400):
        variant = bytearray(encoded)
        if trial % 3 == 0:  # truncated
            variant = variant[: 4 * int(rng.integers(1, len(variant) // 4))]
        elif trial % 3 == 1:  # a flipped bit
            bit = int(rng.integers(0, 8 * len(variant)))
            variant[bit // 8] ^= 1 << (bit % 8)
        else:  # a forged word
            at = int(rng.integers(0, len(variant) // 4))
            variant[4 * at : 4 * at + 4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
        fast = _outcome(
            lambda d, s, t: codecs.decode_compressed_segmentation(d, s, t, 1, BLOCK),
            bytes(variant),
            shape,
            dtype,
        )
        slow = _outcome(_numpy_decode, bytes(variant), shape, dtype)
        if isinstance(slow, str):
            assert fast == "refused", trial
            refused += 1
        else:
            np.testing.assert_array_equal(fast, slow)
    assert refused > 100  # the corruptions were real
