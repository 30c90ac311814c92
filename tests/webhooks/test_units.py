"""Pure parts: the retry policy (benchmarks may shorten it, production keeps api.md's), the
delivery body, byte ranges, and the local recording store."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nixflex.webhook import verify_webhook_signature

from nixflex_engine.calls.recordings import (
    LocalRecordingStore,
    RangeNotSatisfiable,
    parse_byte_range,
)
from nixflex_engine.calls.webhook_rules import RETRY_SCHEDULE_S, next_retry_delay_s, sign_webhook
from nixflex_engine.calls.webhooks import RetryPolicy, webhook_body


def test_check_vector_and_sdk() -> None:
    body = b'{"event":"call.completed","call_id":"CA123"}'
    secret = "nxfs_testsecret_0123456789abcdef"
    header = sign_webhook(secret, body, 1755300000)
    assert header == (
        "t=1755300000,v1=8244940dd2d19c8d603cfd55b40de1cd94b98de4aca1f56b98cdd5f44ea98031"
    )
    assert verify_webhook_signature(body, header, secret, now=1755300000)
    assert not verify_webhook_signature(body, header, secret, now=1755300000 + 301)


def test_default_policy_is_the_production_schedule() -> None:
    policy = RetryPolicy()
    for attempts in range(1, 12):
        for elapsed in (0.0, 3600.0, 86_000.0):
            a = policy.delay_s(attempts, elapsed, random.Random(attempts))
            b = next_retry_delay_s(attempts, elapsed_s=elapsed, rng=random.Random(attempts))
            assert a == b
    # about a day of retries: 10 s, 1 min, 5 min, 30 min, 2 h, 6 h, 6 h ... then give up
    elapsed, attempts, rng = 0.0, 1, random.Random(7)
    while (delay := policy.delay_s(attempts, elapsed, rng)) is not None:
        elapsed += delay
        attempts += 1
    assert 20 * 3600 <= elapsed <= 30 * 3600
    assert 7 <= attempts <= 12
    assert RETRY_SCHEDULE_S[:3] == (10, 60, 300)


def test_short_policy_for_benchmarks() -> None:
    policy = RetryPolicy(schedule_s=(0.5, 1.0), deadline_s=10.0)
    rng = random.Random(1)
    first = policy.delay_s(1, 0.0, rng)
    assert first is not None and 0.4 <= first <= 0.6
    later = policy.delay_s(5, 0.0, rng)
    assert later is not None and 0.8 <= later <= 1.2
    assert policy.delay_s(5, 9.5, rng) is None


def test_body_is_event_then_record_compact_utf8() -> None:
    body = webhook_body("call.ended", {"call_id": "CA1", "metadata": {"b": 1, "a": "é"}})
    assert body == '{"event":"call.ended","call_id":"CA1","metadata":{"b":1,"a":"é"}}'
    assert list(json.loads(body)) == ["event", "call_id", "metadata"]


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=0-99", 100, (0, 99)),
        ("bytes=0-500", 100, (0, 99)),
        ("bytes=50-", 100, (50, 99)),
        ("bytes=-1", 100, (99, 99)),
        ("bytes=-500", 100, (0, 99)),
        (" bytes = 1 - 2 ", 100, (1, 2)),
        ("bytes=5-2", 100, None),
        ("bytes=0-1,3-4", 100, None),
        ("pages=1-2", 100, None),
        ("bytes=", 100, None),
        ("bytes=-", 100, None),
        ("bytes=x-1", 100, None),
    ],
)
def test_parse_byte_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0)],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_byte_range(header, size)


@given(st.integers(0, 10_000), st.integers(0, 20_000), st.integers(0, 20_000))
def test_ranges_stay_inside_the_file(size: int, a: int, b: int) -> None:
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        try:
            got = parse_byte_range(header, size)
        except RangeNotSatisfiable:
            assert size == 0 or a >= size or header == "bytes=-0"
            continue
        if got is not None:
            start, end = got
            assert 0 <= start <= end < size


async def test_local_store_saves_atomically_reads_and_deletes(tmp_path: Path) -> None:
    store = LocalRecordingStore(tmp_path / "rec")
    assert await store.stat("CAabc") is None
    spool = tmp_path / "elsewhere.wav"
    data = bytes(range(256)) * 1000
    spool.write_bytes(data)
    info = await store.save("CAabc", spool)
    assert info.size_bytes == len(data)
    assert not spool.exists()  # moved into the store
    assert [p.name for p in (tmp_path / "rec").iterdir()] == ["CAabc.wav"]  # no temp file left
    stat = await store.stat("CAabc")
    assert stat is not None and stat.size_bytes == len(data)
    assert b"".join([c async for c in store.read("CAabc", 0, len(data) - 1)]) == data
    assert b"".join([c async for c in store.read("CAabc", 1000, 200_000)]) == data[1000:200_001]
    # in place (the recorder wrote to the spool path): nothing moves
    same = await store.save("CAabc", store.spool_path("CAabc"))
    assert same.size_bytes == len(data)
    with pytest.raises(FileNotFoundError):
        await store.save("CAnone", store.spool_path("CAnone"))  # the recorder wrote nothing
    assert await store.delete("CAabc") is True
    assert await store.delete("CAabc") is False
    assert await store.stat("CAabc") is None


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "", "x" * 65, "CA abc"])
async def test_local_store_refuses_ids_that_are_not_file_names(tmp_path: Path, bad: str) -> None:
    store = LocalRecordingStore(tmp_path)
    with pytest.raises(ValueError):
        store.spool_path(bad)
    assert await store.stat(bad) is None
    assert await store.delete(bad) is False
