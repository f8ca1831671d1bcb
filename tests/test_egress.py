"""The egress proxy with the real jail and real clients: the server's only way out.

Upstreams are the test's own listeners on the host's loopback; names are mapped to
loopback, private and metadata addresses through MCPWRAP_TEST_HOSTS, never resolved on
the network. Each refusal has a control that the same client gets through when the
entry allows it, so a test fails if its rule goes.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from egress_harness import Run, Upstream, hello_server, jailed

PROBE = str(Path(__file__).parent / "fixtures" / "escape_probe.py")


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with hello_server() as server:
        yield server


def curl(*args: str) -> list[str]:
    return ["curl", "-sS", "--max-time", "10", *args]


# --- allowed paths, with real clients --------------------------------------------------


def test_curl_https_proxy_and_socks_reach_a_listed_name(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """curl through the HTTP proxy and through SOCKS5 with remote names; the name maps to
    loopback, which an entry names literally, so it is admitted."""
    url = f"http://upstream.test:{upstream.port}"
    script = f"curl -sS --max-time 10 {url}/http && curl -sS --max-time 10 --proxy $SOCKS_PROXY {url}/socks"
    run = jailed(
        tmp_path,
        [f"upstream.test:{upstream.port}", f"127.0.0.1:{upstream.port}"],
        ["sh", "-c", script],
        hosts={"upstream.test": "127.0.0.1"},
        monkeypatch=monkeypatch,
    )
    assert run.returncode == 0, run
    assert "hello /http" in run.stdout and "hello /socks" in run.stdout
    assert upstream.hits == ["/http", "/socks"]
    vias = sorted(r["via"] for r in run.records)
    assert vias == ["http", "socks"] and all(r["decision"] == "allow" for r in run.records)
    assert all(r["address"] == "127.0.0.1" and r["bytes_in"] > 0 for r in run.records)


URLLIB = (
    "import sys, urllib.request\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
    "except Exception as exc:\n"
    "    print('failed:', exc); sys.exit(3)\n"
)


@pytest.mark.parametrize(
    ("name", "address", "why"),
    [
        ("upstream.test", "127.0.0.1", "loopback"),
        ("metadata.test", "169.254.169.254", "cloud metadata"),
        ("private.test", "10.1.2.3", "private"),
        ("cgnat.test", "100.64.0.1", "CGNAT"),
        ("mapped.test", "::ffff:127.0.0.1", "IPv4-mapped"),
    ],
)
def test_a_listed_name_that_resolves_to_a_non_public_address_is_refused(
    tmp_path: Path,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    address: str,
    why: str,
) -> None:
    """The jail has no DNS: urllib hands the name to the proxy, mcpwrap resolves it and
    refuses the address. The control: with the address named literally it gets through."""
    url = f"http://{name}:{upstream.port}/u"
    run = jailed(
        tmp_path,
        [f"{name}:{upstream.port}"],
        [sys.executable, "-c", URLLIB, url],
        hosts={name: address},
        monkeypatch=monkeypatch,
    )
    assert run.returncode == 3 and "403" in run.stdout, run
    (refusal,) = run.records
    assert refusal["rule"] == "egress.address" and why in refusal["reason"], refusal
    assert upstream.hits == []
    if address == "127.0.0.1":
        allowed = jailed(
            tmp_path,
            [f"{name}:{upstream.port}", f"{address}:{upstream.port}"],
            [sys.executable, "-c", URLLIB, url],
            hosts={name: address},
            monkeypatch=monkeypatch,
        )
        assert allowed.returncode == 0 and "hello /u" in allowed.stdout, allowed


def test_an_unlisted_host_and_an_ip_literal_are_refused(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = f"upstream.test:{upstream.port}"
    for url, rule in (
        (f"http://other.test:{upstream.port}/", "egress.unlisted"),
        (f"http://198.51.100.7:{upstream.port}/", "egress.unlisted"),
        (f"http://upstream.test:{upstream.port + 1}/", "egress.unlisted"),
    ):
        run = jailed(
            tmp_path,
            [listed, f"127.0.0.1:{upstream.port}"],
            [sys.executable, "-c", URLLIB, url],
            hosts={"upstream.test": "127.0.0.1", "other.test": "127.0.0.1"},
            monkeypatch=monkeypatch,
        )
        assert run.returncode == 3 and "403" in run.stdout, (url, run)
        assert [r["rule"] for r in run.records] == [rule], url
    assert upstream.hits == []


def test_direct_tcp_udp_and_dns_have_no_way_out(tmp_path: Path, upstream: Upstream) -> None:
    """Without the proxy nothing leaves: the host's loopback listener is unreachable, UDP
    and DNS find no route, and the proxies are the only TCP ports Landlock lets it reach."""
    tcp = jailed(
        tmp_path,
        [f"127.0.0.1:{upstream.port}"],
        [sys.executable, PROBE, "tcp_connect", "127.0.0.1", str(upstream.port)],
    )
    assert json.loads(tcp.stdout.strip().splitlines()[-1])["escaped"] is False, tcp
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.5)
        port = str(udp.getsockname()[1])
        jailed(
            tmp_path, [f"127.0.0.1:{port}"], [sys.executable, PROBE, "udp_send", "127.0.0.1", port]
        )
        with pytest.raises(TimeoutError):
            udp.recv(100)
    dns = "import socket; socket.getaddrinfo('example.com', 443)"
    run = jailed(tmp_path, [], [sys.executable, "-c", dns])
    assert run.returncode != 0 and "gaierror" in run.stderr, run
    assert upstream.hits == []


def test_a_tcp_forward_appears_at_the_same_address_inside(
    tmp_path: Path, upstream: Upstream
) -> None:
    """tcp:127.0.0.1:PORT: the server connects to the address it knows, the proxy relays
    to the host's listener; a port with no entry stays closed."""
    url = f"http://127.0.0.1:{upstream.port}/fwd"
    run = jailed(tmp_path, [f"tcp:127.0.0.1:{upstream.port}"], [sys.executable, "-c", URLLIB, url])
    assert run.returncode == 0 and "hello /fwd" in run.stdout, run
    (record,) = run.records
    assert record["via"] == "tcp" and record["rule"] == "sandbox.egress"
    closed = jailed(tmp_path, [], [sys.executable, "-c", URLLIB, url])
    assert closed.returncode == 3 and upstream.hits == ["/fwd"]


def test_an_endpoint_in_a_tools_effects_is_reachable_only_during_its_call(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Declared only by tools.fetch.effects: refused with no call in flight and with only
    another tool's call in flight; admitted while a call of fetch runs, and attributed to
    every call of fetch in flight (two overlapping ones here)."""
    port = upstream.port
    tools = (
        f'[tools.fetch]\nclass = "read"\n'
        f'effects = ["network:upstream.test:{port}", "network:127.0.0.1:{port}"]\n'
        '[tools.other]\nclass = "read"\n'
    )
    argv = [sys.executable, "-c", URLLIB, f"http://upstream.test:{port}/t"]

    def run(in_flight: list[tuple[str, object]]) -> Run:
        return jailed(
            tmp_path,
            [],
            argv,
            tools=tools,
            in_flight=in_flight,
            hosts={"upstream.test": "127.0.0.1"},
            monkeypatch=monkeypatch,
        )

    for idle in (run([]), run([("other", 1)])):
        assert idle.returncode == 3, idle
        assert [r["rule"] for r in idle.records] == ["egress.not_in_flight"]
    assert upstream.hits == []
    both = run([("fetch", 7), ("other", 8), ("fetch", "x")])
    assert both.returncode == 0 and "hello /t" in both.stdout, both
    (record,) = both.records
    assert record["rule"] == "tools.fetch.effects" and record["calls"] == [7, "x"]
