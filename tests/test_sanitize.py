"""mcpwrap.sanitize: what reaches a terminal or a person's eyes carries no escape
sequences, control characters, bidi overrides or zero-width characters."""

from __future__ import annotations

import pytest

from mcpwrap.sanitize import clean_line, clean_text

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
