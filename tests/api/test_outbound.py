"""POST /v1/calls/outbound: the seed's validation order, step by step and in pairs, the 201
body, the record written before the dial, 502 on carrier refusal, the concurrency limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nixflex_engine.calls.dialer import DialError

from .support import Env, assert_error, random_e164

TO = "+447386172392"


async def post(env: Env, account: Any, body: dict[str, Any], **headers: str) -> Any:
    return await env.client.post(
        "/v1/calls/outbound", json=body, headers={**account.headers, **headers}
    )


async def test_seed_example_returns_exactly_the_seed_fields(env: Env) -> None:
    account, agent, number = await env.ready()
    r = await post(env, account, {"agent_id": agent["agent_id"], "to_number": TO})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"call_id", "status", "agent_id", "to_number", "from_number"}
    assert body["status"] == "queued"
    assert body["agent_id"] == agent["agent_id"]
    assert body["to_number"] == TO
    assert body["from_number"] == number
    assert body["call_id"].startswith("CA")
    # the call id is the carrier's SID
    assert env.dialer.dialed[-1].to_number == TO
    record = (await env.client.get(f"/v1/calls/{body['call_id']}", headers=account.headers)).json()
    assert record["status"] == "queued" and record["direction"] == "outbound"


async def test_full_seed_body_echoes_campaign_and_metadata(env: Env) -> None:
    account, agent, number = await env.ready()
    metadata = {"internal_lead_id": "lead_abc123", "nested": {"a": [1, 2.5, None, True]}}
    r = await post(
        env,
        account,
        {
            "agent_id": agent["agent_id"],
            "to_number": TO,
            "from_number": number,
            "dynamic_vars": {"patient_name": "Sarah", "appointment_time": "Tuesday at 2pm"},
            "voicemail_message": "Call us back",
            "voicemail_action": "leave_message",
            "metadata": metadata,
            "campaign_id": "camp_0123456789abcdef",
            "prompt": "Confirm the appointment.",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {
        "call_id",
        "status",
        "agent_id",
        "to_number",
        "from_number",
        "campaign_id",
        "metadata",
    }
    assert body["metadata"] == metadata and body["campaign_id"] == "camp_0123456789abcdef"
    record = (await env.client.get(f"/v1/calls/{body['call_id']}", headers=account.headers)).json()
    assert record["metadata"] == metadata
    assert list(record["metadata"]) == list(metadata)  # key order kept
    assert record["dynamic_vars"] == {"patient_name": "Sarah", "appointment_time": "Tuesday at 2pm"}
    assert record["voicemail_action"] == "leave_message"
    assert record["voicemail_message"] == "Call us back"
    assert record["campaign_id"] == "camp_0123456789abcdef"
    assert record["prompt"] == "Confirm the appointment."


async def test_variables_alias_and_agent_default_voicemail_action(env: Env) -> None:
    account, agent, _ = await env.ready(voicemail_action="ignore")
    r = await post(
        env, account, {"agent_id": agent["agent_id"], "to_number": TO, "variables": {"x": "1"}}
    )
    assert r.status_code == 201, r.text
    record = (
        await env.client.get(f"/v1/calls/{r.json()['call_id']}", headers=account.headers)
    ).json()
    assert record["dynamic_vars"] == {"x": "1"}
    assert record["voicemail_action"] == "ignore"


# --- step by step -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to_number": TO}, "agent_id"),
        ({"agent_id": "", "to_number": TO}, "agent_id"),
        ({"agent_id": "   ", "to_number": TO}, "agent_id"),
        ({"agent_id": None, "to_number": TO}, "agent_id"),
        ({"agent_id": "agent_x"}, "to_number"),
        ({"agent_id": "agent_x", "to_number": ""}, "to_number"),
        ({}, "agent_id"),
    ],
)
async def test_step1_missing_field(env: Env, body: dict[str, Any], field: str) -> None:
    account = await env.account()
    err = assert_error(await post(env, account, body), 400, "missing_field")
    assert err["details"]["field"] == field
    assert err["type"] == "invalid_request"


@pytest.mark.parametrize(
    "bad",
    [
        "07386172392",
        "447386172392",
        "+0447386172392",
        "+44 7386 172392",
        "+1",
        "+1234567890123456",
        447386172392,
        "+44\u0667\u0663\u0668\u0666\u0661\u0667\u0662\u0663\u0669\u0662",
        "+447386172392\n",
    ],
)
async def test_step2_invalid_to_number(env: Env, bad: Any) -> None:
    account = await env.account()
    err = assert_error(
        await post(env, account, {"agent_id": "agent_x", "to_number": bad}),
        400,
        "invalid_phone_format",
    )
    assert err["details"]["field"] == "to_number"


async def test_step2_invalid_from_number(env: Env) -> None:
    account = await env.account()
    err = assert_error(
        await post(env, account, {"agent_id": "a", "to_number": TO, "from_number": "0744"}),
        400,
        "invalid_phone_format",
    )
    assert err["details"]["field"] == "from_number"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"dynamic_vars": "x"}, "dynamic_vars"),
        ({"dynamic_vars": {"a": 1}}, "dynamic_vars"),
        ({"variables": ["a"]}, "variables"),
        ({"dynamic_vars": {"a": "1"}, "variables": {"b": "2"}}, "variables"),
        ({"voicemail_action": "shout"}, "voicemail_action"),
        ({"voicemail_message": 5}, "voicemail_message"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata": {"big": "x" * 17000}}, "metadata"),
        ({"campaign_id": 7}, "campaign_id"),
        ({"prompt": ["x"]}, "prompt"),
        ({"surprise": 1}, "surprise"),
        ({"agent_id": 42}, "agent_id"),
    ],
)
async def test_step2_invalid_request(env: Env, extra: dict[str, Any], field: str) -> None:
    account = await env.account()
    body = {"agent_id": "agent_x", "to_number": TO, **extra}
    err = assert_error(await post(env, account, body), 400, "invalid_request")
    assert err["details"]["field"] == field


async def test_step2_prompt_too_long(env: Env) -> None:
    account = await env.account()
    body = {"agent_id": "agent_x", "to_number": TO, "prompt": "x" * 16_001}
    assert_error(await post(env, account, body), 400, "prompt_too_long")


async def test_step3_agent_not_found_and_not_owned(env: Env) -> None:
    account = await env.account()
    other = await env.account()
    others_agent = await env.agent(other)
    assert_error(
        await post(env, account, {"agent_id": "agent_0000000000000000", "to_number": TO}),
        404,
        "agent_not_found",
    )
    err = assert_error(
        await post(env, account, {"agent_id": others_agent["agent_id"], "to_number": TO}),
        403,
        "agent_not_owned",
    )
    assert err["type"] == "permission_error"


async def test_step4_agent_no_phone_and_from_number_not_owned(env: Env) -> None:
    account = await env.account()
    agent = await env.agent(account)
    assert_error(
        await post(env, account, {"agent_id": agent["agent_id"], "to_number": TO}),
        400,
        "agent_no_phone",
    )
    _other, _, others_number = await env.ready()
    for from_number in (others_number, random_e164()):
        assert_error(
            await post(
                env,
                account,
                {"agent_id": agent["agent_id"], "to_number": TO, "from_number": from_number},
            ),
            403,
            "from_number_not_owned",
        )
    # an agent without numbers can still call from one of the account's numbers
    own_unattached = await env.number(account, None)
    r = await post(
        env,
        account,
        {"agent_id": agent["agent_id"], "to_number": TO, "from_number": own_unattached},
    )
    assert r.status_code == 201, r.text
    assert r.json()["from_number"] == own_unattached


async def test_first_attached_number_is_used(env: Env) -> None:
    account, agent, first = await env.ready()
    await env.number(account, agent["agent_id"])
    r = await post(env, account, {"agent_id": agent["agent_id"], "to_number": TO})
    assert r.json()["from_number"] == first


async def test_step5_twilio_credentials_missing(env: Env) -> None:
    account, agent, number = await env.ready()
    r = await env.client.patch(
        f"/v1/phone-numbers/{number.replace('+', '%2B')}",
        json={"twilio_account_sid": None, "twilio_auth_token": None},
        headers=account.headers,
    )
    assert r.status_code == 200 and r.json()["has_twilio_credentials"] is False
    err = assert_error(
        await post(env, account, {"agent_id": agent["agent_id"], "to_number": TO}),
        400,
        "twilio_credentials_missing",
    )
    assert err["details"]["phone_number"] == number


async def test_step6_concurrent_call_limit(env: Env) -> None:
    account = await env.account(max_concurrent_calls=2)
    agent = await env.agent(account)
    await env.number(account, agent["agent_id"])
    body = {"agent_id": agent["agent_id"], "to_number": TO}
    assert (await post(env, account, body)).status_code == 201
    assert (await post(env, account, body)).status_code == 201
    r = await post(env, account, body)
    err = assert_error(r, 429, "concurrent_call_limit")
    assert err["type"] == "rate_limit_error"
    assert int(r.headers["retry-after"]) >= 1
    assert err["details"]["limit"] == 2 and err["details"]["retry_after"] >= 1
    assert len(env.dialer.dialed) == 2
    # finishing a call frees its slot, exactly once
    calls = (await env.client.get("/v1/calls", headers=account.headers)).json()["calls"]
    repo = env.services.repos.calls
    assert await repo.finish_call(calls[0]["call_id"], "completed", "agent_hangup") is True
    assert await repo.finish_call(calls[0]["call_id"], "completed", "agent_hangup") is False
    assert (await post(env, account, body)).status_code == 201
    assert_error(await post(env, account, body), 429, "concurrent_call_limit")


async def test_step7_dial_refused_502_slot_released_failed_record_kept(env: Env) -> None:
    account = await env.account(max_concurrent_calls=1)
    agent = await env.agent(account)
    await env.number(account, agent["agent_id"])
    blocked = random_e164("+1555")
    env.dialer.failures[blocked] = DialError(
        21211, f"The 'To' number {blocked} is not a valid phone number.", 400
    )
    r = await post(env, account, {"agent_id": agent["agent_id"], "to_number": blocked})
    err = assert_error(r, 502, "outbound_failed")
    assert err["type"] == "provider_error"
    assert err["details"]["twilio_error"] == {
        "code": 21211,
        "message": f"The 'To' number {blocked} is not a valid phone number.",
        "status": 400,
    }
    # the failed attempt is a record
    failed = (await env.client.get("/v1/calls?status=failed", headers=account.headers)).json()[
        "calls"
    ]
    assert len(failed) == 1
    assert failed[0]["to_number"] == blocked and failed[0]["ended_reason"] == "failed"
    assert failed[0]["twilio_error"]["code"] == 21211
    assert failed[0]["call_id"] == err["details"]["call_id"]
    # the slot came back: with a limit of 1, the next call goes through
    r = await post(env, account, {"agent_id": agent["agent_id"], "to_number": TO})
    assert r.status_code == 201, r.text
    usage = (await env.client.get("/v1/usage", headers=account.headers)).json()
    assert usage["in_flight"] == 1 and usage["failed_calls"] == 1 and usage["calls"] == 2


async def test_dialer_crash_is_502_not_500(env: Env) -> None:
    account, agent, _ = await env.ready()

    class Boom(Exception):
        pass

    async def explode(request: Any) -> Any:
        raise Boom("socket closed; password=hunter2")

    env.dialer.dial = explode  # type: ignore[method-assign]
    r = await post(env, account, {"agent_id": agent["agent_id"], "to_number": TO})
    err = assert_error(r, 502, "outbound_failed")
    assert "hunter2" not in r.text
    assert err["details"]["twilio_error"]["code"] is None


async def test_record_is_written_before_the_dial(env: Env) -> None:
    account, agent, _ = await env.ready()
    seen: list[Any] = []
    original = env.dialer.dial

    async def spy(request: Any) -> Any:
        seen.append(await env.services.repos.calls.get_by_ref(request.call_ref))
        return await original(request)

    env.dialer.dial = spy  # type: ignore[method-assign]
    r = await post(env, account, {"agent_id": agent["agent_id"], "to_number": TO})
    assert r.status_code == 201
    assert seen[0] is not None and seen[0].status == "queued" and seen[0].slot_held


async def test_inactive_agent_refused_after_documented_steps(env: Env) -> None:
    account, agent, _ = await env.ready(is_active=False)
    assert_error(
        await post(env, account, {"agent_id": agent["agent_id"], "to_number": TO}),
        400,
        "agent_inactive",
    )


# --- pairs of failures: the earlier step wins ----------------------------------------------


async def test_pairs_prove_the_order(env: Env) -> None:
    account = await env.account(max_concurrent_calls=1)
    other_account, others_agent, others_number = await env.ready()
    no_phone_agent = await env.agent(account)
    ok_agent = await env.agent(account)
    await env.number(account, ok_agent["agent_id"])
    cred_less_agent = await env.agent(account)
    cred_less_number = await env.number(account, cred_less_agent["agent_id"])
    await env.client.patch(
        f"/v1/phone-numbers/{cred_less_number.replace('+', '%2B')}",
        json={"twilio_account_sid": None, "twilio_auth_token": None},
        headers=account.headers,
    )
    cases: list[tuple[dict[str, Any], int, str]] = [
        # 1 beats 2
        ({"to_number": "0738"}, 400, "missing_field"),
        ({"agent_id": "", "to_number": "nope", "from_number": "x"}, 400, "missing_field"),
        # 2 (phone) beats 2 (types) and 3
        ({"agent_id": others_agent["agent_id"], "to_number": "07386"}, 400, "invalid_phone_format"),
        ({"agent_id": "x", "to_number": "07", "metadata": "bad"}, 400, "invalid_phone_format"),
        ({"agent_id": 5, "to_number": TO, "from_number": "bad"}, 400, "invalid_phone_format"),
        # 2 (types) beats 3
        (
            {"agent_id": others_agent["agent_id"], "to_number": TO, "metadata": 1},
            400,
            "invalid_request",
        ),
        (
            {"agent_id": "agent_missing", "to_number": TO, "voicemail_action": "x"},
            400,
            "invalid_request",
        ),
        # 3 beats 4
        (
            {"agent_id": others_agent["agent_id"], "to_number": TO, "from_number": others_number},
            403,
            "agent_not_owned",
        ),
        (
            {"agent_id": "agent_missing", "to_number": TO, "from_number": random_e164()},
            404,
            "agent_not_found",
        ),
        # 4 beats 5
        (
            {
                "agent_id": cred_less_agent["agent_id"],
                "to_number": TO,
                "from_number": others_number,
            },
            403,
            "from_number_not_owned",
        ),
        # 5 is reached when 1-4 pass
        (
            {"agent_id": cred_less_agent["agent_id"], "to_number": TO},
            400,
            "twilio_credentials_missing",
        ),
        ({"agent_id": no_phone_agent["agent_id"], "to_number": TO}, 400, "agent_no_phone"),
    ]
    for body, status, code in cases:
        assert_error(await post(env, account, body), status, code)
    # 5 beats 6: fill the only slot, then a credential-less number still says 400
    assert (
        await post(env, account, {"agent_id": ok_agent["agent_id"], "to_number": TO})
    ).status_code == 201
    assert_error(
        await post(env, account, {"agent_id": cred_less_agent["agent_id"], "to_number": TO}),
        400,
        "twilio_credentials_missing",
    )
    assert_error(
        await post(env, account, {"agent_id": ok_agent["agent_id"], "to_number": TO}),
        429,
        "concurrent_call_limit",
    )
    assert len([d for d in env.dialer.attempts if d.account_id == account.account_id]) == 1
    _ = other_account


# --- idempotency ---------------------------------------------------------------------------


async def test_idempotent_retry_dials_once(env: Env) -> None:
    account, agent, _ = await env.ready()
    body = {"agent_id": agent["agent_id"], "to_number": TO, "metadata": {"n": 1}}
    first = await post(env, account, body, **{"Idempotency-Key": "order-42"})
    again = await post(env, account, body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(env.dialer.dialed) == 1
    other = await post(
        env, account, {**body, "metadata": {"n": 2}}, **{"Idempotency-Key": "order-42"}
    )
    assert_error(other, 409, "idempotency_key_reused")
    # the same key in another account is independent
    account2, agent2, _ = await env.ready()
    body2 = {"agent_id": agent2["agent_id"], "to_number": TO}
    assert (await post(env, account2, body2, **{"Idempotency-Key": "order-42"})).status_code == 201
    assert len(env.dialer.dialed) == 2


async def test_idempotent_concurrent_duplicates_dial_once(env: Env) -> None:
    account, agent, _ = await env.ready()
    env.dialer.delay_seconds = 0.05
    body = {"agent_id": agent["agent_id"], "to_number": TO}
    results = await asyncio.gather(
        *(post(env, account, body, **{"Idempotency-Key": "same"}) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    assert len(env.dialer.dialed) == 1
    for r in results:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "idempotency_request_in_progress"
            assert r.headers["retry-after"] == "1"


async def test_idempotent_429_is_retryable_with_the_same_key(env: Env) -> None:
    account = await env.account(max_concurrent_calls=1)
    agent = await env.agent(account)
    await env.number(account, agent["agent_id"])
    body = {"agent_id": agent["agent_id"], "to_number": TO}
    first = await post(env, account, body)
    assert first.status_code == 201
    limited = await post(env, account, body, **{"Idempotency-Key": "retry-me"})
    assert_error(limited, 429, "concurrent_call_limit")
    await env.services.repos.calls.finish_call(first.json()["call_id"], "completed", "agent_hangup")
    retried = await post(env, account, body, **{"Idempotency-Key": "retry-me"})
    assert retried.status_code == 201, retried.text


async def test_idempotent_validation_error_is_replayed(env: Env) -> None:
    account = await env.account()
    body = {"agent_id": "agent_x", "to_number": "bad"}
    a = await post(env, account, body, **{"Idempotency-Key": "k1"})
    b = await post(env, account, body, **{"Idempotency-Key": "k1"})
    assert a.status_code == b.status_code == 400
    assert a.json() == b.json()


async def test_bad_idempotency_key_header(env: Env) -> None:
    account = await env.account()
    r = await post(
        env, account, {"agent_id": "a", "to_number": TO}, **{"Idempotency-Key": "x" * 300}
    )
    assert_error(r, 400, "invalid_request")


# --- concurrency race (one process) --------------------------------------------------------


async def test_race_many_concurrent_requests_never_exceed_the_limit(env: Env) -> None:
    account = await env.account(max_concurrent_calls=5)
    agent = await env.agent(account)
    await env.number(account, agent["agent_id"])
    env.dialer.delay_seconds = 0.002
    body = {"agent_id": agent["agent_id"], "to_number": TO}
    results = await asyncio.gather(*(post(env, account, body) for _ in range(40)))
    statuses = [r.status_code for r in results]
    assert statuses.count(201) == 5, statuses
    assert statuses.count(429) == 35
    usage = (await env.client.get("/v1/usage", headers=account.headers)).json()
    assert usage["in_flight"] == 5 and usage["peak_concurrency"] == 5


async def test_cancelled_dial_releases_the_slot(env: Env) -> None:
    account = await env.account(max_concurrent_calls=1)
    agent = await env.agent(account)
    await env.number(account, agent["agent_id"])
    env.dialer.delay_seconds = 30
    body = {"agent_id": agent["agent_id"], "to_number": TO}
    task = asyncio.create_task(env.services.outbound.create(account.account_id, body))
    for _ in range(200):
        if env.dialer.attempts:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    usage = (await env.client.get("/v1/usage", headers=account.headers)).json()
    assert usage["in_flight"] == 0 and usage["failed_calls"] == 1
