"""The JSON-RPC answers mcpwrap composes itself, and the few readings of a request's
params that decide their form."""

from __future__ import annotations

from typing import Any

from mcpwrap.basics import jsontext
from mcpwrap.policy import decisions as policy
from mcpwrap.policy.decisions import Verdict
from mcpwrap.policy.sanitize import clean_line

decode = jsontext.decode
decode_plain = jsontext.decode_plain
encode = jsontext.encode


def error(msg_id: object, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def tool_error(msg_id: object, verdict: Verdict, modern: bool) -> dict[str, Any]:
    text = f"mcpwrap refused this call: {verdict.reason} (rule: {verdict.rule})"
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
    if modern:
        result["resultType"] = "complete"  # required on every 2026-07-28 result
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def is_modern(params: object) -> bool:
    """A request of the 2026-07-28 generation names its protocol version in _meta."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and policy.META_PROTOCOL_VERSION in meta


def progress_token(params: object) -> object:
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get("progressToken") if isinstance(meta, dict) else None


def clean_text_short(value: object) -> str:
    return clean_line(str(value).encode("utf-8", "replace")[:200])
