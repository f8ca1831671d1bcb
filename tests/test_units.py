"""mcpwrap.basics.units: durations, sizes and rates as a profile writes them."""

from __future__ import annotations

import pytest

from mcpwrap.basics.units import Rate, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("10 s", 10.0),
        ("1.5s", 1.5),
        ("10sec", 10.0),
        ("5m", 300.0),
        ("5min", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("30", 30.0),
        (" 2s ", 2.0),
        (".5s", 0.5),
        (45, 45.0),
        (2.5, 2.5),
        # Range is the caller's check: these parse.
        ("0s", 0.0),
        ("-1s", -1.0),
        (-3, -3.0),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "soon", "10x", "10 parsecs", "1e3s", "s", "10s5", "5M", True, float("inf"), "1" * 400],
)
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match=r"expected a duration like .*500ms.*, got ") as info:
        parse_duration(text)  # type: ignore[arg-type]
    if isinstance(text, str) and text:
        assert text[:20] in str(info.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64B", 64),
        ("64", 64),
        ("1kB", 1000),
        ("1KB", 1000),
        ("512KiB", 512 * 1024),
        ("1MB", 10**6),
        ("256MiB", 256 * 2**20),
        ("256 MiB", 256 * 2**20),
        ("1GB", 10**9),
        ("1GiB", 2**30),
        ("1gib", 2**30),
        ("0.5GiB", 2**29),
        ("2TiB", 2 * 2**40),
        ("3TB", 3 * 10**12),
        (4096, 4096),
        ("0B", 0),
        (-1, -1),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "1K", "1G", "1 GiBs", "GiB", "1.5B", True, 1.5])
def test_parse_size_refuses(text: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)  # type: ignore[arg-type]
    message = str(info.value)
    assert "size like" in message or "whole number of bytes" in message
    if isinstance(text, str) and text:
        assert f'"{text}"' in message


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("120/min", Rate(120, 60.0)),
        ("5/minute", Rate(5, 60.0)),
        ("10/s", Rate(10, 1.0)),
        ("10/sec", Rate(10, 1.0)),
        ("10/second", Rate(10, 1.0)),
        ("1000/h", Rate(1000, 3600.0)),
        ("1000/hour", Rate(1000, 3600.0)),
        ("5/day", Rate(5, 86400.0)),
        ("5/d", Rate(5, 86400.0)),
        (" 3 / min ", Rate(3, 60.0)),
        ("1000000/s", Rate(1_000_000, 1.0)),
        ("0007/min", Rate(7, 60.0)),
    ],
)
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "120", "120/", "/min", "-1/min", "1.5/s", "10/week"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r'expected a rate like "10/s".*, got ') as info:
        parse_rate(text)
    assert f'"{text}"' in str(info.value)


@pytest.mark.parametrize("text", ["0/min", "000/s", "1000001/s", "9" * 5000 + "/s"])
def test_parse_rate_refuses_counts_no_bucket_can_hold(text: str) -> None:
    """0 divides by zero in the bucket (a token's --rate reached the relay that way); a
    count beyond any float (or past int()'s 4,300 digits) overflowed there."""
    with pytest.raises(ValueError, match=r"expected a rate of 1 to 1,000,000 calls per period"):
        parse_rate(text)


def test_a_huge_integer_duration_is_refused_not_an_overflow() -> None:
    """TOML integers have no size limit; float() of one past 1e308 raised OverflowError,
    which is not the ValueError the profile loader turns into a message."""
    with pytest.raises(ValueError, match=r"expected a duration like"):
        parse_duration(10**400)


def test_rate_is_frozen() -> None:
    rate = Rate(1, 1.0)
    with pytest.raises(AttributeError):
        rate.count = 2  # type: ignore[misc]
