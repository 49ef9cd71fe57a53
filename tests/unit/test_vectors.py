"""protocol/vectors/ against the reference implementation (PROTOCOL.md §10)."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from pocnode.core import encoding
from pocnode.core.chain import Verifier
from pocnode.core.disclosure import check_disclosure
from pocnode.core.errors import PocError
from pocnode.core.events import parse_event
from pocnode.core.genesis import parse_genesis
from pocnode.core.governance import parse_application
from pocnode.core.keys import PublicKey, Signature

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def _load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


def _verdict(fn, *args, **kwargs) -> tuple[str, Any]:
    try:
        return "valid", fn(*args, **kwargs)
    except PocError as exc:
        return exc.code, None


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"bin"}:
            return bytes.fromhex(value["bin"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["name"] for row in rows]


ENCODING = _load("encoding.json")["vectors"]


@pytest.mark.parametrize("vector", ENCODING, ids=_ids(ENCODING))
def test_encoding_vector(vector):
    data = bytes.fromhex(vector["input_hex"])
    verdict, value = _verdict(encoding.decode, data)
    assert verdict == vector["expect"]
    if verdict == "valid":
        assert value == _from_json(vector["value"])
        assert encoding.encode(value) == data


GENESIS = _load("genesis.json")["vectors"]


@pytest.mark.parametrize("vector", GENESIS, ids=_ids(GENESIS))
def test_genesis_vector(vector):
    verdict, genesis = _verdict(parse_genesis, bytes.fromhex(vector["input_hex"]))
    assert verdict == vector["expect"]
    if verdict == "valid":
        assert genesis.id.hex() == vector["federation_id_hex"]


def _chain_cases() -> list[Any]:
    cases = []
    for name in ("events-ed25519.json", "events-hybrid.json", "sealed.json", "requests.json"):
        doc = _load(name)
        for chain in doc["chains"]:
            cases.append(pytest.param(doc["genesis_hex"], chain, id=f"{name}:{chain['name']}"))
    return cases


@pytest.mark.parametrize(("genesis_hex", "chain"), _chain_cases())
def test_event_chain(genesis_hex, chain):
    genesis = parse_genesis(bytes.fromhex(genesis_hex))
    verifier = Verifier(genesis)
    for step in chain["steps"]:
        data = bytes.fromhex(step["input_hex"])
        verdict, event = _verdict(verifier.check, data, now=step.get("now"))
        assert verdict == step["expect"], step["name"]
        if verdict != "valid":
            continue
        verifier.apply(event)
        assert event.id.hex() == step["event_id_hex"], step["name"]
        assert event.signing_input.hex() == step["signing_input_hex"], step["name"]
        key = PublicKey.from_wire(encoding.decode(bytes.fromhex(step["public_key_hex"])),
                                  alg=genesis.sig_alg, path="key")
        sig = Signature.from_wire(encoding.decode(bytes.fromhex(step["signature_hex"])),
                                  path="sig")
        assert key == verifier.chains[event.author].key_at(event.seq)
        assert key.verify(sig, bytes.fromhex(step["signing_input_hex"]))


PROOFS = _load("proofs.json")


@pytest.mark.parametrize("vector", PROOFS["vectors"], ids=_ids(PROOFS["vectors"]))
def test_proof_vector(vector):
    genesis = parse_genesis(bytes.fromhex(PROOFS["genesis_hex"]))
    verifier = Verifier(genesis)
    verifier.ingest_all(bytes.fromhex(h) for h in PROOFS["history_hex"])
    verdict, result = _verdict(verifier.check_proof, bytes.fromhex(vector["input_hex"]))
    assert verdict == vector["expect"]
    if verdict == "valid":
        assert result == (vector["author"], vector["seq"])


DISCLOSURES = _load("disclosures.json")


@pytest.mark.parametrize("vector", DISCLOSURES["vectors"], ids=_ids(DISCLOSURES["vectors"]))
def test_disclosure_vector(vector):
    genesis = parse_genesis(bytes.fromhex(DISCLOSURES["genesis_hex"]))
    record = Verifier(genesis).check(bytes.fromhex(DISCLOSURES["record_hex"]))
    verdict, disclosure = _verdict(check_disclosure, record.body,
                                   bytes.fromhex(vector["input_hex"]))
    assert verdict == vector["expect"]
    if verdict == "valid":
        assert disclosure.visibility == vector["visibility"]


BUNDLES = _load("bundle.json")["vectors"]


@pytest.mark.parametrize("vector", BUNDLES, ids=[v["name"] for v in BUNDLES])
def test_bundle_vector(vector):
    from pocnode.core.audit import audit_bytes

    report = audit_bytes(bytes.fromhex(vector["input_hex"]))
    problems = report.problems + [p for m in report.members for p in m.problems]
    got = {"ok": "valid", "equivocation": "equivocated"}.get(report.status) or problems[0].code
    assert got == vector["expect"], [p.text() for p in problems]
    if "record" in vector:
        assert problems[0].where.startswith(f"bundle record {vector['record']} ")
    for m in report.members:
        want = vector.get("members", {}).get(m.member)
        if want is not None:
            assert (m.events, m.head_id, m.frozen_at, m.witnesses) == (
                want["events"], want["head_id_hex"], want["equivocated_at"], want["witnesses"])


@functools.cache
def _generator():
    """tests/vectors/generate.py: the files it makes, and its reference node."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "vectors" / "generate.py"
    spec = importlib.util.spec_from_file_location("vector_generator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOVERNANCE = _load("governance.json")
GOV_GENESIS = parse_genesis(bytes.fromhex(GOVERNANCE["genesis_hex"]))


@pytest.mark.parametrize("vector", GOVERNANCE["applications"],
                         ids=_ids(GOVERNANCE["applications"]))
def test_governance_application_vector(vector):
    verdict, app = _verdict(parse_application, bytes.fromhex(vector["input_hex"]),
                            fed=GOV_GENESIS.id, sig_alg=GOV_GENESIS.sig_alg)
    assert verdict == vector["expect"]
    if verdict == "valid":
        assert (app.role, app.member, app.fingerprint()) == (
            vector["role"], vector["member"], vector["fingerprint"])


@pytest.mark.parametrize("chain", GOVERNANCE["chains"], ids=_ids(GOVERNANCE["chains"]))
def test_governance_chain(chain):
    """Each step delivered to one fresh node (the engine, as a node of no member), then
    every proposal it holds, tallied."""
    generator = _generator()
    node = generator.ReferenceNode(GOV_GENESIS)
    for step in chain["steps"]:
        raw = bytes.fromhex(step["input_hex"])
        assert node.deliver(raw) == step["expect"], step["name"]
        if step["expect"] == "valid":
            assert parse_event(raw).id.hex() == step["event_id_hex"]
    assert generator.proposal_table(node.engine.gov) == chain["proposals"]



def _author_orders(steps, count):
    rng = random.Random(len(steps))
    queues = {}
    for step in steps:
        if step["expect"] == "valid":
            raw = bytes.fromhex(step["input_hex"])
            queues.setdefault(parse_event(raw).author, []).append(raw)
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


def _decided(table):
    return [(p["id_hex"], p["outcome"], p["final"], p["code"], p["rules_version"],
             p["electorate"]) for p in table]


@pytest.mark.parametrize("chain", [pytest.param(c, id=c["name"])
                                   for c in GOVERNANCE["chains"]])
def test_governance_outcome_whatever_the_order(chain):
    """§5.8 step 6: the same final outcomes whatever the order events arrive in (each
    author's in order, as gossip brings them), each order delivered again until nothing
    more is accepted."""
    generator = _generator()
    for order in _author_orders(chain["steps"], 40):
        node = generator.ReferenceNode(GOV_GENESIS)
        for _ in range(len(order)):
            if not sum(node.deliver(raw) == "valid" for raw in order):
                break
        assert _decided(generator.proposal_table(node.engine.gov)) == _decided(
            chain["proposals"])


def test_vector_files_are_fresh():
    """The committed vectors are what the generator makes today (§10)."""
    module = _generator()
    files = module.generate()
    assert sorted(files) == sorted(p.name for p in VECTORS.glob("*.json"))
    stale = [name for name, doc in files.items() if not module._same(name, doc)]
    assert not stale, f"regenerate with: python tests/vectors/generate.py ({stale})"


def test_every_error_family_has_a_vector():
    """Negative vectors cover every wire error code that input can cause."""
    seen = {v["expect"] for v in ENCODING + GENESIS + PROOFS["vectors"]
            + DISCLOSURES["vectors"]}
    for name in ("events-ed25519.json", "events-hybrid.json", "governance.json"):
        seen |= {s["expect"] for c in _load(name)["chains"] for s in c["steps"]}
    tally = {p["code"] for c in GOVERNANCE["chains"] for p in c["proposals"]}
    tally |= {b["code"] for c in GOVERNANCE["chains"] for p in c["proposals"]
              for b in p["ballots"]}
    assert {"not_in_electorate", "double_vote", "vote_too_late", "wrong_vote_kind",
            "after_final", "key_in_use", "id_in_use", "not_a_member"} <= tally, tally
    wire_codes = {"oversize", "truncated", "trailing_bytes", "forbidden_type", "non_minimal",
                  "invalid_utf8", "map_key_type", "unsorted_keys", "duplicate_key", "too_deep",
                  "malformed", "unsupported_version", "wrong_federation", "unknown_kind",
                  "unknown_author", "wrong_algorithm", "bad_signature", "invalid_body",
                  "duplicate", "equivocation", "sequence_gap", "wrong_prev",
                  "timestamp_regression", "timestamp_in_future", "not_equivocation",
                  "missing_signature", "disclosure_mismatch", "withdrawn", "kind_not_allowed"}
    assert wire_codes <= seen, wire_codes - seen
