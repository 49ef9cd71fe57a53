"""The genesis: a federation's one trust root (PROTOCOL.md §5).

Founders agree on one document (members, their identity keys and endpoints,
governance rules as data, the signature algorithm) and each signs it. Its
SHA-256 is the federation id, which every event carries; a node is configured
with that id and trusts nothing that does not trace back to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from pocnode.core import encoding
from pocnode.core.errors import BadSignature, Malformed, MissingSignature, UnsupportedVersion
from pocnode.core.events import HPKE_SUITES, MEMBER_ID, PROTOCOL_VERSION
from pocnode.core.keys import ALGORITHMS, PublicKey, Signature, SigningKey
from pocnode.core.record import validate_endpoints

GENESIS_DOMAIN = b"pocnode/v1/genesis\x00"
GENESIS_TYPE = "pocnode/genesis"
TEMPLATE_VERSION = 1

# 193 UN members + observers fit with room to spare; a hybrid founder entry is ~2.2 KB
# and its signature 3.4 KB, so 256 founders need about 1.5 MB.
MAX_FOUNDERS = 256
MAX_GENESIS_BYTES = 2 * 1024 * 1024
_NAME_MAX = 128

# Decisions the federation takes, each with its rule (§5.3). MISSION.md row 5: states
# differ on how to decide, so the rule is data in the genesis, not code.
DECISIONS = ("admission", "observer", "key_recovery", "rules")
_RULE_PARAMS = {
    "consensus": {},
    "fraction": {"num": int, "den": int},
    "count": {"min": int},
    "silence": {},
}
_WINDOW_MIN_MS = 60 * 60 * 1000            # one hour
# An exercise federation (§5.1 `exercise`) runs its windows in seconds, for drills and tests;
# every node shows it is one.
_EXERCISE_WINDOW_MIN_MS = 1000
_WINDOW_MAX_MS = 366 * 24 * 60 * 60 * 1000  # a year


@dataclass(frozen=True, slots=True)
class Founder:
    id: str
    name: str
    key: PublicKey
    endpoints: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Genesis:
    """A verified genesis: every founder's signature checked."""

    raw: bytes        # the signed document, as stored and shared
    payload: bytes    # the canonical unsigned genesis: what founders sign
    id: bytes         # SHA-256(payload): the federation id
    name: str
    created: int
    sig_alg: str
    hpke_suite: str
    template: int
    governance: Mapping[str, Mapping[str, Any]]
    founders: tuple[Founder, ...]
    exercise: bool = False

    members: Mapping[str, PublicKey] = field(default_factory=dict)  # founders' keys, by id
    # Founders' endpoints, by id: the base of every node's peer table.
    endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    endpoint_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Built once: every verifier and peer table of the federation shares these
        # read-only mappings (a simulator runs thousands of engines over one genesis).
        object.__setattr__(self, "members", MappingProxyType({f.id: f.key for f in self.founders}))
        object.__setattr__(self, "endpoints", MappingProxyType(
            {f.id: f.endpoints for f in self.founders if f.endpoints}))
        # Founders are sorted by id (§5.1): the ids with endpoints, in that order, are the
        # shared candidate list of every node's gossip (no node sorts its own copy).
        object.__setattr__(self, "endpoint_ids", tuple(
            f.id for f in self.founders if f.endpoints))


def build_payload(*, name: str, created: int, sig_alg: str, founders: list[dict[str, Any]],
                  governance: dict[str, dict[str, Any]], hpke_suite: str = "x25519",
                  exercise: bool = False) -> bytes:
    """The canonical genesis the founders will sign. ``founders`` entries have id, name,
    key (a PublicKey) and endpoints; they are sorted by id here."""
    wire_founders = [
        {"id": f["id"], "name": f["name"], "key": f["key"].to_wire(),
         "endpoints": list(f.get("endpoints", ()))}
        for f in sorted(founders, key=lambda f: encoding.key_order(f["id"]))
    ]
    fields: dict[str, Any] = {
        "type": GENESIS_TYPE, "v": PROTOCOL_VERSION, "name": name, "created": created,
        "sig_alg": sig_alg, "hpke_suite": hpke_suite, "template": TEMPLATE_VERSION,
        "governance": governance, "founders": wire_founders,
    }
    if exercise:
        fields["exercise"] = True
    payload = encoding.encode(fields)
    _parse_payload(payload)  # refuse to let anyone sign a genesis that will not verify
    return payload


def sign_payload(payload: bytes, key: SigningKey) -> Signature:
    return key.sign(GENESIS_DOMAIN + payload)


def assemble(payload: bytes, signatures: Mapping[str, Signature]) -> bytes:
    """The signed genesis document; :func:`parse_genesis` checks it."""
    return encoding.encode({"genesis": payload,
                            "sigs": {fid: sig.to_wire() for fid, sig in signatures.items()}})


def genesis_id(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def parse_genesis(data: bytes) -> Genesis:
    """§5.4: decode, check shape, then every founder's signature, in founder order."""
    doc = encoding.decode(data, max_size=MAX_GENESIS_BYTES)
    if type(doc) is not dict or doc.keys() != {"genesis", "sigs"}:
        raise Malformed("signed genesis must be a map with exactly genesis, sigs", path="genesis")
    payload, sigs = doc["genesis"], doc["sigs"]
    if type(payload) is not bytes:
        raise Malformed("genesis.genesis must be bin", path="genesis.genesis")
    if type(sigs) is not dict:
        raise Malformed("genesis.sigs must be a map", path="genesis.sigs")
    fields = _parse_payload(payload)
    founders = fields["founders"]
    for founder in founders:
        if founder.id not in sigs:
            raise MissingSignature(f"founder {founder.id} has not signed",
                                   path=f"genesis.sigs.{founder.id}")
    extra = sigs.keys() - {f.id for f in founders}
    if extra:
        raise Malformed(f"signatures from non-founders {sorted(extra)}", path="genesis.sigs")
    signing_input = GENESIS_DOMAIN + payload
    for founder in founders:
        path = f"genesis.sigs.{founder.id}"
        sig = Signature.from_wire(sigs[founder.id], path=path)
        if sig.alg != fields["sig_alg"]:
            raise Malformed(f"signature algorithm {sig.alg}, genesis says {fields['sig_alg']}",
                            path=path)
        if not founder.key.verify(sig, signing_input):
            raise BadSignature(f"founder {founder.id}'s signature does not verify", path=path)
    return Genesis(raw=bytes(data), payload=payload, id=genesis_id(payload), **fields)


def parse_draft(payload: bytes) -> dict[str, Any]:
    """Check an unsigned genesis payload (a draft before the founders sign) and return its
    fields; the same checks :func:`parse_genesis` applies to the signed one."""
    return _parse_payload(payload)


_PAYLOAD_FIELDS = frozenset({"type", "v", "name", "created", "sig_alg", "hpke_suite", "template",
                             "governance", "founders"})


def _parse_payload(payload: bytes) -> dict[str, Any]:
    g = encoding.decode(payload, max_size=MAX_GENESIS_BYTES)
    if type(g) is not dict:
        raise Malformed("genesis payload must be a map", path="genesis")
    if g.get("type") != GENESIS_TYPE:
        raise Malformed(f"genesis.type must be {GENESIS_TYPE!r}", path="genesis.type")
    if type(g.get("v")) is not int:
        raise Malformed("genesis.v must be an int", path="genesis.v")
    if g["v"] != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"genesis version {g['v']}", path="genesis.v")
    if not g.keys() >= _PAYLOAD_FIELDS or not g.keys() <= _PAYLOAD_FIELDS | {"exercise"}:
        raise Malformed(f"genesis fields: missing {sorted(_PAYLOAD_FIELDS - g.keys())}, "
                        f"unexpected {sorted(g.keys() - _PAYLOAD_FIELDS - {'exercise'})}",
                        path="genesis")
    exercise = g.get("exercise", False)
    if "exercise" in g and exercise is not True:
        raise Malformed("genesis.exercise, when present, must be true", path="genesis.exercise")
    _str(g["name"], _NAME_MAX, "genesis.name")
    if type(g["created"]) is not int or not 0 <= g["created"] < 2**63:
        raise Malformed("genesis.created must be an int of milliseconds", path="genesis.created")
    if type(g["sig_alg"]) is not str or g["sig_alg"] not in ALGORITHMS:
        raise Malformed(f"genesis.sig_alg must be one of {list(ALGORITHMS)}",
                        path="genesis.sig_alg")
    if type(g["hpke_suite"]) is not str or g["hpke_suite"] not in HPKE_SUITES:
        raise Malformed(f"genesis.hpke_suite must be one of {sorted(HPKE_SUITES)}",
                        path="genesis.hpke_suite")
    if type(g["template"]) is not int or g["template"] != TEMPLATE_VERSION:
        raise Malformed(f"genesis.template must be {TEMPLATE_VERSION}", path="genesis.template")
    governance = parse_governance(g["governance"], exercise=exercise,
                                  path="genesis.governance")
    founders = _parse_founders(g["founders"], g["sig_alg"])
    return {"name": g["name"], "created": g["created"], "sig_alg": g["sig_alg"],
            "hpke_suite": g["hpke_suite"], "template": g["template"],
            "governance": governance, "founders": founders, "exercise": exercise}


def _str(value: Any, limit: int, path: str) -> str:
    if type(value) is not str or not 1 <= len(value) <= limit:
        raise Malformed(f"must be a str of 1..{limit} characters", path=path)
    return value


def _parse_founders(raw: Any, alg: str) -> tuple[Founder, ...]:
    if type(raw) is not list or not 1 <= len(raw) <= MAX_FOUNDERS:
        raise Malformed(f"genesis.founders must be a list of 1..{MAX_FOUNDERS}",
                        path="genesis.founders")
    founders = []
    seen_keys: set[bytes] = set()
    prev: tuple[int, bytes] | None = None
    for i, f in enumerate(raw):
        path = f"genesis.founders[{i}]"
        if type(f) is not dict or f.keys() != {"id", "name", "key", "endpoints"}:
            raise Malformed("founder must be a map with exactly id, name, key, endpoints",
                            path=path)
        if type(f["id"]) is not str or not MEMBER_ID.fullmatch(f["id"]):
            raise Malformed("id must be a member id [A-Z][A-Z0-9-]{1,31}", path=f"{path}.id")
        order = encoding.key_order(f["id"])
        if prev is not None and order <= prev:
            raise Malformed("founders must be sorted by id, each id once", path=f"{path}.id")
        prev = order
        _str(f["name"], _NAME_MAX, f"{path}.name")
        validate_endpoints(f["endpoints"], path=f"{path}.endpoints", error=Malformed)
        key = PublicKey.from_wire(f["key"], alg=alg, path=f"{path}.key")
        if key.ed25519 in seen_keys:
            raise Malformed("two founders with one key would be one holder with two votes",
                            path=f"{path}.key")
        seen_keys.add(key.ed25519)
        founders.append(Founder(id=f["id"], name=f["name"], key=key,
                                endpoints=tuple(f["endpoints"])))
    return tuple(founders)


def parse_governance(raw: Any, *, exercise: bool = False,
                     path: str = "genesis.governance") -> Mapping[str, Mapping[str, Any]]:
    """§5.3: the rules of each kind of decision; the genesis's, or an amendment's."""
    where = path
    if type(raw) is not dict or raw.keys() != set(DECISIONS):
        raise Malformed(f"governance must be a map with exactly {list(DECISIONS)}",
                        path=where)
    minimum = _EXERCISE_WINDOW_MIN_MS if exercise else _WINDOW_MIN_MS
    out = {}
    for decision in DECISIONS:
        path = f"{where}.{decision}"
        rule = raw[decision]
        if (type(rule) is not dict or type(rule.get("rule")) is not str
                or rule["rule"] not in _RULE_PARAMS):
            raise Malformed(f"rule must be a map whose 'rule' is one of {list(_RULE_PARAMS)}",
                            path=path)
        params = _RULE_PARAMS[rule["rule"]]
        if rule.keys() != {"rule", "window_ms", *params}:
            raise Malformed(f"a {rule['rule']} rule has exactly rule, window_ms"
                            + "".join(f", {p}" for p in params), path=path)
        window = rule["window_ms"]
        if type(window) is not int or not minimum <= window <= _WINDOW_MAX_MS:
            raise Malformed("window_ms must be an int from "
                            + ("one second (an exercise)" if exercise else "one hour")
                            + " to a year", path=f"{path}.window_ms")
        for name in params:
            if type(rule[name]) is not int or rule[name] < 1:
                raise Malformed(f"{name} must be a positive int", path=f"{path}.{name}")
        if rule["rule"] == "fraction" and rule["num"] > rule["den"]:
            raise Malformed("a fraction needs num <= den", path=f"{path}.num")
        out[decision] = MappingProxyType(dict(rule))
    return MappingProxyType(out)


def default_governance() -> dict[str, dict[str, Any]]:
    """Consensus for membership and rules, silence for observers, 70% for key recovery:
    one reading of MISSION.md row 5. Founders are expected to edit it in the draft."""
    week = 7 * 24 * 60 * 60 * 1000
    return {
        "admission": {"rule": "consensus", "window_ms": 4 * week},
        "observer": {"rule": "silence", "window_ms": 2 * week},
        "key_recovery": {"rule": "fraction", "num": 7, "den": 10, "window_ms": week},
        "rules": {"rule": "consensus", "window_ms": 8 * week},
    }
