"""JSON in and out for messages from peers that may be hostile.

Python's json module accepts what JSON does not (NaN, Infinity), fails on what it does
(an integer of over 4,300 digits), raises RecursionError rather than ValueError on deep
nesting, and produces what cannot be written back (infinite floats from `1e400`, lone
surrogates from `"\\ud800"`). Here every failure to read is a ValueError that says why,
and writing never fails: the fast path is tried first, the careful one only after it
raised, so ordinary messages pay nothing.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _wide_int(text: str) -> int | float:
    """An integer, or one too long for int() read as a float (infinite when out of
    range), in time linear in its length, where int() would be quadratic."""
    return int(text) if len(text) < 4000 else float(text)


_DECODER = json.JSONDecoder(parse_constant=_not_json)
_WIDE_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_int=_wide_int)


def decode(line: bytes) -> Any:
    """One message. MCP is UTF-8: decoding here skips json.loads' encoding detection, a
    Python-level step on every message; bad UTF-8 is a ValueError like bad JSON."""
    text = line.decode("utf-8")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply (over about 1,000 levels)") from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    try:
        return _WIDE_DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply (over about 1,000 levels)") from None


def encode(msg: object) -> bytes:
    """A message as one line of UTF-8 JSON. Lone surrogates are written as \\u escapes;
    numbers JSON cannot hold (infinite, NaN) become null, as JavaScript's JSON does."""
    try:
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )
    except (ValueError, UnicodeEncodeError, RecursionError):
        return careful(msg).encode("ascii")


def careful(value: object) -> str:
    """ASCII JSON of anything decode() can return, whatever it holds."""
    try:
        return json.dumps(
            safe(value, number=lambda _: None),
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )
    except RecursionError:
        return json.dumps("[value nested too deeply to write]")


def safe(value: object, *, number: Any = None) -> Any:
    """`value` with every float JSON cannot hold replaced by number(f) (by default a
    string naming it) and every int too long to print by a string saying its size.
    Iterative: a deep value cannot exhaust the stack."""
    fix = number or (lambda f: f"[number JSON cannot hold: {f!r}]")
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        holder, key = stack.pop()
        item = holder[key]
        if isinstance(item, float) and not math.isfinite(item):
            holder[key] = fix(item)
        elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 14000:
            holder[key] = f"[integer of about {int(item.bit_length() * 0.30103)} digits]"
        elif isinstance(item, dict):
            copy = dict(item)
            holder[key] = copy
            stack.extend((copy, k) for k in copy)
        elif isinstance(item, list):
            copy_list = list(item)
            holder[key] = copy_list
            stack.extend((copy_list, i) for i in range(len(copy_list)))
    return root[0]
