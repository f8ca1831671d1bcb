"""`wrap`, `unwrap`, `init` and `doctor` for remote MCP servers, with real parts: real
clients' config files in their real shapes (VS Code's "type": "http" entry, Claude
Desktop's `npx -y mcp-remote URL --header ...`), the MCP SDK's own server over
Streamable HTTP on loopback (tests/remote_server.py), and each wrapped entry started as
its client would start it, driven by the SDK's stdio client.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_remote import Remote, start_server, stop
from test_wrap_start import MCPWRAP_BIN, _jsonc_servers, drive, entry_line, text, user_env
from wrapped import MCPWRAP

from mcpwrap.clients import remoteentry
from mcpwrap.clients.apps import LAUNCHD_PATH


@pytest.fixture
def world(var_tmp_path: Path) -> dict[str, Path]:
    home = var_tmp_path / "home"
    repo = var_tmp_path / "repo"
    (home / ".config" / "Claude").mkdir(parents=True)
    (repo / ".git").mkdir(parents=True)
    return {"home": home, "repo": repo}


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    server = start_server(tmp_path, "streamable-http")
    yield server
    stop(server)


def wrap(home: Path, cwd: Path, *argv: str, extra: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [*MCPWRAP, *argv],
        cwd=cwd,
        env={**user_env(home), **(extra or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout.decode() + done.stderr.decode()


def files_holding(root: Path, secret: str) -> list[Path]:
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and secret.encode() in path.read_bytes()
    ]


# --- VS Code: a workspace's "type": "http" entry --------------------------------------------

VSCODE = """\
{
\t// VS Code reads comments and trailing commas
\t"servers": {
\t\t"team": {
\t\t\t"type": "http",
\t\t\t"url": "URL",
\t\t\t"headers": { "X-Team": "blue" },
\t\t},
\t},
}
"""


@pytest.mark.anyio
async def test_vscode_http_entry_is_wrapped_started_and_unwrapped(
    world: dict[str, Path], remote: Remote
) -> None:
    home, repo = world["home"], world["repo"]
    config = repo / ".vscode" / "mcp.json"
    config.parent.mkdir()
    config.write_text(VSCODE.replace("URL", remote.url))
    original = config.read_bytes()

    status, out = wrap(home, repo, "wrap", "vscode")
    assert status == 1, out
    assert f"run `mcpwrap init team -- {remote.url}`" in entry_line(out, "team", "not wrapped")
    assert config.read_bytes() == original

    status, out = wrap(home, repo, "wrap", "vscode", "--init")
    assert status == 0, out
    line = entry_line(out, "team", "wrapped (profile team")
    assert "written by mcpwrap init now" in line and "no jail" in line
    entry_line(out, "team", "ready (3 tools)")
    profile = (repo / ".mcpwrap" / "team.toml").read_text()
    server = tomllib.loads(profile)["server"]
    assert server == {"url": remote.url, "headers": {"X-Team": "blue"}}, profile
    # Locked as a local server's entry is: the tools and (for https) the server's key.
    assert tomllib.loads((repo / ".mcpwrap" / "team.lock").read_text())["remote"]["url"] == (
        remote.url
    )

    written = config.read_text()
    assert "// VS Code reads comments" in written
    entry = _jsonc_servers(written)["team"]
    assert entry == {
        "type": "stdio",
        "command": MCPWRAP_BIN,
        "args": ["run", "--profile", "team", "--", remote.url],
    }
    # As VS Code starts it: in the workspace folder.
    names, echoed = await drive(
        entry, cwd=repo, env={"HOME": str(home)}, call=("echo", {"text": "hi"})
    )
    assert names == ["echo", "steps", "wipe"]
    assert not echoed.is_error and text(echoed) == "hi (x-team=blue)", text(echoed)

    status, out = wrap(home, repo, "unwrap", "vscode")
    assert status == 0, out
    assert config.read_bytes() == original


# --- Claude Desktop: npx -y mcp-remote URL --header ... -------------------------------------


def desktop(home: Path, servers: dict[str, Any]) -> Path:
    config = home / ".config" / "Claude" / "claude_desktop_config.json"
    config.write_text(json.dumps({"mcpServers": servers}, indent=2) + "\n")
    return config


@pytest.mark.anyio
async def test_claude_desktop_mcp_remote_entry_is_wrapped_started_and_unwrapped(
    world: dict[str, Path], remote: Remote
) -> None:
    home = world["home"]
    bridge = {
        "command": "npx",
        "args": ["-y", "mcp-remote", remote.url, "--header", "X-Team: blue"],
    }
    config = desktop(home, {"team": bridge})
    original = config.read_bytes()

    status, out = wrap(home, home, "wrap", "claude-desktop", "--init")
    assert status == 0, out
    entry_line(out, "team", "ready (3 tools)")
    # Claude Desktop names no project: the profile goes to the user's profiles.
    profile = home / ".config" / "mcpwrap" / "profiles" / "team.toml"
    assert tomllib.loads(profile.read_text())["server"]["headers"] == {"X-Team": "blue"}
    entry = json.loads(config.read_text())["mcpServers"]["team"]
    assert entry == {
        "command": MCPWRAP_BIN,
        "args": ["run", "--profile", "team", "--", remote.url],
    }
    # As Claude Desktop starts it: in /, with launchd's PATH.
    _, echoed = await drive(
        entry,
        cwd="/",
        env={"HOME": str(home), "PATH": LAUNCHD_PATH},
        call=("echo", {"text": "hi"}),
    )
    assert text(echoed) == "hi (x-team=blue)" and remote.seen() == ["echo"]

    status, out = wrap(home, home, "unwrap", "claude-desktop")
    assert status == 0, out
    assert config.read_bytes() == original


@pytest.mark.anyio
async def test_a_bearer_is_never_copied_and_the_message_names_the_secret_command(
    world: dict[str, Path], remote: Remote, bus: dict[str, str]
) -> None:
    home, base = world["home"], world["home"].parent
    token = "tok-" + hashlib.sha256(b"wrap remote bearer").hexdigest()[:24]
    bridge = {
        "command": "npx",
        "args": ["-y", "mcp-remote", remote.url, "--header", "Authorization: Bearer ${AUTH_TOKEN}"],
        "env": {"AUTH_TOKEN": token},
    }
    config = desktop(home, {"api": bridge})
    original = config.read_bytes()

    status, out = wrap(home, home, "wrap", "claude-desktop", "--init", extra=bus)
    assert status == 1, out
    ref = "keyring:mcpwrap-api/bearer"
    refused = entry_line(out, "api", "not wrapped")
    assert f"`mcpwrap secret set {ref}`" in refused, refused
    assert "run `mcpwrap wrap claude-desktop --server api` again" in refused
    assert token not in out
    assert config.read_bytes() == original
    assert files_holding(base, token) == [config]  # nothing else holds it

    stored = subprocess.run(
        [*MCPWRAP, "secret", "set", ref],
        input=token + "\n",
        capture_output=True,
        text=True,
        env={**user_env(home), **bus},
        timeout=60,
    )
    assert stored.returncode == 0, stored.stderr
    status, out = wrap(home, home, "wrap", "claude-desktop", "--init", extra=bus)
    assert status == 0, out
    entry_line(out, "api", "ready (3 tools)")
    assert "its env still holds AUTH_TOKEN in plain text, which the wrapped entry" in out
    profile = home / ".config" / "mcpwrap" / "profiles" / "api.toml"
    assert f'bearer = "{ref}"' in profile.read_text()
    entry = json.loads(config.read_text())["mcpServers"]["api"]
    _, echoed = await drive(
        entry,
        cwd="/",
        env={"HOME": str(home), "PATH": LAUNCHD_PATH, **bus},
        call=("echo", {"text": "hi"}),
    )
    digest = hashlib.sha256(f"Bearer {token}".encode()).hexdigest()
    assert text(echoed) == f"hi (authorization={digest})"
    # Only the user's own config (its env, as they wrote it) and its backup hold it.
    backup = Path(str(config) + ".mcpwrap-backup")
    assert sorted(files_holding(base, token)) == sorted([config, backup])
    assert token not in out


def test_an_unsupported_mcp_remote_option_is_refused_by_name(world: dict[str, Path]) -> None:
    home = world["home"]
    url = "https://mcp.example.com/mcp"
    bridge = {
        "command": "npx",
        "args": ["-y", "mcp-remote@0.1.29", url, "--resource", url, "--ignore-tool", "delete*"],
    }
    config = desktop(home, {"ex": bridge})
    original = config.read_bytes()
    status, out = wrap(home, home, "wrap", "claude-desktop", "--init")
    assert status == 1, out
    refused = entry_line(out, "ex", "not wrapped")
    assert "mcp-remote options mcpwrap does not support: --resource, --ignore-tool" in refused
    assert config.read_bytes() == original


# --- the entries, read (pure) ----------------------------------------------------------------


def test_mcp_remote_arguments_are_read_as_mcp_remote_reads_them() -> None:
    argv = [
        *("pnpm", "dlx", "mcp-remote", "https://h.example/sse", "--transport", "sse-only"),
        *("--header", "X-Team:blue", "--header=X-Env: prod", "--allow-http"),
    ]
    assert remoteentry.runs_mcp_remote(argv)
    found = remoteentry.from_mcp_remote(argv, {"TEAM": "blue"})
    assert found.url == "https://h.example/sse" and found.transport == "sse"
    assert dict(found.headers) == {"X-Team": "blue", "X-Env": "prod"} and found.secret is None
    assert found.notes and found.notes[0].startswith("--allow-http:")
    bun = ["bunx", "mcp-remote", "https://h.example/mcp", "--header", "Authorization:${AUTH}"]
    assert remoteentry.from_mcp_remote(bun, {"AUTH": "Bearer x"}).secret == "Authorization"
    assert not remoteentry.runs_mcp_remote(["npx", "-y", "@modelcontextprotocol/server-memory"])


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["https://h.example/mcp", "3334"], "the OAuth callback port 3334"),
        (["https://h.example/mcp", "--header", "Cookie: a=b"], "a Cookie header"),
        (["https://h.example/mcp", "--header", "Authorization: Basic eA=="], "not a bearer"),
        (["http://192.0.2.1/mcp", "--allow-http"], "plain http to 192.0.2.1"),
        (["https://h.example/mcp", "--transport", "ws"], "--transport 'ws'"),
        # Credentials by another name, and values from the environment, would be written
        # into the profile's plain text: refused (the control: X-Team: blue, above).
        (["https://h.example/mcp", "--header", "X-API-Key: k3y"], "looks like a credential"),
        (["https://h.example/mcp", "--header", "x-auth-token:${T}"], "looks like a credential"),
        (["https://h.example/mcp", "--header", "X-Team:${TEAM}"], "from the environment"),
    ],
)
def test_what_mcpwrap_cannot_carry_over_is_refused(argv: list[str], said: str) -> None:
    with pytest.raises(remoteentry.Refused, match=said):
        remoteentry.from_mcp_remote(["npx", "-y", "mcp-remote", *argv], {})


def test_url_entries_of_each_client() -> None:
    def same(value: str) -> str:
        return value

    vscode = {"type": "sse", "url": "https://h.example/sse", "headers": {"X-A": "1"}}
    found = remoteentry.from_url_entry(vscode, same)
    assert (found.transport, dict(found.headers)) == ("sse", {"X-A": "1"})
    cursor = {"url": "https://h.example/mcp", "headers": {"Authorization": "Bearer ${env:T}"}}
    assert remoteentry.from_url_entry(cursor, same).secret == "Authorization"
    keyed = {"url": "https://h.example/mcp", "headers": {"api-key": "${env:API_KEY}"}}
    with pytest.raises(remoteentry.Refused, match="looks like a credential"):
        remoteentry.from_url_entry(keyed, same)
    with pytest.raises(remoteentry.Refused, match="OAuth"):
        remoteentry.from_url_entry({"url": "https://h.example/mcp", "auth": {}}, same)


# --- init and doctor ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_init_from_a_remote_server_writes_a_profile_that_runs(
    world: dict[str, Path], remote: Remote
) -> None:
    home, repo = world["home"], world["repo"]
    status, out = wrap(home, repo, "init", "svc", "--", remote.url)
    assert status == 0, out
    assert "and its lock" in out
    path = repo / ".mcpwrap" / "svc.toml"
    doc = tomllib.loads(path.read_text())
    assert doc["server"] == {"url": remote.url} and "sandbox" not in doc
    assert sorted(doc["tools"]) == ["echo", "steps", "wipe"]
    lock = tomllib.loads((repo / ".mcpwrap" / "svc.lock").read_text())
    assert lock["remote"]["url"] == remote.url and "echo" in str(lock["tools"])
    entry = {"command": MCPWRAP_BIN, "args": ["run", "--profile", "svc"]}
    _, echoed = await drive(entry, cwd=repo, env=user_env(home), call=("echo", {"text": "ok"}))
    assert not echoed.is_error and text(echoed) == "ok"


@pytest.mark.parametrize("trusted", [True, False])
def test_doctor_checks_a_remote_profiles_tls(tmp_path: Path, trusted: bool) -> None:
    from test_tlsclient import CA

    ca = CA(tmp_path, "doctor-ca")
    issued = ca.issue("server")
    server = start_server(tmp_path, "streamable-http", (issued.cert, issued.key))
    try:
        tls = f'\n[server.tls]\nca = "{ca.pem}"\n' if trusted else ""
        profile = tmp_path / "svc.toml"
        profile.write_text(f'version = 1\n[server]\nurl = "{server.url}"\n{tls}')
        done = subprocess.run(
            [*MCPWRAP, "doctor", "--profile", str(profile)],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"},
        )
    finally:
        stop(server)
    out = done.stdout
    assert "ok   URL" in out and "ok   host resolves" in out and "127.0.0.1" in out
    assert "ok   jail               none, by design" in out
    assert "namespaces" not in out and "Landlock" not in out  # no jail checks for it
    if trusted:
        assert done.returncode == 0, out
        assert f"ok   TLS                verified against the CA in {ca.pem}" in out
    else:
        assert done.returncode == 1, out
        assert "FAIL TLS" in out and "not signed by a CA mcpwrap trusts" in out
        assert "[server.tls] ca" in out


def test_a_wrapped_url_is_not_unwrapped_without_its_record(world: dict[str, Path]) -> None:
    home = world["home"]
    wrapped = {"command": MCPWRAP_BIN, "args": ["run", "--profile", "x", "--", "https://h/mcp"]}
    config = desktop(home, {"x": wrapped})
    status, out = wrap(home, home, "unwrap", "claude-desktop")
    assert status == 1 and "a URL follows" in entry_line(out, "x", "not unwrapped"), out
    assert json.loads(config.read_text())["mcpServers"]["x"] == wrapped
    assert sys.executable  # the venv's mcpwrap wrote nothing


@pytest.mark.parametrize("trusted", [True, False])
def test_init_from_a_profile_naming_the_url_verifies_tls_as_run_does(
    world: dict[str, Path], trusted: bool
) -> None:
    """`init NAME` with a profile that holds [server] url (and [server.tls] ca): the
    handshake is verified with the profile's CA; without it, the system store refuses the
    test CA and init says so, and the profile stays as it was."""
    from test_tlsclient import CA

    home, repo = world["home"], world["repo"]
    ca = CA(repo.parent, "init-ca")
    issued = ca.issue("server")
    server = start_server(repo.parent, "streamable-http", (issued.cert, issued.key))
    try:
        (repo / ".mcpwrap").mkdir()
        stub = repo / ".mcpwrap" / "svc.toml"
        tls = f'\n[server.tls]\nca = "{ca.pem}"\n' if trusted else ""
        stub.write_text(f'version = 1\n[server]\nurl = "{server.url}"\n{tls}')
        before = stub.read_bytes()
        status, out = wrap(home, repo, "init", "svc")
    finally:
        stop(server)
    if trusted:
        assert status == 0, out
        doc = tomllib.loads(stub.read_text())
        assert doc["server"] == {"url": server.url, "tls": {"ca": str(ca.pem)}}
        assert sorted(doc["tools"]) == ["echo", "steps", "wipe"]
    else:
        assert status != 0 and "not signed by a CA mcpwrap trusts" in out, out
        assert stub.read_bytes() == before
