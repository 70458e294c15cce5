"""Columns of the annotation tables, and how their cells and headers are shown.

Ids are uint64 and may exceed 2**63: they are shown as text (``str(int(v))``) and handed
out as Python ints, never through float or a Qt integer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import Qt

__all__ = [
    "ALIGN",
    "DISPLAY",
    "EDIT",
    "TOOLTIP",
    "Column",
    "alignment",
    "format_value",
    "header_data",
]

DISPLAY = Qt.ItemDataRole.DisplayRole
EDIT = Qt.ItemDataRole.EditRole
TOOLTIP = Qt.ItemDataRole.ToolTipRole
ALIGN = Qt.ItemDataRole.TextAlignmentRole
_NUMBER_KINDS = frozenset({"id", "int", "float"})


def _flag_value(flag: Any) -> int:
    """A Qt enum or flag as an int, on PyQt5 (int subclasses) and PyQt6 (Python enums)."""
    return int(getattr(flag, "value", flag))


_RIGHT = _flag_value(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_LEFT = _flag_value(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table: which frame column it shows and how."""

    key: str
    """Column of the DataFrame (or of the store's neuron frame)."""
    title: str
    """Header text."""
    kind: str = "text"
    """``"id"`` (uint64, shown exactly), ``"int"``, ``"float"`` or ``"text"``."""
    decimals: int = 0
    """Digits after the point for ``"float"`` columns."""
    editable: bool = False
    """Whether the cell may be edited in place (text columns only)."""
    tooltip: str = ""
    """Header tooltip."""
    sortable: bool = True
    """Whether clicking the header sorts by it (extra columns of a neuron table do not)."""


def format_value(value: Any, column: Column) -> str:
    """The text a cell shows: ids exact, floats rounded, missing values empty.

    Parameters
    ----------
    value : object
        The cell's value from the frame.
    column : Column
        How to show it.

    Returns
    -------
    str
        The display text.
    """
    if value is None:
        return ""
    if column.kind in _NUMBER_KINDS:
        if isinstance(value, float | np.floating) and not np.isfinite(value):
            return ""
        if column.kind == "float":
            return f"{float(value):.{column.decimals}f}"
        return str(int(value))
    return "" if isinstance(value, float) and np.isnan(value) else str(value)


def header_data(columns: Sequence[Column], section: int, orientation: Any, role: int) -> Any:
    """Header text and tooltips for both model kinds."""
    if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(columns):
        return None
    column = columns[section]
    if role == DISPLAY:
        return column.title
    if role == TOOLTIP:
        return column.tooltip or None
    return None


def alignment(column: Column) -> int:
    """Numbers right-aligned, text left-aligned (vertically centred)."""
    return _RIGHT if column.kind in _NUMBER_KINDS else _LEFT
