"""jsontext: reading never raises anything but ValueError, writing never raises."""

from __future__ import annotations

import json
import math

import pytest

from mcpwrap.basics import jsontext


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
        (b'{"n":NaN}', "NaN is not a JSON value"),
        (b'{"n":-Infinity}', "-Infinity is not a JSON value"),
        (b'{"a":"\xff"}', "utf-8"),
        (b"{", "Expecting"),
    ],
)
def test_what_cannot_be_read_is_a_value_error_that_says_why(line: bytes, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        jsontext.decode(line)


def test_an_integer_too_long_for_int_is_read_and_others_stay_ints() -> None:
    msg = jsontext.decode(b'{"id":7,"n":' + b"9" * 5000 + b',"m":-3}')
    assert msg["id"] == 7 and isinstance(msg["id"], int) and msg["m"] == -3
    assert msg["n"] == math.inf


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ({"a": "\ud800"}, '{"a":"\\ud800"}'),
        ({"a": math.inf, "b": [math.nan], "c": 1}, '{"a":null,"b":[null],"c":1}'),
        ({"a": 10**5000}, None),
        ({"a": "é"}, '{"a":"é"}'),
    ],
)
def test_writing_never_raises(value: object, written: str | None) -> None:
    out = jsontext.encode(value)
    assert json.loads(out) is not None
    if written is not None:
        assert out.decode() == written


def test_safe_names_what_json_cannot_hold_without_recursion() -> None:
    deep: list[object] = [math.inf]
    for _ in range(50_000):
        deep = [deep]
    fixed = jsontext.safe(deep)
    for _ in range(50_000):
        fixed = fixed[0]
    assert fixed == ["[number JSON cannot hold: inf]"]
