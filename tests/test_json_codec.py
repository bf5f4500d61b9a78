"""The wire's JSON codec: ``orjson``, with the standard library wherever the two would differ.

The frames accepted, the error details and the bytes written must be what
``json`` gave before the faster codec was put in front of it.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chateau.errors import BadRequest
from chateau.messages import encode, parse_json

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SCALARS = st.none() | st.booleans() | INT64 | st.text(max_size=40)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
MESSAGES = st.dictionaries(st.text(max_size=12), VALUES, max_size=6)


def standard(message: object) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


@settings(max_examples=300, deadline=None)
@given(MESSAGES)
def test_what_is_written_is_what_json_wrote(message: dict) -> None:
    assert encode(message) == standard(message)


@settings(max_examples=300, deadline=None)
@given(MESSAGES)
def test_what_is_read_is_what_json_read(message: dict) -> None:
    raw = standard(message)
    assert parse_json(raw) == json.loads(raw)


def test_an_integer_past_64_bits_stays_an_integer_both_ways() -> None:
    big = 2**70 + 1
    data = parse_json(b'{"type":"ReadRequest","id":%d}' % big)
    assert data["id"] == big and type(data["id"]) is int
    assert encode({"id": big}) == b'{"id":%d}' % big


def test_floats_read_as_json_reads_them() -> None:
    assert parse_json(b'{"a":1.5,"b":-0.0}') == {"a": 1.5, "b": -0.0}
    nan = parse_json(b'{"a":NaN}')["a"]
    assert math.isnan(nan)  # json.loads accepted it before; decode_request's checks refuse it


@pytest.mark.parametrize("raw, detail", [
    (b'{"a":1', "frame is not valid JSON: Expecting ',' delimiter"),
    (b'{"a":"\\ud800"}', "lone UTF-16 surrogate"),
    (b'\xff{}', "frame is not valid JSON"),
])
def test_refusals_keep_their_details(raw: bytes, detail: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json(raw)
    assert detail in caught.value.detail


def test_deep_nesting_is_refused_as_before() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json(b"[" * 5000 + b"]" * 5000)
    assert "nested deeper" in caught.value.detail or "not valid JSON" in caught.value.detail
