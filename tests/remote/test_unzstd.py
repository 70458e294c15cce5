"""zstd chunks decoded by libzstd (GIL released) or numcodecs: the same bytes and errors."""

from __future__ import annotations

import numpy as np
import pytest
from numcodecs import zstd

from napari_connecto.remote import unzstd, zarr_chunks

DATA = (np.arange(64**3, dtype=np.uint32) * 2654435761 % 251).astype(np.uint8).tobytes()
FRAME = zstd.Zstd(level=3).encode(DATA)

needs_libzstd = pytest.mark.skipif(unzstd._library() is None, reason="no libzstd on this system")


@needs_libzstd
def test_a_frame_decodes_into_a_buffer_of_exactly_its_size():
    out = np.empty(len(DATA), np.uint8)
    assert unzstd.decompress_into(FRAME, out)
    assert out.tobytes() == DATA
    assert unzstd.decompress_into(memoryview(bytearray(FRAME)), out)


@needs_libzstd
@pytest.mark.parametrize(
    ("data", "size"),
    [(FRAME[:-10], len(DATA)), (FRAME, len(DATA) - 1), (FRAME, len(DATA) + 1), (b"junk", 10)],
    ids=["truncated", "too small a buffer", "too large a buffer", "not zstd"],
)
def test_wrong_frames_raise_value_error(data, size):
    with pytest.raises(ValueError):
        unzstd.decompress_into(data, np.empty(size, np.uint8))


@pytest.mark.parametrize("libzstd", [True, False], ids=["libzstd", "numcodecs"])
def test_chunk_decoding_is_the_same_with_either_decoder(monkeypatch, libzstd):
    if not libzstd:
        monkeypatch.setattr(unzstd, "_library", lambda: None)
    elif unzstd._library() is None:
        pytest.skip("no libzstd on this system")
    assert bytes(zarr_chunks._zstd(FRAME, len(DATA))) == DATA
    with pytest.raises(ValueError):
        zarr_chunks._zstd(FRAME[:-10], len(DATA))
    with pytest.raises(ValueError):
        zarr_chunks._zstd(FRAME, len(DATA) - 1)
