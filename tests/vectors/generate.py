"""Generate protocol/vectors/*.json (PROTOCOL.md §10).

    python tests/vectors/generate.py            # rewrite the files
    python tests/vectors/generate.py --check    # exit 1 if the files differ from a fresh run
    python tests/vectors/generate.py --only governance.json   # rewrite one file

Keys come from fixed seeds and salts from a fixed stream, so Ed25519 vectors are
byte-for-byte reproducible. ML-DSA-65 signing is hedged (randomised) in every
mainstream library, so hybrid signatures differ from run to run; ``--check``
compares those files by names, verdicts and ids, not signature bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pocnode.core import encoding  # noqa: E402
from pocnode.core.chain import Verifier, equivocation_proof  # noqa: E402
from pocnode.core.disclosure import compile_record  # noqa: E402
from pocnode.core.errors import PocError  # noqa: E402
from pocnode.core.events import EVENT_DOMAIN, build_event, parse_event  # noqa: E402
from pocnode.core.genesis import (  # noqa: E402
    assemble,
    build_payload,
    default_governance,
    parse_genesis,
    sign_payload,
)
from pocnode.core.keys import ED25519, HYBRID, SigningKey  # noqa: E402
from pocnode.core.record import example_record  # noqa: E402

_ORDER = 2**252 + 27742317777372353535851937790883648493
VECTOR_DIR = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000


def seed(label: str) -> bytes:
    return hashlib.sha256(b"pocnode test vector seed/" + label.encode()).digest()


def member_key(alg: str, label: str) -> SigningKey:
    return SigningKey.from_seeds(alg, seed(f"{label}/ed25519"),
                                 seed(f"{label}/mldsa65") if alg == HYBRID else None)


class SaltStream:
    """Deterministic salts for vectors only; real records use os.urandom."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return seed(f"salt/{self.label}/{self.n}")[:size]


def raw_envelope(payload_fields: dict[str, Any], key: SigningKey) -> bytes:
    """Sign arbitrary payload fields, valid or not, for negative vectors."""
    payload = encoding.encode(payload_fields)
    sig = key.sign(EVENT_DOMAIN + payload)
    return encoding.encode({"sig": sig.to_wire(), "event": payload})


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


# -- encoding.json --------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if type(value) is bytes:
        return {"bin": value.hex()}
    if type(value) is list:
        return [_json_value(v) for v in value]
    if type(value) is dict:
        return {k: _json_value(v) for k, v in value.items()}
    return value


def encoding_vectors() -> dict[str, Any]:
    valid_values: list[tuple[str, Any]] = [
        ("nil", None), ("false", False), ("true", True),
        ("int 0", 0), ("int 127 fixint", 127), ("int 128 uint8", 128), ("int 255", 255),
        ("int 256 uint16", 256), ("int 65535", 65535), ("int 65536 uint32", 65536),
        ("int 2^32-1", 2**32 - 1), ("int 2^32 uint64", 2**32), ("int 2^64-1", 2**64 - 1),
        ("int -1", -1), ("int -32 fixint", -32), ("int -33 int8", -33), ("int -128", -128),
        ("int -129 int16", -129), ("int -32768", -32768), ("int -32769 int32", -32769),
        ("int -2^31", -(2**31)), ("int -2^31-1 int64", -(2**31) - 1), ("int -2^63", -(2**63)),
        ("empty str", ""), ("fixstr", "pocnode"), ("str of 31 bytes", "a" * 31),
        ("str8 of 32 bytes", "b" * 32), ("str8 of 255 bytes", "c" * 255),
        ("str16 of 256 bytes", "d" * 256), ("multi-byte UTF-8", "Genève – 東京 – \U0001f512"),
        ("empty bin", b""), ("bin8", bytes(range(10))), ("bin16 of 256 bytes", bytes(256)),
        ("empty array", []), ("fixarray", [1, "two", b"\x03", None, True]),
        ("array16 of 16", list(range(16))), ("empty map", {}),
        ("map sorted by encoded key", {"v": 1, "ts": 2, "fed": 3, "body": 4, "author": 5}),
        ("map16 of 16 entries", {f"k{i:02d}": i for i in range(16)}),
        ("non-ASCII keys sort by UTF-8 bytes", {"z": 1, "é": 2, "ab": 3, "€": 4}),
        ("nesting at depth 16", _nest(16)),
    ]
    vectors = [{"name": name, "input_hex": encoding.encode(value).hex(), "expect": "valid",
                "value": _json_value(value)} for name, value in valid_values]

    def bad(name: str, hexstr: str, expect: str) -> None:
        vectors.append({"name": name, "input_hex": hexstr.replace(" ", ""), "expect": expect})

    bad("empty input", "", "truncated")
    bad("uint8 holding 5", "cc 05", "non_minimal")
    bad("uint16 holding 200", "cd 00 c8", "non_minimal")
    bad("uint32 holding 65535", "ce 00 00 ff ff", "non_minimal")
    bad("uint64 holding 2^32-1", "cf 00 00 00 00 ff ff ff ff", "non_minimal")
    bad("int8 holding 5 (signed form for a non-negative)", "d0 05", "non_minimal")
    bad("int8 holding -1", "d0 ff", "non_minimal")
    bad("int16 holding -100", "d1 ff 9c", "non_minimal")
    bad("int32 holding -30000", "d2 ff ff 8a d0", "non_minimal")
    bad("int64 holding -2^31", "d3 ff ff ff ff 80 00 00 00", "non_minimal")
    bad("int16 holding 1 (signed form, positive)", "d1 00 01", "non_minimal")
    bad("str8 holding 3 bytes", "d9 03 61 62 63", "non_minimal")
    bad("str16 holding 100 bytes", "da 00 64" + "61" * 100, "non_minimal")
    bad("bin16 holding 10 bytes", "c5 00 0a" + "00" * 10, "non_minimal")
    bad("bin32 holding 1 byte", "c6 00 00 00 01 00", "non_minimal")
    bad("array16 of 2", "dc 00 02 01 02", "non_minimal")
    bad("map16 of 1", "de 00 01 a1 61 01", "non_minimal")
    bad("float32", "ca 3f 80 00 00", "forbidden_type")
    bad("float64", "cb 3f f0 00 00 00 00 00 00", "forbidden_type")
    bad("float inside a map", "81 a1 76 cb 3f f0 00 00 00 00 00 00", "forbidden_type")
    bad("fixext1", "d4 01 00", "forbidden_type")
    bad("timestamp extension (-1)", "d6 ff 00 00 00 00", "forbidden_type")
    bad("ext8", "c7 01 05 00", "forbidden_type")
    bad("never-used byte c1", "c1", "forbidden_type")
    bad("unsorted keys (longer first)", "82 a2 74 73 01 a1 76 01", "unsorted_keys")
    bad("unsorted keys (same length, bytewise)", "82 a1 62 01 a1 61 02", "unsorted_keys")
    bad("alphabetical but not encoded order", "82 a4 62 6f 64 79 01 a3 66 65 64 02",
        "unsorted_keys")
    bad("duplicate key", "82 a1 61 01 a1 61 02", "duplicate_key")
    bad("int map key", "81 01 02", "map_key_type")
    bad("bin map key (str/bin mix-up)", "81 c4 01 61 02", "map_key_type")
    bad("invalid UTF-8 byte ff", "a1 ff", "invalid_utf8")
    bad("overlong UTF-8 for '/'", "a2 c0 af", "invalid_utf8")
    bad("UTF-8 surrogate U+D800", "a3 ed a0 80", "invalid_utf8")
    bad("str payload cut short", "a5 61 62", "truncated")
    bad("uint16 cut short", "cd 01", "truncated")
    bad("array missing items", "93 01 02", "truncated")
    bad("array32 claiming 2^32-1 items", "dd ff ff ff ff 00", "truncated")
    bad("map value missing", "81 a1 61", "truncated")
    bad("bin8 length past the end", "c4 05 00", "truncated")
    bad("trailing byte", "00 00", "trailing_bytes")
    bad("trailing bytes after a map", "80 c0", "trailing_bytes")
    bad("nesting at depth 17", encoding.encode(_nest(16)).hex().replace("90", "9190", 1),
        "too_deep")
    bad("oversize (65,537 bytes)", (b"\xc6" + (65532).to_bytes(4, "big") + bytes(65532)).hex(),
        "oversize")
    bad("UTF-8 above U+10FFFF", "a4 f4 90 80 80", "invalid_utf8")
    bad("UTF-8 cut mid-character", "a2 e2 82", "invalid_utf8")
    bad("map nested 17 deep", "81 a1 6b" * 16 + "80", "too_deep")
    bad("depth is checked before an absurd count", "91" * 16 + "dd ff ff ff ff", "too_deep")
    bad("first error wins: non-minimal length before truncation", "d9 03 61", "non_minimal")
    bad("first error wins: key type before key order", "82 a1 62 01 01 02", "map_key_type")
    return {"description": "Canonical msgpack decoding, PROTOCOL.md §2.4. Limit 65,536 bytes.",
            "vectors": vectors}


def _nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- federations -------------------------------------------------------------------------------


class Federation:
    def __init__(self, alg: str, members: tuple[str, ...] = ("ATL", "BOR", "CAL"), *,
                 governance: dict[str, dict[str, Any]] | None = None,
                 name: str | None = None) -> None:
        self.alg = alg
        self.keys = {m: member_key(alg, f"{alg}/{m}") for m in members}
        names = {"ATL": "Republic of Atlantis", "BOR": "Kingdom of Borduria",
                 "CAL": "Federal State of Caledonia"}
        founders = [{"id": m, "name": names.get(m, m), "key": k.public_key,
                     "endpoints": [f"https://pocnode.{m.lower()}.example.org:7443"]}
                    for m, k in self.keys.items()]
        self.payload = build_payload(name=name or f"Vector federation ({alg})", created=T0,
                                     sig_alg=alg, founders=founders,
                                     governance=governance or default_governance())
        self.doc = assemble(self.payload, {m: sign_payload(self.payload, k)
                                           for m, k in self.keys.items()})
        self.genesis = parse_genesis(self.doc)
        self.id = self.genesis.id
        self.salts = SaltStream(alg)

    def record_body(self, label: str = "") -> dict[str, Any]:
        plain = example_record()
        if label:
            plain["entries"][0]["notes"] = label
        return compile_record(plain, self.salts).body

    def event(self, author: str, seq: int, prev: bytes | None, kind: str, body: dict[str, Any],
              ts: int | None = None, key: SigningKey | None = None) -> bytes:
        return build_event(key or self.keys[author], fed=self.id, author=author, seq=seq,
                           prev=prev, kind=kind, ts=T0 + seq * MINUTE if ts is None else ts,
                           body=body)

    def payload_fields(self, author: str, seq: int, prev: bytes | None, kind: str = "record",
                       body: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"v": 1, "fed": self.id, "author": author, "seq": seq, "prev": prev,
                "kind": kind, "ts": T0 + seq * MINUTE,
                "body": body if body is not None else self.record_body()}


class ChainBuilder:
    """Records steps and their verdicts from the real verifier, refusing to write a vector
    whose verdict differs from what the generator meant."""

    def __init__(self, fed: Federation, name: str) -> None:
        self.fed = fed
        self.name = name
        self.verifier = Verifier(fed.genesis)
        self.steps: list[dict[str, Any]] = []

    def step(self, name: str, data: bytes, expect: str, now: int | None = None) -> bytes:
        try:
            event = self.verifier.check(data, now=now)
        except PocError as exc:
            got = exc.code
        else:
            got = "valid"
        if got != expect:
            raise SystemExit(f"{self.name}/{name}: meant {expect}, verifier says {got}")
        row: dict[str, Any] = {"name": name, "input_hex": data.hex(), "expect": expect}
        if now is not None:
            row["now"] = now
        if got == "valid":
            self.verifier.apply(event)
            chain = self.verifier.chains[event.author]
            row.update({
                "event_id_hex": event.id.hex(),
                "signing_input_hex": event.signing_input.hex(),
                "public_key_hex": encoding.encode(chain.key_at(event.seq).to_wire()).hex(),
                "signature_hex": encoding.encode(event.sig.to_wire()).hex(),
            })
        self.steps.append(row)
        return data

    def head(self, author: str) -> bytes | None:
        return self.verifier.chains[author].head_id

    def done(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps}


def _rotation_chain(fed: Federation) -> tuple[dict[str, Any], dict[str, bytes]]:
    c = ChainBuilder(fed, "ATL publishes, rotates its key, and is refused when it misbehaves")
    kept: dict[str, bytes] = {}
    e1 = c.step("ATL #1 record", fed.event("ATL", 1, None, "record", fed.record_body()), "valid")
    kept["ATL1"] = e1
    c.step("ATL #1 again", e1, "duplicate")
    tls_pin = hashlib.sha256(b"vector TLS SubjectPublicKeyInfo").digest()
    hpke_pk = seed("vector hpke public key")
    keys_body = {"tls": tls_pin, "hpke": {"suite": "x25519", "pk": hpke_pk}}
    e2 = c.step("ATL #2 node.keys", fed.event("ATL", 2, c.head("ATL"), "node.keys", keys_body),
                "valid")
    kept["ATL2"] = e2
    new_key = member_key(fed.alg, f"{fed.alg}/ATL/rotated")
    rotate = {"key": new_key.public_key.to_wire(), "reason": "scheduled annual rotation"}
    e3 = c.step("ATL #3 key.rotate signed by the old key",
                fed.event("ATL", 3, c.head("ATL"), "key.rotate", rotate), "valid")
    kept["ATL3"] = e3
    head3 = c.head("ATL")
    c.step("ATL #4 signed by the old key after rotation",
           fed.event("ATL", 4, head3, "record", fed.record_body("v4")), "bad_signature")
    c.step("ATL #4 record under the new key",
           fed.event("ATL", 4, head3, "record", fed.record_body("v4"), key=new_key), "valid")
    head4 = c.head("ATL")
    c.step("ATL #6 skips #5", fed.event("ATL", 6, head4, "record", fed.record_body(),
                                        key=new_key), "sequence_gap")
    c.step("ATL #5 with prev naming #3", fed.event("ATL", 5, head3, "record", fed.record_body(),
                                                   key=new_key), "wrong_prev")
    c.step("ATL #5 timestamped before #4",
           fed.event("ATL", 5, head4, "record", fed.record_body(), ts=T0 + 3 * MINUTE,
                     key=new_key), "timestamp_regression")
    c.step("ATL #5 an hour ahead of the verifier's clock",
           fed.event("ATL", 5, head4, "record", fed.record_body(), ts=T0 + 65 * MINUTE,
                     key=new_key), "timestamp_in_future", now=T0 + 5 * MINUTE)
    c.step("ATL #5 same timestamp as #4 is allowed",
           fed.event("ATL", 5, head4, "record", fed.record_body("v5"), ts=T0 + 4 * MINUTE,
                     key=new_key), "valid")
    other3 = fed.event("ATL", 3, kept_id(e2), "record",
                       fed.record_body("forked #3"))
    kept["ATL3-fork"] = other3
    c.step("ATL #3 forked: a second event validly signed by the key of #3",
           other3, "equivocation")
    c.step("ATL #3 forked but signed by the rotated key",
           fed.event("ATL", 3, kept_id(e2), "record", fed.record_body("fork 2"), key=new_key),
           "bad_signature")
    c.step("BOR #1 record", fed.event("BOR", 1, None, "record", fed.record_body()), "valid")
    return c.done(), kept


def kept_id(envelope: bytes) -> bytes:
    return parse_event(envelope).id


def _negative_chain(fed: Federation) -> dict[str, Any]:
    c = ChainBuilder(fed, "refusals at sequence 1")
    atl = fed.keys["ATL"]
    good = fed.event("ATL", 1, None, "record", fed.record_body())
    env = encoding.decode(good)
    sig_bytes = env["sig"]["ed25519"]
    tampered_sig = dict(env["sig"], ed25519=flip_bit(sig_bytes, 5))
    c.step("signature with one bit flipped",
           encoding.encode({"sig": tampered_sig, "event": env["event"]}), "bad_signature")
    ts_at = env["event"].index(b"\xa2ts\xcf") + 3 + 8 - 1  # last byte of the uint64 ts
    c.step("payload with one bit flipped in ts",
           encoding.encode({"sig": env["sig"], "event": flip_bit(env["event"], ts_at)}),
           "bad_signature")
    c.step("signed by another member's key", fed.event("ATL", 1, None, "record",
                                                        fed.record_body(), key=fed.keys["BOR"]),
           "bad_signature")
    c.step("reserved kind pong", raw_envelope(
        fed.payload_fields("ATL", 1, None, "pong", {"proposal": bytes(32)}), atl),
        "unknown_kind")
    c.step("unknown kind", raw_envelope(fed.payload_fields("ATL", 1, None, "holiday", {}), atl),
           "unknown_kind")
    c.step("author not a member", raw_envelope(fed.payload_fields("ZZZ", 1, None), atl),
           "unknown_author")
    c.step("another federation's id",
           raw_envelope(dict(fed.payload_fields("ATL", 1, None), fed=bytes(32)), atl),
           "wrong_federation")
    c.step("protocol version 2", raw_envelope(dict(fed.payload_fields("ATL", 1, None), v=2), atl),
           "unsupported_version")
    other_alg = HYBRID if fed.alg == ED25519 else ED25519
    c.step(f"signed with {other_alg} in an {fed.alg} federation",
           raw_envelope(fed.payload_fields("ATL", 1, None), member_key(other_alg, "ATL-other")),
           "wrong_algorithm")
    c.step("unknown signature algorithm", encoding.encode(
        {"sig": {"alg": "rsa", "ed25519": sig_bytes}, "event": env["event"]}), "malformed")
    c.step("signature of the wrong length", encoding.encode(
        {"sig": dict(env["sig"], ed25519=sig_bytes[:63]), "event": env["event"]}), "malformed")
    c.step("envelope with an extra key", encoding.encode(
        {"sig": env["sig"], "event": env["event"], "x": 1}), "malformed")
    c.step("payload as a str, not bin (str/bin mix-up)", encoding.encode(
        {"sig": env["sig"], "event": env["event"].decode("latin-1")}), "malformed")
    fields = fed.payload_fields("ATL", 1, None)
    for name, mutate in [
        ("missing ts", lambda f: {k: v for k, v in f.items() if k != "ts"}),
        ("extra payload field", lambda f: dict(f, extra=True)),
        ("author as bin (str/bin mix-up)", lambda f: dict(f, author=b"ATL")),
        ("fed as str (str/bin mix-up)", lambda f: dict(f, fed="00" * 32)),
        ("lower-case author id", lambda f: dict(f, author="atl")),
        ("seq 0", lambda f: dict(f, seq=0)),
        ("prev set at seq 1", lambda f: dict(f, prev=bytes(32))),
        ("fed of 31 bytes", lambda f: dict(f, fed=fed.id[:31])),
        ("negative ts", lambda f: dict(f, ts=-1)),
        ("body as an array", lambda f: dict(f, body=[])),
        ("v as str", lambda f: dict(f, v="1")),
    ]:
        c.step(name, raw_envelope(mutate(fields), atl), "malformed")
    payload = env["event"]
    c.step("payload with a uint16 where a fixint fits", encoding.encode(
        {"sig": env["sig"], "event": payload.replace(b"\xa3seq\x01", b"\xa3seq\xcd\x00\x01", 1)}),
        "non_minimal")
    c.step("payload with a float", encoding.encode(
        {"sig": env["sig"], "event": payload.replace(b"\xa3seq\x01",
                                                     b"\xa3seq\xcb?\xf0\x00\x00\x00\x00\x00\x00",
                                                     1)}), "forbidden_type")
    c.step("envelope keys unsorted", b"\x82\xa5event" + encoding.encode(payload)
           + b"\xa3sig" + encoding.encode(env["sig"]), "unsorted_keys")
    c.step("trailing byte after the envelope", good + b"\x00", "trailing_bytes")
    c.step("envelope cut short", good[:-1], "truncated")
    c.step("oversize envelope", raw_envelope(dict(
        fields, body={"template": 1, "entries": [], "pad": b"\x00" * 66000}), atl), "oversize")
    bad_email = fed.record_body()
    bad_email["entries"][0]["fields"]["email"] = "not-an-address"
    c.step("record with an invalid email", fed.event("ATL", 1, None, "record", bad_email),
           "invalid_body")
    unsorted = fed.record_body()
    entry = next(e for e in unsorted["entries"] if len(e.get("sd", {}).get("members", [])) > 1)
    entry["sd"]["members"].reverse()
    c.step("record with digests out of order",
           fed.event("ATL", 1, None, "record", unsorted), "invalid_body")
    c.step("key.rotate without a key", fed.event("ATL", 1, None, "key.rotate", {}),
           "invalid_body")
    c.step("node.keys with a 31-byte TLS pin",
           fed.event("ATL", 1, None, "node.keys", {"tls": bytes(31)}), "invalid_body")
    c.step("prev nil at seq 2", raw_envelope(dict(fields, seq=2), atl), "malformed")
    c.step("kind of 33 characters", raw_envelope(dict(fields, kind="k" * 33), atl), "malformed")
    c.step("v as a bool", raw_envelope(dict(fields, v=True), atl), "malformed")
    c.step("seq of 2^63", raw_envelope(dict(fields, seq=2**63, prev=bytes(32)), atl),
           "malformed")
    c.step("signature whose R is the neutral point (OpenSSL alone would accept it)",
           _neutral_r_forgery(fed, good), "bad_signature")
    small = {"ed25519": bytes([1]) + bytes(31)}
    if fed.alg == HYBRID:
        small["mldsa65"] = fed.keys["BOR"].public_key.mldsa65
    c.step("key.rotate to a small-order key", fed.event("ATL", 1, None, "key.rotate",
                                                        {"key": small}), "invalid_body")
    noncanonical = {**small, "ed25519": ((2**255 - 19) + 3).to_bytes(32, "little")}
    c.step("key.rotate to a non-canonical encoding (y >= p)", fed.event(
        "ATL", 1, None, "key.rotate", {"key": noncanonical}), "invalid_body")
    sig = env["sig"]["ed25519"]
    s_plus_l = (int.from_bytes(sig[32:], "little") + _ORDER).to_bytes(32, "little")
    c.step("signature with S + L in place of S", encoding.encode(
        {"sig": dict(env["sig"], ed25519=sig[:32] + s_plus_l), "event": env["event"]}),
        "bad_signature")
    c.step("key.rotate to a key of the other algorithm", fed.event(
        "ATL", 1, None, "key.rotate",
        {"key": member_key(other_alg, "rotate-other").public_key.to_wire()}), "invalid_body")
    c.step("key.rotate with a reason of 257 characters", fed.event(
        "ATL", 1, None, "key.rotate",
        {"key": member_key(fed.alg, "r257").public_key.to_wire(), "reason": "r" * 257}),
        "invalid_body")
    pin = bytes(32)
    c.step("node.keys with an HPKE suite other than the genesis's", fed.event(
        "ATL", 1, None, "node.keys",
        {"tls": pin, "hpke": {"suite": "mlkem768-x25519", "pk": bytes(1216)}}), "invalid_body")
    c.step("node.keys with an HPKE key of 31 bytes", fed.event(
        "ATL", 1, None, "node.keys", {"tls": pin, "hpke": {"suite": "x25519", "pk": bytes(31)}}),
        "invalid_body")
    twice = fed.record_body()
    twice["node"] = {"endpoints": ["https://a.example.org", "https://a.example.org"]}
    c.step("record listing one endpoint twice", fed.event("ATL", 1, None, "record", twice),
           "invalid_body")
    empty_sd = fed.record_body()
    empty_sd["entries"][0]["sd"] = {}
    c.step("record with an empty sd map", fed.event("ATL", 1, None, "record", empty_sd),
           "invalid_body")
    c.step("an hour ahead is refused when the verifier knows the time",
           fed.event("ATL", 1, None, "record", fed.record_body(), ts=T0 + 70 * MINUTE),
           "timestamp_in_future", now=T0 + 10 * MINUTE)
    edge = fed.event("ATL", 1, None, "record", fed.record_body(), ts=T0 + 20 * MINUTE)
    c.step("exactly ten minutes ahead is allowed", edge, "valid", now=T0 + 10 * MINUTE)
    c.step("the same content again with a broken signature is still a duplicate",
           encoding.encode({"sig": dict(encoding.decode(edge)["sig"],
                                        ed25519=flip_bit(encoding.decode(edge)["sig"]["ed25519"],
                                                         2)),
                            "event": encoding.decode(edge)["event"]}), "duplicate")
    c.step("a gap is reported before the signature is checked", encoding.encode(
        {"sig": tampered_sig, "event": encoding.encode(dict(
            fed.payload_fields("ATL", 3, bytes(32))))}), "sequence_gap")
    return c.done()


def _neutral_r_forgery(fed: Federation, envelope: bytes) -> bytes:
    """RFC 8032 leaves R unconstrained; with R the neutral point, S = k*a makes
    [S]B = R + [k]A hold, and OpenSSL accepts. libsodium and PROTOCOL.md §3.3.1 refuse."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from pocnode.core.ed25519_rules import L

    env = encoding.decode(envelope)
    h = hashlib.sha512(seed(f"{fed.alg}/ATL/ed25519")).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    r = bytes([1]) + bytes(31)
    public = fed.keys["ATL"].public_key.ed25519
    message = EVENT_DOMAIN + env["event"]
    k = int.from_bytes(hashlib.sha512(r + public + message).digest(), "little") % L
    forged = r + (k * a % L).to_bytes(32, "little")
    Ed25519PublicKey.from_public_bytes(public).verify(forged, message)  # OpenSSL says yes
    return encoding.encode({"sig": dict(env["sig"], ed25519=forged), "event": env["event"]})


def _hybrid_extra_chain(fed: Federation) -> dict[str, Any]:
    c = ChainBuilder(fed, "hybrid: each half of the signature must verify on its own")
    good = fed.event("ATL", 1, None, "record", fed.record_body())
    env = encoding.decode(good)
    c.step("Ed25519 half broken", encoding.encode(
        {"sig": dict(env["sig"], ed25519=flip_bit(env["sig"]["ed25519"], 1)),
         "event": env["event"]}), "bad_signature")
    c.step("ML-DSA-65 half broken", encoding.encode(
        {"sig": dict(env["sig"], mldsa65=flip_bit(env["sig"]["mldsa65"], 100)),
         "event": env["event"]}), "bad_signature")
    other = fed.event("ATL", 1, None, "record", fed.record_body("other"))
    c.step("ML-DSA-65 half taken from another event's signature", encoding.encode(
        {"sig": dict(env["sig"], mldsa65=encoding.decode(other)["sig"]["mldsa65"]),
         "event": env["event"]}), "bad_signature")
    c.step("Ed25519 half missing", encoding.encode(
        {"sig": {"alg": HYBRID, "mldsa65": env["sig"]["mldsa65"]}, "event": env["event"]}),
        "malformed")
    c.step("both halves intact", good, "valid")
    return c.done()


def events_vectors(fed: Federation) -> tuple[dict[str, Any], dict[str, bytes]]:
    rotation, kept = _rotation_chain(fed)
    chains = [rotation, _negative_chain(fed)]
    if fed.alg == HYBRID:
        chains.append(_hybrid_extra_chain(fed))
    return {"description": f"Event verification, PROTOCOL.md §4, federation signing with "
                           f"{fed.alg}.", "genesis_hex": fed.doc.hex(), "chains": chains}, kept


# -- sealed.json ---------------------------------------------------------------------------------


def sealed_vectors(fed: Federation) -> dict[str, Any]:
    """§3.4.4: shape of consent events. HPKE encryption is randomised, so these bytes
    change at every generation; freshness is checked on names and verdicts."""
    from pocnode.core.consent import HpkeKey, sealed_body

    atl_hpke, bor_hpke = HpkeKey.generate("x25519"), HpkeKey.generate("x25519")
    body = sealed_body(suite="x25519", fed=fed.id, author="ATL", to="BOR", action="offer",
                       to_public=bor_hpke.public_bytes, own_public=atl_hpke.public_bytes)
    boxes = body["boxes"]
    c = ChainBuilder(fed, "sealed consent events")
    for name, bad in [
        ("the suite is not the genesis's", {**body, "suite": "mlkem768-x25519"}),
        ("one box only", {**body, "boxes": boxes[:1]}),
        ("boxes out of order", {**body, "boxes": [boxes[1], boxes[0]]}),
        ("the same box twice", {**body, "boxes": [boxes[0], boxes[0]]}),
        ("a box one byte short", {**body, "boxes": [boxes[0][:-1], boxes[1]]}),
        ("a recipient in clear", {**body, "to": "BOR"}),
    ]:
        c.step(name, fed.event("ATL", 1, None, "sealed", bad), "invalid_body")
    c.step("an offer sealed to BOR and to ATL itself", fed.event("ATL", 1, None, "sealed", body),
           "valid")
    return {"description": "Sealed consent events, PROTOCOL.md §3.4.4 (shape only; the boxes "
                           "are random and open for their recipients alone).",
            "genesis_hex": fed.doc.hex(), "chains": [c.done()]}


# -- genesis.json ---------------------------------------------------------------------------------


def genesis_vectors(ed: Federation, hybrid: Federation) -> dict[str, Any]:
    vectors: list[dict[str, Any]] = []

    def add(name: str, data: bytes, expect: str) -> None:
        try:
            got, fid = "valid", parse_genesis(data).id.hex()
        except PocError as exc:
            got, fid = exc.code, None
        if got != expect:
            raise SystemExit(f"genesis/{name}: meant {expect}, parser says {got}")
        row = {"name": name, "input_hex": data.hex(), "expect": expect}
        if fid:
            row["federation_id_hex"] = fid
        vectors.append(row)

    add("three founders, ed25519", ed.doc, "valid")
    add("three founders, ed25519+mldsa65", hybrid.doc, "valid")
    doc = encoding.decode(ed.doc)
    sigs = doc["sigs"]
    add("BOR has not signed", encoding.encode(
        {"genesis": doc["genesis"], "sigs": {k: v for k, v in sigs.items() if k != "BOR"}}),
        "missing_signature")
    add("CAL's signature has a flipped bit", encoding.encode(
        {"genesis": doc["genesis"],
         "sigs": dict(sigs, CAL=dict(sigs["CAL"], ed25519=flip_bit(sigs["CAL"]["ed25519"], 9)))}),
        "bad_signature")
    add("ATL signed with BOR's signature", encoding.encode(
        {"genesis": doc["genesis"], "sigs": dict(sigs, ATL=sigs["BOR"])}), "bad_signature")
    add("a non-founder signed too", encoding.encode(
        {"genesis": doc["genesis"], "sigs": dict(sigs, ZZZ=sigs["ATL"])}), "malformed")
    hdoc = encoding.decode(hybrid.doc)
    hs = hdoc["sigs"]
    add("hybrid: ML-DSA-65 half of BOR's signature broken", encoding.encode(
        {"genesis": hdoc["genesis"],
         "sigs": dict(hs, BOR=dict(hs["BOR"], mldsa65=flip_bit(hs["BOR"]["mldsa65"], 7)))}),
        "bad_signature")
    payload = encoding.decode(doc["genesis"])

    def resigned(name: str, mutate: Callable[[dict[str, Any]], dict[str, Any]],
                 expect: str) -> None:
        p = encoding.encode(mutate(dict(payload)))
        add(name, encoding.encode({"genesis": p, "sigs": {
            m: sign_payload(p, k).to_wire() for m, k in ed.keys.items()}}), expect)

    resigned("founders not sorted by id",
             lambda g: dict(g, founders=list(reversed(g["founders"]))), "malformed")
    resigned("version 2", lambda g: dict(g, v=2), "unsupported_version")
    resigned("governance rule unknown", lambda g: dict(g, governance=dict(
        g["governance"], admission={"rule": "lottery", "window_ms": 3_600_000})), "malformed")
    resigned("fraction with num > den", lambda g: dict(g, governance=dict(
        g["governance"], key_recovery={"rule": "fraction", "num": 3, "den": 2,
                                       "window_ms": 3_600_000})), "malformed")
    resigned("governance without a rules decision", lambda g: dict(g, governance={
        k: v for k, v in g["governance"].items() if k != "rules"}), "malformed")
    resigned("endpoint over plain http", lambda g: dict(g, founders=[
        dict(g["founders"][0], endpoints=["http://atl.example.org"]), *g["founders"][1:]]),
        "malformed")
    resigned("a founder with a small-order key", lambda g: dict(g, founders=[
        dict(g["founders"][0], key={"ed25519": bytes([1]) + bytes(31)}), *g["founders"][1:]]),
        "malformed")
    shared = encoding.encode(dict(payload, founders=[
        payload["founders"][0], dict(payload["founders"][1], key=payload["founders"][0]["key"]),
        payload["founders"][2]]))
    add("two founders with one key, one holder signing for both", encoding.encode(
        {"genesis": shared, "sigs": {
            "ATL": sign_payload(shared, ed.keys["ATL"]).to_wire(),
            "BOR": sign_payload(shared, ed.keys["ATL"]).to_wire(),
            "CAL": sign_payload(shared, ed.keys["CAL"]).to_wire()}}), "malformed")
    resigned("a founder id twice", lambda g: dict(g, founders=[
        g["founders"][0], dict(g["founders"][1], id=g["founders"][0]["id"]),
        g["founders"][2]]), "malformed")
    resigned("no founders", lambda g: dict(g, founders=[]), "malformed")
    resigned("a founder key of the other algorithm", lambda g: dict(g, founders=[
        dict(g["founders"][0], key=member_key(HYBRID, "other").public_key.to_wire()),
        *g["founders"][1:]]), "malformed")
    resigned("type is not pocnode/genesis", lambda g: dict(g, type="genesis"), "malformed")
    resigned("window_ms under an hour", lambda g: dict(g, governance=dict(
        g["governance"], observer={"rule": "silence", "window_ms": 3_599_999})), "malformed")
    resigned("count of zero", lambda g: dict(g, governance=dict(
        g["governance"], rules={"rule": "count", "min": 0, "window_ms": 3_600_000})),
        "malformed")
    resigned("an endpoint listed twice", lambda g: dict(g, founders=[
        dict(g["founders"][0], endpoints=["https://a.example.org"] * 2),
        *g["founders"][1:]]), "malformed")
    add("oversize", encoding.encode({"genesis": b"\x00" * (2 * 1024 * 1024), "sigs": {}}),
        "oversize")
    add("signed genesis with keys out of order", b"\x82\xa7genesis" + encoding.encode(
        doc["genesis"]) + b"\xa4sigs" + encoding.encode(sigs), "unsorted_keys")
    add("trailing bytes", ed.doc + b"\xc0", "trailing_bytes")
    return {"description": "Signed genesis documents, PROTOCOL.md §5.5.", "vectors": vectors}


# -- proofs.json -------------------------------------------------------------------------------


def proof_vectors(fed: Federation, kept: dict[str, bytes]) -> dict[str, Any]:
    history = [kept["ATL1"], kept["ATL2"]]
    a, b = kept["ATL3"], kept["ATL3-fork"]
    good = equivocation_proof(a, b)
    lo, hi = sorted((a, b), key=kept_id)
    vectors = [
        {"name": "ATL signed two events at #3", "input_hex": good.hex(), "expect": "valid",
         "author": "ATL", "seq": 3},
        {"name": "events in the wrong order", "expect": "not_equivocation",
         "input_hex": encoding.encode({"a": hi, "b": lo}).hex()},
        {"name": "the same event twice", "expect": "not_equivocation",
         "input_hex": encoding.encode({"a": a, "b": a}).hex()},
        {"name": "events at different sequences", "expect": "not_equivocation",
         "input_hex": equivocation_proof(kept["ATL2"], a).hex()},
        {"name": "one event's signature broken", "expect": "bad_signature",
         "input_hex": encoding.encode({"a": lo, "b": _break_sig(hi)}).hex()},
        {"name": "a third key", "expect": "malformed",
         "input_hex": encoding.encode({"a": lo, "b": hi, "c": b""}).hex()},
        {"name": "a as an array, not bin", "expect": "malformed",
         "input_hex": encoding.encode({"a": [lo], "b": hi}).hex()},
        {"name": "events of another federation", "expect": "wrong_federation",
         "input_hex": _foreign_proof(fed).hex()},
        {"name": "a non-member's events", "expect": "unknown_author",
         "input_hex": _stranger_proof(fed).hex()},
        {"name": "ahead of the chain the checker holds", "expect": "sequence_gap",
         "input_hex": equivocation_proof(
             fed.event("ATL", 5, bytes(32), "record", fed.record_body("p1")),
             fed.event("ATL", 5, bytes(32), "record", fed.record_body("p2"))).hex()},
        {"name": "oversize", "expect": "oversize",
         "input_hex": encoding.encode({"a": bytes(70000), "b": bytes(70000)}).hex()},
    ]
    return {"description": "Equivocation proofs, PROTOCOL.md §4.5. Accept history_hex first.",
            "genesis_hex": fed.doc.hex(), "history_hex": [h.hex() for h in history],
            "vectors": vectors}


def _foreign_proof(fed: Federation) -> bytes:
    other = Federation(fed.alg, members=("ATL", "BOR", "DUN"))
    return equivocation_proof(other.event("ATL", 1, None, "record", other.record_body("f1")),
                              other.event("ATL", 1, None, "record", other.record_body("f2")))


def _stranger_proof(fed: Federation) -> bytes:
    key = member_key(fed.alg, "stranger")
    return equivocation_proof(
        *(raw_envelope(dict(fed.payload_fields("ZZZ", 1, None), ts=T0 + i), key)
          for i in (1, 2)))


def _break_sig(envelope: bytes) -> bytes:
    env = encoding.decode(envelope)
    return encoding.encode({"sig": dict(env["sig"], ed25519=flip_bit(env["sig"]["ed25519"], 3)),
                            "event": env["event"]})


# -- disclosures.json ------------------------------------------------------------------------------


def disclosure_vectors(fed: Federation) -> dict[str, Any]:
    compiled = compile_record(example_record(), SaltStream("disclosures"))
    # An author bug, signed anyway: a digest over a value the template refuses.
    bad_value = encoding.encode([seed("bad salt")[:16], compiled.body["entries"][0]["id"],
                                 "phone", "call me maybe"])
    body = encoding.decode(encoding.encode(compiled.body))
    first = body["entries"][0]
    sd = first.setdefault("sd", {})
    sd["bilateral"] = sorted([*sd.get("bilateral", []), hashlib.sha256(bad_value).digest()])
    public_name = next(iter(first["fields"]))
    shadow = encoding.encode([seed("shadow salt")[:16], first["id"], public_name,
                              first["fields"][public_name]])
    stranger_field = encoding.encode([seed("stranger salt")[:16], first["id"], "fax",
                                      "+41225550199"])
    sd["members"] = sorted([*sd.get("members", []), hashlib.sha256(shadow).digest(),
                            hashlib.sha256(stranger_field).digest()])
    record = fed.event("ATL", 1, None, "record", body)
    Verifier(fed.genesis).check(record)
    vectors = [{"name": f"{d.entry}.{d.name} ({d.visibility})", "input_hex": d.raw.hex(),
                "expect": "valid", "visibility": d.visibility}
               for d in compiled.disclosures]
    d0 = compiled.disclosures[0]
    salt, entry, name, value = encoding.decode(d0.raw)
    other_entry = next(e["id"] for e in body["entries"] if e["id"] != entry)
    vectors += [
        {"name": "value changed", "expect": "disclosure_mismatch",
         "input_hex": encoding.encode([salt, entry, name, f"{value}x"
                                       if type(value) is str else "x"]).hex()},
        {"name": "salt changed", "expect": "disclosure_mismatch",
         "input_hex": encoding.encode([flip_bit(salt, 0), entry, name, value]).hex()},
        {"name": "moved to another entry", "expect": "disclosure_mismatch",
         "input_hex": encoding.encode([salt, other_entry, name, value]).hex()},
        {"name": "entry that does not exist", "expect": "disclosure_mismatch",
         "input_hex": encoding.encode([salt, "no-such-entry", name, value]).hex()},
        {"name": "salt of 15 bytes", "expect": "malformed",
         "input_hex": encoding.encode([salt[:15], entry, name, value]).hex()},
        {"name": "three elements", "expect": "malformed",
         "input_hex": encoding.encode([salt, entry, name]).hex()},
        {"name": "digest signed, but the value breaks the template", "expect": "invalid_body",
         "input_hex": bad_value.hex()},
        {"name": "digest signed for a field that is also public", "expect": "invalid_body",
         "input_hex": shadow.hex()},
        {"name": "digest signed for a name that is not a content field",
         "expect": "invalid_body", "input_hex": stranger_field.hex()},
        {"name": "oversize", "expect": "oversize",
         "input_hex": encoding.encode([salt, entry, "notes", "n" * 17000]).hex()},
        {"name": "non-canonical disclosure", "expect": "non_minimal",
         "input_hex": (b"\x94\xc5\x00\x10" + salt + d0.raw[19:]).hex()},
    ]
    return {"description": "Disclosures checked against an accepted record, PROTOCOL.md §6.4.",
            "genesis_hex": fed.doc.hex(), "record_hex": record.hex(), "vectors": vectors}


# -- requests.json, request-plaintexts.json, request-folds.json (§12) ----------------------------


def _fake_box(label: str, size: int) -> bytes:
    """A box of the right size: the shape rules of §12.2 look at sizes and order only, so
    these are deterministic bytes, not ciphertexts (HPKE is randomised)."""
    out = b""
    while len(out) < size:
        out += seed(f"{label}/{len(out)}")
    return out[:size]


def request_event_vectors(fed: Federation) -> dict[str, Any]:
    from pocnode.core.requests import PAD_SIZES, box_overhead

    overhead = box_overhead("x25519")
    small = sorted([_fake_box("a", overhead + PAD_SIZES[0]), _fake_box("b", overhead
                                                                         + PAD_SIZES[0])])
    large = sorted([_fake_box("c", overhead + PAD_SIZES[-1]), _fake_box("d", overhead
                                                                         + PAD_SIZES[-1])])
    body = {"suite": "x25519", "boxes": small}
    c = ChainBuilder(fed, "request events (shape)")
    for name, bad, code in [
        ("the suite is not the genesis's", {**body, "suite": "mlkem768-x25519"},
         "invalid_body"),
        ("one box only", {**body, "boxes": small[:1]}, "invalid_body"),
        ("boxes out of order", {**body, "boxes": [small[1], small[0]]}, "invalid_body"),
        ("the same box twice", {**body, "boxes": [small[0], small[0]]}, "invalid_body"),
        ("a box one byte short of a padded size", {**body, "boxes": [small[0][:-1],
                                                                     small[1][:-1]]},
         "invalid_body"),
        ("boxes of two sizes", {**body, "boxes": [small[0], large[0]]}, "invalid_body"),
        ("a box over the largest padded size", {**body, "boxes": [
            large[0] + b"\x00" * 512, large[1] + b"\x00" * 512]}, "oversize"),
        ("a recipient in clear", {**body, "to": "BOR"}, "invalid_body"),
    ]:
        c.step(name, fed.event("ATL", 1, None, "request", bad), code)
    first = c.step("two boxes of 512 padded bytes", fed.event("ATL", 1, None, "request", body),
                   "valid")
    c.step("two boxes of 24576 padded bytes", fed.event(
        "ATL", 2, parse_event(first).id, "request", {"suite": "x25519", "boxes": large}),
        "valid")
    record = {"sender": "ATL", "recipient": "BOR", "id": seed("rid")[:16], "scope": "metadata",
              "request": seed("request event"), "sent": T0 + MINUTE, "type": "ping",
              "urgency": "routine",
              "steps": [["delivered", seed("receipt"), T0 + 2 * MINUTE],
                        ["acknowledged", seed("ack"), T0 + 3 * MINUTE]]}
    with_content = {**record, "scope": "content", "content": {
        "subject": "Ping test", "text": "", "lang": "en", "answer": "Reached."}}
    p = ChainBuilder(fed, "request.publish events")
    for name, bad in [
        ("steps out of order", {"exchange": {**record, "steps": record["steps"][::-1]}}),
        ("sender and recipient the same", {"exchange": {**record, "recipient": "ATL"}}),
        ("content with scope metadata", {"exchange": {**record, "content":
                                                       with_content["content"]}}),
        ("scope content without content", {"exchange": {**record, "scope": "content"}}),
        ("an unknown type", {"exchange": {**record, "type": "gossip"}}),
        ("an id of 15 bytes", {"exchange": {**record, "id": record["id"][:15]}}),
        ("a key beside exchange", {"exchange": record, "note": "x"}),
        ("a publish step", {"exchange": {**record, "steps": [
            ["publish", seed("p"), T0]]}}),
    ]:
        p.step(name, fed.event("BOR", 1, None, "request.publish", bad), "invalid_body")
    p.step("a metadata record", fed.event("BOR", 1, None, "request.publish",
                                          {"exchange": record}), "valid")
    p.step("a content record", fed.event("ATL", 1, None, "request.publish",
                                         {"exchange": with_content}), "valid")
    return {"description": "Request events and published exchanges, PROTOCOL.md §12.2, "
                           "§12.6: shapes and signatures, as every verifier checks them (the "
                           "boxes are sized bytes, not ciphertexts: opening is the parties' "
                           "business).",
            "genesis_hex": fed.doc.hex(), "chains": [c.done(), p.done()]}


def _padded(msg: dict[str, Any], *, size: int | None = None, pad: bytes = b"") -> bytes:
    from pocnode.core.requests import PAD_SIZES

    body = encoding.encode(msg)
    head = len(body).to_bytes(4, "big") + body
    size = size or next(s for s in PAD_SIZES if s >= len(head))
    return head + pad + b"\x00" * (size - len(head) - len(pad))


def _frame_raw(body: bytes) -> bytes:
    head = len(body).to_bytes(4, "big") + body
    return head + b"\x00" * (512 - len(head))


def _request_msg(**over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"m": "request", "id": seed("request id")[:16], "to": "BOR",
                           "type": "information-request", "subject": "Phishing wave",
                           "text": "Do you see it too?", "urgency": "priority", "lang": "en"}
    msg.update(over)
    return {k: v for k, v in msg.items() if v is not None}


def _status_msg(**over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"m": "status", "to": "ATL", "sender": "ATL",
                           "id": seed("request id")[:16], "state": "acknowledged"}
    msg.update(over)
    return {k: v for k, v in msg.items() if v is not None}


def request_plaintext_vectors() -> dict[str, Any]:
    from pocnode.core.requests import parse_message

    full = _request_msg(reply_by=T0 + 3_600_000, attachments=[seed("file")],
                        ref=["ATL", seed("earlier")[:16]], from_entry="cert",
                        to_domain="technical", to_entry="duty", campaign="2026-06 ping")
    rows = [
        ("a request, the template's required fields", _padded(_request_msg()), "valid"),
        ("a request with every optional field", _padded(full), "valid"),
        ("a receipt", _padded(_status_msg(state="delivered")), "valid"),
        ("an answer", _padded(_status_msg(state="answered", text="Yes, since 02:00 UTC.")),
         "valid"),
        ("a decline without a reason", _padded(_status_msg(state="declined")), "valid"),
        ("a decline with a reason", _padded(_status_msg(state="declined", text="no")),
         "valid"),
        ("a consent to publish", _padded(_status_msg(state="publish", scope="content")),
         "valid"),
        ("padded to a larger size than needed", _padded(_request_msg(), size=2048), "valid"),
        ("8000 characters of text", _padded(_request_msg(text="t" * 8000)), "valid"),
        ("not a padded size", _padded(_request_msg(), size=600), "invalid_body"),
        ("padding not zero", _padded(_request_msg(), pad=b"\x01"), "invalid_body"),
        ("length beyond the plaintext", (10_000).to_bytes(4, "big") + b"\x00" * 508,
         "invalid_body"),
        ("a map that is not canonical (map 16 for 8 keys)", _frame_raw(
            b"\xde\x00\x08" + encoding.encode(_request_msg())[1:]), "invalid_body"),
        ("m unknown", _padded(_request_msg(m="note")), "invalid_body"),
        ("an unknown key", _padded(_request_msg(colour="red")), "invalid_body"),
        ("subject missing", _padded(_request_msg(subject=None)), "invalid_body"),
        ("an empty subject", _padded(_request_msg(subject="")), "invalid_body"),
        ("a subject of 201 characters", _padded(_request_msg(subject="s" * 201)), "oversize"),
        ("a text of 8001 characters", _padded(_request_msg(text="t" * 8001)), "oversize"),
        ("an unknown type", _padded(_request_msg(type="chat")), "invalid_body"),
        ("an unknown urgency", _padded(_request_msg(urgency="asap")), "invalid_body"),
        ("a language that is not a tag", _padded(_request_msg(lang="English")),
         "invalid_body"),
        ("an id of 15 bytes", _padded(_request_msg(id=seed("x")[:15])), "invalid_body"),
        ("to not a member id", _padded(_request_msg(to="bor")), "invalid_body"),
        ("an empty attachment list", _padded(_request_msg(attachments=[])), "invalid_body"),
        ("17 attachments", _padded(_request_msg(attachments=[seed(str(i)) for i in range(17)])),
         "invalid_body"),
        ("ref of one item", _padded(_request_msg(ref=["ATL"])), "invalid_body"),
        ("an unknown domain", _padded(_request_msg(to_domain="military")), "invalid_body"),
        ("reply_by negative", _padded(_request_msg(reply_by=-1)), "invalid_body"),
        ("an answer without text", _padded(_status_msg(state="answered")), "invalid_body"),
        ("text with an acknowledgement", _padded(_status_msg(text="ok")), "invalid_body"),
        ("publish without scope", _padded(_status_msg(state="publish")), "invalid_body"),
        ("scope without publish", _padded(_status_msg(scope="metadata")), "invalid_body"),
        ("an unknown state", _padded(_status_msg(state="read")), "invalid_body"),
        ("an answer of 8001 characters", _padded(_status_msg(state="answered",
                                                             text="a" * 8001)), "oversize"),
    ]
    vectors = []
    for name, raw, expect in rows:
        try:
            parse_message(raw)
            got = "valid"
        except PocError as exc:
            got = exc.code
        if got != expect:
            raise SystemExit(f"request plaintext {name}: meant {expect}, parser says {got}")
        vectors.append({"name": name, "input_hex": raw.hex(), "expect": expect})
    return {"description": "Request and status plaintexts once a box is opened, PROTOCOL.md "
                           "§12.3: framing, padding and every field rule.",
            "vectors": vectors}


class _Opened:
    """What §12.4 needs of the event that carried a plaintext."""

    def __init__(self, author: str, seq: int) -> None:
        self.author, self.seq, self.ts = author, seq, T0 + seq * MINUTE
        self.id = seed(f"event {author} {seq}")


def request_fold_vectors(fed: Federation) -> dict[str, Any]:
    """§12.4 as BOR's node applies it to plaintexts that opened under its key, in order."""
    import random

    from pocnode.core.consent import HpkeKey
    from pocnode.core.engine import Engine, EngineConfig
    from pocnode.core.requests import apply_opened

    engine = Engine(genesis=fed.genesis, member="BOR", key=fed.keys["BOR"],
                    config=EngineConfig(), rng=random.Random(1), random_bytes=seed,
                    hpke=HpkeKey.generate("x25519"))
    r1, r2, r9 = seed("r1")[:16], seed("r2")[:16], seed("r9")[:16]
    steps = [
        ("ATL's request to BOR", "ATL", _request_msg(id=r1), "valid"),
        ("ATL sends the same request id again", "ATL", _request_msg(id=r1, subject="again"),
         "replay"),
        ("CAL acknowledges ATL's request to BOR", "CAL",
         _status_msg(to="BOR", sender="ATL", id=r1, state="acknowledged"), "not_party"),
        ("CAL forges BOR's receipt", "CAL",
         _status_msg(to="BOR", sender="ATL", id=r1, state="delivered"), "not_party"),
        ("ATL acknowledges its own request", "ATL",
         _status_msg(to="BOR", sender="ATL", id=r1, state="acknowledged"), "not_party"),
        ("BOR's node's receipt", "BOR", _status_msg(to="ATL", sender="ATL", id=r1,
                                                    state="delivered"), "valid"),
        ("BOR's receipt again", "BOR", _status_msg(to="ATL", sender="ATL", id=r1,
                                                   state="delivered"), "replay"),
        ("BOR acknowledges", "BOR", _status_msg(to="ATL", sender="ATL", id=r1), "valid"),
        ("BOR's status told to CAL", "BOR", _status_msg(to="CAL", sender="ATL", id=r1,
                                                        state="answered", text="x"),
         "invalid_body"),
        ("BOR answers", "BOR", _status_msg(to="ATL", sender="ATL", id=r1, state="answered",
                                           text="Yes."), "valid"),
        ("BOR declines after answering", "BOR",
         _status_msg(to="ATL", sender="ATL", id=r1, state="declined"), "out_of_order"),
        ("ATL consents to publish", "ATL", _status_msg(to="BOR", sender="ATL", id=r1,
                                                       state="publish", scope="metadata"),
         "valid"),
        ("ATL consents to publish again", "ATL",
         _status_msg(to="BOR", sender="ATL", id=r1, state="publish", scope="content"),
         "replay"),
        ("CAL consents to publish ATL's request to BOR", "CAL",
         _status_msg(to="BOR", sender="ATL", id=r1, state="publish", scope="metadata"),
         "not_party"),
        ("a receipt for a request BOR never received", "ATL",
         _status_msg(to="BOR", sender="ATL", id=r9, state="publish", scope="metadata"),
         "unknown_request"),
        ("CAL's request to BOR", "CAL", _request_msg(id=r2, to="BOR"), "valid"),
        ("BOR answers CAL straight away", "BOR", _status_msg(to="CAL", sender="CAL", id=r2,
                                                             state="answered", text="ok"),
         "valid"),
        ("a step back: BOR acknowledges after answering", "BOR",
         _status_msg(to="CAL", sender="CAL", id=r2, state="acknowledged"), "out_of_order"),
        ("a request to a non-member", "ATL", _request_msg(id=seed("r3")[:16], to="ZZZ"),
         "ignored"),
        ("a request whose subject is too long", "ATL",
         _request_msg(id=seed("r4")[:16], subject="s" * 201), "oversize"),
    ]
    seqs: dict[str, int] = {}
    history: list[dict[str, Any]] = []
    vectors = []
    for name, author, msg, expect in steps:
        seqs[author] = seqs.get(author, 0) + 1
        raw = _padded(msg)
        before = (len(engine.requests.refusals), _book_state(engine))
        apply_opened(engine, _Opened(author, seqs[author]), raw, False)
        engine.requests.fresh.clear()
        if len(engine.requests.refusals) > before[0]:
            got = engine.requests.refusals[-1].code
        else:
            got = "valid" if _book_state(engine) != before[1] else "ignored"
        if got != expect:
            raise SystemExit(f"request fold {name}: meant {expect}, the node says {got}")
        row = {"name": name, "author": author, "input_hex": raw.hex()}
        if expect != "ignored":
            vectors.append({**row, "me": "BOR", "history": list(history), "expect": expect})
        history.append(row | {"seq": seqs[author]})
    return {"description": "PROTOCOL.md §12.4: what a party's node does with plaintexts that "
                           "opened under its key (here BOR's), each vector after its "
                           "history (author, plaintext, in order; the refused ones change "
                           "nothing). A request to a non-member, which opens for BOR but is "
                           "not about it, is in the history and ignored.",
            "genesis_hex": fed.doc.hex(), "vectors": vectors}


def _book_state(engine: Any) -> str:
    book = engine.requests
    return repr(sorted((k, [s.state for s in r.steps], sorted(r.publish))
                       for k, r in book.requests.items()))


# -- main ---------------------------------------------------------------------------------------


# -- bundle.json (§13.6): export bundles, audited ---------------------------------------------


def _bundle_history(fed: Federation) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """A small directory with everything a bundle holds: records, a key rotation,
    checkpoints and cosignatures, and an author (CAL) proven to have forked at #2.
    Returns (chain events in force, forked evidence, proofs)."""
    from pocnode.core import merkle, tlog

    keys = dict(fed.keys)
    v = Verifier(fed.genesis)
    events: list[bytes] = []

    def add(author: str, kind: str, body: dict[str, Any], key: SigningKey | None = None
            ) -> bytes:
        chain = v.chain(author)
        raw = fed.event(author, chain.seq + 1, chain.head_id, kind, body,
                        ts=T0 + (len(events) + 1) * MINUTE, key=key or keys[author])
        v.ingest(raw)
        events.append(raw)
        return raw

    def checkpoint(author: str) -> None:
        chain = v.chain(author)
        body = tlog.checkpoint_body(tlog.NoteSigner(keys[author]), fed.id, author,
                                    chain.seq, merkle.tree_hash(chain.ids),
                                    (T0 + (len(events) + 1) * MINUTE) // 1000)
        add(author, tlog.KIND_CHECKPOINT, body)

    def cosign(witness: str, logs: list[str]) -> None:
        signer = tlog.NoteSigner(keys[witness])
        ts = (T0 + (len(events) + 1) * MINUTE) // 1000
        entries = []
        for log in logs:
            cp = parse_event(events[max(i for i, e in enumerate(events)
                                        if parse_event(e).author == log
                                        and parse_event(e).kind == tlog.KIND_CHECKPOINT)])
            entries.append(tlog.cosign_entry(signer, fed.id, witness, log, cp.body["size"],
                                             cp.body["root"], ts))
        add(witness, tlog.KIND_COSIGN, {"key": signer.witness_keys.to_wire(),
                                        "cosigs": entries})

    add("ATL", "record", fed.record_body("bundle ATL 1"))
    add("BOR", "record", fed.record_body("bundle BOR 1"))
    rotated = member_key(fed.alg, f"{fed.alg}/ATL/bundle-rotation")
    add("ATL", "key.rotate", {"key": rotated.public_key.to_wire(), "reason": "vector"})
    keys["ATL"] = rotated
    add("ATL", "record", fed.record_body("bundle ATL 2"))
    checkpoint("ATL")
    checkpoint("BOR")
    cosign("BOR", ["ATL"])
    cosign("ATL", ["BOR"])
    checkpoint("BOR")
    add("CAL", "record", fed.record_body("bundle CAL 1"))
    # CAL's two histories from #2 on: this node held branch one, and proved the fork.
    cal1 = v.chain("CAL").head_id
    one = fed.event("CAL", 2, cal1, "record", fed.record_body("CAL branch one"),
                    ts=T0 + 50 * MINUTE)
    two = fed.event("CAL", 2, cal1, "record", fed.record_body("CAL branch two"),
                    ts=T0 + 51 * MINUTE)
    three = fed.event("CAL", 3, parse_event(one).id, "record",
                      fed.record_body("CAL branch one, later"), ts=T0 + 52 * MINUTE)
    return events, [one, three], [equivocation_proof(one, two)]


def _bundle_bytes(fed: Federation, events: list[bytes], forked: list[bytes],
                  proofs: list[bytes], *, mutate: Callable[[str, int, bytes], bytes] | None
                  = None, end: bool = True) -> bytes:
    from pocnode.core.bundle import BundleWriter

    w = BundleWriter()
    out = [w.header(fed.id, T0 + 100 * MINUTE, "ATL"), w.genesis(fed.doc)]
    mutate = mutate or (lambda kind, i, raw: raw)
    out += [w.event(mutate("event", i, e)) for i, e in enumerate(events)]
    out += [w.forked(mutate("forked", i, e)) for i, e in enumerate(forked)]
    out += [w.proof(mutate("proof", i, p)) for i, p in enumerate(proofs)]
    if end:
        out.append(w.end())
    return b"".join(out)


def bundle_vectors(fed: Federation) -> dict[str, Any]:
    from pocnode.core.audit import audit_bytes

    events, forked, proofs = _bundle_history(fed)
    vectors: list[dict[str, Any]] = []

    def vector(name: str, data: bytes, expect: str, record: int | None = None) -> None:
        report = audit_bytes(data)
        problems = report.problems + [p for m in report.members for p in m.problems]
        got = {"ok": "valid", "equivocation": "equivocated"}.get(report.status) \
            or problems[0].code
        if got != expect:
            raise SystemExit(f"bundle/{name}: meant {expect}, the auditor says {got}: "
                             f"{[p.text() for p in problems]}")
        row: dict[str, Any] = {"name": name, "input_hex": data.hex(), "expect": expect}
        if record is not None:
            where = problems[0].where
            assert where.startswith(f"bundle record {record} "), (name, where)
            row["record"] = record
        if expect in ("valid", "equivocated"):
            row["members"] = {m.member: {"events": m.events, "head_id_hex": m.head_id,
                                         "equivocated_at": m.frozen_at,
                                         "checkpoints": m.checkpoints,
                                         "witnesses": m.witnesses}
                              for m in report.members}
        vectors.append(row)

    vector("a directory with records, a rotation, checkpoints, cosignatures and a proven fork",
           _bundle_bytes(fed, events, forked, proofs), "equivocated")
    vector("the same directory before the fork", _bundle_bytes(fed, events, [], []), "valid")
    vector("an empty directory: the genesis alone", _bundle_bytes(fed, [], [], []), "valid")
    first_event = 2  # header 0, genesis 1
    vector("an event with one bit of its signature flipped", _bundle_bytes(
        fed, events, [], [], mutate=lambda k, i, raw: flip_bit(raw, len(raw) - 40)
        if k == "event" and i == 4 else raw), "bad_signature", first_event + 4)
    checkpoint_at = next(i for i, e in enumerate(events) if parse_event(e).kind == "checkpoint")
    def bad_note(k: str, i: int, raw: bytes) -> bytes:
        if k != "event" or i != checkpoint_at:
            return raw
        ev = parse_event(raw)  # ATL's first checkpoint, after its rotation
        body = dict(ev.body)
        body["sig"] = {"ed25519": flip_bit(body["sig"]["ed25519"], 10)}
        return fed.event("ATL", ev.seq, ev.prev, ev.kind, body, ts=ev.ts,
                         key=member_key(fed.alg, f"{fed.alg}/ATL/bundle-rotation"))

    vector("a checkpoint whose signed note does not verify, in a validly signed event",
           _bundle_bytes(fed, events, [], [], mutate=bad_note), "invalid_body",
           first_event + checkpoint_at)
    vector("an event left out: the next of its author is ahead of its chain", _bundle_bytes(
        fed, events[:2] + events[3:], [], []), "sequence_gap", first_event + 2)
    vector("a bundle without its end record", _bundle_bytes(fed, events, [], [], end=False),
           "truncated")
    vector("a proof that proves nothing", _bundle_bytes(
        fed, events, [], [encoding.encode({"a": events[0], "b": events[1]})]),
        "not_equivocation", first_event + len(events))
    header = bytes.fromhex(_bundle_bytes(fed, [], [], []).hex())
    future = header.replace(b"\xa1v\x01", b"\xa1v\x02", 1)
    vector("a bundle of a later version", future, "unsupported_version", 0)
    return {"description": "Export bundles (PROTOCOL.md §13.6) and what an audit of each "
                           "finds (§13.7): valid (everything verifies), equivocated (verifies, "
                           "with a proven fork), or the code of the first refusal and the "
                           "index of the record it is at. Valid ones carry, per member, the "
                           "chain in force.",
            "genesis_hex": fed.doc.hex(), "vectors": vectors}


# -- governance.json (§5.6-§5.10): applications, governance events, tallies ---------------------

HOUR = 3_600_000
GOV_RULES = {  # one rule type of §5.3 per decision, so that every type is exercised
    "admission": {"rule": "consensus", "window_ms": HOUR},
    "observer": {"rule": "silence", "window_ms": HOUR},
    "key_recovery": {"rule": "fraction", "num": 2, "den": 3, "window_ms": HOUR},
    "rules": {"rule": "count", "min": 3, "window_ms": HOUR},
}
GOV_NOW = T0 + 400 * 24 * HOUR  # the reference node's clock: after every event of the file


def gov_federation() -> Federation:
    return Federation(ED25519, ("ATL", "BOR", "CAL", "DUN"), governance=GOV_RULES,
                      name="Vector federation (governance)")


def applicant_key(member: str) -> SigningKey:
    return member_key(ED25519, f"governance/{member}")


def application_doc(fed: Federation, member: str = "NEW", *, role: str = "member",
                    key: SigningKey | None = None, set_fields: dict[str, Any] | None = None,
                    drop: tuple[str, ...] = (), sign_key: SigningKey | None = None,
                    domain: bytes = b"pocnode/v1/apply\x00") -> bytes:
    """A signed application (§5.6), valid unless the arguments say otherwise."""
    key = key or applicant_key(member)
    payload: dict[str, Any] = {
        "type": "pocnode/apply", "v": 1, "fed": fed.id, "role": role, "id": member,
        "name": f"State {member}", "key": key.public_key.to_wire(),
        "hpke": {"suite": "x25519", "pk": seed(f"governance hpke/{member}")},
        "endpoints": [f"https://pocnode.{member.lower()}.example.org:7443"],
        "ts": T0, "reference": f"note verbale 2026/{member}"}
    payload.update(set_fields or {})
    for name in drop:
        payload.pop(name)
    body = encoding.encode(payload)
    sig = (sign_key or key).sign(domain + body)
    return encoding.encode({"application": body, "sig": sig.to_wire()})


def application_vectors(fed: Federation) -> list[dict[str, Any]]:
    from pocnode.core.governance import parse_application

    vectors: list[dict[str, Any]] = []

    def add(name: str, data: bytes, expect: str) -> None:
        try:
            app = parse_application(data, fed=fed.id, sig_alg=fed.alg)
        except PocError as exc:
            got, app = exc.code, None
        else:
            got = "valid"
        if got != expect:
            raise SystemExit(f"governance application/{name}: meant {expect}, the reference "
                             f"says {got}")
        row: dict[str, Any] = {"name": name, "input_hex": data.hex(), "expect": expect}
        if app is not None:
            row.update(role=app.role, member=app.member, fingerprint=app.fingerprint())
        vectors.append(row)

    def doc(**kw: Any) -> bytes:
        return application_doc(fed, **kw)

    add("a member's application", doc(), "valid")
    add("an observer's application without a reference", doc(
        member="OBS", role="observer", drop=("reference",)), "valid")
    add("no endpoint, a name of 128 characters (not bytes)", doc(
        member="LONG-NAME", set_fields={"endpoints": [], "name": "É" * 128}), "valid")
    add("eight endpoints", doc(member="EIGHT", set_fields={
        "endpoints": [f"https://n{i}.eight.example.org" for i in range(8)]}), "valid")
    add("a reference of 256 characters", doc(set_fields={"reference": "r" * 256}), "valid")
    over = encoding.encode({"application": encoding.decode(doc())["application"],
                            "sig": encoding.decode(doc())["sig"], "x": b"\x00" * 16400})
    add("over 16,384 bytes", over, "oversize")
    good = encoding.decode(doc())
    add("keys of the document unsorted", b"\x82\xabapplication"
        + encoding.encode(good["application"]) + b"\xa3sig" + encoding.encode(good["sig"]),
        "unsorted_keys")
    add("a trailing byte", doc() + b"\x00", "trailing_bytes")
    add("the payload not canonical (uint16 for a small int)", encoding.encode(
        {"application": good["application"].replace(b"\xa1v\x01", b"\xa1v\xcd\x00\x01", 1),
         "sig": good["sig"]}), "non_minimal")
    add("an extra key beside application and sig", encoding.encode({**good, "x": 1}),
        "malformed")
    add("the payload as a map, not bin", encoding.encode(
        {"application": encoding.decode(good["application"]), "sig": good["sig"]}), "malformed")
    add("type pocnode/genesis", doc(set_fields={"type": "pocnode/genesis"}), "malformed")
    add("version 2", doc(set_fields={"v": 2}), "malformed")
    add("no hpke", doc(drop=("hpke",)), "malformed")
    add("an extra field", doc(set_fields={"expires": T0}), "malformed")
    add("role admin", doc(set_fields={"role": "admin"}), "malformed")
    add("a lower-case id", doc(set_fields={"id": "new"}), "malformed")
    add("an empty name", doc(set_fields={"name": ""}), "malformed")
    add("a name of 129 characters", doc(set_fields={"name": "n" * 129}), "malformed")
    small = {"ed25519": bytes([1]) + bytes(31)}
    add("a key of small order (§3.3.1)", doc(set_fields={"key": small}), "malformed")
    add("a key of the hybrid algorithm in an ed25519 federation", doc(
        set_fields={"key": member_key(HYBRID, "governance/hybrid").public_key.to_wire()}),
        "malformed")
    add("an HPKE key of 31 bytes", doc(set_fields={"hpke": {"suite": "x25519",
                                                            "pk": bytes(31)}}), "malformed")
    add("an http:// endpoint", doc(set_fields={"endpoints": ["http://new.example.org"]}),
        "malformed")
    add("one endpoint twice", doc(set_fields={"endpoints": ["https://a.example.org"] * 2}),
        "malformed")
    add("nine endpoints", doc(set_fields={
        "endpoints": [f"https://n{i}.example.org" for i in range(9)]}), "malformed")
    add("a negative ts", doc(set_fields={"ts": -1}), "malformed")
    add("ts as a bool", doc(set_fields={"ts": True}), "malformed")
    add("an empty reference", doc(set_fields={"reference": ""}), "malformed")
    add("a reference of 257 characters", doc(set_fields={"reference": "r" * 257}), "malformed")
    add("a signature map without alg", encoding.encode(
        {"application": good["application"], "sig": {"ed25519": good["sig"]["ed25519"]}}),
        "malformed")
    add("another federation's id", doc(set_fields={"fed": bytes(32)}), "wrong_federation")
    add("one bit of the signature flipped", encoding.encode(
        {"application": good["application"],
         "sig": dict(good["sig"], ed25519=flip_bit(good["sig"]["ed25519"], 3))}),
        "bad_signature")
    add("signed by a key other than the one it names", doc(sign_key=fed.keys["BOR"]),
        "bad_signature")
    add("signed as an event (the event domain), not as an application", doc(
        domain=EVENT_DOMAIN), "bad_signature")
    add("signed without the domain prefix", doc(domain=b""), "bad_signature")
    return vectors


class ReferenceNode:
    """The reference engine at a node of no member (an auditor's view of the federation):
    envelopes are ingested one at a time, and the few effects ingesting has are carried out
    in memory. Its verdicts and tallies are what the vectors expect."""

    def __init__(self, genesis: Any) -> None:
        import random

        from pocnode.core.engine import Engine, EngineConfig

        self.engine = Engine(genesis=genesis, member="AUDITOR",
                             key=member_key(ED25519, "governance/auditor"),
                             config=EngineConfig(), rng=random.Random(0),
                             random_bytes=lambda n: bytes(n), now=T0)
        self.store: dict[tuple[str, int], bytes] = {}

    def deliver(self, raw: bytes) -> str:
        result = self._run(self.engine.ingest([raw], source=None, now=GOV_NOW))
        if result.accepted:
            return "valid"
        if result.refused:
            return result.refused[0][0]
        if result.duplicates:
            return "duplicate"
        if result.pending:
            return "sequence_gap"
        if result.equivocations:
            return "equivocation"
        return "sequence_gap"  # already kept aside, ahead of its author's chain (§8.4)

    def _run(self, steps: Any) -> Any:
        from pocnode.core import engine as e

        value: Any = None
        while True:
            try:
                effect = steps.send(value)
            except StopIteration as stop:
                return stop.value
            value = None
            if isinstance(effect, e.Commit):
                for ev in effect.events:
                    self.store[(ev.author, ev.seq)] = ev.raw
            elif isinstance(effect, e.Spawn):
                effect.sequence.close()  # announces and pulls: no peer here
            elif isinstance(effect, e.ReadEvent):
                value = self.store.get((effect.author, effect.seq))
            elif isinstance(effect, e.ReadChain):
                value = [self.store[(effect.author, s)] for s in range(1, effect.upto + 1)
                         if (effect.author, s) in self.store]
            elif isinstance(effect, e.Cut):
                for k in [k for k in self.store if k[0] == effect.author and k[1] >= effect.seq]:
                    del self.store[k]
            elif isinstance(effect, e.EraseDisclosures):
                pass
            else:
                raise SystemExit(f"the reference node cannot carry out {effect!r}")


def _path(path: str | None) -> str | None:
    """A reference path in the form of §1.3: rooted at `event`; an application's own
    fields are named by the application as a whole."""
    if not path:
        return None
    if path.startswith("body"):
        return "event." + path
    if path.startswith("application"):
        return "event.body.application"
    return path


class GovChain:
    """One delivery sequence at the reference node: each step is an envelope and the
    verdict meant for it (the generator refuses to write one the reference disagrees
    with); the authors' chains are written as they go, so refused variants do not
    advance them."""

    def __init__(self, fed: Federation, name: str) -> None:
        self.fed = fed
        self.name = name
        self.node = ReferenceNode(fed.genesis)
        self.keys: dict[str, SigningKey] = dict(fed.keys)
        self.heads: dict[str, tuple[int, bytes | None]] = {}
        self.steps: list[dict[str, Any]] = []
        self.meant: dict[bytes, tuple[str, bool]] = {}
        self.codes: dict[tuple[bytes, str, int], str | None] = {}

    def key(self, author: str) -> SigningKey:
        if author not in self.keys:
            self.keys[author] = applicant_key(author)
        return self.keys[author]

    def write(self, author: str, kind: str, body: dict[str, Any], minute: int, *,
              key: SigningKey | None = None, keep: bool = True, seq: int | None = None
              ) -> bytes:
        """The author's next event (or, with ``seq``, one at that sequence)."""
        head_seq, head_id = self.heads.get(author, (0, None))
        raw = self.fed.event(author, seq or head_seq + 1, head_id, kind, body,
                             ts=T0 + minute * MINUTE, key=key or self.key(author))
        if keep:
            self.heads[author] = (head_seq + 1, parse_event(raw).id)
        return raw

    def deliver(self, name: str, raw: bytes, expect: str = "valid") -> bytes:
        got = self.node.deliver(raw)
        if got != expect:
            raise SystemExit(f"governance/{self.name}/{name}: meant {expect}, the reference "
                             f"says {got}")
        row: dict[str, Any] = {"name": name, "input_hex": raw.hex(), "expect": expect}
        if expect == "valid":
            row["event_id_hex"] = parse_event(raw).id.hex()
        elif expect == "invalid_body":
            from pocnode.core.chain import check_body

            try:
                check_body(parse_event(raw).kind, parse_event(raw).body, self.fed.genesis)
            except PocError as exc:
                path = _path(exc.path)
                if path:
                    row["path"] = path
        self.steps.append(row)
        return parse_event(raw).id

    def step(self, name: str, author: str, kind: str, body: dict[str, Any], minute: int,
             expect: str = "valid", **kw: Any) -> bytes:
        raw = self.write(author, kind, body, minute, keep=expect == "valid", **kw)
        self.deliver(name, raw, expect)
        return parse_event(raw).id

    # conveniences
    def propose(self, author: str, minute: int, decision: str, name: str = "",
                **body: Any) -> bytes:
        return self.step(name or f"{author} proposes ({decision})", author, "gov.propose",
                         {"decision": decision, **body}, minute)

    def vote(self, author: str, pid: bytes, vote: str, minute: int, expect: str = "valid",
             name: str = "") -> bytes:
        if vote == "object":
            return self.step(name or f"{author} objects", author, "gov.object",
                             {"proposal": pid}, minute, expect)
        return self.step(name or f"{author} votes {vote}", author, "gov.vote",
                         {"proposal": pid, "vote": vote}, minute, expect)

    def tick(self, author: str, seen: list[bytes], minute: int, name: str = "") -> bytes:
        return self.step(name or f"{author} ticks", author, "gov.tick", {"seen": seen}, minute)

    def outcome(self, pid: bytes, outcome: str, final: bool) -> None:
        self.meant[pid] = (outcome, final)

    def ballot(self, pid: bytes, member: str, seq: int, code: str | None) -> None:
        self.codes[(pid, member, seq)] = code

    def done(self) -> dict[str, Any]:
        proposals = proposal_table(self.node.engine.gov)
        held = {bytes.fromhex(p["id_hex"]): p for p in proposals}
        for pid, meant in self.meant.items():
            p = held.get(pid)
            if p is None or (p["outcome"], p["final"]) != meant:
                raise SystemExit(f"governance/{self.name}: proposal {pid.hex()[:16]} meant "
                                 f"{meant}, the reference says {p and (p['outcome'], p['final'])}")
        for (pid, member, seq), want in self.codes.items():
            got = [b["code"] for b in held[pid]["ballots"]
                   if (b["member"], b["seq"]) == (member, seq)]
            if got != [want]:
                raise SystemExit(f"governance/{self.name}: {member} #{seq} meant {want}, the "
                                 f"reference says {got}")
        return {"name": self.name, "steps": self.steps, "proposals": proposals}


def proposal_table(gov: Any) -> list[dict[str, Any]]:
    """Every proposal a node holds, tallied, as governance.json states it (§10)."""
    proposals = []
    for pid in sorted(gov.proposals, key=lambda i: (gov.proposals[i].ts, i)):
        p = gov.proposals[pid]
        ballots = sorted(list(p.ballots.values()) + p.extra_ballots,
                         key=lambda b: (b.member, b.seq))
        proposals.append({
            "id_hex": pid.hex(), "author": p.author, "decision": p.decision,
            "outcome": p.outcome, "final": p.final, "code": p.code,
            "rules_version": p.rules_version,
            "electorate": sorted(p.electorate) if p.electorate is not None else None,
            "ballots": [{"member": b.member, "seq": b.seq, "vote": b.vote,
                         "counted": b.counted, "code": b.code} for b in ballots]})
    return proposals


def _rules(**override: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {**GOV_RULES, **override}


def _sealed_boxes(label: str) -> dict[str, Any]:
    boxes = sorted(hashlib.sha256(f"{label}/{i}".encode()).digest() * 3 + bytes(16)
                   for i in range(2))
    return {"suite": "x25519", "boxes": boxes}


def gov_body_chain(fed: Federation) -> dict[str, Any]:
    """§5.7, §5.9: a valid event of every governance kind and decision, then bodies that
    break the rules one at a time (invalid_body, with the path the reference names), then a
    member that withdrew."""
    c = GovChain(fed, "every governance kind, its body rules, and a withdrawal")
    app = application_doc(fed, "NEW")
    p_adm = c.propose("ATL", 1, "admission", "ATL proposes to admit NEW", application=app,
                      note="sponsored by ATL; note verbale 2026/17")
    p_obs = c.propose("BOR", 2, "observer", "BOR proposes OBS as an observer",
                      application=application_doc(fed, "OBS", role="observer"))
    new_key = applicant_key("DUN/recovered").public_key.to_wire()
    p_kr = c.propose("CAL", 3, "key_recovery", "CAL proposes a key recovery for DUN",
                     subject="DUN", key=new_key, from_seq=1)
    p_rules = c.propose("DUN", 4, "rules", "DUN proposes new rules",
                        governance=_rules(admission={"rule": "fraction", "num": 3, "den": 4,
                                                     "window_ms": 2 * HOUR}))
    c.vote("ATL", p_rules, "yes", 5, name="ATL votes yes")
    c.vote("BOR", p_rules, "no", 6, name="BOR votes no")
    c.vote("CAL", p_rules, "abstain", 7, name="CAL votes abstain")
    c.vote("ATL", p_obs, "object", 8, name="ATL objects")
    c.tick("CAL", [p_adm, p_obs, p_kr, p_rules], 9, "CAL ticks four proposals")
    c.tick("BOR", [], 10, "BOR ticks nothing new")
    c.vote("BOR", seed("no such proposal"), "yes", 11,
           name="a vote on a proposal no node holds is a valid event")
    c.step("a tick of 64 ids", "DUN", "gov.tick",
           {"seen": [seed(f"seen/{i}") for i in range(64)]}, 12)
    c.step("a withdrawal without a reason", "BOR", "member.withdraw", {}, 13)
    bad: list[tuple[str, str, dict[str, Any]]] = [
        ("decision expulsion (none exists)", "gov.propose", {"decision": "expulsion"}),
        ("no decision", "gov.propose", {"application": app}),
        ("decision as bin", "gov.propose", {"decision": b"admission", "application": app}),
        ("an admission without its application", "gov.propose", {"decision": "admission"}),
        ("an admission with a subject too", "gov.propose",
         {"decision": "admission", "application": app, "subject": "NEW"}),
        ("an empty note", "gov.propose",
         {"decision": "admission", "application": app, "note": ""}),
        ("a note of 257 characters", "gov.propose",
         {"decision": "admission", "application": app, "note": "n" * 257}),
        ("the application as a map", "gov.propose",
         {"decision": "admission", "application": encoding.decode(app)}),
        ("an application whose signature does not verify", "gov.propose",
         {"decision": "admission", "application": encoding.encode(
             {**encoding.decode(app), "sig": {"alg": "ed25519", "ed25519": bytes(64)}})}),
        ("an application for another federation", "gov.propose",
         {"decision": "admission", "application": application_doc(
             fed, "NEW", set_fields={"fed": seed("another federation")})}),
        ("an application of the wrong shape", "gov.propose",
         {"decision": "admission", "application": application_doc(
             fed, "NEW", set_fields={"role": "admin"})}),
        ("an admission carrying an observer's application", "gov.propose",
         {"decision": "admission", "application": application_doc(fed, "OBS",
                                                                  role="observer")}),
        ("an observer decision carrying a member's application", "gov.propose",
         {"decision": "observer", "application": app}),
        ("a key recovery for a lower-case subject", "gov.propose",
         {"decision": "key_recovery", "subject": "dun", "key": new_key, "from_seq": 1}),
        ("a key recovery to a key of small order", "gov.propose",
         {"decision": "key_recovery", "subject": "DUN",
          "key": {"ed25519": bytes([1]) + bytes(31)}, "from_seq": 1}),
        ("a key recovery to a key with an alg field", "gov.propose",
         {"decision": "key_recovery", "subject": "DUN", "key": {**new_key, "alg": "ed25519"},
          "from_seq": 1}),
        ("a key recovery from sequence 0", "gov.propose",
         {"decision": "key_recovery", "subject": "DUN", "key": new_key, "from_seq": 0}),
        ("a key recovery whose from_seq is a str", "gov.propose",
         {"decision": "key_recovery", "subject": "DUN", "key": new_key, "from_seq": "1"}),
        ("a key recovery without from_seq", "gov.propose",
         {"decision": "key_recovery", "subject": "DUN", "key": new_key}),
        ("rules with a window of one second (not an exercise federation)", "gov.propose",
         {"decision": "rules", "governance": _rules(
             admission={"rule": "consensus", "window_ms": 1000})}),
        ("rules with a window of 367 days", "gov.propose",
         {"decision": "rules", "governance": _rules(
             admission={"rule": "consensus", "window_ms": 367 * 24 * HOUR})}),
        ("rules without the observer rule", "gov.propose",
         {"decision": "rules", "governance": {k: v for k, v in GOV_RULES.items()
                                              if k != "observer"}}),
        ("rules with num above den", "gov.propose",
         {"decision": "rules", "governance": _rules(
             key_recovery={"rule": "fraction", "num": 4, "den": 3, "window_ms": HOUR})}),
        ("rules with a count of 0", "gov.propose",
         {"decision": "rules", "governance": _rules(
             rules={"rule": "count", "min": 0, "window_ms": HOUR})}),
        ("rules of an unknown kind", "gov.propose",
         {"decision": "rules", "governance": _rules(
             rules={"rule": "majority", "window_ms": HOUR})}),
        ("a consensus rule with a min", "gov.propose",
         {"decision": "rules", "governance": _rules(
             admission={"rule": "consensus", "window_ms": HOUR, "min": 2})}),
        ("a vote maybe", "gov.vote", {"proposal": p_adm, "vote": "maybe"}),
        ("a vote Yes (votes are lower case)", "gov.vote", {"proposal": p_adm, "vote": "Yes"}),
        ("a vote object (objections are their own kind)", "gov.vote",
         {"proposal": p_adm, "vote": "object"}),
        ("a vote naming a proposal of 31 bytes", "gov.vote",
         {"proposal": p_adm[:31], "vote": "yes"}),
        ("a vote naming its proposal in hex", "gov.vote",
         {"proposal": p_adm.hex(), "vote": "yes"}),
        ("a vote without a vote", "gov.vote", {"proposal": p_adm}),
        ("a vote with a note", "gov.vote", {"proposal": p_adm, "vote": "yes", "note": "n"}),
        ("an objection with a vote", "gov.object", {"proposal": p_obs, "vote": "no"}),
        ("an objection naming a proposal of 33 bytes", "gov.object",
         {"proposal": p_obs + b"\x00"}),
        ("an objection without a proposal", "gov.object", {}),
        ("a tick of 65 ids", "gov.tick", {"seen": [seed(f"seen/{i}") for i in range(65)]}),
        ("a tick naming one id twice", "gov.tick", {"seen": [p_adm, p_obs, p_adm]}),
        ("a tick with an id of 31 bytes", "gov.tick", {"seen": [p_adm, p_obs[:31]]}),
        ("a tick whose seen is one bin", "gov.tick", {"seen": p_adm}),
        ("a tick with another key", "gov.tick", {"seen": [], "at": T0}),
        ("a tick without seen", "gov.tick", {}),
        ("a withdrawal with another key", "member.withdraw", {"reason": "r", "to": "ATL"}),
        ("a withdrawal with an empty reason", "member.withdraw", {"reason": ""}),
        ("a withdrawal with a reason of 257 characters", "member.withdraw",
         {"reason": "r" * 257}),
        ("a withdrawal whose reason is bin", "member.withdraw", {"reason": b"leaving"}),
    ]
    for i, (name, kind, body) in enumerate(bad):
        c.step(name, "ATL", kind, body, 20 + i, "invalid_body")
    withdrawal = c.write("DUN", "member.withdraw",
                         {"reason": "the government decided to leave the directory"}, 80)
    w = c.deliver("DUN withdraws", withdrawal)
    c.deliver("DUN's withdrawal again", withdrawal, "duplicate")
    c.step("DUN's record after its withdrawal", "DUN", "record", fed.record_body("late"), 81,
           "withdrawn")
    c.step("DUN's vote after its withdrawal", "DUN", "gov.vote",
           {"proposal": p_adm, "vote": "yes"}, 82, "withdrawn")
    c.step("DUN two sequences ahead: withdrawn is found before the gap", "DUN", "gov.tick",
           {"seen": []}, 83, "withdrawn", seq=c.heads["DUN"][0] + 2)
    c.step("DUN withdraws again", "DUN", "member.withdraw", {}, 84, "withdrawn")
    c.tick("ATL", [w], 85, "ATL ticks DUN's withdrawal")
    c.step("BOR, who withdrew, ticks", "BOR", "gov.tick", {"seen": [w]}, 86, "withdrawn")
    return c.done()


def _node_keys(member: str) -> dict[str, Any]:
    return {"tls": seed(f"governance tls/{member}"),
            "hpke": {"suite": "x25519", "pk": seed(f"governance hpke/{member}")}}


def gov_observer_chain(fed: Federation) -> dict[str, Any]:
    """§4.1 step 8, §5.6: an applicant writes nothing; an observer writes only node.keys,
    sealed and member.withdraw."""
    c = GovChain(fed, "an observer: admitted by silence, then what it may and may not write")
    c.step("OBS writes before it is admitted", "OBS", "node.keys", _node_keys("OBS"), 0,
           "unknown_author")
    p = c.propose("BOR", 1, "observer", "BOR proposes OBS as an observer",
                  application=application_doc(fed, "OBS", role="observer"))
    c.tick("ATL", [p], 2)
    c.tick("CAL", [p], 3)
    c.tick("DUN", [p], 4)
    c.tick("BOR", [p], 62, "BOR ticks once its window has ended")
    c.tick("ATL", [p], 63, "ATL ticks once its window has ended")
    c.tick("CAL", [p], 64, "CAL ticks once its window has ended")
    c.tick("DUN", [p], 65, "DUN ticks once its window has ended: no objection, OBS is in")
    c.outcome(p, "adopted", True)
    c.step("OBS publishes its node keys, signed by its application's key", "OBS",
           "node.keys", _node_keys("OBS"), 66)
    c.step("OBS writes a sealed consent message", "OBS", "sealed", _sealed_boxes("OBS"), 67)
    refused = [
        ("a record", "record", fed.record_body("observer")),
        ("a key rotation", "key.rotate", {"key": applicant_key("OBS/2").public_key.to_wire()}),
        ("a proposal", "gov.propose",
         {"decision": "admission", "application": application_doc(fed, "NEW")}),
        ("a vote", "gov.vote", {"proposal": p, "vote": "yes"}),
        ("an objection", "gov.object", {"proposal": p}),
        ("a tick", "gov.tick", {"seen": [p]}),
        ("a checkpoint (the kind is refused before its body is looked at)", "checkpoint", {}),
        ("a cosignature", "cosign", {}),
        ("a communication request", "request", {}),
        ("a publication", "request.publish", {}),
    ]
    for i, (name, kind, body) in enumerate(refused):
        c.step(f"OBS writes {name}", "OBS", kind, body, 68 + i, "kind_not_allowed")
    c.step("OBS's node keys signed by BOR's key", "OBS", "node.keys", _node_keys("OBS"), 80,
           "bad_signature", key=fed.keys["BOR"])
    c.step("OBS's node keys with a TLS pin of 31 bytes", "OBS", "node.keys",
           {"tls": bytes(31)}, 81, "invalid_body")
    c.step("OBS withdraws", "OBS", "member.withdraw", {"reason": "mandate ended"}, 82)
    c.step("OBS's node keys after its withdrawal", "OBS", "node.keys", _node_keys("OBS"), 83,
           "withdrawn")
    c.step("OBS's record after its withdrawal: the kind is refused first (step 8)", "OBS",
           "record", fed.record_body("observer"), 84, "kind_not_allowed")
    c.step("NEWX, never proposed, writes", "NEWX", "node.keys", _node_keys("NEWX"), 85,
           "unknown_author")
    return c.done()


def tally_consensus(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "consensus (admission): adopted by every member's yes; refusals at "
                      "verification, ballots that do not count, void proposals")
    p1 = c.propose("ATL", 1, "admission", "ATL proposes to admit NEW",
                   application=application_doc(fed, "NEW"))
    c.tick("BOR", [p1], 2)
    c.tick("CAL", [p1], 3)
    c.tick("DUN", [p1], 4)
    c.vote("ATL", p1, "yes", 5)
    bor_yes = c.write("BOR", "gov.vote", {"proposal": p1, "vote": "yes"}, 6)
    c.deliver("BOR votes yes", bor_yes)
    c.deliver("BOR's vote delivered again (a replay)", bor_yes, "duplicate")
    c.vote("BOR", p1, "no", 7, name="BOR votes again, no: its first ballot counts")
    c.ballot(p1, "BOR", 3, "double_vote")
    yes = {"proposal": p1, "vote": "yes"}
    c.step("CAL's yes signed by DUN's key (a forgery)", "CAL", "gov.vote", yes, 8,
           "bad_signature", key=fed.keys["DUN"])
    env = encoding.decode(c.write("CAL", "gov.vote", yes, 8, keep=False))
    c.deliver("CAL's yes with one bit of its signature flipped", encoding.encode(
        {"sig": dict(env["sig"], ed25519=flip_bit(env["sig"]["ed25519"], 7)),
         "event": env["event"]}), "bad_signature")
    c.step("a yes by ZZZ, no member", "ZZZ", "gov.vote", yes, 9, "unknown_author")
    c.vote("CAL", p1, "yes", 10)
    c.vote("DUN", p1, "yes", 11, name="DUN votes yes: every member has, NEW is admitted")
    c.outcome(p1, "adopted", True)
    c.step("NEW publishes its node keys, signed by its application's key", "NEW",
           "node.keys", _node_keys("NEW"), 12)
    c.vote("NEW", p1, "yes", 13, name="NEW votes on its own admission: not in its electorate")
    c.ballot(p1, "NEW", 2, "not_in_electorate")
    p2 = c.propose("NEW", 14, "admission", "NEW proposes before ticking its admission: its "
                   "own proposal's electorate does not hold it (not_a_member)",
                   application=application_doc(fed, "NEW3"))
    c.outcome(p2, "rejected", True)
    c.tick("NEW", [p1], 15, "NEW ticks its admission")
    p3 = c.propose("NEW", 16, "admission", "NEW proposes again: an electorate of five, "
                   "pending", application=application_doc(fed, "NEW3"))
    c.outcome(p3, "pending", False)
    p4 = c.propose("ATL", 17, "admission", "ATL proposes NEW again, under another key: the "
                   "id is in force (id_in_use)",
                   application=application_doc(fed, "NEW", key=applicant_key("NEW/second")))
    c.outcome(p4, "rejected", True)
    p5 = c.propose("ATL", 18, "admission", "ATL proposes TWIN, whose key is NEW's "
                   "(key_in_use)", application=application_doc(fed, "TWIN",
                                                            key=applicant_key("NEW")))
    c.outcome(p5, "rejected", True)
    return c.done()


def tally_consensus_rejected(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "consensus: one no rejects at once; ballots after the outcome is final")
    p = c.propose("ATL", 1, "admission", "ATL proposes to admit NEW2",
                  application=application_doc(fed, "NEW2"))
    c.vote("BOR", p, "no", 2, name="BOR votes no: rejected, final")
    c.vote("CAL", p, "yes", 3, name="CAL votes yes once the outcome is final")
    c.vote("DUN", p, "object", 4, name="DUN objects once the outcome is final")
    c.vote("ATL", p, "yes", 5, name="ATL votes yes once the outcome is final")
    c.outcome(p, "rejected", True)
    for member, seq in (("CAL", 1), ("DUN", 1), ("ATL", 2)):
        c.ballot(p, member, seq, "after_final")
    return c.done()


def tally_withdrawal(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "withdrawal: a ballot cast before leaving counts; after, the chain is "
                      "closed; a proposal whose basis holds the withdrawal leaves the member "
                      "out")
    p = c.propose("ATL", 1, "admission", "ATL proposes to admit NEW4",
                  application=application_doc(fed, "NEW4"))
    c.vote("DUN", p, "yes", 2)
    w = c.step("DUN withdraws", "DUN", "member.withdraw", {"reason": "leaving"}, 3)
    c.step("DUN votes again after its withdrawal", "DUN", "gov.vote",
           {"proposal": p, "vote": "no"}, 4, "withdrawn")
    c.vote("BOR", p, "yes", 5)
    c.vote("CAL", p, "yes", 6)
    c.vote("ATL", p, "yes", 7, name="ATL votes yes: all four of the electorate, DUN's "
                                    "earlier yes included: adopted")
    c.outcome(p, "adopted", True)
    c.tick("ATL", [w], 8, "ATL ticks DUN's withdrawal")
    p2 = c.propose("ATL", 9, "admission", "ATL proposes NEW5: its electorate is ATL, BOR, "
                   "CAL and NEW4", application=application_doc(fed, "NEW5"))
    c.vote("ATL", p2, "yes", 10)
    c.vote("BOR", p2, "yes", 11)
    c.vote("CAL", p2, "yes", 12)
    c.vote("NEW4", p2, "yes", 13, name="NEW4 votes yes: adopted")
    c.outcome(p2, "adopted", True)
    p3 = c.propose("BOR", 14, "admission", "BOR proposes NEW9, knowing nothing of DUN's "
                   "withdrawal: DUN, in its electorate, left and can never say yes: rejected",
                   application=application_doc(fed, "NEW9"))
    c.vote("ATL", p3, "yes", 15, name="ATL votes yes once the outcome is final")
    c.vote("BOR", p3, "yes", 16, name="BOR votes yes once the outcome is final")
    c.outcome(p3, "rejected", True)
    c.ballot(p3, "ATL", 6, "after_final")
    return c.done()


def tally_fraction(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "fraction 2/3 (key recovery): adopted at the third yes of four; ATL's "
                      "events from from_seq on leave its chain, and its lost key is refused")
    atl1 = c.step("ATL publishes its node keys", "ATL", "node.keys", _node_keys("ATL"), 1)
    new = applicant_key("ATL/recovered")
    p = c.propose("BOR", 2, "key_recovery", "BOR proposes a new key for ATL from its #2",
                  subject="ATL", key=new.public_key.to_wire(), from_seq=2)
    stolen = c.write("ATL", "record", fed.record_body("written with the lost key"), 3)
    c.deliver("ATL #2, written with the lost key before the decision", stolen)
    c.vote("BOR", p, "yes", 4)
    c.vote("CAL", p, "yes", 5, name="CAL votes yes: 2 of 4 is less than 2/3")
    c.vote("DUN", p, "yes", 6, name="DUN votes yes: 3 of 4, adopted")
    c.outcome(p, "adopted", True)
    c.heads["ATL"] = (1, atl1)  # the chain in force ends before from_seq
    c.step("ATL #2 signed with the lost key after the decision", "ATL", "record",
           fed.record_body("lost key, later"), 7, "bad_signature")
    c.deliver("the #2 written with the lost key, delivered again", stolen, "bad_signature")
    c.keys["ATL"] = new
    c.step("ATL #2 signed with the recovered key", "ATL", "node.keys", _node_keys("ATL"), 8)
    c.deliver("the #2 written with the lost key, once #2 is held again", stolen,
              "bad_signature")
    c.vote("ATL", p, "yes", 9, name="ATL votes yes once the outcome is final")
    c.ballot(p, "ATL", 3, "after_final")
    p2 = c.propose("BOR", 10, "key_recovery", "BOR proposes a new key for CAL",
                   subject="CAL", key=applicant_key("CAL/recovered").public_key.to_wire(),
                   from_seq=1)
    c.vote("ATL", p2, "no", 11)
    c.vote("DUN", p2, "no", 12, name="DUN votes no: 2 of 4 can no longer say yes, rejected")
    c.vote("BOR", p2, "yes", 13, name="BOR votes yes once the outcome is final")
    c.outcome(p2, "rejected", True)
    return c.done()


def tally_count(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "count 3 (rules): an amendment adopted; a proposal whose basis holds it "
                      "is tallied under rules version 2, one whose basis does not under "
                      "version 1")
    gov2 = _rules(admission={"rule": "fraction", "num": 1, "den": 2, "window_ms": HOUR})
    pr = c.propose("DUN", 1, "rules", "DUN proposes admission by half of the members",
                   governance=gov2)
    c.tick("ATL", [pr], 2, "ATL ticks the amendment")
    c.vote("ATL", pr, "yes", 3)
    c.vote("BOR", pr, "no", 4)
    c.vote("CAL", pr, "yes", 5)
    c.vote("DUN", pr, "yes", 6, name="DUN votes yes: three yes, adopted")
    c.outcome(pr, "adopted", True)
    pa = c.propose("ATL", 7, "admission", "ATL proposes NEW6 under the amended rules",
                   application=application_doc(fed, "NEW6"))
    c.vote("ATL", pa, "yes", 8)
    c.vote("CAL", pa, "yes", 9, name="CAL votes yes: two of four is half, adopted")
    c.outcome(pa, "adopted", True)
    pb = c.propose("BOR", 10, "admission", "BOR, whose vote is not a tick, proposes NEW7 "
                   "under the genesis rules", application=application_doc(fed, "NEW7"))
    c.vote("BOR", pb, "yes", 11)
    c.vote("ATL", pb, "yes", 12)
    c.outcome(pb, "pending", False)
    return c.done()


def tally_late(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "count 3 (rules): ballots stamped after the voter's window, a back-dated "
                      "one refused; rejected once three yes are out of reach")
    pr = c.propose("ATL", 1, "rules", "ATL proposes amendments by two members",
                   governance=_rules(rules={"rule": "count", "min": 2, "window_ms": HOUR}))
    c.vote("ATL", pr, "yes", 2)
    c.tick("BOR", [pr], 3, "BOR ticks: its window opens")
    c.tick("CAL", [pr], 4, "CAL ticks: its window opens")
    c.step("BOR publishes its node keys after its window", "BOR", "node.keys",
           _node_keys("BOR"), 70)
    c.step("BOR's yes back-dated into its window, after its later event", "BOR", "gov.vote",
           {"proposal": pr, "vote": "yes"}, 30, "timestamp_regression")
    c.vote("BOR", pr, "yes", 71, name="BOR's yes stamped after its window")
    c.ballot(pr, "BOR", 3, "vote_too_late")
    c.vote("CAL", pr, "yes", 72, name="CAL's yes after its window: rejected")
    c.ballot(pr, "CAL", 2, "vote_too_late")
    c.vote("DUN", pr, "yes", 73, name="DUN's yes, in its own window, after the outcome is "
                                      "final")
    c.ballot(pr, "DUN", 1, "after_final")
    c.outcome(pr, "rejected", True)
    return c.done()


def tally_window_edges(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "count 3 (rules): a window holds its last millisecond, both for a ballot "
                      "and for closing")
    pr = c.propose("ATL", 1, "rules", "ATL proposes amendments by two members",
                   governance=_rules(rules={"rule": "count", "min": 2, "window_ms": HOUR}))
    c.tick("BOR", [pr], 2, "BOR ticks: its window opens")
    c.tick("CAL", [pr], 3, "CAL ticks: its window opens")
    c.tick("DUN", [pr], 4, "DUN ticks: its window opens")
    c.vote("ATL", pr, "yes", 61, name="ATL votes yes in the last millisecond of its window")
    c.vote("BOR", pr, "yes", 62, name="BOR votes yes in the last millisecond of its window")
    c.step("CAL publishes its node keys in the last millisecond of its window: still open",
           "CAL", "node.keys", _node_keys("CAL"), 63)
    c.step("DUN publishes its node keys after its window: closed", "DUN", "node.keys",
           _node_keys("DUN"), 70)
    c.vote("CAL", pr, "yes", 63, name="CAL votes yes, stamped as its previous event and as "
                                      "its window's end: three yes, adopted")
    c.outcome(pr, "adopted", True)
    return c.done()


def tally_silence(fed: Federation) -> list[dict[str, Any]]:
    c = GovChain(fed, "silence (observer): adopted once every member's window has passed "
                      "with no objection; a yes is the wrong kind of ballot")
    p = c.propose("BOR", 1, "observer", "BOR proposes OBS2 as an observer",
                  application=application_doc(fed, "OBS2", role="observer"))
    c.vote("ATL", p, "yes", 2, name="ATL votes yes: under silence only objections count")
    c.ballot(p, "ATL", 1, "wrong_vote_kind")
    c.tick("CAL", [p], 3)
    c.tick("DUN", [p], 4)
    c.tick("BOR", [p], 62, "BOR ticks once its window has ended")
    c.tick("ATL", [p], 63, "ATL ticks once its window has ended")
    c.tick("CAL", [p], 64, "CAL ticks once its window has ended")
    c.tick("DUN", [p], 65, "DUN ticks once its window has ended: adopted")
    c.outcome(p, "adopted", True)
    c.step("OBS2 publishes its node keys", "OBS2", "node.keys", _node_keys("OBS2"), 66)
    r = GovChain(fed, "silence (observer): one objection rejects at once")
    q = r.propose("BOR", 1, "observer", "BOR proposes OBS3 as an observer",
                  application=application_doc(fed, "OBS3", role="observer"))
    r.vote("CAL", q, "object", 2, name="CAL objects: rejected, final")
    r.vote("DUN", q, "object", 3, name="DUN objects once the outcome is final")
    r.ballot(q, "DUN", 1, "after_final")
    r.vote("ATL", q, "no", 4, name="ATL votes no: the wrong kind, whenever it arrives")
    r.ballot(q, "ATL", 1, "wrong_vote_kind")
    r.outcome(q, "rejected", True)
    r.step("OBS3 writes: it was not admitted", "OBS3", "node.keys", _node_keys("OBS3"), 5,
           "unknown_author")
    return [c.done(), r.done()]


def tally_void(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "void proposals: an id or a key in force, a subject outside the "
                      "electorate")
    p1 = c.propose("ATL", 1, "admission", "ATL proposes to admit BOR, a founder (id_in_use)",
                   application=application_doc(fed, "BOR", key=applicant_key("BOR/second")))
    p2 = c.propose("ATL", 2, "admission", "ATL proposes TWIN, whose key is CAL's "
                   "(key_in_use)", application=application_doc(fed, "TWIN", key=fed.keys["CAL"]))
    p3 = c.propose("BOR", 3, "observer", "BOR proposes DUN, a member, as an observer "
                   "(id_in_use)", application=application_doc(
                       fed, "DUN", role="observer", key=applicant_key("DUN/observer")))
    p4 = c.propose("BOR", 4, "key_recovery", "BOR proposes a key recovery for ZZZ, no member "
                   "(not_a_member)", subject="ZZZ",
                   key=applicant_key("ZZZ").public_key.to_wire(), from_seq=1)
    c.vote("CAL", p1, "yes", 5, name="CAL votes yes on a void proposal, final already")
    c.ballot(p1, "CAL", 1, "after_final")
    for p in (p1, p2, p3, p4):
        c.outcome(p, "rejected", True)
    return c.done()


def tally_basis(fed: Federation) -> dict[str, Any]:
    c = GovChain(fed, "a proposal waits for the decisions of its basis; an admission there "
                      "enlarges its electorate")
    p1 = c.propose("ATL", 1, "admission", "ATL proposes to admit NEWA",
                   application=application_doc(fed, "NEWA"))
    c.tick("BOR", [p1], 2, "BOR ticks ATL's proposal")
    p2 = c.propose("BOR", 3, "admission", "BOR proposes NEWB: ATL's proposal is in its basis",
                   application=application_doc(fed, "NEWB"))
    c.vote("ATL", p2, "yes", 4)
    c.vote("BOR", p2, "yes", 5)
    c.vote("CAL", p2, "yes", 6)
    c.vote("DUN", p2, "yes", 7, name="DUN votes yes on NEWB: four yes, but it waits")
    c.vote("ATL", p1, "yes", 8)
    c.vote("BOR", p1, "yes", 9)
    c.vote("CAL", p1, "yes", 10)
    c.vote("DUN", p1, "yes", 11, name="DUN votes yes on NEWA: adopted; NEWB's electorate is "
                                      "five")
    c.outcome(p1, "adopted", True)
    c.step("NEWA publishes its node keys", "NEWA", "node.keys", _node_keys("NEWA"), 12)
    c.vote("NEWA", p2, "yes", 13, name="NEWA votes yes on NEWB: all five, adopted")
    c.outcome(p2, "adopted", True)
    px = c.propose("ATL", 14, "admission", "ATL proposes to admit NEWC",
                   application=application_doc(fed, "NEWC"))
    c.tick("DUN", [px], 15, "DUN ticks ATL's proposal")
    py = c.propose("DUN", 16, "observer", "DUN proposes OBS4: waits for NEWC's decision",
                   application=application_doc(fed, "OBS4", role="observer"))
    c.outcome(px, "pending", False)
    c.outcome(py, "pending", False)
    return c.done()


def tally_orders(fed: Federation) -> list[dict[str, Any]]:
    """The same events in three orders of delivery: the same outcome; a ballot that arrives
    once the outcome is final is shown as such."""
    w = GovChain(fed, "writer")
    prop = w.write("DUN", "gov.propose", {"decision": "rules", "governance": _rules(
        observer={"rule": "consensus", "window_ms": HOUR})}, 1)
    pid = parse_event(prop).id
    votes = {m: w.write(m, "gov.vote", {"proposal": pid, "vote": v}, minute)
             for m, v, minute in (("ATL", "yes", 2), ("BOR", "no", 3), ("CAL", "yes", 4),
                                  ("DUN", "yes", 5))}
    names = {prop: "DUN proposes observers by consensus (count 3)"}
    names.update({raw: f"{m} votes {encoding.decode(encoding.decode(raw)['event'])['body']['vote']}"
                  for m, raw in votes.items()})
    out = []
    for title, order, late in (
            ("in the order written", [prop, *votes.values()], None),
            ("the votes before the proposal", [votes["ATL"], votes["BOR"], votes["CAL"], prop,
                                               votes["DUN"]], None),
            ("BOR's no after the third yes", [prop, votes["ATL"], votes["CAL"], votes["DUN"],
                                               votes["BOR"]], "BOR")):
        c = GovChain(fed, f"count 3 (rules), delivered {title}: adopted")
        for raw in order:
            c.deliver(names[raw], raw)
        c.outcome(pid, "adopted", True)
        if late:
            c.ballot(pid, late, 1, "after_final")
        out.append(c.done())
    return out


def governance_vectors() -> dict[str, Any]:
    fed = gov_federation()
    chains = [gov_body_chain(fed), gov_observer_chain(fed), tally_consensus(fed),
              tally_consensus_rejected(fed), tally_withdrawal(fed), tally_fraction(fed),
              tally_count(fed), tally_late(fed), tally_window_edges(fed),
              *tally_silence(fed), tally_void(fed),
              tally_basis(fed), *tally_orders(fed)]
    return {"description": "Governance, PROTOCOL.md §5.6-§5.10, on one federation (genesis_hex: "
                           "ATL, BOR, CAL, DUN; admission by consensus, observers by silence, "
                           "key recovery by 2/3, rules by a count of 3; windows of an hour). "
                           "`applications`: signed applications checked as §5.6 says. "
                           "`chains`: envelopes delivered in order to one fresh node, each "
                           "step judged by §4.1 (with the membership governance decides), "
                           "then `proposals`: every proposal the node holds, tallied (§5.8).",
            "genesis_hex": fed.doc.hex(), "applications": application_vectors(fed),
            "chains": chains}


def generate() -> dict[str, dict[str, Any]]:
    ed, hybrid = Federation(ED25519), Federation(HYBRID)
    ed_events, kept = events_vectors(ed)
    hybrid_events, _ = events_vectors(hybrid)
    return {
        "encoding.json": encoding_vectors(),
        "genesis.json": genesis_vectors(ed, hybrid),
        "events-ed25519.json": ed_events,
        "events-hybrid.json": hybrid_events,
        "proofs.json": proof_vectors(ed, kept),
        "sealed.json": sealed_vectors(ed),
        "disclosures.json": disclosure_vectors(ed),
        "bundle.json": bundle_vectors(Federation(ED25519)),
        "requests.json": request_event_vectors(ed),
        "request-plaintexts.json": request_plaintext_vectors(),
        "request-folds.json": request_fold_vectors(ed),
        "governance.json": governance_vectors(),
    }


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def _verdicts(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = [s for c in doc["chains"] for s in c["steps"]] if "chains" in doc else doc["vectors"]
    rows = doc.get("applications", []) + rows
    return [(r["name"], r["expect"], r.get("event_id_hex"), r.get("federation_id_hex"))
            for r in rows]


def _same(name: str, doc: dict[str, Any]) -> bool:
    """Byte-equal where generation is deterministic; where ML-DSA's hedged signatures make
    it random (any file holding a hybrid federation), equal names, verdicts and ids."""
    committed = (VECTOR_DIR / name).read_text()
    if name == "sealed.json":  # HPKE is randomised: even event ids change
        return ([r[:2] for r in _verdicts(json.loads(committed))]
                == [r[:2] for r in _verdicts(doc)])
    if name in ("genesis.json", "events-ed25519.json", "events-hybrid.json"):
        return _verdicts(json.loads(committed)) == _verdicts(doc)
    return committed == dump(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--only", metavar="FILE", action="append",
                        help="write only this file (hybrid signatures change at every run)")
    args = parser.parse_args()
    files = generate()
    if args.only:
        files = {name: doc for name, doc in files.items() if name in args.only}
    if args.check:
        stale = [n for n, doc in files.items() if not _same(n, doc)]
        for name in stale:
            print(f"stale: protocol/vectors/{name}")
        return 1 if stale else 0
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for name, doc in files.items():
        (VECTOR_DIR / name).write_text(dump(doc))
        count = sum(len(c["steps"]) for c in doc["chains"]) if "chains" in doc \
            else len(doc["vectors"])
        count += len(doc.get("applications", []))
        print(f"wrote protocol/vectors/{name}: {count} vectors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
