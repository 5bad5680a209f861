"""Range checks for config dataclasses: every value is checked when the config is built, so a bad setting fails
at once with its name and the allowed range, never as a traceback (or a crawl) deep inside a run."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_fields"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def _describe(lo, hi, lo_open, hi_open) -> str:
    left = "(" if lo_open or lo is None else "["
    right = ")" if hi_open or hi is None else "]"
    return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def _in_range(v, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    return not (hi is not None and (v > hi or (hi_open and v == hi)))


def check_fields(owner: str, obj: Any, rules: dict[str, tuple]) -> None:
    """``rules``: field -> (kind, lo, hi[, "open" flags]) with kind in ``int``, ``float``, ``pair`` (a range: two
    ordered numbers), ``two`` (a start -> end schedule: two numbers in any order), ``bool``, or ``opt-float`` /
    ``opt-int`` (None allowed). Flags: ``"lo-open"``, ``"hi-open"``.

    Raises ValueError (TypeError for a wrong type) naming ``owner.field``, the value and the allowed range."""
    for name, rule in rules.items():
        kind, lo, hi, *flags = rule
        lo_open, hi_open = "lo-open" in flags, "hi-open" in flags
        v = getattr(obj, name)
        where = f"{owner}: {name}"
        if kind.startswith("opt-"):
            if v is None:
                continue
            kind = kind[4:]
        if kind == "bool":
            if not isinstance(v, bool):
                raise TypeError(f"{where} must be true or false, got {v!r}.")
            continue
        values = [v]
        if kind in ("pair", "two"):
            if not isinstance(v, tuple | list) or len(v) != 2:
                raise ValueError(f"{where} needs two values ({'low, high' if kind == 'pair' else 'start, end'}), got "
                                 f"{v!r}.")  # fmt: skip
            values = list(v)
            if not all(_is_num(x) for x in values):
                raise TypeError(f"{where} must be two numbers, got {v!r}.")
            if kind == "pair" and values[0] > values[1]:
                raise ValueError(f"{where} must be ordered (low <= high), got {tuple(v)}.")
        elif kind == "int":
            if not _is_int(v):
                raise TypeError(f"{where} must be an integer, got {v!r}.")
        elif not _is_num(v):
            raise TypeError(f"{where} must be a number, got {v!r}.")
        for x in values:
            if kind != "int" and not math.isfinite(float(x)):
                raise ValueError(f"{where} must be finite, got {v!r}.")
            if not _in_range(x, lo, hi, lo_open, hi_open):
                raise ValueError(f"{where} must be in {_describe(lo, hi, lo_open, hi_open)}, got {v!r}.")
