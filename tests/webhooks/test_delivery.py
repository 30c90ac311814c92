"""The outbox and the worker, on SQLite and PostgreSQL: what is queued with the final record,
delivery, signatures, retries, 410, timeouts, unsafe addresses, leases."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from nixflex.webhook import verify_webhook_signature

from nixflex_engine.api.calls import call_json
from nixflex_engine.calls.webhooks import webhook_body
from nixflex_engine.store.repositories import Repositories, utcnow
from nixflex_engine.store.webhooks import ANALYSIS_HOLD_S
from webhooks.support import (
    SETTINGS,
    Receiver,
    connected_call,
    party,
    placed_call,
    statuses,
    wait_for,
    worker,
)


async def test_finish_queues_one_held_row_per_distinct_url(
    repos: Repositories, receiver: Receiver
) -> None:
    other = receiver.url + "?slot=2"
    p = await party(repos, agent_url=receiver.url, number_url=receiver.url, number2_url=other)
    before = utcnow()
    record = await connected_call(repos, p)
    deliveries, count = await repos.webhooks.list_for_call(
        record.call_id, p.account_id, limit=100, offset=0
    )
    # the agent's URL and slot 1 are the same URL: sent once
    assert count == 2
    assert [(d.target, d.url, d.event) for d in deliveries] == [
        ("agent", receiver.url, "call.ended"),
        ("number2", other, "call.ended"),
    ]
    assert len({d.event_id for d in deliveries}) == 1
    assert len({d.delivery_id for d in deliveries}) == 2
    # held for the analysis: not due yet, nothing to claim
    for d in deliveries:
        assert d.status == "pending" and d.attempts == 0
        assert d.next_attempt_at is not None
        assert d.next_attempt_at >= before + timedelta(seconds=ANALYSIS_HOLD_S - 1)
    claimed = await repos.webhooks.claim("w", limit=10, lease_s=30, now=utcnow())
    assert [c for c in claimed if c.call_id == record.call_id] == []
    # a second finish (another path racing) queues nothing more
    assert not await repos.calls.finish_call(record.call_id, "completed", "caller_hangup")
    assert (await repos.webhooks.list_for_call(record.call_id, p.account_id, limit=100, offset=0))[
        1
    ] == 2


async def test_no_rows_without_urls_and_none_with_outbox_off(repos: Repositories) -> None:
    p = await party(repos, agent_url=None)
    record = await connected_call(repos, p)
    assert await statuses(repos, record.call_id, p.account_id) == []
    q = await party(repos, agent_url="https://hooks.example.com/x")
    call = await placed_call(repos, q)
    assert await repos.calls.finish_call(call.call_id, "busy", "busy", outbox=False)
    assert await statuses(repos, call.call_id, q.account_id) == []


async def test_call_ended_after_analysis_signed_and_equal_to_the_record(
    repos: Repositories, receiver: Receiver
) -> None:
    p = await party(repos, agent_url=receiver.url)
    record = await connected_call(repos, p, metadata={"z": 1, "a": [1, {"b": None}], "ü": "é"})
    analysed = await repos.calls.update_call(
        record.call_id,
        call_summary="Ada agreed to a follow-up.",
        caller_sentiment="happy",
        call_successful=True,
        extracted_data={"callback_day": "Tuesday"},
    )
    assert analysed is not None
    w = worker(repos)
    w.start()
    try:
        await w.on_call_final(analysed)  # releases the held row and wakes the worker
        await wait_for(lambda: receiver.ok_for(record.call_id, "call.ended") == 1)
    finally:
        await w.stop()
    [got] = receiver.of(record.call_id)
    body = got.json
    expected = call_json(analysed, SETTINGS)
    assert body == {"event": "call.ended", **expected}
    assert next(iter(body)) == "event"
    assert body["metadata"] == {"z": 1, "a": [1, {"b": None}], "ü": "é"}
    assert list(body["metadata"]) == ["z", "a", "ü"]  # echoed exactly, key order included
    assert body["transcript"][0] == {"role": "agent", "text": "Hello Ada", "timestamp_ms": 0}
    assert body["call_summary"] == "Ada agreed to a follow-up."
    assert got.body == webhook_body("call.ended", expected).encode()
    headers = got.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-nixflex-event"] == "call.ended"
    assert headers["x-nixflex-delivery"].startswith("whd_")
    assert headers["x-nixflex-event-id"].startswith("evt_")
    assert headers["user-agent"].startswith("nixflex-engine-webhooks/")
    signature = headers["x-nixflex-signature"]
    assert verify_webhook_signature(got.body, signature, p.key_secret)
    assert not verify_webhook_signature(got.body + b" ", signature, p.key_secret)
    assert not verify_webhook_signature(got.body, signature, p.key_secret + "x")
    [delivery], _ = await repos.webhooks.list_for_call(
        record.call_id, p.account_id, limit=10, offset=0
    )
    assert delivery.status == "delivered" and delivery.attempts == 1
    assert delivery.delivery_id == headers["x-nixflex-delivery"]
    assert [(a.attempt, a.status_code, a.outcome) for a in delivery.attempt_log] == [
        (1, 200, "delivered")
    ]


async def test_call_failed_is_due_at_once_and_built_from_the_record(
    repos: Repositories, receiver: Receiver
) -> None:
    p = await party(repos, agent_url=None, number_url=receiver.url)
    record = await placed_call(repos, p, metadata={"order": 7})
    assert await repos.calls.finish_call(record.call_id, "no-answer", "no-answer")
    w = worker(repos)
    w.start()
    try:
        await wait_for(lambda: receiver.ok_for(record.call_id, "call.failed") == 1)
    finally:
        await w.stop()
    [got] = receiver.of(record.call_id)
    final = await repos.calls.get(record.call_id)
    assert final is not None
    assert got.json == {"event": "call.failed", **call_json(final, SETTINGS)}
    assert got.json["status"] == "no-answer" and got.json["metadata"] == {"order": 7}


async def test_fail_dial_queues_call_failed_in_the_same_transaction(
    repos: Repositories, receiver: Receiver
) -> None:
    p = await party(repos, agent_url=receiver.url)
    from nixflex_engine.store.repositories import NewCall

    record = await repos.calls.create_reserving_slot(
        NewCall(
            account_id=p.account_id,
            agent_id=p.agent_id,
            from_number=p.number,
            to_number="+15005550001",
            voicemail_action="hangup",
            dynamic_vars={},
        ),
        default_limit=10,
    )
    assert record is not None
    assert await repos.calls.fail_dial(record.call_ref, {"code": 21211, "message": "bad"})
    deliveries, _ = await repos.webhooks.list_for_call(
        record.call_ref, p.account_id, limit=10, offset=0
    )
    assert [(d.event, d.status) for d in deliveries] == [("call.failed", "pending")]
    w = worker(repos)
    assert await w.run_once() >= 1
    await w.stop()
    assert receiver.ok_for(record.call_ref, "call.failed") == 1
    assert receiver.of(record.call_ref)[0].json["twilio_error"]["code"] == 21211


async def test_retries_a_failing_receiver_with_backoff_then_delivers(
    repos: Repositories, receiver: Receiver
) -> None:
    # 500, connection-level failure modes aside: three non-2xx answers, then 200
    answers = {1: 500, 2: 503, 3: 302}
    receiver.script = lambda _d, n: (answers.get(n, 200), 0.0)
    p = await party(repos, agent_url=receiver.url)
    record = await placed_call(repos, p)
    assert await repos.calls.finish_call(record.call_id, "busy", "busy")
    w = worker(repos)
    w.start()
    try:
        await wait_for(lambda: receiver.ok_for(record.call_id, "call.failed") == 1)
    finally:
        await w.stop()
    [delivery], _ = await repos.webhooks.list_for_call(
        record.call_id, p.account_id, limit=10, offset=0
    )
    assert delivery.status == "delivered" and delivery.attempts == 4
    log = delivery.attempt_log
    assert [(a.status_code, a.outcome) for a in log] == [
        (500, "retry"),
        (503, "retry"),
        (302, "retry"),  # redirects are not followed
        (200, "delivered"),
    ]
    for a in log[:3]:
        assert a.next_attempt_at is not None and a.next_attempt_at > a.started_at
    # exponential: each gap at least the schedule's base less the jitter
    gaps = [(log[i + 1].started_at - log[i].started_at).total_seconds() for i in range(3)]
    assert gaps[0] >= 0.05 * 0.8 and gaps[1] >= 0.1 * 0.8 and gaps[2] >= 0.2 * 0.8
    # every attempt carried the same body, each signed afresh
    bodies = {r.body for r in receiver.of(record.call_id)}
    assert len(bodies) == 1


async def test_gives_up_after_the_deadline(repos: Repositories, receiver: Receiver) -> None:
    from nixflex_engine.calls.webhooks import RetryPolicy

    receiver.script = lambda _d, _n: (500, 0.0)
    p = await party(repos, agent_url=receiver.url)
    record = await placed_call(repos, p)
    assert await repos.calls.finish_call(record.call_id, "failed", "failed")
    w = worker(repos, policy=RetryPolicy(schedule_s=(0.05,), deadline_s=0.3))
    w.start()
    try:
        await wait_for(
            lambda: _status_is(repos, record.call_id, p.account_id, "failed"), timeout_s=20
        )
    finally:
        await w.stop()
    [delivery], _ = await repos.webhooks.list_for_call(
        record.call_id, p.account_id, limit=10, offset=0
    )
    assert delivery.attempt_log[-1].outcome == "failed"
    assert all(a.outcome == "retry" for a in delivery.attempt_log[:-1])
    n = len(receiver.of(record.call_id))
    await asyncio.sleep(0.3)
    assert len(receiver.of(record.call_id)) == n  # nothing more once given up


async def _status_is(repos: Repositories, call_id: str, account_id: str, status: str) -> bool:
    return await statuses(repos, call_id, account_id) == [status]


async def test_410_stops_retrying(repos: Repositories, receiver: Receiver) -> None:
    receiver.script = lambda _d, _n: (410, 0.0)
    p = await party(repos, agent_url=receiver.url)
    record = await placed_call(repos, p)
    assert await repos.calls.finish_call(record.call_id, "canceled", "canceled")
    w = worker(repos)
    w.start()
    try:
        await wait_for(lambda: _status_is(repos, record.call_id, p.account_id, "gone"))
        await asyncio.sleep(0.4)  # several retry periods of the fast schedule
    finally:
        await w.stop()
    assert len(receiver.of(record.call_id)) == 1
    [delivery], _ = await repos.webhooks.list_for_call(
        record.call_id, p.account_id, limit=10, offset=0
    )
    assert [(a.status_code, a.outcome) for a in delivery.attempt_log] == [(410, "gone")]


async def test_slow_receiver_times_out_and_is_retried(
    repos: Repositories, receiver: Receiver
) -> None:
    receiver.script = lambda _d, n: (200, 3.0 if n == 1 else 0.0)
    p = await party(repos, agent_url=receiver.url)
    record = await placed_call(repos, p)
    assert await repos.calls.finish_call(record.call_id, "busy", "busy")
    w = worker(repos, timeout_s=0.5, lease_s=5.0)
    w.start()
    try:
        await wait_for(lambda: _status_is(repos, record.call_id, p.account_id, "delivered"))
    finally:
        await w.stop()
    [delivery], _ = await repos.webhooks.list_for_call(
        record.call_id, p.account_id, limit=10, offset=0
    )
    first, second = delivery.attempt_log
    assert (first.outcome, first.error, first.status_code) == ("retry", "timeout", None)
    assert 400 <= first.duration_ms < 2500  # cut by the timeout, not by the 3 s answer
    assert second.outcome == "delivered"


async def test_connection_refused_is_retried(repos: Repositories) -> None:
    from api.support import free_port

    url = f"http://127.0.0.1:{free_port()}/nobody"
    p = await party(repos, agent_url=url)
    record = await placed_call(repos, p)
    assert await repos.calls.finish_call(record.call_id, "busy", "busy")
    w = worker(repos)
    assert await w.run_once() >= 1
    await w.stop()
    [delivery], _ = await repos.webhooks.list_for_call(
        record.call_id, p.account_id, limit=10, offset=0
    )
    assert delivery.status == "pending" and delivery.attempts == 1
    [attempt] = delivery.attempt_log
    assert attempt.outcome == "retry" and (attempt.error or "").startswith("connection_error")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "10.1.2.3"])
async def test_private_addresses_refused_at_delivery(
    repos: Repositories, receiver: Receiver, host: str
) -> None:
    url = receiver.url.replace("127.0.0.1", host)
    p = await party(repos, agent_url=url)
    record = await placed_call(repos, p)
    assert await repos.calls.finish_call(record.call_id, "busy", "busy")
    w = worker(repos, allow_private=False)
    assert await w.run_once() >= 1
    await w.stop()
    [delivery], _ = await repos.webhooks.list_for_call(
        record.call_id, p.account_id, limit=10, offset=0
    )
    assert delivery.status == "refused"
    assert (delivery.last_error or "").startswith("unsafe_url:")
    assert receiver.of(record.call_id) == []


async def test_a_lost_lease_comes_back_and_is_delivered_once(
    repos: Repositories, receiver: Receiver
) -> None:
    """A worker that claimed a row and died: after its lease, another worker delivers it."""
    p = await party(repos, agent_url=receiver.url)
    record = await placed_call(repos, p)
    assert await repos.calls.finish_call(record.call_id, "busy", "busy")
    now = utcnow()
    dead = await repos.webhooks.claim("dead-node", limit=1000, lease_s=0.5, now=now)
    mine = [c for c in dead if c.call_id == record.call_id]
    assert len(mine) == 1
    # while the lease holds, nobody else can take it
    again = await repos.webhooks.claim("other", limit=1000, lease_s=5, now=utcnow())
    assert all(c.call_id != record.call_id for c in again)
    await repos.webhooks.give_back(again)
    await asyncio.sleep(0.6)
    w = worker(repos)
    w.start()
    try:
        await wait_for(lambda: receiver.ok_for(record.call_id, "call.failed") == 1)
    finally:
        await w.stop()
    # the dead worker's late result does not overwrite the delivery
    held = await repos.webhooks.record_attempt(
        mine[0],
        worker="dead-node",
        started_at=now,
        duration_ms=1.0,
        status_code=None,
        error="timeout",
        outcome="retry",
        next_attempt_at=utcnow(),
        payload=None,
        now=utcnow(),
    )
    assert held is False
    assert await statuses(repos, record.call_id, p.account_id) == ["delivered"]
    assert receiver.ok_for(record.call_id, "call.failed") == 1
