"""Remove what can steer a terminal or hide text from a person: escape sequences, control
characters, bidi overrides and zero-width characters. Works on decoded text: in JSON these
arrive escaped (\\u001b), so sanitising raw bytes would miss them.
"""

from __future__ import annotations

import re

# ESC-introduced sequences first (CSI, OSC up to BEL or ST, two-byte escapes), so their
# parameters go with them; then single C1 CSI/OSC; then any remaining control character.
_SEQUENCES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, terminated by BEL or ST (or cut short)
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS strings
    r"|\x1b[ -/]*[0-~]?"  # other escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|\x9d[^\x07\x9c]*[\x07\x9c]?"  # 8-bit OSC
)
_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 but \t and \n, DEL, C1
    "\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"  # zero-width, bidi
    "\U000e0000-\U000e007f]"  # tag characters: invisible text
)


def clean_text(text: str, *, keep_newlines: bool = True) -> str:
    """`text` without escape sequences, control, bidi and zero-width characters."""
    text = _CONTROLS.sub("", _SEQUENCES.sub("", text))
    return text if keep_newlines else text.replace("\n", " ")


def clean_line(raw: bytes) -> str:
    """One line of a child's stderr, decoded leniently and cleaned, without its newline."""
    return clean_text(raw.decode("utf-8", "replace"), keep_newlines=False)
