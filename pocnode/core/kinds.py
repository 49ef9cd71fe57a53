"""Every event kind this protocol version specifies, with its body rule (PROTOCOL.md §3.4):
one table instead of a chain of ifs. A kind not in it is refused with ``unknown_kind``
(§4.1 step 7), reserved kinds included (§3.5).

To add a kind: its body rule here, its meaning (a fold) in the engine's table
(:data:`pocnode.core.engine.FOLDS`), and its section in PROTOCOL.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pocnode.core.consent import check_sealed
from pocnode.core.events import (
    KIND_KEY_ROTATE,
    KIND_NODE_KEYS,
    KIND_RECORD,
    KIND_SEALED,
    check_key_rotate,
    check_node_keys,
)
from pocnode.core.genesis import Genesis
from pocnode.core.governance import (
    KIND_OBJECT,
    KIND_PROPOSE,
    KIND_TICK,
    KIND_VOTE,
    KIND_WITHDRAW,
    check_object,
    check_propose,
    check_tick,
    check_vote,
    check_withdraw,
)
from pocnode.core.record import validate_signed_body
from pocnode.core.tlog import (
    CHAIN_RULES as TLOG_CHAIN_RULES,
)
from pocnode.core.tlog import (
    KIND_CHECKPOINT,
    KIND_COSIGN,
    check_checkpoint_body,
    check_cosign_body,
)

if TYPE_CHECKING:
    from pocnode.core.chain import Verifier
    from pocnode.core.events import Event
from pocnode.core.requests import (
    KIND_REQUEST,
    KIND_REQUEST_PUBLISH,
    check_publication_body,
    check_request_body,
)

BodyRule = Callable[[dict[str, Any], Genesis], object]

BODY_RULES: dict[str, BodyRule] = {
    KIND_RECORD: lambda body, genesis: validate_signed_body(body),
    KIND_KEY_ROTATE: lambda body, genesis: check_key_rotate(body, genesis.sig_alg),
    KIND_NODE_KEYS: lambda body, genesis: check_node_keys(body, genesis.hpke_suite),
    KIND_SEALED: lambda body, genesis: check_sealed(body, genesis.hpke_suite),
    KIND_PROPOSE: lambda body, genesis: check_propose(body, genesis.id, genesis.sig_alg,
                                                      genesis.exercise, genesis.hpke_suite),
    KIND_VOTE: lambda body, genesis: check_vote(body),
    KIND_OBJECT: lambda body, genesis: check_object(body),
    KIND_TICK: lambda body, genesis: check_tick(body),
    KIND_WITHDRAW: lambda body, genesis: check_withdraw(body),
    # Transparency-log checkpoints and witness cosignatures (§13).
    KIND_CHECKPOINT: check_checkpoint_body,
    KIND_COSIGN: check_cosign_body,
    KIND_REQUEST: lambda body, genesis: check_request_body(body, genesis.hpke_suite),
    KIND_REQUEST_PUBLISH: lambda body, genesis: check_publication_body(body),
}

# Rules a body cannot be judged by alone: what the author's chain before the event says
# (§4.1 step 16, after the body rule). Called with the event, the id at each earlier
# sequence of its author's chain as the verifier sees it, and the verifier.
ChainRule = Callable[["Event", Callable[[int], "bytes | None"], "Verifier"], None]
CHAIN_RULES: dict[str, ChainRule] = {**TLOG_CHAIN_RULES}
