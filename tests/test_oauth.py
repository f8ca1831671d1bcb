"""OAuth 2.1 for a remote MCP server (`[server.oauth]`, identity/oauth.py), end to end with
real parts on loopback: an authorization server built from the MCP SDK's own components
and an SDK MCP server that requires its tokens (tests/oauth_server.py), a real Secret
Service (tests/secret_service.py), the SDK's stdio client driving mcpwrap, and a "browser"
(tests/oauth_browser.py, as $BROWSER) that follows the authorization redirect to mcpwrap's
callback over real HTTP and leaves a line in a canary file each time it runs."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest
from mcp.client import ClientSession
from mcp.client.stdio import stdio_client
from test_remote import TOOLS, attempt, mcpwrap, refused, text_of
from wrapped import write_profile

from mcpwrap.basics.errors import UsageError
from mcpwrap.config import remote
from mcpwrap.identity import oauth

REPO = Path(__file__).resolve().parent.parent
SERVERS = REPO / "tests" / "oauth_server.py"
BROWSER = REPO / "tests" / "oauth_browser.py"


class Servers(NamedTuple):
    issuer: str
    url: str  # the MCP server's
    log: Path
    process: subprocess.Popen[bytes]

    def events(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def count(self, prefix: str) -> int:
        return sum(1 for e in self.events() if e.startswith(prefix))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str], Servers]]:
    started: list[Servers] = []

    def run(mode: str) -> Servers:
        as_port, mcp_port = _free_port(), _free_port()
        log = tmp_path / f"events-{mode}.log"
        out = (tmp_path / f"servers-{mode}.out").open("wb")
        process = subprocess.Popen(
            [sys.executable, str(SERVERS), str(as_port), str(mcp_port), str(log), mode],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        servers = Servers(
            f"http://127.0.0.1:{as_port}", f"http://127.0.0.1:{mcp_port}/mcp", log, process
        )
        started.append(servers)
        deadline = time.monotonic() + 20
        while not (_listening(as_port) and _listening(mcp_port)):
            assert process.poll() is None, (tmp_path / f"servers-{mode}.out").read_text()
            assert time.monotonic() < deadline, "the OAuth test servers did not listen in 20 s"
            time.sleep(0.05)
        return servers

    yield run
    for servers in started:
        servers.process.kill()
        servers.process.wait()


PROFILE = "[server.oauth]\n" + TOOLS


class Run(NamedTuple):
    outcome: Any
    stderr: str
    garbled: list[Exception]  # what the client could not read on mcpwrap's stdout


async def _call(
    tmp_path: Path, servers: Servers, bus: dict[str, str], profile_body: str = PROFILE
) -> Run:
    profile = write_profile(tmp_path, profile_body)
    canary = tmp_path / "browser.log"
    extra = {**bus, "BROWSER": f"{sys.executable} {BROWSER} {canary}"}

    garbled: list[Exception] = []

    async def note(message: Any) -> None:
        if isinstance(message, Exception):
            garbled.append(message)

    errlog = tmp_path / f"err-{time.monotonic_ns()}"
    with errlog.open("w") as err, anyio.fail_after(40):
        async with (
            stdio_client(mcpwrap(profile, servers.url, extra=extra), errlog=err) as (read, write),
            ClientSession(read, write, message_handler=note) as session,
        ):
            outcome = await attempt(session.initialize())
            if not isinstance(outcome, Exception):
                outcome = await attempt(session.call_tool("echo", {"text": "hi"}))
            await anyio.sleep(0.3)  # the browser's last words, if it had the pipe
    return Run(outcome, errlog.read_text(), garbled)


def _browser_runs(tmp_path: Path) -> int:
    canary = tmp_path / "browser.log"
    return len(canary.read_text().splitlines()) if canary.exists() else 0


def _stored(url: str) -> dict[str, Any] | None:
    import keyring

    service, user = _ref_parts(oauth.storage_refs(url)[0])
    text = keyring.get_password(service, user)
    return None if text is None else json.loads(text)


def _ref_parts(ref: str) -> tuple[str, str]:
    service, _, user = ref.removeprefix("keyring:").partition("/")
    return service, user


def _files(tmp_path: Path) -> bytes:
    """Everything written under the test's directory: audit log, mcpwrap's state (XDG
    dirs), the profile, stderr, the servers' and the browser's logs."""
    return b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def _seen(token: str) -> str:
    return "seen " + hashlib.sha256(f"Bearer {token}".encode()).hexdigest()[:16]


# --- a sign-in, and its token kept, reused and refreshed -----------------------------------


@pytest.mark.anyio
async def test_first_run_signs_in_and_the_second_reuses_the_token_without_the_browser(
    start: Callable[[str], Servers], tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    servers = start("normal")
    first = await _call(tmp_path, servers, keyring_env)
    assert not refused(first.outcome), first.stderr
    assert text_of(first.outcome) == "hi"
    # discovery, dynamic registration, the authorization (bound to this resource, RFC 8707)
    # through the browser, and the code exchanged for a token
    assert servers.count("register") == 1 and _browser_runs(tmp_path) == 1
    assert f"authorize {servers.url}" in servers.events()
    assert f"token {servers.url}" in servers.events()
    assert "code_challenge_method=S256" in first.stderr  # PKCE; the URL is on stderr too
    assert first.garbled == []  # the browser's chatter on its stdout went nowhere
    stored = _stored(servers.url)
    assert stored is not None and stored["resource"] == servers.url
    token = stored["token"]["access_token"]
    assert servers.events().count(_seen(token)) >= 1  # the server got it
    assert token.encode() not in _files(tmp_path)  # in the keyring, and in no file
    assert stored["token"]["refresh_token"].encode() not in _files(tmp_path)
    listed = subprocess.run(
        [sys.executable, "-m", "mcpwrap", "secret", "list"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **keyring_env},
        timeout=60,
    )
    assert oauth.storage_refs(servers.url)[0] + "\tstored" in listed.stdout

    second = await _call(tmp_path, servers, keyring_env)
    assert text_of(second.outcome) == "hi", second.stderr
    assert _browser_runs(tmp_path) == 1  # no browser: the stored token served
    assert servers.count("register") == 1 and servers.count("token ") == 1
    assert servers.count("call echo") == 2


@pytest.mark.anyio
async def test_an_expired_token_is_refreshed_not_sent_and_no_browser_opens(
    start: Callable[[str], Servers], tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    servers = start("short")  # tokens live 2 s
    first = await _call(tmp_path, servers, keyring_env)
    assert text_of(first.outcome) == "hi", first.stderr
    old = _stored(servers.url)
    assert old is not None
    sent = servers.events().count(_seen(old["token"]["access_token"]))
    time.sleep(2.5)
    second = await _call(tmp_path, servers, keyring_env)
    assert text_of(second.outcome) == "hi", second.stderr
    assert servers.count("refresh") == 1 and _browser_runs(tmp_path) == 1
    # The expired token was not even tried: its expiry came back from the keyring.
    assert servers.events().count(_seen(old["token"]["access_token"])) == sent
    new = _stored(servers.url)
    assert new is not None and new["token"]["access_token"] != old["token"]["access_token"]


@pytest.mark.anyio
async def test_a_refused_refresh_signs_in_again_over_the_same_transport(
    start: Callable[[str], Servers], tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    """The authorization server refuses the refresh (400, not JSON): a new sign-in follows,
    and that 400 on its token endpoint is not taken for a server that speaks only
    HTTP+SSE (relay/remote.py's fallback looks at MCP messages' responses only)."""
    servers = start("no-refresh")
    first = await _call(tmp_path, servers, keyring_env)
    assert text_of(first.outcome) == "hi", first.stderr
    time.sleep(2.5)
    second = await _call(tmp_path, servers, keyring_env)
    assert text_of(second.outcome) == "hi", second.stderr
    assert "Token refresh failed: 400" in second.stderr
    assert servers.count("refresh refused") == 1 and _browser_runs(tmp_path) == 2


# --- refusals: the browser never runs for an authorization URL it must not open ------------


@pytest.mark.anyio
async def test_a_crafted_authorization_endpoint_is_refused_and_nothing_runs(
    start: Callable[[str], Servers], tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    servers = start("crafted")  # on the authorization server's own origin: only the characters
    run = await _call(tmp_path, servers, keyring_env)
    assert refused(run.outcome)
    assert "CVE-2025-6514" in run.stderr and "Nothing was opened or run" in run.stderr
    assert _browser_runs(tmp_path) == 0  # the control: the first test's browser runs
    assert not Path(str(servers.log) + ".pwned").exists()
    assert servers.count("authorize") == 0 and servers.count("call echo") == 0


@pytest.mark.anyio
async def test_an_authorization_endpoint_on_another_origin_is_refused(
    start: Callable[[str], Servers], tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    servers = start("elsewhere")  # http://localhost:PORT: the same machine, another origin
    run = await _call(tmp_path, servers, keyring_env)
    assert refused(run.outcome)
    assert f"the authorization server that discovery found is {servers.issuer}" in run.stderr
    assert _browser_runs(tmp_path) == 0
    assert servers.count("authorize") == 0 and servers.count("call echo") == 0


# --- tokens stay with the resource they were issued for (RFC 8707) ---------------------------


@pytest.mark.anyio
async def test_a_server_whose_metadata_names_another_resource_gets_no_sign_in(
    start: Callable[[str], Servers], tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    servers = start("other-resource")
    run = await _call(tmp_path, servers, keyring_env)
    assert refused(run.outcome)
    assert "does not match" in run.stderr
    assert _browser_runs(tmp_path) == 0 and servers.count("authorize") == 0
    assert _stored(servers.url) is None


@pytest.mark.anyio
async def test_a_stored_token_for_another_resource_is_not_sent(
    start: Callable[[str], Servers], tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    import keyring

    servers = start("normal")
    planted = "planted-" + hashlib.sha256(b"another resource").hexdigest()[:20]
    other = servers.url.replace("/mcp", "/other")
    record = {"resource": other, "expires_at": None, "token": {"access_token": planted,
              "token_type": "Bearer"}}  # fmt: skip
    keyring.set_password(*_ref_parts(oauth.storage_refs(servers.url)[0]), json.dumps(record))
    run = await _call(tmp_path, servers, keyring_env)
    assert text_of(run.outcome) == "hi", run.stderr
    assert f"was issued for '{other}'" in run.stderr
    assert _seen(planted) not in servers.events()  # never sent; a sign-in instead
    assert _browser_runs(tmp_path) == 1


@pytest.mark.anyio
async def test_the_token_goes_to_the_servers_origin_only(
    start: Callable[[str], Servers], tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    import httpx2

    servers = start("normal")
    signed_in = await _call(tmp_path, servers, keyring_env)
    assert text_of(signed_in.outcome) == "hi", signed_in.stderr
    stored = _stored(servers.url)
    assert stored is not None
    seen = _seen(stored["token"]["access_token"])
    before = servers.events().count(seen)
    notes: list[str] = []
    provider = oauth.provider(
        servers.url, remote.OAuthSpec(), state_dir=str(tmp_path), name="t", report=notes.append
    )
    async with httpx2.AsyncClient(auth=provider) as client:
        # the same server under another name: another origin, and the token stays home
        with pytest.raises(oauth.OAuthRefused, match="not sent"):
            await client.get(servers.url.replace("127.0.0.1", "localhost"))
        assert servers.events().count(seen) == before
        await client.get(servers.url)  # the control: its own origin gets it
    assert servers.events().count(seen) == before + 1


def test_a_pre_registered_client_and_port_are_used_as_given(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    spec = remote.OAuthSpec(client_id="mcpwrap-desktop", redirect_port=8765)
    made = oauth.provider(
        "https://mcp.example.com/mcp", spec, state_dir=str(tmp_path), name="t", report=print
    )
    client = made.context.storage
    assert isinstance(client, oauth.KeyringStorage) and client.client is not None
    assert client.client.client_id == "mcpwrap-desktop"
    assert client.client.token_endpoint_auth_method == "none"  # public: PKCE, no secret
    assert [str(u) for u in made.context.client_metadata.redirect_uris or []] == [
        "http://127.0.0.1:8765/callback"
    ]


# --- the pure parts ------------------------------------------------------------------------

AS = "https://auth.example.com"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://x.example/$(touch /tmp/pwned)", "characters"),
        ("https://auth.example.com/$(touch%20/tmp/pwned)", "CVE-2025-6514"),
        ("https://auth.example.com/a`id`", "characters"),
        ("https://auth.example.com/a;id|x", "characters"),
        ("https://auth.example.com/a'b\"c", "characters"),
        ("file:///etc/passwd", "scheme is file"),
        ("javascript:alert(1)", "scheme is javascript"),
        ("a:$(calc.exe)", "scheme is a"),
        ("http://auth.example.com/authorize", "plain http"),
        ("https://evil.example/authorize", "discovery found is https://auth.example.com:443"),
        ("https://auth.example.com:8443/authorize", "discovery found"),
        ("https://user@auth.example.com/authorize", "user name"),
        ("https:///authorize", "no host"),
    ],
)
def test_authorization_urls_refused(url: str, why: str) -> None:
    problem = oauth.authorization_url_problem(url, AS)
    assert problem is not None and why in problem


@pytest.mark.parametrize(
    ("url", "server"),
    [
        (AS + "/authorize?response_type=code&state=a-b_c&scope=a+b&x=%2F", AS),
        ("https://AUTH.example.com:443/oauth2/v1/authorize?client_id=x", AS + "/tenant"),
        ("http://127.0.0.1:9000/authorize?a=b", "http://127.0.0.1:9000"),
        ("http://[::1]:9000/authorize", "http://[::1]:9000/"),
    ],
)
def test_authorization_urls_opened(url: str, server: str) -> None:
    assert oauth.authorization_url_problem(url, server) is None


def test_the_browser_command_is_an_argument_list() -> None:
    url = "https://auth.example.com/authorize?a=b&c=d"
    env = {"BROWSER": "firefox --new-tab"}
    assert oauth.browser_command(url, env, "linux") == ["firefox", "--new-tab", url]
    assert oauth.browser_command(url, {"BROWSER": ":w3m -o x=%s:"}, "linux") == [
        "w3m",
        "-o",
        f"x={url}",
    ]
    # shell syntax in $BROWSER stays words: nothing is expanded or run
    assert oauth.browser_command(url, {"BROWSER": "b $(touch /tmp/p)"}, "linux") == [
        "b", "$(touch", "/tmp/p)", url
    ]  # fmt: skip
    assert oauth.browser_command(url, {}, "linux") == ["xdg-open", url]
    assert oauth.browser_command(url, {}, "darwin") == ["open", url]
    assert oauth.browser_command(url, {}, "win32") is None


def test_the_profiles_scopes_are_kept_over_the_servers_suggestion() -> None:
    metadata = oauth._ClientMetadata(redirect_uris=["http://127.0.0.1:1/callback"])  # type: ignore[list-item]
    metadata._pinned = "read"
    metadata.scope = "read write admin"  # what the SDK does with the server's suggestion
    assert metadata.scope == "read"
    assert metadata.model_dump(mode="json", exclude_none=True)["scope"] == "read"


def _parse(table: dict[str, Any]) -> remote.RemoteSpec | None:
    def fail(key: tuple[str, ...], why: str) -> Any:
        raise UsageError(f"server.{'.'.join(map(str, key))}: {why}")

    return remote.parse(table, fail)


def test_profile_oauth_table() -> None:
    spec = _parse({"url": "https://mcp.example.com/mcp", "oauth": {}})
    assert spec is not None and spec.oauth == remote.OAuthSpec()
    spec = _parse(
        {
            "oauth": {
                "scopes": ["read", "tools:call"],
                "client_id": "abc",
                "client_metadata_url": "https://example.com/mcpwrap.json",
                "redirect_port": 8765,
            }
        }
    )
    assert spec is not None and spec.oauth == remote.OAuthSpec(
        ("read", "tools:call"), "abc", "https://example.com/mcpwrap.json", 8765
    )
    assert _parse({"url": "https://mcp.example.com/mcp"}).oauth is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ({"bearer": "keyring:s/u", "oauth": {}}, "both given"),
        ({"oauth": "yes"}, "expected a table"),
        ({"oauth": {"scope": "read"}}, "unknown key"),
        ({"oauth": {"scopes": "read"}}, "array of scope names"),
        ({"oauth": {"scopes": ["a b"]}}, "array of scope names"),
        ({"oauth": {"client_id": 5}}, "client ID"),
        ({"oauth": {"client_metadata_url": "http://example.com/c.json"}}, "https URL"),
        ({"oauth": {"client_metadata_url": "https://example.com/"}}, "a path"),
        ({"oauth": {"redirect_port": 70000}}, "port number"),
        ({"oauth": {"redirect_port": True}}, "port number"),
    ],
)
def test_profile_oauth_table_errors(table: dict[str, Any], why: str) -> None:
    with pytest.raises(UsageError, match=why):
        _parse(table)


def test_the_callback_takes_only_the_sign_in_it_started() -> None:
    """Any process here, or a page the browser loads, can reach the callback's port: a
    response with another state (an attacker's code, a forged error) is answered and
    ignored, and the real one is still taken. Control: no state known, the first is."""
    import http.client
    import threading

    def get(port: int, query: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", f"{oauth.CALLBACK_PATH}?{query}")
        status = conn.getresponse().status
        conn.close()
        return status

    for expected, queries, statuses, code in (
        (
            "s3cr3t-state",
            ("code=evil&state=guess", "code=good&state=s3cr3t-state"),
            [400, 200],
            "good",
        ),
        (None, ("code=evil&state=guess",), [200], "evil"),
    ):
        callback = oauth._Callback(0, expected)
        port = callback._server.server_address[1]
        got: list[dict[str, str]] = []

        def wait(callback: oauth._Callback = callback, got: list[dict[str, str]] = got) -> None:
            got.append(callback.wait(10))

        waiter = threading.Thread(target=wait)
        waiter.start()
        assert [get(port, query) for query in queries] == statuses
        waiter.join(10)
        assert got[0]["code"] == code
