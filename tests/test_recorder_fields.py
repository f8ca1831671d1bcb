"""mcpwrap.audit.recorder: a call's outcome fields, formatted on the reply's path without
the JSON encoder, are byte for byte what the encoder makes of them."""

from __future__ import annotations

import pytest

from mcpwrap.audit.recorder import _call_end_fields
from mcpwrap.audit.writer import encode_fields

KEYS = ("rule", "outcome", "duration_ms", "bytes_out", "cpu_ms", "peak_rss_kb")


@pytest.mark.parametrize(
    "values",
    [
        ("tools.echo", "ok", 0.123, 120, 0.0, 12345),
        ('t"\\\u00e9\x01\u2028', "isError", 1e-7, 0, None, None),
        ("r", "timeout", 1e22, 10**30, 123456.7, 0),
        ("", "error", 0.0, 0, -0.5, 1),
    ],
)
def test_call_end_fields_are_what_the_encoder_makes(values: tuple[object, ...]) -> None:
    fields = dict(zip(KEYS, values, strict=True))
    assert _call_end_fields(**fields) == encode_fields(fields)


@pytest.mark.parametrize(
    "values",
    [
        ("r", "ok", float("nan"), 1, None, None),
        ("r", "ok", 1.0, 1, float("inf"), None),
        ("r", "ok", 1.0, True, None, None),
        ("r", "ok", 1, 1, None, None),
        (None, "ok", 1.0, 1, None, None),
        ("r", "ok", 1.0, 10**5000, None, None),
    ],
)
def test_call_end_fields_leave_odd_values_to_the_encoder(values: tuple[object, ...]) -> None:
    assert _call_end_fields(**dict(zip(KEYS, values, strict=True))) is None
