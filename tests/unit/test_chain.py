"""Events and chains (PROTOCOL.md §3, §4): tampering, rotation, equivocation, ordering."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocnode.core import encoding
from pocnode.core.chain import Verifier, equivocation_proof
from pocnode.core.errors import (
    BadSignature,
    Duplicate,
    Equivocation,
    NotEquivocation,
    PocError,
    SequenceGap,
    WrongPrev,
)
from pocnode.core.events import parse_event
from pocnode.core.keys import SigningKey
from tests.unit.conftest import make_fed

SPEC_CODES = {
    "oversize", "truncated", "trailing_bytes", "forbidden_type", "non_minimal", "invalid_utf8",
    "map_key_type", "unsorted_keys", "duplicate_key", "too_deep", "malformed",
    "unsupported_version", "wrong_federation", "unknown_kind", "unknown_author",
    "wrong_algorithm", "bad_signature", "invalid_body",
}

_ED = make_fed("ed25519")
_ED_EVENT = _ED.event("ATL")
_HY = make_fed("ed25519+mldsa65")
_HY_EVENT = _HY.event("ATL")


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_any_single_bit_flip_is_refused_with_a_spec_code_ed25519(data):
    bit = data.draw(st.integers(0, len(_ED_EVENT) * 8 - 1))
    with pytest.raises(PocError) as caught:
        _ED.verifier().check(_flip(_ED_EVENT, bit))
    assert caught.value.code in SPEC_CODES


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_any_single_bit_flip_is_refused_with_a_spec_code_hybrid(data):
    bit = data.draw(st.integers(0, len(_HY_EVENT) * 8 - 1))
    with pytest.raises(PocError) as caught:
        _HY.verifier().check(_flip(_HY_EVENT, bit))
    assert caught.value.code in SPEC_CODES


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_project_errors(data):
    with pytest.raises(PocError):
        _ED.verifier().check(data)


def test_every_bit_of_the_signature_region_matters():
    """Exhaustive over the 64 signature bytes: no flip there goes unnoticed."""
    env = encoding.decode(_ED_EVENT)
    start = _ED_EVENT.index(env["sig"]["ed25519"])
    for bit in range(start * 8, (start + 64) * 8):
        with pytest.raises(BadSignature):
            _ED.verifier().check(_flip(_ED_EVENT, bit))


def test_rotation_moves_authority_to_the_new_key():
    fed = make_fed()
    v = fed.verifier()
    v.ingest(fed.event("ATL"))
    new = SigningKey.generate()
    v.ingest(fed.event("ATL", "key.rotate", {"key": new.public_key.to_wire()}))
    assert v.chains["ATL"].key_at(2) == fed.keys["ATL"].public_key
    assert v.chains["ATL"].key_at(3) == new.public_key
    head = v.chains["ATL"].head_id
    with pytest.raises(BadSignature):
        v.check(fed.event("ATL", seq=3, prev=head))
    v.ingest(fed.event("ATL", seq=3, prev=head, key=new))
    assert v.chains["ATL"].seq == 3


def test_equivocation_is_detected_and_provable():
    fed = make_fed()
    v = fed.verifier()
    first = fed.event("ATL")
    v.ingest(first)
    fork = fed.event("ATL", "node.keys", {"tls": bytes(32)}, seq=1)
    with pytest.raises(Equivocation) as caught:
        v.check(fork)
    assert caught.value.held_id == parse_event(first).id
    proof = equivocation_proof(first, fork)
    assert v.check_proof(proof) == ("ATL", 1)
    with pytest.raises(NotEquivocation):
        v.check_proof(encoding.encode({"a": first, "b": first}))


def test_a_forged_fork_is_a_bad_signature_not_an_equivocation():
    fed = make_fed()
    v = fed.verifier()
    v.ingest(fed.event("ATL"))
    forged = fed.event("ATL", "node.keys", {"tls": bytes(32)}, seq=1, key=fed.keys["BOR"])
    with pytest.raises(BadSignature):
        v.check(forged)
    # Same content as the held event: a duplicate, whatever the signature (§4.1 step 10).
    with pytest.raises(Duplicate):
        v.check(fed.event("ATL", seq=1, key=fed.keys["BOR"]))


def test_out_of_order_delivery_converges_to_the_same_chain():
    fed = make_fed()
    events = [fed.event("ATL") for _ in range(5)]
    v = fed.verifier()
    pending = list(reversed(events))
    for _ in range(len(events) ** 2):
        if not pending:
            break
        data = pending.pop(0)
        try:
            v.ingest(data)
        except SequenceGap:
            pending.append(data)
    assert not pending
    assert v.chains["ATL"].ids == [parse_event(e).id for e in events]


def test_check_leaves_state_alone_and_apply_refuses_a_non_successor():
    fed = make_fed()
    v = fed.verifier()
    e1, e2 = fed.event("ATL"), fed.event("ATL")
    event1 = v.check(e1)
    assert v.chains["ATL"].seq == 0
    with pytest.raises(SequenceGap):
        v.check(e2)
    with pytest.raises(PocError) as caught:
        v.apply(parse_event(e2))
    assert caught.value.code == "internal"
    v.apply(event1)
    with pytest.raises(Duplicate):
        v.check(e1)
    other = fed.event("BOR")
    v.ingest(other)
    wrong = fed.event("ATL", seq=2, prev=parse_event(other).id)
    with pytest.raises(WrongPrev):
        v.check(wrong)


def test_a_verifier_of_another_federation_refuses_everything():
    a, b = make_fed(), make_fed()
    with pytest.raises(PocError) as caught:
        Verifier(b.genesis).check(a.event("ATL"))
    assert caught.value.code == "wrong_federation"
