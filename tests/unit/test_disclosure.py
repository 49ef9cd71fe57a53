"""Selective disclosure (PROTOCOL.md §6.3, §6.4): digests in the signed body, values apart."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocnode.core import encoding
from pocnode.core.disclosure import check_disclosure, compile_record, reveal
from pocnode.core.errors import PocError
from pocnode.core.record import example_record

PLAIN = example_record()
COMPILED = compile_record(PLAIN, os.urandom)


def _plain_values(visibility: str) -> list[tuple[str, str, object]]:
    out = []
    for entry in PLAIN["entries"]:
        overrides = entry.get("field_visibility", {})
        for name, value in entry.items():
            if name in ("id", "domain", "visibility", "field_visibility"):
                continue
            if overrides.get(name, entry["visibility"]) == visibility:
                out.append((entry["id"], name, value))
    return out


def test_the_example_covers_all_three_visibilities():
    for visibility in ("public", "members", "bilateral"):
        assert _plain_values(visibility), visibility


def test_withheld_values_appear_nowhere_in_the_signed_body():
    body_bytes = encoding.encode(COMPILED.body)
    for visibility in ("members", "bilateral"):
        for _, _, value in _plain_values(visibility):
            if isinstance(value, str) and len(value) >= 4:
                assert value.encode() not in body_bytes, value


def test_every_disclosure_opens_its_digest_and_reveal_restores_the_record():
    opened = [check_disclosure(COMPILED.body, d.raw) for d in COMPILED.disclosures]
    view = reveal(COMPILED.body, opened)
    for entry, plain in zip(view["entries"], PLAIN["entries"], strict=True):
        expected = {k: v for k, v in plain.items()
                    if k not in ("id", "domain", "visibility", "field_visibility")}
        assert entry["fields"] == expected
        assert entry["withheld"] == {}


def test_a_viewer_without_disclosures_is_told_what_is_withheld():
    members_only = [check_disclosure(COMPILED.body, d.raw) for d in COMPILED.disclosures
                    if d.visibility == "members"]
    view = reveal(COMPILED.body, members_only)
    withheld = sum(e["withheld"].get("bilateral", 0) for e in view["entries"])
    assert withheld == len(_plain_values("bilateral"))
    assert all("members" not in e["withheld"] for e in view["entries"])


def test_salts_make_equal_values_produce_unrelated_digests():
    again = compile_record(PLAIN, os.urandom)
    assert {d.digest for d in again.disclosures}.isdisjoint(
        {d.digest for d in COMPILED.disclosures})


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_tampered_disclosure_is_refused(data):
    disclosure = data.draw(st.sampled_from(COMPILED.disclosures))
    raw = bytearray(disclosure.raw)
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(PocError) as caught:
        check_disclosure(COMPILED.body, bytes(raw))
    assert caught.value.code in {"disclosure_mismatch", "malformed", "truncated",
                                 "non_minimal", "invalid_utf8", "forbidden_type",
                                 "trailing_bytes", "map_key_type", "invalid_body",
                                 "unsorted_keys", "duplicate_key", "too_deep"}


def test_a_record_that_could_never_be_signed_or_opened_is_refused_with_its_path():
    from pocnode.core.errors import InvalidRecord

    huge_channels = example_record()
    entry = huge_channels["entries"][1]
    entry["secure_channels"] = [{"type": "other", "value": "\U0001f512" * 512}] * 8
    with pytest.raises(InvalidRecord) as caught:
        compile_record(huge_channels, os.urandom)
    assert caught.value.path == "entries[1].secure_channels"
    many = {"template": 1, "entries": [
        {"id": f"e{i}", "domain": "technical", "visibility": "public",
         "organisation": "CERT", "email": "c@example.org", "notes": "n" * 2000}
        for i in range(32)]}
    with pytest.raises(InvalidRecord, match="too large") as caught:
        compile_record(many, os.urandom)
    assert caught.value.path == "entries"


def test_salts_must_be_fresh():
    with pytest.raises(ValueError, match="fresh"):
        compile_record(PLAIN, lambda n: b"\x00" * n)
