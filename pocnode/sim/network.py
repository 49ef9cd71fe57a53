"""Virtual time and an in-memory network for the simulator.

:class:`Clock` is the simulator's only time: an integer of milliseconds and a queue of
things to do at given times (a binary heap, ties broken by insertion order so that a
run is the same for a seed whatever the machine). Nothing in ``pocnode/sim`` reads the
wall clock except the progress display.

:class:`Network` decides the fate of each message from its own seeded random source:
latency drawn from a :class:`Latency` distribution, loss per message, and partitions
that split the nodes into two sides between a split and a heal time. It does not carry
bytes (the runner does); it only says when a message arrives, or that it will not.

What a lost message means. pocnode speaks HTTPS over TCP: a request or an answer is
not "lost" the way a UDP datagram is; a connection that breaks or stalls makes the
caller wait for its request timeout and fail. So a lost request or answer here makes
the caller fail after ``timeout_ms`` (the daemon's ``request_timeout_s``), which is
pessimistic against TCP's retransmissions and honest about what the engine then sees.
A lost answer's request was still served (the server did the work, the caller never
heard). A call to a node that is down fails after ``connect_timeout_ms``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pocnode.core.errors import InvalidRequest, PocError

# A latency above this is surely a typo in an option (ten minutes, one way).
MAX_LATENCY_MS = 600_000


class SimOptionError(InvalidRequest):
    """A simulator option that cannot be used as given; ``path`` names the option."""


class NetworkError(PocError):
    """A call that failed in the simulated network: the same code as the daemon's
    PeerError (pocnode/net/peer_client.py), so the engine treats both alike."""

    code = "peer"


# -- virtual time ------------------------------------------------------------------------


class Clock:
    """Virtual milliseconds and the queue of what happens when."""

    __slots__ = ("now", "_queue", "_order", "processed")

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms
        self._queue: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = 0
        self.processed = 0

    def at(self, when: int, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` at virtual time ``when`` (never in the past)."""
        self._order += 1
        heapq.heappush(self._queue, (max(when, self.now), self._order, action, args))

    def after(self, delay_ms: int, action: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay_ms, action, *args)

    def next_time(self) -> int | None:
        return self._queue[0][0] if self._queue else None

    def step(self) -> bool:
        """Run the earliest action; False if nothing is left."""
        if not self._queue:
            return False
        when, _, action, args = heapq.heappop(self._queue)
        self.now = when
        self.processed += 1
        action(*args)
        return True

    def __len__(self) -> int:
        return len(self._queue)


# -- latency -----------------------------------------------------------------------------


def colon_floats(text: str) -> list[float]:
    """An option's numbers, colon-separated ("2:30:0.3"); [] when any is not a number."""
    try:
        values = [float(p) for p in text.strip().split(":")]
    except ValueError:
        return []
    return [] if any(math.isnan(v) for v in values) else values


@dataclass(frozen=True, slots=True)
class Latency:
    """One-way delay of a message, in whole milliseconds.

    Syntax (``--latency-ms``): ``N`` or ``const:N`` (always N ms); ``uniform:LO:HI``
    (uniform between LO and HI); ``exp:MEAN`` (exponential with that mean, the classic
    model of queueing delay); ``exp:MIN:MEAN`` (MIN plus an exponential, so that the mean
    is MEAN: a propagation floor plus queueing); ``normal:MEAN:SD`` (cut at 0).
    """

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Latency:
        parts = text.strip().split(":")
        try:
            numbers = [float(p) for p in parts[1:]] if not _is_number(parts[0]) else \
                [float(parts[0])]
        except ValueError:
            raise SimOptionError(f"latency {text!r}: the values after the kind must be "
                                 f"numbers of milliseconds", path="--latency-ms") from None
        kind = "const" if _is_number(parts[0]) else parts[0]
        shapes = {"const": (1,), "uniform": (2,), "exp": (1, 2), "normal": (2,)}
        if kind not in shapes:
            raise SimOptionError(f"latency {text!r}: expected const:N, uniform:LO:HI, "
                                 f"exp:MEAN, exp:MIN:MEAN or normal:MEAN:SD",
                                 path="--latency-ms")
        if len(numbers) not in shapes[kind]:
            raise SimOptionError(f"latency {text!r}: {kind} takes "
                                 f"{' or '.join(map(str, shapes[kind]))} number(s), got "
                                 f"{len(numbers)}", path="--latency-ms")
        if any(not 0 <= n <= MAX_LATENCY_MS or math.isnan(n) for n in numbers):
            raise SimOptionError(f"latency {text!r}: values must be 0..{MAX_LATENCY_MS} ms",
                                 path="--latency-ms")
        if kind == "uniform" and numbers[0] > numbers[1]:
            raise SimOptionError(f"latency {text!r}: uniform needs LO <= HI",
                                 path="--latency-ms")
        if kind == "exp" and len(numbers) == 2:
            if numbers[0] > numbers[1]:
                raise SimOptionError(f"latency {text!r}: exp:MIN:MEAN needs MIN <= MEAN",
                                     path="--latency-ms")
            return cls("exp", numbers[1] - numbers[0], numbers[0])
        return cls(kind, numbers[0], numbers[1] if len(numbers) > 1 else 0.0)

    def draw(self, rng: random.Random) -> int:
        if self.kind == "const":
            value = self.a
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        elif self.kind == "exp":
            value = self.b + (rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0)
        else:
            value = rng.gauss(self.a, self.b)
        return min(MAX_LATENCY_MS, max(0, round(value)))

    @property
    def mean_ms(self) -> float:
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "exp":
            return self.a + self.b
        return self.a

    def __str__(self) -> str:
        if self.kind == "const":
            return f"const:{self.a:g}"
        if self.kind == "exp":
            return f"exp:{self.b:g}:{self.a + self.b:g}" if self.b else f"exp:{self.a:g}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- partitions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Partition:
    """The nodes split in two sides from ``split_ms`` until ``heal_ms`` (virtual time from
    the first update); messages between the sides are lost meanwhile.

    Syntax (``--partition``): ``SPLIT_S:HEAL_S`` or ``SPLIT_S:HEAL_S:FRACTION``, seconds
    after the first update is published (negative to split before it), FRACTION of the
    nodes on the first side (default 0.5), drawn from the seed.
    """

    split_ms: int
    heal_ms: int
    fraction: float = 0.5

    @classmethod
    def parse(cls, text: str) -> Partition:
        values = colon_floats(text)
        if len(values) not in (2, 3):
            raise SimOptionError(f"partition {text!r}: expected SPLIT_S:HEAL_S[:FRACTION], "
                                 f"e.g. 2:30 or 2:30:0.3", path="--partition")
        split, heal = values[0], values[1]
        fraction = values[2] if len(values) == 3 else 0.5
        if heal <= split:
            raise SimOptionError(f"partition {text!r}: heal ({heal:g} s) must come after "
                                 f"split ({split:g} s)", path="--partition")
        if not 0 < fraction < 1:
            raise SimOptionError(f"partition {text!r}: the fraction on one side must be "
                                 f"between 0 and 1, got {fraction:g}", path="--partition")
        return cls(round(split * 1000), round(heal * 1000), fraction)

    def __str__(self) -> str:
        return f"{self.split_ms / 1000:g}:{self.heal_ms / 1000:g}:{self.fraction:g}"


# -- the network ------------------------------------------------------------------------


@dataclass(slots=True)
class Fate:
    """What happens to one call: its two one-way delays, and whether the request or the
    answer is lost."""

    request_ms: int
    answer_ms: int
    request_lost: bool
    answer_lost: bool


class Network:
    """Loss, latency and partitions, decided from one seeded random source."""

    def __init__(self, *, rng: random.Random, latency: Latency, loss: float,
                 timeout_ms: int, connect_timeout_ms: int) -> None:
        if not 0 <= loss < 1:
            raise SimOptionError(f"loss must be a fraction in [0, 1), got {loss:g}",
                                 path="--loss")
        self.rng = rng
        self.latency = latency
        self.loss = loss
        self.timeout_ms = timeout_ms
        self.connect_timeout_ms = connect_timeout_ms
        # Active and pending splits: (split at, heal at, side of each node index).
        self._splits: list[tuple[int, int, bytearray]] = []

    def add_partition(self, split_at: int, heal_at: int, side: bytearray) -> None:
        self._splits.append((split_at, heal_at, side))

    def fate(self) -> Fate:
        rng = self.rng
        loss = self.loss
        return Fate(self.latency.draw(rng), self.latency.draw(rng),
                    loss > 0 and rng.random() < loss, loss > 0 and rng.random() < loss)

    def apart(self, a: int, b: int, now: int) -> bool:
        """True if nodes ``a`` and ``b`` (indexes) are on two sides of a split now."""
        for split_at, heal_at, side in self._splits:
            if split_at <= now < heal_at and side[a] != side[b]:
                return True
        return False


__all__ = ["Clock", "Fate", "Latency", "Network", "NetworkError", "Partition",
           "SimOptionError"]
