"""What a token lets through, intersected with the profile: pure decisions.

A token is a permission container: its tools, classes, rate and concurrency narrow what
the profile allows, never widen it (the stricter limit wins). Admin tools are never
reachable with a runtime token. The run's token can change while it runs (revoked,
rotated), so the relay asks with the current `TokenState` on every call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from mcpwrap.config.profile import AuthSpec, ToolClass, ToolSpec
from mcpwrap.policy import decisions as policy
from mcpwrap.policy.decisions import Verdict

if TYPE_CHECKING:
    from mcpwrap.basics.units import Rate
    from mcpwrap.identity.tokens import Token

ADMIN_NEVER = "admin tools are never reachable with a runtime token"


class TokenState(NamedTuple):
    token: Token | None
    revoked: bool = False


def call_verdict(spec: AuthSpec, state: TokenState, tool: ToolSpec, now: float) -> Verdict:
    """May this tool be called with the run's token (or without one)?"""
    token = state.token
    if token is None:
        if not spec.needs_token(tool.cls):
            return policy.allow("auth")
        return policy.refuse_result(
            "auth.required",
            f"tool {tool.name!r} is class {tool.cls.value} and this profile needs a token "
            f"for {_calls(spec)} ([auth] required): start mcpwrap run with "
            "--token-name NAME, or with the token in MCPWRAP_TOKEN",
        )
    if state.revoked:
        return policy.refuse_result("token.revoked", f"token {token.id} was revoked")
    from mcpwrap.identity.tokens import allows_tool, time_verdict

    late = time_verdict(token, now)
    if late is not None:
        return policy.refuse_result(*late)
    if not allows_tool(token.scope, tool.name):
        tools = ", ".join(token.scope.tools)
        return policy.refuse_result(
            "token.tools", f"token {token.id} does not allow tool {tool.name!r} (it allows {tools})"
        )
    if tool.cls is ToolClass.ADMIN:
        return policy.refuse_result("token.class", f"tool {tool.name!r} is admin: {ADMIN_NEVER}")
    if tool.cls.value not in token.scope.classes:
        classes = ", ".join(sorted(token.scope.classes))
        return policy.refuse_result(
            "token.class",
            f"tool {tool.name!r} is class {tool.cls.value}; token {token.id} carries {classes}",
        )
    return policy.allow("auth")


def _calls(spec: AuthSpec) -> str:
    return "every call" if spec.required is ToolClass.READ else "write and admin calls"


def visible(spec: AuthSpec, state: TokenState, tool: ToolSpec, now: float) -> bool:
    """Listed only if callable: a tool outside the token's scope is hidden."""
    return call_verdict(spec, state, tool, now).allowed


def concurrency_verdict(state: TokenState, in_flight: int) -> Verdict:
    """The token's own limit on calls at once, over all its tools."""
    token = state.token
    limit = token.scope.concurrency if token is not None else None
    if limit is None or in_flight < limit:
        return policy.allow("auth")
    assert token is not None
    return policy.refuse_result(
        "token.concurrency",
        f"token {token.id} allows {limit} calls at once and {in_flight} are running",
    )


def token_rate(state: TokenState) -> Rate | None:
    """The token's own rate over all its tools, if it sets one."""
    token = state.token
    if token is None or token.scope.rate is None:
        return None
    from mcpwrap.basics.units import parse_rate

    return parse_rate(token.scope.rate)


def tenant_problem(spec: AuthSpec, token: Token) -> tuple[str, str] | None:
    """A token of a tenant this profile does not serve: refused before anything starts."""
    if not spec.tenants or token.scope.tenant in spec.tenants:
        return None
    served = ", ".join(spec.tenants)
    return (
        "token.tenant",
        f"token {token.id} is for tenant {token.scope.tenant!r}; this profile serves {served}",
    )
