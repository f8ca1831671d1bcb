"""mcpwrap.audit.records: canonical JSON, digests and the arguments field of audit records."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest

from mcpwrap.audit.records import Agent, arguments_field, canonical_json, digest
from mcpwrap.config.profile import ArgumentsMode


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
        ({"z": {"y": 1, "x": [3, {"d": 4, "c": 5}]}}, b'{"z":{"x":[3,{"c":5,"d":4}],"y":1}}'),
        ([3, 1, 2], b"[3,1,2]"),
        ({"k": "caf\u00e9 \u65e5"}, '{"k":"caf\u00e9 \u65e5"}'.encode()),
        ({"k": "\u2028\x00\n"}, b'{"k":"\xe2\x80\xa8\\u0000\\n"}'),
        ({"B": 1, "a": 2, "_": 3}, b'{"B":1,"_":3,"a":2}'),
        (None, b"null"),
        (True, b"true"),
        (1.5, b"1.5"),
        ({}, b"{}"),
    ],
    ids=[
        "sorted-keys",
        "nested",
        "array-order-kept",
        "utf8-not-escaped",
        "controls-escaped",
        "codepoint-order",
        "null",
        "bool",
        "float",
        "empty",
    ],
)
def test_canonical_json(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected
    assert json.loads(canonical_json(value)) == value


def test_canonical_json_ignores_key_order() -> None:
    a = {"name": "read_file", "arguments": {"path": "x", "mode": "text"}, "n": [1, 2]}
    b = {"n": [1, 2], "arguments": {"mode": "text", "path": "x"}, "name": "read_file"}
    assert list(a) != list(b)
    assert canonical_json(a) == canonical_json(b)
    assert digest(a) == digest(b)


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, {"x": [math.nan]}], ids=["nan", "inf", "-inf", "deep"]
)
def test_canonical_json_refuses_non_finite(value: object) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_json(value)


@pytest.mark.parametrize(
    "value", [{"a": 1}, [], "x", 0, None], ids=["object", "array", "string", "zero", "null"]
)
def test_digest(value: object) -> None:
    found = digest(value)
    assert found == "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()
    assert len(found) == len("sha256:") + 64


def test_digest_tells_values_apart() -> None:
    values: list[Any] = [{"a": 1}, {"a": "1"}, {"a": True}, {"a": 1.5}, {"b": 1}, [1], {}]
    assert len({digest(v) for v in values}) == len(values)


ARGS: dict[str, Any] = {"path": "src/x.py", "mode": "text"}


def _expected(mode: ArgumentsMode, arguments: object) -> dict[str, Any]:
    by_mode: dict[ArgumentsMode, dict[str, Any]] = {
        ArgumentsMode.NONE: {},
        ArgumentsMode.FULL: {"args": arguments},
        ArgumentsMode.DIGEST: {"args_digest": digest(arguments if arguments is not None else {})},
    }
    assert set(by_mode) == set(ArgumentsMode)  # a new mode needs its expectation here
    return by_mode[mode]


@pytest.mark.parametrize("mode", list(ArgumentsMode), ids=lambda m: m.value)
@pytest.mark.parametrize(
    "arguments", [ARGS, {}, None, [1, 2], "text"], ids=["object", "empty", "none", "array", "str"]
)
def test_arguments_field(mode: ArgumentsMode, arguments: object) -> None:
    assert arguments_field(mode, arguments) == _expected(mode, arguments)


def test_arguments_field_none_digests_like_empty() -> None:
    assert arguments_field(ArgumentsMode.DIGEST, None) == arguments_field(ArgumentsMode.DIGEST, {})


def test_digest_mode_never_holds_the_values() -> None:
    secret = {"token": "hunter2-secret-value"}
    field = arguments_field(ArgumentsMode.DIGEST, secret)
    assert "hunter2" not in json.dumps(field)
    assert field["args_digest"].startswith("sha256:")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (ArgumentsMode.DIGEST, {"args_digest": None}),
        (ArgumentsMode.NONE, {}),
    ],
    ids=["digest", "none"],
)
@pytest.mark.parametrize(
    "arguments",
    [{"x": math.nan}, {"x": [math.inf]}, math.nan, {"x": 10**5000}, {"x": "\ud800"}],
    ids=["nan", "inf", "bare-nan", "huge-int", "lone-surrogate"],
)
def test_arguments_field_non_finite(
    mode: ArgumentsMode, expected: dict[str, Any], arguments: object
) -> None:
    assert arguments_field(mode, arguments) == expected


def test_full_mode_keeps_non_finite_as_given() -> None:
    arguments = {"x": math.nan}
    assert arguments_field(ArgumentsMode.FULL, arguments)["args"] is arguments


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"name": "claude", "version": "1.2"}, {"name": "claude", "version": "1.2"}),
        ({"name": "x", "extra": "dropped"}, {"name": "x"}),
        ({"name": 5, "version": None}, {"name": "5", "version": "None"}),
        ({"name": "n" * 500}, {"name": "n" * 200}),
        ("not an object", {"name": "before"}),
        (None, {"name": "before"}),
    ],
    ids=["both", "extra-keys", "non-strings", "long", "string", "null"],
)
def test_agent_client_info(info: object, expected: dict[str, str]) -> None:
    agent = Agent(pid=1, exe=None, client={"name": "before"})
    agent.note_client_info(info)
    assert agent.client == expected
    assert agent.as_record() == {"client": expected, "pid": 1, "exe": None}


def test_agent_without_client_info() -> None:
    assert Agent(pid=7, exe="/bin/x").as_record() == {"client": None, "pid": 7, "exe": "/bin/x"}
