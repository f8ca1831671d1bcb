"""How messages are reshaped on their way: what the profile and the tool gate edit.

Replies to the client: listings filtered by the profile and their descriptive text cleaned
(resources, resource templates, prompts); initialize and server/discover without denied
capabilities, their instructions checked and cleaned; each tools/list page through the
tool gate; input requests the profile denies refused inside a result; tool and prompt
results cleaned. Requests to the server: initialize's and _meta's client capabilities
without what the profile denies.

Each function takes what it decides with and returns the message re-encoded, or None to
forward the original bytes (the common case: nothing is re-encoded that need not be),
with the alerts to raise; recording, stderr and sending stay with the caller. The gate is
guarded by the relay's lock, passed in (`lock`) and held only around the gate's calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from mcpwrap.config.profile import PolicySpec, Profile
from mcpwrap.policy import decisions as policy
from mcpwrap.policy.decisions import Verdict
from mcpwrap.policy.sanitize import (
    clean_prompt_result,
    clean_tool_result,
    clean_value,
    might_need_cleaning,
)
from mcpwrap.relay.replies import encode, error, tool_error
from mcpwrap.supply.toolgate import Alert, Gate

# Results whose text reaches the model, and how each is cleaned.
CLEANERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "tools/call": clean_tool_result,
    "prompts/get": clean_prompt_result,
}


class Context(NamedTuple):
    """What reshaping a reply decides with."""

    profile: Profile
    gate: Gate
    lock: AbstractContextManager[Any]  # guards the gate: the relay's lock
    allows: Callable[[object], bool] | None  # may the run's token see this tool (None: no check)


class Shaped(NamedTuple):
    line: bytes | None  # the reply re-encoded, or None: forward it as it came
    alerts: Sequence[Alert]  # to record and, unless notes, to tell the user and the client
    refusal: Verdict | None  # input requests refused inside the result: to record


UNCHANGED = Shaped(None, (), None)  # the common answer, allocated once


def reply(
    ctx: Context,
    method: str,
    modern: bool,
    msg: dict[str, Any],
    line: bytes,
    *,
    plain: bool = False,
) -> Shaped:
    """A server's reply to the client's `method` request (`modern`: sent in the
    2026-07-28 generation), as the client may see it. `plain`: the line is known to be
    printable ASCII without escapes (jsontext.decode_plain), so it has nothing to clean."""
    result = msg.get("result")
    if not isinstance(result, dict):
        return UNCHANGED
    if method in ("initialize", "server/discover"):
        out, alerts = server_info(ctx.profile.policy, msg, result, gate=ctx.gate, lock=ctx.lock)
        return Shaped(out, alerts, None)
    if method == "tools/list":
        out, alerts = tools_page(
            ctx.profile, msg, result, gate=ctx.gate, lock=ctx.lock, allows=ctx.allows
        )
        return Shaped(out, alerts, None)
    if method in ("resources/list", "resources/templates/list", "prompts/list"):
        dirty = not plain and might_need_cleaning(line)
        out = listing(ctx.profile.policy, method, msg, result, dirty)
        return UNCHANGED if out is None else Shaped(out, (), None)
    refused = refused_inputs(ctx.profile.policy, method, modern, msg, result)
    if refused is not None:
        return Shaped(refused[0], (), refused[1])
    clean = CLEANERS.get(method)
    if clean is None or plain or not might_need_cleaning(line):
        return UNCHANGED  # a reply with nothing to clean is not scanned twice, or at all
    cleaned = clean(result)
    return UNCHANGED if cleaned is result else Shaped(encode({**msg, "result": cleaned}), (), None)


def server_info(
    pol: PolicySpec,
    msg: dict[str, Any],
    result: dict[str, Any],
    *,
    gate: Gate,
    lock: AbstractContextManager[Any],
) -> tuple[bytes | None, list[Alert]]:
    """initialize (or discover): denied capabilities removed; instructions checked
    against the lock and cleaned."""
    edited = result
    alerts: list[Alert] = []
    if isinstance(result.get("capabilities"), dict):
        caps = policy.server_capabilities(pol, result["capabilities"])
        if caps is not None:
            edited = {**edited, "capabilities": caps}
    text = result.get("instructions")
    if isinstance(text, str):
        with lock:
            keep, alerts = gate.instructions(text)
        if keep is None:
            edited = {k: v for k, v in edited.items() if k != "instructions"}
        elif keep != text:
            edited = {**edited, "instructions": keep}
    return (None if edited is result else encode({**msg, "result": edited})), alerts


def tools_page(
    profile: Profile,
    msg: dict[str, Any],
    result: dict[str, Any],
    *,
    gate: Gate,
    lock: AbstractContextManager[Any],
    allows: Callable[[object], bool] | None,
) -> tuple[bytes | None, list[Alert]]:
    """One page of the client's tools/list: hidden by the profile (and the token, with
    `allows`), then checked against the lock and for poisoning, and cleaned."""
    items = result.get("tools")
    if not isinstance(items, list):
        return None, []
    visible = policy.visible_tools(profile, items)
    if allows is not None:
        visible = [t for t in visible if allows(t)]
    with lock:
        review = gate.review(visible, tool_names(items))
    if len(visible) == len(items) and not review.changed:
        return None, review.alerts
    return encode({**msg, "result": {**result, "tools": review.tools}}), review.alerts


# resources, resource templates and prompts: the result's list, the profile's selection
# and the field it is matched on.
_LISTINGS: dict[str, tuple[str, str, str]] = {
    "resources/list": ("resources", "resources", "uri"),
    "resources/templates/list": ("resourceTemplates", "resources", "uriTemplate"),
    "prompts/list": ("prompts", "prompts", "name"),
}


def listing(
    pol: PolicySpec, method: str, msg: dict[str, Any], result: dict[str, Any], dirty: bool
) -> bytes | None:
    """resources, resource templates and prompts: filtered by the profile, their
    descriptive text cleaned (`dirty`: the reply's bytes may need cleaning)."""
    if method not in _LISTINGS:
        return None
    key, selection, field = _LISTINGS[method]
    chosen = getattr(pol, selection)
    return _filtered(msg, result, key, lambda i: policy.filter_listing(chosen, i, field), dirty)


def _filtered(
    msg: dict[str, Any],
    result: dict[str, Any],
    key: str,
    keep: Callable[[list[Any]], list[Any]],
    dirty: bool,
) -> bytes | None:
    items = result.get(key)
    if not isinstance(items, list):
        return None
    kept = keep(items)
    cleaned = [clean_descriptive(item) for item in kept] if dirty else kept
    if len(kept) == len(items) and all(a is b for a, b in zip(cleaned, kept, strict=True)):
        return None
    return encode({**msg, "result": {**result, key: cleaned}})


def clean_descriptive(item: object) -> object:
    """A resource or prompt entry with its descriptive text cleaned; names and URIs are
    identifiers the client sends back, so they are left as they are."""
    if not isinstance(item, dict):
        return item
    out = None
    for key in ("description", "title"):
        if key in item:
            cleaned = clean_value(item[key])
            if cleaned is not item[key]:
                out = {**(out or item), key: cleaned}
    return out if out is not None else item


def refused_inputs(
    pol: PolicySpec, method: str, modern: bool, msg: dict[str, Any], result: dict[str, Any]
) -> tuple[bytes, Verdict] | None:
    """A result that asks the client for what the profile denies (2026-07-28 input
    requests): the answer that replaces it and the verdict to record; None if allowed."""
    verdict = policy.decide_input_requests(pol, result)
    if verdict.allowed:
        return None
    if method == "tools/call":
        return encode(tool_error(msg["id"], verdict, modern)), verdict
    return encode(error(msg["id"], verdict.code, verdict.reason)), verdict


def request(pol: PolicySpec, msg: dict[str, Any], method: str, params: object) -> bytes | None:
    """A client request re-encoded without denied client capabilities, or None if
    unchanged."""
    if not isinstance(params, dict):
        return None
    if method == "initialize" and isinstance(params.get("capabilities"), dict):
        caps = policy.client_capabilities(pol, params["capabilities"])
        if caps is None:
            return None
        return encode({**msg, "params": {**params, "capabilities": caps}})
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not isinstance(meta.get(policy.META_CAPABILITIES), dict):
        return None
    caps = policy.client_capabilities(pol, meta[policy.META_CAPABILITIES])
    if caps is None:
        return None
    new_meta = {**meta, policy.META_CAPABILITIES: caps}
    return encode({**msg, "params": {**params, "_meta": new_meta}})


def tool_names(tools: list[Any]) -> list[str]:
    """The names on a tools/list page."""
    return [t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
