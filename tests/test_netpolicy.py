"""Egress decisions as a table: (request, rules, calls in flight) -> verdict."""

from __future__ import annotations

import ipaddress

import pytest

from mcpwrap.policy.network import (
    Entry,
    decide,
    decide_server_name,
    parse_entry,
    refused_address,
    vet,
)

RULES = [
    parse_entry("api.example.com:443"),
    parse_entry("*.cdn.example.net:443"),
    parse_entry("tcp:127.0.0.1:5432"),
    parse_entry("203.0.113.9:8080"),
    parse_entry("hooks.example.org:443", tool="notify"),
]

DECISIONS = [
    # (host, port, tcp, in flight, allowed, rule)
    ("api.example.com", 443, False, [], True, "sandbox.egress"),
    ("API.Example.COM.", 443, False, [], True, "sandbox.egress"),
    ("api.example.com", 80, False, [], False, "egress.unlisted"),
    ("evil.com", 443, False, [], False, "egress.unlisted"),
    ("a.cdn.example.net", 443, False, [], True, "sandbox.egress"),
    ("a.b.cdn.example.net", 443, False, [], True, "sandbox.egress"),
    ("cdn.example.net", 443, False, [], False, "egress.unlisted"),  # not the wildcard's base
    ("xcdn.example.net", 443, False, [], False, "egress.unlisted"),  # label boundary
    ("203.0.113.9", 8080, False, [], True, "sandbox.egress"),
    ("[203.0.113.9]", 8080, False, [], True, "sandbox.egress"),
    ("203.0.113.10", 8080, False, [], False, "egress.unlisted"),
    ("127.0.0.1", 5432, True, [], True, "sandbox.egress"),
    ("127.0.0.1", 5432, False, [], False, "egress.unlisted"),  # a forward is not a proxy entry
    ("hooks.example.org", 443, False, [], False, "egress.not_in_flight"),
    ("hooks.example.org", 443, False, [("other", 1)], False, "egress.not_in_flight"),
    ("hooks.example.org", 443, False, [("notify", 1)], True, "tools.notify.effects"),
    ("stra\u00dfe.example", 443, False, [], False, "egress.host"),  # IDNA deviation
    ("fe80::1%eth0", 443, False, [], False, "egress.host"),
]


@pytest.mark.parametrize(("host", "port", "tcp", "flight", "allowed", "rule"), DECISIONS)
def test_decide(
    host: str, port: int, tcp: bool, flight: list[tuple[str, object]], allowed: bool, rule: str
) -> None:
    verdict = decide(host, port, RULES, flight, tcp=tcp)
    assert (verdict.allowed, verdict.rule) == (allowed, rule), verdict.reason


def test_calls_in_flight_are_attributed() -> None:
    flight: list[tuple[str, object]] = [("notify", 1), ("other", 2), ("notify", "b")]
    assert decide("hooks.example.org", 443, RULES, flight).calls == (1, "b")
    assert decide("api.example.com", 443, RULES, flight).calls == (1, 2, "b")


SERVER_NAMES = [
    # (tunnel host, TLS server name, port, in flight, allowed, rule)
    ("api.example.com", "api.example.com", 443, [], True, "egress.sni"),
    ("api.example.com", "API.example.com.", 443, [], True, "egress.sni"),
    ("api.example.com", "evil.com", 443, [], False, "egress.sni"),  # fronting
    ("api.example.com", "a.cdn.example.net", 443, [], True, "sandbox.egress"),  # listed too
    ("203.0.113.9", "evil.com", 8080, [], False, "egress.sni"),  # a literal is no cover
    ("203.0.113.9", "api.example.com", 8080, [], False, "egress.sni"),  # listed on 443 only
    ("api.example.com", "hooks.example.org", 443, [], False, "egress.sni"),
    ("api.example.com", "hooks.example.org", 443, [("notify", 1)], True, "tools.notify.effects"),
    ("api.example.com", "fe80::1%eth0", 443, [], False, "egress.sni"),
]


@pytest.mark.parametrize(("host", "name", "port", "flight", "allowed", "rule"), SERVER_NAMES)
def test_decide_server_name(
    host: str, name: str, port: int, flight: list[tuple[str, object]], allowed: bool, rule: str
) -> None:
    verdict = decide_server_name(host, name, port, RULES, flight)
    assert (verdict.allowed, verdict.rule) == (allowed, rule), verdict.reason


REFUSED = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "::ffff:10.0.0.1",
    "fc00::1",
    "fd12::1",
    "fe80::1",
    "ff02::1",
    "64:ff9b::a00:1",
    "2002:a00:1::1",
    "2001:0:a00:1::1",
]
ADMITTED = ["93.184.216.34", "198.51.100.7", "203.0.113.9", "2001:db8::1", "2606:4700::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ADMITTED)
def test_public_and_documentation_addresses_are_admitted(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is None


def test_vet_takes_the_first_admissible_address_and_literal_entries_admit_exactly() -> None:
    entry = parse_entry("api.example.com:443")
    addrs = [ipaddress.ip_address(a) for a in ("10.0.0.1", "93.184.216.34")]
    assert vet(entry, addrs) == (addrs[1], "")
    address, why = vet(entry, addrs[:1])
    assert address is None and "private" in why
    loopback = [ipaddress.ip_address("127.0.0.1")]
    literal = [parse_entry("127.0.0.1:443")]
    assert vet(entry, loopback, literal, 443) == (loopback[0], "")
    assert vet(entry, loopback, literal, 444)[0] is None
    assert isinstance(literal[0], Entry)
