"""Agents: CRUD, exact field validation, no partial writes, account scoping."""

from __future__ import annotations

from typing import Any

import pytest

from .support import Env, assert_error


async def test_create_applies_documented_defaults(env: Env) -> None:
    account = await env.account()
    agent = await env.agent(account, name="Sarah's agent")
    assert agent["agent_id"].startswith("agent_") and len(agent["agent_id"]) == 6 + 16
    expected = {
        "name": "Sarah's agent",
        "llm_model": "claude-haiku-4-5",
        "interruption_sensitivity": 50,
        "silence_hangup_seconds": 30,
        "max_call_duration_seconds": 300,
        "voicemail_action": "hangup",
        "amd_enabled": True,
        "record_call": True,
        "history_calls": 3,
        "is_active": True,
        "extraction_schema": {},
        "webhook_url": None,
        "phone_numbers": [],
    }
    for key, value in expected.items():
        assert agent[key] == value, key
    assert agent["created_at"].endswith("Z")


async def test_get_list_update_delete(env: Env) -> None:
    account = await env.account()
    h = account.headers
    a1 = await env.agent(account, name="one")
    a2 = await env.agent(account, name="two")
    got = (await env.client.get(f"/v1/agents/{a1['agent_id']}", headers=h)).json()
    assert got == a1
    listing = (await env.client.get("/v1/agents?limit=1", headers=h)).json()
    assert listing["count"] == 2 and listing["limit"] == 1 and listing["offset"] == 0
    assert [a["agent_id"] for a in listing["agents"]] == [a2["agent_id"]]  # newest first
    page2 = (await env.client.get("/v1/agents?limit=1&offset=1", headers=h)).json()
    assert [a["agent_id"] for a in page2["agents"]] == [a1["agent_id"]]

    r = await env.client.put(
        f"/v1/agents/{a1['agent_id']}",
        json={"system_prompt": "New", "interruption_sensitivity": 80},
        headers=h,
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["system_prompt"] == "New" and updated["interruption_sensitivity"] == 80
    assert updated["name"] == "one"  # untouched fields kept (PUT is partial)

    number = await env.number(account, a1["agent_id"])
    got = (await env.client.get(f"/v1/agents/{a1['agent_id']}", headers=h)).json()
    assert got["phone_numbers"] == [number]
    r = await env.client.post(
        "/v1/calls/outbound",
        json={"agent_id": a1["agent_id"], "to_number": "+15005550006"},
        headers=h,
    )
    call_id = r.json()["call_id"]

    r = await env.client.delete(f"/v1/agents/{a1['agent_id']}", headers=h)
    assert r.status_code == 200 and r.json() == {"agent_id": a1["agent_id"], "deleted": True}
    assert_error(
        await env.client.get(f"/v1/agents/{a1['agent_id']}", headers=h), 404, "agent_not_found"
    )
    # numbers detached, past calls kept
    numbers = (await env.client.get("/v1/phone-numbers", headers=h)).json()["phone_numbers"]
    assert numbers[0]["phone_number"] == number and numbers[0]["agent_id"] is None
    assert (await env.client.get(f"/v1/calls/{call_id}", headers=h)).status_code == 200
    assert_error(
        await env.client.delete(f"/v1/agents/{a1['agent_id']}", headers=h), 404, "agent_not_found"
    )


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"name": "x" * 101}, "invalid_request", "name"),
        ({"name": ""}, "invalid_request", "name"),
        ({"name": 5}, "invalid_request", "name"),
        ({"system_prompt": "x" * 16_001}, "prompt_too_long", "system_prompt"),
        ({"interruption_sensitivity": 101}, "invalid_request", "interruption_sensitivity"),
        ({"interruption_sensitivity": -1}, "invalid_request", "interruption_sensitivity"),
        ({"interruption_sensitivity": 50.5}, "invalid_request", "interruption_sensitivity"),
        ({"interruption_sensitivity": True}, "invalid_request", "interruption_sensitivity"),
        ({"interruption_sensitivity": "50"}, "invalid_request", "interruption_sensitivity"),
        ({"silence_hangup_seconds": 4}, "invalid_request", "silence_hangup_seconds"),
        ({"silence_hangup_seconds": 121}, "invalid_request", "silence_hangup_seconds"),
        ({"max_call_duration_seconds": 59}, "invalid_request", "max_call_duration_seconds"),
        ({"max_call_duration_seconds": 3601}, "invalid_request", "max_call_duration_seconds"),
        ({"max_call_duration_seconds": 10**400}, "invalid_request", "max_call_duration_seconds"),
        ({"voicemail_action": "scream"}, "invalid_request", "voicemail_action"),
        ({"amd_enabled": "yes"}, "invalid_request", "amd_enabled"),
        ({"record_call": 1}, "invalid_request", "record_call"),
        ({"history_calls": -1}, "invalid_request", "history_calls"),
        ({"extraction_schema": {"a": 1}}, "invalid_request", "extraction_schema"),
        ({"extraction_schema": []}, "invalid_request", "extraction_schema"),
        ({"webhook_url": "ftp://example.com/x"}, "invalid_request", "webhook_url"),
        ({"webhook_url": "http://127.0.0.1/hook"}, "invalid_request", "webhook_url"),
        ({"webhook_url": "http://localhost:9/hook"}, "invalid_request", "webhook_url"),
        ({"webhook_url": "http://[::1]/hook"}, "invalid_request", "webhook_url"),
        ({"webhook_url": "http://10.0.0.5/hook"}, "invalid_request", "webhook_url"),
        ({"timezone": "Mars/Olympus"}, "invalid_request", "timezone"),
        ({"language": "english!"}, "invalid_request", "language"),
        ({"is_active": None}, "invalid_request", "is_active"),
    ],
)
async def test_field_validation(env: Env, fields: dict[str, Any], code: str, field: str) -> None:
    account = await env.account()
    body = {"name": "ok", **fields}
    r = await env.client.post("/v1/agents", json=body, headers=account.headers)
    err = assert_error(r, 400, code)
    assert err["details"]["field"] == field
    assert (await env.client.get("/v1/agents", headers=account.headers)).json()["count"] == 0


async def test_boundaries_accepted(env: Env) -> None:
    account = await env.account()
    agent = await env.agent(
        account,
        name="n" * 100,
        system_prompt="p" * 16_000,
        interruption_sensitivity=0,
        silence_hangup_seconds=120,
        max_call_duration_seconds=60,
        history_calls=0,
        webhook_url="https://hooks.example.com/nixflex?x=1",
        timezone="Europe/London",
        language="en-GB",
        extraction_schema={"budget": "The caller's budget in GBP"},
        voicemail_message="Hi, call us back",
    )
    assert agent["max_call_duration_seconds"] == 60 and len(agent["system_prompt"]) == 16_000


async def test_unknown_fields_named_and_name_required(env: Env) -> None:
    account = await env.account()
    r = await env.client.post(
        "/v1/agents",
        json={"name": "x", "temperature": 0.2, "colour": "red"},
        headers=account.headers,
    )
    err = assert_error(r, 400, "invalid_request")
    assert err["details"]["unknown_fields"] == ["colour", "temperature"]
    assert "colour" in err["message"] and "temperature" in err["message"]
    err = assert_error(
        await env.client.post("/v1/agents", json={"system_prompt": "x"}, headers=account.headers),
        400,
        "missing_field",
    )
    assert err["details"]["field"] == "name"


async def test_bad_update_writes_nothing(env: Env) -> None:
    account = await env.account()
    agent = await env.agent(account, name="before", system_prompt="keep")
    r = await env.client.put(
        f"/v1/agents/{agent['agent_id']}",
        json={"name": "after", "system_prompt": "changed", "max_call_duration_seconds": 5},
        headers=account.headers,
    )
    assert_error(r, 400, "invalid_request")
    r = await env.client.put(
        f"/v1/agents/{agent['agent_id']}",
        json={"name": "after", "bogus": True},
        headers=account.headers,
    )
    assert_error(r, 400, "invalid_request")
    got = (await env.client.get(f"/v1/agents/{agent['agent_id']}", headers=account.headers)).json()
    assert got["name"] == "before" and got["system_prompt"] == "keep"
    assert got["updated_at"] == agent["updated_at"]


async def test_other_accounts_agents_are_invisible(env: Env) -> None:
    owner = await env.account()
    stranger = await env.account()
    agent = await env.agent(owner)
    path = f"/v1/agents/{agent['agent_id']}"
    h = stranger.headers
    assert_error(await env.client.get(path, headers=h), 404, "agent_not_found")
    assert_error(
        await env.client.put(path, json={"name": "pwned"}, headers=h), 404, "agent_not_found"
    )
    assert_error(await env.client.delete(path, headers=h), 404, "agent_not_found")
    assert (await env.client.get("/v1/agents", headers=h)).json()["count"] == 0
    got = (await env.client.get(path, headers=owner.headers)).json()
    assert got["name"] == agent["name"]


async def test_strings_stored_verbatim(env: Env) -> None:
    account = await env.account()
    tricky = [
        "Robert'); DROP TABLE agents;--",
        "' OR '1'='1",
        "日本語のプロンプト 🚀 émoji",
        'line1\nline2\t"quoted" \\ backslash',
        "{patient_name} {{double}} %s %(x)s",
    ]
    for text in tricky:
        agent = await env.agent(account, name=text[:100], system_prompt=text * 50)
        got = (
            await env.client.get(f"/v1/agents/{agent['agent_id']}", headers=account.headers)
        ).json()
        assert got["name"] == text[:100] and got["system_prompt"] == text * 50
    assert (await env.client.get("/v1/agents", headers=account.headers)).json()["count"] == len(
        tricky
    )


async def test_list_pagination_validation(env: Env) -> None:
    account = await env.account()
    for query in ("limit=0", "limit=101", "limit=abc", "offset=-1", "limit=1e3"):
        assert_error(
            await env.client.get(f"/v1/agents?{query}", headers=account.headers),
            400,
            "invalid_request",
        )
    r = await env.client.get("/v1/agents?limit=100", headers=account.headers)
    assert r.status_code == 200 and r.json()["limit"] == 100
