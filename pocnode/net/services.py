"""What the network adapters may ask of a node: two narrow interfaces.

The peer server and the operator API depend on these protocols, not on the node:
``net/`` never imports ``node/``. The node implements them by handing requests to its
engine (pocnode/core/engine.py); a test can implement them with plain values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from pocnode.core.keys import PublicKey


class PeerService(Protocol):
    """The peer port's view of a node (PROTOCOL.md §8)."""

    fed: bytes
    member: str
    pin: bytes

    def current_key(self, member: str) -> PublicKey | None:
        """The member's key for its next event (what peer tokens verify under)."""

    def now_ms(self) -> int: ...

    def summary(self, msg: dict[str, Any]) -> dict[str, Any]: ...

    def announce(self, msg: dict[str, Any]) -> dict[str, Any]: ...

    def exchange(self, msg: dict[str, Any], member: str | None,
                 remote: str) -> Awaitable[dict[str, Any]]: ...

    def disclosures(self, msg: dict[str, Any], member: str) -> Awaitable[dict[str, Any]]: ...

    def bilateral(self, msg: dict[str, Any], member: str) -> Awaitable[dict[str, Any]]: ...

    def public_record(self, member: str) -> dict[str, Any] | None: ...

    def apply(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A stranger's application to join (§5.6), kept for the operator to sponsor."""
    def checkpoint_events(self) -> Awaitable[list[bytes]]:
        """The latest checkpoint event in force of each author (§13.8): public."""

    def bundle_chunks(self, author: str | None) -> AsyncIterator[bytes]:
        """An export bundle of public data (§13.6), streamed."""

    def refused(self, code: str, message: str, **fields: Any) -> None:
        """Log a refusal (rate-limited by the node) and count it."""

    def count(self, name: str, value: int = 1, **labels: str) -> None: ...


class OperatorService(Protocol):
    """The operator API's view of a node (protocol/openapi.yaml)."""

    member: str

    def is_member(self, member: str) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...

    def peers(self) -> list[dict[str, Any]]: ...

    def directory(self) -> list[dict[str, Any]]: ...

    def record_view(self, member: str) -> Awaitable[dict[str, Any] | None]: ...

    def publish_record(self, plain: Any) -> Awaitable[dict[str, Any]]: ...

    def events(self, member: str, first: int, limit: int) -> Awaitable[dict[str, Any]]: ...

    def rotate_key(self, reason: str | None) -> Awaitable[dict[str, Any]]: ...

    def consents(self) -> list[dict[str, Any]]: ...

    def set_consent(self, member: str, action: str) -> Awaitable[dict[str, Any]]: ...

    def proofs(self) -> Awaitable[list[dict[str, Any]]]: ...

    def metrics_text(self) -> bytes: ...

    def rotate_token(self) -> Awaitable[str]: ...

    def proposals(self) -> list[dict[str, Any]]: ...

    def proposal(self, proposal_id: bytes) -> dict[str, Any] | None: ...

    def propose(self, decision: str, params: dict[str, Any]) -> Awaitable[dict[str, Any]]: ...

    def vote(self, proposal_id: bytes, vote: str) -> Awaitable[dict[str, Any]]: ...

    def withdraw(self, reason: str | None) -> Awaitable[dict[str, Any]]: ...

    def applications(self) -> list[dict[str, Any]]: ...
    # Communication requests and ping tests (PROTOCOL.md §12).
    def requests_list(self) -> dict[str, Any]: ...

    def request_view(self, sender: str, rid: bytes) -> dict[str, Any] | None: ...

    def send_request(self, fields: dict[str, Any]) -> Awaitable[dict[str, Any]]: ...

    def request_status(self, sender: str, rid: bytes, state: str, text: str | None,
                       scope: str | None) -> Awaitable[dict[str, Any]]: ...

    def ping_run(self, members: list[str] | None,
                 domain: str | None) -> Awaitable[dict[str, Any]]: ...

    def ping_report(self) -> dict[str, Any]: ...

    def exchanges(self) -> list[dict[str, Any]]: ...


Refusal = Callable[[str, str, str], None]  # (code, peer address, reason)
