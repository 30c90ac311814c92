"""Small pure pieces: the token bucket, the key cache, the metrics text."""

from __future__ import annotations

from datetime import UTC, datetime

from nixflex_engine.api.metrics import Metrics
from nixflex_engine.api.ratelimit import RateLimiter
from nixflex_engine.api.routing import AuthCache
from nixflex_engine.store.repositories import ApiKeyRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(reads_per_minute=60, writes_per_minute=6, clock=clock)
    for i in range(60):
        decision = limiter.hit("k", write=False)
        assert decision.allowed and decision.remaining == 59 - i
    denied = limiter.hit("k", write=False)
    assert not denied.allowed and denied.retry_after_seconds == 1 and denied.remaining == 0
    assert denied.reset_seconds == 60
    clock.now += 1.0  # one token per second at 60/min
    assert limiter.hit("k", write=False).allowed
    assert not limiter.hit("k", write=False).allowed
    # writes are a separate, smaller bucket; other keys are independent
    assert [limiter.hit("k", write=True).allowed for _ in range(7)] == [True] * 6 + [False]
    assert limiter.hit("k", write=True).retry_after_seconds == 10
    assert limiter.hit("other", write=True).allowed
    clock.now += 3600
    full = limiter.hit("k", write=False)
    assert full.remaining == 59 and full.headers()["X-RateLimit-Limit"] == "60"


def _record(key_id: str = "nxf_a") -> ApiKeyRecord:
    return ApiKeyRecord(key_id, "acct", "n", "h" * 64, "enc", datetime.now(UTC), False)


def test_auth_cache_ttl_and_invalidation() -> None:
    clock = Clock()
    cache = AuthCache(1.0, clock=clock)
    cache.put(_record())
    assert cache.get("nxf_a") is not None
    clock.now += 0.99
    assert cache.get("nxf_a") is not None
    clock.now += 0.02
    assert cache.get("nxf_a") is None
    cache.put(_record())
    cache.invalidate("nxf_a")
    assert cache.get("nxf_a") is None
    off = AuthCache(0.0, clock=clock)
    off.put(_record())
    assert off.get("nxf_a") is None


def test_metrics_text_format() -> None:
    metrics = Metrics()
    metrics.observe_request("GET", "/v1/calls/{call_id}", 200, 0.003)
    metrics.observe_request("GET", "/v1/calls/{call_id}", 200, 7.0)
    metrics.count_outbound("created")
    text = metrics.render({"nixflex_calls_in_flight": 3.0})
    lines = text.splitlines()
    assert (
        'nixflex_http_requests_total{method="GET",route="/v1/calls/{call_id}",status="200"} 2'
        in lines
    )
    bucket = 'nixflex_http_request_duration_seconds_bucket{method="GET",route="/v1/calls/{call_id}"'
    assert f'{bucket},le="0.005"}} 1' in lines
    assert f'{bucket},le="+Inf"}} 2' in lines
    assert 'nixflex_outbound_calls_total{outcome="created"} 1' in lines
    assert "nixflex_calls_in_flight 3.0" in lines
    assert text.endswith("\n")
