"""Which of the server's tools the client may see and call in this session.

Each tool definition the server lists is compared with its pin in the lock (a new or
changed tool is hidden and refused until `mcpwrap approve`), checked for poisoning
(`[policy] descriptions`), and cleaned of escape sequences and invisible characters
before the client sees it. A tool once blocked stays blocked for the session: a server
that flips a definition back after being caught does not get it through.

No I/O: the relay holds the lock around every call and emits the alerts this returns.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from mcpwrap.config.profile import Descriptions
from mcpwrap.policy.sanitize import clean_text, clean_tool_definition

if TYPE_CHECKING:
    from mcpwrap.policy.poison import Finding
    from mcpwrap.supply.pins import Drift, Lock

# pins and poison are imported where they are used: the first tools/list, not the start
# of every run, pays for them.


_INSTRUCTIONS = 16_000  # instructions may guide a whole server; longer ones are a finding


class Alert(NamedTuple):
    """Something the user must hear about: one audit record, stderr and the client's log."""

    rule: str
    decision: str  # "block", "warn" or "note"
    tool: str | None
    reason: str
    fields: Mapping[str, Any] = {}


class Status(enum.Enum):
    UNKNOWN = "unknown"  # not listed since the session began or the server changed its tools
    OK = "ok"
    BLOCKED = "blocked"
    GONE = "gone"  # pinned, but the server's last full listing did not have it


class CallCheck(NamedTuple):
    status: Status
    rule: str = ""
    reason: str = ""


class Review(NamedTuple):
    tools: list[Any]  # what the client sees: blocked tools removed, the rest cleaned
    changed: bool  # the page must be re-encoded
    alerts: list[Alert]


class Gate:
    def __init__(
        self, lock: Lock | None, descriptions: Descriptions, approve: str = "mcpwrap approve"
    ) -> None:
        self.lock = lock
        self.descriptions = descriptions
        self.approve = approve  # the command that accepts a change, as the user would type it
        self._status: dict[str, CallCheck] = {}
        self._alerted: set[tuple[str, str | None, str]] = set()
        self._complete = False  # a full listing was seen since the start or the last change

    @property
    def active(self) -> bool:
        """Whether a call must wait for its tool's definition to be known: with a lock (a
        changed tool is refused) or when poisoned descriptions block."""
        return self.lock is not None or self.descriptions is Descriptions.BLOCK

    # --- listings --------------------------------------------------------------------------

    def review(self, tools: list[Any], listed: Collection[str]) -> Review:
        """One page of tools/list, already filtered by the profile; `listed` holds every
        name on the page (a description naming another tool is a finding)."""
        kept: list[Any] = []
        alerts: list[Alert] = []
        changed = False
        for tool in tools:
            name = tool.get("name") if isinstance(tool, dict) else None
            if not isinstance(name, str):
                kept.append(tool)  # the profile let it through; nothing to pin it by
                continue
            check, found = self._judge(tool, name, listed)
            alerts += self._once(found)
            previous = self._status.get(name)
            if previous is not None and previous.status is Status.BLOCKED:
                check = previous  # blocked for the whole session
            self._status[name] = check
            if check.status is not Status.OK:
                changed = True
                continue
            cleaned = clean_tool_definition(tool)
            changed = changed or cleaned is not tool
            kept.append(cleaned)
        return Review(kept, changed, alerts)

    def _judge(
        self, tool: Mapping[str, Any], name: str, listed: Collection[str]
    ) -> tuple[CallCheck, list[Alert]]:
        from mcpwrap.policy import poison
        from mcpwrap.supply import pins

        alerts: list[Alert] = []
        check = CallCheck(Status.OK)
        if self.lock is not None:
            drift = pins.judge(self.lock.tools, tool)
            if drift is not pins.Drift.SAME:
                check, alert = self._drift(tool, name, drift)
                alerts.append(alert)
        # Sibling tools are not passed as "other tools": real servers name them ("use
        # read_file first"); what shadows another server's tools is caught by its phrasing.
        findings = poison.tool_findings(tool)
        if findings:
            block = self.descriptions is Descriptions.BLOCK
            alerts.append(_findings_alert(name, findings, block))
            if block and check.status is Status.OK:
                check = CallCheck(
                    Status.BLOCKED,
                    findings[0].rule,
                    f"tool {name!r} is blocked: its definition looks poisoned "
                    f'({_summary(findings)}); [policy] descriptions = "block"',
                )
        return check, alerts

    def _drift(self, tool: Mapping[str, Any], name: str, drift: Drift) -> tuple[CallCheck, Alert]:
        from mcpwrap.supply import pins

        assert self.lock is not None
        now = pins.pin_of(dict(tool))
        if drift is pins.Drift.NEW:
            rule = "pins.tool_added"
            reason = f"the server offers a tool the lock does not name: {name!r}"
        else:
            rule = "pins.tool_changed"
            reason = f"the definition of tool {name!r} differs from the lock"
        reason += f"; it is hidden and refused until `{self.approve}` ({self.lock.path})"
        old = self.lock.tools.get(name)
        fields = {
            "sha256": now.sha256,
            "pinned": old.sha256 if old else None,
            "diff": pins.diff(old, now, name),
        }
        return CallCheck(Status.BLOCKED, rule, reason), Alert(rule, "block", name, reason, fields)

    def listing_complete(self, names: Collection[str]) -> list[Alert]:
        """A full listing ended: pinned tools it did not have are gone; tools not seen in
        it are unknown until listed again."""
        alerts: list[Alert] = []
        self._complete = True
        for name in list(self._status):
            if name not in names and self._status[name].status is Status.OK:
                del self._status[name]
        if self.lock is None:
            return alerts
        for name in sorted(self.lock.tools.keys() - set(names)):
            if self._status.get(name, CallCheck(Status.UNKNOWN)).status is Status.BLOCKED:
                continue
            reason = f"tool {name!r} is in the lock but the server no longer offers it"
            self._status[name] = CallCheck(Status.GONE, "pins.tool_removed", reason)
            alerts += self._once([Alert("pins.tool_removed", "note", name, reason)])
        return alerts

    def invalidate(self) -> None:
        """The server said its tools changed: what was seen is no longer known."""
        self._status = {n: c for n, c in self._status.items() if c.status is Status.BLOCKED}
        self._complete = False

    # --- calls -----------------------------------------------------------------------------

    def check_call(self, name: str) -> CallCheck:
        """OK, refused (BLOCKED, GONE), or UNKNOWN: the call waits for a listing."""
        check = self._status.get(name)
        if check is not None:
            return check
        if not self._complete:
            return CallCheck(Status.UNKNOWN)
        return CallCheck(
            Status.GONE,
            "pins.not_listed",
            f"the server does not list tool {name!r}, so mcpwrap cannot check its definition",
        )

    # --- instructions ----------------------------------------------------------------------

    def instructions(self, text: str) -> tuple[str | None, list[Alert]]:
        """The instructions the client may see (None: drop them), and alerts."""
        from mcpwrap.policy import poison
        from mcpwrap.supply import pins

        alerts: list[Alert] = []
        keep: str | None = clean_text(text)
        if self.lock is not None:
            locked = self.lock.instructions
            if locked is None or pins.digest(text) != locked.sha256:
                reason = (
                    "the server's instructions differ from the lock; they are withheld from "
                    f"the client until `{self.approve}` ({self.lock.path})"
                )
                now = pins.pin_text(text)
                fields = {"sha256": now.sha256, "diff": pins.diff(locked, now, "instructions")}
                alerts.append(Alert("pins.instructions_changed", "block", None, reason, fields))
                keep = None
        findings = poison.text_findings(text, "instructions", max_length=_INSTRUCTIONS)
        if findings:
            block = self.descriptions is Descriptions.BLOCK
            alerts.append(_findings_alert(None, findings, block))
            if block:
                keep = None
        return keep, self._once(alerts)

    def _once(self, alerts: list[Alert]) -> list[Alert]:
        """Each alert once a session (a client lists tools again and again)."""
        fresh = []
        for alert in alerts:
            key = (alert.rule, alert.tool, str(alert.fields.get("sha256", alert.reason)))
            if key not in self._alerted:
                self._alerted.add(key)
                fresh.append(alert)
        return fresh


def _summary(findings: list[Finding]) -> str:
    return "; ".join(f"{f.rule} at {f.where}: {f.detail}" for f in findings[:3])


def _findings_alert(tool: str | None, findings: list[Finding], block: bool) -> Alert:
    what = f"tool {tool!r} looks" if tool else "the server's instructions look"
    reason = f"{what} poisoned: {_summary(findings)}"
    reason += (
        ' (hidden and refused: [policy] descriptions = "block")'
        if block
        else ' (passed on: [policy] descriptions = "warn")'
    )
    return Alert(
        findings[0].rule,
        "block" if block else "warn",
        tool,
        reason,
        {"findings": [f._asdict() for f in findings]},
    )
