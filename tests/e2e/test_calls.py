"""Whole calls through ``POST /v1/calls/outbound``: the engine dials the sandbox carrier, the
callee talks with the agent over the media stream, and the record ends final and complete."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import websockets
from nixflex import Nixflex
from twilio.request_validator import RequestValidator

from nixflex_engine.calls.tokens import media_stream_token
from nixflex_engine.sandbox.callee import (
    Hangup,
    Say,
    Silence,
    Step,
    UntilAgentSilent,
    UntilAgentSpeaks,
)
from nixflex_engine.sandbox.carrier import CarrierScript
from nixflex_engine.sandbox.fake_twilio import TwilioErrorSpec

from .conftest import OPENER, Stack, StackFactory

METADATA = {"internal_lead_id": "lead_abc123", "tags": ["e2e", 1]}


def roles(record: dict[str, Any]) -> list[str]:
    return [line["role"] for line in record["transcript"]]


@pytest.mark.slow
async def test_answered_call_talks_and_agent_ends_it(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=1.0)  # the callee's line in real time, like the engine
    t = await s.tenant()
    to = "+15550123001"
    callee: list[Step] = [
        Silence(300),
        Say("Hello?"),
        UntilAgentSilent(),
        Say("Okay, thank you. Goodbye."),
        UntilAgentSilent(timeout_ms=10_000),
        Silence(8000),  # stays on the line: the agent hangs up
    ]
    s.carrier.set_script(to, CarrierScript.answer(callee, ring_s=0.5))
    r = await s.dial(t, to, dynamic_vars={"patient_name": "Sarah"}, metadata=METADATA)
    assert r.status_code == 201, r.text
    created = r.json()
    call_id = created["call_id"]
    assert created["status"] == "queued" and call_id.startswith("CA")
    assert created["from_number"] == t.from_number
    record = await s.wait_final(t, call_id)

    assert record["status"] == "completed", record
    assert record["ended_reason"] == "agent_hangup"
    assert record["metadata"] == METADATA
    assert record["dynamic_vars"] == {"patient_name": "Sarah"}
    assert record["answered_at"] and record["ended_at"] and record["duration_seconds"] > 0
    assert roles(record)[:2] == ["caller", "agent"]
    assert record["transcript"][1]["text"] == OPENER
    said = " ".join(line["text"] for line in record["transcript"])
    assert "Goodbye" in said and "[END_CALL]" not in said
    assert record["latency"]["turns"], record["latency"]
    assert record["recording_url"].endswith(f"/v1/calls/{call_id}/recording")
    wav = await s.client.get(f"/v1/calls/{call_id}/recording", headers=t.headers)
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
    stored = await s.app.state.services.repos.calls.get(call_id)
    assert await asyncio.to_thread(Path(stored.recording_path).exists)
    assert record["recording_duration_seconds"] > 1
    assert record["voicemail_detected"] is False
    # the carrier's side: the engine hung up through REST after the goodbye played
    call = s.carrier.calls[call_id]
    assert call.ended_by in ("engine", "stream_closed")  # the engine ended it, not the callee
    assert call.statuses_sent() == ["initiated", "ringing", "in-progress", "completed"]
    assert all(cb.http_status == 204 for cb in call.callbacks)
    assert OPENER in call.heard_text()
    # the system prompt the model saw had the dynamic variable filled in
    systems = [str(req.body.get("system")) for req in s.anthropic.requests]
    assert any("calling Sarah" in text for text in systems)


@pytest.mark.slow
async def test_callee_hangs_up_mid_sentence(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=1.0)
    t = await s.tenant()
    to = "+15550123002"
    callee: list[Step] = [Silence(200), Say("Hello?"), UntilAgentSpeaks(), Silence(600), Hangup()]
    s.carrier.set_script(to, CarrierScript.answer(callee, ring_s=0.5))
    r = await s.dial(t, to)
    assert r.status_code == 201, r.text
    record = await s.wait_final(t, r.json()["call_id"])
    assert record["status"] == "completed"
    assert record["ended_reason"] == "caller_hangup"
    agent_lines = [line for line in record["transcript"] if line["role"] == "agent"]
    assert agent_lines and agent_lines[-1]["interrupted"] is True  # cut off mid-sentence
    assert s.carrier.calls[r.json()["call_id"]].ended_by == "callee"


async def test_calls_that_never_connect(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=20.0)
    t = await s.tenant()
    cases = {
        "+15550123010": (CarrierScript.busy(), "busy"),
        "+15550123011": (CarrierScript.no_answer(ring_s=3.0), "no-answer"),
        "+15550123012": (CarrierScript.failed(), "failed"),
    }
    for number, (script, _) in cases.items():
        s.carrier.set_script(number, script)
    responses = await asyncio.gather(*(s.dial(t, number) for number in cases))
    ids = {number: r.json()["call_id"] for number, r in zip(cases, responses, strict=True)}
    for number, (_, status) in cases.items():
        record = await s.wait_final(t, ids[number])
        assert record["status"] == status, record
        assert record["ended_reason"] == status
        assert record["answered_at"] is None and record["ended_at"]
        assert record["transcript"] == []
    # every slot given back: the account can place as many calls as its limit again
    services = s.app.state.services
    account = await services.repos.accounts.get(t.account_id)
    assert account is not None and account.calls_in_flight == 0


async def test_dial_rejected_gives_502_and_releases_the_slot(make_stack: StackFactory) -> None:
    s: Stack = await make_stack()
    t = await s.tenant(max_concurrent_calls=1)
    bad = "+15550123020"
    s.carrier.twilio.call_failures[bad] = TwilioErrorSpec(
        21215, "Account not authorized to call +15550123020.", 400
    )
    r = await s.dial(t, bad, metadata={"try": 1})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "outbound_failed"
    assert err["details"]["twilio_error"]["code"] == 21215
    record = await s.get(t, err["details"]["call_id"])
    assert record["status"] == "failed" and record["twilio_error"]["code"] == 21215
    assert record["metadata"] == {"try": 1}
    # the one slot is free: the next call goes through
    s.carrier.set_script("+15550123021", CarrierScript.busy())
    r = await s.dial(t, "+15550123021")
    assert r.status_code == 201, r.text
    await s.wait_final(t, r.json()["call_id"])


async def test_forged_callback_is_refused_and_changes_nothing(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=20.0)
    t = await s.tenant()
    to = "+15550123030"
    s.carrier.set_script(to, CarrierScript.no_answer(ring_s=None))  # rings until we stop it
    r = await s.dial(t, to)
    call_id = r.json()["call_id"]
    form = {"CallSid": call_id, "AccountSid": s.twilio_account.sid, "CallStatus": "completed"}
    url = s.settings.public_base_url + "/v1/twilio/status"
    forged = RequestValidator("not-the-token").compute_signature(url, form)
    for headers in ({"X-Twilio-Signature": forged}, {}):
        resp = await s.client.post("/v1/twilio/status", data=form, headers=headers)
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "invalid_signature"
    amd = {"CallSid": call_id, "AccountSid": s.twilio_account.sid, "AnsweredBy": "machine_start"}
    forged = RequestValidator("nope").compute_signature(
        s.settings.public_base_url + "/v1/twilio/amd", amd
    )
    resp = await s.client.post("/v1/twilio/amd", data=amd, headers={"X-Twilio-Signature": forged})
    assert resp.status_code == 403
    record = await s.get(t, call_id)
    assert record["status"] in ("queued", "ringing") and record["ended_at"] is None
    assert record["amd_result"] is None
    # a correctly signed one is applied
    good = RequestValidator(s.twilio_account.auth_token).compute_signature(url, form)
    resp = await s.client.post("/v1/twilio/status", data=form, headers={"X-Twilio-Signature": good})
    assert resp.status_code == 204
    assert (await s.get(t, call_id))["status"] == "completed"


async def _stream_closes(s: Stack, token: str, call_ref: str, call_sid: str) -> bool:
    """Open the media websocket like Twilio (signed upgrade, ``start`` with parameters);
    True if the engine closed it without sending anything."""
    url = s.settings.public_ws_base_url + "/v1/twilio/media"
    signature = RequestValidator(s.twilio_account.auth_token).compute_signature(url, {})
    import json

    async with websockets.connect(
        s.engine_url.replace("http://", "ws://") + "/v1/twilio/media",
        additional_headers={"X-Twilio-Signature": signature},
    ) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "0" * 32,
            "start": {
                "streamSid": "MZ" + "0" * 32,
                "accountSid": s.twilio_account.sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"call_ref": call_ref, "token": token},
            },
        }
        await ws.send(json.dumps(start))
        try:
            async with asyncio.timeout(5):
                async for _ in ws:
                    return False
        except websockets.ConnectionClosed:
            return True
        return True


async def test_media_stream_with_bad_or_reused_token_is_closed(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=1.0)
    t = await s.tenant()
    to = "+15550123040"
    callee: list[Step] = [Silence(200), Say("Hello?"), UntilAgentSilent(), Hangup()]
    s.carrier.set_script(to, CarrierScript.answer(callee, ring_s=0.2))
    r = await s.dial(t, to)
    call_id = r.json()["call_id"]
    services = s.app.state.services
    stored = await services.repos.calls.get(call_id)
    assert stored is not None
    ref = stored.call_ref
    # a made-up token for the live call
    assert await _stream_closes(s, "forged-token", ref, call_id)
    # wait until the carrier's own stream (the real token) is connected, then reuse it
    for _ in range(100):
        if s.carrier.calls[call_id].stream is not None and s.app.state.sessions.live_calls:
            break
        await asyncio.sleep(0.05)
    token = media_stream_token(services.crypto, ref)
    assert await _stream_closes(s, token, ref, call_id)
    final = await s.wait_final(t, call_id)
    assert final["status"] == "completed" and final["ended_reason"] == "caller_hangup"
    assert final["transcript"][0]["text"] == "Hello?"  # the real stream was undisturbed


@pytest.mark.slow
async def test_sdk_calls_get_shows_the_final_record(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=1.0)
    t = await s.tenant()
    to = "+15550123050"
    callee: list[Step] = [
        Silence(200),
        Say("Hello?"),
        UntilAgentSilent(),
        Say("Goodbye."),
        UntilAgentSilent(),
        Silence(8000),  # stays on the line: the agent hangs up
    ]
    s.carrier.set_script(to, CarrierScript.answer(callee, ring_s=0.3))
    nx = Nixflex(api_key=f"{t.key_id}:{t.key_secret}", base_url=s.engine_url, max_retries=0)
    created = await asyncio.to_thread(
        nx.calls.create,
        agent_id=t.agent_id,
        to_number=to,
        prompt="Confirm Tuesday's appointment.",
        variables={"patient_name": "Tom"},
        metadata=METADATA,
    )
    await s.wait_final(t, created["call_id"])
    record = await asyncio.to_thread(nx.calls.get, created["call_id"])
    assert record["status"] == "completed" and record["ended_reason"] == "agent_hangup"
    assert record["metadata"] == METADATA
    assert record["dynamic_vars"] == {"patient_name": "Tom"}
    assert record["transcript"] and record["recording_url"]


def _signed(s: Stack, path: str, form: dict[str, str], query: str = "") -> dict[str, str]:
    url = s.settings.public_base_url + path + query
    sig = RequestValidator(s.twilio_account.auth_token).compute_signature(url, form)
    return {"X-Twilio-Signature": sig}


async def test_callbacks_duplicated_and_out_of_order(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=20.0)
    t = await s.tenant()
    to = "+15550123060"
    s.carrier.set_script(to, CarrierScript.no_answer(ring_s=None))  # the carrier stays quiet
    call_id = (await s.dial(t, to)).json()["call_id"]
    base = {"CallSid": call_id, "AccountSid": s.twilio_account.sid}

    async def post(path: str, form: dict[str, str]) -> int:
        resp = await s.client.post(path, data=form, headers=_signed(s, path, form))
        return resp.status_code

    # a ringing twice, then `completed` (with a duration) before any `answered`
    for status in ("ringing", "ringing"):
        assert await post("/v1/twilio/status", {**base, "CallStatus": status}) == 204
    assert (await s.get(t, call_id))["status"] == "ringing"
    done = {**base, "CallStatus": "completed", "CallDuration": "7"}
    assert await post("/v1/twilio/status", done) == 204
    first = await s.get(t, call_id)
    assert first["status"] == "completed" and first["ended_reason"] == "caller_hangup"
    assert first["duration_seconds"] == 7 and first["answered_at"] is not None
    # the late `answered`, a duplicate `completed`, a different late final, a late AMD
    assert await post("/v1/twilio/status", {**base, "CallStatus": "in-progress"}) == 204
    assert await post("/v1/twilio/status", done) == 204
    assert await post("/v1/twilio/status", {**base, "CallStatus": "busy"}) == 204
    amd = {**base, "AnsweredBy": "machine_end_beep", "MachineDetectionDuration": "4000"}
    assert await post("/v1/twilio/amd", amd) == 204
    after = await s.get(t, call_id)
    for name in ("status", "ended_reason", "ended_at", "duration_seconds", "answered_at"):
        assert after[name] == first[name], name
    assert after["amd_result"] is None
    assert s.app.state.sessions.live_calls == 0
    account = await s.app.state.services.repos.accounts.get(t.account_id)
    assert account is not None and account.calls_in_flight == 0


async def test_late_amd_on_a_live_call_is_recorded(make_stack: StackFactory) -> None:
    s: Stack = await make_stack(speed=20.0)
    t = await s.tenant()
    to = "+15550123061"
    s.carrier.set_script(to, CarrierScript.no_answer(ring_s=None))
    call_id = (await s.dial(t, to)).json()["call_id"]
    form = {
        "CallSid": call_id,
        "AccountSid": s.twilio_account.sid,
        "AnsweredBy": "human",
        "MachineDetectionDuration": "2100",
    }
    resp = await s.client.post(
        "/v1/twilio/amd", data=form, headers=_signed(s, "/v1/twilio/amd", form)
    )
    assert resp.status_code == 204
    assert (await s.get(t, call_id))["amd_result"] == "human"
    # no stream ever comes: the final status still ends the record
    final = {"CallSid": call_id, "AccountSid": s.twilio_account.sid, "CallStatus": "no-answer"}
    resp = await s.client.post(
        "/v1/twilio/status", data=final, headers=_signed(s, "/v1/twilio/status", final)
    )
    assert resp.status_code == 204
    record = await s.get(t, call_id)
    assert record["status"] == "no-answer" and record["ended_reason"] == "no-answer"
