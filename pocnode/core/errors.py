"""The one exception hierarchy; each ``code`` is a row of PROTOCOL.md §9.

Messages say what was expected and what came. ``path`` names where, in the
notation of PROTOCOL.md §1.3 (``body.entries[2].email``), when the error is
about one field. A test checks that every code here is in the spec's table and
that the table names no code missing here.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PocError(Exception):
    """Base of every error pocnode raises on purpose."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.code}{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable form the APIs return and the CLI prints."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.path:
            out["path"] = self.path
        return out


# -- §2 canonical encoding ---------------------------------------------------


class EncodingError(PocError):
    """The bytes are not the one canonical msgpack form of any value (§2)."""

    code = "encoding"


class Oversize(EncodingError):
    """Input longer than the limit for its context."""

    code = "oversize"


class Truncated(EncodingError):
    """Input ends before the value it started is complete."""

    code = "truncated"


class TrailingBytes(EncodingError):
    """Bytes follow the one top-level value."""

    code = "trailing_bytes"


class ForbiddenType(EncodingError):
    """A float, an extension type or the unused byte 0xc1."""

    code = "forbidden_type"


class NonMinimal(EncodingError):
    """A value not written in its shortest form."""

    code = "non_minimal"


class InvalidUtf8(EncodingError):
    """A str whose bytes are not UTF-8."""

    code = "invalid_utf8"


class MapKeyType(EncodingError):
    """A map key that is not a str."""

    code = "map_key_type"


class UnsortedKeys(EncodingError):
    """Map keys not in ascending order of their encoded bytes."""

    code = "unsorted_keys"


class DuplicateKey(EncodingError):
    """The same key twice in one map."""

    code = "duplicate_key"


class TooDeep(EncodingError):
    """Containers nested deeper than the limit."""

    code = "too_deep"


# -- §3, §4 events -------------------------------------------------------------


class Malformed(PocError):
    """Canonical bytes of the wrong shape: a field missing, extra, of the wrong type or range."""

    code = "malformed"


class UnsupportedVersion(PocError):
    """A protocol version this implementation does not speak."""

    code = "unsupported_version"


class WrongFederation(PocError):
    """Bound to another federation's genesis."""

    code = "wrong_federation"


class UnknownKind(PocError):
    """An event kind not specified for this protocol version (reserved ones included)."""

    code = "unknown_kind"


class UnknownAuthor(PocError):
    """The author is not a member of this federation."""

    code = "unknown_author"


class WrongAlgorithm(PocError):
    """A signature algorithm other than the one the genesis chose."""

    code = "wrong_algorithm"


class BadSignature(PocError):
    """A signature that does not verify under the key it must verify under."""

    code = "bad_signature"


class InvalidBody(PocError):
    """The body does not follow the rules of its kind."""

    code = "invalid_body"


# -- §4 chains -----------------------------------------------------------------


class ChainError(PocError):
    """The event is well-formed and signed but does not extend its author's chain."""

    code = "chain"


class Duplicate(ChainError):
    """Already held: the same event id at that sequence. Ingest treats it as a no-op."""

    code = "duplicate"


class Equivocation(ChainError):
    """A second, different, validly signed event at a sequence already held.

    The caller builds the proof (§4.5) from the event it holds and ``event``.
    """

    code = "equivocation"

    def __init__(self, message: str, *, author: str, seq: int, held_id: bytes,
                 event: Any, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.author = author
        self.seq = seq
        self.held_id = held_id
        self.event = event  # the new, conflicting Event; the caller holds the first


class SequenceGap(ChainError):
    """The event is ahead of the next sequence; its predecessors are missing.

    ``event`` is the parsed event when there is one, so a caller that keeps it aside
    for later does not decode it again.
    """

    code = "sequence_gap"

    def __init__(self, message: str, *, path: str | None = None, event: Any = None) -> None:
        super().__init__(message, path=path)
        self.event = event


class Equivocated(ChainError):
    """The author is proven to have signed two histories; nothing from the fork on is
    accepted (§4.6)."""

    code = "equivocated"


class Withdrawn(ChainError):
    """The author withdrew (§5.9): its chain takes no event after the withdrawal."""

    code = "withdrawn"


class KindNotAllowed(ChainError):
    """An observer wrote a kind only members may write (§5.6)."""

    code = "kind_not_allowed"


class WrongPrev(ChainError):
    """The previous-hash does not name the author's current head."""

    code = "wrong_prev"


class TimestampRegression(ChainError):
    """The author's timestamp is earlier than its previous event's."""

    code = "timestamp_regression"


class TimestampInFuture(ChainError):
    """The author's timestamp is further ahead of the receiver's clock than allowed."""

    code = "timestamp_in_future"


class NotEquivocation(PocError):
    """A claimed equivocation proof whose two events do not conflict."""

    code = "not_equivocation"


# -- §5 genesis, §6 records and disclosures -------------------------------------


class MissingSignature(PocError):
    """A founder has not signed the genesis."""

    code = "missing_signature"


class InvalidRecord(PocError):
    """An author's plaintext contact record breaks the template (§6)."""

    code = "invalid_record"


class DisclosureMismatch(PocError):
    """A disclosure whose digest is not among the record's digests."""

    code = "disclosure_mismatch"


# -- §5.6-§5.10 governance: why a vote or a proposal does not count --------------------
# The events stay in their authors' chains (they are validly signed); a tally shows each
# ballot or proposal it does not count with one of these codes, and the operator API
# refuses to write one with them.


class GovernanceError(PocError):
    """Family of the tally's codes; never raised itself."""

    code = "governance"


class NotInElectorate(GovernanceError):
    """The voter is not in the proposal's electorate (joined after it, or withdrew)."""

    code = "not_in_electorate"


class DoubleVote(GovernanceError):
    """A member's second vote on one proposal: the first counts."""

    code = "double_vote"


class VoteTooLate(GovernanceError):
    """A vote stamped after the voter's window for the proposal ended."""

    code = "vote_too_late"


class WrongVoteKind(GovernanceError):
    """A yes/no/abstain under the silence procedure (only objections count there)."""

    code = "wrong_vote_kind"


class AfterFinal(GovernanceError):
    """A vote that arrived after the outcome was final: shown, never counted."""

    code = "after_final"


class KeyInUse(GovernanceError):
    """An application whose key is already a member's (one holder, two seats)."""

    code = "key_in_use"


class IdInUse(GovernanceError):
    """An application for an id that is already a member's or an observer's."""

    code = "id_in_use"


class NotAMember(GovernanceError):
    """A proposal by, or about, someone who is not a member of its electorate."""

    code = "not_a_member"
# -- §12 communication requests: refusals of what a sealed message says -----------------


class NotParty(PocError):
    """A request status or publication by a member who may not make it: a receipt,
    acknowledgement, answer or decline by anyone but the recipient; a publication or consent
    to publish by anyone but the two parties (§12.4)."""

    code = "not_party"


class Replay(PocError):
    """A request id its sender already used, or a status its author already gave (§12.4)."""

    code = "replay"


class UnknownRequest(PocError):
    """A status naming a request this node does not hold (§12.4)."""

    code = "unknown_request"


class OutOfOrder(PocError):
    """A status that cannot follow the request's state: after an answer or a decline, or
    going back (§12.4)."""

    code = "out_of_order"


# -- outside the wire protocol -----------------------------------------------------


class Unauthenticated(PocError):
    """A peer request that needs a member's token lacks a valid one (§8.2)."""

    code = "unauthenticated"


class RateLimited(PocError):
    """Too many requests or connections from one peer, member or operator; slow down."""

    code = "rate_limited"


class NotFound(PocError):
    """No such route, member, record or object."""

    code = "not_found"


class MethodNotAllowed(PocError):
    """The route exists, not with that method."""

    code = "method_not_allowed"


class InvalidRequest(PocError):
    """An operator or peer request that is well-formed but asks for something that cannot
    be done (consent to oneself, say); the message says what and why."""

    code = "invalid_request"


class NoChange(PocError):
    """The request would change nothing (an offer already standing, say); nothing was
    written."""

    code = "no_change"


class Busy(PocError):
    """The node is doing something that must not run twice at once (a key rotation);
    try again when it has finished."""

    code = "busy"


class StoreError(PocError):
    """The database cannot be used as it is (foreign, newer, corrupt, of another node) or
    cannot be written (a full disk): a fault of this node, never a verdict on input."""

    code = "store"


class KeyFileError(PocError):
    """A key file that cannot be read: wrong passphrase, wrong format, unsafe mode."""

    code = "key_file"


ALL_ERRORS: tuple[type[PocError], ...] = (
    PocError,
    EncodingError,
    Oversize,
    Truncated,
    TrailingBytes,
    ForbiddenType,
    NonMinimal,
    InvalidUtf8,
    MapKeyType,
    UnsortedKeys,
    DuplicateKey,
    TooDeep,
    Malformed,
    UnsupportedVersion,
    WrongFederation,
    UnknownKind,
    UnknownAuthor,
    WrongAlgorithm,
    BadSignature,
    InvalidBody,
    ChainError,
    Duplicate,
    Equivocation,
    SequenceGap,
    Equivocated,
    Withdrawn,
    KindNotAllowed,
    WrongPrev,
    TimestampRegression,
    TimestampInFuture,
    NotEquivocation,
    MissingSignature,
    InvalidRecord,
    DisclosureMismatch,
    GovernanceError,
    NotInElectorate,
    DoubleVote,
    VoteTooLate,
    WrongVoteKind,
    AfterFinal,
    KeyInUse,
    IdInUse,
    NotAMember,
    NotParty,
    Replay,
    UnknownRequest,
    OutOfOrder,
    Unauthenticated,
    RateLimited,
    NotFound,
    MethodNotAllowed,
    InvalidRequest,
    NoChange,
    Busy,
    StoreError,
    KeyFileError,
)
