"""Check and read Neuroglancer states: :func:`validate_state`, :func:`load_ng_state`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from napari_connecto.errors import MetadataError

__all__ = ["NgStateError", "load_ng_state", "validate_state"]

_UINT64_MAX = 2**64 - 1
_WHERE = "neuroglancer state"


class NgStateError(MetadataError):
    """A Neuroglancer state that is malformed, naming the field at fault."""

    def __init__(self, field: str, problem: str, path: str = _WHERE) -> None:
        super().__init__(path, field, problem)


# -- validation --------------------------------------------------------------------------
def number_field(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise NgStateError(name, f"expected a finite number, got {value!r:.100}")
    if positive and value <= 0:
        raise NgStateError(name, f"expected a positive number, got {value!r}")
    return float(value)


def segment_id(value: Any, name: str) -> tuple[int, bool]:
    """(id, hidden) of a ``segments`` entry: a uint64 as string or integer, ``"!id"`` hidden."""
    hidden = False
    if isinstance(value, str):
        text = value.strip()
        hidden = text.startswith("!")
        text = text.lstrip("!")
        if not text.isdigit():
            raise NgStateError(name, f"expected a uint64 segment id, got {value!r:.100}")
        number = int(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise NgStateError(name, f"expected a uint64 segment id, got {value!r:.100}")
    if not 0 <= number <= _UINT64_MAX:
        raise NgStateError(name, f"segment id {number} is not a uint64")
    return number, hidden


def dimensions_of(state: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    dims = state.get("dimensions")
    if not isinstance(dims, dict) or not dims:
        raise NgStateError(
            "dimensions", f"expected an object of name: [scale, unit], got {dims!r:.100}"
        )
    out = {}
    for name, value in dims.items():
        where = f"dimensions.{name}"
        if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str):
            raise NgStateError(where, f"expected [scale, unit], got {value!r:.100}")
        out[name] = (number_field(value[0], where, positive=True), value[1])
    return out


def layer_source_urls(layer: Mapping[str, Any], where: str) -> list[str]:
    """The data-source URLs of a layer: a string, ``{"url": ...}`` or a list of those."""
    source = layer.get("source")
    items = source if isinstance(source, list) else [source]
    urls = []
    for i, item in enumerate(items):
        url = item.get("url") if isinstance(item, dict) else item
        if not isinstance(url, str) or not url:
            raise NgStateError(f"{where}.source[{i}]", f"expected a URL string, got {item!r:.100}")
        urls.append(url)
    return urls


def _validate_layer(layer: Any, where: str) -> None:
    if not isinstance(layer, dict):
        raise NgStateError(where, f"expected an object, got {layer!r:.100}")
    if not isinstance(layer.get("name"), str) or not layer["name"]:
        raise NgStateError(f"{where}.name", "missing or not a string")
    if not isinstance(layer.get("type"), str):
        raise NgStateError(f"{where}.type", "missing or not a string")
    if layer["type"] != "annotation" or "source" in layer:
        layer_source_urls(layer, where)
    segments = layer.get("segments", [])
    if not isinstance(segments, list):
        raise NgStateError(f"{where}.segments", "expected a list")
    for i, seg in enumerate(segments):
        segment_id(seg, f"{where}.segments[{i}]")
    if "visible" in layer and not isinstance(layer["visible"], bool):
        raise NgStateError(f"{where}.visible", "expected true or false")


def validate_state(state: Any) -> None:
    """Check a Neuroglancer state's structure; raise :class:`NgStateError` naming the field.

    Checks ``dimensions`` (``{name: [scale > 0, unit]}``), ``position`` (numbers, one per
    dimension), ``crossSectionScale``/``projectionScale`` (positive), ``layers`` (objects
    with ``type``, ``name``, a ``source`` URL, ``segments`` of uint64 ids).

    Raises
    ------
    NgStateError
        On the first problem found.
    """
    if not isinstance(state, dict):
        raise NgStateError("", f"expected a JSON object, got {type(state).__name__}")
    dims = dimensions_of(state)
    if "position" in state:
        position = state["position"]
        if not isinstance(position, list) or len(position) != len(dims):
            raise NgStateError("position", f"expected {len(dims)} numbers (one per dimension)")
        for i, value in enumerate(position):
            number_field(value, f"position[{i}]")
    for key in ("crossSectionScale", "projectionScale"):
        if key in state:
            number_field(state[key], key, positive=True)
    layers = state.get("layers", [])
    if not isinstance(layers, list):
        raise NgStateError("layers", "expected a list of layers")
    for i, layer in enumerate(layers):
        _validate_layer(layer, f"layers[{i}]")


def load_ng_state(text: str | os.PathLike[str]) -> dict[str, Any]:
    """The state in a JSON file, a JSON string, or a URL with ``#!`` (url-encoded JSON).

    Raises
    ------
    NgStateError
        If the text is not JSON, or the URL has no ``#!`` state.
    SourceNotFoundError
        If a path was given that does not exist.
    """
    raw = os.fspath(text)
    stripped = raw.strip()
    where = _WHERE
    if "#!" in stripped and not stripped.startswith("{"):
        stripped = unquote(stripped.split("#!", 1)[1])
        if not stripped.startswith("{"):
            raise NgStateError("", "the URL names a remote state file (#!gs://...), not a state")
    elif not stripped.startswith("{"):
        path = Path(stripped).expanduser()
        try:
            stripped = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            from napari_connecto.errors import SourceNotFoundError

            raise SourceNotFoundError(raw) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise NgStateError("", f"cannot read: {exc}", path=str(path)) from None
        where = str(path)
    try:
        state = json.loads(stripped)
    except ValueError as exc:
        raise NgStateError("", f"not valid JSON: {exc}", path=where) from None
    if not isinstance(state, dict):
        raise NgStateError("", "expected a JSON object", path=where)
    return state
