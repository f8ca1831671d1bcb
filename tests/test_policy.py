"""mcpwrap.policy.decisions: message in, verdict out. Profiles come from TOML through parse_profile.

Rules that depend on an enum (Access, ToolClass) are checked for every member, so a new
member without a rule fails here.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from mcpwrap.config.profile import (
    Access,
    Placeholders,
    PolicySpec,
    Profile,
    ToolClass,
    parse_profile,
)
from mcpwrap.policy import decisions as policy
from mcpwrap.policy.decisions import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    TASKS_EXTENSION,
    Refusal,
    Verdict,
    client_capabilities,
    concurrency_verdict,
    decide_call,
    decide_client_notification,
    decide_client_request,
    decide_input_requests,
    decide_server_notification,
    decide_server_request,
    rate_verdict,
    server_capabilities,
    visible_tools,
)

PROJECT = "/srv/proj"


def _profile(body: str, project: str = PROJECT) -> Profile:
    places = Placeholders(project=project, home="/home/u", cwd=project, state="/var/state")
    return parse_profile("version = 1\n" + body, source="<test>", places=places)


def _policy(body: str) -> PolicySpec:
    return _profile(f"[policy]\n{body}\n").policy


TOOLS = """
[tools.read_file]
class = "read"
[tools.read_file.args]
path = { within = ["{project}"] }
mode = { one_of = ["text", "base64"] }

[tools.write_file]
class = "write"
concurrency = 2
rate = "10/min"

[tools.admin_tool]
class = "admin"
"""


@pytest.fixture
def project(tmp_path: Path) -> str:
    proj = tmp_path.resolve() / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "escape").symlink_to(tmp_path.resolve())
    return str(proj)


def _call(profile: Profile, params: object, project: str) -> policy.CallVerdict:
    return decide_call(profile, params, cwd=project, resolve=os.path.realpath)


def _assert_verdict(
    verdict: Verdict, allowed: bool, rule: str, refusal: Refusal | None, code: int | None
) -> None:
    assert verdict.allowed is allowed, verdict
    assert verdict.rule == rule
    if refusal is not None:
        assert verdict.refusal is refusal
    if code is not None:
        assert verdict.code == code


# --- tools/call --------------------------------------------------------------------------

R, E = Refusal.RESULT, Refusal.ERROR

CALLS = [
    ("known-no-args", {"name": "read_file"}, True, "", None, None, None),
    ("arguments-null", {"name": "read_file", "arguments": None}, True, "", None, None, None),
    (
        "args-pass",
        {"name": "read_file", "arguments": {"path": "sub/x", "mode": "text", "other": 1}},
        True,
        "",
        None,
        None,
        None,
    ),
    (
        "args-path-escapes",
        {"name": "read_file", "arguments": {"path": "../x"}},
        False,
        "tools.read_file.args.path",
        R,
        None,
        "argument 'path' refused",
    ),
    (
        "args-symlink-escapes",
        {"name": "read_file", "arguments": {"path": "escape/x"}},
        False,
        "tools.read_file.args.path",
        R,
        None,
        "resolves outside",
    ),
    (
        "args-second-constraint",
        {"name": "read_file", "arguments": {"path": "sub", "mode": "raw"}},
        False,
        "tools.read_file.args.mode",
        R,
        None,
        "argument 'mode' refused",
    ),
    (
        "arguments-array",
        {"name": "read_file", "arguments": [{"path": "../x"}]},
        False,
        "protocol.params",
        E,
        INVALID_PARAMS,
        "arguments must be an object",
    ),
    (
        "arguments-string",
        {"name": "read_file", "arguments": "../x"},
        False,
        "protocol.params",
        E,
        INVALID_PARAMS,
        "arguments must be an object",
    ),
    (
        "unknown-tool",
        {"name": "delete_everything"},
        False,
        "policy.default",
        E,
        INVALID_PARAMS,
        "Unknown tool: delete_everything",
    ),
    (
        "unknown-tool-with-task",
        {"name": "nope", "task": {"ttl": 1}},
        False,
        "policy.default",
        E,
        INVALID_PARAMS,
        "Unknown tool: nope",
    ),
    (
        "admin",
        {"name": "admin_tool", "arguments": {}},
        False,
        "tools.admin_tool.class",
        R,
        None,
        "class admin",
    ),
    (
        "admin-bad-arguments",
        {"name": "admin_tool", "arguments": "x"},
        False,
        "tools.admin_tool.class",
        R,
        None,
        "class admin",
    ),
    (
        "task",
        {"name": "read_file", "task": {"ttl": 60000}},
        False,
        "protocol.tasks",
        E,
        INVALID_PARAMS,
        "task-augmented",
    ),
    (
        "task-empty",
        {"name": "write_file", "task": {}},
        False,
        "protocol.tasks",
        E,
        None,
        "task",
    ),
    ("task-null", {"name": "read_file", "task": None}, True, "", None, None, None),
    ("no-name", {"arguments": {}}, False, "protocol.params", E, INVALID_PARAMS, "params.name"),
    ("name-number", {"name": 7}, False, "protocol.params", E, INVALID_PARAMS, "params.name"),
    ("name-null", {"name": None}, False, "protocol.params", E, None, "params.name"),
    ("params-null", None, False, "protocol.params", E, INVALID_PARAMS, "params.name"),
    ("params-array", ["read_file"], False, "protocol.params", E, None, "params.name"),
    ("params-string", "read_file", False, "protocol.params", E, None, "params.name"),
]


@pytest.mark.parametrize(
    ("params", "allowed", "rule", "refusal", "code", "words"),
    [c[1:] for c in CALLS],
    ids=[c[0] for c in CALLS],
)
def test_decide_call(
    project: str,
    params: object,
    allowed: bool,
    rule: str,
    refusal: Refusal | None,
    code: int | None,
    words: str | None,
) -> None:
    decided = _call(_profile(TOOLS, project), params, project)
    _assert_verdict(decided.verdict, allowed, rule, refusal, code)
    if words is not None:
        assert words in decided.verdict.reason
    if allowed:
        assert decided.tool is not None
        assert isinstance(params, dict)
        assert decided.tool.name == params["name"]


def test_unknown_tool_has_no_spec(project: str) -> None:
    assert _call(_profile(TOOLS, project), {"name": "nope"}, project).tool is None


@pytest.mark.parametrize("default", list(Access), ids=lambda a: a.value)
def test_default_decides_unnamed_tools(project: str, default: Access) -> None:
    profile = _profile(f'[policy]\ndefault = "{default.value}"\n{TOOLS}', project)
    decided = _call(profile, {"name": "unlisted", "arguments": {"path": "/etc"}}, project)
    if default is Access.ALLOW:
        assert decided.verdict.allowed
        assert decided.tool is not None
        assert decided.tool.cls is ToolClass.WRITE
        assert dict(decided.tool.args) == {}
    else:
        _assert_verdict(decided.verdict, False, "policy.default", E, INVALID_PARAMS)
        assert decided.verdict.reason == "Unknown tool: unlisted"
    # Named tools keep their own rules under either default.
    escaped = _call(profile, {"name": "read_file", "arguments": {"path": "/etc"}}, project)
    _assert_verdict(escaped.verdict, False, "tools.read_file.args.path", R, None)
    admin = _call(profile, {"name": "admin_tool"}, project)
    _assert_verdict(admin.verdict, False, "tools.admin_tool.class", R, None)


@pytest.mark.parametrize("cls", list(ToolClass), ids=lambda c: c.value)
def test_every_tool_class(project: str, cls: ToolClass) -> None:
    profile = _profile(f'[tools.t]\nclass = "{cls.value}"\n', project)
    decided = _call(profile, {"name": "t", "arguments": {}}, project)
    assert decided.tool is not None
    assert decided.tool.cls is cls
    if cls is ToolClass.ADMIN:
        _assert_verdict(decided.verdict, False, "tools.t.class", R, None)
    else:
        assert decided.verdict.allowed


# --- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "in_flight", "allowed"),
    [
        ("write_file", 0, True),
        ("write_file", 1, True),
        ("write_file", 2, False),
        ("write_file", 50, False),
        ("read_file", 0, True),
        ("read_file", 10_000, True),
    ],
    ids=["limited-0", "limited-1", "limited-at", "limited-over", "free-0", "free-many"],
)
def test_concurrency_verdict(tool: str, in_flight: int, allowed: bool) -> None:
    spec = _profile(TOOLS).tools[tool]
    verdict = concurrency_verdict(spec, in_flight)
    if allowed:
        assert verdict.allowed
    else:
        _assert_verdict(verdict, False, f"tools.{tool}.concurrency", R, None)
        assert f"{in_flight} calls in flight (limit 2)" in verdict.reason


@pytest.mark.parametrize(
    ("rate", "wait", "allowed", "words"),
    [
        ('"10/min"', 0.0, True, ""),
        ('"10/min"', -1.0, True, ""),
        ('"10/min"', 0.04, False, "10 per minute; retry in 0.0 s"),
        ('"10/min"', 5.96, False, "10 per minute; retry in 6.0 s"),
        ('"3/s"', 0.2, False, "3 per second"),
        ('"100/hour"', 36.0, False, "100 per hour"),
        ('"5/day"', 3600.0, False, "5 per day"),
        (None, 5.0, True, ""),
    ],
    ids=["no-wait", "negative", "tiny-wait", "wait", "second", "hour", "day", "no-rate"],
)
def test_rate_verdict(rate: str | None, wait: float, allowed: bool, words: str) -> None:
    body = '[tools.t]\nclass = "read"\n' + (f"rate = {rate}\n" if rate else "")
    verdict = rate_verdict(_profile(body).tools["t"], wait)
    if allowed:
        assert verdict.allowed
    else:
        _assert_verdict(verdict, False, "tools.t.rate", R, None)
        assert words in verdict.reason


# --- tools/list --------------------------------------------------------------------------

PAGE: list[Any] = [
    {"name": "read_file", "description": "reads"},
    {"name": "hidden"},
    "read_file",
    None,
    ["read_file"],
    {"name": 5},
    {"description": "no name"},
    {"name": "admin_tool"},
    {"name": "write_file", "inputSchema": {}},
]


@pytest.mark.parametrize(
    ("default", "expected"),
    [
        ("deny", ["read_file", "admin_tool", "write_file"]),
        ("allow", ["read_file", "hidden", "admin_tool", "write_file"]),
    ],
    ids=["deny", "allow"],
)
def test_visible_tools(default: str, expected: list[str]) -> None:
    profile = _profile(f'[policy]\ndefault = "{default}"\n{TOOLS}')
    shown = visible_tools(profile, PAGE)
    assert [t["name"] for t in shown] == expected
    assert all(any(t is p for p in PAGE) for t in shown)  # entries pass through untouched


@pytest.mark.parametrize("page", [[], [None, 1, "x"]], ids=["empty", "junk-only"])
def test_visible_tools_empty(page: list[Any]) -> None:
    assert visible_tools(_profile(TOOLS), page) == []


# --- other client requests ---------------------------------------------------------------

POLICIES = {
    "default": "",
    "open": 'resources = "allow"\nprompts = "allow"',
    "closed": 'resources = "deny"\nprompts = "deny"',
    "globs": 'resources = ["file:///proj/*", "mem://exact"]\nprompts = ["greet", "code_*"]',
}

PASS = (True, None)
NOT_OFFERED = (False, METHOD_NOT_FOUND)
NOT_ALLOWED = (False, INVALID_PARAMS)

# (method, params, rule, {policy: (allowed, code)})
CLIENT_REQUESTS: list[tuple[str, str, object, str, dict[str, tuple[bool, int | None]]]] = []


def _all(outcome: tuple[bool, int | None]) -> dict[str, tuple[bool, int | None]]:
    return dict.fromkeys(POLICIES, outcome)


for _method in sorted(policy._PASS_THROUGH):
    CLIENT_REQUESTS.append((_method, _method, {}, f"protocol.{_method}", _all(PASS)))

_RES = {"default": NOT_OFFERED, "open": PASS, "closed": NOT_OFFERED, "globs": PASS}
_RES_NO = {"default": NOT_OFFERED, "open": PASS, "closed": NOT_OFFERED, "globs": NOT_ALLOWED}
_PROMPT = {"default": PASS, "open": PASS, "closed": NOT_OFFERED, "globs": PASS}
_PROMPT_NO = {"default": PASS, "open": PASS, "closed": NOT_OFFERED, "globs": NOT_ALLOWED}
_URI_OK = {"uri": "file:///proj/a.txt"}
_URI_NO = {"uri": "file:///etc/passwd"}

CLIENT_REQUESTS += [
    ("resources/list", "resources/list", {}, "policy.resources", _RES),
    ("templates/list", "resources/templates/list", {}, "policy.resources", _RES),
    ("read-ok", "resources/read", _URI_OK, "policy.resources", _RES),
    ("read-exact", "resources/read", {"uri": "mem://exact"}, "policy.resources", _RES),
    ("read-no", "resources/read", _URI_NO, "policy.resources", _RES_NO),
    ("read-exact-longer", "resources/read", {"uri": "mem://exactly"}, "policy.resources", _RES_NO),
    ("read-no-uri", "resources/read", {}, "policy.resources", _RES_NO),
    ("read-uri-number", "resources/read", {"uri": 5}, "policy.resources", _RES_NO),
    ("read-params-null", "resources/read", None, "policy.resources", _RES_NO),
    ("subscribe-ok", "resources/subscribe", _URI_OK, "policy.resources", _RES),
    ("subscribe-no", "resources/subscribe", _URI_NO, "policy.resources", _RES_NO),
    ("unsubscribe-ok", "resources/unsubscribe", _URI_OK, "policy.resources", _RES),
    ("unsubscribe-no", "resources/unsubscribe", _URI_NO, "policy.resources", _RES_NO),
    ("prompts/list", "prompts/list", {}, "policy.prompts", _PROMPT),
    ("get-ok", "prompts/get", {"name": "greet"}, "policy.prompts", _PROMPT),
    ("get-glob", "prompts/get", {"name": "code_review"}, "policy.prompts", _PROMPT),
    ("get-no", "prompts/get", {"name": "jailbreak"}, "policy.prompts", _PROMPT_NO),
    ("get-prefix-only", "prompts/get", {"name": "greeting"}, "policy.prompts", _PROMPT_NO),
    (
        "complete-prompt-ok",
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "code_x"}, "argument": {}},
        "policy.prompts",
        _PROMPT,
    ),
    (
        "complete-prompt-no",
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "other"}},
        "policy.prompts",
        _PROMPT_NO,
    ),
    (
        "complete-resource-ok",
        "completion/complete",
        {"ref": {"type": "ref/resource", "uri": "file:///proj/{name}"}},
        "policy.resources",
        _RES,
    ),
    (
        "complete-resource-no",
        "completion/complete",
        {"ref": {"type": "ref/resource", "uri": "file:///etc/{x}"}},
        "policy.resources",
        _RES_NO,
    ),
    (
        "complete-unknown-ref",
        "completion/complete",
        {"ref": {"type": "ref/tool", "name": "x"}},
        "protocol.params",
        _all(NOT_ALLOWED),
    ),
    ("complete-no-ref", "completion/complete", {}, "protocol.params", _all(NOT_ALLOWED)),
    (
        "complete-ref-string",
        "completion/complete",
        {"ref": "ref/prompt"},
        "protocol.params",
        _all(NOT_ALLOWED),
    ),
    ("tasks/get", "tasks/get", {"taskId": "t"}, "protocol.tasks", _all(NOT_OFFERED)),
    ("tasks/result", "tasks/result", {"taskId": "t"}, "protocol.tasks", _all(NOT_OFFERED)),
    ("tasks/list", "tasks/list", {}, "protocol.tasks", _all(NOT_OFFERED)),
    ("tasks/cancel", "tasks/cancel", {"taskId": "t"}, "protocol.tasks", _all(NOT_OFFERED)),
    ("unknown", "sampling/createMessage", {}, "protocol.unknown_method", _all(NOT_OFFERED)),
    ("tools/call-not-here", "tools/call", {}, "protocol.unknown_method", _all(NOT_OFFERED)),
    ("empty-method", "", {}, "protocol.unknown_method", _all(NOT_OFFERED)),
    ("case-differs", "Tools/List", {}, "protocol.unknown_method", _all(NOT_OFFERED)),
]


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize(
    ("method", "params", "rule", "outcomes"),
    [c[1:] for c in CLIENT_REQUESTS],
    ids=[c[0] for c in CLIENT_REQUESTS],
)
def test_decide_client_request(
    policy_name: str,
    method: str,
    params: object,
    rule: str,
    outcomes: dict[str, tuple[bool, int | None]],
) -> None:
    allowed, code = outcomes[policy_name]
    verdict = decide_client_request(_policy(POLICIES[policy_name]), method, params)
    _assert_verdict(verdict, allowed, rule, None if allowed else E, code)


def test_client_request_table_covers_every_known_method() -> None:
    known = (
        policy._PASS_THROUGH
        | policy._RESOURCE_LISTS
        | policy._RESOURCE_BY_URI
        | {"prompts/list", "prompts/get", "completion/complete"}
    )
    assert known <= {method for _, method, *_ in CLIENT_REQUESTS}


@pytest.mark.parametrize(
    "uri",
    [
        "file:///proj/../etc/passwd",
        "file:///proj/sub/../../etc/passwd",
        "file:///proj/%2e%2e/etc/passwd",
    ],
    ids=["dotdot", "deep-dotdot", "encoded-dotdot"],
)
def test_resource_glob_does_not_match_dot_segments(uri: str) -> None:
    """Regression: globs match the raw URI with fnmatch, whose "*" also matches "/" and
    "..". With
    resources = ["file:///proj/*"], resources/read of "file:///proj/../etc/passwd" is
    allowed, though RFC 3986 dot-segment removal (and any server that maps the URI to a
    path) makes it file:///etc/passwd. URIs holding dot segments are refused."""
    verdict = decide_client_request(_policy(POLICIES["globs"]), "resources/read", {"uri": uri})
    assert not verdict.allowed


# --- server-initiated requests -----------------------------------------------------------

SERVER_KINDS = {
    "sampling": "sampling/createMessage",
    "elicitation": "elicitation/create",
    "roots": "roots/list",
}


@pytest.mark.parametrize("access", list(Access), ids=lambda a: a.value)
@pytest.mark.parametrize("kind", list(SERVER_KINDS))
def test_decide_server_request_per_access(kind: str, access: Access) -> None:
    verdict = decide_server_request(_policy(f'{kind} = "{access.value}"'), SERVER_KINDS[kind])
    if access is Access.ALLOW:
        _assert_verdict(verdict, True, f"policy.{kind}", None, None)
    else:
        _assert_verdict(verdict, False, f"policy.{kind}", E, METHOD_NOT_FOUND)
        assert f"policy.{kind}" in verdict.reason


@pytest.mark.parametrize(
    ("method", "allowed", "rule"),
    [
        ("ping", True, "protocol.ping"),
        ("tasks/get", False, "protocol.tasks"),
        ("tasks/result", False, "protocol.tasks"),
        ("tasks/list", False, "protocol.tasks"),
        ("tools/call", False, "protocol.unknown_method"),
        ("sampling/createmessage", False, "protocol.unknown_method"),
        ("", False, "protocol.unknown_method"),
    ],
    ids=["ping", "tasks-get", "tasks-result", "tasks-list", "tools-call", "case", "empty"],
)
def test_decide_server_request_fixed(method: str, allowed: bool, rule: str) -> None:
    everything = _policy('sampling = "allow"\nelicitation = "allow"\nroots = "allow"')
    for spec in (everything, PolicySpec()):
        verdict = decide_server_request(spec, method)
        _assert_verdict(verdict, allowed, rule, None, None if allowed else METHOD_NOT_FOUND)


def test_server_request_defaults() -> None:
    """The defaults of PROFILE.md: sampling denied, elicitation and roots allowed."""
    spec = _profile("").policy
    assert not decide_server_request(spec, "sampling/createMessage").allowed
    assert decide_server_request(spec, "elicitation/create").allowed
    assert decide_server_request(spec, "roots/list").allowed


# --- 2026-07-28 input_required results ---------------------------------------------------


def _input_required(*methods: object, result_type: str = "input_required") -> dict[str, Any]:
    requests = {
        f"r{i}": ({"method": m, "params": {}} if isinstance(m, str) else m)
        for i, m in enumerate(methods)
    }
    return {"resultType": result_type, "inputRequests": requests, "requestState": "opaque"}


@pytest.mark.parametrize(
    ("sampling", "elicitation", "roots"),
    list(itertools.product(Access, repeat=3)),
    ids=lambda a: a.value,
)
def test_input_requests_per_access(sampling: Access, elicitation: Access, roots: Access) -> None:
    spec = _policy(
        f'sampling = "{sampling.value}"\nelicitation = "{elicitation.value}"\n'
        f'roots = "{roots.value}"'
    )
    access = {"sampling": sampling, "elicitation": elicitation, "roots": roots}
    for kind, method in SERVER_KINDS.items():
        verdict = decide_input_requests(spec, _input_required(method))
        expected = access[kind] is Access.ALLOW
        assert verdict.allowed is expected
        if not expected:
            _assert_verdict(verdict, False, f"policy.{kind}", E, METHOD_NOT_FOUND)
    # All three together pass only if every one is allowed.
    together = decide_input_requests(spec, _input_required(*SERVER_KINDS.values()))
    assert together.allowed is all(a is Access.ALLOW for a in access.values())


@pytest.mark.parametrize(
    ("result", "allowed", "rule"),
    [
        (_input_required("elicitation/create", "sampling/createMessage"), False, "policy.sampling"),
        (_input_required("roots/list", "elicitation/create"), True, ""),
        (_input_required(), True, ""),
        (_input_required("tasks/get"), False, "protocol.tasks"),
        (_input_required("ping"), True, ""),
        (_input_required("evil/method"), False, "protocol.unknown_method"),
        (_input_required("roots/list", "x"), False, "protocol.unknown_method"),
        (_input_required({"params": {}}), False, "protocol.unknown_method"),
        (_input_required({"method": 5}), False, "protocol.unknown_method"),
        (
            {"resultType": "input_required", "inputRequests": {"a": "sampling/createMessage"}},
            False,
            "protocol.unknown_method",
        ),
        (_input_required(None), False, "protocol.unknown_method"),
        (_input_required("sampling/createMessage", result_type="complete"), True, ""),
        ({"inputRequests": {"a": {"method": "sampling/createMessage"}}}, True, ""),
        ({"content": [], "isError": False}, True, ""),
        (None, True, ""),
        ([_input_required("sampling/createMessage")], True, ""),
    ],
    ids=[
        "denied-among-allowed",
        "all-allowed",
        "no-requests",
        "tasks",
        "ping",
        "unknown",
        "unknown-after-allowed",
        "no-method",
        "method-number",
        "string-entry",
        "null-entry",
        "complete-result",
        "no-result-type",
        "plain-result",
        "null-result",
        "array-result",
    ],
)
def test_decide_input_requests(result: object, allowed: bool, rule: str) -> None:
    spec = _policy('sampling = "deny"\nelicitation = "allow"\nroots = "allow"')
    verdict = decide_input_requests(spec, result)
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.rule == rule


# --- notifications -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    ["notifications/initialized", "notifications/cancelled", "notifications/progress"],
)
def test_client_notifications_always_relayed(method: str) -> None:
    for spec in (PolicySpec(), _policy(POLICIES["closed"])):
        _assert_verdict(
            decide_client_notification(spec, method), True, f"protocol.{method}", None, None
        )


@pytest.mark.parametrize("access", list(Access), ids=lambda a: a.value)
def test_client_roots_list_changed(access: Access) -> None:
    verdict = decide_client_notification(
        _policy(f'roots = "{access.value}"'), "notifications/roots/list_changed"
    )
    assert verdict.allowed is (access is Access.ALLOW)
    assert verdict.rule == "policy.roots"


@pytest.mark.parametrize(
    "method",
    [
        "notifications/tasks/status",
        "notifications/message",
        "notifications/tools/list_changed",
        "notifications/unknown",
        "",
    ],
)
def test_client_notifications_refused(method: str) -> None:
    verdict = decide_client_notification(PolicySpec(), method)
    _assert_verdict(verdict, False, "protocol.unknown_notification", E, None)


@pytest.mark.parametrize(
    "method",
    [
        "notifications/message",
        "notifications/progress",
        "notifications/cancelled",
        "notifications/tools/list_changed",
        "notifications/subscriptions/acknowledged",
    ],
)
def test_server_notifications_always_relayed(method: str) -> None:
    for spec in (PolicySpec(), _policy(POLICIES["closed"])):
        _assert_verdict(
            decide_server_notification(spec, method), True, f"protocol.{method}", None, None
        )


@pytest.mark.parametrize("policy_name", list(POLICIES))
@pytest.mark.parametrize(
    ("method", "kind"),
    [
        ("notifications/resources/updated", "resources"),
        ("notifications/resources/list_changed", "resources"),
        ("notifications/prompts/list_changed", "prompts"),
    ],
    ids=["resources-updated", "resources-list-changed", "prompts-list-changed"],
)
def test_server_notifications_follow_selections(policy_name: str, method: str, kind: str) -> None:
    spec = _policy(POLICIES[policy_name])
    selection = getattr(spec, kind)
    verdict = decide_server_notification(spec, method)
    assert verdict.allowed is (selection.allow_all or bool(selection.patterns))
    assert verdict.rule == f"policy.{kind}"


@pytest.mark.parametrize("access", list(Access), ids=lambda a: a.value)
def test_server_elicitation_complete(access: Access) -> None:
    verdict = decide_server_notification(
        _policy(f'elicitation = "{access.value}"'), "notifications/elicitation/complete"
    )
    assert verdict.allowed is (access is Access.ALLOW)
    assert verdict.rule == "policy.elicitation"


@pytest.mark.parametrize(
    "method",
    ["notifications/tasks/status", "notifications/initialized", "notifications/x", ""],
)
def test_server_notifications_refused(method: str) -> None:
    verdict = decide_server_notification(_policy(POLICIES["open"]), method)
    _assert_verdict(verdict, False, "protocol.unknown_notification", E, None)


# --- capabilities ------------------------------------------------------------------------

CLIENT_CAPS: dict[str, Any] = {
    "sampling": {"tools": {}},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
    "tasks": {"requests": {"sampling": {"createMessage": {}}}},
    "experimental": {"x": 1},
    "extensions": {TASKS_EXTENSION: {}, "com.example/other": {"v": 1}},
}


@pytest.mark.parametrize(
    ("sampling", "elicitation", "roots"),
    list(itertools.product(Access, repeat=3)),
    ids=lambda a: a.value,
)
def test_client_capabilities(sampling: Access, elicitation: Access, roots: Access) -> None:
    spec = _policy(
        f'sampling = "{sampling.value}"\nelicitation = "{elicitation.value}"\n'
        f'roots = "{roots.value}"'
    )
    before = repr(CLIENT_CAPS)
    out = client_capabilities(spec, CLIENT_CAPS)
    assert repr(CLIENT_CAPS) == before  # the input is not edited in place
    assert out is not None
    access = {"sampling": sampling, "elicitation": elicitation, "roots": roots}
    expected = {k: v for k, v in CLIENT_CAPS.items() if k != "tasks"}
    expected = {k: v for k, v in expected.items() if access.get(k) is not Access.DENY}
    expected["extensions"] = {"com.example/other": {"v": 1}}
    assert out == expected


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ({}, None),
        ({"experimental": {}}, None),
        ({"sampling": {}, "elicitation": {}, "roots": {}}, None),
        ({"extensions": {"com.example/other": {}}}, None),
        ({"extensions": "junk"}, None),
        ({"tasks": {}}, {}),
        ({"tasks": None, "roots": {}}, {"roots": {}}),
        ({"extensions": {TASKS_EXTENSION: {}}}, {"extensions": {}}),
        (
            {"extensions": {TASKS_EXTENSION: {}, "a/b": 1}, "x": 2},
            {"extensions": {"a/b": 1}, "x": 2},
        ),
    ],
    ids=[
        "empty",
        "nothing-to-drop",
        "all-allowed",
        "other-extension",
        "extensions-not-object",
        "tasks",
        "tasks-null",
        "tasks-extension",
        "tasks-extension-among-others",
    ],
)
def test_client_capabilities_when_all_allowed(caps: dict[str, Any], expected: object) -> None:
    spec = _policy('sampling = "allow"\nelicitation = "allow"\nroots = "allow"')
    assert client_capabilities(spec, caps) == expected


SERVER_CAPS: dict[str, Any] = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True},
    "prompts": {"listChanged": True},
    "logging": {},
    "completions": {},
    "tasks": {"list": {}},
    "extensions": {TASKS_EXTENSION: {}, "com.example/x": {}},
}


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_server_capabilities(policy_name: str) -> None:
    spec = _policy(POLICIES[policy_name])
    out = server_capabilities(spec, SERVER_CAPS)
    assert out is not None
    assert "tasks" not in out
    assert out["extensions"] == {"com.example/x": {}}
    for kind in ("resources", "prompts"):
        selection = getattr(spec, kind)
        assert (kind in out) is (selection.allow_all or bool(selection.patterns))
    for kind in ("tools", "logging", "completions"):
        assert out[kind] is SERVER_CAPS[kind]


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ({"tools": {}}, None),
        ({"tools": {}, "resources": {}, "prompts": {}}, None),
        ({"tools": {}, "tasks": {}}, {"tools": {}}),
        ({"extensions": {TASKS_EXTENSION: {}}}, {"extensions": {}}),
    ],
    ids=["tools-only", "all-allowed", "tasks", "tasks-extension"],
)
def test_server_capabilities_unchanged_is_none(caps: dict[str, Any], expected: object) -> None:
    assert server_capabilities(_policy(POLICIES["open"]), caps) == expected


@pytest.mark.parametrize(
    ("policy_name", "kind", "key", "expected"),
    [
        ("open", "resources", "uri", ["file:///proj/a", "file:///etc/passwd", "mem://exact"]),
        ("globs", "resources", "uri", ["file:///proj/a", "mem://exact"]),
        ("closed", "resources", "uri", []),
        ("globs", "prompts", "name", ["greet", "code_review"]),
        ("open", "prompts", "name", ["greet", "code_review", "jailbreak"]),
    ],
    ids=["resources-open", "resources-globs", "resources-closed", "prompts-globs", "prompts-open"],
)
def test_filter_listing(policy_name: str, kind: str, key: str, expected: list[str]) -> None:
    items: dict[str, list[Any]] = {
        "uri": [
            {"uri": "file:///proj/a"},
            {"uri": "file:///etc/passwd"},
            {"uri": "mem://exact"},
            "file:///proj/b",
            None,
        ],
        "name": [{"name": "greet"}, {"name": "code_review"}, {"name": "jailbreak"}, ["greet"]],
    }
    selection = getattr(_policy(POLICIES[policy_name]), kind)
    kept = policy.filter_listing(selection, items[key], key)
    assert [item[key] for item in kept] == expected
