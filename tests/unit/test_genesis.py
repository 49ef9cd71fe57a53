"""The genesis (PROTOCOL.md §5): built, signed by all founders, refused otherwise."""

from __future__ import annotations

import pytest

from pocnode.core import encoding
from pocnode.core.errors import BadSignature, Malformed, MissingSignature
from pocnode.core.genesis import (
    assemble,
    build_payload,
    default_governance,
    parse_genesis,
    sign_payload,
)
from pocnode.core.keys import HYBRID, SigningKey


def _founders(keys):
    return [{"id": m, "name": f"State {m}", "key": k.public_key,
             "endpoints": [f"https://{m.lower()}.example.org:7443"]} for m, k in keys.items()]


@pytest.mark.parametrize("alg", ["ed25519", HYBRID])
def test_unanimous_genesis_verifies_and_its_hash_is_the_federation_id(alg):
    keys = {m: SigningKey.generate(alg) for m in ("CAL", "ATL", "BOR")}
    payload = build_payload(name="T", created=1, sig_alg=alg, founders=_founders(keys),
                            governance=default_governance())
    genesis = parse_genesis(assemble(payload, {m: sign_payload(payload, k)
                                               for m, k in keys.items()}))
    assert [f.id for f in genesis.founders] == ["ATL", "BOR", "CAL"]
    assert set(genesis.members) == {"ATL", "BOR", "CAL"}
    assert genesis.sig_alg == alg
    import hashlib
    assert genesis.id == hashlib.sha256(payload).digest()


def test_every_founder_must_sign_with_its_own_key():
    keys = {m: SigningKey.generate() for m in ("ATL", "BOR")}
    payload = build_payload(name="T", created=1, sig_alg="ed25519", founders=_founders(keys),
                            governance=default_governance())
    with pytest.raises(MissingSignature, match="BOR"):
        parse_genesis(assemble(payload, {"ATL": sign_payload(payload, keys["ATL"])}))
    with pytest.raises(BadSignature, match="BOR"):
        parse_genesis(assemble(payload, {"ATL": sign_payload(payload, keys["ATL"]),
                                         "BOR": sign_payload(payload, keys["ATL"])}))


@pytest.mark.parametrize(("decision", "rule", "path"), [
    ("admission", {"rule": "vote"}, "genesis.governance.admission"),
    ("observer", {"rule": "silence", "window_ms": 10}, "genesis.governance.observer.window_ms"),
    ("rules", {"rule": "count", "window_ms": 3_600_000, "min": 0},
     "genesis.governance.rules.min"),
    ("key_recovery", {"rule": "fraction", "window_ms": 3_600_000, "num": 1},
     "genesis.governance.key_recovery"),
])
def test_governance_rules_are_validated_with_their_path(decision, rule, path):
    keys = {"ATL": SigningKey.generate()}
    governance = dict(default_governance(), **{decision: rule})
    with pytest.raises(Malformed) as caught:
        build_payload(name="T", created=1, sig_alg="ed25519", founders=_founders(keys),
                      governance=governance)
    assert caught.value.path == path


def test_governance_rules_of_the_mission_are_expressible():
    """MISSION.md row 5: consensus, 70% of members, more than 50 states, silence."""
    keys = {"ATL": SigningKey.generate()}
    day = 86_400_000
    governance = {
        "admission": {"rule": "fraction", "num": 7, "den": 10, "window_ms": 30 * day},
        "observer": {"rule": "silence", "window_ms": 14 * day},
        "key_recovery": {"rule": "count", "min": 51, "window_ms": 7 * day},
        "rules": {"rule": "consensus", "window_ms": 60 * day},
    }
    payload = build_payload(name="T", created=1, sig_alg="ed25519", founders=_founders(keys),
                            governance=governance)
    genesis = parse_genesis(assemble(payload, {"ATL": sign_payload(payload, keys["ATL"])}))
    assert genesis.governance["key_recovery"]["min"] == 51
    assert encoding.decode(payload)["governance"] == governance
