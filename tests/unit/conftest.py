"""Small federations built from the core, for unit tests (no I/O)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from pocnode.core.chain import Verifier
from pocnode.core.disclosure import compile_record
from pocnode.core.events import build_event
from pocnode.core.genesis import (
    Genesis,
    assemble,
    build_payload,
    default_governance,
    parse_genesis,
    sign_payload,
)
from pocnode.core.keys import ED25519, HYBRID, SigningKey
from pocnode.core.record import example_record

T0 = 1_767_225_600_000


class Salts:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return hashlib.sha256(b"unit salt %d" % self.n).digest()[:size]


@dataclass
class Fed:
    alg: str
    keys: dict[str, SigningKey]
    genesis: Genesis
    heads: dict[str, tuple[int, bytes | None]] = field(default_factory=dict)

    @property
    def id(self) -> bytes:
        return self.genesis.id

    def verifier(self) -> Verifier:
        return Verifier(self.genesis)

    def event(self, author: str, kind: str = "record", body: dict | None = None, *,
              seq: int | None = None, prev: bytes | None = None, ts: int | None = None,
              key: SigningKey | None = None) -> bytes:
        """The author's next event (tracking heads), unless seq/prev are given."""
        from pocnode.core.events import parse_event

        head_seq, head_id = self.heads.get(author, (0, None))
        seq = head_seq + 1 if seq is None else seq
        prev = head_id if prev is None and seq > 1 else prev
        body = compile_record(example_record(), Salts()).body if body is None else body
        data = build_event(key or self.keys[author], fed=self.id, author=author, seq=seq,
                           prev=prev, kind=kind, ts=T0 + seq, body=body)
        if seq == head_seq + 1:
            self.heads[author] = (seq, parse_event(data).id)
        return data


def make_fed(alg: str = ED25519, members: tuple[str, ...] = ("ATL", "BOR", "CAL")) -> Fed:
    keys = {m: SigningKey.generate(alg) for m in members}
    founders = [{"id": m, "name": f"State {m}", "key": k.public_key, "endpoints": []}
                for m, k in keys.items()]
    payload = build_payload(name="Unit federation", created=T0, sig_alg=alg,
                            founders=founders, governance=default_governance())
    doc = assemble(payload, {m: sign_payload(payload, k) for m, k in keys.items()})
    return Fed(alg=alg, keys=keys, genesis=parse_genesis(doc))


@pytest.fixture(scope="session")
def fed() -> Fed:
    return make_fed(ED25519)


@pytest.fixture(scope="session")
def hybrid_fed() -> Fed:
    return make_fed(HYBRID)
