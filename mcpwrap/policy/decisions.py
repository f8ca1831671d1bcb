"""Policy decisions: message in, verdict out. No I/O here, so every rule is a table test.

The relay asks this module what to do with each message that policy cares about; rate
limits and concurrency, which need shared state, are decided by the relay after a call
has passed everything here (so a refused call never spends a rate token).

Rule names in verdicts are dotted paths into the profile (`tools.read_file.args.path`,
`policy.sampling`) or `protocol.*` for rules of mcpwrap itself, so an audit record says
which line of which file decided.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote

from mcpwrap.config.profile import Access, PolicySpec, Profile, Selection, ToolClass, ToolSpec
from mcpwrap.policy.constraints import Resolver, check_value

# JSON-RPC error codes (MCP reserves -32020..-32099 for itself: none of ours live there).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"


class Refusal(enum.Enum):
    """How a refused request is answered."""

    ERROR = "error"  # a JSON-RPC error (unknown tool, method not offered)
    RESULT = "result"  # a tool result with isError: the model reads why


class Verdict(NamedTuple):
    allowed: bool
    rule: str
    reason: str = ""
    refusal: Refusal = Refusal.ERROR
    code: int = INVALID_PARAMS


ALLOW = Verdict(True, "")


def allow(rule: str) -> Verdict:
    return Verdict(True, rule)


def refuse(rule: str, reason: str, code: int = INVALID_PARAMS) -> Verdict:
    return Verdict(False, rule, reason, Refusal.ERROR, code)


def refuse_result(rule: str, reason: str) -> Verdict:
    return Verdict(False, rule, reason, Refusal.RESULT)


# --- tools -----------------------------------------------------------------------------


class CallVerdict(NamedTuple):
    verdict: Verdict
    tool: ToolSpec | None


def decide_call(profile: Profile, params: object, *, cwd: str, resolve: Resolver) -> CallVerdict:
    """The static part of a tools/call decision: tool known, class, arguments."""
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        return CallVerdict(refuse("protocol.params", "tools/call needs params.name"), None)
    name: str = params["name"]
    tool = profile.tool(name)
    if tool is None:
        return CallVerdict(refuse("policy.default", f"Unknown tool: {name}"), None)
    if params.get("task") is not None:
        reason = "task-augmented calls are not supported through mcpwrap (tasks are stripped)"
        return CallVerdict(refuse("protocol.tasks", reason), tool)
    verdict = _class_verdict(tool)
    if verdict.allowed:
        verdict = _arguments_verdict(tool, params.get("arguments"), cwd, resolve)
    return CallVerdict(verdict, tool)


def _class_verdict(tool: ToolSpec) -> Verdict:
    if tool.cls is ToolClass.ADMIN:
        reason = (
            f"tool {tool.name!r} is class admin; admin tools are never reachable with a "
            "runtime token, so mcpwrap run refuses every call to them"
        )
        return refuse_result(f"tools.{tool.name}.class", reason)
    return ALLOW


def _arguments_verdict(tool: ToolSpec, arguments: object, cwd: str, resolve: Resolver) -> Verdict:
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return refuse("protocol.params", "tools/call arguments must be an object")
    for arg, constraint in tool.args.items():
        if arg not in arguments:
            continue  # the server's own default applies; the schema says if it is required
        reason = check_value(arguments[arg], constraint, cwd=cwd, resolve=resolve)
        if reason is not None:
            rule = f"tools.{tool.name}.args.{arg}"
            return refuse_result(rule, f"argument {arg!r} refused: {reason}")
    return ALLOW


def concurrency_verdict(tool: ToolSpec, in_flight: int) -> Verdict:
    if tool.concurrency is not None and in_flight >= tool.concurrency:
        reason = (
            f"tool {tool.name!r} already has {in_flight} calls in flight (limit {tool.concurrency})"
        )
        return refuse_result(f"tools.{tool.name}.concurrency", reason)
    return ALLOW


def rate_verdict(tool: ToolSpec, wait_seconds: float) -> Verdict:
    if wait_seconds <= 0 or tool.rate is None:
        return ALLOW
    reason = (
        f"tool {tool.name!r} is over its rate of {tool.rate.count} per "
        f"{_per(tool.rate.per_seconds)}; retry in {wait_seconds:.1f} s"
    )
    return refuse_result(f"tools.{tool.name}.rate", reason)


def call_timeout(profile: Profile, tool: ToolSpec) -> float:
    return tool.timeout if tool.timeout is not None else profile.policy.timeout


def visible_tools(profile: Profile, tools: list[Any]) -> list[Any]:
    """The tools of one tools/list page that the client may see."""
    return [t for t in tools if isinstance(t, dict) and _tool_visible(profile, t.get("name"))]


def _tool_visible(profile: Profile, name: object) -> bool:
    return isinstance(name, str) and profile.tool(name) is not None


# --- other client requests -------------------------------------------------------------

_PASS_THROUGH = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "logging/setLevel",
        "subscriptions/listen",
    }
)
_RESOURCE_LISTS = frozenset({"resources/list", "resources/templates/list"})
_RESOURCE_BY_URI = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})


def decide_client_request(policy: PolicySpec, method: str, params: object) -> Verdict:
    """Client requests other than tools/call."""
    if method in _PASS_THROUGH:
        return allow(f"protocol.{method}")
    if method in _RESOURCE_LISTS:
        return _selection_verdict(policy.resources, "resources", None)
    if method in _RESOURCE_BY_URI:
        return _selection_verdict(policy.resources, "resources", _param(params, "uri"))
    if method == "prompts/list":
        return _selection_verdict(policy.prompts, "prompts", None)
    if method == "prompts/get":
        return _selection_verdict(policy.prompts, "prompts", _param(params, "name"))
    if method == "completion/complete":
        return _completion_verdict(policy, params)
    if method.startswith("tasks/"):
        return refuse("protocol.tasks", "tasks are not offered through mcpwrap", METHOD_NOT_FOUND)
    return refuse("protocol.unknown_method", f"method {method!r} is not relayed", METHOD_NOT_FOUND)


def _param(params: object, key: str) -> str:
    value = params.get(key) if isinstance(params, dict) else None
    return value if isinstance(value, str) else ""


def _selection_verdict(sel: Selection, kind: str, name: str | None) -> Verdict:
    rule = f"policy.{kind}"
    if not sel.allow_all and not sel.patterns:
        return refuse(rule, f"{kind} are denied by the profile", METHOD_NOT_FOUND)
    if name is None or sel.allow_all:
        return allow(rule)
    if kind == "resources" and _has_dot_segments(name):
        # A glob's "*" also matches "/" and "..": file:///proj/* must not admit
        # file:///proj/../etc/passwd, nor its percent-encoded spelling.
        return refuse(rule, f"resource {name!r} has . or .. path segments")
    if sel.allows(name):
        return allow(rule)
    return refuse(rule, f"{kind[:-1]} {name!r} is not allowed by the profile")


def _has_dot_segments(uri: str) -> bool:
    path = unquote(uri.split("?", 1)[0].split("#", 1)[0])
    return any(segment in (".", "..") for segment in re.split(r"[/\\]", path))


def _completion_verdict(policy: PolicySpec, params: object) -> Verdict:
    ref = params.get("ref") if isinstance(params, dict) else None
    if not isinstance(ref, dict):
        return refuse("protocol.params", "completion/complete needs params.ref")
    if ref.get("type") == "ref/prompt":
        return _selection_verdict(policy.prompts, "prompts", _param(ref, "name"))
    if ref.get("type") == "ref/resource":
        return _selection_verdict(policy.resources, "resources", _param(ref, "uri"))
    return refuse("protocol.params", f"unknown completion ref type {ref.get('type')!r}")


def filter_listing(sel: Selection, items: list[Any], key: str) -> list[Any]:
    """Entries of a resources/prompts listing page that the selection allows."""
    return [i for i in items if isinstance(i, dict) and sel.allows(str(i.get(key, "")))]


# --- server-initiated requests and notifications ---------------------------------------

_SERVER_REQUEST_RULES = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


def decide_server_request(policy: PolicySpec, method: str) -> Verdict:
    if method == "ping":
        return allow("protocol.ping")
    kind = _SERVER_REQUEST_RULES.get(method)
    if kind is not None:
        return _access_verdict(policy, kind, method)
    if method.startswith("tasks/"):
        return refuse("protocol.tasks", "tasks are not offered through mcpwrap", METHOD_NOT_FOUND)
    return refuse("protocol.unknown_method", f"method {method!r} is not relayed", METHOD_NOT_FOUND)


def _access_verdict(policy: PolicySpec, kind: str, method: str) -> Verdict:
    access: Access = getattr(policy, kind)
    if access is Access.ALLOW:
        return allow(f"policy.{kind}")
    return refuse(
        f"policy.{kind}", f"{method} is denied by the profile (policy.{kind})", METHOD_NOT_FOUND
    )


def decide_input_requests(policy: PolicySpec, result: object) -> Verdict:
    """2026-07-28: an input_required result embeds server-to-client requests."""
    if not isinstance(result, dict) or result.get("resultType") != "input_required":
        return ALLOW
    requests = result.get("inputRequests")
    if requests is None:
        return ALLOW  # only requestState: nothing is asked of the client
    if not isinstance(requests, dict):
        return refuse("protocol.input_requests", "inputRequests must be an object")
    for request in requests.values():
        method = request.get("method") if isinstance(request, dict) else None
        verdict = decide_server_request(policy, method if isinstance(method, str) else "")
        if not verdict.allowed:
            return verdict
    return ALLOW


_CLIENT_NOTIFICATIONS = frozenset(
    {"notifications/initialized", "notifications/cancelled", "notifications/progress"}
)


def decide_client_notification(policy: PolicySpec, method: str) -> Verdict:
    if method in _CLIENT_NOTIFICATIONS:
        return allow(f"protocol.{method}")
    if method == "notifications/roots/list_changed":
        return _access_verdict(policy, "roots", method)
    return refuse("protocol.unknown_notification", f"notification {method!r} is not relayed")


_SERVER_NOTIFICATIONS = frozenset(
    {
        "notifications/message",
        "notifications/progress",
        "notifications/cancelled",
        "notifications/tools/list_changed",
        "notifications/subscriptions/acknowledged",
    }
)
_SERVER_NOTIFICATION_RULES = {
    "notifications/resources/updated": "resources",
    "notifications/resources/list_changed": "resources",
    "notifications/prompts/list_changed": "prompts",
}


def decide_server_notification(policy: PolicySpec, method: str) -> Verdict:
    if method in _SERVER_NOTIFICATIONS:
        return allow(f"protocol.{method}")
    kind = _SERVER_NOTIFICATION_RULES.get(method)
    if kind is not None:
        return _selection_verdict(getattr(policy, kind), kind, None)
    if method == "notifications/elicitation/complete":
        return _access_verdict(policy, "elicitation", method)
    return refuse("protocol.unknown_notification", f"notification {method!r} is not relayed")


# --- capabilities ----------------------------------------------------------------------


def client_capabilities(policy: PolicySpec, caps: Mapping[str, Any]) -> dict[str, Any] | None:
    """Client capabilities without what the profile denies; None when nothing changes.

    A server that never sees `sampling` never asks for it: refusing at the source keeps
    well-behaved servers from failing half-way through a tool call.
    """
    drop = {
        kind
        for kind in ("sampling", "elicitation", "roots")
        if getattr(policy, kind) is Access.DENY
    }
    drop.add("tasks")
    return _without(caps, drop)


def server_capabilities(policy: PolicySpec, caps: Mapping[str, Any]) -> dict[str, Any] | None:
    """Server capabilities without tasks and without what the profile denies."""
    drop = {"tasks"}
    if not policy.resources.allow_all and not policy.resources.patterns:
        drop.add("resources")
    if not policy.prompts.allow_all and not policy.prompts.patterns:
        drop.add("prompts")
    return _without(caps, drop)


def _without(caps: Mapping[str, Any], drop: set[str]) -> dict[str, Any] | None:
    extensions = caps.get("extensions")
    has_task_ext = isinstance(extensions, dict) and TASKS_EXTENSION in extensions
    if not has_task_ext and not drop.intersection(caps):
        return None
    out = {k: v for k, v in caps.items() if k not in drop}
    if has_task_ext:
        assert isinstance(extensions, dict)
        out["extensions"] = {k: v for k, v in extensions.items() if k != TASKS_EXTENSION}
    return out


def _per(seconds: float) -> str:
    names = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
    return names.get(seconds, f"{seconds:g} s")
