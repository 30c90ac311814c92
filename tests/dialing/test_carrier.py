"""The sandbox carrier plays calls dialed through the real SDK: signed callbacks in Twilio's
order and shape, the callee on the TwiML stream, AMD, and every way a call ends."""

from __future__ import annotations

import asyncio
import json
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from nixflex_engine.calls.dialer import DialResult
from nixflex_engine.calls.twilio_dialer import TwilioDialer
from nixflex_engine.config import Settings
from nixflex_engine.sandbox.callee import Hangup, Say, Silence, UntilAgentSilent
from nixflex_engine.sandbox.carrier import (
    DEFAULT_AMD,
    CarrierCall,
    CarrierScript,
    SandboxCarrier,
    parse_twiml,
    script_from_json,
    steps_from_json,
)
from nixflex_engine.sandbox.serve import serve_app
from nixflex_engine.sandbox.voicemail_scripts import AmdOutcome, get_script

from .conftest import GREETING, SPEED, EngineSide, World, WorldFactory, engine_app

TALK = [Silence(200), Say("Hello?"), UntilAgentSilent(silence_ms=400), Hangup()]
#: Stays on the line well past the default AMD decision (2.15 s after the stream starts).
TALK_PAST_AMD = [*TALK[:-1], Silence(4000), Hangup()]


async def dial(w: World, to: str, script: CarrierScript, **kw: Any) -> DialResult:
    """Dial ``to`` (scripted) with a stream token the test engine accepts."""
    w.carrier.set_script(to, script)
    token = f"tok-{to}"
    w.engine.expected_tokens.add(token)
    return await w.dialer.dial(w.request(to, stream_token=token, **kw))


def assert_signed(w: World, call: CarrierCall) -> None:
    """Every callback verifies with RequestValidator over the URL Twilio was given, and the
    test engine (checking over its public URL) accepted it."""
    validator = RequestValidator(w.account.auth_token)
    for cb in call.callbacks:
        assert validator.validate(cb.url, cb.params, cb.signature), cb
        assert cb.http_status == 204, cb
    received = [c for c in w.engine.callbacks if c.form.get("CallSid") == call.sid]
    assert len(received) == len(call.callbacks)
    assert all(c.valid for c in received)


def assert_status_shape(w: World, call: CarrierCall) -> None:
    for i, cb in enumerate(call.status_callbacks()):
        p = cb.params
        assert p["CallSid"] == call.sid and p["AccountSid"] == w.account.sid
        assert p["To"] == p["Called"] == call.to and p["From"] == p["Caller"] == call.from_
        assert p["Direction"] == "outbound-api" and p["ApiVersion"] == "2010-04-01"
        assert p["CallbackSource"] == "call-progress-events"
        assert p["SequenceNumber"] == str(i)
        assert parsedate_to_datetime(p["Timestamp"]).tzinfo is not None
        assert ("CallDuration" in p) == (
            p["CallStatus"] in ("completed", "busy", "no-answer", "failed", "canceled")
        )
        assert cb.url.startswith(w.settings.public_base_url + "/v1/twilio/status")


async def test_answered_call_plays_to_the_engine_and_hangs_up(make_world: WorldFactory) -> None:
    w: World = await make_world()
    script = CarrierScript.answer(TALK_PAST_AMD, ring_s=1.0)
    result = await dial(w, "+15550122001", script, call_ref="r1")
    call = await w.carrier.wait_ended(result.call_sid, 20)

    assert call.statuses_sent() == ["initiated", "ringing", "in-progress", "completed"]
    assert w.engine.statuses(result.call_sid) == call.statuses_sent()
    assert_signed(w, call)
    assert_status_shape(w, call)
    final = call.status_callbacks()[-1].params
    assert int(final["CallDuration"]) >= 1 and final["SipResponseCode"] == "200"
    assert final["AnsweredBy"] == "human"  # AMD decided during the call
    # the stream: the TwiML's URL, the parameters as customParameters, signed upgrade
    assert call.stream is not None
    assert call.stream.url == w.settings.public_ws_base_url + "/v1/twilio/media"
    (stream,) = w.engine.streams
    assert stream.start.call_sid == call.sid and stream.start.account_sid == w.account.sid
    assert dict(stream.start.custom_parameters) == {"call_ref": "r1", "token": "tok-+15550122001"}
    # the callee heard the engine and hung up by its script
    assert call.callee is not None and call.callee.ended_by == "callee_hangup"
    assert call.callee.protocol_violations == []
    assert call.heard_text() == GREETING
    assert call.ended_by == "callee"
    assert stream.result.reason == "caller_hangup"
    # async AMD: the default person, posted once
    (amd,) = call.amd_callbacks()
    assert amd.params == {
        "CallSid": call.sid,
        "AccountSid": w.account.sid,
        "AnsweredBy": DEFAULT_AMD.answered_by,
        "MachineDetectionDuration": str(DEFAULT_AMD.machine_detection_duration_ms),
    }
    assert amd.url.endswith("/v1/twilio/amd?ref=r1")
    assert w.carrier.twilio.calls[call.sid].status == "completed"
    assert w.carrier.twilio.calls[call.sid].answered_by == "human"
    names = call.event_names()
    assert names.index("answered") < names.index("stream_connecting") < names.index("ended")
    log = json.loads(json.dumps(call.as_json()))
    assert log["stream"]["parameters"] == {"call_ref": "r1", "token": "***"}
    assert "tok-+15550122001" not in json.dumps(log)
    assert log["callee"]["heard_text"] == GREETING and log["ended_by"] == "callee"


@pytest.mark.parametrize(
    ("script", "statuses", "sip"),
    [
        (CarrierScript.busy(), ["initiated", "busy"], "486"),
        (CarrierScript.no_answer(ring_s=3), ["initiated", "ringing", "no-answer"], "487"),
        (CarrierScript.failed(), ["initiated", "failed"], "404"),
        (CarrierScript.failed(sip_response_code=503), ["initiated", "failed"], "503"),
    ],
)
async def test_calls_that_never_connect(
    make_world: WorldFactory, script: CarrierScript, statuses: list[str], sip: str
) -> None:
    w: World = await make_world()
    result = await dial(w, "+15550122002", script)
    call = await w.carrier.wait_ended(result.call_sid, 20)
    assert call.statuses_sent() == statuses
    assert_signed(w, call)
    assert_status_shape(w, call)
    final = call.status_callbacks()[-1].params
    assert final["CallDuration"] == "0" and final["SipResponseCode"] == sip
    assert "AnsweredBy" not in final
    assert call.stream is None and call.callee is None and call.amd_callbacks() == []
    assert w.engine.streams == []
    assert w.carrier.twilio.calls[call.sid].status == statuses[-1]


async def test_ringing_longer_than_timeout_is_no_answer(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.set_script("+15550122003", CarrierScript.answer(TALK, ring_s=30))
    client = w.dialer._client(w.credentials)
    created = await client.calls.create_async(
        to="+15550122003",
        from_="+15550100000",
        twiml="<Response><Hangup/></Response>",
        timeout=5,
        status_callback=w.settings.public_base_url + "/v1/twilio/status",
    )
    call = await w.carrier.wait_ended(created.sid, 20)
    # without StatusCallbackEvent only the final status is sent, without progress fields
    assert call.statuses_sent() == ["no-answer"]
    assert "SequenceNumber" not in call.callbacks[0].params
    assert call.events[-1].at_s == pytest.approx(5.0, abs=1.0)
    assert_signed(w, call)


async def test_engine_hangs_up_mid_call(make_world: WorldFactory) -> None:
    w: World = await make_world()
    result = await dial(w, "+15550122004", CarrierScript.answer([Silence(60_000)], ring_s=0.5))
    start = await asyncio.wait_for(w.engine.started.get(), 10)
    assert start.call_sid == result.call_sid
    await w.dialer.hangup(result.call_sid, w.credentials)
    assert w.carrier.twilio.calls[result.call_sid].status == "completed"  # REST view at once
    call = await w.carrier.wait_ended(result.call_sid, 20)
    assert call.statuses_sent() == ["initiated", "ringing", "in-progress", "completed"]
    assert call.ended_by == "engine"
    assert call.callee is not None and call.callee.ended_by == "carrier_hangup"  # sent stop
    assert w.engine.streams[0].result.reason == "caller_hangup"  # the engine saw a stop
    assert "stop_stream" in call.event_names()
    assert_signed(w, call)


async def test_callee_hangs_up_mid_call(make_world: WorldFactory) -> None:
    w: World = await make_world()
    script = CarrierScript.answer([Silence(60_000)], ring_s=0.5, hangup_after_s=4.0)
    result = await dial(w, "+15550122005", script)
    call = await w.carrier.wait_ended(result.call_sid, 20)
    assert call.statuses_sent() == ["initiated", "ringing", "in-progress", "completed"]
    assert call.ended_by == "callee"
    assert call.callee is not None and call.callee.ended_by == "callee_hangup"
    assert call.duration_s in (4, 5)
    assert call.heard_text() == GREETING
    assert_signed(w, call)


async def test_time_limit_ends_the_call(make_world: WorldFactory) -> None:
    w: World = await make_world(margin=1)
    result = await dial(
        w,
        "+15550122006",
        CarrierScript.answer([Silence(60_000)], ring_s=0.2),
        max_call_duration_seconds=2,
    )
    call = await w.carrier.wait_ended(result.call_sid, 20)
    assert call.param("TimeLimit") == "3"
    assert call.ended_by == "time_limit"
    assert call.duration_s in (3, 4)
    assert call.statuses_sent()[-1] == "completed"


async def test_engine_closing_the_stream_ends_the_call(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.engine.close_after_greeting = True
    result = await dial(w, "+15550122007", CarrierScript.answer([Silence(60_000)], ring_s=0.2))
    call = await w.carrier.wait_ended(result.call_sid, 20)
    assert call.ended_by == "stream_closed"
    assert call.callee is not None and call.callee.ended_by == "engine_closed"
    assert call.statuses_sent() == ["initiated", "ringing", "in-progress", "completed"]


async def test_refused_stream_still_ends_in_completed(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.set_script("+15550122008", CarrierScript.answer(TALK, ring_s=0.2))
    result = await w.dialer.dial(w.request("+15550122008", stream_token="not-expected"))
    call = await w.carrier.wait_ended(result.call_sid, 20)
    assert call.callee is not None and call.callee.close_code == 1008
    assert call.ended_by == "stream_closed"
    assert w.engine.streams == []
    assert call.statuses_sent()[-1] == "completed"
    assert call.amd_callbacks() == []  # the call was over before AMD decided


async def test_voicemail_greeting_reports_its_amd_result(make_world: WorldFactory) -> None:
    w: World = await make_world()
    vm = get_script("en_personal_beep_short")
    result = await dial(w, "+15550122009", CarrierScript.voicemail(vm, ring_s=0.5))
    # the engine leaves once it has the verdict
    call = w.carrier.calls[result.call_sid]
    for _ in range(400):
        if call.amd_callbacks():
            break
        await asyncio.sleep(0.01)
    await w.dialer.hangup(result.call_sid, w.credentials)
    call = await w.carrier.wait_ended(result.call_sid, 20)
    (amd,) = call.amd_callbacks()
    assert amd.params["AnsweredBy"] == vm.amd.answered_by
    assert amd.params["MachineDetectionDuration"] == str(vm.amd.machine_detection_duration_ms)
    assert amd.at_s >= vm.amd.callback_ms / 1000.0
    assert call.status_callbacks()[-1].params["AnsweredBy"] == vm.amd.answered_by
    assert_signed(w, call)


async def test_no_amd_callback_without_machine_detection(make_world: WorldFactory) -> None:
    w: World = await make_world()
    result = await dial(
        w, "+15550122010", CarrierScript.answer(TALK, ring_s=0.2), amd_enabled=False
    )
    call = await w.carrier.wait_ended(result.call_sid, 20)
    assert call.amd_callbacks() == []
    assert all("AnsweredBy" not in cb.params for cb in call.callbacks)


async def test_behind_a_proxy_signatures_cover_the_public_urls(make_world: WorldFactory) -> None:
    w: World = await make_world(public_base_url="https://engine.example.com")
    result = await dial(w, "+15550122011", CarrierScript.answer(TALK, ring_s=0.2))
    call = await w.carrier.wait_ended(result.call_sid, 20)
    assert call.stream is not None
    assert call.stream.url == "wss://engine.example.com/v1/twilio/media"
    assert all(cb.url.startswith("https://engine.example.com/") for cb in call.callbacks)
    assert_signed(w, call)  # the engine checked them over its public URL
    assert len(w.engine.streams) == 1  # and the upgrade signature over wss://engine.example.com


async def test_many_calls_at_once(make_world: WorldFactory) -> None:
    w: World = await make_world()
    numbers = [f"+1555013{i:04d}" for i in range(12)]
    results = await asyncio.gather(
        *(dial(w, n, CarrierScript.answer(TALK, ring_s=0.3)) for n in numbers)
    )
    calls = await asyncio.gather(*(w.carrier.wait_ended(r.call_sid, 30) for r in results))
    for call in calls:
        assert call.statuses_sent() == ["initiated", "ringing", "in-progress", "completed"]
        assert call.heard_text() == GREETING
    assert len(w.engine.streams) == len(numbers)
    assert {s.start.call_sid for s in w.engine.streams} == {r.call_sid for r in results}


async def test_aclose_stops_calls_in_progress(make_world: WorldFactory) -> None:
    w: World = await make_world()
    result = await dial(w, "+15550122012", CarrierScript.answer(ring_s=600))
    await w.carrier.aclose()
    assert not w.carrier.calls[result.call_sid].done
    assert w.carrier._tasks == set()


# --- scripts, JSON, TwiML (no network) ----------------------------------------------------


def test_script_json_form() -> None:
    carrier = SandboxCarrier()
    carrier.load_scripts(
        {
            "default": {"outcome": "answer", "ring_s": 2},
            "+15550000001": {"outcome": "busy"},
            "+15550000002": {"voicemail": "en_personal_beep_short"},
            "+15550000003": {
                "outcome": "answer",
                "ring_s": 1.5,
                "hangup_after_s": 4,
                "amd": {"answered_by": "machine_end_beep", "machine_detection_duration_ms": 4100},
                "callee": [
                    {"silence": 300},
                    {"say": "Hello?"},
                    "until_agent_silent",
                    {"until_agent_heard": 500},
                    {"tone": [1000, 400]},
                    {"barge_in": {"text": "Stop", "after_ms": 200}},
                    {"dtmf": "12"},
                    "hangup",
                ],
            },
            "+15550000004": {"outcome": "no-answer"},
        }
    )
    assert carrier.script_for("+19999999999").ring_s == 2.0
    assert carrier.script_for("+15550000001").outcome == "busy"
    vm = get_script("en_personal_beep_short")
    assert carrier.script_for("+15550000002").amd == vm.amd
    assert carrier.script_for("+15550000002").callee == vm.callee_script()
    custom = carrier.script_for("+15550000003")
    assert custom.hangup_after_s == 4.0 and custom.ring_s == 1.5
    assert custom.amd is not None and custom.amd.answered_by == "machine_end_beep"
    assert custom.amd.machine_detection_duration_ms == 4100
    assert [type(s).__name__ for s in custom.callee.steps] == [
        "Silence",
        "Say",
        "UntilAgentSilent",
        "UntilAgentHeard",
        "Tone",
        "BargeIn",
        "Dtmf",
        "Hangup",
    ]
    assert carrier.script_for("+15550000004").ring_s is None  # rings until Timeout
    # round trip through real JSON text
    assert script_from_json(json.loads(json.dumps({"outcome": "failed"}))).outcome == "failed"


@pytest.mark.parametrize(
    "bad",
    [
        {"outcome": "maybe"},
        {"ring_s": -1},
        {"colour": "red"},
        {"callee": ["sing"]},
        {"callee": [{"say": "a", "silence": 1}]},
        {"voicemail": "no_such_script"},
    ],
)
def test_bad_scripts_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises((ValueError, KeyError)):
        script_from_json(bad)


def test_steps_from_json_arguments() -> None:
    steps = steps_from_json([{"silence": 250}, {"until_agent_silent": {"silence_ms": 900}}])
    assert steps == [Silence(250), UntilAgentSilent(silence_ms=900)]


def test_parse_twiml() -> None:
    parsed = parse_twiml(
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://h/v1/twilio/media"><Parameter name="a" value="1&amp;2"/>'
        '<Parameter name="b" value=""/></Stream></Connect></Response>'
    )
    assert parsed is not None and parsed.url == "wss://h/v1/twilio/media"
    assert dict(parsed.parameters) == {"a": "1&2", "b": ""}
    assert parse_twiml("<Response><Say>Hi</Say><Hangup/></Response>") is None
    with pytest.raises(ValueError):
        parse_twiml("<Response><Connect>")
    with pytest.raises(ValueError):
        parse_twiml("<Other/>")


async def test_url_twiml_sync_amd_and_get_callbacks(make_world: WorldFactory) -> None:
    """A call made with ``Url`` (TwiML fetched, signed), synchronous ``MachineDetection=Enable``
    (the TwiML waits for the verdict; a ``machine_end_*`` result reads ``machine_start``) and
    ``StatusCallbackMethod=GET``."""
    w: World = await make_world()
    fetches: list[tuple[str, dict[str, str], bool]] = []
    media = w.settings.public_ws_base_url + "/v1/twilio/media"
    w.engine.expected_tokens.add("tok-url")

    async def twiml(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        sig = request.headers.get("x-twilio-signature", "")
        ok = RequestValidator(w.account.auth_token).validate(str(request.url), form, sig)
        fetches.append((request.method, form, ok))
        body = (
            f'<Response><Connect><Stream url="{media}">'
            '<Parameter name="token" value="tok-url"/></Stream></Connect></Response>'
        )
        return Response(body, media_type="application/xml")

    amd = AmdOutcome("machine_end_beep", 3000, 3300.0)
    w.carrier.set_script("+15550122013", CarrierScript.answer(TALK, ring_s=0.2, amd=amd))
    async with serve_app(Starlette(routes=[Route("/twiml", twiml, methods=["POST"])])) as base:
        client = w.dialer._client(w.credentials)
        created = await client.calls.create_async(
            to="+15550122013",
            from_="+15550100000",
            url=base + "/twiml",
            machine_detection="Enable",
            status_callback=w.settings.public_base_url + "/v1/twilio/status",
            status_callback_method="GET",
            status_callback_event=["initiated", "answered", "completed"],
        )
        call = await w.carrier.wait_ended(created.sid, 20)
    assert [(m, ok) for m, _, ok in fetches] == [("POST", True)]
    assert (
        fetches[0][1]["CallSid"] == created.sid and fetches[0][1]["AnsweredBy"] == "machine_start"
    )
    names = call.event_names()
    assert names.index("amd_decided") < names.index("stream_connecting")
    stream_at = call.events[names.index("stream_connecting")].at_s
    assert stream_at - (call.answered_at_s or 0) >= 3.0  # held for the detection time
    assert call.amd_callbacks() == []  # synchronous: no AMD callback
    # ringing was not asked for; GET callbacks verify over URL + query
    assert call.statuses_sent() == ["initiated", "in-progress", "completed"]
    assert all(cb.method == "GET" for cb in call.callbacks if cb.kind == "status")
    received = [c for c in w.engine.callbacks if c.form.get("CallSid") == call.sid]
    assert [c.form["CallStatus"] for c in received] == call.statuses_sent()
    assert all(c.valid for c in received)
    assert received[-1].form["AnsweredBy"] == "machine_start"
    assert call.heard_text() == GREETING


async def test_amd_callback_in_flight_when_the_call_ends(make_world: WorldFactory) -> None:
    """Once AMD has decided, its callback is delivered even if the call ends meanwhile; the
    call's log is complete (``done``) only after it."""
    w: World = await make_world(speed=2.0)
    w.engine.amd_delay_s = 1.0  # 2 line seconds: the callee hangs up during it
    script = CarrierScript.answer([Silence(3000), Hangup()], ring_s=0.2)
    result = await dial(w, "+15550122014", script)
    call = await w.carrier.wait_ended(result.call_sid, 20)
    (amd,) = call.amd_callbacks()
    assert amd.http_status == 204 and amd.error is None
    assert call.ended_at_s is not None and amd.at_s < call.ended_at_s
    assert call.ended_by == "callee"


async def test_two_nodes_each_get_their_own_calls(make_world: WorldFactory) -> None:
    """Two engine nodes dialing through one carrier: each call's stream and callbacks reach
    the node that dialed it (its own public URL in the TwiML and callback URLs)."""
    w: World = await make_world()
    other = EngineSide(public_base_url="", auth_tokens=dict(w.engine.auth_tokens))
    holder: dict[str, Starlette] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    async with serve_app(app) as url_b:
        other.public_base_url = url_b
        settings_b = Settings(public_base_url=url_b, twilio_api_base_url=w.carrier_url)
        holder["app"] = engine_app(
            other, public_ws_base_url=settings_b.public_ws_base_url, speed=SPEED
        )
        dialer_b = TwilioDialer(settings_b)
        try:
            w.carrier.default_script = CarrierScript.answer(TALK, ring_s=0.2)
            w.engine.expected_tokens.add("tok-a")
            other.expected_tokens.add("tok-b")
            a, b = await asyncio.gather(
                w.dialer.dial(w.request("+15550122015", stream_token="tok-a")),
                dialer_b.dial(w.request("+15550122016", stream_token="tok-b")),
            )
            calls = await asyncio.gather(
                w.carrier.wait_ended(a.call_sid, 20), w.carrier.wait_ended(b.call_sid, 20)
            )
        finally:
            await dialer_b.aclose()
    assert [s.start.call_sid for s in w.engine.streams] == [a.call_sid]
    assert [s.start.call_sid for s in other.streams] == [b.call_sid]
    assert {c.form["CallSid"] for c in w.engine.callbacks} == {a.call_sid}
    assert {c.form["CallSid"] for c in other.callbacks} == {b.call_sid}
    for call in calls:
        assert call.statuses_sent() == ["initiated", "ringing", "in-progress", "completed"]
        assert call.heard_text() == GREETING
    assert all(c.valid for c in w.engine.callbacks + other.callbacks)
