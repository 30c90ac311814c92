"""Call records: every api.md field, list filters and pagination, get, delete (record and
recording), the recording route, usage, and account scoping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .support import Account, Env, assert_error

API_MD_FIELDS = {
    "call_id", "agent_id", "campaign_id", "direction", "status", "from_number", "to_number",
    "metadata", "dynamic_vars", "voicemail_action", "created_at", "answered_at", "ended_at",
    "duration_seconds", "ended_reason", "voicemail_detected", "voicemail_detection_method",
    "amd_result", "transcript", "recording_url", "recording_duration_seconds", "call_summary",
    "caller_sentiment", "call_successful", "extracted_data", "latency",
}  # fmt: skip


async def place(env: Env, account: Account, agent_id: str, to: str, **extra: Any) -> str:
    r = await env.client.post(
        "/v1/calls/outbound",
        json={"agent_id": agent_id, "to_number": to, **extra},
        headers=account.headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["call_id"])


async def test_record_has_every_field_and_lifecycle_updates_show(env: Env) -> None:
    account, agent, _ = await env.ready()
    call_id = await place(env, account, agent["agent_id"], "+15005550006")
    record = (await env.client.get(f"/v1/calls/{call_id}", headers=account.headers)).json()
    assert API_MD_FIELDS <= set(record)
    assert record["transcript"] == [] and record["extracted_data"] == {}
    assert record["recording_url"] is None

    repo = env.services.repos.calls
    answered = datetime.now(UTC)
    assert await repo.update_status(call_id, "ringing")
    assert await repo.update_status(
        call_id, "in-progress", answered_at=answered, amd_result="human"
    )
    transcript = [
        {"role": "agent", "text": "Hi Sarah", "timestamp_ms": 0},
        {"role": "caller", "text": "Hello?", "timestamp_ms": 900},
        {"role": "agent", "text": "I was", "timestamp_ms": 1500, "interrupted": True},
    ]
    env.settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    wav = env.settings.recordings_dir / f"{call_id}.wav"
    wav.write_bytes(b"RIFF....WAVEfmt ")
    assert await repo.finish_call(
        call_id,
        "completed",
        "agent_hangup",
        duration_seconds=42.5,
        transcript=transcript,
        voicemail_detected=False,
        recording_path=str(wav),
        recording_duration_seconds=42.0,
    )
    await repo.update_call(
        call_id,
        call_summary="Confirmed.",
        caller_sentiment="happy",
        call_successful=True,
        extracted_data={"budget": None},
        latency={"turns": [], "p50": {"total_ms": 700}, "p95": {"total_ms": 900}},
    )
    # a late callback cannot reopen an ended call
    assert await repo.update_status(call_id, "ringing") is None
    record = (await env.client.get(f"/v1/calls/{call_id}", headers=account.headers)).json()
    assert record["status"] == "completed" and record["ended_reason"] == "agent_hangup"
    assert record["transcript"] == transcript
    assert record["answered_at"].endswith("Z") and record["ended_at"].endswith("Z")
    assert record["duration_seconds"] == 42.5
    assert record["extracted_data"] == {"budget": None}
    assert record["recording_url"] == f"https://engine.example.com/v1/calls/{call_id}/recording"
    audio = await env.client.get(f"/v1/calls/{call_id}/recording", headers=account.headers)
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content == wav.read_bytes()
    assert_error(await env.client.get(f"/v1/calls/{call_id}/recording"), 401, "invalid_api_key")
    usage = (await env.client.get("/v1/usage", headers=account.headers)).json()
    assert usage["in_flight"] == 0 and usage["completed_calls"] == 1
    assert usage["minutes"] == round(42.5 / 60, 2)

    r = await env.client.delete(f"/v1/calls/{call_id}", headers=account.headers)
    assert r.status_code == 200 and r.json() == {"call_id": call_id, "deleted": True}
    assert not wav.exists()
    assert_error(
        await env.client.get(f"/v1/calls/{call_id}", headers=account.headers), 404, "call_not_found"
    )


async def test_delete_refuses_a_live_call(env: Env) -> None:
    account, agent, _ = await env.ready()
    call_id = await place(env, account, agent["agent_id"], "+15005550006")
    assert_error(
        await env.client.delete(f"/v1/calls/{call_id}", headers=account.headers),
        409,
        "call_in_progress",
    )
    assert_error(
        await env.client.get(f"/v1/calls/{call_id}/recording", headers=account.headers),
        404,
        "recording_not_found",
    )


async def test_recording_outside_the_directory_is_never_served(env: Env) -> None:
    account, agent, _ = await env.ready()
    call_id = await place(env, account, agent["agent_id"], "+15005550006")
    outside = Path(env.settings.var_dir).parent / "secret.wav"
    outside.write_bytes(b"secret")
    await env.services.repos.calls.finish_call(
        call_id, "completed", "caller_hangup", recording_path=str(outside)
    )
    r = await env.client.get(f"/v1/calls/{call_id}/recording", headers=account.headers)
    assert_error(r, 404, "recording_not_found")
    await env.client.delete(f"/v1/calls/{call_id}", headers=account.headers)
    assert outside.exists()


async def test_list_filters_and_pagination(env: Env) -> None:
    account, agent, _ = await env.ready()
    other_agent = await env.agent(account)
    await env.number(account, other_agent["agent_id"])
    a = agent["agent_id"]
    ids = []
    for i in range(4):
        ids.append(
            await place(env, account, a, f"+1500555000{i}", campaign_id="camp_1" if i % 2 else None)
        )
        await asyncio.sleep(0.002)
    other_call = await place(env, account, other_agent["agent_id"], "+15005550000")
    h = account.headers
    everything = (await env.client.get("/v1/calls", headers=h)).json()
    assert everything["count"] == 5 and everything["limit"] == 25 and everything["offset"] == 0
    assert [c["call_id"] for c in everything["calls"]] == [other_call, *reversed(ids)]

    async def ids_for(query: str) -> list[str]:
        r = await env.client.get(f"/v1/calls?{query}", headers=h)
        assert r.status_code == 200, r.text
        return [c["call_id"] for c in r.json()["calls"]]

    assert await ids_for(f"agent_id={a}") == list(reversed(ids))
    assert await ids_for("campaign_id=camp_1") == [ids[3], ids[1]]
    assert await ids_for("to_number=%2B15005550000") == [other_call, ids[0]]
    assert await ids_for("limit=2&offset=1") == [ids[3], ids[2]]
    await env.services.repos.calls.finish_call(ids[0], "no-answer", "no-answer")
    assert await ids_for("status=no-answer") == [ids[0]]
    assert await ids_for("status=queued&agent_id=" + a) == [ids[3], ids[2], ids[1]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert await ids_for(f"since={future}") == []
    assert len(await ids_for(f"until={future}")) == 5
    assert len(await ids_for(f"since={past.replace('+', '%2B')}")) == 5
    assert len(await ids_for(f"since={past}")) == 5  # an unencoded '+' (read as a space)
    for bad, code in (
        ("status=exploded", "invalid_request"),
        ("since=yesterday", "invalid_request"),
        ("until=2026-13-01", "invalid_request"),
        ("to_number=0738", "invalid_phone_format"),
        ("limit=500", "invalid_request"),
    ):
        assert_error(await env.client.get(f"/v1/calls?{bad}", headers=h), 400, code)


async def test_calls_never_leak_across_accounts(env: Env) -> None:
    owner, agent, _ = await env.ready()
    call_id = await place(env, owner, agent["agent_id"], "+15005550006")
    stranger = await env.account()
    h = stranger.headers
    assert (await env.client.get("/v1/calls", headers=h)).json()["count"] == 0
    assert (await env.client.get(f"/v1/calls?agent_id={agent['agent_id']}", headers=h)).json()[
        "calls"
    ] == []
    assert_error(await env.client.get(f"/v1/calls/{call_id}", headers=h), 404, "call_not_found")
    assert_error(await env.client.delete(f"/v1/calls/{call_id}", headers=h), 404, "call_not_found")
    assert_error(
        await env.client.get(f"/v1/calls/{call_id}/recording", headers=h), 404, "call_not_found"
    )
    usage = (await env.client.get("/v1/usage", headers=h)).json()
    assert usage["calls"] == 0 and usage["in_flight"] == 0


async def test_get_shows_exactly_the_stored_record(env: Env) -> None:
    """GET reads the call through ``Database.read_row`` (on PostgreSQL, straight through
    asyncpg): the body must be what SQLAlchemy's own read of the row gives, byte for byte."""
    import sqlalchemy as sa

    from nixflex_engine.api.calls import call_json
    from nixflex_engine.api.errors import json_bytes
    from nixflex_engine.store.models import calls
    from nixflex_engine.store.repositories import call_from_row

    account, agent, _ = await env.ready()
    call_id = await place(
        env,
        account,
        agent["agent_id"],
        "+15005550006",
        metadata={"z": 1, "a": ["ü", None, 2.5], "m": {"y": True, "b": "'; --"}},
        dynamic_vars={"name": "Zoë"},
    )
    answered = datetime(2024, 2, 29, 23, 59, 58, 5, tzinfo=UTC)
    repo = env.services.repos.calls
    await repo.update_status(call_id, "in-progress", answered_at=answered)
    await repo.finish_call(
        call_id,
        "completed",
        "agent_hangup",
        ended_at=answered + timedelta(seconds=3.25),
        duration_seconds=3.25,
        transcript=[{"role": "agent", "text": "Hi", "timestamp_ms": 0}],
        voicemail_detected=False,
        call_successful=True,
        latency={"p50": {"total_ms": 700.5}},
    )

    def sqlalchemy_read(conn: sa.Connection) -> Any:
        return conn.execute(calls.select().where(calls.c.call_id == call_id)).mappings().first()

    db = repo._db
    expected = call_json(call_from_row(await db.read(sqlalchemy_read)), env.settings)
    for _ in range(2):
        r = await env.client.get(f"/v1/calls/{call_id}", headers=account.headers)
        assert r.status_code == 200, r.text
        assert r.content == json_bytes(expected)
    body = r.json()
    assert list(body["metadata"]) == ["z", "a", "m"]
    assert body["answered_at"] == "2024-02-29T23:59:58.000Z"


async def test_database_failure_on_get_is_the_error_envelope(env: Env) -> None:
    """PostgreSQL's point reads failing (server unreachable) give the 500 envelope with a
    request id, like any other database failure."""
    import pytest

    db = env.services.repos.calls._db
    pool = db._pg_point
    if pool is None:
        pytest.skip("PostgreSQL's point-read pool")
    account, agent, _ = await env.ready()
    call_id = await place(env, account, agent["agent_id"], "+15005550006")
    working = pool._connect_kwargs
    pool._drop_idle()
    pool._connect_kwargs = {**working, "port": 1, "timeout": 2}
    try:
        r = await env.client.get(f"/v1/calls/{call_id}", headers=account.headers)
        err = assert_error(r, 500, "internal_error")
        assert err["details"] == {"request_id": r.headers["x-request-id"]}
        assert "port" not in r.text and "SELECT" not in r.text
    finally:
        pool._connect_kwargs = working
    r = await env.client.get(f"/v1/calls/{call_id}", headers=account.headers)
    assert r.status_code == 200 and r.json()["call_id"] == call_id
