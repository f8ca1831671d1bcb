"""jsontext: reading never raises anything but ValueError, writing never raises."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# --- the plain path for large lines ------------------------------------------------------

LONG = "x" * 70_000  # over PLAIN_MIN once in a line, and over the long-string cutoff
B64 = "QUJD" * 20_000  # base64: the common large plain string (image and blob results)


def _line(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


PLAIN_VALUES = [
    {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": LONG}]}},
    {"id": "s", "result": {"content": [{"type": "image", "data": B64, "mimeType": "a/b"}]}},
    {"a": [LONG, B64, "short", LONG], "b": {"c": LONG}, "n": [1, 2.5, True, None]},
    {LONG: "a long key is kept as it is", "k": LONG},
    [LONG, {"x": LONG}],
    LONG,
    {"s": " " * 70_000, "t": "x" * 1025, "u": "y" * 1024},  # at and either side of the cutoff
]


def test_a_long_key_padded_far_from_its_colon_is_still_a_key() -> None:
    """Spaces between a long key and its colon, however many: the key must be read as
    the full parse reads it, never as a placeholder standing for a value."""
    line = b'{"' + b"k" * 2000 + b'"' + b" " * 5000 + b': "' + b"v" * 70_000 + b'"}'
    msg, plain = jsontext.decode_plain(line)
    assert plain and msg == json.loads(line) and list(msg) == ["k" * 2000]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=range(len(PLAIN_VALUES)))
def test_a_large_plain_line_reads_as_json_reads_it(value: object) -> None:
    for line in (_line(value), json.dumps(value).encode()):  # compact, and with spaces
        msg, plain = jsontext.decode_plain(line)
        assert plain and msg == json.loads(line) and jsontext.decode(line) == msg


# Each is a large line whose fault is outside the long strings, or is the long string:
# the plain path must fail as the full parse does, never accept more.
BAD_PLAIN = [
    b'{"a":"' + b"x" * 70_000 + b'"',  # unclosed object
    b'{"a":"' + b"x" * 70_000,  # unclosed string
    b'{"a":"' + b"x" * 70_000 + b'" "b":1}',  # no comma
    b'{"a":"' + b"x" * 70_000 + b'","b":NaN}',  # not JSON
    b'{"a":"' + b"x" * 70_000 + b'"}}',  # trailing
    b'{"a":' + b"x" * 70_000 + b"}",  # a bare word, no quotes
    b'{"a" "' + b"x" * 70_000 + b'"}',  # a long string where a colon belongs
    b'["' + b"x" * 70_000 + b'":1]',  # a key in an array
]


@pytest.mark.parametrize("line", BAD_PLAIN, ids=range(len(BAD_PLAIN)))
def test_a_large_plain_line_json_refuses_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        jsontext._decode(line)  # the full parse
    with pytest.raises(ValueError):
        jsontext.decode_plain(line)


# What makes a line not plain: each would need a cleaner, or a full parse, to read right.
NOT_PLAIN = [
    "\u001b[31m",  # an escape sequence: a control, written as \u001b
    "line\nbreak",  # an escaped newline
    'a "quoted" word',  # escaped quotes
    "caf\u00e9",  # beyond ASCII
    "\u200b",  # zero width
    "\u202e",  # bidi override
    "\x7f",  # DEL
]


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_a_line_with_anything_a_cleaner_removes_or_escapes_is_not_plain(text: str) -> None:
    value = {"result": {"content": [{"type": "text", "text": LONG + text}]}}
    for ascii_only in (True, False):
        line = json.dumps(value, ensure_ascii=ascii_only).encode()
        msg, plain = jsontext.decode_plain(line)
        assert not plain and msg == value


def test_raw_bytes_json_forbids_are_refused_not_made_plain() -> None:
    for raw in (b"\x1b", b"\x00", b"\x7f"):
        line = b'{"a":"' + b"x" * 70_000 + raw + b'"}'
        if raw == b"\x7f":  # DEL is valid JSON: read in full, and not plain
            assert jsontext.decode_plain(line) == ({"a": "x" * 70_000 + "\x7f"}, False)
        else:
            with pytest.raises(ValueError):
                jsontext.decode_plain(line)


def test_small_lines_are_not_looked_at() -> None:
    assert jsontext.decode_plain(b'{"a":"b"}') == ({"a": "b"}, False)


_PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _PRINTABLE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_PRINTABLE, inner, max_size=4),
    max_leaves=12,
)


@given(value=_JSON, cut=st.integers(0, 400), junk=st.sampled_from(list(b'{}[]",: x1"')))
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_plain_path_agrees_with_the_full_parse_on_any_line(
    value: object, cut: int, junk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small cutoffs so that every line takes the plain path where it can: a valid line
    reads the same, and a line with one byte changed fails exactly when the full parse
    fails, and otherwise reads the same."""
    monkeypatch.setattr(jsontext, "PLAIN_MIN", 1)
    monkeypatch.setattr(jsontext, "_LONG", 3)
    line = _line(value)
    mutated = line[:cut] + bytes([junk]) + line[cut + 1 :]
    for candidate in (line, mutated):
        try:
            expected = jsontext._decode(candidate)
        except ValueError:
            with pytest.raises(ValueError):
                jsontext.decode_plain(candidate)
            continue
        assert jsontext.decode_plain(candidate)[0] == expected
