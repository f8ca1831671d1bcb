"""Parsers for the units a profile writes: durations, sizes and rates.

Pure functions. Each raises ValueError whose message names the bad text and the accepted
forms; the profile loader puts the file, line and key in front of it. Range checks (zero,
negative, maximums) belong to the caller, which knows what the value is for; a rate's are
here, as every rate feeds the same token bucket.
"""

from __future__ import annotations

import json
import math
import re

DURATION_FORMS = 'a duration like "500ms", "10s", "5m", "1h", "1d" or a number of seconds'
SIZE_FORMS = 'a size like "64B", "512KiB", "256MiB", "1GiB", "1GB" or a number of bytes'
RATE_FORMS = 'a rate like "10/s", "120/min", "1000/hour" or "5/day"'
# More calls per period than the relay can pass (tens of thousands a second) limit nothing,
# and a bucket this size still counts single tokens exactly in a float.
MAX_RATE_COUNT = 1_000_000

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"\s*({_NUMBER})\s*([a-z]*)\s*", re.ASCII)
_SIZE = re.compile(rf"\s*({_NUMBER})\s*([a-z]*)\s*", re.ASCII | re.IGNORECASE)
_RATE = re.compile(r"\s*(\d+)\s*/\s*([a-z]+)\s*", re.ASCII)

_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0}
_DURATION_UNITS |= {"h": 3600.0, "d": 86400.0}
# Sizes: SI prefixes are powers of 1000, binary (Ki, Mi...) powers of 1024; a bare "1K" or
# "1G" is refused because people mean either.
_SIZE_UNITS = {"": 1, "b": 1}
_SIZE_UNITS |= {f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")}
_SIZE_UNITS |= {f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgt")}
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0}
_RATE_UNITS |= {"h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}


class Rate:
    """`count` events per `per_seconds` seconds (a token bucket of capacity `count`).

    A frozen value; not a NamedTuple because `count` would shadow tuple.count.
    """

    __slots__ = ("count", "per_seconds")
    count: int
    per_seconds: float

    def __init__(self, count: int, per_seconds: float) -> None:
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "per_seconds", per_seconds)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Rate is frozen: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rate) and (self.count, self.per_seconds) == (
            other.count,
            other.per_seconds,
        )

    def __hash__(self) -> int:
        return hash((self.count, self.per_seconds))

    def __repr__(self) -> str:
        return f"Rate(count={self.count}, per_seconds={self.per_seconds})"


def parse_duration(text: str | int | float) -> float:
    """Seconds in "500ms", "10s", "5m", "1h", "1d" or a bare number (seconds)."""
    if isinstance(text, bool):
        raise _bad(DURATION_FORMS, text)
    if isinstance(text, int | float):
        return _finite(_float(text), DURATION_FORMS, text)
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or match[2] not in _DURATION_UNITS:
        raise _bad(DURATION_FORMS, text)
    return _finite(float(match[1]) * _DURATION_UNITS[match[2]], DURATION_FORMS, text)


def parse_size(text: str | int) -> int:
    """Bytes in "64B", "1kB", "512KiB", "1MB", "256MiB", "1GB", "1GiB" or a bare integer."""
    if isinstance(text, bool):
        raise _bad(SIZE_FORMS, text)
    if isinstance(text, int):
        return text
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if match is None or match[2].lower() not in _SIZE_UNITS:
        raise _bad(SIZE_FORMS, text)
    unit = _SIZE_UNITS[match[2].lower()]
    if match[1].isdigit():  # "64MiB", run's default: no Fraction (~3 ms to import)
        return int(match[1]) * unit
    from fractions import Fraction  # exact "1.5GiB"; imported here: it is slow to load

    size = Fraction(match[1]) * unit
    if size.denominator != 1:
        raise ValueError(f"{_show(text)} is not a whole number of bytes")
    return int(size)


def parse_rate(text: str) -> Rate:
    """A Rate from "COUNT/UNIT": UNIT s, sec, second, min, minute, h, hour, d or day;
    COUNT from 1 to MAX_RATE_COUNT (0 would divide by zero in the bucket)."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or match[2] not in _RATE_UNITS:
        raise _bad(RATE_FORMS, text)
    digits = match[1].lstrip("0") or "0"
    count = int(digits) if len(digits) <= len(str(MAX_RATE_COUNT)) else MAX_RATE_COUNT + 1
    if not 1 <= count <= MAX_RATE_COUNT:
        raise ValueError(
            f"expected a rate of 1 to {MAX_RATE_COUNT:,} calls per period, got {_show(text)}"
        )
    return Rate(count, _RATE_UNITS[match[2]])


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float, as TOML allows
        return math.inf


def _finite(value: float, forms: str, text: object) -> float:
    if not math.isfinite(value):
        raise _bad(forms, text)
    return value


def _bad(forms: str, text: object) -> ValueError:
    return ValueError(f"expected {forms}, got {_show(text)}")


def _show(text: object) -> str:
    shown = json.dumps(text, ensure_ascii=False) if isinstance(text, str) else repr(text)
    return shown if len(shown) <= 80 else shown[:76] + ('..."' if isinstance(text, str) else "...")
