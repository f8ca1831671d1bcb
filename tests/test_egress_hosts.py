"""Real clients in the jail reach a test host only through mcpwrap's egress proxy.

The test host (tests/nethosts.py) is a network namespace behind a veth pair at
documentation-range addresses, serving HTTP, HTTPS (certificate from a test CA), a raw
TCP echo and a git repository over HTTPS, and logging every connection and request it
receives. Names map to it through MCPWRAP_TEST_HOSTS; nothing is resolved on the network
and no traffic goes anywhere but loopback and that namespace. Each refusal has a control
in the same run that gets through, and the host's log shows the refused request never
arrived. Needs root (the namespace); not in scripts/test's unprivileged re-run.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nethosts
import pytest
from egress_harness import Run, jailed
from nethosts import NetHost

FIXTURES = Path(__file__).parent / "fixtures"
CLIENTS = str(FIXTURES / "egress_clients.py")
FETCH = str(FIXTURES / "egress_fetch.js")
PROBE = str(FIXTURES / "escape_probe.py")
UNDICI = Path(__file__).parent / "node" / "node_modules" / "undici"
API = "api.example.test"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetHost]:
    with nethosts.build(tmp_path_factory.mktemp("nethost")) as built:
        yield built


def run_in_jail(
    host: NetHost,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    entries: list[str],
    argv: list[str],
    **kwargs: Any,
) -> tuple[Run, list[dict[str, Any]]]:
    """argv in the jail, the test names mapped to the host; (the run, what the host's
    servers logged meanwhile)."""
    seen = nethosts.mark(host)
    hosts = kwargs.pop("hosts", None) or host.hosts()
    read = [host.files, *kwargs.pop("read", ())]
    run = jailed(tmp, entries, argv, hosts=hosts, monkeypatch=monkeypatch, read=read, **kwargs)
    return run, seen.new()


def assert_allowed(
    record: dict[str, Any], host: NetHost, *, via: str, endpoint: str, address: str = ""
) -> None:
    assert record["decision"] == "allow", record
    assert record["rule"] == "sandbox.egress", record
    assert record["via"] == via and record["endpoint"] == endpoint, record
    assert record["address"] == (address or host.address), record
    assert record["bytes_in"] > 0 and record["bytes_out"] > 0, record


def requests(seen: list[dict[str, Any]], server: str = "https") -> list[dict[str, Any]]:
    return [e for e in seen if e["event"] == "request" and e["server"] == server]


def reply(stdout: str) -> dict[str, Any]:
    """The JSON the host's HTTP servers answer with: the last line that is one."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stdout
    return dict(json.loads(lines[-1]))


def curl(*args: str) -> str:
    return " ".join(["curl", "-sS", "--max-time", "10", *args])


# --- the test host itself ------------------------------------------------------------


def test_the_jail_cannot_reach_the_test_host_directly(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the host's own namespace reaches the test host's HTTP server. The jail,
    with the name listed, still has no route there (nor Landlock's leave) without the proxy."""
    seen = nethosts.mark(host)
    with socket.create_connection((host.address, host.http), timeout=5) as s:
        s.sendall(b"GET /control HTTP/1.0\r\nHost: control\r\n\r\n")
        answer = s.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n")[0], answer
    assert [r["path"] for r in requests(seen.new(), "http")] == ["/control"]

    for address in (host.address, host.private):
        run, logged = run_in_jail(
            host,
            tmp_path,
            monkeypatch,
            [f"{API}:{host.http}", f"{address}:{host.http}"],
            [sys.executable, PROBE, "tcp_connect", address, str(host.http)],
        )
        assert json.loads(run.stdout.strip().splitlines()[-1])["escaped"] is False, run
        assert run.records == [] and logged == [], (run, logged)


# --- real clients, admitted ----------------------------------------------------------


def test_curl_https_through_connect_and_through_socks(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """curl with the test CA: once through https_proxy (CONNECT), once through
    socks_proxy's SOCKS5 with the name resolved by mcpwrap (socks5h)."""
    url = f"https://{API}"
    script = (
        f"{curl('--cacert', str(host.ca), url + '/curl-connect')} && echo && "
        f"{curl('--cacert', str(host.ca), '--proxy', '$SOCKS_PROXY', url + '/curl-socks')}"
    )
    run, seen = run_in_jail(host, tmp_path, monkeypatch, [f"{API}:443"], ["sh", "-c", script])
    assert run.returncode == 0, run
    assert '"path": "/curl-connect"' in run.stdout and '"path": "/curl-socks"' in run.stdout
    by_via = {r["via"]: r for r in run.records}
    assert len(run.records) == 2 and set(by_via) == {"http", "socks"}, run.records
    for via in ("http", "socks"):
        assert_allowed(by_via[via], host, via=via, endpoint=f"{API}:443")
    got = requests(seen)
    assert [(r["path"], r["host"]) for r in got] == [("/curl-connect", API), ("/curl-socks", API)]
    assert {r["peer"] for r in got} == {host.gateway}  # dialled by mcpwrap on the host


@pytest.mark.parametrize("client", ["urllib", "httpx", "httpx2"])
def test_python_clients_https_through_the_proxy(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    """urllib.request, httpx and httpx2 (the MCP SDK's client) take https_proxy from the
    environment and tunnel with CONNECT; each trusts only the test CA. httpx and httpx2
    run without socksio: a socks5h:// proxy variable would stop them building a client."""
    path = f"/{client}"
    run, seen = run_in_jail(
        host,
        tmp_path,
        monkeypatch,
        [f"{API}:443"],
        [sys.executable, CLIENTS, client, f"https://{API}{path}", str(host.ca)],
    )
    assert run.returncode == 0, run
    assert reply(run.stdout) == {"server": "https", "host": API, "path": path}
    (record,) = run.records
    assert_allowed(record, host, via="http", endpoint=f"{API}:443")
    (request,) = requests(seen)
    assert request["path"] == path and request["peer"] == host.gateway
    if client.startswith("httpx"):
        assert request["agent"].startswith("python-httpx"), request


def test_node_fetch_through_undici_env_proxy_agent_and_builtin_fetch_has_no_way_out(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node_exe: str
) -> None:
    """Node 20's fetch ignores the proxy variables (NODE_USE_ENV_PROXY needs Node >= 22.21):
    with undici's EnvHttpProxyAgent it goes through CONNECT; without it, it fails closed
    and nothing reaches the proxy or the host."""
    if not (UNDICI / "package.json").is_file():
        pytest.fail(f"{UNDICI} is missing: npm ci --prefix tests/node", pytrace=False)
    url = f"https://{API}/node"
    common: dict[str, Any] = {
        "env": {"NODE_EXTRA_CA_CERTS": str(host.ca)},
        "read": [UNDICI],
    }
    run, seen = run_in_jail(
        host,
        tmp_path,
        monkeypatch,
        [f"{API}:443"],
        [node_exe, FETCH, "agent", str(UNDICI), url],
        **common,
    )
    assert run.returncode == 0 and run.stdout.startswith("200 "), run
    assert reply(run.stdout.removeprefix("200 ")) == {
        "server": "https",
        "host": API,
        "path": "/node",
    }
    (record,) = run.records
    assert_allowed(record, host, via="http", endpoint=f"{API}:443")
    assert [r["path"] for r in requests(seen)] == ["/node"]

    for target in (url, f"https://{host.address}/node-direct"):
        builtin, logged = run_in_jail(
            host,
            tmp_path,
            monkeypatch,
            [f"{API}:443", f"{host.address}:443"],
            [node_exe, FETCH, "builtin", target],
            **common,
        )
        assert builtin.returncode == 3 and "failed: fetch failed" in builtin.stdout, builtin
        assert builtin.records == [] and logged == [], (builtin, logged)


def test_git_clone_over_https_through_the_proxy(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git (libcurl, https_proxy) clones the test host's repository over dumb HTTP."""
    script = (
        f"git -c http.sslCAInfo={host.ca} clone -q https://git.example.test/repo.git "
        "/tmp/clone && cat /tmp/clone/README"
    )
    run, seen = run_in_jail(
        host, tmp_path, monkeypatch, ["git.example.test:443"], ["sh", "-c", script]
    )
    assert run.returncode == 0, run
    assert run.stdout == host.git_file
    assert run.records, run
    for record in run.records:
        assert_allowed(record, host, via="http", endpoint="git.example.test:443")
    paths = [r["path"] for r in requests(seen)]
    assert paths[0] == "/repo.git/info/refs?service=git-upload-pack", paths
    assert any(p.endswith(".pack") for p in paths), paths
    assert all(r["host"] == "git.example.test" for r in requests(seen))


def test_raw_tcp_through_a_tcp_forward(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tcp:ADDR:PORT: the jail sees the forward at the host's own address and port."""
    run, seen = run_in_jail(
        host,
        tmp_path,
        monkeypatch,
        [f"tcp:{host.address}:{host.echo}"],
        [sys.executable, CLIENTS, "echo", host.address, str(host.echo)],
    )
    assert run.returncode == 0 and run.stdout == "ping through the forward\n\n", run
    (record,) = run.records
    assert_allowed(record, host, via="tcp", endpoint=f"{host.address}:{host.echo}")
    assert record["bytes_in"] == len("ping through the forward\n")
    echoed = [e for e in seen if e["server"] == "echo"]
    assert [(e["event"], e["peer"]) for e in echoed] == [
        ("connect", host.gateway),
        ("echo", host.gateway),
    ]


# --- refusals, each with its control in the same run ---------------------------------


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("other.example.test", "a name not listed (it resolves to the test host)"),
        ("IP", "the host's address, when only its name is listed"),
    ],
)
def test_an_unlisted_name_or_address_of_the_test_host_is_refused(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, why: str
) -> None:
    target = host.address if target == "IP" else target
    script = (
        f"{curl('--cacert', str(host.ca), f'https://{target}/refused')}; echo rc=$?; "
        f"{curl('--cacert', str(host.ca), f'https://{API}/control')}"
    )
    run, seen = run_in_jail(host, tmp_path, monkeypatch, [f"{API}:443"], ["sh", "-c", script])
    assert "rc=56" in run.stdout and "403" in run.stderr, (why, run)
    assert run.returncode == 0 and '"path": "/control"' in run.stdout, run
    refusal, control = run.records
    assert refusal["decision"] == "refuse" and refusal["rule"] == "egress.unlisted", refusal
    assert refusal["endpoint"] == f"{target}:443", refusal
    assert_allowed(control, host, via="http", endpoint=f"{API}:443")
    assert [r["path"] for r in requests(seen)] == ["/control"]
    assert [e["event"] for e in seen] == ["connect", "request"], seen  # the control only


def test_a_listed_name_that_maps_to_a_private_address_is_refused(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """internal.example.test maps to a private address (the test host's own, routed over
    the veth only). Refused; the control lists that address literally and gets through."""
    name = "internal.example.test"
    hosts = host.hosts(**{name: host.private})
    argv = [sys.executable, CLIENTS, "urllib", f"https://{name}/internal", str(host.ca)]
    run, seen = run_in_jail(host, tmp_path, monkeypatch, [f"{name}:443"], argv, hosts=hosts)
    assert run.returncode == 3 and "403" in run.stdout, run
    (refusal,) = run.records
    assert refusal["decision"] == "refuse" and refusal["rule"] == "egress.address", refusal
    assert f"{host.private} is in 10.0.0.0/8 (private)" in refusal["reason"], refusal
    assert seen == [], seen

    entries = [f"{name}:443", f"{host.private}:443"]
    control, seen = run_in_jail(host, tmp_path, monkeypatch, entries, argv, hosts=hosts)
    assert control.returncode == 0, control
    assert reply(control.stdout) == {"server": "https", "host": name, "path": "/internal"}
    (record,) = control.records
    assert_allowed(record, host, via="http", endpoint=f"{name}:443", address=host.private)
    assert [r["path"] for r in requests(seen)] == ["/internal"]


# --- fronting: one name in the tunnel, another in its TLS --------------------------------


@pytest.mark.parametrize("proxy", ["https_proxy", "socks"])
def test_a_tunnel_whose_tls_names_an_unlisted_site_is_refused(
    host: NetHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: str
) -> None:
    """curl --connect-to asks the proxy for api (listed) and sends other (unlisted, served
    at the same address) as the TLS server name: the tunnel is refused before a byte of it
    reaches the host. The control: with other listed too, the same request gets through."""
    other = "other.example.test"
    socks = ["--proxy", "$SOCKS_PROXY"] if proxy == "socks" else []
    script = curl(
        "--cacert",
        str(host.ca),
        *socks,
        "--connect-to",
        f"{other}:443:{API}:443",
        f"https://{other}/front",
    )
    run, seen = run_in_jail(host, tmp_path, monkeypatch, [f"{API}:443"], ["sh", "-c", script])
    assert run.returncode != 0 and '"path": "/front"' not in run.stdout, run
    (record,) = run.records
    assert record["decision"] == "refuse" and record["rule"] == "egress.sni", record
    assert record["endpoint"] == f"{API}:443" and other in record["reason"], record
    assert requests(seen) == [], seen

    allowed, seen = run_in_jail(
        host, tmp_path, monkeypatch, [f"{API}:443", f"{other}:443"], ["sh", "-c", script]
    )
    assert allowed.returncode == 0 and reply(allowed.stdout)["host"] == other, allowed
    assert [r["path"] for r in requests(seen)] == ["/front"]
