"""Typed config sections as dataclasses, checked field by field: the mechanism under ``layerdrop.schema``.

A field's annotation gives its type (an int is accepted for a float, a bool is not an int); ``rule`` gives
its constraints (bounds and choices, applied to each element of a list). ``check_section`` lists every
problem of a section's resolved values, each naming the key, the bad value and what is allowed; a
section rejects keys it does not list unless it sets ``open_keys``; nested sections recurse.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from dataclasses import field, fields, is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints


def rule(*, required: bool = False, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None, choices: Sequence | Callable[[], Sequence] | None = None) -> Any:
    """A schema field: ``required`` (absent is an error), bounds, ``choices`` (or a function giving them)."""
    meta = {"required": required, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    return field(default=None, metadata={k: v for k, v in meta.items() if v is not None})


_NAMES = {int: ("an int", "ints"), float: ("a float", "floats"), bool: ("a bool (true/false)", "bools"),
          str: ("a string", "strings"), dict: ("a mapping", "mappings"), type(None): ("null", "nulls")}


def _is_union(tp) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _matches(value, tp) -> bool:
    origin, args = get_origin(tp), get_args(tp)
    if _is_union(tp):
        return any(_matches(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if tp is dict or origin is dict or is_dataclass(tp):
        return isinstance(value, dict)
    if tp in (int, float) and isinstance(value, bool):  # True is an int to Python, not to a config
        return False
    if tp is float:
        return isinstance(value, (int, float))
    return isinstance(value, tp)


def _describe(tp, plural: bool = False) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if _is_union(tp):
        return " or ".join(_describe(a, plural) for a in args)
    if origin is list:
        return ("lists of " if plural else "a list of ") + _describe(args[0], plural=True)
    if is_dataclass(tp):
        return _NAMES[dict][plural]
    return _NAMES[tp][plural]


def _violation(value, meta: dict) -> str | None:
    """What a scalar breaks of a field's bounds and choices, or None."""
    choices = meta.get("choices")
    if choices is not None:
        allowed = tuple(choices() if callable(choices) else choices)
        return None if value in allowed else f"expected one of {', '.join(map(str, allowed))}"
    ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
    low_ok = (ge is None or value >= ge) and (gt is None or value > gt)
    high_ok = (le is None or value <= le) and (lt is None or value < lt)
    if low_ok and high_ok:
        return None
    low = f"[{ge}" if ge is not None else f"({gt}" if gt is not None else ""
    high = f"{le}]" if le is not None else f"{lt})" if lt is not None else ""
    if low and high:
        return f"must be in {low}, {high}"
    if low:
        return f"must be {'>=' if ge is not None else '>'} {low[1:]}"
    return f"must be {'<=' if le is not None else '<'} {high[:-1]}"


def _section(tp) -> type | None:
    """The schema dataclass a field holds (also inside ``X | None``), or None for a plain value."""
    candidates = get_args(tp) if _is_union(tp) else (tp,)
    return next((c for c in candidates if is_dataclass(c)), None)


def check_section(values: dict, schema: type, prefix: str = "") -> list[str]:
    """Errors of one section's resolved ``values`` against ``schema``; nested sections recurse."""
    errors, hints = [], get_type_hints(schema)
    allowed = [f.name for f in fields(schema)]
    if not getattr(schema, "open_keys", False):
        errors += [f"{prefix}{k}={v!r}: unknown key; allowed: {', '.join(allowed)}"
                   for k, v in values.items() if k not in allowed]
    for f in fields(schema):
        key, tp = prefix + f.name, hints[f.name]
        if f.name not in values:
            if f.metadata.get("required"):
                errors.append(f"{key}: missing; expected {_describe(tp)}")
            continue
        value = values[f.name]
        if not _matches(value, tp):
            errors.append(f"{key}={value!r}: expected {_describe(tp)}")
        elif (section := _section(tp)) is not None and isinstance(value, dict):
            errors += check_section(value, section, key + ".")
        else:
            items = enumerate(value) if isinstance(value, list) else [(None, value)]
            for i, v in items:
                problem = None if v is None else _violation(v, f.metadata)
                if problem:
                    errors.append(f"{key if i is None else f'{key}[{i}]'}={v!r}: {problem}")
    return errors
