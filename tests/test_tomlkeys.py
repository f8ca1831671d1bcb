"""The key locator: the line of each key path, for profile error messages."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator

import pytest
from test_profile import FULL, fails

from mcpwrap.basics.tomlkeys import key_lines

# --- the key locator ---------------------------------------------------------------------

TRICKY = """\
# comment [not.a.table] = 1
version = 1
sandbox.memory = "1GiB"   # dotted key
"quoted key" = \"\"\"
[tools.fake]
class = "x"
\"\"\"
literal = '''a ''b'' ['''
[ tools . "my.tool" ]
class = "read" # [x] = 1
args.p = { within = [
  "/a", # a comment, with = and [
  "/b",
], pattern = "[a-z]+" }
[tools.'lit.x'.args]
q.max_length = 3
[[arr]]
k = 1
[[arr]]
k = 2
[arr.sub]
z = "}"
"esc\\u0061ped" = 'x'
s = "a \\" [b] = c"
dt = 1979-05-27 07:32:00Z
n = { a = { b = [1, {c = 2}] } }
q = \"\"\"x\"\"\"\"\"
r = 1
[ "x]y" . 'z"w' ]
k . "l" = [ [ 1 ], [ 2,
  3 ] ]
"""

TRICKY_LINES = [
    (("version",), 2),
    (("sandbox",), 3),
    (("sandbox", "memory"), 3),
    (("quoted key",), 4),
    (("literal",), 8),
    (("tools",), 9),
    (("tools", "my.tool"), 9),
    (("tools", "my.tool", "class"), 10),
    (("tools", "my.tool", "args"), 11),
    (("tools", "my.tool", "args", "p"), 11),
    (("tools", "my.tool", "args", "p", "within"), 11),
    (("tools", "my.tool", "args", "p", "within", 0), 12),
    (("tools", "my.tool", "args", "p", "within", 1), 13),
    (("tools", "my.tool", "args", "p", "pattern"), 14),
    (("tools", "lit.x"), 15),
    (("tools", "lit.x", "args"), 15),
    (("tools", "lit.x", "args", "q", "max_length"), 16),
    (("arr",), 17),
    (("arr", 0), 17),
    (("arr", 0, "k"), 18),
    (("arr", 1), 19),
    (("arr", 1, "k"), 20),
    (("arr", 1, "sub"), 21),
    (("arr", 1, "sub", "z"), 22),
    (("arr", 1, "sub", "escaped"), 23),
    (("arr", 1, "sub", "s"), 24),
    (("arr", 1, "sub", "dt"), 25),
    (("arr", 1, "sub", "n", "a", "b", 1, "c"), 26),
    (("arr", 1, "sub", "q"), 27),
    (("arr", 1, "sub", "r"), 28),
    (("x]y", 'z"w'), 29),
    (("x]y", 'z"w', "k", "l"), 30),
    (("x]y", 'z"w', "k", "l", 1, 1), 31),
]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize(("path", "line"), TRICKY_LINES)
def test_locator_on_tricky_layouts(newline: str, path: tuple[str | int, ...], line: int) -> None:
    text = TRICKY.replace("\n", newline)
    assert tomllib.loads(text)  # the locator only ever sees valid TOML
    assert key_lines(text)[path] == line


def test_locator_ignores_keys_inside_strings_and_comments() -> None:
    lines = key_lines(TRICKY)
    assert ("tools", "fake") not in lines
    assert ("not",) not in lines
    assert ("x",) not in lines


def test_locator_prefers_a_table_header_to_an_earlier_mention() -> None:
    text = "[a.b]\nx = 1\n[a]\ny = 2\n"
    assert key_lines(text)[("a",)] == 3


@pytest.mark.parametrize("text", ["[[[", "a = ", 'a = "', "= 1", "a = [1,", "x = {"])
def test_locator_never_raises(text: str) -> None:
    assert isinstance(key_lines(text), dict)


def _paths(value: object, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if path:
        yield path
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        yield from _paths(item, (*path, key))


def test_locator_finds_every_key_of_the_example() -> None:
    doc = tomllib.loads(FULL)
    lines = key_lines(FULL)
    source = FULL.splitlines()
    for path in _paths(doc):
        found = source[lines[path] - 1]
        keys = [part for part in path if isinstance(part, str)]
        if isinstance(path[-1], int):
            assert found.count('"') >= 2, (path, found)  # the array of strings is on this line
        elif found.lstrip().startswith("["):
            assert re.search(r"\b" + r"\.".join(keys[-2:]) + r"\b", found), (path, found)
        else:
            assert re.search(rf"(^|[{{,.]\s*){keys[-1]}\s*[=.]", found.strip()), (path, found)


# Keys a user names (tools, arguments, variables): renaming one is no error.
_USER_NAMED = {("tools",), ("server", "env"), ("server", "secrets")}


def _schema_paths() -> Iterator[tuple[str, ...]]:
    for path in _paths(tomllib.loads(FULL)):
        parent = path[:-1]
        if isinstance(path[-1], int) or path == ("version",) or parent in _USER_NAMED:
            continue
        if len(parent) == 3 and parent[0] == "tools" and parent[2] == "args":
            continue
        yield path  # type: ignore[misc]


@pytest.mark.parametrize("path", list(_schema_paths()), ids=".".join)
def test_a_typo_in_any_key_of_the_example_is_reported_at_its_line(path: tuple[str, ...]) -> None:
    line = key_lines(FULL)[path]
    source = FULL.splitlines(keepends=True)
    key = path[-1]
    source[line - 1], count = re.subn(
        rf"\b{key}\b(?=\s*[=.\]])", f"{key}_typo", source[line - 1], count=1
    )
    assert count == 1
    typo = ".".join((*path[:-1], f"{key}_typo"))
    assert fails("".join(source)).startswith(f"p.toml:{line}: {typo}: unknown key")
