"""`pocnode audit --compare URL...`: split views found on demand (PROTOCOL.md §13.8).

Each node's public endpoint names, per author, the latest checkpoint it holds. Where two
nodes hold checkpoints of one author that differ, the author's chain is fetched from both
and verified from the genesis; if the chains part at some sequence, the two events there
are an equivocation proof (§4.5), checked with the same verifier as everything else and
printed. Chains where one is a prefix of the other only mean a node is behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import click

from pocnode.cli.audit_io import MAX_CHECKPOINTS_ANSWER, get, run_audit, url_chunks
from pocnode.cli.client import CliError
from pocnode.core import encoding
from pocnode.core.chain import Verifier, equivocation_proof
from pocnode.core.errors import PocError
from pocnode.core.events import Event, parse_event
from pocnode.core.genesis import parse_genesis

# Checkpoints answered per node: one per member.
MAX_CHECKPOINTS = 4096


@dataclass
class AuthorVerdict:
    author: str
    views: dict[str, tuple[int, str]] = field(default_factory=dict)  # url -> (size, root)
    verdict: str = "agree"
    proof: bytes = b""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"author": self.author, "verdict": self.verdict, "detail": self.detail,
                "views": {u: {"size": s, "root": r} for u, (s, r) in self.views.items()},
                "proof": self.proof.hex()}


def _checkpoints(url: str) -> tuple[bytes, dict[str, Event]]:
    resp = get(url, "/v1/peer/checkpoints")
    try:
        raw = resp.read(MAX_CHECKPOINTS_ANSWER + 1)
    finally:
        resp.close()
    try:
        msg = encoding.decode(raw, max_size=MAX_CHECKPOINTS_ANSWER)
        if type(msg) is not dict or type(msg.get("fed")) is not bytes \
                or type(msg.get("checkpoints")) is not list \
                or len(msg["checkpoints"]) > MAX_CHECKPOINTS:
            raise CliError(f"{url}: not a checkpoints answer")
        out: dict[str, Event] = {}
        for env in msg["checkpoints"]:
            event = parse_event(env)
            if event.kind == "checkpoint" and event.fed == msg["fed"]:
                out[event.author] = event
        return msg["fed"], out
    except PocError as exc:
        raise CliError(f"{url}: checkpoints answer refused: {exc}") from None


def _chain(url: str, author: str, expect: bytes) -> tuple[list[bytes], bytes | None]:
    """The author's chain in force as ``url`` holds it, verified; and the genesis."""
    report, raws, genesis = run_audit(url_chunks(url, author), expect=expect, total=None,
                             source=url, keep=author)
    if report.problems or any(m.problems for m in report.members if m.member == author):
        first = (report.problems or [p for m in report.members for p in m.problems])[0]
        raise CliError(f"{url}: {author}'s chain does not verify: {first.text()}")
    return raws, genesis


def compare_nodes(urls: list[str], *, expect: bytes | None, as_json: bool) -> int:
    if len(urls) < 2:
        raise CliError("--compare needs at least two URLs")
    views: dict[str, dict[str, Event]] = {}
    fed = expect
    for url in urls:
        their_fed, checkpoints = _checkpoints(url)
        if fed is None:
            fed = their_fed
        elif their_fed != fed:
            raise CliError(f"{url} is a node of federation {their_fed.hex()}, not "
                           f"{fed.hex()}")
        views[url] = checkpoints
    assert fed is not None
    verdicts: list[AuthorVerdict] = []
    chains: dict[tuple[str, str], list[bytes]] = {}
    genesis_raw: bytes | None = None
    for author in sorted({a for v in views.values() for a in v}):
        verdict = AuthorVerdict(author)
        for url in urls:
            cp = views[url].get(author)
            if cp is not None:
                verdict.views[url] = (cp.body["size"], cp.body["root"].hex())
        verdicts.append(verdict)
        if len(set(verdict.views.values())) <= 1:
            continue
        holders = sorted(verdict.views, key=lambda u: -verdict.views[u][0])
        for url in holders:
            if (url, author) not in chains:
                chains[(url, author)], genesis_raw = _chain(url, author, fed)
        base = holders[0]
        verdict.verdict = "behind"
        for other in holders[1:]:
            a, b = chains[(base, author)], chains[(other, author)]
            ids_a = [parse_event(r).id for r in a]
            ids_b = [parse_event(r).id for r in b]
            fork = next((i for i in range(min(len(ids_a), len(ids_b)))
                         if ids_a[i] != ids_b[i]), None)
            if fork is None:
                continue
            proof = equivocation_proof(a[fork], b[fork])
            assert genesis_raw is not None
            genesis = parse_genesis(genesis_raw)
            if genesis.id != fed:
                raise CliError("the genesis served is of another federation")
            verifier = Verifier(genesis)
            for raw in a[:fork]:
                verifier.ingest(raw)
            verifier.check_proof(proof)  # raises if it does not prove anything
            verdict.verdict = "disagree"
            verdict.proof = proof
            verdict.detail = (f"{base} and {other} hold different events of {author} at "
                              f"#{fork + 1}: {author} signed two histories")
            break
        if verdict.verdict == "behind":
            verdict.detail = "the shorter checkpoints are prefixes of the longer: nodes behind"
    if as_json:
        click.echo(json.dumps({"federation_id": fed.hex(),
                               "authors": [v.to_json() for v in verdicts]}, indent=2))
    else:
        from pocnode.cli.render import table

        table(f"checkpoints of {len(verdicts)} logs at {len(urls)} nodes",
              ["member", *urls, "verdict"],
              [(v.author, *(f"{v.views[u][0]} {v.views[u][1][:12]}" if u in v.views else "-"
                            for u in urls), v.verdict) for v in verdicts])
        for v in verdicts:
            if v.verdict == "disagree":
                click.echo(f"EQUIVOCATION {v.detail}\n  proof: {v.proof.hex()}")
    return 3 if any(v.verdict == "disagree" for v in verdicts) else 0
