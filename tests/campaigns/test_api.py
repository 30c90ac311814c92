"""POST/GET /v1/calls/batch, launch, pause, DELETE: validation, shapes, transitions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from api.support import Env, assert_error
from nixflex_engine.store.models import campaign_recipients, campaigns

from .support import count_where, numbers, rig


async def _campaign_rows(env: Env, account_id: str) -> int:
    return await count_where(
        env,
        sa.select(sa.func.count())
        .select_from(campaigns)
        .where(campaigns.c.account_id == account_id),
    )


async def test_create_with_sdk_aliases_collapses_duplicates(cenv: Env) -> None:
    r = await rig(cenv)
    body = await r.create(
        [
            {"phone": "+15550000001", "variables": {"name": "Ann"}, "prompt_override": "Be brief."},
            {"phone_number": "+15550000002", "dynamic_vars": {"name": "Bob"}, "metadata": {"k": 1}},
            {"phone": "+15550000001", "variables": {"name": "Ann again"}},
        ],
        name="Spring reminders",
        prompt="Remind {name} about the appointment.",
        from_number=r.number,
        window_start_minutes=9 * 60,
        window_end_minutes=17 * 60,
        window_days=["mon", "tue", 3, "Thursday", "fri"],
        timezone="Europe/London",
        max_concurrent=4,
        retry={"max_attempts": 3, "retry_delay_minutes": 30, "on": ["busy", "no-answer"]},
        metadata={"source": "test"},
    )
    assert body["campaign_id"].startswith("camp_") and len(body["campaign_id"]) == 21
    assert body["status"] == "running" and body["schedule_type"] == "now"
    assert body["recipients_total"] == 2 and body["duplicates_collapsed"] == 1
    assert body["counts"] == {
        "queued": 2,
        "in_progress": 0,
        "completed": 0,
        "failed": 0,
        "canceled": 0,
    }
    assert body["window_days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert body["retry"] == {
        "max_attempts": 3,
        "retry_delay_minutes": 30,
        "on": ["busy", "no-answer"],
    }
    assert body["invalid"] == []
    detail = await r.get(body["campaign_id"])
    assert detail["recipients_count"] == 2
    first, second = detail["recipients"]
    assert first["phone_number"] == "+15550000001" and first["dynamic_vars"] == {"name": "Ann"}
    assert first["prompt_override"] == "Be brief." and first["state"] == "queued"
    assert second["metadata"] == {"k": 1} and second["attempts"] == 0 and second["calls"] == []


async def test_invalid_recipients_are_listed_and_nothing_is_stored(cenv: Env) -> None:
    r = await rig(cenv)
    rows: list[Any] = [
        {"phone": "+15550000001"},
        {"phone": "555-1234"},
        "not an object",
        {"phone": "+15550000003", "variables": {"x": 5}},
        {"phone": "+15550000004", "shoe_size": 44},
        {"phone": "+15550000005", "phone_number": "+15550000005"},
        {"dynamic_vars": {}},
    ]
    resp = await cenv.client.post(
        "/v1/calls/batch",
        json={"agent_id": r.agent["agent_id"], "recipients": rows},
        headers=r.account.headers,
    )
    err = assert_error(resp, 400, "invalid_recipients")
    details = err["details"]
    assert details["invalid_count"] == 6
    by_index = {row["index"]: row for row in details["invalid"]}
    assert set(by_index) == {1, 2, 3, 4, 5, 6}
    assert by_index[1]["code"] == "invalid_phone_format"
    assert by_index[1]["field"] == "phone_number" and by_index[1]["phone_number"] == "555-1234"
    assert by_index[3]["code"] == "invalid_request" and by_index[3]["field"] == "variables"
    assert by_index[4]["field"] == "shoe_size"
    assert by_index[6]["code"] == "missing_field"
    assert await _campaign_rows(cenv, r.account.account_id) == 0


async def test_skip_invalid_keeps_the_valid_rows_with_a_report(cenv: Env) -> None:
    r = await rig(cenv)
    body = await r.create(
        [{"phone": "+15550000001"}, {"phone": "+1"}, {"phone": "+15550000002"}],
        skip_invalid=True,
    )
    assert body["recipients_total"] == 2
    assert [row["index"] for row in body["invalid"]] == [1] and body["invalid_count"] == 1
    # the report stays on the campaign
    assert (await r.get(body["campaign_id"]))["invalid"] == body["invalid"]
    only_bad = await cenv.client.post(
        "/v1/calls/batch",
        json={
            "agent_id": r.agent["agent_id"],
            "recipients": [{"phone": "x"}],
            "skip_invalid": True,
        },
        headers=r.account.headers,
    )
    assert_error(only_bad, 400, "no_valid_recipients")


async def test_recipient_checks_are_the_outbound_checks(cenv: Env) -> None:
    r = await rig(cenv)
    big = {"blob": "x" * 17_000}
    resp = await cenv.client.post(
        "/v1/calls/batch",
        json={
            "agent_id": r.agent["agent_id"],
            "metadata": {"campaign": "y" * 9000},
            # each row alone is small; merged with the campaign's metadata one is too large
            "recipients": [
                {"phone": "+15550000001", "metadata": {"a": "z" * 8000}},
                {"phone": "+15550000002", "metadata": big},
            ],
        },
        headers=r.account.headers,
    )
    err = assert_error(resp, 400, "invalid_recipients")
    assert [row["index"] for row in err["details"]["invalid"]] == [0, 1]
    assert {row["field"] for row in err["details"]["invalid"]} == {"metadata"}
    long_prompt = await cenv.client.post(
        "/v1/calls/batch",
        json={
            "agent_id": r.agent["agent_id"],
            "recipients": [{"phone": "+15550000001", "prompt_override": "p" * 16_001}],
        },
        headers=r.account.headers,
    )
    assert (
        assert_error(long_prompt, 400, "invalid_recipients")["details"]["invalid"][0]["code"]
        == "prompt_too_long"
    )


async def test_campaign_field_errors(cenv: Env) -> None:
    r = await rig(cenv)
    agent_id = r.agent["agent_id"]
    ok_rows = [{"phone": "+15550000001"}]
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"recipients": ok_rows}, 400, "missing_field", "agent_id"),
        ({"agent_id": agent_id}, 400, "missing_field", "recipients"),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "from_number": "12"},
            400,
            "invalid_phone_format",
            "from_number",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "colour": "red"},
            400,
            "invalid_request",
            "colour",
        ),
        ({"agent_id": agent_id, "recipients": "x"}, 400, "invalid_request", "recipients"),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "timezone": "Mars/Olympus"},
            400,
            "invalid_request",
            "timezone",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "window_start_minutes": 60},
            400,
            "missing_field",
            "window_end_minutes",
        ),
        (
            {
                "agent_id": agent_id,
                "recipients": ok_rows,
                "window_start_minutes": 60,
                "window_end_minutes": 60,
            },
            400,
            "invalid_request",
            "window_end_minutes",
        ),
        (
            {
                "agent_id": agent_id,
                "recipients": ok_rows,
                "window_start_minutes": 1440,
                "window_end_minutes": 60,
            },
            400,
            "invalid_request",
            "window_start_minutes",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "window_days": []},
            400,
            "invalid_request",
            "window_days",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "window_days": [7]},
            400,
            "invalid_request",
            "window_days",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "max_concurrent": 0},
            400,
            "invalid_request",
            "max_concurrent",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "retry": {"on": ["failed"]}},
            400,
            "invalid_request",
            "retry.on",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "retry": {"max_attempts": 11}},
            400,
            "invalid_request",
            "retry.max_attempts",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "retry": {"retry_delay_minutes": -1}},
            400,
            "invalid_request",
            "retry.retry_delay_minutes",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "retry": {"tries": 2}},
            400,
            "invalid_request",
            "retry.tries",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "schedule_type": "later"},
            400,
            "invalid_request",
            "schedule_type",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "scheduled_at": "2030-01-01T00:00:00Z"},
            400,
            "invalid_request",
            "scheduled_at",
        ),
        (
            {
                "agent_id": agent_id,
                "recipients": ok_rows,
                "schedule_type": "schedule",
                "scheduled_at": "soon",
            },
            400,
            "invalid_request",
            "scheduled_at",
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "skip_invalid": "yes"},
            400,
            "invalid_request",
            "skip_invalid",
        ),
        (
            {"agent_id": "agent_0000000000000000", "recipients": ok_rows},
            404,
            "agent_not_found",
            None,
        ),
        (
            {"agent_id": agent_id, "recipients": ok_rows, "from_number": "+15559999999"},
            403,
            "from_number_not_owned",
            "from_number",
        ),
    ]
    for body, status, code, field in cases:
        resp = await cenv.client.post("/v1/calls/batch", json=body, headers=r.account.headers)
        err = assert_error(resp, status, code)
        if field is not None:
            assert err["details"]["field"] == field, (body, err)
    too_many = [{"phone": n} for n in numbers(10_001)]
    resp = await cenv.client.post(
        "/v1/calls/batch",
        json={"agent_id": agent_id, "recipients": too_many},
        headers=r.account.headers,
    )
    assert assert_error(resp, 400, "invalid_request")["details"]["max_items"] == 10_000
    # another account's agent
    other = await rig(cenv)
    resp = await cenv.client.post(
        "/v1/calls/batch",
        json={"agent_id": other.agent["agent_id"], "recipients": ok_rows},
        headers=r.account.headers,
    )
    assert_error(resp, 403, "agent_not_owned")
    assert await _campaign_rows(cenv, r.account.account_id) == 0


async def test_ten_thousand_recipients_in_one_request(cenv: Env) -> None:
    r = await rig(cenv)
    rows = [
        {"phone": n, "variables": {"name": f"person {i}"}} for i, n in enumerate(numbers(10_000))
    ]
    body = await r.create(rows, schedule_type="schedule")
    assert body["status"] == "draft" and body["recipients_total"] == 10_000
    stored = await count_where(
        cenv,
        sa.select(sa.func.count())
        .select_from(campaign_recipients)
        .where(campaign_recipients.c.campaign_id == body["campaign_id"]),
    )
    assert stored == 10_000
    page = await r.get(body["campaign_id"], limit=100, offset=9_950)
    assert page["recipients_count"] == 10_000 and len(page["recipients"]) == 50
    assert page["recipients"][-1]["index"] == 9_999


async def test_list_transitions_and_route_order(cenv: Env) -> None:
    r = await rig(cenv)
    draft = await r.create([{"phone": "+15550000001"}], schedule_type="schedule")
    scheduled = await r.create(
        [{"phone": "+15550000001"}],
        schedule_type="schedule",
        scheduled_at="2099-01-01T09:00:00+01:00",
    )
    assert draft["status"] == "draft"
    assert scheduled["status"] == "scheduled"
    assert scheduled["scheduled_at"].startswith("2099-01-01T08:00:00")
    listed = await cenv.client.get("/v1/calls/batch", headers=r.account.headers)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["count"] == 2 and [c["campaign_id"] for c in page["campaigns"]] == [
        scheduled["campaign_id"],
        draft["campaign_id"],
    ]
    only = await cenv.client.get(
        "/v1/calls/batch", params={"status": "draft"}, headers=r.account.headers
    )
    assert [c["campaign_id"] for c in only.json()["campaigns"]] == [draft["campaign_id"]]
    cid = draft["campaign_id"]
    # pause a draft: not allowed
    assert_error(await r.post(cid, "pause"), 409, "campaign_not_pausable")
    launched = await r.post(cid, "launch")
    assert launched.status_code == 200 and launched.json()["status"] == "running"
    assert launched.json()["launched_at"] is not None
    assert (await r.post(cid, "launch")).status_code == 200  # idempotent
    assert (await r.post(cid, "pause")).json()["status"] == "paused"
    assert (await r.post(cid, "launch")).json()["status"] == "running"  # resume
    canceled = await cenv.client.delete(f"/v1/calls/batch/{cid}", headers=r.account.headers)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert canceled.json()["counts"]["canceled"] == 1
    again = await cenv.client.delete(f"/v1/calls/batch/{cid}", headers=r.account.headers)
    assert again.status_code == 200
    assert_error(await r.post(cid, "launch"), 409, "campaign_not_launchable")
    assert_error(await r.post(cid, "pause"), 409, "campaign_not_pausable")
    # unknown and foreign campaigns
    other = await rig(cenv)
    for path in (f"/v1/calls/batch/{cid}", "/v1/calls/batch/camp_0000000000000000"):
        assert_error(
            await cenv.client.get(path, headers=other.account.headers), 404, "campaign_not_found"
        )
        assert_error(
            await cenv.client.post(path + "/launch", headers=other.account.headers),
            404,
            "campaign_not_found",
        )
    # bad query values
    assert_error(
        await cenv.client.get("/v1/calls/batch", params={"status": "x"}, headers=r.account.headers),
        400,
        "invalid_request",
    )
    assert_error(
        await cenv.client.get(
            f"/v1/calls/batch/{cid}", params={"state": "x"}, headers=r.account.headers
        ),
        400,
        "invalid_request",
    )


async def test_idempotency_key_creates_one_campaign(cenv: Env) -> None:
    r = await rig(cenv)
    body = {"agent_id": r.agent["agent_id"], "recipients": [{"phone": "+15550000001"}]}
    headers = {**r.account.headers, "Idempotency-Key": "camp-1"}
    first = await cenv.client.post("/v1/calls/batch", json=body, headers=headers)
    second = await cenv.client.post("/v1/calls/batch", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["campaign_id"] == second.json()["campaign_id"]
    assert await _campaign_rows(cenv, r.account.account_id) == 1
