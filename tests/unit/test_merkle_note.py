"""RFC 6962 hashes and C2SP signed notes, against definitions and an outside implementation.

``tlog_scales`` (PyPI ``tlog-scales``, a third-party tlog-tiles library) checks our
consistency proofs and our signed notes with its own code: it shares no line with
pocnode/core/merkle.py or note.py.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa
from hypothesis import given, settings
from hypothesis import strategies as st
from tlog_scales import signing as ts_signing
from tlog_scales import tlog as ts_tlog

from pocnode.core import merkle, note
from pocnode.core.errors import Malformed


def _naive(leaves: list[bytes]) -> bytes:
    """MTH exactly as RFC 6962 §2.1 writes it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _naive(leaves[:k]) + _naive(leaves[k:])).digest()


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]


def test_known_roots() -> None:
    assert merkle.tree_hash([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    # RFC 6962's leaf prefix: one leaf's root is SHA-256(0x00 || leaf).
    assert merkle.tree_hash([b""]) == hashlib.sha256(b"\x00").digest()


@given(st.integers(min_value=0, max_value=70))
def test_frontier_matches_the_definition(n: int) -> None:
    leaves = _leaves(n)
    assert merkle.tree_hash(leaves) == _naive(leaves)
    f = merkle.Frontier()
    for i, leaf in enumerate(leaves):
        f.append(leaf)
        assert f.root() == _naive(leaves[:i + 1])


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=40), st.data())
def test_consistency_proofs_verify_here_and_in_tlog_scales(n: int, data) -> None:
    m = data.draw(st.integers(min_value=0, max_value=n))
    leaves = _leaves(n)
    old, new = merkle.tree_hash(leaves[:m]), merkle.tree_hash(leaves)
    proof = merkle.consistency_proof(leaves, m)
    assert merkle.verify_consistency(m, n, old, new, proof)
    ts_tlog.ConsistencyProof(m, n, proof).check(old, new)  # raises if it does not hold
    if 0 < m < n:
        assert not merkle.verify_consistency(m, n, new, new, proof)
        assert not merkle.verify_consistency(m, n, old, old, proof)
        other = _leaves(n + 1)[1:]
        assert not merkle.verify_consistency(m, n, old, merkle.tree_hash(other), proof)


def _cp() -> note.Checkpoint:
    return note.Checkpoint("example.org/log", 5, merkle.tree_hash(_leaves(5)))


def test_signed_note_verifies_with_tlog_scales_for_each_type() -> None:
    cp = _cp()
    log = ed25519.Ed25519PrivateKey.generate()
    wit = ed25519.Ed25519PrivateKey.generate()
    ml = mldsa.MLDSA44PrivateKey.generate()
    sigs = (note.sign_checkpoint(log, cp.origin, cp),
            note.cosign_ed25519(wit, "example.org/witness", cp, 1_700_000_000),
            note.cosign_mldsa44(ml, "example.org/pq-witness", cp, 1_700_000_001))
    text = note.SignedNote(cp.text(), sigs).render()
    vkeys = [note.VerifierKey(cp.origin, note.SIG_ED25519, log.public_key().public_bytes_raw()),
             note.VerifierKey("example.org/witness", note.SIG_COSIGNATURE_V1,
                              wit.public_key().public_bytes_raw()),
             note.VerifierKey("example.org/pq-witness", note.SIG_MLDSA44_SUBTREE,
                              ml.public_key().public_bytes_raw())]
    theirs = ts_tlog.Checkpoint.from_text(text)
    assert (theirs.origin, theirs.size, theirs.root_hash) == (cp.origin, cp.size, cp.root)
    for vkey, sig in zip(vkeys, sigs, strict=True):
        theirs.verify(ts_signing.Vkey.from_string(vkey.text()))  # raises if not
        assert note.verify_signature(vkey, cp, sig)
        assert note.VerifierKey.parse(vkey.text()) == vkey
    parsed = note.parse_note(text)
    assert parsed.text == cp.text() and parsed.signatures == sigs
    assert note.parse_checkpoint(parsed.text) == cp
    # A signature under another key or name, or over another checkpoint, does not verify.
    other = note.Checkpoint(cp.origin, 6, cp.root)
    assert not note.verify_signature(vkeys[0], other, sigs[0])
    assert not note.verify_signature(vkeys[1], cp, sigs[0])


def test_the_c2sp_example_vkey_and_note() -> None:
    """signed-note's own example: vkey example.com/foo verifies its note."""
    vkey = note.VerifierKey.parse(
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    signed = note.parse_note(
        "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6Tf"
        "Xppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
    sig = signed.signatures[0]
    assert sig.key_id == vkey.id
    key = ed25519.Ed25519PublicKey.from_public_bytes(vkey.public)
    key.verify(sig.signature, signed.text.encode())  # raises if not


@pytest.mark.parametrize("text", [
    "",                                              # nothing
    "a\n1\nAAAA\n",                                  # no signature block
    "a\n\n— name\n",                                 # no base64
    "a\n\n- name AAAAAAA=\n",                        # hyphen, not an em dash
    "a\x01\n\n— name AAAAAAA=\n",                    # control character
    "a\n\n— na+me AAAAAAA=\n",                       # plus in a key name
    "a\n\n— name AAAA\n",                            # shorter than a key id and a byte
])
def test_malformed_notes_are_refused(text: str) -> None:
    with pytest.raises(Malformed):
        note.parse_note(text)


@pytest.mark.parametrize("text", ["o\n01\nAAAA\n", "o\n1\nAAAA\n", "o\n1\n" + "A" * 44 + "\nx\n",
                                  "\n1\n" + "A" * 43 + "=\n"])
def test_checkpoints_are_exactly_three_lines(text: str) -> None:
    with pytest.raises(Malformed):
        note.parse_checkpoint(text)
