"""mcpwrap.policy.sanitize: what reaches a terminal or a person's eyes carries no escape
sequences, control characters, bidi overrides or zero-width characters; JSON values and
MCP results are cleaned after decoding, and the raw-line pre-check never misses one."""

from __future__ import annotations

import copy
import json
from typing import Any

import pydantic_core
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcpwrap.policy.sanitize import (
    clean_line,
    clean_prompt_result,
    clean_text,
    clean_tool_definition,
    clean_tool_result,
    clean_value,
    might_need_cleaning,
)

CASES = [
    # escape sequences go whole, parameters included
    ("\x1b[31mred\x1b[0m", "red", "csi-colour"),
    ("a\x1b[2J\x1b[Hb", "ab", "csi-clear-home"),
    ("a\x1b[?25lb", "ab", "csi-private"),
    ("a\x1b[1;31;4mb", "ab", "csi-params"),
    ("\x1b]0;pwned title\x07text", "text", "osc-title-bel"),
    ("\x1b]0;pwned title\x1b\\text", "text", "osc-title-st"),
    ("\x1b]8;;https://evil.test\x07link\x1b]8;;\x07", "link", "osc-8-hyperlink"),
    ("x\x1b]52;c;ZXZpbA==\x07y", "xy", "osc-52-clipboard"),
    ("a\x1b]0;cut short", "a", "osc-unterminated"),
    ("a\x1bPq#0;2;0;0;0\x1b\\b", "ab", "dcs"),
    ("a\x1b_apc\x1b\\b", "ab", "apc"),
    ("a\x1bcb", "ab", "esc-reset"),
    ("a\x1b(Bb", "ab", "esc-charset"),
    ("a\x1b", "a", "lone-esc"),
    ("a\x9b31mb", "ab", "8bit-csi"),
    ("a\x9b2Jb", "ab", "8bit-csi-clear"),
    ("a\x9d0;title\x07b", "ab", "8bit-osc-bel"),
    ("a\x9d0;title\x9cb", "ab", "8bit-osc-st"),
    # C0 (but tab and newline), DEL, C1
    ("a\x00b", "ab", "nul"),
    ("a\x07b", "ab", "bel"),
    ("a\x08b", "ab", "backspace"),
    ("a\rb", "ab", "cr"),
    ("a\x0bb\x0cc", "abc", "vt-ff"),
    ("a\x1fb", "ab", "unit-separator"),
    ("a\x7fb", "ab", "del"),
    ("a\x80b\x85c\x9fd", "abcd", "c1"),
    ("a\tb", "a\tb", "tab-kept"),
    ("a\nb", "a\nb", "newline-kept"),
    # bidi overrides and isolates, zero-width characters, BOM
    ("a\u202ab\u202bc\u202cd\u202de\u202ef", "abcdef", "bidi-embeddings-overrides"),
    ("a\u2066b\u2067c\u2068d\u2069e", "abcde", "bidi-isolates"),
    ("a\u200bb\u200cc\u200dd\u200ee\u200ff", "abcdef", "zero-width-and-marks"),
    ("a\u2060b\u2061c\u2062d\u2063e\u2064f", "abcdef", "word-joiner-invisible-ops"),
    ("\ufeffa\ufeffb", "ab", "bom"),
    ("admin\u202e\u2066txt.exe\u2069\u202c", "admintxt.exe", "trojan-source"),
    # ordinary text stays
    (
        "caf\u00e9 \u65e5\u672c \U0001f600 \u00a0 \u2014",
        "caf\u00e9 \u65e5\u672c \U0001f600 \u00a0 \u2014",
        "unicode",
    ),
    (
        "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
        "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
        "rtl-letters",
    ),
    ("e\u0301", "e\u0301", "combining-accent"),
    ("\U0001f468\u200d\U0001f469", "\U0001f468\U0001f469", "zwj-emoji-split"),
    ("[31m plain brackets", "[31m plain brackets", "brackets-without-esc"),
    ("", "", "empty"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for t, e, _ in CASES], ids=[i for _, _, i in CASES]
)
def test_clean_text(text: str, expected: str) -> None:
    assert clean_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\nb", "a b"),
        ("a\n\nb\n", "a  b "),
        ("a\tb\n", "a\tb "),
        ("\x1b[31ma\nb\x1b[0m", "a b"),
    ],
    ids=["one", "several", "tab-stays", "with-csi"],
)
def test_clean_text_without_newlines(text: str, expected: str) -> None:
    assert clean_text(text, keep_newlines=False) == expected


def test_every_c0_c1_character_but_tab_and_newline_goes() -> None:
    controls = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]]
    for char in controls:
        out = clean_text(f"a{char}b")
        assert (char in out) is (char in "\t\n"), hex(ord(char))
        if char not in "\t\n\x1b\x9b\x9d":  # those three start sequences that eat the "b"
            assert out == "ab", hex(ord(char))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"plain", "plain"),
        (b"caf\xc3\xa9", "caf\u00e9"),
        (b"bad \xff\xfe bytes", "bad \ufffd\ufffd bytes"),
        (b"cut \xe6\x97", "cut \ufffd"),
        (b"\x1b[31merror\x1b[0m: \x1b]0;t\x07x", "error: x"),
        (b"two\nlines", "two lines"),
        (b"\xc2\x9b31mx", "x"),
        (b"\xe2\x80\xaeevil", "evil"),
        (b"\x9b31mx", "\ufffd31mx"),
    ],
    ids=[
        "ascii",
        "utf8",
        "invalid-utf8",
        "truncated-utf8",
        "escapes",
        "newline",
        "encoded-8bit-csi",
        "encoded-rlo",
        "raw-c1-byte-is-not-utf8",
    ],
)
def test_clean_line(raw: bytes, expected: str) -> None:
    assert clean_line(raw) == expected


# --- clean_value ---------------------------------------------------------------------


def test_clean_value_returns_the_same_object_when_clean() -> None:
    value = {
        "a": ["x", 1, 2.5, True, None, {"b": "caf\u00e9 \u65e5\u672c", "c": []}],
        "d": {},
        "e": "tab\tand\nnewline",
    }
    assert clean_value(value) is value
    for scalar in ("plain", 3, 1.5, False, None):
        assert clean_value(scalar) is scalar


def test_clean_value_copies_only_the_changed_path() -> None:
    untouched = {"deep": ["a", "b"]}
    inner = ["ok", "\x1b[31mred\x1b[0m"]
    value = {"keep": untouched, "list": inner, "n": 1, "k\u200bey": "v"}
    before = copy.deepcopy(value)
    out = clean_value(value)
    assert out == {"keep": untouched, "list": ["ok", "red"], "n": 1, "k\u200bey": "v"}
    assert isinstance(out, dict)
    assert out["keep"] is untouched  # shared, not copied
    assert out["list"] is not inner
    assert value == before  # the input is not modified
    assert list(out) == list(value)  # key order kept, keys left as they are


def test_clean_value_cleans_a_bare_string() -> None:
    assert clean_value("\u202eevil") == "evil"


@pytest.mark.parametrize("dirty", [False, True], ids=["clean", "dirty"])
def test_clean_value_walks_any_depth(dirty: bool) -> None:
    depth = 100_000  # far past the recursion limit
    leaf: object = "\x1b]0;title\x07x" if dirty else "x"
    value: object = leaf
    for _ in range(depth):
        value = [value]
    out = clean_value(value)
    if not dirty:
        assert out is value
        return
    for _ in range(depth):
        assert isinstance(out, list) and len(out) == 1
        out = out[0]
    assert out == "x"


_INTERESTING = (
    "\x00\x07\x08\t\n\x0b\x0c\r\x1b\x1f\x7f\x80\x85\x9b\x9c\x9d\x9f\xa0"
    "\u061b\u061c\u061d\u200a\u200b\u200f\u2010\u2029\u202a\u202e\u202f"
    "\u205f\u2060\u2064\u2065\u2066\u2069\u206a\ufefe\ufeff\uff00"
    "\U000dffff\U000e0000\U000e0041\U000e007f\U000e0080\U000e01ef"
    '\\"/[]{}:,;bfnrtu0123456789abcdefABCDEF\u00e9\u65e5\U0001f600'
)
_TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(_INTERESTING), st.characters(exclude_categories=["Cs"])),
    max_size=40,
)


@given(st.lists(_TEXT, max_size=5).map("".join), st.integers(0, 3000))
def test_clean_value_agrees_with_clean_text_on_short_and_long_strings(text: str, pad: int) -> None:
    text = "p" * pad + text  # long ones take the byte-scan route
    assert clean_value(text) == clean_text(text)
    assert clean_value([text]) == [clean_text(text)]


# --- might_need_cleaning ---------------------------------------------------------------

NEEDS_CLEANING = [
    (rb'{"t":"\u001b[31mred"}', "escaped-esc"),
    (rb'{"t":"\u001B[31mred"}', "escaped-esc-upper-hex"),
    (rb'{"t":"\u0000"}', "escaped-nul"),
    (rb'{"t":"\u000d"}', "escaped-cr-as-u"),
    (rb'{"t":"\u007f"}', "escaped-del"),
    (rb'{"t":"\u0085"}', "escaped-c1"),
    (rb'{"t":"\u009b31m"}', "escaped-8bit-csi"),
    (rb'{"t":"\u061c"}', "escaped-alm"),
    (rb'{"t":"\u200B"}', "escaped-zwsp"),
    (rb'{"t":"\u202e"}', "escaped-rlo"),
    (rb'{"t":"\u2066"}', "escaped-lri"),
    (rb'{"t":"\u2064"}', "escaped-invisible-plus"),
    (rb'{"t":"\uFEFF"}', "escaped-bom"),
    (rb'{"t":"\uDB40\uDC41"}', "escaped-tag-char"),
    (rb'{"t":"a\bb"}', "backspace-escape"),
    (rb'{"t":"a\fb"}', "formfeed-escape"),
    (rb'{"t":"a\rb"}', "cr-escape"),
    (rb'{"t":"C:\\\rb"}', "three-backslashes-then-r"),
    (rb'{"t":"\\\\\u001b"}', "two-escaped-backslashes-then-esc"),
    (b'{"t":"a\x7fb"}', "raw-del"),
    (b'{"t":"a\x1bb"}', "raw-esc-lenient-json"),
    (b'{"t":"a\rb"}', "raw-cr"),
    ('{"t":"a\x85b \u00e9"}'.encode(), "raw-c1-utf8"),
    ('{"t":"\u061c"}'.encode(), "raw-alm"),
    ('{"t":"\u200d"}'.encode(), "raw-zwj"),
    ('{"t":"\u202a"}'.encode(), "raw-lre"),
    ('{"t":"\u2060"}'.encode(), "raw-word-joiner"),
    ('{"t":"\u2069"}'.encode(), "raw-pdi"),
    ('{"t":"\ufeff"}'.encode(), "raw-bom"),
    ('{"t":"\U000e0001\U000e0049"}'.encode(), "raw-tag-chars"),
    ('{"t":"\U000e007f"}'.encode(), "raw-cancel-tag"),
]


@pytest.mark.parametrize("line", [c for c, _ in NEEDS_CLEANING], ids=[i for _, i in NEEDS_CLEANING])
def test_might_need_cleaning_finds(line: bytes) -> None:
    assert might_need_cleaning(line) is True
    # and what it found is really there (the list above has no false positives)
    text = json.loads(line.decode(), strict=False)["t"]
    assert clean_text(text) != text


CLEAN_LINES = [
    (rb'{"t":"plain text\n\ttabbed \"quoted\" \/ slash"}', "ordinary-escapes"),
    (rb'{"t":"\u0009\u000a\u0020\u00e9\u00a0"}', "harmless-u-escapes"),
    (rb'{"t":"\u2010\u2028\u205f\u2065\u206a\ufefe\u0620"}', "near-miss-u-escapes"),
    (rb'{"t":"C:\\build\\release\\foo"}', "escaped-backslash-then-b-r-f"),
    (rb'{"t":"\\u001b is how JSON spells ESC"}', "escaped-backslash-then-u001b"),
    (rb'{"t":"\\\\\\\\b"}', "four-escaped-backslashes-then-b"),
    (b'{"t":"a\tb"}', "raw-tab-lenient-json"),
    (
        '{"t":"caf\u00e9 \u2014 \u201cquoted\u201d \u2026 \u65e5\u672c \U0001f600"}'.encode(),
        "typography",
    ),
    (
        '{"t":"\u00a0\u00ff\u0100\u0660\u2000\u2070\ufeee\U000dffff\U000e0100"}'.encode(),
        "near-miss-raw",
    ),
    (b"", "empty"),
]


@pytest.mark.parametrize("line", [c for c, _ in CLEAN_LINES], ids=[i for _, i in CLEAN_LINES])
def test_might_need_cleaning_passes(line: bytes) -> None:
    assert might_need_cleaning(line) is False


def test_might_need_cleaning_many_escaped_backslashes() -> None:
    # More `\\b` than are checked one by one: the fallback drops escaped backslashes.
    windows = json.dumps({"t": "C:\\build\\release\\bin\\foo.exe\n" * 50_000}).encode()
    assert might_need_cleaning(windows) is False
    assert might_need_cleaning(windows[:-2] + rb'\u001b"}') is True
    assert might_need_cleaning(windows[:-2] + rb'\\\u001b"}') is True
    assert might_need_cleaning(windows[:-2] + rb'\\\\u001b"}') is False


@pytest.mark.parametrize("run", [1, 2, 63, 64, 65, 66, 200, 201])
def test_might_need_cleaning_counts_long_backslash_runs(run: int) -> None:
    line = b'{"t":"' + b"\\" * run + b'b"}'
    assert might_need_cleaning(line) is (run % 2 == 1)


@settings(max_examples=400)
@given(_TEXT, st.booleans())
@example("\x1b[31m", True)
@example("\\b", True)
@example("\\\x08", False)
@example("\U000e0041", True)
def test_might_need_cleaning_never_misses(text: str, ensure_ascii: bool) -> None:
    """False implies nothing to clean, for both escaping styles and nested in an object;
    and on json.dumps output it is exact but for the tag block's high surrogate."""
    for value in (text, {"id": 1, "result": {"content": [{"type": "text", "text": text}]}}):
        line = json.dumps(value, ensure_ascii=ensure_ascii).encode()
        compact = json.dumps(value, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
        for raw in (line, compact):
            if not might_need_cleaning(raw):
                assert clean_text(text) == text
            elif not any(0xE0080 <= ord(c) <= 0xE03FF for c in text):
                assert clean_text(text) != text


@given(st.text(alphabet=st.characters(), max_size=30))
def test_might_need_cleaning_never_misses_with_lone_surrogates(text: str) -> None:
    line = json.dumps(text).encode()  # ensure_ascii: surrogates as \udXXX escapes
    if not might_need_cleaning(line):
        assert clean_text(text) == text


# --- clean_tool_result -----------------------------------------------------------------

# What a hostile server sends: every kind of hidden text, JSON-escaped on the wire.
HOSTILE_LINE = (
    rb'{"content":[{"type":"text","text":'
    rb'"\u001b[31mred\u001b[0m \u001b]8;;https://evil.test\u0007link\u001b]8;;\u0007'
    rb" \u009b2Jcsi adm\u202e\u2066txt.exe\u2069\u202c z\u200bw\u200dj"
    rb' tag\udb40\udc49\udb40\udc47\udb40\udc4e\udb40\udc4f end\r\n"}]}'
)


def test_clean_tool_result_removes_what_arrived_escaped() -> None:
    assert might_need_cleaning(HOSTILE_LINE)
    result = json.loads(HOSTILE_LINE)
    out = clean_tool_result(result)
    assert out["content"][0]["text"] == "red link csi admtxt.exe zwj tag end\n"
    assert result["content"][0]["text"].startswith("\x1b")  # input untouched


def test_clean_tool_result_returns_the_same_object_when_clean() -> None:
    result: dict[str, Any] = {
        "content": [
            {"type": "text", "text": '{"t": "caf\u00e9"}'},
            {"type": "image", "data": "AAAA", "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "file:///a", "text": "ok\n"}},
        ],
        "structuredContent": {"t": "caf\u00e9"},
        "isError": False,
    }
    assert clean_tool_result(result) is result
    assert clean_tool_result({}) == {}


def test_clean_tool_result_cleans_resources_and_leaves_other_items() -> None:
    image = {"type": "image", "data": "\x1bnot-text", "mimeType": "image/png"}
    blob = {"type": "resource", "resource": {"uri": "file:///b", "blob": "AAAA"}}
    link = {"type": "resource_link", "uri": "file:///c", "name": "c"}
    result = {
        "content": [
            image,
            blob,
            link,
            {"type": "resource", "resource": {"uri": "file:///a", "text": "\x1b[2Jhi\u200b"}},
            "not-an-item",
        ]
    }
    out = clean_tool_result(result)
    assert out["content"][0] is image and out["content"][1] is blob and out["content"][2] is link
    assert out["content"][3] == {"type": "resource", "resource": {"uri": "file:///a", "text": "hi"}}
    assert out["content"][4] == "not-an-item"


STRUCTURED = {
    "title": "\x1b[1mBold\x1b[0m caf\u00e9",
    "rows": [{"name": "adm\u202eexe.txt", "n": 1, "ok": True, "none": None}, {"x": 2.5}],
    "empty": {},
    "tag": "a\U000e0041\U000e0042b",
}
CLEANED = {
    "title": "Bold caf\u00e9",
    "rows": [{"name": "admexe.txt", "n": 1, "ok": True, "none": None}, {"x": 2.5}],
    "empty": {},
    "tag": "ab",
}
STYLES = [
    ({"separators": (",", ":"), "ensure_ascii": False}, "js-stringify-compact"),
    ({"separators": (",", ":"), "ensure_ascii": True}, "python-compact-ascii"),
    ({"ensure_ascii": True}, "python-default"),
    ({"ensure_ascii": False}, "python-default-utf8"),
    ({"indent": 2, "ensure_ascii": False}, "js-stringify-indent-2"),
    ({"indent": 2, "ensure_ascii": True}, "python-indent-2-ascii"),
]


@pytest.mark.parametrize("style", [s for s, _ in STYLES], ids=[i for _, i in STYLES])
def test_mirrored_text_follows_the_cleaned_structured_content(style: dict[str, Any]) -> None:
    text = json.dumps(STRUCTURED, **style)
    result = {"content": [{"type": "text", "text": text}], "structuredContent": STRUCTURED}
    out = clean_tool_result(result)
    assert out["structuredContent"] == CLEANED
    mirrored = out["content"][0]["text"]
    assert json.loads(mirrored) == out["structuredContent"]
    assert mirrored == json.dumps(CLEANED, **style)  # the same style
    assert "\\u001b" not in mirrored and "\x1b" not in mirrored


def test_mirrored_text_keeps_surrounding_whitespace() -> None:
    text = "\n" + json.dumps(STRUCTURED, indent=2) + "\r\n"
    result = {"content": [{"type": "text", "text": text}], "structuredContent": STRUCTURED}
    mirrored = clean_tool_result(result)["content"][0]["text"]
    assert mirrored == "\n" + json.dumps(CLEANED, indent=2) + "\n"


def test_mirrored_text_in_the_python_sdks_style() -> None:
    # The MCP Python SDK writes the mirror with pydantic_core.to_json(indent=2).
    text = pydantic_core.to_json(STRUCTURED, indent=2).decode()
    result = {"content": [{"type": "text", "text": text}], "structuredContent": STRUCTURED}
    mirrored = clean_tool_result(result)["content"][0]["text"]
    assert mirrored == pydantic_core.to_json(CLEANED, indent=2).decode()


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(STRUCTURED, indent=4),
        json.dumps(STRUCTURED, sort_keys=True),
        json.dumps(dict(reversed(list(STRUCTURED.items())))),
    ],
    ids=["indent-4", "sorted-keys", "other-key-order"],
)
def test_mirrored_text_in_an_unknown_style_is_indented(text: str) -> None:
    result = {"content": [{"type": "text", "text": text}], "structuredContent": STRUCTURED}
    mirrored = clean_tool_result(result)["content"][0]["text"]
    assert mirrored == json.dumps(CLEANED, indent=2, ensure_ascii=False)
    assert json.loads(mirrored) == CLEANED


def test_text_that_is_not_the_mirror_is_cleaned_as_text() -> None:
    other = json.dumps({"title": "\x1b[1mBold"})  # JSON, but not the structured content
    prose = "Done: \x1b[32mOK\x1b[0m"
    result = {
        "content": [{"type": "text", "text": other}, {"type": "text", "text": prose}],
        "structuredContent": STRUCTURED,
    }
    out = clean_tool_result(result)
    assert out["content"][0]["text"] == other  # escaped ESC stays escaped text here
    assert out["content"][1]["text"] == "Done: OK"


def test_clean_structured_content_leaves_its_mirror_alone() -> None:
    text = json.dumps({"a": 1}) + "\r"
    result = {"content": [{"type": "text", "text": text}], "structuredContent": {"a": 1}}
    assert clean_tool_result(result)["content"][0]["text"] == '{"a": 1}'


def test_a_mirror_too_deep_to_decode_fails_closed() -> None:
    deep = '{"a":' + "[" * 100_000 + '"x"' + "]" * 100_000 + "}"
    result = {"content": [{"type": "text", "text": deep}], "structuredContent": {"a": "\x1b"}}
    with pytest.raises(ValueError, match="nested too deeply"):
        clean_tool_result(result)


# --- clean_prompt_result ---------------------------------------------------------------


def test_clean_prompt_result() -> None:
    image = {"type": "image", "data": "AAAA", "mimeType": "image/png"}
    result = {
        "description": "A \x1b[5mblinking\x1b[0m prompt",
        "messages": [
            {"role": "user", "content": {"type": "text", "text": "hi\u202e"}},
            {"role": "assistant", "content": [image, {"type": "text", "text": "\u200bok"}]},
            {
                "role": "user",
                "content": {"type": "resource", "resource": {"uri": "x:", "text": "r\x07"}},
            },
            {"role": "user", "content": {"type": "text", "text": "clean"}},
        ],
    }
    out = clean_prompt_result(result)
    assert out == {
        "description": "A blinking prompt",
        "messages": [
            {"role": "user", "content": {"type": "text", "text": "hi"}},
            {"role": "assistant", "content": [image, {"type": "text", "text": "ok"}]},
            {
                "role": "user",
                "content": {"type": "resource", "resource": {"uri": "x:", "text": "r"}},
            },
            {"role": "user", "content": {"type": "text", "text": "clean"}},
        ],
    }
    assert out["messages"][3] is result["messages"][3]
    assert out["messages"][1]["content"][0] is image


def test_clean_prompt_result_returns_the_same_object_when_clean() -> None:
    result = {
        "description": "Summarise a file",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Summarise:\n"}]}],
    }
    assert clean_prompt_result(result) is result


# --- clean_tool_definition -------------------------------------------------------------


def test_clean_tool_definition_cleans_everything_but_the_name() -> None:
    tool = {
        "name": "read\u200bfile",
        "title": "Read \x1b[1mfile\x1b[0m",
        "description": "Reads a file.\U000e0049\U000e0047",
        "inputSchema": {
            "type": "object",
            "properties": {
                "pa\u200bth": {"type": "string", "description": "The path\u202e"},
                "mode": {"enum": ["text", "bin\x07"], "default": "text\u2066"},
            },
            "required": ["pa\u200bth"],
        },
        "outputSchema": {"type": "object", "description": "\x9b31mout"},
        "annotations": {"title": "Reader\u200d", "readOnlyHint": True},
        "_meta": {"note": "\x1b]0;x\x07m"},
    }
    out = clean_tool_definition(tool)
    assert out["name"] == "read\u200bfile"  # an identifier: callers handle odd names
    assert out["title"] == "Read file"
    assert out["description"] == "Reads a file."
    props = out["inputSchema"]["properties"]
    assert list(props) == ["pa\u200bth", "mode"]  # property names are keys: left as they are
    assert props["pa\u200bth"]["description"] == "The path"
    assert props["mode"] == {"enum": ["text", "bin"], "default": "text"}
    # ...but values are cleaned, even those naming a key: the schema no longer validates
    # a call with "pa\u200bth", so such a tool fails rather than being called otherwise.
    assert out["inputSchema"]["required"] == ["path"]
    assert out["outputSchema"]["description"] == "out"
    assert out["annotations"] == {"title": "Reader", "readOnlyHint": True}
    assert out["_meta"] == {"note": "m"}


def test_clean_tool_definition_returns_the_same_object_when_clean() -> None:
    tool = {
        "name": "get_current_time",
        "description": "Get current time in a specific timezone",
        "inputSchema": {"type": "object", "properties": {"timezone": {"type": "string"}}},
        "annotations": {"readOnlyHint": True},
    }
    assert clean_tool_definition(tool) is tool
