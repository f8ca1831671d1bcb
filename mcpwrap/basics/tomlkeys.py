"""Where each key of a TOML document is: tomllib keeps no positions.

`key_lines` maps key paths (array items as int parts) to 1-based line numbers, so that a
profile error can say `FILE:LINE: key.path`. It scans text that tomllib already accepted,
decodes keys and never values, and runs only when there is an error to report.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import tomllib
from collections.abc import Iterator

KeyPath = tuple[str | int, ...]
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_lines(text: str) -> dict[KeyPath, int]:
    """Line of each key path (array items as int parts) in `text`, a document tomllib read.

    A best effort for messages: should the scanner trip, the keys found so far are kept.
    """
    scanner = _KeyLines(text)
    with contextlib.suppress(_ScanError, IndexError, ValueError):
        scanner.scan()
    return scanner.lines


class _ScanError(Exception):
    pass


_SCALAR = re.compile(r"[^,\]}#\r\n]+")  # numbers, booleans, dates: up to what ends a value


class _KeyLines:
    """Walks valid TOML noting where each key appears; it decodes keys, never values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        self.lines: dict[KeyPath, int] = {}
        self.defined: set[KeyPath] = set()  # paths whose defining line is recorded
        self.last_item: dict[KeyPath, int] = {}  # array-of-tables path -> its last index

    def line(self) -> int:
        return bisect.bisect_left(self.newlines, self.pos) + 1

    def scan(self) -> None:
        table: KeyPath = ()
        while self._skip_blank():
            if self.text[self.pos] == "[":
                table = self._header()
            else:
                self._key_value(table)

    def _note(self, path: KeyPath, line: int, *, defines: bool) -> None:
        # A definition ([a.b] or b = ...) beats a mere mention as a prefix ([a.b.c]).
        if defines and path not in self.defined:
            self.defined.add(path)
            self.lines[path] = line
        else:
            self.lines.setdefault(path, line)

    def _header(self) -> KeyPath:
        line = self.line()
        is_array = self.text.startswith("[[", self.pos)
        self.pos += 2 if is_array else 1
        keys = self._key()
        path: KeyPath = ()
        for key in keys[:-1] if is_array else keys:
            path = self._under(path, key, line)
        if is_array:
            path = (*path, keys[-1])
            self.last_item[path] = self.last_item.get(path, -1) + 1
            self._note(path, line, defines=False)
            path = (*path, self.last_item[path])
        self._note(path, line, defines=True)
        self._skip_inline()
        self.pos += 2 if is_array else 1
        return path

    def _under(self, path: KeyPath, key: str, line: int) -> KeyPath:
        """`path` + `key`, into the last table of `key` when it is an array of tables."""
        path = (*path, key)
        self._note(path, line, defines=False)
        return (*path, self.last_item[path]) if path in self.last_item else path

    def _key_value(self, table: KeyPath) -> None:
        line = self.line()
        path = (*table, *self._key())
        for end in range(len(table) + 1, len(path) + 1):
            self._note(path[:end], line, defines=end == len(path))
        self._skip_inline()
        self._expect("=")
        self._value(path)

    def _key(self) -> tuple[str, ...]:
        keys = [self._simple_key()]
        while self._skip_inline() == ".":
            self.pos += 1
            keys.append(self._simple_key())
        return tuple(keys)

    def _simple_key(self) -> str:
        self._skip_inline()
        start = self.pos
        if self.text.startswith('"', start):
            self.pos = self._basic_end(start + 1)
            # tomllib decodes the escapes exactly as it did for the document itself.
            key: str = tomllib.loads("k = " + self.text[start : self.pos])["k"]
            return key
        if self.text.startswith("'", start):
            self.pos = self.text.index("'", start + 1) + 1
            return self.text[start + 1 : self.pos - 1]
        bare = _BARE_KEY.match(self.text, start)
        if bare is None:
            raise _ScanError(start)
        self.pos = bare.end()
        return bare[0]

    def _value(self, path: KeyPath) -> None:
        char = self._skip_inline()
        if char == "[":
            for index in self._items("]"):
                self._note((*path, index), self.line(), defines=True)
                self._value((*path, index))
        elif char == "{":
            for _ in self._items("}"):
                self._key_value(path)
        elif char in ('"', "'"):
            self._string()
        else:
            scalar = _SCALAR.match(self.text, self.pos)
            if scalar is None:
                raise _ScanError(self.pos)
            self.pos = scalar.end()

    def _items(self, close: str) -> Iterator[int]:
        """Index of each comma-separated item up to `close`, positioned at its start."""
        self.pos += 1
        index = 0
        while self._skip_blank() and self.text[self.pos] != close:
            yield index
            index += 1
            if self._skip_blank() and self.text[self.pos] == ",":
                self.pos += 1
        self.pos += 1

    def _string(self) -> None:
        start = self.pos
        for quotes, escapes in (('"""', True), ("'''", False)):
            if self.text.startswith(quotes, start):
                self.pos = self._multiline_end(start + 3, quotes, escapes=escapes)
                return
        if self.text[start] == '"':
            self.pos = self._basic_end(start + 1)
        else:
            self.pos = self.text.index("'", start + 1) + 1

    def _basic_end(self, pos: int) -> int:
        while self.text[pos] != '"':
            pos += 2 if self.text[pos] == "\\" else 1
        return pos + 1

    def _multiline_end(self, pos: int, quotes: str, *, escapes: bool) -> int:
        while not self.text.startswith(quotes, pos):
            pos += 2 if escapes and self.text[pos] == "\\" else 1
        end = pos + 3
        # Up to two quotes right before the closing ones belong to the string.
        while end < pos + 5 and self.text.startswith(quotes[0], end):
            end += 1
        return end

    def _skip_inline(self) -> str:
        """Skip spaces and tabs; the next character, or "" at the end."""
        while self.text.startswith((" ", "\t"), self.pos):
            self.pos += 1
        return self.text[self.pos : self.pos + 1]

    def _skip_blank(self) -> bool:
        """Skip whitespace, newlines and comments; False at the end of the text."""
        while True:
            char = self._skip_inline()
            if char in ("\r", "\n"):
                self.pos += 1
            elif char == "#":
                newline = self.text.find("\n", self.pos)
                self.pos = len(self.text) if newline < 0 else newline
            else:
                return char != ""

    def _expect(self, char: str) -> None:
        if not self.text.startswith(char, self.pos):
            raise _ScanError(self.pos)
        self.pos += 1
