"""Runtime tokens: the format and its MAC, time and revocation checks, issue and rotate
against a real Secret Service (gnome-keyring on a private D-Bus session), and the
`mcpwrap token` actions as a person runs them."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.commands.token import add_token_parser, main_token
from mcpwrap.config import paths
from mcpwrap.identity import tokens
from mcpwrap.identity.tokens import Registry, Scope, Token, TokenError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SCOPE = Scope("acme", ("read_file", "list_*"), frozenset({"read"}), "10/min", 2)
TOKEN = Token("0" * 31 + "1", SCOPE, 1_000, 2_000, 900, "acme-ro", None)
DAY = 86400


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def kr(keyring_env: dict[str, str]) -> str:
    """In-process keyring calls reach the test Secret Service; no signing key yet.
    The state dir."""
    import keyring
    import keyring.errors

    with contextlib.suppress(keyring.errors.PasswordDeleteError):
        keyring.delete_password(tokens.KEY_SERVICE, tokens.KEY_USER)
    return paths.state_dir()


def _stored_key_text() -> str:
    import keyring

    text = keyring.get_password(tokens.KEY_SERVICE, tokens.KEY_USER)
    assert text is not None
    return str(text)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sealed(payload: bytes, key: bytes = KEY) -> str:
    """A token text around any payload, MAC'd with the standard library's HMAC."""
    signed = f"mcpwrap1.{_b64(payload)}"
    return f"{signed}.{_b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())}"


def _payload(**changes: Any) -> bytes:
    data = json.loads(base64.urlsafe_b64decode(tokens.encode(TOKEN, KEY).split(".")[1] + "=="))
    data.update(changes)
    for name in [k for k, v in changes.items() if v is _DROP]:
        del data[name]
    return json.dumps(data).encode()


_DROP = object()


def _rule(exc: pytest.ExceptionInfo[TokenError]) -> str:
    return exc.value.rule


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mcpwrap")
    sub = parser.add_subparsers(dest="command")
    add_token_parser(sub)
    return main_token(parser.parse_args(["token", *argv]))


def _issue_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    assert _cli("issue", "--tenant", "acme", "--tool", "read_file", *argv) == 0
    out = capsys.readouterr()
    return out.out, out.err


# ---------------------------------------------------------------------------- the format


@pytest.mark.parametrize(
    "token",
    [
        TOKEN,
        TOKEN._replace(name=None, predecessor="f" * 32),
        TOKEN._replace(
            scope=Scope("Ünïcode tenant", ("*",), frozenset({"read", "write"}), None, None)
        ),
    ],
)
def test_encode_decode_round_trip(token: Token) -> None:
    text = tokens.encode(token, KEY)
    assert text.startswith("mcpwrap1.") and text.count(".") == 2 and "=" not in text
    assert tokens.decode(text, KEY) == token
    assert tokens.decode(text + "\n", KEY) == token  # a trailing newline from a file


@pytest.mark.parametrize("key", [b"", b"k", KEY, bytes(64), bytes(range(65)), bytes(200)])
def test_our_hmac_is_the_standard_one(key: bytes) -> None:
    for message in (b"", b"mcpwrap1.abc", os.urandom(300)):
        assert tokens.hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()


def _flip_payload(text: str) -> str:
    prefix, payload, mac = text.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=="))
    raw[raw.index(b"acme")] ^= 0x20  # "acme" -> "Acme": still valid JSON
    return f"{prefix}.{_b64(bytes(raw))}.{mac}"


def _flip_mac(text: str) -> str:
    prefix, payload, mac = text.split(".")
    raw = bytearray(base64.urlsafe_b64decode(mac + "=="))
    raw[0] ^= 1
    return f"{prefix}.{payload}.{_b64(bytes(raw))}"


def _swap_payload(text: str) -> str:
    other = tokens.encode(TOKEN._replace(id="a" * 32), KEY)
    return ".".join([*other.split(".")[:2], text.split(".")[2]])


@pytest.mark.parametrize(
    "tamper",
    [
        _flip_payload,
        _flip_mac,
        _swap_payload,
        lambda text: tokens.encode(TOKEN, OTHER_KEY),
        lambda text: (
            _sealed(_payload(classes=["read", "write"])).rsplit(".", 1)[0]
            + "."
            + text.split(".")[2]
        ),
    ],
    ids=["payload byte", "mac byte", "swapped payload", "other key", "widened scope"],
)
def test_tampering_is_a_signature_error(tamper: Any) -> None:
    text = tokens.encode(TOKEN, KEY)
    with pytest.raises(TokenError) as exc:
        tokens.decode(tamper(text), KEY)
    assert _rule(exc) == "token.signature"
    assert "altered, or signed with another signing key" in str(exc.value)


_GOOD_MAC = _b64(bytes(32))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "the text is empty"),
        ("   ", "the text is empty"),
        ("eyJhbGciOiJIUzI1NiJ9.e30.sig", "does not start with mcpwrap1."),
        ("mcpwrap2.e30." + _GOOD_MAC, "does not start with mcpwrap1."),
        ("mcpwrap1.e30", "2 dot-separated parts, not 3"),
        ("mcpwrap1.e30.x.y", "4 dot-separated parts, not 3"),
        ("mcpwrap1.e3+0." + _GOOD_MAC, "the payload is not base64url"),
        ("mcpwrap1.." + _GOOD_MAC, "the payload is not base64url"),
        ("mcpwrap1.e30.ab$c", "the MAC is not base64url"),
        ("mcpwrap1.e30.e31", "the MAC is not canonical base64url"),
        ("mcpwrap1.e30." + _b64(bytes(16)), "the MAC is 16 bytes, not 32"),
    ],
)
def test_malformed_text_is_a_format_error(text: str, says: str) -> None:
    with pytest.raises(TokenError) as exc:
        tokens.decode(text, KEY)
    assert _rule(exc) == "token.format"
    assert says in str(exc.value)
    assert str(exc.value).startswith("not a valid mcpwrap token: ")


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"{not json", "the payload is not JSON"),
        (b"\xff\xfe", "the payload is not JSON"),
        (b"[1, 2]", "the payload is a JSON list, not an object"),
        (b'"text"', "the payload is a JSON str, not an object"),
        (_payload(expires=_DROP), "lacks the field(s) expires"),
        (_payload(id=_DROP, tools=_DROP), "lacks the field(s) id, tools"),
        (_payload(admin=True), "unknown field(s) admin"),
        (_payload(id=7), "field id is 7, not a string"),
        (_payload(id="XYZ"), "field id is not 32 lowercase hex digits"),
        (_payload(tenant=None), "field tenant is null, not a string"),
        (_payload(tools="read_file"), 'field tools is "read_file", not a list'),
        (_payload(tools=[]), "field tools is not a non-empty list"),
        (_payload(tools=[3]), "field tools is not a non-empty list"),
        (_payload(classes=["admin"]), 'field classes is not a non-empty list of "read"/"write"'),
        (_payload(not_before="1000"), 'field not_before is "1000", not an integer'),
        (_payload(expires=True), "field expires is true, not an integer"),
        (_payload(expires=2000.5), "field expires is 2000.5, not an integer"),
        (_payload(concurrency="2"), 'field concurrency is "2", not an integer'),
        (_payload(rate=10), "field rate is 10, not a string"),
        (_payload(expires=1000), "field expires is not after not_before"),
    ],
)
def test_bad_payloads_signed_with_our_key_name_the_field(payload: bytes, says: str) -> None:
    with pytest.raises(TokenError) as exc:
        tokens.decode(_sealed(payload), KEY)
    assert _rule(exc) == "token.format"
    assert says in str(exc.value)


def test_an_unsigned_bad_payload_is_not_parsed() -> None:
    """A forged payload is refused on its MAC before any of it is read as JSON."""
    with pytest.raises(TokenError) as exc:
        tokens.decode(_sealed(b"{not json", OTHER_KEY), KEY)
    assert _rule(exc) == "token.signature"


# ---------------------------------------------------------------------------- pure checks


@pytest.mark.parametrize(
    ("now", "rule"),
    [
        (0, "token.not_yet_valid"),
        (999.5, "token.not_yet_valid"),
        (1000, None),
        (1999.9, None),
        (2000, "token.expired"),
        (2000 + 3 * DAY, "token.expired"),
    ],
)
def test_time_verdict(now: float, rule: str | None) -> None:
    verdict = tokens.time_verdict(TOKEN, now)
    assert (verdict[0] if verdict else None) == rule
    if verdict:
        assert TOKEN.id in verdict[1]
        assert ("expired at 1970-01-01T00:33:20Z" in verdict[1]) == (rule == "token.expired")


@pytest.mark.parametrize(
    ("patterns", "name", "allowed"),
    [
        (("read_file",), "read_file", True),
        (("read_file",), "read_files", False),
        (("read_file",), "Read_File", False),  # case-sensitive
        (("list_*",), "list_dir", True),
        (("list_*",), "list_", True),
        (("list_*",), "xlist_dir", False),
        (("git_?",), "git_a", True),
        (("git_?",), "git_ab", False),
        (("db.[rw]*",), "db.read", True),
        (("db.[rw]*",), "db.delete", False),
        (("*",), "anything", True),
        (("a", "b*"), "bee", True),
    ],
)
def test_allows_tool(patterns: tuple[str, ...], name: str, allowed: bool) -> None:
    assert tokens.allows_tool(SCOPE._replace(tools=patterns), name) is allowed


@pytest.mark.parametrize(
    ("now", "fraction", "due"),
    [
        (500, 0.8, False),  # before not_before
        (1000, 0.8, False),
        (1799, 0.8, False),
        (1800, 0.8, True),  # exactly 80% of the life
        (1999, 0.8, True),
        (2500, 0.8, True),  # past expiry
        (1499, 0.5, False),
        (1500, 0.5, True),
    ],
)
def test_needs_rotation(now: float, fraction: float, due: bool) -> None:
    assert tokens.needs_rotation(TOKEN, now, fraction) is due


@pytest.mark.parametrize(
    ("scope", "rule", "says"),
    [
        (SCOPE._replace(classes=frozenset({"admin"})), "token.admin", "never reachable"),
        (SCOPE._replace(classes=frozenset({"read", "admin"})), "token.admin", "never reachable"),
        (SCOPE._replace(classes=frozenset({"delete"})), "token.scope", "read and/or write"),
        (SCOPE._replace(classes=frozenset()), "token.scope", "read and/or write"),
        (SCOPE._replace(tools=()), "token.scope", "at least one tool"),
        (SCOPE._replace(tools=("",)), "token.scope", "at least one tool"),
        (SCOPE._replace(tenant=""), "token.scope", "tenant"),
        (SCOPE._replace(rate="often"), "token.scope", "rate: expected a rate"),
        (SCOPE._replace(concurrency=0), "token.scope", "concurrency must be 1 or more"),
    ],
)
def test_check_scope_refuses(scope: Scope, rule: str, says: str) -> None:
    with pytest.raises(TokenError) as exc:
        tokens.check_scope(scope)
    assert _rule(exc) == rule and says in str(exc.value)


# ---------------------------------------------------------------------------- the registry


def test_registry_by_id_by_name_newest_and_revocation(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "sub" / "tokens.sqlite3"))
    first = TOKEN._replace(id="1" * 32, issued=100)
    second = TOKEN._replace(id="2" * 32, issued=200, predecessor=first.id)
    third = TOKEN._replace(id="3" * 32, issued=200)  # same second: the later row wins
    other = TOKEN._replace(id="4" * 32, issued=300, name="other")
    for token in (first, second, third, other):
        reg.add(token)
    assert reg.get(first.id) == first
    assert reg.get("acme-ro") == third
    assert reg.get("nobody") is None
    assert [t.id for t in reg.all()] == [first.id, second.id, third.id, other.id]
    assert reg.successor(first.id) == second.id and reg.successor(second.id) is None
    assert not reg.revoked(first.id)
    assert reg.revoke(first.id, 150.0) is True
    assert reg.revoke(first.id, 160.0) is False  # already revoked: the first time stays
    assert reg.revoked(first.id) and reg.revoked_at(first.id) == 150.0
    assert reg.revoked("9" * 32)  # unknown: fail closed
    assert reg.revoke("9" * 32, 1.0) is False
    with pytest.raises(TokenError, match="UNIQUE"):
        reg.add(first)
    reg.close()
    assert Registry(str(tmp_path / "sub" / "tokens.sqlite3")).revoked(first.id)  # persisted


def test_registry_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "tokens.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(TokenError) as exc:
        Registry(str(tmp_path / "tokens.sqlite3")).revoked(TOKEN.id)
    assert _rule(exc) == "token.registry" and str(tmp_path / "tokens.sqlite3") in str(exc.value)


# ---------------------------------------------------------------------------- with the keyring


def test_the_key_is_created_once_and_reused(kr: str) -> None:
    with pytest.raises(TokenError) as exc:
        tokens.signing_key(create=False)
    assert _rule(exc) == "token.key" and "mcpwrap token issue" in str(exc.value)
    with pytest.raises(TokenError) as exc2:
        tokens.verify(tokens.encode(TOKEN, KEY), state_dir=kr)
    assert _rule(exc2) == "token.key"
    first, first_text = tokens.issue(SCOPE, lifetime=DAY, not_before=None, name=None, state_dir=kr)
    key = tokens.signing_key(create=False)
    assert len(key) == 32 and tokens.signing_key(create=True) == key
    second, second_text = tokens.issue(
        SCOPE, lifetime=DAY, not_before=None, name=None, state_dir=kr
    )
    assert first.id != second.id
    assert tokens.verify(first_text, state_dir=kr) == first  # the second issue kept the key
    assert tokens.verify(second_text, state_dir=kr) == second


def test_a_corrupt_key_entry_is_refused_with_the_way_out(kr: str) -> None:
    import keyring

    keyring.set_password(tokens.KEY_SERVICE, tokens.KEY_USER, "c2hvcnQ=")
    with pytest.raises(TokenError) as exc:
        tokens.signing_key(create=True)
    assert _rule(exc) == "token.key" and "delete that entry" in str(exc.value)


def test_verify_checks_time_and_revocation(kr: str) -> None:
    now = 1_800_000_000.0
    token, text = tokens.issue(
        SCOPE, lifetime=3600, not_before=now + 60, name=None, state_dir=kr, now=now
    )
    assert (token.issued, token.not_before, token.expires) == (now, now + 60, now + 3660)
    cases = [(now, "token.not_yet_valid"), (now + 3660, "token.expired")]
    for when, rule in cases:
        with pytest.raises(TokenError) as exc:
            tokens.verify(text, state_dir=kr, now=when)
        assert _rule(exc) == rule
    assert tokens.verify(text, state_dir=kr, now=now + 60) == token
    revoked, changed = tokens.revoke(token.id, state_dir=kr, now=now + 100)
    assert changed and revoked == token
    with pytest.raises(TokenError) as exc:
        tokens.verify(text, state_dir=kr, now=now + 120)
    assert _rule(exc) == "token.revoked" and "revoked at 2027-01-15T08:01:40Z" in str(exc.value)
    with pytest.raises(TokenError) as exc:
        tokens.verify(_flip_payload(text), state_dir=kr, now=now + 120)
    assert _rule(exc) == "token.signature"


def test_a_token_missing_from_the_registry_is_refused(kr: str, tmp_path: Path) -> None:
    _, text = tokens.issue(SCOPE, lifetime=DAY, not_before=None, name=None, state_dir=kr)
    with pytest.raises(TokenError) as exc:
        tokens.verify(text, state_dir=str(tmp_path / "elsewhere"))
    assert _rule(exc) == "token.revoked" and "not in the token registry" in str(exc.value)


@pytest.mark.parametrize(
    ("scope", "lifetime", "rule", "says"),
    [
        (SCOPE._replace(classes=frozenset({"admin"})), DAY, "token.admin", "never reachable"),
        (SCOPE, 0, "token.lifetime", "a token without expiry is refused: give --expires"),
        (SCOPE, -5, "token.lifetime", "a token without expiry is refused"),
        (SCOPE, float("inf"), "token.lifetime", "a token without expiry is refused"),
    ],
)
def test_issue_refuses(kr: str, scope: Scope, lifetime: float, rule: str, says: str) -> None:
    with pytest.raises(TokenError) as exc:
        tokens.issue(scope, lifetime=lifetime, not_before=None, name=None, state_dir=kr)
    assert _rule(exc) == rule and says in str(exc.value)
    assert not os.path.exists(os.path.join(kr, "tokens.sqlite3"))  # nothing registered


def test_issue_refuses_a_born_expired_token_and_a_taken_name(kr: str) -> None:
    with pytest.raises(TokenError, match="would have expired"):
        tokens.issue(SCOPE, lifetime=60, not_before=1000.0, name=None, state_dir=kr, now=5000.0)
    tokens.issue(SCOPE, lifetime=DAY, not_before=None, name="taken", state_dir=kr)
    with pytest.raises(TokenError) as exc:
        tokens.issue(SCOPE, lifetime=DAY, not_before=None, name="taken", state_dir=kr)
    assert _rule(exc) == "token.name" and "mcpwrap token rotate taken" in str(exc.value)
    for bad in ("", "-x", "a/b", "a" * 65, "0123456789abcdef0123456789abcdef"):
        with pytest.raises(TokenError) as exc:
            tokens.issue(SCOPE, lifetime=DAY, not_before=None, name=bad, state_dir=kr)
        assert _rule(exc) == "token.name"


def test_rotate_keeps_the_scope_and_stores_the_successor_under_the_name(kr: str) -> None:
    now = 1_800_000_000.0
    old, old_text = tokens.issue(
        SCOPE, lifetime=10 * DAY, not_before=now - 100, name="rot", state_dir=kr, now=now - 200
    )
    assert tokens.load_named("rot") == old_text
    later = now + 9 * DAY
    new, new_text = tokens.rotate("rot", state_dir=kr, now=later)
    assert new.scope == old.scope and new.predecessor == old.id and new.name == "rot"
    assert (new.not_before, new.expires - new.not_before) == (later, 10 * DAY)
    assert tokens.load_named("rot") == new_text
    reg = tokens.registry(kr)
    assert reg.successor(old.id) == new.id and reg.get("rot") == new
    reg.close()
    assert tokens.verify(old_text, state_dir=kr, now=later + 1) == old  # still valid
    assert tokens.verify(new_text, state_dir=kr, now=later + 1) == new
    with pytest.raises(TokenError) as exc:
        tokens.rotate(old.id, state_dir=kr, now=later)
    assert _rule(exc) == "token.rotated" and new.id in str(exc.value)
    tokens.revoke(old.id, state_dir=kr, now=later + 2)
    with pytest.raises(TokenError, match="revoked"):
        tokens.verify(old_text, state_dir=kr, now=later + 3)
    assert tokens.verify(new_text, state_dir=kr, now=later + 3) == new
    with pytest.raises(TokenError, match="revoked"):
        tokens.rotate(old.id, state_dir=kr, now=later)


def test_unknown_references(kr: str) -> None:
    with pytest.raises(TokenError) as exc:
        tokens.load_named("never-stored")
    assert _rule(exc) == "token.unknown_name" and "never-stored" in str(exc.value)
    for call in (tokens.rotate, tokens.revoke):
        with pytest.raises(TokenError) as exc:
            call("nothing", state_dir=kr)
        assert _rule(exc) == "token.unknown" and "mcpwrap token list" in str(exc.value)


# ---------------------------------------------------------------------------- the CLI


def test_cli_issue_prints_only_the_token_and_it_verifies(
    kr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out, err = _issue_cli(
        capsys, "--tool", "list_*", "--class", "write", "--rate", "5/min", "--expires", "12h"
    )
    text = out.strip()
    assert out == text + "\n" and err == ""
    token = tokens.verify(text, state_dir=kr)
    assert token.scope == Scope(
        "acme", ("read_file", "list_*"), frozenset({"write"}), "5/min", None
    )
    assert token.expires - token.not_before == 12 * 3600
    assert _stored_key_text() not in out + err


def test_cli_issue_with_a_name_and_not_before(kr: str, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _issue_cli(capsys, "--expires", "1d", "--not-before", "1h", "--name", "later")
    token = tokens.registry(kr).get("later")
    assert token is not None
    assert out.startswith(f"stored as later (id {token.id}")
    assert token.not_before - token.issued in (3600, 3601)
    with pytest.raises(TokenError) as exc:
        tokens.verify(tokens.load_named("later"), state_dir=kr)
    assert _rule(exc) == "token.not_yet_valid"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "a token without expiry is refused: give --expires"),
        (["--expires", "never"], "a token without expiry is refused: give --expires"),
        (["--expires", "0"], "a token without expiry is refused"),
        (["--expires=-1d"], "--expires: -1d is not a positive duration"),
        (["--expires", "soon"], "--expires: expected a duration"),
        (["--expires", "1d", "--not-before=-1h"], "--not-before: -1h is in the past"),
        (["--expires", "1d", "--rate", "lots"], "--rate: expected a rate"),
        (["--expires", "1d", "--concurrency", "0"], "--concurrency: 0 is below 1"),
        (["--expires", "1d", "--class", "admin"], "admin tools are never reachable"),
        (["--expires", "1d", "--class", "exec"], "read and/or write"),
    ],
)
def test_cli_issue_refuses(
    kr: str, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    with pytest.raises(MCPWrapError) as exc:
        _cli("issue", "--tenant", "acme", "--tool", "read_file", *argv)
    assert says in str(exc.value)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("expires", "warned"), [("90d", False), ("91d", True), ("400d", True)])
def test_cli_warns_on_a_long_life(
    kr: str, capsys: pytest.CaptureFixture[str], expires: str, warned: bool
) -> None:
    out, err = _issue_cli(capsys, "--expires", expires)
    assert out.startswith("mcpwrap1.")
    assert ("warning" in err and "days, beyond 90" in err) is warned
    assert err == "" or warned


def test_cli_list_show_revoke_rotate(kr: str, capsys: pytest.CaptureFixture[str]) -> None:
    plain_text = _issue_cli(capsys, "--expires", "2h")[0].strip()
    _issue_cli(capsys, "--expires", "30d", "--name", "svc", "--class", "read", "--class", "write")
    named_text = tokens.load_named("svc")
    reg = tokens.registry(kr)
    plain, named = reg.all()
    reg.close()

    assert _cli("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:5] for line in lines] == [
        [plain.id, "-", "acme", "read", "read_file"],
        [named.id, "svc", "acme", "read,write", "read_file"],
    ]
    assert all(line.endswith("\tvalid") and line.count("Z\t") == 2 for line in lines)

    assert _cli("show", "svc") == 0
    shown = capsys.readouterr().out
    for row in (f"id:          {named.id}", "name:        svc", "classes:     read write"):
        assert row + "\n" in shown
    assert "state:       valid\n" in shown and "successor:   -\n" in shown

    assert _cli("rotate", "svc") == 0
    rotated = capsys.readouterr().out
    successor = tokens.registry(kr).get("svc")
    assert successor is not None and successor.predecessor == named.id
    assert rotated.startswith(f"stored as svc (id {successor.id}, replaces {named.id}")
    assert tokens.load_named("svc") != named_text

    assert _cli("rotate", plain.id) == 0  # unnamed: the text can only be printed
    out = capsys.readouterr()
    assert tokens.verify(out.out.strip(), state_dir=kr).predecessor == plain.id

    assert _cli("revoke", "svc") == 0
    said = capsys.readouterr().out
    assert said == f"revoked {successor.id} (svc): running wrappers refuse it within seconds\n"
    assert _cli("revoke", successor.id) == 0
    assert "already revoked" in capsys.readouterr().out
    assert _cli("list") == 0
    states = [line.rsplit("\t", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert states == ["valid", "valid", "revoked", "valid"]

    everything = shown + rotated + said
    for secret in (plain_text, named_text, _stored_key_text()):
        assert secret not in everything


def test_cli_show_and_list_states_over_time(kr: str, capsys: pytest.CaptureFixture[str]) -> None:
    now = 1_000_000.0  # long ago: expired
    tokens.issue(SCOPE, lifetime=60, not_before=None, name="old", state_dir=kr, now=now - 10)
    _issue_cli(capsys, "--expires", "1d", "--not-before", "2h")
    assert _cli("list") == 0
    states = [line.rsplit("\t", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert states == ["expired", "not yet valid"]
    with pytest.raises(TokenError, match="no token 'missing'"):
        _cli("show", "missing")


def test_every_action_has_help_with_examples() -> None:
    parser = argparse.ArgumentParser(prog="mcpwrap")
    sub = parser.add_subparsers(dest="command")
    add_token_parser(sub)
    for action in ([], ["issue"], ["list"], ["show"], ["revoke"], ["rotate"]):
        with pytest.raises(SystemExit) as done:
            parser.parse_args(["token", *action, "--help"])
        assert done.value.code == 0
    help_text = sub.choices["token"].format_help()
    assert "examples:" in help_text and "never admin" in help_text


# ---------------------------------------------------------------------------- start-up cost


def test_decoding_a_token_does_not_load_openssl() -> None:
    text = tokens.encode(TOKEN, KEY)
    bad = _flip_mac(text)
    code = (
        "import sys\n"
        "from mcpwrap.identity import tokens\n"
        f"t = tokens.decode({text!r}, bytes.fromhex({KEY.hex()!r}))\n"
        f"assert tokens.time_verdict(t, 1500) is None and tokens.allows_tool(t.scope, 'list_x')\n"
        "try:\n"
        f"    tokens.decode({bad!r}, bytes.fromhex({KEY.hex()!r}))\n"
        "except tokens.TokenError as exc:\n"
        "    assert exc.rule == 'token.signature'\n"
        "else:\n"
        "    raise SystemExit('tampered token accepted')\n"
        "print(t.id, '_hashlib' in sys.modules, 'hmac' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [TOKEN.id, "False", "False"]
