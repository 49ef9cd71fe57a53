"""Every vector of protocol/vectors/ run through the independent verifier (PROTOCOL.md §10).

The verifier in ``independent.py`` was written from PROTOCOL.md alone, with other libraries
than the reference implementation (PyNaCl, dilithium-py, its own msgpack decoder). Each
vector, and each step of each chain, is its own test.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import umsgpack

from . import independent, independent_gov
from .independent import (
    ED_B,
    ED_L,
    ED_NEUTRAL,
    ED_P,
    EVENT_LIMIT,
    EVENT_PREFIX,
    GENESIS_LIMIT,
    GENESIS_PREFIX,
    HPKE_SUITES,
    HYBRID,
    PROOF_LIMIT,
    SEALED_BOX_SIZES,
    SMALL_ORDER_R,
    Accepted,
    Genesis,
    ProtocolError,
    RequestParty,
    Value,
    Verifier,
    check_disclosure,
    decode,
    ed25519_public_key_ok,
    ed25519_verify,
    ed25519_verify_cofactorless,
    ed_add,
    ed_decode,
    ed_encode,
    ed_is_neutral,
    ed_mul,
    encode,
    is_endpoint,
    libsodium_verify,
    mldsa65_verify,
    parse_request_plaintext,
    verify_genesis,
)

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
VECTORS = PROTOCOL / "vectors"


@cache
def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@cache
def genesis_of(genesis_hex: str) -> Genesis:
    return verify_genesis(bytes.fromhex(genesis_hex))


def verdict(run: Callable[[], object]) -> tuple[str, object]:
    """Run one check: ("valid", its result) or (the §9 code, the error)."""
    try:
        return "valid", run()
    except ProtocolError as err:
        return err.code, err


def as_json(value: Value) -> Any:
    """§10: the decoded value as JSON, a bin as {"bin": hex}."""
    if isinstance(value, bytes):
        return {"bin": value.hex()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


def strict_json(value: Any) -> str:
    """A comparison form that, unlike ==, tells true from 1 and 1.0 from 1."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


# ---------------------------------------------------------------------------------------
# Cases: one per vector, and one per step of a chain.
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    file: str
    index: tuple[int, ...]  # (vector,) or (chain, step)
    label: str

    @property
    def id(self) -> str:
        return f"{self.file}::{self.label}"


def _vector_cases(file: str) -> Iterator[Case]:
    for i, vec in enumerate(load(file)["vectors"]):
        yield Case(file, (i,), f"{i:02d} {vec['name']}")


def _chain_cases(file: str) -> Iterator[Case]:
    for c, chain in enumerate(load(file)["chains"]):
        for s, step in enumerate(chain["steps"]):
            yield Case(file, (c, s), f"{chain['name']}::{s:02d} {step['name']}")


# The kind of each vector file (§10). A file not listed here fails test_every_file_exercised.
KINDS: dict[str, str] = {
    "encoding.json": "encoding",
    "genesis.json": "genesis",
    "events-ed25519.json": "events",
    "events-hybrid.json": "events",
    "sealed.json": "events",  # §10: same chain format as the events files (§3.4.4)
    "proofs.json": "proofs",
    "disclosures.json": "disclosures",
    "bundle.json": "bundle",  # §13.6, §13.7: whole bundles, audited
    "requests.json": "events",  # §12.2, §12.6: the chain format of the events files
    "request-plaintexts.json": "request_plaintexts",
    "request-folds.json": "request_folds",
    "governance.json": "governance",  # §5.6-§5.10: applications, then chains with tallies
}


def _governance_cases(file: str) -> Iterator[Case]:
    """One case per application, per step of each chain, and per chain's proposal table."""
    data = load(file)
    for i, vec in enumerate(data["applications"]):
        yield Case(file, (i,), f"application {i:02d} {vec['name']}")
    for c, chain in enumerate(data["chains"]):
        for s, step in enumerate(chain["steps"]):
            yield Case(file, (c, s), f"{chain['name']}::{s:02d} {step['name']}")
        yield Case(file, (c, -1), f"{chain['name']}::the proposals")


def cases_of(kind: str) -> list[Case]:
    out: list[Case] = []
    for file, k in KINDS.items():
        if k == kind and (VECTORS / file).exists():
            if kind == "events":
                out.extend(_chain_cases(file))
            elif kind == "governance":
                out.extend(_governance_cases(file))
            else:
                out.extend(_vector_cases(file))
    return out


def params(kind: str) -> list[Any]:
    return [pytest.param(case, id=case.id) for case in cases_of(kind)]


# ---------------------------------------------------------------------------------------
# The vector files themselves
# ---------------------------------------------------------------------------------------
def test_every_file_exercised() -> None:
    """Every file of protocol/vectors/ is run, and none is empty."""
    files = sorted(p.name for p in VECTORS.glob("*.json"))
    assert files, "protocol/vectors/ holds no vector file"
    assert set(files) == set(KINDS), f"files without a runner: {set(files) - set(KINDS)}"
    for file in files:
        data = load(file)
        assert data.get("description"), f"{file}: no description"
        if KINDS[file] in ("events", "governance"):
            assert data["chains"], f"{file}: no chain"
            for chain in data["chains"]:
                assert chain["steps"], f"{file}: chain {chain['name']!r} has no step"
            n = sum(len(chain["steps"]) for chain in data["chains"])
            if KINDS[file] == "governance":
                assert data["applications"], f"{file}: no application"
                n += len(data["applications"]) + len(data["chains"])
        else:
            assert data["vectors"], f"{file}: no vector"
            n = len(data["vectors"])
        exercised = [c for c in cases_of(KINDS[file]) if c.file == file]
        assert len(exercised) == n, f"{file}: {len(exercised)} tests for {n} vectors"
        assert len({c.id for c in exercised}) == n, f"{file}: test ids not unique"


# §9: the codes the wire can carry (every code of the table not marked "(local"), written out
# here so that a new code in the spec makes test_wire_codes_are_the_spec_table fail.
WIRE_CODES = {
    "oversize", "truncated", "trailing_bytes", "forbidden_type", "non_minimal",
    "invalid_utf8", "map_key_type", "unsorted_keys", "duplicate_key", "too_deep",
    "malformed", "unsupported_version", "wrong_federation", "unknown_kind",
    "unknown_author", "wrong_algorithm", "bad_signature", "invalid_body", "duplicate",
    "equivocation", "sequence_gap", "wrong_prev", "timestamp_regression",
    "timestamp_in_future", "not_equivocation", "missing_signature", "invalid_record",
    "disclosure_mismatch",
    "no_consent",  # §7.3: a 403 of the peer protocol, never a verdict on a vector
    "unauthenticated",  # §8.2: a 401 of the peer protocol, never a verdict on a vector
    "equivocated",  # §4.6: a chain frozen at a proven fork
    "rate_limited", "not_found", "method_not_allowed",  # §8.5, §9: refusals of the ports
    "withdrawn", "kind_not_allowed",  # §4.1 steps 8 and 10
    "not_in_electorate", "double_vote", "vote_too_late", "wrong_vote_kind", "after_final",
    "key_in_use", "id_in_use", "not_a_member",  # §5.8: the tally's codes
    "not_party", "replay", "unknown_request", "out_of_order",  # §12.4: a party's refusals
}  # fmt: skip


def spec_error_table() -> dict[str, str]:
    """The table of §9, code -> meaning, read from PROTOCOL.md."""
    text = (PROTOCOL / "PROTOCOL.md").read_text(encoding="utf-8")
    section = text.split("\n## 9. ", 1)[1].split("\n## 10. ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.*) \|$", section, flags=re.MULTILINE)
    assert rows, "no table in §9"
    return dict(rows)


def test_wire_codes_are_the_spec_table() -> None:
    """§9: the codes listed here are exactly those of the table that are not local."""
    table = spec_error_table()
    wire = {code for code, meaning in table.items() if not meaning.startswith("(local")}
    assert wire == WIRE_CODES, f"spec only: {wire - WIRE_CODES}; here only: {WIRE_CODES - wire}"


def test_verifier_raises_only_spec_codes() -> None:
    """§9: "every refusal carries exactly one of these codes": every code the independent
    verifier's modules (independent*.py) can raise is in the table, and none is local."""
    here = Path(independent.__file__).parent
    source = "".join(p.read_text(encoding="utf-8") for p in sorted(here.glob("independent*.py")))
    raised = set(re.findall(r'ProtocolError\(\s*"([a-z0-9_]+)"', source))
    raised |= {"malformed", "invalid_body"}  # raised through _malformed() and _invalid()
    assert len(raised) > 20
    assert raised <= WIRE_CODES, raised - WIRE_CODES


def test_every_expectation_is_a_code() -> None:
    """`expect` is "valid" or a code of §9 (those the wire can carry)."""
    codes = {"valid"} | WIRE_CODES
    for file in KINDS:
        data = load(file)
        steps = (
            [s for chain in data["chains"] for s in chain["steps"]]
            if "chains" in data
            else data["vectors"]
        )
        steps = data.get("applications", []) + steps
        for step in steps:
            assert step["expect"] in codes, f"{file}: {step['name']}: {step['expect']}"
        for chain in data.get("chains", []):
            for p in chain.get("proposals", []):
                assert p["code"] in codes | {None}, f"{file}: {chain['name']}: {p['code']}"
                for b in p["ballots"]:
                    assert b["code"] in codes | {None}, f"{file}: {chain['name']}: {b}"


# ---------------------------------------------------------------------------------------
# §2 encoding.json
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", params("encoding"))
def test_encoding(case: Case) -> None:
    vec = load(case.file)["vectors"][case.index[0]]
    raw = bytes.fromhex(vec["input_hex"])
    got, value = verdict(lambda: decode(raw, EVENT_LIMIT))
    assert got == vec["expect"], f"{value}"
    if got == "valid":
        assert strict_json(as_json(value)) == strict_json(vec["value"])  # type: ignore[arg-type]
        # The canonical form is unique: our encoder, and u-msgpack-python given the keys in
        # their canonical order, write the input back.
        assert encode(value) == raw  # type: ignore[arg-type]
        assert umsgpack.packb(value) == raw


# ---------------------------------------------------------------------------------------
# §5.5 genesis.json
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", params("genesis"))
def test_genesis(case: Case) -> None:
    vec = load(case.file)["vectors"][case.index[0]]
    got, result = verdict(lambda: verify_genesis(bytes.fromhex(vec["input_hex"])))
    assert got == vec["expect"], f"{result}"
    if got == "valid":
        assert isinstance(result, Genesis)
        assert result.federation_id.hex() == vec["federation_id_hex"]


# ---------------------------------------------------------------------------------------
# §4 events-*.json: each chain from a fresh verifier, steps in order
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepOutcome:
    code: str
    result: object
    state_unchanged: bool  # for a refusal: the chain state is as before (§10)


def _snapshot(v: Verifier) -> str:
    return repr(sorted((m, s.ids, s.keys, s.head_ts) for m, s in v.chains.items() if s.ids))


@cache
def run_chain(file: str, chain_index: int) -> tuple[StepOutcome, ...]:
    data = load(file)
    verifier = Verifier(genesis_of(data["genesis_hex"]))
    outcomes: list[StepOutcome] = []
    for step in data["chains"][chain_index]["steps"]:
        before = _snapshot(verifier)
        raw = bytes.fromhex(step["input_hex"])
        code, result = verdict(
            lambda raw=raw, step=step: verifier.verify_event(raw, step.get("now"))
        )
        outcomes.append(StepOutcome(code, result, _snapshot(verifier) == before))
    return tuple(outcomes)


@pytest.mark.parametrize("case", params("events"))
def test_event(case: Case) -> None:
    data = load(case.file)
    chain, step_index = case.index
    step = data["chains"][chain]["steps"][step_index]
    outcome = run_chain(case.file, chain)[step_index]
    assert outcome.code == step["expect"], f"{outcome.result}"
    if outcome.code != "valid":
        assert outcome.state_unchanged, "a refused event changed the chain state"
        return
    acc = outcome.result
    assert isinstance(acc, Accepted)
    ev = acc.event
    assert ev.event_id.hex() == step["event_id_hex"]  # §3.2
    assert ev.signing_input.hex() == step["signing_input_hex"]  # §3.2
    assert encode(acc.key).hex() == step["public_key_hex"]  # §4.3, the key valid at seq
    assert encode(ev.sig).hex() == step["signature_hex"]  # §3.3
    # The signature verifies with PyNaCl (and dilithium-py) over the vector's signing input,
    # under the vector's key map.
    message = bytes.fromhex(step["signing_input_hex"])
    key = decode(bytes.fromhex(step["public_key_hex"]), EVENT_LIMIT)
    sig = decode(bytes.fromhex(step["signature_hex"]), EVENT_LIMIT)
    assert isinstance(key, dict) and isinstance(sig, dict)
    assert ed25519_verify(key["ed25519"], message, sig["ed25519"])
    if sig["alg"] == HYBRID:
        assert mldsa65_verify(key["mldsa65"], message, sig["mldsa65"])


# ---------------------------------------------------------------------------------------
# §4.5 proofs.json
# ---------------------------------------------------------------------------------------
@cache
def proof_verifier(history: tuple[str, ...]) -> Verifier:
    data = load("proofs.json")
    verifier = Verifier(genesis_of(data["genesis_hex"]))
    for envelope in history:
        verifier.verify_event(bytes.fromhex(envelope))
    return verifier


@pytest.mark.parametrize("case", params("proofs"))
def test_proof(case: Case) -> None:
    data = load(case.file)
    vec = data["vectors"][case.index[0]]
    # §10: one history_hex at the top, accepted first on a fresh verifier.
    verifier = proof_verifier(tuple(data["history_hex"]))
    got, result = verdict(lambda: verifier.check_proof(bytes.fromhex(vec["input_hex"])))
    assert got == vec["expect"], f"{result}"
    if got == "valid":  # §10: valid proofs carry the author and seq they prove
        assert result == (vec["author"], vec["seq"])


# ---------------------------------------------------------------------------------------
# §6.4 disclosures.json
# ---------------------------------------------------------------------------------------
@cache
def disclosed_record() -> dict[str, Any]:
    data = load("disclosures.json")
    verifier = Verifier(genesis_of(data["genesis_hex"]))
    accepted = verifier.verify_event(bytes.fromhex(data["record_hex"]))  # "already accepted"
    assert accepted.event.kind == "record"
    return accepted.event.body


@pytest.mark.parametrize("case", params("disclosures"))
def test_disclosure(case: Case) -> None:
    vec = load(case.file)["vectors"][case.index[0]]
    body = disclosed_record()
    got, result = verdict(lambda: check_disclosure(body, bytes.fromhex(vec["input_hex"])))
    assert got == vec["expect"], f"{result}"
    if got == "valid":  # §10: valid ones carry the visibility they open
        assert result.visibility == vec["visibility"]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
# §3.3.1 Ed25519, exactly: our own arithmetic against the spec's text and libsodium
# ---------------------------------------------------------------------------------------
def _torsion_points() -> list[tuple[int, int, int, int]]:
    """The eight points of small order: the multiples of a point of order 8, found as [L]P
    for curve points P (the cofactor-8 part of P)."""
    y = 2
    while True:
        pt = ed_decode(y.to_bytes(32, "little"))
        y += 1
        if pt is None:
            continue
        t = ed_mul(ED_L, pt)
        if not ed_is_neutral(ed_mul(4, t)):  # order 8
            return [ed_mul(i, t) for i in range(8)]


def test_small_order_r_list_is_the_torsion_subgroup() -> None:
    """§3.3.1 rule 2 lists exactly the canonical encodings of the eight small-order points."""
    assert ed_is_neutral(ed_mul(ED_L, ED_B))  # sanity: B has order L
    encodings = {ed_encode(t) for t in _torsion_points()}
    assert len(encodings) == 8
    assert encodings == SMALL_ORDER_R


def test_public_key_rule() -> None:
    """§3.3.1 rule 1: strict RFC 8032 §5.1.3 decoding, and [8]A not neutral."""
    for r in SMALL_ORDER_R:  # every small-order point is refused as a key
        assert not ed25519_public_key_ok(r), r.hex()
    p = ED_P
    for y in (p, p + 1, p + 18, 2**255 - 1):  # y >= p: non-canonical
        assert not ed25519_public_key_ok(y.to_bytes(32, "little")), y
    # x = 0 with the sign bit set (y = 1 and y = -1): not a point at all.
    for y in (1, p - 1):
        assert ed_decode((y | 1 << 255).to_bytes(32, "little")) is None
    # y = 2 has no square root for x on this curve.
    assert ed_decode((2).to_bytes(32, "little")) is None
    # The base point, and a mixed-order point (B plus a torsion point): [8]A is not neutral,
    # so both are allowed; the spec does not ask for the prime-order subgroup.
    assert ed25519_public_key_ok(ed_encode(ED_B))
    t8 = _torsion_points()[1]
    assert ed25519_public_key_ok(ed_encode(ed_add(ED_B, t8)))
    assert ed_encode(ED_NEUTRAL) == bytes.fromhex("01" + "00" * 31)


def test_endpoint_white_space_and_length() -> None:
    """§1.2: `\\s` is exactly the White_Space list; §5.2: at most 256 code points."""
    white = [*map(chr, range(0x09, 0x0E)), " ", "\u0085", "\u00a0", "\u1680"]
    white += [*map(chr, range(0x2000, 0x200B)), "\u2028", "\u2029", "\u202f", "\u205f"]
    white += ["\u3000"]
    for ch in white:
        assert not is_endpoint(f"https://a{ch}b"), hex(ord(ch))
    for ch in ("\x1c", "\x1f", "\ufeff", "\u200b", "\u180e"):  # not White_Space
        assert is_endpoint(f"https://a{ch}b"), hex(ord(ch))
    assert is_endpoint("https://" + "\u00e9" * 248)  # 256 code points, 504 bytes
    assert not is_endpoint("https://" + "a" * 249)
    assert not is_endpoint("https://")
    assert not is_endpoint("https://a\n")  # whole string: no `$` before a final newline


def _replay_everything() -> None:
    """Every genesis, chain step, proof and disclosure record of the vectors, uncached."""
    for vec in load("genesis.json")["vectors"]:
        verdict(lambda vec=vec: verify_genesis(bytes.fromhex(vec["input_hex"])))
    for file in (f for f, kind in KINDS.items() if kind == "events"):
        data = load(file)
        for chain in data["chains"]:
            verifier = Verifier(verify_genesis(bytes.fromhex(data["genesis_hex"])))
            for step in chain["steps"]:
                raw = bytes.fromhex(step["input_hex"])
                verdict(lambda raw=raw, step=step, v=verifier: v.verify_event(raw, step.get("now")))
    data = load("proofs.json")
    verifier = Verifier(verify_genesis(bytes.fromhex(data["genesis_hex"])))
    for envelope in data["history_hex"]:
        verifier.verify_event(bytes.fromhex(envelope))
    for vec in data["vectors"]:
        verdict(lambda vec=vec: verifier.check_proof(bytes.fromhex(vec["input_hex"])))
    data = load("disclosures.json")
    Verifier(verify_genesis(bytes.fromhex(data["genesis_hex"]))).verify_event(
        bytes.fromhex(data["record_hex"])
    )


def test_libsodium_agrees_with_the_spec_equation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Ed25519 check the vectors cause: our checks plus libsodium give the verdict of
    §3.3.1 computed entirely in Python (key rule, R list, S < L, cofactorless equation)."""
    seen: dict[tuple[bytes, bytes, bytes], bool] = {}

    def recording(public_key: bytes, message: bytes, signature: bytes) -> bool:
        seen[(public_key, message, signature)] = got = ed25519_verify(
            public_key, message, signature
        )
        return got

    monkeypatch.setattr(independent, "ed25519_verify", recording)
    _replay_everything()
    assert len(seen) > 50 and any(seen.values()) and not all(seen.values())
    for (pk, msg, sig), got in seen.items():
        assert got == ed25519_verify_cofactorless(pk, msg, sig), (pk.hex(), sig.hex())
        # Every key that reaches a signature check obeys rule 1, so libsodium alone, which
        # refuses the same keys and R values, agrees too.
        assert got == libsodium_verify(pk, msg, sig), (pk.hex(), sig.hex())


def test_32_bit_forms_are_minimal_above_the_event_limit() -> None:
    """§2.5: "the 32-bit forms are rare but real": an equivocation proof holds envelopes of
    up to 65,536 bytes (bin 32), and a hybrid genesis of 34 founders or more holds more than
    65,535 bytes of ML-DSA keys. Under the event limit a bin 32 can never fit."""
    raw = b"\xc6" + (65_536).to_bytes(4, "big") + bytes(65_536)
    assert decode(raw, PROOF_LIMIT) == bytes(65_536)
    assert decode(raw, GENESIS_LIMIT) == bytes(65_536)
    assert verdict(lambda: decode(raw, EVENT_LIMIT))[0] == "oversize"
    short = b"\xc6" + (65_535).to_bytes(4, "big") + bytes(65_535)
    assert verdict(lambda: decode(short, PROOF_LIMIT))[0] == "non_minimal"


# ---------------------------------------------------------------------------------------
# §3.4.4 `sealed`, beyond the vectors: both suites, on federations built here
# ---------------------------------------------------------------------------------------
_FOUNDER = nacl.signing.SigningKey(bytes(range(32)))


@cache
def sealed_genesis(hpke_suite: str) -> Genesis:
    """A one-founder ed25519 federation with the given `hpke_suite` (§5), signed here."""
    rule = {"rule": "consensus", "window_ms": 3_600_000}
    payload = encode(
        {
            "type": "pocnode/genesis",
            "v": 1,
            "name": f"sealed {hpke_suite}",
            "created": 0,
            "sig_alg": "ed25519",
            "hpke_suite": hpke_suite,
            "template": 1,
            "governance": {k: rule for k in ("admission", "observer", "key_recovery", "rules")},
            "founders": [
                {
                    "id": "ATL",
                    "name": "Atlantis",
                    "key": {"ed25519": bytes(_FOUNDER.verify_key)},
                    "endpoints": [],
                }
            ],
        }
    )
    sig = _FOUNDER.sign(GENESIS_PREFIX + payload).signature
    return verify_genesis(
        encode({"genesis": payload, "sigs": {"ATL": {"alg": "ed25519", "ed25519": sig}}})
    )


def sealed_envelope(genesis: Genesis, body: dict[str, Value]) -> bytes:
    payload = encode(
        {
            "v": 1,
            "fed": genesis.federation_id,
            "author": "ATL",
            "seq": 1,
            "prev": None,
            "kind": "sealed",
            "ts": 0,
            "body": body,
        }
    )
    sig = _FOUNDER.sign(EVENT_PREFIX + payload).signature
    return encode({"sig": {"alg": "ed25519", "ed25519": sig}, "event": payload})


def _sealed_bodies(suite: str) -> Iterator[tuple[str, dict[str, Value], str]]:
    n = SEALED_BOX_SIZES[suite]
    other = next(s for s in SEALED_BOX_SIZES if s != suite)
    lo, hi = b"\x01" * n, b"\x02" * n
    near = lo[:-1] + b"\x02"  # differs from lo in its last byte only
    yield "two boxes, ascending", {"suite": suite, "boxes": [lo, hi]}, "valid"
    yield "boxes differing in the last byte", {"suite": suite, "boxes": [lo, near]}, "valid"
    yield "descending", {"suite": suite, "boxes": [hi, lo]}, "invalid_body"
    yield "the same box twice", {"suite": suite, "boxes": [lo, lo]}, "invalid_body"
    yield "one box", {"suite": suite, "boxes": [lo]}, "invalid_body"
    yield "no box", {"suite": suite, "boxes": []}, "invalid_body"
    yield "three boxes", {"suite": suite, "boxes": [lo, near, hi]}, "invalid_body"
    yield "a box one byte short", {"suite": suite, "boxes": [lo[:-1], hi]}, "invalid_body"
    yield "a box one byte long", {"suite": suite, "boxes": [lo, hi + b"\x00"]}, "invalid_body"
    m = SEALED_BOX_SIZES[other]
    yield (
        "boxes of the other suite's size",
        {"suite": suite, "boxes": [b"\x01" * m, b"\x02" * m]},
        "invalid_body",
    )
    yield "the other suite", {"suite": other, "boxes": [lo, hi]}, "invalid_body"
    yield "suite as bin", {"suite": suite.encode(), "boxes": [lo, hi]}, "invalid_body"
    yield "no suite", {"boxes": [lo, hi]}, "invalid_body"
    yield "no boxes", {"suite": suite}, "invalid_body"
    yield "boxes as one bin", {"suite": suite, "boxes": lo + hi}, "invalid_body"
    yield "a box as str", {"suite": suite, "boxes": [lo, "x" * n]}, "invalid_body"
    yield "a box as a nested array", {"suite": suite, "boxes": [lo, [hi]]}, "invalid_body"
    yield "a recipient in clear", {"suite": suite, "boxes": [lo, hi], "to": "BOR"}, "invalid_body"
    yield "an empty body", {}, "invalid_body"


@pytest.mark.parametrize(
    ("suite", "body", "expect"),
    [
        pytest.param(suite, body, expect, id=f"{suite}::{name}")
        for suite in SEALED_BOX_SIZES
        for name, body, expect in _sealed_bodies(suite)
    ],
)
def test_sealed_body(suite: str, body: dict[str, Value], expect: str) -> None:
    """§3.4.4 on each suite: two distinct bins of the suite's box size, ascending, `suite` the
    genesis's, nothing else. The shape only: no node.keys is needed first (§7.2)."""
    genesis = sealed_genesis(suite)
    got, result = verdict(lambda: Verifier(genesis).verify_event(sealed_envelope(genesis, body)))
    assert got == expect, f"{result}"


def test_sealed_box_sizes_follow_section_7() -> None:
    """§3.4.4's box sizes agree with §7.2: a box is enc || ciphertext of a 64-byte plaintext
    under AES-128-GCM (16-byte tag). enc is 32 bytes for DHKEM(X25519) (RFC 9180 Nenc) and
    1,088 + 32 for ML-KEM-768 + X25519, whose public key, 1,184 + 32, is §3.4.3's 1,216."""
    enc = {"x25519": 32, "mlkem768-x25519": 1088 + 32}
    assert set(SEALED_BOX_SIZES) == set(HPKE_SUITES) == set(enc)
    for suite, size in SEALED_BOX_SIZES.items():
        assert size == enc[suite] + 64 + 16, suite
    assert HPKE_SUITES["mlkem768-x25519"] == 1184 + 32


# ---------------------------------------------------------------------------------------
# §13 bundle.json: export bundles audited, and the checkpoints' signed notes verified
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", params("bundle"))
def test_bundle_vector(case: Case) -> None:
    from tests.conformance import independent_tlog

    vector = load(case.file)["vectors"][case.index[0]]
    got = independent_tlog.audit_bundle(bytes.fromhex(vector["input_hex"]))
    assert got.verdict == vector["expect"], (got.verdict, got.record)
    if "record" in vector:
        assert got.record == vector["record"]
    for member, want in vector.get("members", {}).items():
        mine = got.members[member]
        assert mine["events"] == want["events"] and mine["head_id_hex"] == want["head_id_hex"]
        assert mine["equivocated_at"] == want["equivocated_at"]
        assert mine["witnesses"] == want["witnesses"]
        if member in got.notes:  # C2SP signed-note verification, from the notes' text alone
            verified = independent_tlog.verify_note(got.notes[member], got.vkeys[member])
            assert verified == 1 + len(want["witnesses"])
# §12 request-plaintexts.json, request-folds.json (requests.json runs as an events file)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", params("request_plaintexts"))
def test_request_plaintext(case: Case) -> None:
    vec = load(case.file)["vectors"][case.index[0]]
    got, result = verdict(lambda: parse_request_plaintext(bytes.fromhex(vec["input_hex"])))
    assert got == vec["expect"], f"{result}"


@pytest.mark.parametrize("case", params("request_folds"))
def test_request_fold(case: Case) -> None:
    """§12.4: replay the vector's history at its party's node, then judge its plaintext."""
    data = load(case.file)
    vec = data["vectors"][case.index[0]]
    members = frozenset(f.id for f in genesis_of(data["genesis_hex"]).founders)
    party = RequestParty(vec["me"], members)
    for step in vec["history"]:
        verdict(lambda step=step: party.apply(step["author"], bytes.fromhex(step["input_hex"])))
    got, result = verdict(lambda: party.apply(vec["author"], bytes.fromhex(vec["input_hex"])))
    assert got == vec["expect"], f"{result}"


# ---------------------------------------------------------------------------------------
# §5.6-§5.10 governance.json: applications, chains at one node, and the tallies
# ---------------------------------------------------------------------------------------
@cache
def governance_run(chain_index: int) -> independent_gov.ChainRun:
    data = load("governance.json")
    steps = [bytes.fromhex(s["input_hex"]) for s in data["chains"][chain_index]["steps"]]
    return independent_gov.run_chain(genesis_of(data["genesis_hex"]), steps)


def same_place(ours: str, theirs: str) -> bool:
    """§1.3: paths help people; two verifiers name the same place if one path is the other
    or a more precise path under it."""
    a, b = ours.replace("[", ".[").split("."), theirs.replace("[", ".[").split(".")
    return a[: len(b)] == b or b[: len(a)] == a


@pytest.mark.parametrize("case", params("governance"))
def test_governance(case: Case) -> None:
    data = load(case.file)
    genesis = genesis_of(data["genesis_hex"])
    if len(case.index) == 1:  # §5.6: an application
        vec = data["applications"][case.index[0]]
        raw = bytes.fromhex(vec["input_hex"])
        got, result = verdict(lambda: independent_gov.parse_application(raw, genesis))
        assert got == vec["expect"], f"{result}"
        if got == "valid":
            assert isinstance(result, independent_gov.Application)
            assert (result.role, result.member) == (vec["role"], vec["member"])
            assert independent_gov.fingerprint(result.key) == vec["fingerprint"]
        return
    chain_index, step_index = case.index
    chain = data["chains"][chain_index]
    run = governance_run(chain_index)
    if step_index == -1:  # §5.8: every proposal held at the end, tallied
        assert run.proposals == chain["proposals"]
        return
    step, outcome = chain["steps"][step_index], run.steps[step_index]
    assert outcome.code == step["expect"], outcome
    if outcome.code == "valid":
        assert outcome.event_id is not None and outcome.event_id.hex() == step["event_id_hex"]
    else:
        assert outcome.unchanged, "a refused event changed the node's state"
    if "path" in step:
        assert same_place(outcome.path, step["path"]), (outcome.path, step["path"])


def author_orders(steps: list[dict[str, Any]], count: int) -> list[list[bytes]]:
    """``count`` orders of delivery of a chain's accepted envelopes, each keeping every
    author's own order (gossip delivers a chain in order, §8.4) and mixing authors."""
    rng = random.Random(len(steps))
    queues: dict[str, list[bytes]] = {}
    for step in steps:
        if step["expect"] == "valid":
            raw = bytes.fromhex(step["input_hex"])
            queues.setdefault(independent.parse_envelope(raw).author, []).append(raw)
    orders = []
    for _ in range(count):
        left = {a: list(q) for a, q in queues.items()}
        order = []
        while left:
            author = rng.choice(sorted(left))
            order.append(left[author].pop(0))
            if not left[author]:
                del left[author]
        orders.append(order)
    return orders


def decided(table: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What §5.8 step 6 promises is the same everywhere: the outcomes and what they rest on
    (a ballot's code may differ: one that arrives once the outcome is final is after_final)."""
    return [(p["id_hex"], p["outcome"], p["final"], p["code"], p["rules_version"],
             p["electorate"]) for p in table]


@pytest.mark.parametrize(
    "chain_index",
    [pytest.param(i, id=c["name"]) for i, c in enumerate(load("governance.json")["chains"])],
)
def test_governance_outcome_whatever_the_order(chain_index: int) -> None:
    """§5.8 step 6: every node holding the same events reaches the same final outcome,
    whatever the order they arrived in. Each order is delivered again and again (as gossip
    would) until nothing more is accepted."""
    data = load("governance.json")
    chain = data["chains"][chain_index]
    genesis = genesis_of(data["genesis_hex"])
    for order in author_orders(chain["steps"], 12):
        v = independent_gov.GovVerifier(genesis)
        for _ in range(len(order)):  # bounded: each round accepts one event at least
            accepted = 0
            for raw in order:
                accepted += verdict(lambda raw=raw, v=v: v.verify_event(raw))[0] == "valid"
            if not accepted:
                break
        assert decided(v.table()) == decided(chain["proposals"])
