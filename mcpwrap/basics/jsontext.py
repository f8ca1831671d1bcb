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
import re
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
    return _decode(line) if len(line) < PLAIN_MIN else decode_plain(line)[0]


def decode_plain(line: bytes) -> tuple[Any, bool]:
    """One message, as decode(), and whether it is known to be plain: printable ASCII
    without a backslash, so that none of its strings holds a control, an escape or a
    character beyond ASCII (nothing a cleaner would remove). Lines under PLAIN_MIN bytes
    are not looked at: False.

    A large plain message is decoded without scanning its long strings twice: a plain
    line cannot hide a quote inside a string, so its quotes pair up in order; each long
    string between a pair is valid as it stands (no control, no escape, ASCII), and the
    rest, with those strings left out, is parsed as JSON. That is the same verdict and
    the same value as parsing the whole line, at a fraction of the cost for results that
    are one long text or base64 blob.
    """
    if (
        len(line) < PLAIN_MIN
        or b"\\" in line  # the cheap tests first: most text has escaped newlines
        or not line.isascii()
        or line.translate(None, _PLAIN_BYTES)
    ):
        return _decode(line), False  # not plain, or too small to be worth knowing
    skeleton, spans = _skeleton(line)
    if not spans:
        return _decode(line), True
    msg = _decode(skeleton)
    view = memoryview(line)
    return _restore(msg, [str(view[a:b], "ascii") for a, b in spans]), True


# Printable ASCII but the backslash: translate() deleting these leaves a line's other bytes.
_PLAIN_BYTES = bytes(b for b in range(0x20, 0x7F) if b != 0x5C)
PLAIN_MIN = 64 * 1024  # below this, one json pass costs less than the detour
_LONG = 1024  # strings longer than this are left out of the skeleton
_COLON_NEXT = re.compile(rb" *:")
# A plain line's strings cannot hold U+0000 (it would need an escape): the escaped NUL and
# a number mark a left-out string.
_PLACEHOLDER = b'"\\u0000%d"'


def _skeleton(line: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """The plain `line` with each long string value replaced by a numbered placeholder,
    and the spans of the strings replaced. Keys are kept whatever their length (a
    placeholder must only ever stand for a value)."""
    parts: list[bytes] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    find = line.find
    while (start := find(b'"', pos)) >= 0:
        end = find(b'"', start + 1)
        if end < 0:
            break  # an unterminated string: the parser says so
        if end - start > _LONG and not _is_key(line, end + 1):
            parts.append(line[pos:start])
            parts.append(_PLACEHOLDER % len(spans))
            spans.append((start + 1, end))
            pos = end + 1
        else:
            parts.append(line[pos : end + 1])
            pos = end + 1
    parts.append(line[pos:])
    return b"".join(parts), spans


def _is_key(line: bytes, after: int) -> bool:
    """Whether the string that ends before `after` is followed by a colon: a key. Any
    number of spaces may come between (a plain line has no other whitespace): a window
    would let a key padded past it pass for a value, and be read as another key."""
    return _COLON_NEXT.match(line, after) is not None


def _restore(msg: Any, strings: list[str]) -> Any:
    """`msg` with each placeholder string replaced by the string it stands for."""
    if isinstance(msg, str):
        return strings[int(msg[1:])] if msg[:1] == "\x00" else msg
    stack = [msg] if isinstance(msg, (dict, list)) else []
    while stack:
        holder = stack.pop()
        pairs = holder.items() if isinstance(holder, dict) else enumerate(holder)
        for key, value in pairs:
            if isinstance(value, str):
                if value[:1] == "\x00":
                    holder[key] = strings[int(value[1:])]
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return msg


def _decode(line: bytes) -> Any:
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
