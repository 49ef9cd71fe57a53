"""Consent and sealing (PROTOCOL.md §7): the viewer rule, state, boxes."""

from __future__ import annotations

import os

import pytest

from pocnode.core.consent import (
    BOX_BYTES,
    OFFER,
    WITHDRAW,
    ConsentState,
    HpkeKey,
    SealError,
    Viewer,
    check_sealed,
    may_see,
    open_consent,
    sealed_body,
)
from pocnode.core.errors import InvalidBody

FED = os.urandom(32)


@pytest.mark.parametrize(("visibility", "viewer", "mutual", "sees"), [
    ("public", Viewer.ANYONE, False, True),
    ("public", Viewer.OBSERVER, False, True),
    ("public", Viewer.MEMBER, False, True),
    ("members", Viewer.MEMBER, False, True),
    ("members", Viewer.OBSERVER, True, False),
    ("members", Viewer.ANYONE, True, False),
    ("bilateral", Viewer.MEMBER, False, False),
    ("bilateral", Viewer.MEMBER, True, True),
    ("bilateral", Viewer.OBSERVER, False, False),
    ("bilateral", Viewer.OBSERVER, True, True),   # a member granted an observer consent
    ("bilateral", Viewer.ANYONE, True, False),    # nothing opens bilateral to strangers
    ("secret", Viewer.MEMBER, True, False),
])
def test_who_sees_what(visibility, viewer, mutual, sees):
    assert may_see(visibility, viewer, mutual) is sees


def test_consent_is_directed_mutual_only_with_both_offers_and_latest_wins():
    a = ConsentState(me="ATL")
    assert a.apply("ATL", 5, "BOR", OFFER) is False      # one side: not mutual yet
    assert a.apply("BOR", 3, "ATL", OFFER) is True       # now mutual
    assert a.mutual("BOR")
    assert a.apply("BOR", 2, "ATL", WITHDRAW) is False   # older than what we hold: ignored
    assert a.mutual("BOR")
    assert a.apply("BOR", 4, "ATL", WITHDRAW) is True    # withdrawn: no longer mutual
    assert not a.mutual("BOR")
    assert a.table() == [{"member": "BOR", "we_offer": True, "they_offer": False,
                          "mutual": False}]
    assert a.apply("ATL", 6, "ATL", OFFER) is False      # consent to oneself means nothing


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_sealed_consent_opens_for_recipient_and_author_only(suite):
    alice, bob, carol = (HpkeKey.generate(suite) for _ in range(3))
    body = sealed_body(suite=suite, fed=FED, author="ATL", to="BOR", action=OFFER,
                       to_public=bob.public_bytes, own_public=alice.public_bytes)
    check_sealed(body, suite)
    assert all(len(box) == BOX_BYTES[suite] for box in body["boxes"])
    assert open_consent(body, bob, fed=FED, author="ATL") == ("BOR", OFFER)
    assert open_consent(body, alice, fed=FED, author="ATL") == ("BOR", OFFER)
    assert open_consent(body, carol, fed=FED, author="ATL") is None
    # bound to the author and federation: relabelled, it opens for no one
    assert open_consent(body, bob, fed=FED, author="CAL") is None
    assert open_consent(body, bob, fed=os.urandom(32), author="ATL") is None


def test_offers_and_withdrawals_are_the_same_size():
    a, b = HpkeKey.generate("x25519"), HpkeKey.generate("x25519")
    sizes = {len(box) for action in (OFFER, WITHDRAW) for box in sealed_body(
        suite="x25519", fed=FED, author="ATL", to="BOR", action=action,
        to_public=b.public_bytes, own_public=a.public_bytes)["boxes"]}
    assert sizes == {BOX_BYTES["x25519"]}


@pytest.mark.parametrize("mutate", [
    lambda b: {**b, "suite": "mlkem768-x25519"},
    lambda b: {**b, "boxes": b["boxes"][:1]},
    lambda b: {**b, "boxes": list(reversed(b["boxes"]))},
    lambda b: {**b, "boxes": [b["boxes"][0], b["boxes"][0]]},
    lambda b: {**b, "boxes": [b["boxes"][0][:-1], b["boxes"][1]]},
    lambda b: {**b, "to": "BOR"},
])
def test_sealed_shape_is_checked(mutate):
    a, b = HpkeKey.generate("x25519"), HpkeKey.generate("x25519")
    body = sealed_body(suite="x25519", fed=FED, author="ATL", to="BOR", action=OFFER,
                       to_public=b.public_bytes, own_public=a.public_bytes)
    with pytest.raises(InvalidBody):
        check_sealed(mutate(body), "x25519")


def test_a_damaged_box_does_not_open():
    key = HpkeKey.generate("x25519")
    with pytest.raises(SealError):
        key.open(os.urandom(BOX_BYTES["x25519"]), b"info")
