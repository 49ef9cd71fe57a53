"""Fuzzing the core's front doors (issue 13): whatever bytes or values arrive, the only
ways out are an answer or a PocError whose code is a row of PROTOCOL.md §9.

test_encoding.py and test_chain.py already throw uniform random bytes and single bit flips
at the decoder and the verifier. This file goes further in the places those cannot reach:
bytes shaped like msgpack (tags with plausible lengths), multi-step mutations of canonical
values, every non-canonical spelling of a value (each must be refused with the code of its
first fault), structure-aware mutations of the vectors' events, proofs and disclosures
(re-signed where we hold the key, so the body and chain rules are reached, not only the
signature check), peer-auth headers, and the record and body validators.

Invariants, for every input:
* the outcome is a value or a PocError whose code is in §9 and is a verdict (not
  ``internal``, which §9 reserves for bugs); any other exception fails the test;
* what the decoder accepts is canonical: ``encode(decode(b)) == b``;
* a refused event or proof leaves the verifier's state exactly as it was, and ``check``
  never changes it even when it accepts.

Example counts are bounded and deadlines off, so the file takes seconds on a loaded machine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pocnode.core import encoding
from pocnode.core.chain import Verifier, equivocation_proof
from pocnode.core.consent import HpkeKey, check_sealed, sealed_body
from pocnode.core.disclosure import check_disclosure, compile_record
from pocnode.core.errors import ALL_ERRORS, EncodingError, PocError
from pocnode.core.events import (
    EVENT_DOMAIN,
    check_key_rotate,
    check_node_keys,
    parse_event,
)
from pocnode.core.genesis import parse_genesis
from pocnode.core.keys import ED25519, HYBRID, SigningKey
from pocnode.core.peer_auth import (
    AUTH_DOMAIN,
    MAX_AUTH_SKEW_MS,
    check_header,
    make_header,
    request_hash,
)
from pocnode.core.reconcile import heads_from_wire
from pocnode.core.record import (
    CONTENT_FIELDS,
    example_record,
    validate_field_value,
    validate_plain_record,
    validate_signed_body,
)
from tests.mutations import WILD, loose, msgpack_soup, mutate_bytes, mutate_tree
from tests.unit.conftest import T0, Salts, make_fed
from tests.unit.test_encoding import VALUES
from tests.unit.test_record import _records
from tests.unit.test_spec import _spec_codes
from tests.vectors.generate import member_key

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"

SPEC_CODES = _spec_codes()
# "internal" is a row of §9, but §9 says what it means: a bug, never a verdict on input.
VERDICT_CODES = SPEC_CODES - {"internal"}
ENCODING_CODES = {cls.code for cls in ALL_ERRORS if issubclass(cls, EncodingError)} - {"encoding"}

# Deadlines off (a loaded machine must not fail these); example counts keep each test to
# about a second here.
_FUZZ = settings(deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fuzz(examples: int) -> settings:
    return settings(_FUZZ, max_examples=examples)


def _verdict(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """("ok", result) or (code, error); any exception that is not a PocError propagates
    and fails the test, as does a PocError whose code is not a §9 verdict."""
    try:
        return "ok", fn(*args, **kwargs)
    except PocError as exc:
        assert exc.code in VERDICT_CODES, (
            f"{type(exc).__name__} carries code {exc.code!r}, not a verdict of PROTOCOL.md §9: "
            f"{exc}")
        assert type(exc.message) is str and exc.message, f"{exc.code} without a message"
        return exc.code, exc


# -- §2 the decoder ----------------------------------------------------------------------------


def _check_decoder(data: bytes) -> None:
    verdict, value = _verdict(encoding.decode, data)
    if verdict == "ok":
        assert encoding.encode(value) == data, "accepted bytes that are not canonical"
    else:
        assert verdict in ENCODING_CODES, f"decode raised {verdict}, not a §2 code"
    fast, fast_value = _verdict(encoding.decode, data, exact=False)
    if fast == "ok":
        # The fast path may refuse what the reference accepts (non-ASCII keys), never
        # accept what it refuses, and never read a value differently.
        assert verdict == "ok" and encoding.encode(fast_value) == data
    else:
        assert fast in ENCODING_CODES
    limit = len(data) - 1
    if limit >= 0:
        assert _verdict(encoding.decode, data, max_size=limit)[0] == "oversize"


@fuzz(300)
@given(msgpack_soup())
def test_decoder_on_msgpack_shaped_noise(data):
    _check_decoder(data)


@fuzz(250)
@given(VALUES, st.data())
def test_decoder_on_mutated_canonical_values(value, data):
    raw = encoding.encode(value)
    if data.draw(st.booleans()):  # splice in a piece of another value
        other = encoding.encode(data.draw(VALUES))
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + other[: data.draw(st.integers(0, len(other)))] + raw[cut:]
    _check_decoder(mutate_bytes(raw, data.draw))


@fuzz(250)
@given(VALUES, st.data())
def test_every_spelling_of_a_value_decodes_to_it_or_names_its_first_fault(value, data):
    faults: list[str] = []
    raw = loose(value, data.draw, faults)
    verdict, decoded = _verdict(encoding.decode, raw)
    if not faults:
        assert raw == encoding.encode(value)
        assert verdict == "ok" and encoding.encode(decoded) == raw
    else:
        assert verdict == faults[0], f"first fault is {faults[0]}, decoder said {verdict}"


_BOUNDARY_VALUES = st.sampled_from(
    [n for k in (7, 8, 15, 16, 31, 32, 63, 64) for n in (2**k - 1, 2**k, -(2**k), -(2**k) - 1)
     if -(2**63) <= n < 2**64]
    + ["x" * n for n in (31, 32, 255, 256, 65535, 65536)]
    + [b"x" * n for n in (0, 255, 256, 65535, 65536)]
    + [[0] * n for n in (15, 16, 65535, 65536)]
    + [{f"k{i:05d}": 0 for i in range(n)} for n in (15, 16)])


@fuzz(80)
@given(_BOUNDARY_VALUES)
def test_values_at_form_boundaries_round_trip(value):
    raw = encoding.encode(value)
    assert encoding.decode(raw, max_size=len(raw)) == value
    assert encoding.encode(encoding.decode(raw, max_size=len(raw))) == raw


def test_depth_limit_is_exact():
    value: Any = 0
    for _ in range(encoding.MAX_DEPTH):
        value = [value]
    raw = encoding.encode(value)
    assert encoding.decode(raw) == value
    assert _verdict(encoding.decode, b"\x91" + raw)[0] == "too_deep"
    assert _verdict(encoding.decode, b"\x81\xa1a" + raw)[0] == "too_deep"


# -- §3, §4 events and the verifier -----------------------------------------------------------


def _load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


def _state(verifier: Verifier) -> dict[str, Any]:
    """All a verifier remembers of its chains, as plain values. Chains are made when first
    looked at; one with no event, no rotation and no freeze remembers nothing."""
    return {author: (tuple(c.ids), c.head_ts, c.frozen_at,
                     tuple((s, k.alg, k.ed25519, k.mldsa65) for s, k in c.keys))
            for author, c in verifier.chains.items()
            if c.ids or len(c.keys) > 1 or c.frozen_at is not None}


def _vector_chains() -> list[tuple[Any, str, list[tuple[bytes, int | None]]]]:
    chains = []
    for name in ("events-ed25519.json", "events-hybrid.json", "sealed.json"):
        doc = _load(name)
        genesis = parse_genesis(bytes.fromhex(doc["genesis_hex"]))
        for chain in doc["chains"]:
            steps = [(bytes.fromhex(s["input_hex"]), s.get("now")) for s in chain["steps"]]
            chains.append((genesis, chain["name"], steps))
    return chains


VECTOR_CHAINS = _vector_chains()
# The vectors' founders sign with keys from fixed seeds (tests/vectors/generate.py).
VECTOR_KEYS = {(alg, m): member_key(alg, f"{alg}/{m}")
               for alg in (ED25519, HYBRID) for m in ("ATL", "BOR", "CAL")}


def _replay(genesis: Any, steps: list[tuple[bytes, int | None]]) -> Verifier:
    verifier = Verifier(genesis)
    for raw, now in steps:
        with contextlib.suppress(PocError):
            verifier.ingest(raw, now=now)
    return verifier


def _resign(payload_fields: dict[str, Any], key: SigningKey) -> bytes | None:
    try:
        payload = encoding.encode(payload_fields)
    except (TypeError, ValueError):  # nested past the limit, say: not a wire value
        return None
    return encoding.encode({"sig": key.sign(EVENT_DOMAIN + payload).to_wire(),
                            "event": payload})


@st.composite
def mutated_event(draw: st.DrawFn, raw: bytes, alg: str) -> bytes:
    """A vector's envelope changed at the byte level, or in its payload or signature map
    (re-signed with the founder's key where the vectors' seeds give it)."""
    how = draw(st.sampled_from(["bytes", "payload", "payload_resigned", "envelope"]))
    try:
        env = encoding.decode(raw)
        fields = encoding.decode(env["event"])
        assert type(fields) is dict and type(env["sig"]) is dict
    except (PocError, TypeError, KeyError, AssertionError):
        how = "bytes"
    if how == "bytes":
        return mutate_bytes(raw, draw)
    if how == "envelope":
        env = mutate_tree(env, draw)
        try:
            return encoding.encode(env)
        except (TypeError, ValueError):
            return mutate_bytes(raw, draw)
    fields = mutate_tree(fields, draw)
    if how == "payload_resigned" and type(fields) is dict:
        author = fields.get("author")
        key = VECTOR_KEYS.get((alg, author)) if type(author) is str else None
        if key is not None:
            resigned = _resign(fields, key)
            if resigned is not None:
                return resigned
    try:
        return encoding.encode({"sig": env["sig"], "event": encoding.encode(fields)})
    except (TypeError, ValueError):
        return mutate_bytes(raw, draw)


def _check_event(verifier: Verifier, data: bytes, now: int | None) -> str:
    before = _state(verifier)
    parsed, _ = _verdict(parse_event, data)
    verdict, event = _verdict(verifier.check, data, now=now)
    assert _state(verifier) == before, "check() changed the verifier's state"
    if verdict == "ok":
        assert parsed == "ok"
        head = verifier.chains[event.author].seq
        verifier.apply(event)
        after = _state(verifier)
        assert verifier.chains[event.author].seq == head + 1
        assert {a: s for a, s in after.items() if a != event.author} == \
            {a: s for a, s in before.items() if a != event.author}
    else:
        # ingest (check, then apply) must leave nothing behind either.
        assert _verdict(verifier.ingest, data, now=now)[0] == verdict
        assert _state(verifier) == before, f"a refused event ({verdict}) changed the state"
    return verdict


@fuzz(300)
@given(st.data())
def test_mutated_vector_events_get_a_verdict_and_refusals_change_nothing(data):
    genesis, _, steps = data.draw(st.sampled_from(VECTOR_CHAINS))
    i = data.draw(st.integers(0, len(steps) - 1))
    verifier = _replay(genesis, steps[:i])
    raw, now = steps[i]
    _check_event(verifier, data.draw(mutated_event(raw, genesis.sig_alg)), now)


# A chain of every kind this version specifies, from keys we hold, so mutated payloads can be
# re-signed with the key valid at their sequence and reach the body and chain rules.
_FED = make_fed()
_NEW_KEY = SigningKey.generate()
_HPKE = HpkeKey.generate("x25519")


def _own_chain() -> list[tuple[bytes, SigningKey]]:
    sealed = sealed_body(suite="x25519", fed=_FED.id, author="ATL", to="BOR", action="offer",
                         to_public=HpkeKey.generate("x25519").public_bytes,
                         own_public=_HPKE.public_bytes)
    old = _FED.keys["ATL"]
    chain = [
        (_FED.event("ATL"), old),
        (_FED.event("ATL", "node.keys", {"tls": bytes(32), "hpke": {
            "suite": "x25519", "pk": _HPKE.public_bytes}}), old),
        (_FED.event("ATL", "sealed", sealed), old),
        (_FED.event("ATL", "key.rotate", {"key": _NEW_KEY.public_key.to_wire(),
                                          "reason": "fuzz"}), old),
        (_FED.event("ATL", key=_NEW_KEY), _NEW_KEY),
        (_FED.event("ATL", "sealed", sealed, key=_NEW_KEY), _NEW_KEY),
    ]
    return chain


OWN_CHAIN = _own_chain()


@fuzz(200)
@given(st.data())
def test_resigned_mutations_of_every_kind_get_a_verdict_and_refusals_change_nothing(data):
    i = data.draw(st.integers(0, len(OWN_CHAIN) - 1))
    verifier = Verifier(_FED.genesis)
    for raw, _ in OWN_CHAIN[:i]:
        verifier.ingest(raw, now=T0 + 1000)
    raw, key = OWN_CHAIN[i]
    fields = encoding.decode(encoding.decode(raw)["event"])
    # Mostly inside the body, where the kinds' rules live; sometimes the header.
    if data.draw(st.integers(0, 3)):
        fields["body"] = mutate_tree(fields["body"], data.draw)
    else:
        fields = mutate_tree(fields, data.draw)
    signer = data.draw(st.sampled_from([key, key, _FED.keys["ATL"], _NEW_KEY]))
    mutated = _resign(fields, signer) if type(fields) is dict else None
    assume(mutated is not None)
    _check_event(verifier, mutated, data.draw(st.sampled_from([None, T0 + 1000])))


# -- §4.5 proofs ---------------------------------------------------------------------------------

PROOFS = _load("proofs.json")
PROOF_GENESIS = parse_genesis(bytes.fromhex(PROOFS["genesis_hex"]))
PROOF_HISTORY = [bytes.fromhex(h) for h in PROOFS["history_hex"]]
PROOF_INPUTS = [bytes.fromhex(v["input_hex"]) for v in PROOFS["vectors"]]


def _payload_id(envelope: bytes) -> bytes:
    try:
        return hashlib.sha256(encoding.decode(envelope, max_size=len(envelope))["event"]).digest()
    except (PocError, TypeError, KeyError):
        return b""


@st.composite
def mutated_proof(draw: st.DrawFn) -> bytes:
    raw = draw(st.sampled_from(PROOF_INPUTS))
    how = draw(st.sampled_from(["bytes", "tree", "swap", "member", "resigned_fork"]))
    try:
        doc = encoding.decode(raw, max_size=len(raw))
        assert type(doc) is dict and type(doc.get("a")) is bytes and type(doc.get("b")) is bytes
    except (PocError, AssertionError):
        how = "bytes"
    if how == "bytes":
        return mutate_bytes(raw, draw)
    if how == "swap":
        return encoding.encode({"a": doc["b"], "b": doc["a"]})
    if how == "member":  # one side replaced by another event, or mutated itself
        side = draw(st.sampled_from(["a", "b"]))
        if draw(st.booleans()):
            doc[side] = draw(st.sampled_from(PROOF_HISTORY + [doc["a"], doc["b"]]))
        else:
            doc[side] = mutate_bytes(doc[side], draw)
        return encoding.encode(doc)
    if how == "resigned_fork":
        # A genuine-looking fork: one side's payload changed and signed again by its author.
        side = draw(st.sampled_from(["a", "b"]))
        try:
            fields = encoding.decode(encoding.decode(doc[side])["event"])
        except (PocError, TypeError, KeyError):
            return mutate_bytes(raw, draw)
        if type(fields) is dict:
            fields["body"] = mutate_tree(fields.get("body", {}), draw) if draw(
                st.booleans()) else fields.get("body")
            if draw(st.booleans()):
                fields["ts"] = draw(st.integers(0, 2**63 - 1))
            author = fields.get("author")
            key = VECTOR_KEYS.get((PROOF_GENESIS.sig_alg, author)) if type(author) is str \
                else None
            resigned = _resign(fields, key) if key else None
            if resigned is not None:
                pair = [resigned, doc["b" if side == "a" else "a"]]
                if draw(st.booleans()):  # in id order, as a proof must be; or not
                    pair.sort(key=_payload_id)
                return encoding.encode({"a": pair[0], "b": pair[1]})
        return mutate_bytes(raw, draw)
    try:
        return encoding.encode(mutate_tree(doc, draw))
    except (TypeError, ValueError):
        return mutate_bytes(raw, draw)


@fuzz(250)
@given(mutated_proof())
def test_mutated_proofs_get_a_verdict_and_leave_the_verifier_alone(data):
    verifier = Verifier(PROOF_GENESIS)
    verifier.ingest_all(PROOF_HISTORY)
    before = _state(verifier)
    verdict, result = _verdict(verifier.check_proof, data)
    assert _state(verifier) == before
    if verdict == "ok":
        # An accepted proof is two distinct events, ordered by id, at one author and
        # sequence, each signed by the key valid there: checked here without check_proof.
        doc = encoding.decode(data, max_size=len(data))
        a, b = parse_event(doc["a"]), parse_event(doc["b"])
        assert (a.author, a.seq) == (b.author, b.seq) == result
        assert a.id < b.id
        key = verifier.chains[a.author].key_at(a.seq)
        assert key.verify(a.sig, a.signing_input) and key.verify(b.sig, b.signing_input)


def test_a_resigned_fork_is_a_valid_proof():
    """The fuzzer's "resigned_fork" can make real proofs: this one must pass, so the test
    above checks acceptances and not only refusals."""
    history = PROOF_HISTORY
    fields = encoding.decode(encoding.decode(history[0])["event"])
    fields["ts"] += 1
    fork = _resign(fields, VECTOR_KEYS[(PROOF_GENESIS.sig_alg, fields["author"])])
    verifier = Verifier(PROOF_GENESIS)
    verifier.ingest_all(history)
    assert verifier.check_proof(equivocation_proof(history[0], fork)) == (fields["author"],
                                                                         fields["seq"])


# -- §6.4 disclosures --------------------------------------------------------------------------

DISCLOSURES = _load("disclosures.json")
DISCLOSURE_BODY = Verifier(parse_genesis(bytes.fromhex(DISCLOSURES["genesis_hex"]))).check(
    bytes.fromhex(DISCLOSURES["record_hex"])).body
DISCLOSURE_INPUTS = [bytes.fromhex(v["input_hex"]) for v in DISCLOSURES["vectors"]]
VALID_DISCLOSURES = {bytes.fromhex(v["input_hex"]) for v in DISCLOSURES["vectors"]
                     if v["expect"] == "valid"}


@st.composite
def mutated_disclosure(draw: st.DrawFn) -> bytes:
    raw = draw(st.sampled_from(DISCLOSURE_INPUTS))
    how = draw(st.sampled_from(["bytes", "tree", "value", "random"]))
    if how == "random":
        try:
            return encoding.encode(draw(WILD))
        except (TypeError, ValueError):
            return raw
    try:
        value = encoding.decode(raw)
    except PocError:
        how = "bytes"
    if how == "bytes":
        return mutate_bytes(raw, draw)
    if how == "value" and type(value) is list and len(value) == 4:
        value[3] = draw(WILD)
    else:
        value = mutate_tree(value, draw)
    try:
        return encoding.encode(value)
    except (TypeError, ValueError):
        return mutate_bytes(raw, draw)


@fuzz(300)
@given(mutated_disclosure())
def test_mutated_disclosures_are_refused_with_a_spec_code(raw):
    verdict, disclosure = _verdict(check_disclosure, DISCLOSURE_BODY, raw)
    if verdict == "ok":
        # Accepting another byte string would mean a second preimage of a signed digest.
        assert raw in VALID_DISCLOSURES
        assert hashlib.sha256(raw).digest() == disclosure.digest


@fuzz(40)
@given(_records(), _records())
def test_a_disclosure_opens_only_the_record_it_was_made_for(plain_a, plain_b):
    salts = Salts()  # one stream: the two records never share a salt
    a, b = compile_record(plain_a, salts), compile_record(plain_b, salts)
    for d in a.disclosures:
        verdict, opened = _verdict(check_disclosure, a.body, d.raw)
        assert verdict == "ok" and (opened.entry, opened.name, opened.visibility) == (
            d.entry, d.name, d.visibility)
        assert _verdict(check_disclosure, b.body, d.raw)[0] == "disclosure_mismatch"


# -- §8.2 peer authentication -------------------------------------------------------------------

_AUTH_FED = hashlib.sha256(b"fuzz federation").digest()
_PIN = hashlib.sha256(b"fuzz server pin").digest()
_AUTH_KEY = SigningKey.generate()
_STRANGER = SigningKey.generate()
_REQUEST = ("POST", "/v1/peer/disclosures", b"\x81\xa3fed\xc4\x20" + _AUTH_FED)
_NOW = T0


def _current_key(member: str) -> Any:
    return _AUTH_KEY.public_key if member == "ATL" else None


def _token(claims: Any, key: SigningKey | None = _AUTH_KEY, sig: Any = None) -> str:
    raw = encoding.encode(claims)
    if sig is None:
        sig = (key or _AUTH_KEY).sign(AUTH_DOMAIN + raw).to_wire()
    return "Pocnode " + base64.urlsafe_b64encode(encoding.encode(
        {"claims": raw, "sig": sig})).decode()


def _honest_claims() -> dict[str, Any]:
    method, path, body = _REQUEST
    return {"fed": _AUTH_FED, "member": "ATL", "pin": _PIN, "ts": _NOW,
            "req": request_hash(method, path, body)}


_STD_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _spelling(header: str) -> str | None:
    """The token as Python's lenient base64 decoder reads it: '-_' as '+/', every other
    character outside the alphabet dropped. See the xfail test below."""
    if not header.startswith("Pocnode "):
        return None
    return "".join(c for c in header[8:].replace("-", "+").replace("_", "/") if c in _STD_B64)


MUST, MAY, NEVER = "must accept", "may accept", "must refuse"


def _oracle(header: str) -> str:
    """A header that only respells the honest token (spaces, junk characters in it) may be
    accepted today (the lenient decoding the xfail below pins) and must not be once fixed."""
    return MAY if _spelling(header) == _spelling(_token(_honest_claims())) else NEVER


def test_the_fuzzers_honest_header_is_the_clients():
    method, path, body = _REQUEST
    assert _token(_honest_claims()) == make_header(
        _AUTH_KEY, fed=_AUTH_FED, member="ATL", server_pin=_PIN, now=_NOW, method=method,
        path=path, body=body)


@st.composite
def auth_case(draw: st.DrawFn) -> tuple[str, str]:
    """A header and what a correct server does with it: MUST, MAY or NEVER accept."""
    how = draw(st.sampled_from(["honest", "claims", "stranger", "text", "b64_noise", "b64_value",
                                "header_bytes", "scheme"]))
    claims = _honest_claims()
    if how == "honest":
        return _token(claims), MUST
    if how == "claims":
        changed = mutate_tree(claims, draw) if draw(st.booleans()) else dict(
            claims, ts=_NOW + draw(st.integers(-2 * MAX_AUTH_SKEW_MS, 2 * MAX_AUTH_SKEW_MS)))
        try:
            header = _token(changed)
        except (TypeError, ValueError):
            return _token(claims, _STRANGER), NEVER
        ok = (type(changed) is dict and changed.keys() == claims.keys()
              and all(changed[k] == claims[k] and type(changed[k]) is type(claims[k])
                      for k in ("fed", "member", "pin", "req"))
              and type(changed["ts"]) is int and abs(changed["ts"] - _NOW) <= MAX_AUTH_SKEW_MS)
        return header, MUST if ok else NEVER
    if how == "stranger":
        return _token(claims, _STRANGER), NEVER
    if how == "text":
        return draw(st.text(max_size=80)), NEVER
    if how == "b64_noise":
        return "Pocnode " + base64.urlsafe_b64encode(draw(st.binary(max_size=200))).decode(), NEVER
    if how == "b64_value":
        try:
            return "Pocnode " + base64.urlsafe_b64encode(encoding.encode(draw(WILD))).decode(), \
                NEVER
        except (TypeError, ValueError):
            return "Pocnode ", NEVER
    header = _token(claims)
    if how == "scheme":
        header = draw(st.sampled_from(["pocnode", "Bearer", "Pocnode  ", ""])) + header[7:]
    else:
        cut = draw(st.integers(8, len(header)))
        header = header[:cut] + draw(st.text(max_size=3)) + header[cut:]
    return header, _oracle(header)


@fuzz(300)
@given(auth_case(), st.data())
def test_auth_headers_authenticate_exactly_the_honest_request(case, data):
    header, expect = case
    method, path, body = _REQUEST
    if data.draw(st.integers(0, 4)) == 0:  # the same header on another request
        method, path, body = data.draw(st.sampled_from([
            ("GET", path, body), ("POST", "/v1/peer/bilateral", body), (method, path, b"")]))
        expect = NEVER
    try:
        member = check_header(header, fed=_AUTH_FED, own_pin=_PIN, now=_NOW, method=method,
                              path=path, body=body, current_key=_current_key)
    except PocError as exc:
        assert exc.code == "unauthenticated", f"{exc.code}: {exc}"
        assert expect != MUST, f"the honest header was refused: {exc}"
        return
    assert expect != NEVER and member == "ATL", f"accepted {header[:120]!r}"


@pytest.mark.parametrize("respell", [
    lambda h: "Pocnode   " + h[8:],
    lambda h: h[:20] + " !*" + h[20:],
    lambda h: h + "\t",
], ids=["spaces_after_scheme", "junk_inside", "trailing_tab"])
def test_a_respelled_token_is_refused(respell):
    method, path, body = _REQUEST
    with pytest.raises(PocError) as caught:
        check_header(respell(_token(_honest_claims())), fed=_AUTH_FED, own_pin=_PIN, now=_NOW,
                     method=method, path=path, body=body, current_key=_current_key)
    assert caught.value.code == "unauthenticated"


# -- §6 records and the kinds' bodies -----------------------------------------------------------

_BODY_CHECKS = {
    "record": (validate_signed_body, "invalid_body"),
    "node.keys": (lambda b: check_node_keys(b, "x25519"), "invalid_body"),
    "key.rotate": (lambda b: check_key_rotate(b, ED25519), "invalid_body"),
    "sealed": (lambda b: check_sealed(b, "x25519"), "invalid_body"),
}
_VALID_BODIES = {kind: encoding.decode(encoding.decode(raw)["event"])["body"]
                 for kind, raw in (("record", OWN_CHAIN[0][0]), ("node.keys", OWN_CHAIN[1][0]),
                                   ("sealed", OWN_CHAIN[2][0]), ("key.rotate", OWN_CHAIN[3][0]))}


@fuzz(200)
@given(st.sampled_from(sorted(_BODY_CHECKS)), st.data())
def test_mutated_bodies_are_valid_or_invalid_body(kind, data):
    check, code = _BODY_CHECKS[kind]
    body = _VALID_BODIES[kind]
    if kind == "record" and data.draw(st.booleans()):
        body = compile_record(data.draw(_records()), Salts()).body
    for _ in range(data.draw(st.integers(1, 3))):
        body = mutate_tree(body, data.draw)
    if type(body) is not dict:  # the verifier hands a body checker maps only (§4.1 step 5)
        body = {"body": body}
    verdict, _ = _verdict(check, body)
    assert verdict in ("ok", code), f"{kind} body refused with {verdict}"


@fuzz(120)
@given(_records() | st.just(example_record()), st.data())
def test_mutated_plain_records_are_valid_or_invalid_record(plain, data):
    for _ in range(data.draw(st.integers(1, 3))):
        plain = mutate_tree(plain, data.draw)
    verdict, _ = _verdict(validate_plain_record, plain)
    assert verdict in ("ok", "invalid_record")
    if verdict == "ok":
        # What the template allows compiles into a body the signed-body rules allow, unless
        # it is too large to sign, which is said as a record error too.
        outcome, compiled = _verdict(compile_record, plain, Salts())
        assert outcome in ("ok", "invalid_record")
        if outcome == "ok":
            assert _verdict(validate_signed_body, compiled.body)[0] == "ok"


@fuzz(120)
@given(st.sampled_from(CONTENT_FIELDS) | st.text(max_size=12) | WILD, WILD)
def test_field_values_are_valid_or_refused_with_the_given_error(name, value):
    for error, code in ((PocError, "internal"), (None, "invalid_record")):
        kwargs = {"error": error} if error is not None else {}
        try:
            validate_field_value(name, value, path="x", **kwargs)
        except PocError as exc:
            assert exc.code == code, f"{name!r}: {exc.code}"


@fuzz(80)
@given(WILD | st.lists(st.lists(WILD, max_size=4), max_size=4))
def test_heads_lists_are_valid_or_malformed(value):
    verdict, _ = _verdict(heads_from_wire, value, path="heads")
    assert verdict in ("ok", "malformed")


@pytest.mark.parametrize("depth", [64, 400])
def test_validators_survive_deep_values(depth):
    """JSON from the operator can nest far deeper than msgpack's 16 levels."""
    deep: Any = "x"
    for _ in range(depth):
        deep = [deep]
    for plain in ({"template": 1, "entries": deep}, {"template": 1, "entries": [deep]},
                  dict(example_record(), node={"endpoints": deep})):
        assert _verdict(validate_plain_record, plain)[0] == "invalid_record"
    assert _verdict(validate_signed_body, {"template": 1, "entries": [deep]})[0] == \
        "invalid_body"
