"""Checkpoints and cosignatures (PROTOCOL.md §13) through the engine, with no I/O."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pocnode.core import merkle, note, tlog
from pocnode.core.chain import Verifier, equivocation_proof
from pocnode.core.engine import UnderLock
from pocnode.core.errors import InvalidBody
from pocnode.core.events import build_event, parse_event
from tests.unit.engine_kit import World, record


class TlogWorld(World):
    """The kit's world, carrying out the one effect the transparency log adds."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        for engine in self.engines.values():
            engine.config = dataclasses.replace(engine.config, checkpoint_interval_ms=1000,
                                                cosign_interval_ms=1000)

    def carry_out(self, node: str, effect: Any) -> Any:
        if isinstance(effect, UnderLock):
            return self.run(node, effect.sequence)
        return super().carry_out(node, effect)

    def tick(self, seconds: int = 2) -> list[str]:
        """Advance the clock and run whatever checkpoint or cosign is due, everywhere."""
        self.now += seconds * 1000
        ran = []
        for m, engine in self.engines.items():
            for name, steps in engine.tlog_due(self.now):
                self.run(m, steps)
                ran.append(f"{m}:{name}")
        return ran


def _chain_ids(world: World, node: str, author: str) -> list[bytes]:
    return list(world.engines[node].verifier.chain(author).ids)


def test_checkpoints_are_published_witnessed_and_verify_as_c2sp_notes() -> None:
    world = TlogWorld()
    for m in world.engines:
        world.publish(m, world.engines[m].compile_record(record(m, "1")))
    world.settle(3)
    assert world.tick(0) == []  # not one interval after start yet
    ran: list[str] = []
    for _ in range(4):
        ran += world.tick()
        world.settle(2)
    assert sorted(r for r in ran if r.endswith("checkpoint")) == [
        f"{m}:checkpoint" for m in sorted(world.engines)]
    assert {r for r in ran if r.endswith("cosign")} == {f"{m}:cosign" for m in world.engines}
    # Bounded: cosign events need no checkpoint, and nothing new is left to cosign.
    assert world.tick() == [] and world.tick(600) == []
    atl = world.engines["ATL"]
    fed = world.genesis.id
    for log in world.engines:
        cp = atl.tlog.checkpoints[log]
        ids = _chain_ids(world, "ATL", log)
        assert cp.size == cp.seq - 1 and cp.root == merkle.tree_hash(ids[:cp.size])
        assert {c.witness for c in atl.tlog.witnesses(log)} == set(world.engines) - {log}
        text = atl.tlog.signed_note(log)
        signed = note.parse_note(text)
        checkpoint = note.parse_checkpoint(signed.text)
        assert checkpoint.origin == tlog.origin(fed, log) == f"pocnode/{fed.hex()}/{log}"
        vkeys = [note.VerifierKey.parse(v) for v in atl.tlog.vkeys(log)]
        assert len(vkeys) == len(signed.signatures) == 3
        for vkey, sig in zip(vkeys, signed.signatures, strict=True):
            assert note.verify_signature(vkey, checkpoint, sig)


def test_a_witness_refuses_nothing_it_did_not_see_and_disagreements_are_found() -> None:
    world = TlogWorld()
    world.publish("ATL", world.engines["ATL"].compile_record(record("ATL", "1")))
    world.settle(2)
    world.tick()
    world.settle(2)
    world.tick()
    world.settle(2)
    state = world.engines["CAL"].tlog
    chains = world.engines["CAL"].verifier
    heads = {a: c.seq for a, c in chains.chains.items()}
    bad, ahead = tlog.disagreements(state, lambda a: chains.chain(a).id_at, heads)
    assert bad == [] and ahead == []
    # A forged view: BOR's cosignature of ATL as if it were at another root.
    cosig = state.cosigs["ATL"]["BOR"]
    state.cosigs["ATL"]["BOR"] = dataclasses.replace(cosig, root=bytes(32))
    bad, _ = tlog.disagreements(state, lambda a: chains.chain(a).id_at, heads)
    assert [(d.log, d.witness, d.size) for d in bad] == [("ATL", "BOR", cosig.size)]


def _checkpoint_event(world: World, author: str, seq: int, prev: bytes | None, size: int,
                      root: bytes, **change: Any) -> bytes:
    signer = tlog.NoteSigner(world.keys[author])
    body = tlog.checkpoint_body(signer, world.genesis.id, author, size, root, world.now // 1000)
    body.update(change)
    return build_event(world.keys[author], fed=world.genesis.id, author=author, seq=seq,
                       prev=prev, kind=tlog.KIND_CHECKPOINT, ts=world.now, body=body)


def test_a_checkpoint_must_tell_the_truth_about_its_own_chain() -> None:
    world = World()
    v = Verifier(world.genesis)
    first = build_event(world.keys["ATL"], fed=world.genesis.id, author="ATL", seq=1,
                        prev=None, kind="node.keys", ts=world.now, body={"tls": bytes(32)})
    first_id = v.ingest(first).id
    good_root = merkle.tree_hash([first_id])
    with pytest.raises(InvalidBody, match="size 1, not 2"):
        v.check(_checkpoint_event(world, "ATL", 2, first_id, 2, good_root))
    with pytest.raises(InvalidBody, match="root is not"):
        v.check(_checkpoint_event(world, "ATL", 2, first_id, 1, bytes(32)))
    forged = _checkpoint_event(world, "ATL", 2, first_id, 1, good_root)
    body = parse_event(forged).body
    body["sig"] = {"ed25519": bytes(64)}
    with pytest.raises(InvalidBody, match="does not verify"):
        v.check(_checkpoint_event(world, "ATL", 2, first_id, 1, good_root, sig=body["sig"]))
    assert v.ingest(_checkpoint_event(world, "ATL", 2, first_id, 1, good_root)).seq == 2


def test_two_checkpoints_of_one_size_with_different_roots_are_an_equivocation_proof() -> None:
    world = World()
    v = Verifier(world.genesis)
    one = build_event(world.keys["ATL"], fed=world.genesis.id, author="ATL", seq=1, prev=None,
                      kind="node.keys", ts=world.now, body={"tls": bytes(32)})
    other = build_event(world.keys["ATL"], fed=world.genesis.id, author="ATL", seq=1,
                        prev=None, kind="node.keys", ts=world.now, body={"tls": b"\x01" * 32})
    i1, i2 = parse_event(one).id, parse_event(other).id
    c1 = _checkpoint_event(world, "ATL", 2, i1, 1, merkle.tree_hash([i1]))
    c2 = _checkpoint_event(world, "ATL", 2, i2, 1, merkle.tree_hash([i2]))
    v.ingest(one)
    v.ingest(c1)
    assert v.check_proof(equivocation_proof(c1, c2)) == ("ATL", 2)
