"""PROTOCOL.md §13 for the independent verifier: checkpoints, cosignatures, export bundles.

Written from §13 and the C2SP texts it cites (signed-note, tlog-checkpoint,
tlog-cosignature) and RFC 6962, not from pocnode/: Merkle hashes by the recursive
definition, signed notes parsed and verified here, Ed25519 through independent.py's
§3.3.1 checks and PyNaCl, ML-DSA-44 through dilithium-py, msgpack through independent.py's
own decoder. Importing this module registers the two kinds with independent.py's verifier.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from dilithium_py.ml_dsa import ML_DSA_44

from tests.conformance import independent as ind
from tests.conformance.independent import ProtocolError

I63 = 2**63
EVENT_LIMIT = 65_536
GENESIS_LIMIT = 2_097_152
PROOF_LIMIT = 131_136
RECORD_LIMIT = GENESIS_LIMIT + 64


# -- RFC 6962 §2.1 ---------------------------------------------------------------------------
def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


# -- names (§13.3) and C2SP signatures -------------------------------------------------------
def origin(fed: bytes, member: str) -> str:
    return f"pocnode/{fed.hex()}/{member}"


def witness_name(fed: bytes, member: str) -> str:
    return f"pocnode/{fed.hex()}/{member}/witness"


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def checkpoint_text(name: str, size: int, root: bytes) -> str:
    return f"{name}\n{size}\n{base64.b64encode(root).decode()}\n"


def subtree_message(cosigner: str, t: int, log: str, size: int, root: bytes) -> bytes:
    c, o = cosigner.encode(), log.encode()
    return (b"subtree/v1\n\x00" + bytes([len(c)]) + c + struct.pack(">Q", t)
            + bytes([len(o)]) + o + struct.pack(">QQ", 0, size) + root)


def ml44_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        return bool(ML_DSA_44.verify(public, message, signature, ctx=b""))
    except ValueError:
        return False


def verify_typed(sig_type: int, name: str, public: bytes, text: str, sig: bytes) -> bool:
    """One note signature (after its key id) of type 0x01, 0x04 or 0x06 on a checkpoint."""
    if sig_type == 0x01:
        return len(sig) == 64 and ind.ed25519_verify(public, text.encode(), sig)
    t = int.from_bytes(sig[:8], "big")
    if sig_type == 0x04:
        msg = f"cosignature/v1\ntime {t}\n{text}".encode()
        return len(sig) == 72 and t < I63 and ind.ed25519_verify(public, msg, sig[8:])
    if sig_type == 0x06:
        log, size, root = text.split("\n")[:3]
        msg = subtree_message(name, t, log, int(size), base64.b64decode(root))
        return len(sig) == 8 + 2420 and t < I63 and ml44_verify(public, msg, sig[8:])
    return False


def verify_note(note: str, vkeys: list[str]) -> int:
    """signed-note verification: the number of signatures from the given verifier keys that
    verify; raises if one from a known key fails, or if none verifies."""
    if any(ord(ch) < 0x20 and ch != "\n" for ch in note):
        raise ValueError("control character in a note")
    cut = note.rindex("\n\n")
    text, lines = note[:cut + 1], note[cut + 2:].split("\n")
    assert lines[-1] == "", "a note ends with a newline"
    known = {}
    for vkey in vkeys:
        name, hex_id, b64 = vkey.split("+", 2)
        raw = base64.b64decode(b64)
        assert key_id(name, raw[0], raw[1:]).hex() == hex_id
        known[(name, bytes.fromhex(hex_id))] = (raw[0], raw[1:])
    good = 0
    for line in lines[:-1]:
        dash, name, b64 = line.split(" ")
        assert dash == "\u2014"
        blob = base64.b64decode(b64, validate=True)
        entry = known.get((name, blob[:4]))
        if entry is None:
            continue  # signatures from unknown keys are ignored
        if not verify_typed(entry[0], name, entry[1], text, blob[4:]):
            raise ValueError(f"signature of {name} does not verify")
        good += 1
    if not good:
        raise ValueError("no signature from a known key")
    return good


# -- the kinds (§13.4) -----------------------------------------------------------------------
def _invalid(path: str, detail: str = "") -> ProtocolError:
    return ProtocolError("invalid_body", path, detail)


def _parts(alg: str) -> set[str]:
    return {"ed25519", "mldsa44"} if alg == "ed25519+mldsa65" else {"ed25519"}


def _note_key(v: Any, alg: str, path: str) -> dict[str, bytes]:
    if not ind.is_map(v) or set(v) != _parts(alg):
        raise _invalid(path)
    if not ind.is_bin(v["ed25519"], 32) or not ind.ed25519_public_key_ok(v["ed25519"]):
        raise _invalid(f"{path}.ed25519")
    if "mldsa44" in v and not ind.is_bin(v["mldsa44"], 1312):
        raise _invalid(f"{path}.mldsa44")
    return v


def _sig(v: Any, alg: str, sizes: dict[str, int], path: str) -> dict[str, bytes]:
    if not ind.is_map(v) or set(v) != _parts(alg):
        raise _invalid(path)
    for part in v:
        if not ind.is_bin(v[part], sizes[part]):
            raise _invalid(f"{path}.{part}")
    return v


def _times(sig: dict[str, bytes], parts: tuple[str, ...], ev: ind.Event, path: str) -> None:
    for part in parts:
        if part in sig and int.from_bytes(sig[part][:8], "big") > ev.ts // 1000:
            raise _invalid(f"{path}.{part}", "signature time after the event's")


def check_checkpoint(v: ind.Verifier, ev: ind.Event, state: ind.ChainState) -> None:
    body, alg, fed = ev.body, v.genesis.sig_alg, v.genesis.federation_id
    if set(body) != {"size", "root", "key", "sig"}:
        raise _invalid("event.body")
    size, root = body["size"], body["root"]
    if not ind.is_int(size) or not 0 <= size < I63:
        raise _invalid("event.body.size")
    if not ind.is_bin(root, 32):
        raise _invalid("event.body.root")
    key = _note_key(body["key"], alg, "event.body.key")
    sig = _sig(body["sig"], alg, {"ed25519": 64, "mldsa44": 8 + 2420}, "event.body.sig")
    if size != ev.seq - 1:
        raise _invalid("event.body.size", "a checkpoint at seq n is of size n - 1")
    if root != mth(state.ids[:size]):
        raise _invalid("event.body.root", "not the chain's tree hash")
    _times(sig, ("mldsa44",), ev, "event.body.sig")
    name = origin(fed, ev.author)
    text = checkpoint_text(name, size, root)
    if not verify_typed(0x01, name, key["ed25519"], text, sig["ed25519"]):
        raise _invalid("event.body.sig", "the log's Ed25519 note signature")
    if "mldsa44" in sig and not verify_typed(0x06, name, key["mldsa44"], text, sig["mldsa44"]):
        raise _invalid("event.body.sig", "the log's ML-DSA-44 note signature")


def check_cosign(v: ind.Verifier, ev: ind.Event, state: ind.ChainState) -> None:
    body, alg, fed = ev.body, v.genesis.sig_alg, v.genesis.federation_id
    if set(body) != {"key", "cosigs"}:
        raise _invalid("event.body")
    key = _note_key(body["key"], alg, "event.body.key")
    cosigs = body["cosigs"]
    if not ind.is_array(cosigs) or not 1 <= len(cosigs) <= 256:
        raise _invalid("event.body.cosigs")
    name = witness_name(fed, ev.author)
    last: tuple[int, bytes] | None = None
    for i, c in enumerate(cosigs):
        path = f"event.body.cosigs[{i}]"
        if not ind.is_map(c) or set(c) != {"log", "size", "root", "sig"}:
            raise _invalid(path)
        log = c["log"]
        if not ind.is_member_id(log):
            raise _invalid(f"{path}.log")
        order = (len(log.encode()), log.encode())
        if last is not None and order <= last:
            raise _invalid(f"{path}.log", "logs sorted, each once")
        last = order
        if not ind.is_int(c["size"]) or not 1 <= c["size"] < I63:
            raise _invalid(f"{path}.size")
        if not ind.is_bin(c["root"], 32):
            raise _invalid(f"{path}.root")
        sig = _sig(c["sig"], alg, {"ed25519": 72, "mldsa44": 8 + 2420}, f"{path}.sig")
        if log == ev.author or v.genesis.member_key(log) is None:
            raise _invalid(f"{path}.log", "another member's log")
        _times(sig, ("ed25519", "mldsa44"), ev, f"{path}.sig")
        text = checkpoint_text(origin(fed, log), c["size"], c["root"])
        if not verify_typed(0x04, name, key["ed25519"], text, sig["ed25519"]):
            raise _invalid(f"{path}.sig", "Ed25519 cosignature")
        if "mldsa44" in sig and not verify_typed(0x06, name, key["mldsa44"], text,
                                                 sig["mldsa44"]):
            raise _invalid(f"{path}.sig", "ML-DSA-44 cosignature")


ind.EXTRA_KINDS["checkpoint"] = check_checkpoint
ind.EXTRA_KINDS["cosign"] = check_cosign


# -- bundles (§13.6) and their audit (§13.7) ------------------------------------------------
ORDER = {"genesis": 1, "event": 2, "forked": 3, "proof": 4, "end": 5}
FIELD = {"genesis": "genesis", "event": "event", "forked": "event", "proof": "proof"}
LIMIT = {"genesis": GENESIS_LIMIT, "event": EVENT_LIMIT, "forked": EVENT_LIMIT,
         "proof": PROOF_LIMIT}


@dataclass
class Audit:
    verdict: str = "valid"
    record: int | None = None
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per log: its latest checkpoint (size, root, key) and witnesses' latest (size, root)
    notes: dict[str, str] = field(default_factory=dict)
    vkeys: dict[str, list[str]] = field(default_factory=dict)


def _records(data: bytes) -> list[tuple[int, Any]]:
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise ProtocolError("truncated", f"record {len(out)}")
        n = int.from_bytes(data[pos:pos + 4], "big")
        if n > RECORD_LIMIT:
            raise ProtocolError("oversize", f"record {len(out)}")
        if len(data) - pos - 4 < n:
            raise ProtocolError("truncated", f"record {len(out)}")
        try:
            out.append((len(out), ind.decode(data[pos + 4:pos + 4 + n], RECORD_LIMIT)))
        except ProtocolError as exc:
            raise ProtocolError(exc.code, f"record {len(out)}") from None
        pos += 4 + n
    return out


def audit_bundle(data: bytes) -> Audit:
    """The first refusal (code and record index), or valid / equivocated with the chains."""
    result = Audit()
    try:
        _audit(data, result)
    except _Stop as stop:
        result.verdict, result.record = stop.code, stop.record
    return result


class _Stop(Exception):
    def __init__(self, code: str, record: int | None) -> None:
        self.code, self.record = code, record


def _audit(data: bytes, result: Audit) -> None:
    try:
        records = _records(data)
    except ProtocolError as exc:
        raise _Stop(exc.code, None) from None
    if not records:
        raise _Stop("truncated", None)
    i, head = records[0]
    if not ind.is_map(head) or head.get("type") != "pocnode/bundle" \
            or not ind.is_int(head.get("v")):
        raise _Stop("malformed", 0)
    if head["v"] != 1:
        raise _Stop("unsupported_version", 0)
    if set(head) != {"type", "v", "fed", "created", "source"} or not ind.is_bin(head["fed"], 32):
        raise _Stop("malformed", 0)
    stage, verifier, ended = 0, None, False
    branches: dict[str, ind.Verifier] = {}
    frozen: dict[str, int] = {}
    latest_cp: dict[str, tuple[int, bytes, dict[str, bytes], dict[str, bytes]]] = {}
    cosigs: dict[str, dict[str, tuple[int, bytes, dict[str, bytes], dict[str, bytes]]]] = {}
    for i, rec in records[1:]:
        if ended:
            raise _Stop("trailing_bytes", i)
        kind = rec.get("t") if ind.is_map(rec) else None
        if kind not in ORDER or ORDER[kind] < stage or (kind == "genesis" and stage == 1) \
                or (ORDER[kind] > 1 and stage < 1):
            raise _Stop("malformed", i)
        stage = ORDER[kind]
        if kind == "end":
            if set(rec) != {"t", "records"} or rec["records"] != i:
                raise _Stop("truncated" if set(rec) == {"t", "records"} else "malformed", i)
            ended = True
            continue
        name = FIELD[kind]
        if set(rec) != {"t", name} or not ind.is_bin(rec[name]):
            raise _Stop("malformed", i)
        if len(rec[name]) > LIMIT[kind]:
            raise _Stop("oversize", i)
        raw = rec[name]
        try:
            if kind == "genesis":
                genesis = ind.verify_genesis(raw)
                if genesis.federation_id != head["fed"]:
                    raise ProtocolError("wrong_federation", "genesis")
                verifier = ind.Verifier(genesis)
            elif kind == "event":
                ev = verifier.verify_event(raw).event  # type: ignore[union-attr]
                if ev.kind == "checkpoint":
                    latest_cp[ev.author] = (ev.body["size"], ev.body["root"], ev.body["key"],
                                            ev.body["sig"])
                elif ev.kind == "cosign":
                    for c in ev.body["cosigs"]:
                        cosigs.setdefault(c["log"], {})[ev.author] = (
                            c["size"], c["root"], ev.body["key"], c["sig"])
            elif kind == "forked":
                assert verifier is not None
                ev = ind.parse_envelope(raw)
                branch = branches.get(ev.author)
                if branch is None:
                    branch = branches[ev.author] = ind.Verifier(verifier.genesis)
                    main = verifier.chain(ev.author)
                    branch.chains[ev.author] = ind.ChainState(
                        ids=list(main.ids), keys=list(main.keys), head_ts=main.head_ts)
                branch.verify_event(raw)
            else:
                assert verifier is not None
                try:
                    author, seq = verifier.check_proof(raw)
                except ProtocolError as exc:
                    author = ind.parse_envelope(ind.decode(raw, PROOF_LIMIT)["a"]).author \
                        if exc.code == "sequence_gap" else ""
                    if author not in branches:
                        raise
                    author, seq = branches[author].check_proof(raw)
                if verifier.chain(author).head >= seq:
                    raise ProtocolError("equivocated", "chain past the fork")
                frozen[author] = min(seq, frozen.get(author, seq))
        except ProtocolError as exc:
            raise _Stop(exc.code, i) from None
    if not ended:
        raise _Stop("truncated", None)
    assert verifier is not None
    fed = verifier.genesis.federation_id
    for f in verifier.genesis.founders:
        state = verifier.chains.get(f.id)
        ids = state.ids if state else []
        cp = latest_cp.get(f.id)
        witnesses = sorted(w for w, c in cosigs.get(f.id, {}).items()
                           if cp is not None and c[:2] == cp[:2])
        result.members[f.id] = {"events": len(ids), "head_id_hex": ids[-1].hex() if ids
                                else None, "equivocated_at": frozen.get(f.id),
                                "witnesses": witnesses}
        if cp is not None:
            result.notes[f.id], result.vkeys[f.id] = _note(fed, f.id, cp, {
                w: cosigs[f.id][w] for w in witnesses})
    if frozen:
        result.verdict = "equivocated"


def _note(fed: bytes, log: str, cp: tuple[int, bytes, dict[str, bytes], dict[str, bytes]],
          wits: dict[str, tuple[int, bytes, dict[str, bytes], dict[str, bytes]]]
          ) -> tuple[str, list[str]]:
    """The log's checkpoint as a signed note, and the verifier keys, from the events alone
    (§13.5): the log's lines (0x01, then 0x06), then each witness's (0x04, then 0x06)."""
    size, root, key, sig = cp
    name = origin(fed, log)
    lines, vkeys = [], []

    def add(n: str, t: int, public: bytes, s: bytes) -> None:
        kid = key_id(n, t, public)
        lines.append(f"\u2014 {n} {base64.b64encode(kid + s).decode()}\n")
        vkeys.append(f"{n}+{kid.hex()}+{base64.b64encode(bytes([t]) + public).decode()}")

    add(name, 0x01, key["ed25519"], sig["ed25519"])
    if "mldsa44" in sig:
        add(name, 0x06, key["mldsa44"], sig["mldsa44"])
    for w in sorted(wits):
        _, _, wkey, wsig = wits[w]
        add(witness_name(fed, w), 0x04, wkey["ed25519"], wsig["ed25519"])
        if "mldsa44" in wsig:
            add(witness_name(fed, w), 0x06, wkey["mldsa44"], wsig["mldsa44"])
    return checkpoint_text(name, size, root) + "\n" + "".join(lines), vkeys
