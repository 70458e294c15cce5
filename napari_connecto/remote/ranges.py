"""HTTP Range requests: the header asked, and the checks every answer must pass."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from napari_connecto.errors import RemoteError, TruncatedBodyError

if TYPE_CHECKING:
    from napari_connecto.remote.transport import HttpResponse

__all__ = ["check_range", "range_header"]


def range_header(start: int, length: int | None) -> str:
    """The ``Range`` header of ``(start, length)`` (see :meth:`HttpClient.get`)."""
    if length is not None:
        return f"bytes={start}-{start + length - 1}"
    return f"bytes={start}" if start < 0 else f"bytes={start}-"


def check_range(
    shown: str, response: HttpResponse, byte_range: tuple[int, int | None]
) -> HttpResponse:
    """A Range answer must be 206 with exactly the bytes asked for.

    A server ignoring ``Range`` (``200``) may send the whole representation:
    the slice asked for is taken from it, if it is complete.

    Parameters
    ----------
    shown : str
        The URL as it may be shown (no query string).
    response : HttpResponse
        The answer.
    byte_range : (int, int or None)
        ``(start, length)`` as asked.

    Returns
    -------
    HttpResponse
        The answer, its body exactly the bytes asked for.

    Raises
    ------
    TruncatedBodyError
        If the answer has fewer bytes than asked for, or an open-ended one has
        an unverified length (worth retrying).
    RemoteError
        If the server does not support Range requests.
    """
    start, length = byte_range
    if response.status != 206:
        body = response.body
        whole = response.status == 200 and response.verified
        if whole and (length is None or len(body) >= start + length):
            end = None if length is None else start + length
            return replace(response, body=body[start:end] if start >= 0 else body[start:])
        raise RemoteError(shown, "the server does not support Range requests")
    expected = length if length is not None else (-start if start < 0 else None)
    if expected is not None and len(response.body) != expected:
        raise TruncatedBodyError(
            shown, f"range answer has {len(response.body)} bytes, expected {expected}"
        )
    if expected is None and not response.verified:
        raise TruncatedBodyError(shown, "open-ended range answer of unknown length")
    return response
