"""Guesses for a first profile: a class per tool and constraints per argument.

Pure functions over a tool definition. Everything here is a hint for the person who
reads the generated profile: names and annotations come from the server, which may lie,
so each guess says what it rests on, and an unknown tool is assumed to write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from mcpwrap.config.profile import ToolClass

# Words a tool name starts with (or contains, for admin), by what they suggest.
_ADMIN = re.compile(
    r"(config|setting|credential|token|secret|password|permission|grant|admin|install|"
    r"uninstall|restart|shutdown|kill|chmod|chown|user|role|policy)",
)
_WRITE = (
    "create", "write", "edit", "update", "delete", "remove", "rm", "move", "mv", "rename",
    "insert", "set", "add", "put", "upload", "send", "post", "commit", "push", "merge",
    "execute", "exec", "run", "apply", "patch", "replace", "append", "drop", "truncate",
    "reset", "checkout", "branch", "tag", "publish", "deploy", "save", "store", "modify",
    "change", "mutate", "start", "stop", "cancel", "close", "open", "init",
)  # fmt: skip
_READ = (
    "get", "list", "read", "search", "find", "fetch", "query", "describe", "show", "view",
    "count", "check", "explain", "lookup", "status", "diff", "log", "inspect", "browse",
    "echo", "print", "current", "convert", "calculate", "compute", "validate", "directory",
    "tree", "info", "stat", "head", "tail", "sample", "annotated",
)  # fmt: skip
_PATH_WORDS = re.compile(
    r"^(path|paths|file|files|filename|filepath|file_path|dir|directory|folder|root|"
    r"source|destination|dest|src|dst|target|cwd|repo_path|repository)$|_path$|_file$|_dir$",
    re.IGNORECASE,
)
_URL_WORDS = re.compile(r"^(url|uri|href|endpoint|link|base_url)$|_url$", re.IGNORECASE)


class ClassGuess(NamedTuple):
    cls: ToolClass
    why: str


class ArgGuess(NamedTuple):
    name: str
    constraint: dict[str, Any] | None  # written as a constraint
    note: str  # why, or what to fill in


def guess_class(tool: Mapping[str, Any]) -> ClassGuess:
    name = str(tool.get("name", ""))
    words = [w for w in re.split(r"[^a-z0-9]+", _snake(name)) if w]
    hints = tool.get("annotations") if isinstance(tool.get("annotations"), dict) else {}
    assert isinstance(hints, dict)
    if any(_ADMIN.fullmatch(w) for w in words):
        word = next(w for w in words if _ADMIN.fullmatch(w))
        return ClassGuess(ToolClass.ADMIN, f"its name mentions {word!r}")
    first = words[0] if words else ""
    if first in _WRITE or any(w in _WRITE for w in words[:2]):
        return ClassGuess(ToolClass.WRITE, f"its name starts with {first!r}")
    if hints.get("destructiveHint") is True:
        return ClassGuess(ToolClass.WRITE, "the server says destructiveHint (a hint only)")
    if first in _READ and hints.get("readOnlyHint") is not False:
        return ClassGuess(ToolClass.READ, f"its name starts with {first!r}")
    if hints.get("readOnlyHint") is True:
        return ClassGuess(ToolClass.READ, "the server says readOnlyHint (a hint only)")
    return ClassGuess(ToolClass.WRITE, "nothing says it only reads: assumed to write")


def guess_args(tool: Mapping[str, Any]) -> list[ArgGuess]:
    """Constraints for parameters that look like paths (kept inside the project) or URLs
    (a hosts list for the person to fill in)."""
    schema = tool.get("inputSchema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return []
    out = []
    for name, raw in props.items():
        spec = raw if isinstance(raw, dict) else {}
        if spec.get("type") not in (None, "string"):
            continue
        fmt = spec.get("format")
        if _URL_WORDS.search(name) or fmt in ("uri", "url"):
            out.append(ArgGuess(name, None, "a URL: list the hosts it may reach"))
        elif _PATH_WORDS.search(name):
            out.append(ArgGuess(name, {"within": ["{project}"]}, "a path: kept inside the project"))
    return out


def _snake(name: str) -> str:
    """getFileInfo -> get_file_info; list-tools -> list_tools."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
