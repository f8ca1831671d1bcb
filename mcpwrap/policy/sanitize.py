"""Remove what can steer a terminal or hide text from a person: escape sequences, control
characters, bidi overrides, zero-width and tag characters. Works on decoded text: in JSON
these arrive escaped (\\u001b), so sanitising raw bytes would miss them.

Besides text and lines, this cleans decoded JSON values (`clean_value`) and the MCP
results and definitions built from them (`clean_tool_result`, `clean_prompt_result`,
`clean_tool_definition`), and offers a fast pre-check on a raw JSON line
(`might_need_cleaning`) so that the common, clean reply is relayed without being decoded.
"""

from __future__ import annotations

import json
import re
from typing import Any

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

# One character that clean_text removes. Every escape sequence starts with one (ESC, 8-bit
# CSI, 8-bit OSC), so a text without a match comes back from clean_text unchanged: a
# single search is the cheap way to know that (and what mcpwrap.policy.poison reports on).
REMOVABLE_CHARS = _CONTROLS


def clean_text(text: str, *, keep_newlines: bool = True) -> str:
    """`text` without escape sequences, control, bidi and zero-width characters."""
    text = _CONTROLS.sub("", _SEQUENCES.sub("", text))
    return text if keep_newlines else text.replace("\n", " ")


def clean_line(raw: bytes) -> str:
    """One line of a child's stderr, decoded leniently and cleaned, without its newline."""
    return clean_text(raw.decode("utf-8", "replace"), keep_newlines=False)


# --- decoded JSON values ---------------------------------------------------------------


class _Frame:
    """A list or dict being walked: what is left of its children, and what changed."""

    __slots__ = ("changes", "children", "node", "pending")

    def __init__(self, node: dict[Any, Any] | list[Any]) -> None:
        self.node = node
        self.children = iter(node.items() if isinstance(node, dict) else enumerate(node))
        self.changes: dict[Any, Any] = {}
        self.pending: Any = None  # the key of the child container being walked

    def rebuilt(self) -> object:
        """The node itself if nothing changed, else a copy with the changed children."""
        if not self.changes:
            return self.node
        if isinstance(self.node, dict):
            return {**self.node, **self.changes}  # same keys, so the order is kept
        copy = list(self.node)
        for index, child in self.changes.items():
            copy[index] = child
        return copy


def clean_value(value: object) -> object:
    """`value`, a decoded JSON value, with every string in it cleaned by clean_text.

    Dict keys are left as they are. The very object passed in comes back when nothing in
    it needed cleaning (callers test `is` to skip re-encoding); otherwise new lists and
    dicts are built only along the paths that changed, sharing every untouched subtree.
    Iterative, not recursive: JSON from the wire may nest deeper than Python's recursion
    limit, and any depth is walked (no ValueError, no RecursionError).
    """
    if isinstance(value, str):
        return _clean_str(value)
    if not isinstance(value, dict | list):
        return value
    stack = [_Frame(value)]
    while True:
        frame = stack[-1]
        for key, child in frame.children:
            if isinstance(child, str):
                cleaned = _clean_str(child)
                if cleaned is not child:
                    frame.changes[key] = cleaned
            elif isinstance(child, dict | list) and child:
                frame.pending = key
                stack.append(_Frame(child))
                break
        else:  # every child seen: hand the (re)built node to its parent
            stack.pop()
            result = frame.rebuilt()
            if not stack:
                return result
            parent = stack[-1]
            if result is not frame.node:
                parent.changes[parent.pending] = result


def _clean_str(text: str) -> str:
    """clean_text, but the same object back when there is nothing to remove."""
    if len(text) < _LONG_TEXT:
        clean = _CONTROLS.search(text) is None
    else:  # the byte scans below are several times faster than a regex over a str
        clean = not _has_raw_removable(text.encode("utf-8", "surrogatepass"))
    return text if clean else clean_text(text)


# From this length on, encoding a text to scan its bytes beats a regex search on it.
_LONG_TEXT = 1024


# --- the fast pre-check on a raw JSON line ---------------------------------------------

# Everything is done by C loops over the bytes (translate, `in`, replace, and regexes that
# start with a literal byte, which the regex engine skips to); a regex with a character
# class or a repeat up front tries every position and runs 5-15 times slower.

# Raw removable bytes: C0 controls but tab and newline (raw ones are invalid inside JSON
# strings, but a lenient decoder may take them; \r is included although it is also JSON
# whitespace: correctness over speed) and DEL.
_RAW_CONTROLS = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])
# The lead bytes of the UTF-8 encodings of removable characters, each with a pattern for
# those encodings: C1 (C2 80-9F), U+061C (D8 9C), U+200B-200F, U+202A-202E, U+2060-2064,
# U+2066-2069 (E2 80/81 xx), U+FEFF (EF BB BF), tag characters U+E0000-E007F (F3 A0 80/81 xx).
_UTF8_REMOVABLE = {
    0xC2: re.compile(rb"\xc2[\x80-\x9f]"),
    0xD8: re.compile(rb"\xd8\x9c"),
    0xE2: re.compile(rb"\xe2(?:\x80[\x8b-\x8f\xaa-\xae]|\x81[\xa0-\xa4\xa6-\xa9])"),
    0xEF: re.compile(rb"\xef\xbb\xbf"),
    0xF3: re.compile(rb"\xf3\xa0[\x80\x81]"),
}
_LEAD_BYTES = bytes(_UTF8_REMOVABLE)
# translate() deletes these: what is left of a line is its raw controls and lead bytes.
_INNOCENT_BYTES = bytes(b for b in range(256) if b not in _RAW_CONTROLS + _LEAD_BYTES)
# A JSON escape that decodes to a removable character: \b, \f, \r, or \u with the hex of
# C0 (but \t and \n), DEL, C1, U+061C, U+200B-200F, U+202A-202E, U+2060-2064,
# U+2066-2069, U+FEFF, or the high surrogate \udb40 of the tag characters (which also
# covers U+E0080-E03FF: a false positive, merely slower). Hex digits in either case.
_ESCAPED_REMOVABLE = re.compile(
    rb"\\(?:[bfr]|u(?:"
    rb"00(?:0[0-8bBcCdDeEfF]|1[0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])"
    rb"|061[cC]"
    rb"|20(?:0[b-fB-F]|2[a-eA-E]|6[0-46-9])"
    rb"|[fF][eE][fF][fF]"
    rb"|[dD][bB]40"
    rb"))"
)
# Candidates preceded by a backslash (`\\r` in quoted source code, `\\b` in a Windows
# path) are checked one by one in Python (~1.5 us each), up to one per 4 KiB of line, each
# counting at most _MAX_RUN backslashes back; past that, every escaped backslash is dropped
# from a copy of the line, which is searched again. So any line takes bounded time.
_CANDIDATES_PER_BYTE = 1 / 4096
_MAX_RUN = 64


def might_need_cleaning(line: bytes) -> bool:
    """False only when no string decoded from the JSON `line` (UTF-8) has anything that
    clean_text would remove; True when one might (a false positive is only slower).

    For the hot path: a few passes over the bytes in C, no decoding. Looks for raw
    removable bytes, the UTF-8 encodings of removable characters, and JSON escapes that
    decode to one (an escaped backslash is no escape: `\\\\b` is a backslash and a "b").
    """
    return _has_raw_removable(line) or (b"\\" in line and _has_escaped_removable(line))


def _has_raw_removable(data: bytes) -> bool:
    """Whether UTF-8 `data` has a raw removable character (not a JSON escape of one)."""
    suspects = data.translate(None, _INNOCENT_BYTES)
    if not suspects:
        return False
    if suspects.translate(None, _LEAD_BYTES):
        return True  # a raw control character
    return any(
        lead in suspects and pattern.search(data) is not None
        for lead, pattern in _UTF8_REMOVABLE.items()
    )


def _has_escaped_removable(line: bytes) -> bool:
    """Whether a JSON escape in `line` decodes to a removable character."""
    pos = 0
    for _ in range(64 + int(len(line) * _CANDIDATES_PER_BYTE)):
        match = _ESCAPED_REMOVABLE.search(line, pos)
        if match is None:
            return False
        run = _backslashes_before(line, match.start())
        if run is None:
            break
        if run % 2 == 0:  # its backslash is not itself escaped: a real escape
            return True
        pos = match.end()
    # In JSON every backslash starts an escape, so a run of them pairs up from its left:
    # without the pairs (escaped backslashes), each backslash left starts a real escape.
    return _ESCAPED_REMOVABLE.search(line.replace(b"\\\\", b"")) is not None


def _backslashes_before(line: bytes, end: int) -> int | None:
    """How many backslashes come right before `end`; None if more than _MAX_RUN."""
    start = end
    while start > 0 and line[start - 1] == 0x5C:
        start -= 1
        if end - start > _MAX_RUN:
            return None
    return end - start


# --- MCP results and definitions -------------------------------------------------------

# The serialisations a server's mirrored JSON text is compared with: JavaScript's
# JSON.stringify(x) and Python's compact form, json.dumps' default, and the indent=2 of
# JSON.stringify(x, null, 2), json.dumps(indent=2) and pydantic's to_json(indent=2).
_JSON_STYLES: tuple[dict[str, Any], ...] = (
    {"separators": (",", ":")},
    {},
    {"indent": 2},
)
_JSON_WS = " \t\n\r"


def clean_tool_result(result: dict[str, Any]) -> dict[str, Any]:
    """A tools/call `result` with its text cleaned; the same object if nothing changed.

    Cleans the "text" of every text item in `content`, the resource text of every
    resource item, and every string in `structuredContent`. A text item that mirrors the
    structured content (its JSON decodes to a value equal to the original) is replaced by
    the cleaned structured content serialised in the text's own style, so that the two
    stay equal: cleaning it as text would leave escaped controls (`\\u001b`) in place.
    Raises ValueError("nested too deeply") if that mirror is too deep to (de)serialise:
    the caller must not forward it uncleaned.
    """
    changes: dict[str, Any] = {}
    mirror: tuple[object, object] | None = None
    if "structuredContent" in result:
        structured = result["structuredContent"]
        cleaned = clean_value(structured)
        if cleaned is not structured:
            changes["structuredContent"] = cleaned
            mirror = (structured, cleaned)
    content = result.get("content")
    if isinstance(content, list):
        new_content = _clean_items(content, mirror)
        if new_content is not content:
            changes["content"] = new_content
    return {**result, **changes} if changes else result


def clean_prompt_result(result: dict[str, Any]) -> dict[str, Any]:
    """A prompts/get `result` with its `description` and every message's content (one
    content item or a list of them) cleaned; the same object if nothing changed."""
    changes: dict[str, Any] = {}
    description = result.get("description")
    if isinstance(description, str):
        cleaned = _clean_str(description)
        if cleaned is not description:
            changes["description"] = cleaned
    messages = result.get("messages")
    if isinstance(messages, list):
        new_messages = [_clean_message(message) for message in messages]
        if any(new is not old for new, old in zip(new_messages, messages, strict=True)):
            changes["messages"] = new_messages
    return {**result, **changes} if changes else result


def clean_tool_definition(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool definition with every string value cleaned but `name`, which stays as it is:
    a name is an identifier the client calls the tool by, so silently changing it would
    break calls; callers judge odd names themselves. The same object if nothing changed.

    Keys (property names) stay too, but values naming them (`required`) and values the
    model must send verbatim (`enum`, `const`, `default`) are cleaned like any text: what
    the model and the person see is clean, and a schema whose identifiers hide characters
    may stop matching itself or the server, which then fails the call visibly.
    """
    changes = {}
    for key, value in tool.items():
        if key == "name":
            continue
        cleaned = clean_value(value)
        if cleaned is not value:
            changes[key] = cleaned
    return {**tool, **changes} if changes else tool


def _clean_message(message: object) -> object:
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    cleaned: object = (
        _clean_items(content, None) if isinstance(content, list) else _clean_item(content, None)
    )
    return message if cleaned is content else {**message, "content": cleaned}


def _clean_items(items: list[Any], mirror: tuple[object, object] | None) -> list[Any]:
    cleaned = [_clean_item(item, mirror) for item in items]
    return items if all(new is old for new, old in zip(cleaned, items, strict=True)) else cleaned


def _clean_item(item: object, mirror: tuple[object, object] | None) -> object:
    """One content item: a text item's text, or a resource item's resource text."""
    if not isinstance(item, dict):
        return item
    kind = item.get("type")
    if kind == "text" and isinstance(item.get("text"), str):
        text: str = item["text"]
        if mirror is not None and _mirrors(text, mirror[0]):
            cleaned = _reserialise(text, *mirror)
        else:
            cleaned = _clean_str(text)
        return item if cleaned is text else {**item, "text": cleaned}
    if kind == "resource" and isinstance(item.get("resource"), dict):
        resource = item["resource"]
        text = resource.get("text")
        if isinstance(text, str):
            cleaned = _clean_str(text)
            if cleaned is not text:
                return {**item, "resource": {**resource, "text": cleaned}}
    return item


def _mirrors(text: str, structured: object) -> bool:
    """Whether `text` is a JSON serialisation of `structured` (an object, per MCP)."""
    if not text.lstrip(_JSON_WS).startswith(("{", "[")):
        return False  # cheap: skip json.loads for prose
    try:
        return bool(json.loads(text) == structured)
    except ValueError:
        return False
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _reserialise(text: str, original: object, cleaned: object) -> str:
    """`cleaned` serialised as `text` serialises `original`, surrounding whitespace kept;
    json.dumps(indent=2, ensure_ascii=False) when that style cannot be matched."""
    core = text.strip(_JSON_WS)
    start = len(text) - len(text.lstrip(_JSON_WS))
    lead, trail = text[:start], text[start + len(core) :]
    ensure_ascii = core.isascii()  # a non-ASCII text was not written with ensure_ascii
    try:
        for style in _JSON_STYLES:
            if json.dumps(original, ensure_ascii=ensure_ascii, **style) == core:
                redone = json.dumps(cleaned, ensure_ascii=ensure_ascii, **style)
                return clean_text(lead) + redone + clean_text(trail)
        return json.dumps(cleaned, indent=2, ensure_ascii=False)
    except RecursionError:
        raise ValueError("nested too deeply") from None
