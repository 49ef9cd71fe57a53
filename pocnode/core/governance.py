"""Governance: applications, proposals, votes and tallies every node computes alike
(PROTOCOL.md §5.6 to §5.10).

States disagree on how to decide (MISSION.md row 5), so the rule of each kind of decision
is data (§5.3), and they agree that the directory must never sanction a state (row 1), so
no decision can edit, hide or remove a member's record: there is no expulsion, a member
only ever leaves by its own `member.withdraw`.

Determinism without a trusted clock. Every input to a tally is an event in some member's
chain, and a chain is ordered with timestamps that never go back; so:

* a member's **window** for a proposal opens at its first `gov.tick` (its node saw the
  proposal) or vote on it, and lasts the rule's ``window_ms`` in the member's own time:
  back-dating a proposal shortens nobody's window;
* the member's first vote or objection with a timestamp inside its window counts; later
  ones, and ones after the window, are shown with a code and never counted;
* a member is **closed** for the proposal once its chain holds any event stamped after its
  window (its node ticks when a window ends), or once it withdrew: after that no vote of
  its can count, since it could only be signed with an earlier timestamp by forking its
  own chain, which is detectable and frozen (§4.6);
* tallies only grow, so an outcome is **final** as soon as no remaining vote could change
  it (a threshold met, or out of reach), or once every member of the electorate is closed;
* what a proposal builds on is fixed by its proposer's chain: the governance events the
  proposer's node ticked before the proposal (its *basis*). The electorate is the genesis
  founders plus the admissions adopted in the basis, minus the withdrawals in it; the rules
  are the genesis rules amended by the adopted amendments in it. A proposal is final only
  once every decision in its basis is. The basis is a causal "happened before", so it has
  no cycles.

Every node holding the same events thus computes the same outcome, and none changes an
outcome it has called final. What this cannot guarantee (and the spec's security section
says) is liveness: a member whose node never comes back keeps open the decisions whose
outcome depends on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pocnode.core import encoding
from pocnode.core.errors import (
    AfterFinal,
    BadSignature,
    DoubleVote,
    IdInUse,
    InvalidBody,
    KeyInUse,
    Malformed,
    NotAMember,
    NotInElectorate,
    PocError,
    VoteTooLate,
    WrongFederation,
    WrongVoteKind,
)
from pocnode.core.events import HPKE_SUITES, MEMBER_ID, PROTOCOL_VERSION
from pocnode.core.keys import PublicKey, Signature, SigningKey
from pocnode.core.record import validate_endpoints

KIND_PROPOSE = "gov.propose"
KIND_VOTE = "gov.vote"
KIND_OBJECT = "gov.object"
KIND_TICK = "gov.tick"
KIND_WITHDRAW = "member.withdraw"
GOVERNANCE_KINDS = (KIND_PROPOSE, KIND_VOTE, KIND_OBJECT, KIND_TICK, KIND_WITHDRAW)

APPLY_DOMAIN = b"pocnode/v1/apply\x00"
APPLY_TYPE = "pocnode/apply"
DECISIONS = ("admission", "observer", "key_recovery", "rules")
ROLES = ("member", "observer")
VOTES = ("yes", "no", "abstain")
# A signed application is a few KB (a hybrid key is 2 KB); 16 KiB bounds what a stranger
# can make a node keep per application.
MAX_APPLICATION_BYTES = 16 * 1024
MAX_TICK_IDS = 64
_TEXT_MAX = 256
_NAME_MAX = 128


# -- applications (member.apply, §5.6): the applicant's own signed act ---------------------


@dataclass(frozen=True, slots=True)
class Application:
    """A state's (or an observer's) own signed request to join; verified when built."""

    raw: bytes
    id: bytes            # SHA-256 of the payload: what proposals and the CLI name it by
    role: str            # "member" | "observer"
    member: str
    name: str
    key: PublicKey
    hpke_suite: str
    hpke: bytes
    endpoints: tuple[str, ...]
    reference: str | None
    ts: int

    def fingerprint(self) -> str:
        """The key's fingerprint in a form two diplomats can read aloud over the phone:
        SHA-256 of the key's canonical encoding, 20 bytes as 8 groups of 5 digits."""
        digest = hashlib.sha256(encoding.encode(self.key.to_wire())).digest()[:20]
        number = int.from_bytes(digest, "big")
        groups = []
        for _ in range(8):
            number, rest = divmod(number, 100_000)
            groups.append(f"{rest:05d}")
        return " ".join(reversed(groups))


def make_application(key: SigningKey, *, fed: bytes, role: str, member: str, name: str,
                     hpke_suite: str, hpke: bytes, endpoints: Iterable[str], ts: int,
                     reference: str | None = None) -> bytes:
    """The applicant's signed application (its own act), checked before it is returned."""
    payload: dict[str, Any] = {
        "type": APPLY_TYPE, "v": PROTOCOL_VERSION, "fed": fed, "role": role, "id": member,
        "name": name, "key": key.public_key.to_wire(),
        "hpke": {"suite": hpke_suite, "pk": hpke}, "endpoints": list(endpoints), "ts": ts}
    if reference:
        payload["reference"] = reference
    body = encoding.encode(payload)
    doc = encoding.encode({"application": body,
                           "sig": key.sign(APPLY_DOMAIN + body).to_wire()})
    parse_application(doc, fed=fed, sig_alg=key.alg)
    return doc


def parse_application(data: bytes, *, fed: bytes, sig_alg: str,
                      hpke_suite: str | None = None) -> Application:
    """§5.6: shape (the whole of it, ``sig`` included), federation, then the applicant's
    signature under its own key. ``hpke_suite``: the genesis suite the key must be of."""
    doc = encoding.decode(data, max_size=MAX_APPLICATION_BYTES)
    if type(doc) is not dict or doc.keys() != {"application", "sig"} or \
            type(doc["application"]) is not bytes:
        raise Malformed("an application is {application: bin, sig: map}", path="application")
    p = encoding.decode(doc["application"], max_size=MAX_APPLICATION_BYTES)
    allowed = {"type", "v", "fed", "role", "id", "name", "key", "hpke", "endpoints", "ts",
               "reference"}
    if type(p) is not dict or p.get("type") != APPLY_TYPE or p.get("v") != PROTOCOL_VERSION:
        raise Malformed(f"application.type must be {APPLY_TYPE} of version 1",
                        path="application")
    if not p.keys() <= allowed or not (allowed - {"reference"}) <= p.keys():
        raise Malformed(f"application fields must be {sorted(allowed)} (reference optional)",
                        path="application")
    if type(p["fed"]) is not bytes or len(p["fed"]) != 32:
        raise Malformed("fed must be a bin of 32 bytes", path="application.fed")
    if p["role"] not in ROLES:
        raise Malformed(f"role must be one of {list(ROLES)}", path="application.role")
    if type(p["id"]) is not str or not MEMBER_ID.fullmatch(p["id"]):
        raise Malformed("id must be a member id [A-Z][A-Z0-9-]{1,31}", path="application.id")
    _text(p["name"], _NAME_MAX, "application.name", Malformed)
    key = PublicKey.from_wire(p["key"], alg=sig_alg, path="application.key")
    hpke = p["hpke"]
    if (type(hpke) is not dict or hpke.keys() != {"suite", "pk"}
            or hpke["suite"] not in HPKE_SUITES or type(hpke["pk"]) is not bytes
            or len(hpke["pk"]) != HPKE_SUITES[hpke["suite"]]):
        raise Malformed("hpke must be {suite, pk} with a key of the suite's size",
                        path="application.hpke")
    if hpke_suite is not None and hpke["suite"] != hpke_suite:
        raise Malformed(f"hpke suite must be the federation's, {hpke_suite}",
                        path="application.hpke.suite")
    validate_endpoints(p["endpoints"], path="application.endpoints", error=Malformed)
    if type(p["ts"]) is not int or not 0 <= p["ts"] < 2**63:
        raise Malformed("ts must be an int of milliseconds", path="application.ts")
    if "reference" in p:
        _text(p["reference"], _TEXT_MAX, "application.reference", Malformed)
    sig = Signature.from_wire(doc["sig"], path="application.sig")
    if p["fed"] != fed:
        raise WrongFederation("application for another federation", path="application.fed")
    if sig.alg != sig_alg or not key.verify(sig, APPLY_DOMAIN + doc["application"]):
        raise BadSignature("the application is not signed by the key it names",
                           path="application.sig")
    return Application(raw=bytes(data), id=hashlib.sha256(doc["application"]).digest(),
                       role=p["role"], member=p["id"], name=p["name"], key=key,
                       hpke_suite=hpke["suite"], hpke=hpke["pk"],
                       endpoints=tuple(p["endpoints"]), reference=p.get("reference"),
                       ts=p["ts"])


# -- body rules of the governance kinds (§3.4, §5.7) -------------------------------------


def check_propose(body: dict[str, Any], fed: bytes, sig_alg: str, exercise: bool,
                  hpke_suite: str | None = None) -> None:
    from pocnode.core.genesis import parse_governance  # the genesis owns the rule format

    decision = body.get("decision")
    if decision not in DECISIONS:
        raise InvalidBody(f"decision must be one of {list(DECISIONS)}", path="body.decision")
    extra = {"admission": {"application"}, "observer": {"application"},
             "key_recovery": {"subject", "key", "from_seq"}, "rules": {"governance"}}[decision]
    optional = {"note"}
    if not extra <= body.keys() or not body.keys() <= extra | optional | {"decision"}:
        raise InvalidBody(f"a {decision} proposal has exactly decision, "
                          f"{', '.join(sorted(extra))} (note optional)", path="body")
    if "note" in body:
        _text(body["note"], _TEXT_MAX, "body.note", InvalidBody)
    try:
        if decision in ("admission", "observer"):
            if type(body["application"]) is not bytes:
                raise InvalidBody("application must be bin", path="body.application")
            application = parse_application(body["application"], fed=fed, sig_alg=sig_alg,
                                            hpke_suite=hpke_suite)
            role = "member" if decision == "admission" else "observer"
            if application.role != role:
                raise InvalidBody(f"a {decision} proposal carries a {role}'s application",
                                  path="body.application")
        elif decision == "key_recovery":
            if type(body["subject"]) is not str or not MEMBER_ID.fullmatch(body["subject"]):
                raise InvalidBody("subject must be a member id", path="body.subject")
            try:
                PublicKey.from_wire(body["key"], alg=sig_alg, path="body.key")
            except PocError as exc:  # a small-order key is refused without a path of its own
                raise InvalidBody(exc.message, path=exc.path or "body.key") from None
            if type(body["from_seq"]) is not int or not 1 <= body["from_seq"] < 2**63:
                raise InvalidBody("from_seq must be a sequence number", path="body.from_seq")
        else:
            parse_governance(body["governance"], exercise=exercise, path="body.governance")
    except PocError as exc:
        if isinstance(exc, InvalidBody):
            raise
        raise InvalidBody(exc.message, path=exc.path) from None


def check_vote(body: dict[str, Any]) -> None:
    if body.keys() != {"proposal", "vote"}:
        raise InvalidBody("a vote has exactly proposal, vote", path="body")
    _proposal_id(body["proposal"])
    if body["vote"] not in VOTES:
        raise InvalidBody(f"vote must be one of {list(VOTES)}", path="body.vote")


def check_object(body: dict[str, Any]) -> None:
    if body.keys() != {"proposal"}:
        raise InvalidBody("an objection has exactly proposal", path="body")
    _proposal_id(body["proposal"])


def check_tick(body: dict[str, Any]) -> None:
    if body.keys() != {"seen"}:
        raise InvalidBody("a tick has exactly seen", path="body")
    seen = body["seen"]
    if type(seen) is not list or len(seen) > MAX_TICK_IDS:
        raise InvalidBody(f"seen must be a list of at most {MAX_TICK_IDS} ids", path="body.seen")
    for i, item in enumerate(seen):
        if type(item) is not bytes or len(item) != 32:
            raise InvalidBody("each seen id is bin of 32 bytes", path=f"body.seen[{i}]")
    if len(set(seen)) != len(seen):
        raise InvalidBody("seen ids must be distinct", path="body.seen")


def check_withdraw(body: dict[str, Any]) -> None:
    if not body.keys() <= {"reason"}:
        raise InvalidBody("a withdrawal has only an optional reason", path="body")
    if "reason" in body:
        _text(body["reason"], _TEXT_MAX, "body.reason", InvalidBody)


def _proposal_id(value: Any) -> None:
    if type(value) is not bytes or len(value) != 32:
        raise InvalidBody("proposal must be an event id, bin of 32 bytes", path="body.proposal")


def _text(value: Any, limit: int, path: str, error: type[PocError]) -> str:
    if type(value) is not str or not 1 <= len(value) <= limit:
        raise error(f"must be a str of 1..{limit} characters", path=path)
    return value


# -- the tally (§5.8) -------------------------------------------------------------------

# Codes a vote or a proposal gets when governance does not count it (§9). The event stays
# in its author's chain (it is validly signed); the tally shows it with its reason.
NOT_IN_ELECTORATE = NotInElectorate.code
DOUBLE_VOTE = DoubleVote.code
VOTE_TOO_LATE = VoteTooLate.code
WRONG_VOTE_KIND = WrongVoteKind.code
KEY_IN_USE = KeyInUse.code
ID_IN_USE = IdInUse.code
NOT_A_MEMBER = NotAMember.code
AFTER_FINAL = AfterFinal.code


@dataclass
class Ballot:
    """A member's vote on one proposal, as its chain says it."""

    member: str
    vote: str            # yes | no | abstain | object
    ts: int
    seq: int
    counted: bool
    code: str | None = None


@dataclass
class Proposal:
    id: bytes
    author: str
    seq: int
    ts: int
    decision: str
    body: dict[str, Any]
    basis: frozenset[bytes]          # governance events the proposer's node had ticked
    application: Application | None = None
    # worked out once the basis is final:
    electorate: tuple[str, ...] | None = None
    rules_version: int | None = None
    rule: Mapping[str, Any] | None = None
    outcome: str = "pending"         # pending | adopted | rejected
    final: bool = False
    reason: str = ""                 # why it is (or will be) decided, for people
    code: str | None = None          # a void proposal's code (key_in_use ...)
    ballots: dict[str, Ballot] = field(default_factory=dict)   # first ballot per member
    extra_ballots: list[Ballot] = field(default_factory=list)  # not counted, with codes


@dataclass
class Effect:
    """What an adopted decision changes (the engine applies it)."""

    decision: str
    proposal: Proposal


class Governance:
    """The governance state of one node, folded from the chains. Pure: the engine feeds
    it events (in each author's order) and asks it to evaluate."""

    def __init__(self, *, founders: Mapping[str, PublicKey],
                 rules: Mapping[str, Mapping[str, Any]], exercise: bool = False) -> None:
        # Shared, not copied: a simulator runs thousands of these over one genesis.
        self.founders = founders
        self.genesis_rules = rules
        self.exercise = exercise
        self.proposals: dict[bytes, Proposal] = {}
        self.ticked: dict[str, list[bytes]] = {}        # member -> governance ids, in order
        self.opened: dict[tuple[str, bytes], int] = {}  # (member, proposal) -> window start
        self.withdrawals: dict[str, tuple[bytes, int, int]] = {}  # member -> (id, seq, ts)
        self.withdraw_ids: dict[bytes, str] = {}
        self.head_ts: dict[str, int] = {}               # latest ts seen per member
        self.pending_ballots: dict[bytes, list[Ballot]] = {}  # before their proposal
        self.order: list[bytes] = []                    # proposals by (ts, id)

    # -- folding events -----------------------------------------------------------------

    def saw(self, author: str, ts: int) -> None:
        """Any event of ``author`` (it may close windows)."""
        if ts > self.head_ts.get(author, -1):
            self.head_ts[author] = ts

    def fold_tick(self, author: str, seq: int, ts: int, seen: list[bytes]) -> None:
        self.saw(author, ts)
        ticked = self.ticked.setdefault(author, [])
        known = set(ticked)
        for gid in seen:
            if gid not in known:
                ticked.append(gid)
                known.add(gid)
            self.opened.setdefault((author, gid), ts)

    def fold_propose(self, event_id: bytes, author: str, seq: int, ts: int,
                     body: dict[str, Any], application: Application | None) -> Proposal:
        self.saw(author, ts)
        proposal = Proposal(id=event_id, author=author, seq=seq, ts=ts,
                            decision=body["decision"], body=body,
                            basis=frozenset(self.ticked.get(author, ())),
                            application=application)
        self.proposals[event_id] = proposal
        # The proposer has seen its own proposal: its window opens with it, and its later
        # proposals build on it.
        self.opened.setdefault((author, event_id), ts)
        self.ticked.setdefault(author, []).append(event_id)
        self.order.append(event_id)
        self.order.sort(key=lambda i: (self.proposals[i].ts, i))
        for ballot in self.pending_ballots.pop(event_id, []):
            self._place(proposal, ballot)
        return proposal

    def fold_vote(self, author: str, seq: int, ts: int, proposal_id: bytes, vote: str) -> None:
        self.saw(author, ts)
        self.opened.setdefault((author, proposal_id), ts)
        ballot = Ballot(member=author, vote=vote, ts=ts, seq=seq, counted=False)
        proposal = self.proposals.get(proposal_id)
        if proposal is None:
            self.pending_ballots.setdefault(proposal_id, []).append(ballot)
            return
        self._place(proposal, ballot)

    def fold_withdraw(self, event_id: bytes, author: str, seq: int, ts: int) -> None:
        self.saw(author, ts)
        self.withdrawals.setdefault(author, (event_id, seq, ts))
        self.withdraw_ids[event_id] = author
        self.ticked.setdefault(author, []).append(event_id)

    def _place(self, proposal: Proposal, ballot: Ballot) -> None:
        if ballot.member in proposal.ballots:
            ballot.code = DOUBLE_VOTE  # the first vote counts (§5.8)
            proposal.extra_ballots.append(ballot)
            return
        proposal.ballots[ballot.member] = ballot
        if proposal.electorate is not None and ballot.member not in proposal.electorate:
            ballot.code = NOT_IN_ELECTORATE  # stays the member's first: a later one is double

    # -- evaluating ---------------------------------------------------------------------

    def evaluate(self) -> list[Effect]:
        """Bring every proposal as far as the events held allow, in (ts, id) order;
        returns the effects of decisions adopted by this call.

        A proposal may build on one stamped later (its proposer's clock behind the other
        author's): it is passed over until that one is final, so passes repeat while one
        makes a decision final (at most one pass per proposal). Otherwise it would wait
        for the next event to arrive, and at a restart its admission would come after
        the chains it lets in."""
        effects: list[Effect] = []
        for _ in range(len(self.order) + 1):
            decided = waiting = False
            for pid in self.order:
                p = self.proposals[pid]
                if p.final:
                    self._annotate(p)  # ballots arriving after the outcome are shown too
                    continue
                if p.electorate is None and not self._prepare(p):
                    waiting = True
                    continue
                self._tally(p)
                if p.final:
                    # At once, not at the next event: ballots a void proposal never
                    # looked at would otherwise show no code until then.
                    self._annotate(p)
                    decided = True
                    if p.outcome == "adopted":
                        effects.append(Effect(p.decision, p))
            if not (decided and waiting):
                break
        return effects

    def resolvable(self, p: Proposal) -> bool:
        """Every event P's basis names is held (a proposal or a withdrawal)."""
        return all(g in self.proposals or g in self.withdraw_ids for g in p.basis)

    def _basis_final(self, p: Proposal) -> bool:
        """Every event of the basis is held, and every decision in it final. An id not
        held yet is waited for, never skipped: it may be an adopted admission, amendment
        or a withdrawal, and a node that worked out the electorate and rules without it
        would fix them differently from a node that held it (the electorate and rules
        of a proposal are worked out once, for good)."""
        for gid in p.basis:
            q = self.proposals.get(gid)
            if q is None:
                if gid not in self.withdraw_ids:
                    return False
            elif not q.final:
                return False
        return True

    def _prepare(self, p: Proposal) -> bool:
        """Electorate and rules from the basis, once every event it names is held and
        every decision in it is final."""
        if not self._basis_final(p):
            p.reason = ("waits for earlier decisions it builds on to be final"
                        if self.resolvable(p) else
                        "waits for governance events it builds on to reach this node")
            return False
        members = set(self.founders)
        rules = dict(self.genesis_rules)
        version = 1
        basis = [self.proposals[g] for g in p.basis if g in self.proposals]  # all held
        for q in sorted(basis, key=lambda q: (q.ts, q.id)):
            if q.outcome != "adopted":
                continue
            if q.decision == "admission" and q.application is not None:
                members.add(q.application.member)
            elif q.decision == "rules":
                rules = dict(q.body["governance"])
                version += 1
        for gid in p.basis:
            withdrawn = self.withdraw_ids.get(gid)
            if withdrawn is not None:
                members.discard(withdrawn)
        p.electorate = tuple(sorted(members))
        p.rules_version = version
        p.rule = rules[p.decision]
        p.code = self._void_code(p, members)
        # A first ballot from outside the electorate stays the member's first ballot:
        # its later ones are double votes at every node, whichever came before the
        # electorate was known (the tally only ever counts the electorate's).
        for ballot in p.ballots.values():
            if ballot.member not in members:
                ballot.code = NOT_IN_ELECTORATE
        if p.author not in members:
            p.code = p.code or NOT_A_MEMBER
        return True

    def _void_code(self, p: Proposal, members: set[str]) -> str | None:
        if p.application is not None:
            app = p.application
            admitted = [q.application for q in self.proposals.values()
                        if q.id in p.basis and q.outcome == "adopted"
                        and q.application is not None]
            withdrawn = {self.withdraw_ids[g] for g in p.basis if g in self.withdraw_ids}
            observers = {a.member for a in admitted if a.role == "observer"} - withdrawn
            if app.member in members or app.member in observers:
                return ID_IN_USE
            # Keys as admitted (a founder's genesis key, an applicant's own): one holder
            # with two seats would have two votes. Compared as §5.2 compares founders'
            # keys: by the Ed25519 half.
            in_force = [self.founders[m] for m in members if m in self.founders]
            in_force += [a.key for a in admitted if a.member in members]
            if any(k.ed25519 == app.key.ed25519 for k in in_force):
                return KEY_IN_USE
            return None
        if p.decision == "key_recovery" and p.body["subject"] not in members:
            return NOT_A_MEMBER
        return None

    def window_end(self, member: str, p: Proposal) -> int | None:
        start = self.opened.get((member, p.id))
        if start is None or p.rule is None:
            return None
        return start + p.rule["window_ms"]

    def closed(self, member: str, p: Proposal) -> bool:
        """No vote of the member can count any more (§5.8)."""
        if member in self.withdrawals:
            return True
        end = self.window_end(member, p)
        return end is not None and self.head_ts.get(member, -1) > end

    def _tally(self, p: Proposal) -> None:
        assert p.electorate is not None and p.rule is not None
        if p.code is not None:
            p.outcome, p.final, p.reason = "rejected", True, f"void: {p.code}"
            self._annotate(p)  # none counts: each ballot gets its code now
            return
        rule = p.rule["rule"]
        n = len(p.electorate)
        yes = no = abstain = objections = 0
        for member in p.electorate:
            ballot = p.ballots.get(member)
            if ballot is None:
                continue
            end = self.window_end(member, p)
            wrong = (ballot.vote == "object") != (rule == "silence")
            if end is not None and ballot.ts > end:
                ballot.counted, ballot.code = False, VOTE_TOO_LATE
                continue
            if wrong and rule == "silence":
                ballot.counted, ballot.code = False, WRONG_VOTE_KIND
                continue
            ballot.counted, ballot.code = True, None
            if ballot.vote == "yes":
                yes += 1
            elif ballot.vote in ("no", "object"):
                no += 1
                objections += ballot.vote == "object"
            else:
                abstain += 1
        undecided = [m for m in p.electorate
                     if not (m in p.ballots and p.ballots[m].counted) and not self.closed(m, p)]
        still = len(undecided)
        if rule == "silence":
            if no:
                self._decide(p, "rejected", f"{no} objection(s) within the window")
            elif still == 0:
                self._decide(p, "adopted", "every member's window passed with no objection")
            else:
                p.reason = f"silence procedure: waiting for {still} member(s)' windows"
            return
        if rule == "consensus":
            need = n
        elif rule == "fraction":
            need = -(-p.rule["num"] * n // p.rule["den"])  # yes * den >= num * n
        else:
            need = p.rule["min"]
        if rule == "consensus" and (no or abstain or (n - yes - still) > 0):
            self._decide(p, "rejected", "consensus: a member did not vote yes in its window")
        elif yes >= need:
            self._decide(p, "adopted", f"{yes} yes of {n} (needed {need})")
        elif yes + still < need:
            self._decide(p, "rejected", f"{yes} yes and {still} still open: {need} cannot "
                                        f"be reached")
        else:
            p.reason = f"{yes} yes, {need} needed, {still} member(s) may still vote"

    def _annotate(self, p: Proposal) -> None:
        """Codes for ballots that do not count, on a final proposal (display only: the
        outcome is fixed)."""
        if p.electorate is None or p.rule is None:
            return
        for ballot in p.ballots.values():
            if ballot.counted or ballot.code is not None:
                continue
            end = self.window_end(ballot.member, p)
            if ballot.member not in p.electorate:
                ballot.code = NOT_IN_ELECTORATE
            elif end is not None and ballot.ts > end:
                ballot.code = VOTE_TOO_LATE
            elif (ballot.vote == "object") != (p.rule["rule"] == "silence") \
                    and p.rule["rule"] == "silence":
                ballot.code = WRONG_VOTE_KIND
            else:
                ballot.code = AFTER_FINAL

    @staticmethod
    def _decide(p: Proposal, outcome: str, reason: str) -> None:
        p.outcome, p.final, p.reason = outcome, True, reason

    # -- views ---------------------------------------------------------------------------

    def counts(self, p: Proposal) -> dict[str, int]:
        out = {"yes": 0, "no": 0, "abstain": 0, "object": 0}
        for ballot in p.ballots.values():
            if ballot.counted:
                out[ballot.vote] += 1
        return out

    def needed(self, p: Proposal) -> int | None:
        if p.rule is None or p.electorate is None:
            return None
        n = len(p.electorate)
        rule = p.rule["rule"]
        if rule == "consensus":
            return n
        if rule == "fraction":
            return -(-p.rule["num"] * n // p.rule["den"])
        if rule == "count":
            return int(p.rule["min"])
        return 0

    def awaiting(self, member: str) -> list[Proposal]:
        """Open proposals where ``member`` is in the electorate and has not voted."""
        return [p for p in (self.proposals[i] for i in self.order)
                if not p.final and p.electorate is not None and member in p.electorate
                and member not in p.ballots and not self.closed(member, p)]
