"""PROTOCOL.md §5.6-§5.10 for the independent verifier: applications, the governance kinds,
the tally, and what decisions change.

Written from the text of §5.6 to §5.10 (and §4.1 steps 8, 10 and 16, §9), not from
pocnode/: applications are decoded by independent.py's own msgpack decoder and verified by
its §3.3.1 checks and PyNaCl; the tally keeps the events as the spec names them (bases,
windows, ballots) and decides each proposal to a fixed point after every accepted event.
Importing this module registers the governance kinds with independent.py's verifier (and,
through independent_tlog, the kinds of §13, which an observer may not write either).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from tests.conformance import independent as ind
from tests.conformance import independent_tlog  # noqa: F401  (§13 kinds: known, step 7)
from tests.conformance.independent import ProtocolError

APPLY_PREFIX: Final = b"pocnode/v1/apply\x00"  # §5.6: 16 ASCII bytes, one zero byte
APPLICATION_LIMIT: Final = 16_384  # §5.6
APPLICATION_KEYS: Final = frozenset({"type", "v", "fed", "role", "id", "name", "key", "hpke",
                                     "endpoints", "ts"})  # plus an optional reference
DECISION_KEYS: Final = {  # §5.7: the keys each decision adds to `decision`, `note` optional
    "admission": frozenset({"application"}),
    "observer": frozenset({"application"}),
    "key_recovery": frozenset({"subject", "key", "from_seq"}),
    "rules": frozenset({"governance"}),
}
VOTES: Final = frozenset({"yes", "no", "abstain"})
MAX_SEEN: Final = 64  # §5.7, gov.tick


# ---------------------------------------------------------------------------------------
# §5.6 Applications
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Application:
    role: str
    member: str
    key: dict[str, bytes]


def _malformed(path: str, detail: str = "") -> ProtocolError:
    return ProtocolError("malformed", path, detail)


def parse_application(data: bytes, genesis: ind.Genesis) -> Application:
    """§5.6: oversize, encoding errors, the shape (malformed), the federation, the
    signature, in that order."""
    doc = ind.decode(data, APPLICATION_LIMIT)
    if not ind.is_map(doc) or set(doc) != {"application", "sig"}:  # type: ignore[arg-type]
        raise _malformed("application", "exactly application and sig")
    assert isinstance(doc, dict)
    payload = doc["application"]
    if not ind.is_bin(payload):
        raise _malformed("application", "the payload is a bin")
    p = ind.decode(payload, APPLICATION_LIMIT)
    if not ind.is_map(p):
        raise _malformed("application", "the payload is a map")
    assert isinstance(p, dict)
    if not APPLICATION_KEYS <= set(p) <= APPLICATION_KEYS | {"reference"}:
        raise _malformed("application", "keys")
    if p["type"] != "pocnode/apply" or not ind.is_str(p["type"]):
        raise _malformed("application.type")
    if not ind.is_int(p["v"]) or p["v"] != 1:
        raise _malformed("application.v")
    if not ind.is_bin(p["fed"], 32):
        raise _malformed("application.fed")
    if not ind.is_str(p["role"]) or p["role"] not in ("member", "observer"):
        raise _malformed("application.role")
    if not ind.is_member_id(p["id"]):
        raise _malformed("application.id")
    if not ind.str_len_between(p["name"], 1, 128):
        raise _malformed("application.name")
    if not ind.public_key_ok(p["key"], genesis.sig_alg):  # §3.3, the genesis's, §3.3.1
        raise _malformed("application.key")
    hpke = p["hpke"]  # "as in §3.4.3": the genesis suite, a key of its size
    if (not ind.is_map(hpke) or set(hpke) != {"suite", "pk"} or hpke["suite"] != genesis.hpke_suite
            or not ind.is_bin(hpke["pk"], ind.HPKE_SUITES[genesis.hpke_suite])):
        raise _malformed("application.hpke")
    if not ind.endpoints_ok(p["endpoints"]):  # "as §5.2"
        raise _malformed("application.endpoints")
    if not ind.is_int(p["ts"]) or not 0 <= p["ts"] < ind.I63:
        raise _malformed("application.ts")
    if "reference" in p and not ind.str_len_between(p["reference"], 1, 256):
        raise _malformed("application.reference")
    sig = doc["sig"]
    if not ind.is_signature_map(sig):
        raise _malformed("application.sig")
    if p["fed"] != genesis.federation_id:
        raise ProtocolError("wrong_federation", "application.fed")
    # A well-formed signature of another §3.3 algorithm is not by the key named: bad.
    if not ind.signature_verifies(genesis.sig_alg, p["key"], sig, APPLY_PREFIX + payload):
        raise ProtocolError("bad_signature", "application.sig")
    return Application(p["role"], p["id"], p["key"])


def fingerprint(key: dict[str, bytes]) -> str:
    """§5.6: SHA-256 of the canonical key map; its first 20 bytes as an unsigned big-endian
    integer, of which the last 40 decimal digits are shown in 8 groups of 5."""
    n = int.from_bytes(hashlib.sha256(ind.encode(key)).digest()[:20], "big") % 10**40
    digits = f"{n:040d}"
    return " ".join(digits[i:i + 5] for i in range(0, 40, 5))


# ---------------------------------------------------------------------------------------
# §5.7, §5.9 Body rules (§4.1 step 16): every violation is invalid_body
# ---------------------------------------------------------------------------------------
def _invalid(path: str, detail: str = "") -> ProtocolError:
    return ProtocolError("invalid_body", path, detail)


def _event_id(v: Any, path: str) -> None:
    if not ind.is_bin(v, 32):
        raise _invalid(path, "an event id is a bin of 32 bytes")


def check_propose(v: ind.Verifier, ev: ind.Event, state: ind.ChainState) -> None:
    body, g = ev.body, v.genesis
    decision = body.get("decision")
    if not ind.is_str(decision) or decision not in DECISION_KEYS:
        raise _invalid("event.body.decision")
    keys = DECISION_KEYS[decision]
    if not keys | {"decision"} <= set(body) <= keys | {"decision", "note"}:
        raise _invalid("event.body", "keys")
    if "note" in body and not ind.str_len_between(body["note"], 1, 256):
        raise _invalid("event.body.note")
    if decision in ("admission", "observer"):
        if not ind.is_bin(body["application"]):
            raise _invalid("event.body.application")
        try:
            app = parse_application(body["application"], g)
        except ProtocolError as err:
            raise _invalid("event.body.application", err.code) from None
        if app.role != ("member" if decision == "admission" else "observer"):
            raise _invalid("event.body.application", "the role is not the decision's")
    elif decision == "key_recovery":
        if not ind.is_member_id(body["subject"]):
            raise _invalid("event.body.subject")
        if not ind.is_public_key(body["key"], g.sig_alg):
            raise _invalid("event.body.key")
        if not ind.ed25519_public_key_ok(body["key"]["ed25519"]):  # §3.3.1 rule 1
            raise _invalid("event.body.key.ed25519")
        if not ind.is_int(body["from_seq"]) or not 1 <= body["from_seq"] < ind.I63:
            raise _invalid("event.body.from_seq")
    else:
        check_rules(body["governance"], g.exercise)


def check_rules(gov: Any, exercise: bool) -> None:
    """§5.3, for an amendment: the genesis's rules for the governance map."""
    path = "event.body.governance"
    if not ind.is_map(gov) or set(gov) != ind.GOVERNANCE_KEYS:
        raise _invalid(path, "keys")
    for name in sorted(gov):
        try:
            ind._check_rule(gov[name], f"{path}.{name}", exercise)
        except ProtocolError as err:
            raise _invalid(err.path, err.detail) from None


def check_vote(v: ind.Verifier, ev: ind.Event, state: ind.ChainState) -> None:
    if set(ev.body) != {"proposal", "vote"}:
        raise _invalid("event.body", "keys")
    _event_id(ev.body["proposal"], "event.body.proposal")
    if not ind.is_str(ev.body["vote"]) or ev.body["vote"] not in VOTES:
        raise _invalid("event.body.vote")


def check_object(v: ind.Verifier, ev: ind.Event, state: ind.ChainState) -> None:
    if set(ev.body) != {"proposal"}:
        raise _invalid("event.body", "keys")
    _event_id(ev.body["proposal"], "event.body.proposal")


def check_tick(v: ind.Verifier, ev: ind.Event, state: ind.ChainState) -> None:
    if set(ev.body) != {"seen"}:
        raise _invalid("event.body", "keys")
    seen = ev.body["seen"]
    if not ind.is_array(seen) or len(seen) > MAX_SEEN:
        raise _invalid("event.body.seen", "an array of at most 64")
    for i, item in enumerate(seen):
        _event_id(item, f"event.body.seen[{i}]")
    if len(set(seen)) != len(seen):
        raise _invalid("event.body.seen", "distinct ids")


def check_withdraw(v: ind.Verifier, ev: ind.Event, state: ind.ChainState) -> None:
    if not set(ev.body) <= {"reason"}:
        raise _invalid("event.body", "keys")
    if "reason" in ev.body and not ind.str_len_between(ev.body["reason"], 1, 256):
        raise _invalid("event.body.reason")


ind.EXTRA_KINDS.update({
    "gov.propose": check_propose,
    "gov.vote": check_vote,
    "gov.object": check_object,
    "gov.tick": check_tick,
    "member.withdraw": check_withdraw,
})


# ---------------------------------------------------------------------------------------
# §5.8 The tally; §5.9, §5.10 what decisions change
# ---------------------------------------------------------------------------------------
@dataclass
class Ballot:
    member: str
    seq: int
    ts: int
    vote: str  # yes | no | abstain | object
    arrival: int  # how many events the node had accepted when this one came


@dataclass
class Proposal:
    id: bytes
    author: str
    seq: int
    ts: int
    decision: str
    body: dict[str, Any]
    basis: frozenset[bytes]
    application: Application | None
    electorate: frozenset[str] | None = None
    rule: dict[str, Any] | None = None
    rules_version: int | None = None
    code: str | None = None  # void (§5.8 step 2)
    outcome: str = "pending"
    final_at: int | None = None  # the arrival count at which it became final


class GovVerifier(ind.Verifier):
    """A node's verifier that also tallies: the events it accepts are folded into the
    governance state, and after each, every proposal is brought as far as the events held
    allow, again and again until nothing moves (a decision may let another be decided)."""

    def __init__(self, genesis: ind.Genesis) -> None:
        super().__init__(genesis)
        self.arrivals = 0
        self.held: dict[bytes, tuple[str, int]] = {}  # every accepted event: author, ts
        self.named: dict[str, list[bytes]] = {}  # the governance ids each chain named
        self.opened: dict[tuple[str, bytes], int] = {}  # (member, proposal) -> window start
        self.ballots: dict[bytes, list[Ballot]] = {}  # proposal id -> ballots, as arrived
        self.proposals: dict[bytes, Proposal] = {}
        self.withdrawals: dict[bytes, str] = {}  # withdrawal event id -> its author
        self.withdrew: set[str] = set()

    # -- folding (§5.8 steps 1, 3, 4) -------------------------------------------------
    def accepted(self, ev: ind.Event) -> None:
        self.arrivals += 1
        self.held[ev.event_id] = (ev.author, ev.ts)
        named = self.named.setdefault(ev.author, [])
        if ev.kind == "gov.tick":
            for gid in ev.body["seen"]:
                named.append(gid)
                self.opened.setdefault((ev.author, gid), ev.ts)
        elif ev.kind in ("gov.vote", "gov.object"):
            pid = ev.body["proposal"]
            self.opened.setdefault((ev.author, pid), ev.ts)
            vote = ev.body["vote"] if ev.kind == "gov.vote" else "object"
            self.ballots.setdefault(pid, []).append(
                Ballot(ev.author, ev.seq, ev.ts, vote, self.arrivals))
        elif ev.kind == "gov.propose":
            app = None
            if "application" in ev.body:
                app = parse_application(ev.body["application"], self.genesis)
            self.proposals[ev.event_id] = Proposal(
                ev.event_id, ev.author, ev.seq, ev.ts, ev.body["decision"], ev.body,
                frozenset(named), app)
            self.opened.setdefault((ev.author, ev.event_id), ev.ts)
            named.append(ev.event_id)
        elif ev.kind == "member.withdraw":
            self.withdrawals[ev.event_id] = ev.author
            self.withdrew.add(ev.author)
            named.append(ev.event_id)
        self.decide()

    # -- deciding (§5.8 steps 1, 2, 6) ------------------------------------------------
    def decide(self) -> None:
        moved = True
        while moved:
            moved = False
            for p in self.proposals.values():
                if p.final_at is not None:
                    continue
                if p.electorate is None and not self._prepare(p):
                    continue
                outcome = self._outcome(p)
                if outcome is not None:
                    p.outcome, p.final_at = outcome, self.arrivals
                    if outcome == "adopted":
                        self._apply(p)
                    moved = True

    def _basis(self, p: Proposal) -> list[Proposal]:
        return sorted((self.proposals[g] for g in p.basis if g in self.proposals),
                      key=lambda q: (q.ts, q.id))

    def _prepare(self, p: Proposal) -> bool:
        """Step 2, once every event of the basis is held and every proposal in it final."""
        if not all(g in self.held for g in p.basis):
            return False
        basis = self._basis(p)
        if any(q.final_at is None for q in basis):
            return False
        adopted = [q for q in basis if q.outcome == "adopted"]
        gone = {self.withdrawals[g] for g in p.basis if g in self.withdrawals}
        electorate = {f.id for f in self.genesis.founders}
        electorate |= {q.application.member for q in adopted
                       if q.decision == "admission" and q.application is not None}
        electorate -= gone
        rules = self.genesis.governance
        amendments = [q for q in adopted if q.decision == "rules"]
        for q in amendments:
            rules = q.body["governance"]
        p.electorate, p.rules_version = frozenset(electorate), 1 + len(amendments)
        p.rule = rules[p.decision]
        # Keys members in force were admitted with: a founder's, an applicant's own.
        admitted_key = {f.id: f.key for f in self.genesis.founders}
        observers: set[str] = set()
        for q in adopted:
            if q.application is not None:
                if q.decision == "admission":
                    admitted_key[q.application.member] = q.application.key
                else:
                    observers.add(q.application.member)
        in_force = electorate | (observers - gone)
        app = p.application
        if app is not None and app.member in in_force:
            p.code = "id_in_use"
        elif app is not None and any(admitted_key[m]["ed25519"] == app.key["ed25519"]
                                     for m in electorate):
            p.code = "key_in_use"  # compared as §5.2 compares founders' keys
        elif (p.decision == "key_recovery" and p.body["subject"] not in electorate
              or p.author not in electorate):
            p.code = "not_a_member"  # a proposal about, or by, someone outside it
        return True

    def window_end(self, member: str, p: Proposal) -> int | None:
        start = self.opened.get((member, p.id))
        return None if start is None or p.rule is None else start + p.rule["window_ms"]

    def closed(self, member: str, p: Proposal) -> bool:
        """Step 5: withdrew, or its chain holds an event stamped after its window."""
        if member in self.withdrew:
            return True
        end = self.window_end(member, p)
        state = self.chains.get(member)
        return end is not None and state is not None and state.head_ts > end

    def judge(self, p: Proposal) -> list[tuple[Ballot, bool, str | None]]:
        """Step 4: every ballot on P with whether it counts and, if not, its code."""
        out = []
        first: set[str] = set()
        for b in sorted(self.ballots.get(p.id, []), key=lambda b: (b.member, b.seq)):
            if p.electorate is None:
                out.append((b, False, None))  # not judged until the basis is final
                continue
            if b.member in first:
                code: str | None = "double_vote"
            elif b.member not in p.electorate:
                code = "not_in_electorate"
            elif b.ts > (self.window_end(b.member, p) or 0):
                code = "vote_too_late"
            elif p.rule is not None and p.rule["rule"] == "silence" and b.vote != "object":
                code = "wrong_vote_kind"
            elif p.final_at is not None and (b.arrival > p.final_at or p.code is not None):
                code = "after_final"
            else:
                code = None
            first.add(b.member)
            out.append((b, code is None, code))
        return out

    def _outcome(self, p: Proposal) -> str | None:
        """Step 6: adopted, rejected, or None while it can still go either way."""
        if p.code is not None:
            return "rejected"  # void
        assert p.electorate is not None and p.rule is not None
        counted = {b.member: b.vote for b, ok, _ in self.judge(p) if ok}
        n = len(p.electorate)
        y = sum(1 for v in counted.values() if v == "yes")
        u = sum(1 for m in p.electorate if m not in counted and not self.closed(m, p))
        rule = p.rule
        if rule["rule"] == "consensus":
            if y == n:
                return "adopted"
            if any(v != "yes" for v in counted.values()) or any(
                    m not in counted and self.closed(m, p) for m in p.electorate):
                return "rejected"
        elif rule["rule"] == "fraction":
            if y * rule["den"] >= rule["num"] * n:
                return "adopted"
            if (y + u) * rule["den"] < rule["num"] * n:
                return "rejected"
        elif rule["rule"] == "count":
            if y >= rule["min"]:
                return "adopted"
            if y + u < rule["min"]:
                return "rejected"
        else:  # silence: objections are the only ballots that count
            if counted:
                return "rejected"
            if u == 0:
                return "adopted"
        return None

    # -- effects (§5.6, §5.9, §5.10) --------------------------------------------------
    def _apply(self, p: Proposal) -> None:
        if p.application is not None:
            app = p.application
            if app.role == "observer":
                self.observers.add(app.member)
            else:
                self.observers.discard(app.member)
            self.admitted[app.member] = app.key
            state = self.chains.get(app.member)
            if state is not None and state.withdrawn_at is not None:  # admitted again
                state.keys.append((state.withdrawn_at + 1, app.key))
                state.withdrawn_at = None
                self.withdrew.discard(app.member)
        elif p.decision == "key_recovery":
            subject, seq = p.body["subject"], p.body["from_seq"]
            state = self.chain(subject)
            moved = state.ids[seq - 1:]
            state.ids = state.ids[:seq - 1]
            state.head_ts = self.held[state.ids[-1]][1] if state.ids else 0
            state.keys = [k for k in state.keys if k[0] < seq] or state.keys[:1]
            state.keys.append((seq, p.body["key"]))
            if state.withdrawn_at is not None and state.withdrawn_at >= seq:
                state.withdrawn_at = None  # the withdrawal left the chain with the rest
            for gid in moved:
                self.held.pop(gid, None)

    # -- the vectors' view ----------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """Every proposal held, as governance.json states it."""
        out = []
        for p in sorted(self.proposals.values(), key=lambda p: (p.ts, p.id)):
            out.append({
                "id_hex": p.id.hex(), "author": p.author, "decision": p.decision,
                "outcome": p.outcome, "final": p.final_at is not None, "code": p.code,
                "rules_version": p.rules_version,
                "electorate": sorted(p.electorate) if p.electorate is not None else None,
                "ballots": [{"member": b.member, "seq": b.seq, "vote": b.vote,
                             "counted": ok, "code": code} for b, ok, code in self.judge(p)]})
        return out


@dataclass
class StepResult:
    code: str
    path: str = ""
    event_id: bytes | None = None
    unchanged: bool = True


@dataclass
class ChainRun:
    steps: list[StepResult] = field(default_factory=list)
    proposals: list[dict[str, Any]] = field(default_factory=list)


def run_chain(genesis: ind.Genesis, steps: list[bytes]) -> ChainRun:
    """Deliver the envelopes in order to one fresh node; each judged by §4.1."""
    v = GovVerifier(genesis)
    run = ChainRun()
    for raw in steps:
        before = _snapshot(v)
        try:
            acc = v.verify_event(raw)
        except ProtocolError as err:
            run.steps.append(StepResult(err.code, err.path, None, _snapshot(v) == before))
        else:
            run.steps.append(StepResult("valid", "", acc.event.event_id))
    run.proposals = v.table()
    return run


def _snapshot(v: GovVerifier) -> str:
    return repr((sorted((m, s.ids, s.head_ts, s.withdrawn_at) for m, s in v.chains.items()),
                 v.arrivals))
