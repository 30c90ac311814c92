"""Per-key rate limits: a token bucket for reads and one for writes.

Each bucket holds ``limit`` tokens and refills at ``limit`` per minute, so a key may burst up
to its limit and then sustain the per-minute rate. The state lives in this process (one
instance on the app state); behind a load balancer with N nodes a key can reach N times the limit,
which is acceptable for a guard against runaway clients.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateDecision", "RateLimiter"]


@dataclass(slots=True, frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by (key id, read|write)."""

    __slots__ = ("_buckets", "_clock", "_limits")

    MAX_BUCKETS = 100_000

    def __init__(
        self,
        *,
        reads_per_minute: int,
        writes_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {False: reads_per_minute, True: writes_per_minute}
        self._buckets: dict[tuple[str, bool], _Bucket] = {}
        self._clock = clock

    def hit(self, key_id: str, *, write: bool) -> RateDecision:
        """Take one token for ``key_id``; the decision says whether the request may proceed."""
        limit = self._limits[write]
        rate = limit / 60.0
        now = self._clock()
        bucket = self._buckets.get((key_id, write))
        if bucket is None:
            if len(self._buckets) >= self.MAX_BUCKETS:
                self._prune(now)
            bucket = self._buckets[(key_id, write)] = _Bucket(float(limit), now)
        else:
            bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        reset = math.ceil((limit - bucket.tokens) / rate) if bucket.tokens < limit else 0
        retry = 0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / rate))
        return RateDecision(allowed, limit, int(bucket.tokens), reset, retry)

    def _prune(self, now: float) -> None:
        """Drop buckets that have refilled completely (they carry no information)."""
        for key, bucket in list(self._buckets.items()):
            limit = self._limits[key[1]]
            if bucket.tokens + (now - bucket.updated) * limit / 60.0 >= limit:
                del self._buckets[key]
