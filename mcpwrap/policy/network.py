"""Egress decisions: which endpoint a jailed server may reach, and which address it may
reach it at. Pure functions of (request, rules, calls in flight), so every rule is a row
in a table-driven test; the proxy (egress.py) does the I/O.

Two questions, asked in order:

1. The endpoint. A HOST:PORT the server asked for (through the HTTP or SOCKS proxy, or a
   `tcp:` forward) is admitted by a `[sandbox] egress` entry at any time, or by a
   `network:HOST:PORT` effect of a tool while a call of that tool is in flight. Wildcards
   match at label boundaries only; names are compared in IDNA ASCII form.
2. The address. mcpwrap resolves the name itself (the jail has no DNS) and refuses any
   address that is loopback, private, link-local (cloud metadata at 169.254.169.254),
   CGNAT, ULA, multicast, unspecified, reserved, or an IPv6 form that embeds an IPv4
   address (mapped, NAT64, 6to4), unless the admitting entry names that address literally.
   The connection then goes to the vetted address, never to a second lookup (no DNS
   rebinding). Documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32)
   are not refused: nothing routes them on a real network, and the tests' own hosts use them.

Two calls in flight: an endpoint declared by tool A's effects is reachable while at least
one call of A is in flight, whatever else runs; the connection is attributed to every
in-flight call of a tool that declares it (more than one when they overlap), and a
profile-wide entry's connection to every call in flight at the time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import NamedTuple

from mcpwrap.basics import hostnames
from mcpwrap.config.profile import Profile
from mcpwrap.policy.constraints import host_matches

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class Entry(NamedTuple):
    host: str  # canonical: IDNA ASCII name, "*.name", or an IP address (no brackets)
    port: int
    tcp: bool  # a tcp:ADDR:PORT forward
    tool: str | None  # None: [sandbox] egress; else the tool whose effects declare it
    rule: str  # the profile key, for records: "sandbox.egress" or "tools.X.effects"

    @property
    def literal(self) -> IP | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


class Verdict(NamedTuple):
    allowed: bool
    rule: str
    reason: str
    entry: Entry | None = None
    calls: tuple[object, ...] = ()  # ids of the in-flight calls it is attributed to


def parse_entry(text: str, *, tool: str | None = None) -> Entry:
    """An entry in the profile's canonical form ("host:443", "tcp:[::1]:5432")."""
    tcp = text.startswith("tcp:")
    host, _, port = text.removeprefix("tcp:").rpartition(":")
    rule = "sandbox.egress" if tool is None else f"tools.{tool}.effects"
    return Entry(host.strip("[]"), int(port), tcp, tool, rule)


def entries(profile: Profile) -> list[Entry]:
    """Every egress entry and every tool's network effect."""
    found = [parse_entry(e) for e in profile.sandbox.egress]
    for name, tool in profile.tools.items():
        found += [
            parse_entry(e.removeprefix("network:"), tool=name)
            for e in tool.effects
            if e.startswith("network:")
        ]
    return found


def forwards(rules: Sequence[Entry]) -> list[tuple[str, int]]:
    """The tcp: endpoints, each once: the jail listens at these addresses."""
    return list(dict.fromkeys((e.host, e.port) for e in rules if e.tcp))


def decide_server_name(
    host: str,
    server_name: str,
    port: int,
    rules: Sequence[Entry],
    in_flight: Sequence[tuple[str, object]],
) -> Verdict:
    """A tunnel to host:port (already admitted) whose TLS ClientHello asks for
    server_name: every name a connection carries must be allowed, or a server could ask an
    allowlisted address (a CDN edge) for another site it serves."""
    name = canonical_host(server_name)
    if name is not None and name == canonical_host(host):
        return Verdict(True, "egress.sni", "the TLS server name is the tunnel's host")
    verdict = decide(server_name, port, rules, in_flight)
    if verdict.allowed:
        return verdict._replace(reason=f"the TLS server name {name} is allowed too")
    return Verdict(
        False,
        "egress.sni",
        f"the tunnel to {host}:{port} asks for {server_name!r} in its TLS server name, "
        f"which is not allowed: {verdict.reason}",
    )


def canonical_host(host: str) -> str | None:
    """A requested host in the form entries use, or None if it cannot be one safely."""
    host = host.strip().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if "%" in host:
        return None  # an IPv6 zone id: names an interface, not a host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if ":" in host:
        return None  # a malformed IPv6 literal
    return hostnames.to_ascii(host)


def decide(
    host: str,
    port: int,
    rules: Sequence[Entry],
    in_flight: Sequence[tuple[str, object]],
    *,
    tcp: bool = False,
) -> Verdict:
    """May the server reach host:port now? in_flight: (tool, call id) of calls running.
    tcp: the request came through a tcp: forward, which only tcp: entries admit."""
    name = canonical_host(host)
    if name is None:
        return Verdict(False, "egress.host", f"{host!r} is not a valid host name or address")
    matching = [e for e in rules if e.tcp == tcp and e.port == port and _matches(e, name)]
    everyone = [e for e in matching if e.tool is None]
    if everyone:
        calls = tuple(call for _, call in in_flight)
        return Verdict(True, everyone[0].rule, "listed", everyone[0], calls)
    scoped = {e.tool: e for e in matching}
    callers = [(tool, call) for tool, call in in_flight if tool in scoped]
    if callers:
        entry = scoped[callers[0][0]]
        calls = tuple(call for _, call in callers)
        return Verdict(True, entry.rule, "declared by a tool in flight", entry, calls)
    if scoped:
        tools = ", ".join(sorted(f"tools.{t}.effects" for t in scoped if t))
        return Verdict(
            False,
            "egress.not_in_flight",
            f"{name}:{port} is declared only by {tools}, and no call of it is in flight",
        )
    where = "a tcp: entry" if tcp else "[sandbox] egress or a tool's network effects"
    return Verdict(False, "egress.unlisted", f"{name}:{port} is not in {where}")


def _matches(entry: Entry, name: str) -> bool:
    if entry.literal is not None:
        return entry.host == name
    return host_matches(name, entry.host)


_REFUSED_V4 = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)
_REFUSED_V6 = tuple(
    ipaddress.ip_network(n)
    for n in (
        "::/127",  # unspecified, loopback
        "::ffff:0:0/96",  # IPv4-mapped
        "::/96",  # IPv4-compatible (deprecated)
        "64:ff9b::/96",  # NAT64
        "64:ff9b:1::/48",  # local NAT64
        "100::/64",  # discard
        "2001::/32",  # Teredo: embeds an IPv4 address
        "2002::/16",  # 6to4: embeds an IPv4 address
        "fc00::/7",  # ULA
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)


def refused_address(address: IP) -> str | None:
    """Why this address is not for a name to resolve to, or None if it may be used."""
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        _REFUSED_V4 if address.version == 4 else _REFUSED_V6
    )
    for network in networks:
        if address in network:
            return f"{address} is in {network} ({_KIND.get(str(network), 'not public')})"
    return None


_KIND = {
    "127.0.0.0/8": "loopback",
    "::/127": "loopback or unspecified",
    "10.0.0.0/8": "private",
    "172.16.0.0/12": "private",
    "192.168.0.0/16": "private",
    "169.254.0.0/16": "link-local, cloud metadata",
    "fe80::/10": "link-local",
    "100.64.0.0/10": "CGNAT",
    "fc00::/7": "unique local",
    "224.0.0.0/4": "multicast",
    "ff00::/8": "multicast",
    "::ffff:0:0/96": "IPv4-mapped",
}


def vet(
    entry: Entry, addresses: Sequence[IP], rules: Sequence[Entry] = (), port: int = 0
) -> tuple[IP | None, str]:
    """The first address the connection may go to, or (None, why not). An address that is
    not public is admitted only when an entry (with this port) names it literally."""
    literal = entry.literal
    if literal is not None:
        return (literal, "") if literal in addresses else (None, f"{entry.host} not resolved")
    named = {e.literal for e in rules if e.literal is not None and e.port == port and not e.tcp}
    reasons = []
    for address in addresses:
        reason = refused_address(address)
        if reason is None or address in named:
            return address, ""
        reasons.append(reason)
    if not reasons:
        return None, f"{entry.host} did not resolve"
    return None, "; ".join(reasons) + ": name the address literally in an entry to allow it"
