"""A small filter language for the neuron and synapse tables.

``n_post > 10 type=KC status != done`` keeps rows matching every term. A term is either
``column op value`` (ops ``= == != < <= > >= ~``; ``~`` is "contains", case-insensitive)
or a bare word, which matches rows whose text columns contain it (or whose id equals it).
Values may be quoted: ``name ~ "mushroom body"``. The same parsed filter becomes a SQL
clause (neurons, millions of rows) or a pandas mask (a neuron's synapses).
"""

from __future__ import annotations

import operator
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, Table, and_, false, or_, true

from napari_connecto.annotations.ids import to_db_one

__all__ = ["FilterError", "Term", "parse_filter", "to_mask", "to_sql"]

_OPS = ("==", "!=", "<=", ">=", "=", "<", ">", "~")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPEN_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(==|!=|<=|>=|=|<|>|~)")
_TERM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<=|>=|=|<|>|~)\s*(.*)$", re.S)
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class FilterError(ValueError):
    """A filter text that does not parse, naming the term at fault."""


@dataclass(frozen=True, slots=True)
class Term:
    """One condition: ``column op value``, or free text when ``column`` is ``None``."""

    column: str | None
    """Column name, or ``None`` for a free-text term."""
    op: str
    """One of ``= != < <= > >= ~`` (free text: ``~``)."""
    value: str | float | int
    """Number for numeric columns, text otherwise."""


def _tokens(text: str) -> list[str]:
    """Split on spaces but keep ``a > 3``, ``a> 3``, ``a >3`` and ``a>3`` as one term."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise FilterError(f"cannot parse filter {text!r}: {exc}") from None
    terms: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        following = words[i + 1] if i + 1 < len(words) else ""
        if word.lower() == "and":
            i += 1
        elif _IDENT.fullmatch(word) and following.startswith(_OPS):
            op = next(o for o in _OPS if following.startswith(o))
            if following != op:  # a >3
                terms.append(word + following)
                i += 2
            elif i + 2 < len(words):  # a > 3
                terms.append(word + op + words[i + 2])
                i += 3
            else:
                raise FilterError(f"{word} {op} needs a value")
        elif _OPEN_TERM.fullmatch(word) and following:  # a> 3
            terms.append(word + following)
            i += 2
        else:
            terms.append(word)
            i += 1
    return terms


def parse_filter(text: str, columns: Mapping[str, str]) -> list[Term]:
    """Parse ``text`` against ``columns`` (name -> ``"id"``, ``"number"`` or ``"text"``).

    Parameters
    ----------
    text : str
        The filter, e.g. ``"n_post > 10 KC"``.
    columns : mapping
        The filterable columns and their kinds.

    Returns
    -------
    list of Term
        All must hold.

    Raises
    ------
    FilterError
        Unknown column, a number expected and not given, or unbalanced quotes.
    """
    terms = []
    for token in _tokens(text.strip()):
        match = _TERM.match(token)
        if match is None:
            terms.append(Term(None, "~", token))
            continue
        if match.group(1) not in columns:
            raise FilterError(f"unknown column {match.group(1)!r}; filter on {', '.join(columns)}")
        name, op, value = match.group(1), match.group(2), match.group(3).strip()
        if not value:
            raise FilterError(f"{name} {op} needs a value")
        kind = columns[name]
        if kind in ("id", "number"):
            if op == "~":
                raise FilterError(f"{name} is a number: use = != < <= > >=")
            terms.append(Term(name, op, _number(name, value, kind)))
        else:
            terms.append(Term(name, op, value))
    return terms


def _number(name: str, value: str, kind: str) -> int | float:
    try:
        if kind == "id":
            number = int(value)
            to_db_one(number)
            return number
        return float(value)
    except ValueError:
        raise FilterError(f"{name} needs a number, got {value!r}") from None


def to_sql(terms: Sequence[Term], table: Table, columns: Mapping[str, str]) -> ColumnElement[bool]:
    """The SQL clause of ``terms`` on ``table`` (ids compared in their stored int64 form).

    Parameters
    ----------
    terms : sequence of Term
        From :func:`parse_filter`.
    table : sqlalchemy.Table
        The table holding ``columns``.
    columns : mapping
        As given to :func:`parse_filter`.

    Returns
    -------
    sqlalchemy.ColumnElement
        A boolean clause (``true()`` for no terms).
    """
    clauses = []
    text_columns = [table.c[n] for n, kind in columns.items() if kind == "text"]
    id_columns = [table.c[n] for n, kind in columns.items() if kind == "id"]
    for term in terms:
        if term.column is None:
            word = str(term.value)
            options = [c.ilike(f"%{_escape(word)}%", escape="\\") for c in text_columns]
            if word.isdigit() and int(word) < 2**64:
                options += [c == to_db_one(int(word)) for c in id_columns]
            clauses.append(or_(*options) if options else false())
            continue
        column = table.c[term.column]
        kind = columns[term.column]
        if term.op == "~":
            clauses.append(column.ilike(f"%{_escape(str(term.value))}%", escape="\\"))
            continue
        value: Any = to_db_one(int(term.value)) if kind == "id" else term.value
        if kind == "id" and term.op not in ("=", "==", "!="):
            value = min(int(term.value), 2**63 - 1)  # exact for every id below 2**63
        clauses.append(_COMPARE[term.op](column, value))
    return and_(*clauses) if clauses else true()


def _escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def to_mask(terms: Sequence[Term], frame: pd.DataFrame, columns: Mapping[str, str]) -> np.ndarray:
    """The rows of ``frame`` matching every term, as a boolean array.

    Parameters
    ----------
    terms : sequence of Term
        From :func:`parse_filter`.
    frame : pandas.DataFrame
        Holds ``columns``.
    columns : mapping
        As given to :func:`parse_filter`.

    Returns
    -------
    numpy.ndarray
        One bool per row.
    """
    mask = np.ones(len(frame), dtype=bool)
    for term in terms:
        if term.column is None:
            word = str(term.value).lower()
            hit = np.zeros(len(frame), dtype=bool)
            for name, kind in columns.items():
                if kind == "text":
                    hit |= (
                        frame[name]
                        .astype(str)
                        .str.lower()
                        .str.contains(word, regex=False)
                        .to_numpy()
                    )
                elif kind == "id" and word.isdigit():
                    hit |= frame[name].astype(str).to_numpy() == word
            mask &= hit
        elif term.op == "~":
            text = frame[term.column].astype(str).str.lower()
            mask &= text.str.contains(str(term.value).lower(), regex=False).to_numpy()
        elif columns[term.column] == "text":
            mask &= _COMPARE[term.op](frame[term.column].astype(str), str(term.value)).to_numpy()
        else:
            values = frame[term.column]
            if columns[term.column] == "id":
                values = values.astype(object).map(int)
                mask &= np.asarray(_COMPARE[term.op](values, int(term.value)), dtype=bool)
            else:
                mask &= np.asarray(_COMPARE[term.op](values.astype(float), float(term.value)), bool)
    return mask
