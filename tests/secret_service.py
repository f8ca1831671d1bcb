"""A real Secret Service for the tests: gnome-keyring on a private D-Bus session bus.

No mock: `keyring` talks to gnome-keyring-daemon over D-Bus exactly as on a desktop. The
bus and the keyring's files live in a temporary directory; nothing touches the machine's
own session or keyrings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def secret_service(base: Path) -> Iterator[dict[str, str]]:
    """Start the bus and the keyring; yield the environment variables that reach them."""
    for tool in ("dbus-daemon", "gnome-keyring-daemon"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"{tool} is not installed: the secret tests need a real Secret Service "
                "(.ci/run installs dbus and gnome-keyring)",
                pytrace=False,
            )
    runtime = base / "run"
    data = base / "data"
    runtime.mkdir(mode=0o700)
    data.mkdir()
    bus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1", "--nopidfile"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bus.stdout is not None
    address = bus.stdout.readline().strip()
    env = {
        "DBUS_SESSION_BUS_ADDRESS": address,
        "XDG_RUNTIME_DIR": str(runtime),
    }
    daemon_env = {**os.environ, **env, "XDG_DATA_HOME": str(data), "HOME": str(base)}
    keyring = subprocess.run(
        ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--daemonize"],
        input="mcpwrap-test-keyring-password",
        capture_output=True,
        text=True,
        env=daemon_env,
        timeout=30,
    )
    pid = None
    try:
        assert keyring.returncode == 0, keyring.stdout + keyring.stderr
        _wait_for_the_service(address)
        pid = _owner_pid(address)
        yield env
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        bus.terminate()
        bus.wait(10)


def _ask_bus(address: str, method: str) -> str:
    probe = subprocess.run(
        [
            "dbus-send",
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            f"org.freedesktop.DBus.{method}",
            "string:org.freedesktop.secrets",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": address},
        timeout=10,
    )
    return probe.stdout


def _wait_for_the_service(address: str) -> None:
    """The daemon answers on the bus a moment after it forks."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "boolean true" in _ask_bus(address, "NameHasOwner"):
            return
        time.sleep(0.05)
    pytest.fail("gnome-keyring-daemon did not take the org.freedesktop.secrets name")


def _owner_pid(address: str) -> int | None:
    """The daemon's pid (it forked away), to stop it afterwards."""
    words = _ask_bus(address, "GetConnectionUnixProcessID").split()
    return int(words[-1]) if words and words[-1].isdigit() else None
