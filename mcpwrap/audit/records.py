"""The fields of audit records that describe who asked and with what."""

from __future__ import annotations

import json
import os
from typing import Any

from mcpwrap.basics import sha
from mcpwrap.config.profile import ArgumentsMode


def canonical_json(value: object) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest(value: object) -> str:
    return "sha256:" + sha.hexdigest(canonical_json(value))


def arguments_field(mode: ArgumentsMode, arguments: object) -> dict[str, Any]:
    """The record's view of a call's arguments, per `[audit] arguments`."""
    if mode is ArgumentsMode.NONE:
        return {}
    if mode is ArgumentsMode.FULL:
        return {"args": arguments}
    try:
        return {"args_digest": digest(arguments if arguments is not None else {})}
    except (ValueError, UnicodeEncodeError):
        # Infinity, an int too long to print, a lone surrogate: no canonical JSON.
        return {"args_digest": None}


class Agent:
    """Who is on the client side: the launching process and what the client says it is."""

    __slots__ = ("client", "exe", "pid")

    def __init__(self, pid: int, exe: str | None, client: dict[str, Any] | None = None) -> None:
        self.pid = pid
        self.exe = exe
        self.client: dict[str, Any] = client or {}

    @classmethod
    def of_parent(cls) -> Agent:
        pid = os.getppid()
        try:
            exe: str | None = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = None
        return cls(pid=pid, exe=exe)

    def note_client_info(self, info: object) -> None:
        """Keep name and version from a clientInfo object (initialize, or 2026 _meta)."""
        if not isinstance(info, dict):
            return
        self.client = {k: str(info[k])[:200] for k in ("name", "version") if k in info}

    def as_record(self) -> dict[str, Any]:
        return {"client": self.client or None, "pid": self.pid, "exe": self.exe}
