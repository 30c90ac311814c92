"""The dispatcher: the outbound path, pacing, retries, pause/resume, cancel, restarts."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.support import Env
from nixflex_engine.calls.campaigns import CampaignDispatcher
from nixflex_engine.store.campaigns import CampaignRecord
from nixflex_engine.store.repositories import DuplicateError, NewCall

from .support import Rig, numbers, rig


def dispatcher(r: Rig, **kw: Any) -> CampaignDispatcher:
    """Another node's dispatcher over the same database (a restart, or a second node)."""
    return CampaignDispatcher(
        repos=r.repos, outbound=r.env.services.outbound, node_id=kw.pop("node_id", "other"), **kw
    )


async def test_calls_go_through_the_outbound_path(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create(
        [
            {"phone": "+15550000001", "variables": {"name": "Ann"}, "metadata": {"row": 1}},
            {
                "phone": "+15550000002",
                "variables": {"name": "Bob"},
                "prompt_override": "Ask {name}.",
            },
        ],
        prompt="Remind {name}.",
        metadata={"source": "test", "row": 0},
    )
    assert await r.tick() == 2
    by_number = {c.to_number: c for c in await r.all_calls(camp["campaign_id"])}
    ann, bob = by_number["+15550000001"], by_number["+15550000002"]
    assert ann.campaign_id == bob.campaign_id == camp["campaign_id"]
    assert ann.dynamic_vars == {"name": "Ann"} and ann.prompt == "Remind {name}."
    assert ann.metadata == {"source": "test", "row": 1}  # recipient keys win
    assert bob.prompt == "Ask {name}." and bob.metadata == {"source": "test", "row": 0}
    assert ann.from_number == r.number and ann.status == "queued"
    assert ann.call_id.startswith("CA") and ann.call_id != ann.call_ref  # dialed: carrier SID
    detail = await r.get(camp["campaign_id"])
    assert detail["counts"]["in_progress"] == 2
    assert {row["call_ids"][0] for row in detail["recipients"]} == {ann.call_id, bob.call_id}
    # the calls list filters by campaign
    listed = await cenv.client.get(
        "/v1/calls", params={"campaign_id": camp["campaign_id"]}, headers=r.account.headers
    )
    assert listed.json()["count"] == 2


async def test_pacing_never_exceeds_max_concurrent(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create([{"phone": n} for n in numbers(25)], max_concurrent=3)
    cid = camp["campaign_id"]
    rng = random.Random(8)
    peak = 0
    for _ in range(200):
        await r.tick()
        live = await r.live(cid)
        peak = max(peak, len(live))
        assert len(live) <= 3
        if not live:
            break
        # end a random subset of the live calls
        for call in rng.sample(live, rng.randint(1, len(live))):
            await r.end(call, "completed")
    detail = await r.get(cid)
    assert peak == 3
    assert detail["status"] == "completed"
    assert detail["counts"]["completed"] == 25
    assert sorted(r.dialed_numbers()) == numbers(25)  # each exactly once


async def test_account_limit_is_a_wait_not_a_failure(cenv: Env) -> None:
    r = await rig(cenv, max_concurrent_calls=2)
    camp = await r.create([{"phone": n} for n in numbers(6)], max_concurrent=5)
    cid = camp["campaign_id"]
    await r.tick()
    assert len(await r.live(cid)) == 2  # the account's limit, not the campaign's
    detail = await r.get(cid)
    assert detail["counts"]["failed"] == 0
    assert detail["counts"]["queued"] + detail["counts"]["in_progress"] == 6
    usage = (await cenv.client.get("/v1/usage", headers=r.account.headers)).json()
    assert usage["peak_concurrency"] <= 2
    for _ in range(30):
        r.dispatcher._account_wait.clear()  # skip the short back-off in the test
        await r.tick()
        live = await r.live(cid)
        assert len(live) <= 2
        if not live:
            break
        for call in live:
            await r.end(call, "completed")
    assert (await r.get(cid))["counts"]["completed"] == 6
    usage = (await cenv.client.get("/v1/usage", headers=r.account.headers)).json()
    assert usage["peak_concurrency"] == 2


async def test_retries_per_policy(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create(
        [
            {"phone": "+15550000001"},
            {"phone": "+15550000002"},
            {"phone": "+15550000003"},
            {"phone": "+15550000004"},
        ],
        retry={"max_attempts": 2, "retry_delay_minutes": 0, "on": ["busy", "voicemail"]},
    )
    cid = camp["campaign_id"]
    await r.tick()
    outcome = {
        "+15550000001": ("busy", False),  # retried
        "+15550000002": ("completed", True),  # voicemail: retried
        "+15550000003": ("no-answer", False),  # not in retry.on
        "+15550000004": ("completed", False),  # reached
    }
    for call in await r.live(cid):
        status, vm = outcome[call.to_number]
        await r.end(call, status, voicemail=vm)
    detail = await r.get(cid)
    states = {row["phone_number"]: row for row in detail["recipients"]}
    assert states["+15550000001"]["state"] == "queued"
    assert states["+15550000001"]["last_outcome"] == "busy"
    assert states["+15550000002"]["state"] == "queued"
    assert states["+15550000003"]["state"] == "failed"
    assert states["+15550000004"]["state"] == "completed"
    await r.tick()
    second = await r.live(cid)
    assert sorted(c.to_number for c in second) == ["+15550000001", "+15550000002"]
    for call in second:
        await r.end(call, "busy")  # out of attempts now
    detail = await r.get(cid)
    states = {row["phone_number"]: row for row in detail["recipients"]}
    assert states["+15550000001"]["state"] == "failed" and states["+15550000001"]["attempts"] == 2
    assert len(states["+15550000001"]["call_ids"]) == 2
    assert [c["outcome"] for c in states["+15550000002"]["calls"]] == ["voicemail", "busy"]
    assert detail["status"] == "completed"
    assert detail["counts"] == {
        "queued": 0,
        "in_progress": 0,
        "completed": 1,
        "failed": 3,
        "canceled": 0,
    }
    # counters match the calls: one call per attempt
    calls = await r.all_calls(cid)
    assert len(calls) == sum(row["attempts"] for row in detail["recipients"]) == 6
    assert Counter(c.to_number for c in calls) == Counter(r.dialed_numbers())


async def test_retry_waits_for_its_delay(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create(
        [{"phone": "+15550000001"}], retry={"max_attempts": 3, "retry_delay_minutes": 10}
    )
    await r.tick()
    (call,) = await r.live(camp["campaign_id"])
    await r.end(call, "no-answer")
    row = (await r.get(camp["campaign_id"]))["recipients"][0]
    retry_at = datetime.fromisoformat(row["next_attempt_at"])
    assert timedelta(minutes=9) < retry_at - datetime.now(UTC) <= timedelta(minutes=10)
    assert await r.tick() == 0
    later = dispatcher(r, clock=lambda: retry_at + timedelta(seconds=1))
    assert await r.tick(later) == 1
    assert len(r.dialed()) == 2


async def test_calling_window_gates_dialing(cenv: Env) -> None:
    r = await rig(cenv)
    # Monday-Friday 09:00-17:00 in New York
    camp = await r.create(
        [{"phone": n} for n in numbers(3)],
        window_start_minutes=9 * 60,
        window_end_minutes=17 * 60,
        window_days=["mon", "tue", "wed", "thu", "fri"],
        timezone="America/New_York",
    )
    saturday_noon = datetime(2026, 7, 18, 16, 0, tzinfo=UTC)
    monday_0859 = datetime(2026, 7, 20, 12, 59, tzinfo=UTC)
    monday_0900 = datetime(2026, 7, 20, 13, 0, tzinfo=UTC)
    assert await r.tick(dispatcher(r, clock=lambda: saturday_noon)) == 0
    assert await r.tick(dispatcher(r, clock=lambda: monday_0859)) == 0
    assert r.dialed() == []
    assert await r.tick(dispatcher(r, clock=lambda: monday_0900)) == 3
    assert len(r.dialed()) == 3
    detail = await r.get(camp["campaign_id"])
    assert detail["timezone"] == "America/New_York"


async def test_pause_resume_and_cancel(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create([{"phone": n} for n in numbers(6)], max_concurrent=2)
    cid = camp["campaign_id"]
    await r.tick()
    first = await r.live(cid)
    assert len(first) == 2
    assert (await r.post(cid, "pause")).json()["status"] == "paused"
    for call in first:
        await r.end(call, "completed")
    assert await r.tick() == 0  # paused: nothing new
    assert (await r.post(cid, "launch")).json()["status"] == "running"
    await r.tick()
    second = await r.live(cid)
    assert len(second) == 2
    canceled = await cenv.client.delete(f"/v1/calls/batch/{cid}", headers=r.account.headers)
    body = canceled.json()
    assert body["status"] == "canceled"
    assert body["counts"] == {
        "queued": 0,
        "in_progress": 2,
        "completed": 2,
        "failed": 0,
        "canceled": 2,
    }
    assert await r.tick() == 0
    # calls in progress finish normally; a retryable outcome is not retried once canceled
    await r.end(second[0], "completed")
    await r.end(second[1], "busy")
    detail = await r.get(cid)
    assert detail["status"] == "canceled"
    assert detail["counts"] == {
        "queued": 0,
        "in_progress": 0,
        "completed": 3,
        "failed": 1,
        "canceled": 2,
    }
    assert len(r.dialed()) == 4


async def test_scheduled_campaign_starts_on_time_or_when_launched(cenv: Env) -> None:
    r = await rig(cenv)
    at = datetime.now(UTC) + timedelta(hours=2)
    camp = await r.create(
        [{"phone": "+15550000001"}], schedule_type="schedule", scheduled_at=at.isoformat()
    )
    assert await r.tick() == 0
    assert await r.tick(dispatcher(r, clock=lambda: at + timedelta(seconds=1))) == 1
    assert (await r.get(camp["campaign_id"]))["status"] == "running"


async def test_completion_callback_runs_once(cenv: Env) -> None:
    r = await rig(cenv)
    done: list[CampaignRecord] = []

    async def on_completed(record: CampaignRecord) -> None:
        done.append(record)

    r.dispatcher.add_on_completed(on_completed)
    camp = await r.create([{"phone": n} for n in numbers(3)])
    await r.tick()
    live = await r.live(camp["campaign_id"])
    for call in live:
        await r.end(call, "completed")
    # the hook firing again for the same calls changes nothing
    for call in live:
        final = await r.repos.calls.get(call.call_id)
        await r.dispatcher.on_final(final)
    assert [c.campaign_id for c in done] == [camp["campaign_id"]]
    assert done[0].status == "completed"


async def test_carrier_refusal_fails_the_attempt(cenv: Env) -> None:
    from nixflex_engine.calls.dialer import DialError

    r = await rig(cenv)
    cenv.dialer.failures["+15550000002"] = DialError(21211, "Invalid 'To' number", 400)
    camp = await r.create(
        [{"phone": "+15550000001"}, {"phone": "+15550000002"}],
        retry={"max_attempts": 3, "retry_delay_minutes": 0},
    )
    await r.tick()
    rows = {row["phone_number"]: row for row in (await r.get(camp["campaign_id"]))["recipients"]}
    refused = rows["+15550000002"]
    assert refused["state"] == "failed" and refused["last_outcome"] == "failed"
    assert refused["calls"][0]["status"] == "failed"  # the failed call record, kept
    assert rows["+15550000001"]["state"] == "in_progress"


async def test_a_deleted_agent_pauses_the_campaign(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create([{"phone": n} for n in numbers(3)])
    deleted = await cenv.client.delete(
        f"/v1/agents/{r.agent['agent_id']}", headers=r.account.headers
    )
    assert deleted.status_code == 200
    await r.tick()
    detail = await r.get(camp["campaign_id"])
    assert detail["status"] == "paused"
    assert detail["last_error"]["code"] == "agent_not_found"
    assert detail["counts"]["queued"] == 3 and detail["counts"]["failed"] == 0
    assert r.dialed() == []


async def test_restart_between_claim_and_dial_dials_each_attempt_once(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create([{"phone": n} for n in numbers(4)])
    cid = camp["campaign_id"]
    now = datetime.now(UTC)
    # node A claims and dies before dialing (no call rows)
    claims = await r.dispatcher.campaigns.claim(cid, node="A", now=now, limit=10)
    assert len(claims) == 4 and r.dialed() == []
    # node B restarts: within the lease nothing is touched
    b = dispatcher(r, node_id="B", claim_lease_seconds=60)
    assert await b.reconcile() == 0
    assert await r.tick(b) == 0  # all 4 are claimed (in progress) by A
    # after the lease, B re-queues them with the same attempt and call reference
    later = dispatcher(
        r, node_id="B", claim_lease_seconds=60, clock=lambda: now + timedelta(seconds=61)
    )
    assert await later.reconcile() == 4
    assert await r.tick(later) == 4
    refs = {d.call_ref for d in r.dialed()}
    assert refs == {c.call_ref for c in claims}
    detail = await r.get(cid)
    assert all(row["attempts"] == 1 for row in detail["recipients"])
    # A was only stalled, not dead: its late dial of the same attempt is refused, not placed
    original = claims[0]
    with pytest.raises(DuplicateError):
        await r.env.services.outbound.create(
            r.account.account_id,
            {
                "agent_id": r.agent["agent_id"],
                "to_number": original.phone_number,
                "campaign_id": cid,
            },
            call_ref=original.call_ref,
        )
    assert sorted(r.dialed_numbers()) == numbers(4)


async def test_restart_after_the_call_row_never_redials(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create(
        [{"phone": "+15550000001"}], retry={"max_attempts": 3, "retry_delay_minutes": 0}
    )
    cid = camp["campaign_id"]
    now = datetime.now(UTC)
    (claim,) = await r.dispatcher.campaigns.claim(cid, node="A", now=now, limit=10)
    # node A wrote the call row (slot reserved), then died before the carrier answered
    record = await r.repos.calls.create_reserving_slot(
        NewCall(
            account_id=r.account.account_id,
            agent_id=r.agent["agent_id"],
            from_number=r.number,
            to_number=claim.phone_number,
            voicemail_action="hangup",
            dynamic_vars={},
            campaign_id=cid,
            call_ref=claim.call_ref,
        ),
        default_limit=10,
    )
    assert record is not None
    b = dispatcher(
        r, node_id="B", claim_lease_seconds=0.001, clock=lambda: now + timedelta(seconds=5)
    )
    assert await b.reconcile() == 0  # the call is live as far as anyone knows: left alone
    assert await r.tick(b) == 0
    assert r.dialed() == []
    # the call lifecycle's reconciler finishes the unconfirmed dial as failed...
    assert await r.repos.calls.finish_call(record.call_id, "failed", "failed")
    # ...and the campaign's reconciler settles it without a retry (failed is never retried)
    assert await b.reconcile() == 1
    row = (await r.get(cid))["recipients"][0]
    assert row["state"] == "failed" and row["attempts"] == 1
    assert await r.tick(b) == 0
    assert r.dialed() == []


async def test_outcome_lost_in_a_crash_is_applied_by_the_reconciler(cenv: Env) -> None:
    r = await rig(cenv)
    camp = await r.create([{"phone": "+15550000001"}])
    await r.tick()
    (call,) = await r.live(camp["campaign_id"])
    # the call ended but the node died before the after-call hook ran
    assert await r.repos.calls.finish_call(call.call_id, "completed", "agent_hangup")
    b = dispatcher(r, node_id="B", claim_lease_seconds=0.001)
    assert await b.reconcile() == 1
    detail = await r.get(camp["campaign_id"])
    assert detail["status"] == "completed" and detail["counts"]["completed"] == 1
