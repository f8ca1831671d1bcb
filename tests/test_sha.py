"""The OpenSSL-free SHA-256 gives the same digests as hashlib's."""

from __future__ import annotations

import hashlib

import pytest

from mcpwrap.basics import sha


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 1000, "é日本".encode()])
def test_same_digest_as_hashlib(data: bytes) -> None:
    assert sha.hexdigest(data) == hashlib.sha256(data).hexdigest()


def test_the_run_path_does_not_load_openssl() -> None:
    import subprocess
    import sys

    code = "import mcpwrap.commands.cli, mcpwrap.commands.run, mcpwrap.relay.session, sys; print('_hashlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
