"""Canonical encoding (PROTOCOL.md §2): round trips, refusals, and the two decoders agreeing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocnode.core import encoding
from pocnode.core.errors import EncodingError, Oversize, PocError

_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_SCALAR = st.none() | st.booleans() | _INT | st.text(max_size=40) | st.binary(max_size=300)
VALUES = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)


def _reference_verdict(data: bytes):
    try:
        return ("valid", encoding._decode_reference(data))
    except EncodingError as exc:
        return ("error", exc.code)


def _fast_verdict(data: bytes):
    try:
        return ("valid", encoding.decode(data))
    except EncodingError as exc:
        return ("error", exc.code)


@given(VALUES)
def test_round_trip(value):
    data = encoding.encode(value)
    assert encoding.decode(data) == value
    assert encoding._decode_reference(data) == value
    assert encoding.encode(encoding.decode(data)) == data


@given(st.dictionaries(st.text(max_size=8), _INT, min_size=2, max_size=8))
def test_map_keys_sorted_by_encoded_bytes(value):
    data = encoding.encode(value)
    keys = list(encoding.decode(data))
    encoded = [encoding.encode(k) for k in keys]
    assert encoded == sorted(encoded)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_project_errors(data):
    with contextlib.suppress(PocError):  # any other exception type fails the test
        encoding.decode(data)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_fast_path_agrees_with_reference_on_random_bytes(data):
    assert _fast_verdict(data) == _reference_verdict(data)


@settings(max_examples=500)
@given(VALUES, st.data())
def test_fast_path_agrees_with_reference_on_mutations(value, data):
    raw = bytearray(encoding.encode(value))
    if raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw += data.draw(st.binary(max_size=3))
    assert _fast_verdict(bytes(raw)) == _reference_verdict(bytes(raw))


@pytest.mark.parametrize("bad", [1.5, {1: 2}, {b"k": 1}, object(), 2**64, -(2**63) - 1])
def test_encode_refuses_what_has_no_canonical_form(bad):
    with pytest.raises((TypeError, ValueError)):
        encoding.encode(bad)


def test_encode_refuses_nesting_deeper_than_the_limit():
    value: list = []
    for _ in range(encoding.MAX_DEPTH):
        value = [value]
    with pytest.raises(ValueError, match="nesting"):
        encoding.encode(value)


def test_oversize_is_refused_before_decoding():
    with pytest.raises(Oversize):
        encoding.decode(b"\xc0" * (encoding.MAX_EVENT_BYTES + 1))
    assert encoding.decode(encoding.encode(b"x" * 100), max_size=200) == b"x" * 100


def test_non_ascii_keys_decode_through_the_reference_path():
    value = {"z": 1, "é": 2, "€": 3}
    assert encoding.decode(encoding.encode(value)) == value


def test_fast_only_decoding_refuses_without_the_byte_loop():
    deep_bad = b"\xdc\x03\xff" + b"\x81\xa1a\x00" * 1023 + b"\xc1"
    with pytest.raises(EncodingError) as caught:
        encoding.decode(deep_bad, exact=False)
    assert caught.value.code == "non_minimal"
    assert encoding.decode(encoding.encode({"a": [1, b"x"]}), exact=False) == {"a": [1, b"x"]}
