"""Rate limits as pure arithmetic: the adapter passes ``now`` (ms)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: int = 0

    def take(self, now: int, cost: float = 1.0) -> bool:
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate / 1000)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def level(self, now: int) -> float:
        """Tokens available now, taking none."""
        if self.tokens < 0:
            return self.burst
        return min(self.burst, self.tokens + (now - self.updated) * self.rate / 1000)


@dataclass
class KeyedLimiter:
    """One bucket per key (a peer address), forgetting the idle ones so that a flood of
    spoofed-looking keys cannot grow the table without bound."""

    rate: float
    burst: float
    max_keys: int = 4096
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def take(self, key: str, now: int, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket.take(now, cost)

    def level(self, key: str, now: int) -> float:
        bucket = self._buckets.get(key)
        return self.burst if bucket is None else bucket.level(now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _evict(self, now: int) -> None:
        full_after_ms = 1000 * self.burst / self.rate if self.rate else 0
        idle = [k for k, b in self._buckets.items() if now - b.updated >= full_after_ms]
        for key in idle or sorted(self._buckets, key=lambda k: self._buckets[k].updated)[
                : max(1, len(self._buckets) // 4)]:
            del self._buckets[key]
