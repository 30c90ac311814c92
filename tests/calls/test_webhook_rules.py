"""Webhook signing (api.md check vector, official SDK), retry schedule, SSRF rules."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nixflex.webhook import verify_webhook_signature

from nixflex_engine.calls.webhook_rules import (
    RETRY_SCHEDULE_S,
    UnsafeWebhookURL,
    check_resolved_addresses,
    check_webhook_url,
    next_retry_delay_s,
    should_retry,
    sign_webhook,
)

SECRET = "nxfs_testsecret_0123456789abcdef"
BODY = b'{"event":"call.completed","call_id":"CA123"}'


def test_check_vector_from_api_md() -> None:
    header = sign_webhook(SECRET, BODY, 1755300000)
    assert header == (
        "t=1755300000,v1=8244940dd2d19c8d603cfd55b40de1cd94b98de4aca1f56b98cdd5f44ea98031"
    )


@given(body=st.binary(max_size=2000), t=st.integers(1_600_000_000, 2_000_000_000))
def test_official_sdk_accepts_our_signature(body: bytes, t: int) -> None:
    header = sign_webhook(SECRET, body, t)
    assert verify_webhook_signature(body, header, SECRET, now=t)
    assert not verify_webhook_signature(body + b"x", header, SECRET, now=t)
    assert not verify_webhook_signature(body, header, SECRET + "x", now=t)


def test_retry_schedule_grows_with_jitter_and_ends_after_a_day() -> None:
    rng = random.Random(7)
    delays = [next_retry_delay_s(n, rng=rng) for n in range(1, 7)]
    for delay, base in zip(delays, RETRY_SCHEDULE_S, strict=True):
        assert delay is not None and 0.8 * base <= delay <= 1.2 * base
    assert next_retry_delay_s(9, elapsed_s=25 * 3600, rng=rng) is None
    total, n = 0.0, 1
    while (d := next_retry_delay_s(n, elapsed_s=total, rng=rng)) is not None:
        total += d
        n += 1
    assert 20 * 3600 < total <= 26 * 3600 and n < 20


@pytest.mark.parametrize(
    ("status", "retry"),
    [(None, True), (500, True), (429, True), (404, True), (410, False), (200, False), (204, False)],
)
def test_should_retry(status: int | None, retry: bool) -> None:
    assert should_retry(status) is retry


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "https://user:pw@example.com/x",
        "https:///nohost",
        "http://example.com:99999/x",
    ],
)
def test_unsafe_urls_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookURL):
        check_webhook_url(url)


def test_safe_and_operator_allowed_urls() -> None:
    assert (
        check_webhook_url(" https://hooks.example.com/a?b=1 ") == "https://hooks.example.com/a?b=1"
    )
    assert check_webhook_url("http://8.8.8.8/x") == "http://8.8.8.8/x"
    assert check_webhook_url("http://127.0.0.1:9/x", allow_private=True) == "http://127.0.0.1:9/x"


def test_resolved_addresses_checked_at_delivery() -> None:
    check_resolved_addresses(["93.184.216.34"])
    with pytest.raises(UnsafeWebhookURL):
        check_resolved_addresses(["93.184.216.34", "10.0.0.5"])
    with pytest.raises(UnsafeWebhookURL):
        check_resolved_addresses([])
    check_resolved_addresses(["127.0.0.1"], allow_private=True)


@given(body=st.binary(max_size=500), t=st.integers(1_600_000_000, 2_000_000_000))
def test_verify_webhook_agrees_with_the_official_sdk(body: bytes, t: int) -> None:
    from nixflex_engine.calls.webhook_rules import verify_webhook

    header = sign_webhook(SECRET, body, t)
    for now in (t, t + 299, t + 301):
        for candidate in (header, header.replace("v1=", "v1=0"), "t=x,v1=y", None):
            assert verify_webhook(SECRET, body, candidate, now=now) == (
                verify_webhook_signature(body, candidate, SECRET, now=now)
            )
