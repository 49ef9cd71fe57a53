"""Each author's chain as a transparency log: checkpoints and witness cosignatures
(PROTOCOL.md §13).

Two event kinds carry them, so that gossip, storage, export and audit treat them as
they treat every event:

* ``checkpoint``, in the author's own chain, at sequence n: a C2SP tlog-checkpoint of
  the chain's first n - 1 events (size = n - 1, root = RFC 6962 Merkle tree hash over
  their ids), signed by the author's **log key** as a C2SP signed note. A verifier
  accepts it only if size and root are exactly those of the chain it holds (§13.4), so
  a checkpoint can never claim a history its own chain does not have, and two
  checkpoints of one origin and size with different roots are two events at one
  sequence: an equivocation proof of §4.5 as they stand.
* ``cosign``, in a witness's chain: tlog-cosignatures of other members' checkpoints,
  batched, each by the witness's **witness key**. A node cosigns a checkpoint only once
  its verifier has accepted it, i.e. once it holds the author's chain to that size with
  that root; its chain only grows, so each cosignature extends the one before.

Note keys are derived from the identity key (HKDF-SHA256, one key per role and
algorithm) and published, signed by the identity key, in each checkpoint and cosign
event: see §13.1 for why they are not the identity key itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pocnode.core import ed25519_rules, note
from pocnode.core.errors import InvalidBody
from pocnode.core.events import MEMBER_ID, Event
from pocnode.core.genesis import Genesis
from pocnode.core.keys import HYBRID, SigningKey
from pocnode.core.merkle import Frontier

if TYPE_CHECKING:
    from pocnode.core.chain import Verifier

KIND_CHECKPOINT = "checkpoint"
KIND_COSIGN = "cosign"
TLOG_KINDS = (KIND_CHECKPOINT, KIND_COSIGN)

# Cosignatures in one cosign event: a federation of 256 founders has 255 other logs.
MAX_COSIGS = 256
# A witness fills a cosign event up to this many bytes of body, leaving room for the
# envelope under the 64 KiB event limit (a hybrid cosignature is about 2.5 KB, an
# Ed25519 one about 130 bytes).
COSIGN_BODY_BUDGET = 48 * 1024
_INT63 = 2**63
_HKDF_SALT = b"pocnode/v1/note-keys"

SigMap = dict[str, bytes]


def origin(fed: bytes, member: str) -> str:
    """The checkpoint origin and the log key's name: federation and member (§13.3)."""
    return f"pocnode/{fed.hex()}/{member}"


def witness_name(fed: bytes, member: str) -> str:
    return f"pocnode/{fed.hex()}/{member}/witness"


def _parts(sig_alg: str) -> tuple[str, ...]:
    return ("ed25519", "mldsa44") if sig_alg == HYBRID else ("ed25519",)


# -- note keys ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteKeys:
    """A published note key: Ed25519, plus ML-DSA-44 in a hybrid federation."""

    ed25519: bytes
    mldsa44: bytes | None = None

    def to_wire(self) -> dict[str, bytes]:
        out = {"ed25519": self.ed25519}
        if self.mldsa44 is not None:
            out["mldsa44"] = self.mldsa44
        return out

    def log_vkeys(self, name: str) -> list[note.VerifierKey]:
        out = [note.VerifierKey(name, note.SIG_ED25519, self.ed25519)]
        if self.mldsa44 is not None:
            out.append(note.VerifierKey(name, note.SIG_MLDSA44_SUBTREE, self.mldsa44))
        return out

    def witness_vkeys(self, name: str) -> list[note.VerifierKey]:
        out = [note.VerifierKey(name, note.SIG_COSIGNATURE_V1, self.ed25519)]
        if self.mldsa44 is not None:
            out.append(note.VerifierKey(name, note.SIG_MLDSA44_SUBTREE, self.mldsa44))
        return out


@functools.lru_cache(maxsize=4096)
def _ed_key_ok(key: bytes) -> bool:
    """§3.3.1's key rule, in pure integer arithmetic (a millisecond): a note key is
    published in every checkpoint and cosign event of its node, so it is checked once."""
    return ed25519_rules.public_key_ok(key)


def parse_note_keys(obj: Any, sig_alg: str, path: str) -> NoteKeys:
    parts = _parts(sig_alg)
    if type(obj) is not dict or set(obj) != set(parts):
        raise InvalidBody(f"key must be a map with exactly {', '.join(parts)}", path=path)
    ed = obj["ed25519"]
    if type(ed) is not bytes or len(ed) != 32 or not _ed_key_ok(ed):
        raise InvalidBody("key.ed25519 must be 32 bytes encoding a point of large order "
                          "(§3.3.1)", path=f"{path}.ed25519")
    ml = obj.get("mldsa44")
    if ml is not None:
        if type(ml) is not bytes or len(ml) != note.MLDSA44_PUBLIC_BYTES:
            raise InvalidBody(f"key.mldsa44 must be {note.MLDSA44_PUBLIC_BYTES} bytes",
                              path=f"{path}.mldsa44")
        try:
            mldsa.MLDSA44PublicKey.from_public_bytes(ml)
        except ValueError:
            raise InvalidBody("key.mldsa44 is not an ML-DSA-44 public key",
                              path=f"{path}.mldsa44") from None
    return NoteKeys(ed, ml)


def _sig_map(obj: Any, sig_alg: str, sizes: Mapping[str, int], path: str) -> SigMap:
    parts = _parts(sig_alg)
    if type(obj) is not dict or set(obj) != set(parts):
        raise InvalidBody(f"sig must be a map with exactly {', '.join(parts)}", path=path)
    for part in parts:
        value = obj[part]
        if type(value) is not bytes or len(value) != sizes[part]:
            raise InvalidBody(f"sig.{part} must be bin of {sizes[part]} bytes",
                              path=f"{path}.{part}")
    return obj


_CHECKPOINT_SIG = {"ed25519": note.ED25519_SIG_BYTES,
                   "mldsa44": note.TIMESTAMP_BYTES + note.MLDSA44_SIG_BYTES}
_COSIG_SIG = {"ed25519": note.TIMESTAMP_BYTES + note.ED25519_SIG_BYTES,
              "mldsa44": note.TIMESTAMP_BYTES + note.MLDSA44_SIG_BYTES}


class NoteSigner:
    """This node's note keys, derived from its identity key: one per role (log,
    witness) and algorithm, so no key signs two signature types (signed-note, Verifier
    keys), and none signs what the identity key signs."""

    __slots__ = ("log_ed", "witness_ed", "log_ml", "witness_ml", "log_keys", "witness_keys")

    def __init__(self, identity: SigningKey) -> None:
        ed, ml = identity.private_parts
        ikm = ed.private_bytes_raw() + (ml.private_bytes_raw() if ml is not None else b"")

        def seed(label: str) -> bytes:
            return HKDF(hashes.SHA256(), 32, _HKDF_SALT, label.encode()).derive(ikm)

        self.log_ed = ed25519.Ed25519PrivateKey.from_private_bytes(seed("log/ed25519"))
        self.witness_ed = ed25519.Ed25519PrivateKey.from_private_bytes(seed("witness/ed25519"))
        hybrid = identity.alg == HYBRID
        self.log_ml = mldsa.MLDSA44PrivateKey.from_seed_bytes(seed("log/mldsa44")) \
            if hybrid else None
        self.witness_ml = mldsa.MLDSA44PrivateKey.from_seed_bytes(seed("witness/mldsa44")) \
            if hybrid else None
        self.log_keys = NoteKeys(
            self.log_ed.public_key().public_bytes_raw(),
            self.log_ml.public_key().public_bytes_raw() if self.log_ml else None)
        self.witness_keys = NoteKeys(
            self.witness_ed.public_key().public_bytes_raw(),
            self.witness_ml.public_key().public_bytes_raw() if self.witness_ml else None)

    def sign_checkpoint(self, cp: note.Checkpoint, timestamp: int) -> SigMap:
        out = {"ed25519": note.sign_checkpoint(self.log_ed, cp.origin, cp).signature}
        if self.log_ml is not None:
            out["mldsa44"] = note.cosign_mldsa44(self.log_ml, cp.origin, cp,
                                                 timestamp).signature
        return out

    def cosign(self, name: str, cp: note.Checkpoint, timestamp: int) -> SigMap:
        out = {"ed25519": note.cosign_ed25519(self.witness_ed, name, cp, timestamp).signature}
        if self.witness_ml is not None:
            out["mldsa44"] = note.cosign_mldsa44(self.witness_ml, name, cp,
                                                 timestamp).signature
        return out


def log_signatures(name: str, keys: NoteKeys, sig: Mapping[str, bytes]
                   ) -> list[note.NoteSignature]:
    """The log's signature lines of a checkpoint, from its event's body."""
    out = [note.NoteSignature(name, note.key_id(name, note.SIG_ED25519, keys.ed25519),
                              sig["ed25519"])]
    if keys.mldsa44 is not None and "mldsa44" in sig:
        out.append(note.NoteSignature(
            name, note.key_id(name, note.SIG_MLDSA44_SUBTREE, keys.mldsa44), sig["mldsa44"]))
    return out


def witness_signatures(name: str, keys: NoteKeys, sig: Mapping[str, bytes]
                       ) -> list[note.NoteSignature]:
    out = [note.NoteSignature(
        name, note.key_id(name, note.SIG_COSIGNATURE_V1, keys.ed25519), sig["ed25519"])]
    if keys.mldsa44 is not None and "mldsa44" in sig:
        out.append(note.NoteSignature(
            name, note.key_id(name, note.SIG_MLDSA44_SUBTREE, keys.mldsa44), sig["mldsa44"]))
    return out


# -- bodies: shape (§4.1 step 16, PROTOCOL.md §13.4) ----------------------------------------


def check_checkpoint_body(body: dict[str, Any], genesis: Genesis) -> None:
    if body.keys() != {"size", "root", "key", "sig"}:
        raise InvalidBody("checkpoint body must have exactly size, root, key, sig",
                          path="body")
    size, root = body["size"], body["root"]
    if type(size) is not int or not 0 <= size < _INT63:
        raise InvalidBody("size must be an int in [0, 2^63)", path="body.size")
    if type(root) is not bytes or len(root) != 32:
        raise InvalidBody("root must be bin of 32 bytes", path="body.root")
    parse_note_keys(body["key"], genesis.sig_alg, "body.key")
    _sig_map(body["sig"], genesis.sig_alg, _CHECKPOINT_SIG, "body.sig")


def check_cosign_body(body: dict[str, Any], genesis: Genesis) -> None:
    if body.keys() != {"key", "cosigs"}:
        raise InvalidBody("cosign body must have exactly key, cosigs", path="body")
    parse_note_keys(body["key"], genesis.sig_alg, "body.key")
    cosigs = body["cosigs"]
    if type(cosigs) is not list or not 1 <= len(cosigs) <= MAX_COSIGS:
        raise InvalidBody(f"cosigs must be an array of 1..{MAX_COSIGS}", path="body.cosigs")
    previous: tuple[int, bytes] | None = None
    for i, entry in enumerate(cosigs):
        path = f"body.cosigs[{i}]"
        if type(entry) is not dict or entry.keys() != {"log", "size", "root", "sig"}:
            raise InvalidBody("a cosignature is a map with exactly log, size, root, sig",
                              path=path)
        log, size, root = entry["log"], entry["size"], entry["root"]
        if type(log) is not str or not MEMBER_ID.fullmatch(log):
            raise InvalidBody("log must be a member id", path=f"{path}.log")
        order = (len(log.encode()), log.encode())
        if previous is not None and order <= previous:
            raise InvalidBody("cosigs must be sorted by log as §2.3 sorts keys, each log once",
                              path=f"{path}.log")
        previous = order
        if type(size) is not int or not 1 <= size < _INT63:
            raise InvalidBody("size must be an int in [1, 2^63)", path=f"{path}.size")
        if type(root) is not bytes or len(root) != 32:
            raise InvalidBody("root must be bin of 32 bytes", path=f"{path}.root")
        _sig_map(entry["sig"], genesis.sig_alg, _COSIG_SIG, f"{path}.sig")


# -- in the chain (§13.4): what a body rule alone cannot see ------------------------------------

IdAt = Callable[[int], "bytes | None"]

# Chain roots memoised by author: the hint is used only if the chain still holds the
# same event at the hint's size (an id commits to everything before it), so a stale or
# foreign hint costs a recomputation, never a wrong root.
_HINTS: dict[tuple[bytes, str], tuple[int, bytes | None, Frontier]] = {}
_MAX_HINTS = 16_384


def chain_root(fed: bytes, author: str, size: int, id_at: IdAt) -> bytes:
    """MTH of the author's first ``size`` event ids (RFC 6962), incrementally."""
    key = (fed, author)
    hint = _HINTS.get(key)
    if hint is not None and hint[0] <= size and (hint[0] == 0 or id_at(hint[0]) == hint[1]):
        frontier, start = hint[2].copy(), hint[0] + 1
    else:
        frontier, start = Frontier(), 1
    for seq in range(start, size + 1):
        leaf = id_at(seq)
        if leaf is None:
            raise InvalidBody(f"{author}: no event #{seq} to hash", path="body.size")
        frontier.append(leaf)
    if len(_HINTS) >= _MAX_HINTS:
        _HINTS.clear()
    _HINTS[key] = (size, id_at(size) if size else None, frontier)
    return frontier.root()


def chain_leaves(size: int, id_at: IdAt) -> list[bytes]:
    out = []
    for seq in range(1, size + 1):
        leaf = id_at(seq)
        if leaf is None:
            break
        out.append(leaf)
    return out


def check_checkpoint_in_chain(event: Event, id_at: IdAt, verifier: Verifier) -> None:
    """§13.4: size is seq - 1, root is the chain's, the log's signatures verify."""
    body, fed = event.body, verifier.genesis.id
    if body["size"] != event.seq - 1:
        raise InvalidBody(f"{event.author} #{event.seq}: a checkpoint at #{event.seq} is of "
                          f"size {event.seq - 1}, not {body['size']}", path="body.size")
    if body["root"] != chain_root(fed, event.author, body["size"], id_at):
        raise InvalidBody(f"{event.author} #{event.seq}: root is not the Merkle tree hash of "
                          f"the chain's first {body['size']} events", path="body.root")
    keys = parse_note_keys(body["key"], verifier.genesis.sig_alg, "body.key")
    cp = note.Checkpoint(origin(fed, event.author), body["size"], body["root"])
    _check_timestamps(body["sig"], ("mldsa44",), event, "body.sig")
    for vkey, sig in zip(keys.log_vkeys(cp.origin),
                         log_signatures(cp.origin, keys, body["sig"]), strict=True):
        if not note.verify_signature(vkey, cp, sig):
            raise InvalidBody(f"{event.author} #{event.seq}: the checkpoint's signed-note "
                              f"signature (type {vkey.sig_type:#04x}) does not verify under "
                              f"the key the event publishes", path="body.sig")


def check_cosign_in_chain(event: Event, id_at: IdAt, verifier: Verifier) -> None:
    """§13.4: each cosignature is of another member's log and verifies."""
    body, fed = event.body, verifier.genesis.id
    keys = parse_note_keys(body["key"], verifier.genesis.sig_alg, "body.key")
    name = witness_name(fed, event.author)
    vkeys = keys.witness_vkeys(name)
    for i, entry in enumerate(body["cosigs"]):
        path = f"body.cosigs[{i}]"
        if entry["log"] == event.author:
            raise InvalidBody("a member does not witness its own log", path=f"{path}.log")
        if entry["log"] not in verifier.members:
            raise InvalidBody(f"{entry['log']} is not a member", path=f"{path}.log")
        _check_timestamps(entry["sig"], ("ed25519", "mldsa44"), event, f"{path}.sig")
        cp = note.Checkpoint(origin(fed, entry["log"]), entry["size"], entry["root"])
        for vkey, sig in zip(vkeys, witness_signatures(name, keys, entry["sig"]), strict=True):
            if not note.verify_signature(vkey, cp, sig):
                raise InvalidBody(f"{event.author} #{event.seq}: cosignature of "
                                  f"{entry['log']} at size {entry['size']} (type "
                                  f"{vkey.sig_type:#04x}) does not verify", path=f"{path}.sig")


def _check_timestamps(sig: Mapping[str, bytes], parts: Iterable[str], event: Event,
                      path: str) -> None:
    """A timestamped note signature (types 0x04, 0x06) is not later than the event that
    carries it."""
    limit = event.ts // 1000
    for part in parts:
        if part in sig:
            stamp = int.from_bytes(sig[part][:note.TIMESTAMP_BYTES], "big")
            if stamp > limit:
                raise InvalidBody(f"signature time {stamp} is after the event's "
                                  f"({limit} s)", path=f"{path}.{part}")


CHAIN_RULES: dict[str, Callable[[Event, IdAt, Verifier], None]] = {
    KIND_CHECKPOINT: check_checkpoint_in_chain,
    KIND_COSIGN: check_cosign_in_chain,
}


# -- building bodies -------------------------------------------------------------------------


def checkpoint_body(signer: NoteSigner, fed: bytes, member: str, size: int, root: bytes,
                    timestamp: int) -> dict[str, Any]:
    cp = note.Checkpoint(origin(fed, member), size, root)
    return {"size": size, "root": root, "key": signer.log_keys.to_wire(),
            "sig": signer.sign_checkpoint(cp, timestamp)}


def cosign_entry(signer: NoteSigner, fed: bytes, witness: str, log: str, size: int,
                 root: bytes, timestamp: int) -> dict[str, Any]:
    cp = note.Checkpoint(origin(fed, log), size, root)
    return {"log": log, "size": size, "root": root,
            "sig": signer.cosign(witness_name(fed, witness), cp, timestamp)}


def entry_bytes(entry: Mapping[str, Any]) -> int:
    """About what an entry adds to a body (framing included), for batching."""
    return 64 + len(entry["log"]) + sum(len(v) for v in entry["sig"].values())


# -- what the node folds from them (the engine's FOLDS, the audit, the offline CLI) ---------


@dataclass(frozen=True, slots=True)
class CheckpointSeen:
    author: str
    seq: int
    ts: int
    size: int
    root: bytes
    keys: NoteKeys
    sig: Mapping[str, bytes]
    event_id: bytes


@dataclass(frozen=True, slots=True)
class CosigSeen:
    witness: str
    seq: int          # of the witness's cosign event
    ts: int
    size: int
    root: bytes
    keys: NoteKeys
    sig: Mapping[str, bytes]


@dataclass(slots=True)
class TlogState:
    """The latest checkpoint of each log and each witness's latest cosignature of it,
    folded from the chains in force; rebuilt from them at start."""

    fed: bytes
    sig_alg: str
    checkpoints: dict[str, CheckpointSeen] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)         # checkpoints per author
    cosigs: dict[str, dict[str, CosigSeen]] = field(default_factory=dict)  # log -> witness
    cosign_events: dict[str, int] = field(default_factory=dict)  # per witness
    last_cosign_ts: dict[str, int] = field(default_factory=dict)
    # Cosign events of an author after its latest checkpoint: they need no checkpoint.
    cosigns_after: dict[str, int] = field(default_factory=dict)

    def fold(self, event: Event) -> None:
        if event.kind == KIND_CHECKPOINT:
            body = event.body
            self.checkpoints[event.author] = CheckpointSeen(
                event.author, event.seq, event.ts, body["size"], body["root"],
                parse_note_keys(body["key"], self.sig_alg, "body.key"), body["sig"], event.id)
            self.counts[event.author] = self.counts.get(event.author, 0) + 1
            self.cosigns_after[event.author] = 0
        elif event.kind == KIND_COSIGN:
            keys = parse_note_keys(event.body["key"], self.sig_alg, "body.key")
            for entry in event.body["cosigs"]:
                self.cosigs.setdefault(entry["log"], {})[event.author] = CosigSeen(
                    event.author, event.seq, event.ts, entry["size"], entry["root"], keys,
                    entry["sig"])
            self.cosign_events[event.author] = self.cosign_events.get(event.author, 0) + 1
            self.last_cosign_ts[event.author] = event.ts
            self.cosigns_after[event.author] = self.cosigns_after.get(event.author, 0) + 1

    def forget(self, author: str) -> None:
        """The author's chain in force was cut (§4.6): what its events said goes, to be
        folded again from what stands."""
        self.checkpoints.pop(author, None)
        self.counts.pop(author, None)
        self.cosign_events.pop(author, None)
        self.last_cosign_ts.pop(author, None)
        self.cosigns_after.pop(author, None)
        for by_witness in self.cosigs.values():
            by_witness.pop(author, None)

    def uncovered(self, author: str, chain_seq: int) -> int:
        """Events of the author's chain that no checkpoint covers yet, cosign events and
        the checkpoint itself aside."""
        cp = self.checkpoints.get(author)
        after = chain_seq - (cp.seq if cp is not None else 0)
        return after - self.cosigns_after.get(author, 0)

    def witnesses(self, log: str) -> list[CosigSeen]:
        """Cosignatures of the log's latest checkpoint (same size and root)."""
        cp = self.checkpoints.get(log)
        if cp is None:
            return []
        return sorted((c for c in self.cosigs.get(log, {}).values()
                       if c.size == cp.size and c.root == cp.root), key=lambda c: c.witness)

    def signed_note(self, log: str) -> str | None:
        """The log's latest checkpoint as a C2SP signed note with every cosignature of it:
        the log's lines first, then the witnesses' by name."""
        cp = self.checkpoints.get(log)
        if cp is None:
            return None
        name = origin(self.fed, log)
        checkpoint = note.Checkpoint(name, cp.size, cp.root)
        sigs = log_signatures(name, cp.keys, cp.sig)
        for c in self.witnesses(log):
            sigs += witness_signatures(witness_name(self.fed, c.witness), c.keys, c.sig)
        return note.SignedNote(checkpoint.text(), tuple(sigs)).render()

    def vkeys(self, log: str) -> list[str]:
        """Verifier keys of the log and of the witnesses of its latest checkpoint."""
        cp = self.checkpoints.get(log)
        if cp is None:
            return []
        out = [k.text() for k in cp.keys.log_vkeys(origin(self.fed, log))]
        for c in self.witnesses(log):
            out += [k.text() for k in c.keys.witness_vkeys(witness_name(self.fed, c.witness))]
        return out


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A witness cosigned a root of a log at a size where the chain we hold has another:
    the log showed the witness another history, or the witness signed a false one."""

    log: str
    witness: str
    size: int
    theirs: bytes
    ours: bytes


def disagreements(state: TlogState, id_at_of: Callable[[str], IdAt],
                  heads: Mapping[str, int]) -> tuple[list[Disagreement], list[CosigSeen]]:
    """Cosignatures checked against the chains held: (those that disagree, those ahead of
    the chain we hold: we lack events, or the bundle lacks them)."""
    bad: list[Disagreement] = []
    ahead: list[CosigSeen] = []
    for log in sorted(state.cosigs):
        for witness in sorted(state.cosigs[log]):
            c = state.cosigs[log][witness]
            if c.size > heads.get(log, 0):
                ahead.append(c)
                continue
            ours = chain_root(state.fed, log, c.size, id_at_of(log))
            if ours != c.root:
                bad.append(Disagreement(log, witness, c.size, c.root, ours))
    return bad, ahead


def fold_all(state: TlogState, events: Iterable[Event]) -> TlogState:
    for event in events:
        state.fold(event)
    return state
