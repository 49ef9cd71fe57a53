"""The auditor: a whole directory verified from its genesis, from public data alone
(PROTOCOL.md §13.7).

An auditor trusts nothing but the genesis it is given (or whose id it is told). It is
fed the records of an export bundle, from a file, a node's data directory or a node's
public endpoint, and runs on them the very code a node ingests with:

* every event goes through :class:`pocnode.core.chain.Verifier` (§4.1: signatures, chain
  links, key rotations, bodies, checkpoints' roots and notes);
* its meaning is folded by the engine's own fold table (:data:`engine.FOLDS`) into an
  :class:`~pocnode.core.engine.Engine` that holds no key and sends nothing, so records,
  keys, checkpoints, cosignatures (and governance outcomes, once the engine folds them)
  are what a node would make of the same events, not a second implementation;
* proofs go through :meth:`Verifier.check_proof` (§4.5), and freeze as §4.6 says.

Pure and streaming: records in, one at a time; a report out. Memory grows with the
number of events (32 bytes of id each), never with their bytes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pocnode.core import bundle
from pocnode.core.chain import AuthorChain, Verifier
from pocnode.core.engine import FOLDS, Engine, EngineConfig
from pocnode.core.errors import PocError
from pocnode.core.events import Event, parse_event
from pocnode.core.genesis import Genesis, parse_genesis
from pocnode.core.tlog import KIND_CHECKPOINT, KIND_COSIGN, disagreements

OK, EQUIVOCATION, FAILED = "ok", "equivocation", "failed"
# Exit statuses of `pocnode audit` (1 is the command line's own: it could not run).
EXIT = {OK: 0, FAILED: 2, EQUIVOCATION: 3}
# Problems listed one by one per author; after that they are counted. A single broken
# event makes every later one of its chain fail too, and the first names the cause.
MAX_LISTED_PER_AUTHOR = 3


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal, naming where it is (the bundle record), whose event and why (§9)."""

    where: str
    code: str
    message: str
    author: str | None = None
    seq: int | None = None
    event_id: str | None = None

    def text(self) -> str:
        who = f"{self.author} #{self.seq} " if self.author and self.seq else ""
        ident = f"(id {self.event_id[:16]}) " if self.event_id else ""
        return f"{self.where}: {who}{ident}{self.code}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "code": self.code, "message": self.message,
                "author": self.author, "seq": self.seq, "event_id": self.event_id}


@dataclass(frozen=True, slots=True)
class Finding:
    """Proof that an author showed two histories (§4.5), or a witness disagreement."""

    author: str
    seq: int
    kind: str           # "proof" | "witness"
    detail: str
    proof: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {"author": self.author, "seq": self.seq, "kind": self.kind,
                "detail": self.detail, "proof": self.proof.hex()}


@dataclass
class MemberReport:
    member: str
    name: str
    events: int = 0
    head_id: str | None = None
    head_ts: int | None = None
    keys: list[tuple[int, str]] = field(default_factory=list)   # (from seq, ed25519 hex)
    record_seq: int | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    checkpoint: dict[str, Any] | None = None                    # latest: size, root, seq
    witnesses: list[str] = field(default_factory=list)          # of the latest checkpoint
    cosign_events: int = 0
    frozen_at: int | None = None
    forked: int = 0
    problems: list[Problem] = field(default_factory=list)
    unlisted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"member": self.member, "name": self.name, "events": self.events,
                "head_id": self.head_id, "head_ts": self.head_ts,
                "keys": [{"from_seq": s, "ed25519": k} for s, k in self.keys],
                "record_seq": self.record_seq, "kinds": self.kinds,
                "checkpoints": self.checkpoints, "checkpoint": self.checkpoint,
                "witnesses": self.witnesses, "cosign_events": self.cosign_events,
                "equivocated_at": self.frozen_at, "forked_evidence": self.forked,
                "problems": [p.to_json() for p in self.problems],
                "problems_not_listed": self.unlisted}


@dataclass
class AuditReport:
    federation_id: str | None
    federation: str | None
    source: str
    records: int
    events: int
    members: list[MemberReport]
    problems: list[Problem]           # not tied to one member
    findings: list[Finding]
    warnings: list[str]

    @property
    def failures(self) -> int:
        return len(self.problems) + sum(len(m.problems) + m.unlisted for m in self.members)

    @property
    def status(self) -> str:
        if self.failures:
            return FAILED
        return EQUIVOCATION if self.findings else OK

    @property
    def exit_code(self) -> int:
        return EXIT[self.status]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "exit_code": self.exit_code,
                "federation_id": self.federation_id, "federation": self.federation,
                "source": self.source, "records": self.records, "events": self.events,
                "failures": self.failures, "members": [m.to_json() for m in self.members],
                "problems": [p.to_json() for p in self.problems],
                "findings": [f.to_json() for f in self.findings], "warnings": self.warnings}


class Auditor:
    """Feed it a bundle's records in order (:meth:`add`), then :meth:`finish`."""

    def __init__(self, *, expect_federation: bytes | None = None) -> None:
        self.expect = expect_federation
        self.header: bundle.Header | None = None
        self.genesis: Genesis | None = None
        self.engine: Engine | None = None
        self.records = 0
        self.events = 0
        self.problems: list[Problem] = []
        self._by_author: dict[str, list[Problem]] = {}
        self._unlisted: Counter[str] = Counter()
        self._broken: set[str] = set()
        self._kinds: dict[str, Counter[str]] = {}
        self._branches: dict[str, Verifier] = {}     # forked evidence, per author
        self._forked: Counter[str] = Counter()
        self._findings: list[Finding] = []
        self._ended = False
        self._stream_failed = False

    # -- feeding ------------------------------------------------------------------------

    def add(self, record: bundle.Record) -> None:
        self.records += 1
        if record.type == bundle.HEADER:
            self.header = record.header
            if self.expect is not None and record.header and record.header.fed != self.expect:
                self._fail(record.where, "wrong_federation",
                           f"the bundle is of federation {record.header.fed.hex()}, not the "
                           f"expected {self.expect.hex()}")
        elif record.type == bundle.GENESIS:
            self._genesis(record)
        elif record.type == bundle.END:
            self._ended = True
        elif self.engine is None:
            self._fail(record.where, "malformed", "no valid genesis to verify against")
        elif record.type == bundle.EVENT:
            self._event(record)
        elif record.type == bundle.FORKED:
            self._forked_event(record)
        elif record.type == bundle.PROOF:
            self._proof(record)

    def fail(self, error: PocError) -> None:
        """A fault of the stream itself (the reader's), where it stopped."""
        self._stream_failed = True
        self._fail(error.path or "bundle", error.code, error.message)

    def _fail(self, where: str, code: str, message: str, event: Event | None = None,
              author: str | None = None) -> None:
        author = event.author if event is not None else author
        problem = Problem(where, code, message, author,
                          event.seq if event is not None else None,
                          event.id.hex() if event is not None else None)
        if author is None or self.engine is None or not self.engine.is_member(author):
            self.problems.append(problem)
            return
        listed = self._by_author.setdefault(author, [])
        if len(listed) < MAX_LISTED_PER_AUTHOR:
            listed.append(problem)
        else:
            self._unlisted[author] += 1

    def _genesis(self, record: bundle.Record) -> None:
        try:
            genesis = parse_genesis(record.data)
        except PocError as exc:
            self._fail(record.where, exc.code, f"genesis: {exc.message}")
            return
        if self.header is not None and genesis.id != self.header.fed:
            self._fail(record.where, "wrong_federation",
                       f"the genesis is of federation {genesis.id.hex()}, the header says "
                       f"{self.header.fed.hex()}")
            return
        if self.expect is not None and genesis.id != self.expect:
            return  # said at the header
        self.genesis = genesis
        # An engine that holds no key and has no peers to talk to: only its folds run.
        self.engine = Engine(genesis=genesis, member=genesis.founders[0].id,
                             key=None,  # type: ignore[arg-type]
                             config=EngineConfig(), rng=None,  # type: ignore[arg-type]
                             random_bytes=bytes, hpke=None, pin=None, now=0)

    def _event(self, record: bundle.Record) -> None:
        assert self.engine is not None
        try:
            event = parse_event(record.data)
        except PocError as exc:
            self._fail(record.where, exc.code, f"{exc.message} (at {exc.path or 'envelope'})")
            return
        if event.author in self._broken:
            self._fail(record.where, "not_checked", "follows a refused event of its author",
                       event)
            return
        verifier = self.engine.verifier
        try:
            verifier.check(event)                              # §4.1, as a node ingests
        except PocError as exc:
            if self.engine.is_member(event.author):
                self._broken.add(event.author)
            self._fail(record.where, exc.code,
                       f"{exc.message}" + (f" (at {exc.path})" if exc.path else ""), event)
            return
        verifier.apply(event)
        self.events += 1
        self._kinds.setdefault(event.author, Counter())[event.kind] += 1
        fold = FOLDS.get(event.kind)
        if fold is not None:
            try:
                fold(self.engine, event, True)                 # the node's own fold
            except PocError as exc:
                self._fail(record.where, exc.code, f"its effects: {exc.message}", event)

    def _forked_event(self, record: bundle.Record) -> None:
        """Evidence kept past a proven fork (§4.6): it must verify as a continuation of
        the chain in force, on a branch of its own; it changes nothing."""
        assert self.engine is not None
        try:
            event = parse_event(record.data)
        except PocError as exc:
            self._fail(record.where, exc.code, f"forked evidence: {exc.message}")
            return
        if not self.engine.is_member(event.author):
            self._fail(record.where, "unknown_author", "forked evidence of a non-member", event)
            return
        branch = self._branches.get(event.author)
        if branch is None:
            branch = self._branches[event.author] = Verifier(self.engine.genesis)
            main = self.engine.verifier.chain(event.author)
            branch.chains[event.author] = AuthorChain(
                author=event.author, keys=list(main.keys), ids=list(main.ids),
                head_ts=main.head_ts)
        self._forked[event.author] += 1
        try:
            branch.ingest(event)
        except PocError as exc:
            self._fail(record.where, exc.code, f"forked evidence: {exc.message}", event)

    def _proof(self, record: bundle.Record) -> None:
        assert self.engine is not None
        engine = self.engine
        try:
            author, seq = engine.verifier.check_proof(record.data)       # §4.5
        except PocError as exc:
            branch = self._branch_for(record.data)
            if exc.code != "sequence_gap" or branch is None:
                self._fail(record.where, exc.code, f"proof: {exc.message}")
                return
            try:
                author, seq = branch.check_proof(record.data)
            except PocError as again:
                self._fail(record.where, again.code, f"proof: {again.message}")
                return
        self._findings.append(Finding(author, seq, "proof",
                                      f"{author} signed two events at #{seq}", record.data))
        chain = engine.verifier.chain(author)
        if chain.seq >= seq:
            self._fail(record.where, "equivocated",
                       f"the bundle's chain of {author} runs to #{chain.seq}, past its proven "
                       f"fork at #{seq} (§4.6: the chain in force ends before it)",
                       author=author)
        if author not in engine.frozen or seq < engine.frozen[author]:
            engine.frozen[author] = seq
            engine.verifier.freeze(author, seq, chain.head_ts)

    def _branch_for(self, proof: bytes) -> Verifier | None:
        try:
            from pocnode.core.chain import parse_proof
            return self._branches.get(parse_proof(proof)[0].author)
        except PocError:
            return None

    # -- the report ---------------------------------------------------------------------------

    def finish(self, source: str = "") -> AuditReport:
        if not self._ended and not self._stream_failed:
            self._fail("bundle", "truncated", "the bundle has no end record")
        engine, genesis = self.engine, self.genesis
        warnings: list[str] = []
        members: list[MemberReport] = []
        if engine is not None and genesis is not None:
            verifier = engine.verifier
            heads = {a: c.seq for a, c in verifier.chains.items()}
            bad, ahead = disagreements(engine.tlog, lambda a: verifier.chain(a).id_at, heads)
            for d in bad:
                self._findings.append(Finding(
                    d.log, d.size + 1, "witness",
                    f"{d.witness} cosigned {d.log}'s log at size {d.size} with root "
                    f"{d.theirs.hex()[:16]}, the chain holds {d.ours.hex()[:16]}: {d.log} "
                    f"showed {d.witness} another history, or {d.witness} signed a false one"))
            for c in ahead:
                warnings.append(f"{c.witness} cosigned a checkpoint of a log at size {c.size}; "
                                f"the bundle holds fewer of its events (the exporting node is "
                                f"behind, or events were left out)")
            for founder in genesis.founders:
                members.append(self._member(founder.id, founder.name))
        return AuditReport(
            federation_id=genesis.id.hex() if genesis else None,
            federation=genesis.name if genesis else None, source=source,
            records=self.records, events=self.events, members=members,
            problems=self.problems, findings=self._findings, warnings=warnings)

    def _member(self, member: str, name: str) -> MemberReport:
        assert self.engine is not None
        engine = self.engine
        chain = engine.verifier.chains.get(member)
        report = MemberReport(member=member, name=name)
        if chain is not None:
            report.events = chain.seq
            report.head_id = chain.head_id.hex() if chain.head_id else None
            report.head_ts = chain.head_ts if chain.ids else None
            report.keys = [(s, k.ed25519.hex()) for s, k in chain.keys]
            report.frozen_at = chain.frozen_at
        else:
            report.keys = [(1, engine.verifier.members[member].ed25519.hex())]
        record = engine.records.get(member)
        report.record_seq = record.seq if record is not None else None
        report.kinds = dict(sorted(self._kinds.get(member, Counter()).items()))
        tl = engine.tlog
        report.checkpoints = tl.counts.get(member, 0)
        cp = tl.checkpoints.get(member)
        if cp is not None:
            report.checkpoint = {"seq": cp.seq, "size": cp.size, "root": cp.root.hex()}
            report.witnesses = [c.witness for c in tl.witnesses(member)]
        report.cosign_events = tl.cosign_events.get(member, 0)
        report.forked = self._forked.get(member, 0)
        report.problems = list(self._by_author.get(member, []))
        report.unlisted = self._unlisted.get(member, 0)
        return report


def audit_bytes(data: bytes, **kw: Any) -> AuditReport:
    """A whole bundle in memory (tests, vectors)."""
    auditor = Auditor(**kw)
    reader = bundle.BundleReader()
    try:
        for record in reader.feed(data):
            auditor.add(record)
        reader.close()
    except PocError as exc:
        auditor.fail(exc)
    return auditor.finish()


__all__ = ["EQUIVOCATION", "EXIT", "FAILED", "OK", "AuditReport", "Auditor", "Finding",
           "MemberReport", "Problem", "audit_bytes", "KIND_CHECKPOINT", "KIND_COSIGN"]
