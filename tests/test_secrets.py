"""Secrets from a real Secret Service (gnome-keyring on a private D-Bus session): stored
with `mcpwrap secret`, put into the server's environment at launch, and nowhere else."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from test_pins_run import PYTHON, SCRIPT, TOOLS
from wrapped import MCPWRAP, Wrapped, write_profile

from mcpwrap.identity.secrets import Redactor, SecretError, parse_ref

VALUE = "s3cr3t-" + hashlib.sha256(b"mcpwrap secret test").hexdigest()[:24]
REF = "keyring:mcpwrap-test/api"


def _mcpwrap(
    env: dict[str, str], *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MCPWRAP, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=60,
    )


def _profile(tmp_path: Path) -> Path:
    state = tmp_path / "out" / "state.json"
    (tmp_path / "out").mkdir(exist_ok=True)
    state.write_text('{"tools": ' + __import__("json").dumps(TOOLS) + "}")
    return write_profile(
        tmp_path,
        "[server]\n"
        'passthrough = ["DRIFT_STATE"]\n'
        f'secrets = {{ API_TOKEN = "{REF}" }}\n'
        '[policy]\ndefault = "allow"\n',
    )


def _everything_written(tmp_path: Path) -> bytes:
    """Every file the test's mcpwrap could have written: audit log, state, config, cache."""
    return b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_a_secret_reaches_the_server_and_appears_nowhere_else(
    tmp_path: Path, bus: dict[str, str]
) -> None:
    stored = _mcpwrap(bus, "secret", "set", REF, stdin=VALUE + "\n")
    assert stored.returncode == 0, stored.stderr
    assert VALUE not in stored.stdout + stored.stderr
    listed = _mcpwrap(bus, "secret", "list")
    assert f"{REF}\tstored" in listed.stdout and VALUE not in listed.stdout
    profile = _profile(tmp_path)
    env = {**bus, "DRIFT_STATE": str(tmp_path / "out" / "state.json")}
    with Wrapped(profile, [PYTHON, str(SCRIPT)], env=env) as w:
        w.initialize()
        digest = w.call("env_digest", {"name": "API_TOKEN"})["result"]["content"][0]["text"]
        assert digest == hashlib.sha256(VALUE.encode()).hexdigest()  # the server has it
        w.call("leak", {"name": "API_TOKEN"})
        w.close()
        stderr = w.stderr_now()
    assert "debug: API_TOKEN=[secret API_TOKEN]" in stderr  # masked on the way out
    assert VALUE not in stderr
    assert VALUE.encode() not in _everything_written(tmp_path)  # audit log, state, cache
    for command in (["check", str(profile)], ["doctor", "--profile", str(profile)]):
        out = _mcpwrap(bus, *command)
        assert VALUE not in out.stdout + out.stderr


def test_a_missing_secret_stops_the_run_and_names_it(tmp_path: Path, bus: dict[str, str]) -> None:
    _mcpwrap(bus, "secret", "delete", REF)
    with Wrapped(_profile(tmp_path), [PYTHON, str(SCRIPT)], env=bus) as w:
        assert w.proc.wait(30) == 2
        err = w.stderr_now()
    assert "secrets.API_TOKEN" in err and REF in err and "mcpwrap secret set" in err
    assert not (tmp_path / "out" / "log.jsonl").exists()


def test_delete_and_list(bus: dict[str, str]) -> None:
    ref = "keyring:mcpwrap-test/other"
    assert _mcpwrap(bus, "secret", "set", ref, stdin="value-1234").returncode == 0
    assert f"{ref}\tstored" in _mcpwrap(bus, "secret", "list").stdout
    gone = _mcpwrap(bus, "secret", "delete", ref)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    assert ref not in _mcpwrap(bus, "secret", "list").stdout
    assert "was not in the keyring" in _mcpwrap(bus, "secret", "delete", ref).stdout


@pytest.mark.parametrize(
    "env",
    [
        {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus"},
        {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"},
    ],
    ids=["no-secret-service", "null-backend"],
)
def test_no_usable_backend_is_an_error_with_ways_out_and_no_fallback(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done = _mcpwrap(env, "secret", "set", REF, stdin=VALUE)
    assert done.returncode == 2
    assert "no usable keyring backend" in done.stderr and "gnome-keyring-daemon" in done.stderr
    assert "passthrough" in done.stderr
    assert VALUE.encode() not in _everything_written(tmp_path)  # no plain-text store
    with Wrapped(_profile(tmp_path), [PYTHON, str(SCRIPT)], env=env) as w:
        assert w.proc.wait(30) == 2
        assert "no usable keyring backend" in w.stderr_now()


def test_a_bad_reference_fails_before_the_value_is_read() -> None:
    done = _mcpwrap({}, "secret", "set", "github-token", stdin=VALUE)
    assert done.returncode == 2 and "keyring:SERVICE/USER" in done.stderr


REDACT = [
    ({"A": "abcd1234"}, "x abcd1234 y", "x [secret A] y"),
    ({"A": "abcd1234", "B": "abcd12345678"}, "abcd12345678", "[secret B]"),  # longest first
    ({"A": "abc"}, "abc", "abc"),  # too short to mask without masking ordinary words
    ({}, "nothing", "nothing"),
    ({"A": "a.b*c(d"}, "a.b*c(d and axbbc", "[secret A] and axbbc"),  # literal, not regex
]


@pytest.mark.parametrize(("values", "text", "expected"), REDACT)
def test_redactor(values: dict[str, str], text: str, expected: str) -> None:
    assert Redactor(values)(text) == expected


def test_parse_ref() -> None:
    assert parse_ref("keyring:svc/user/with/slashes") == ("svc", "user/with/slashes")
    with pytest.raises(SecretError, match="keyring:SERVICE/USER"):
        parse_ref("svc/user")
