"""The Twilio dialer through the real SDK against the sandbox carrier on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nixflex_engine.calls.dialer import Dialer, DialError, DialRequest, TwilioCredentials
from nixflex_engine.calls.twilio_dialer import (
    MAX_TWIML_CHARS,
    TwilioDialer,
    build_twiml,
)
from nixflex_engine.config import Settings
from nixflex_engine.sandbox.callee import Silence
from nixflex_engine.sandbox.carrier import CarrierScript
from nixflex_engine.sandbox.fake_twilio import TwilioErrorSpec
from nixflex_engine.sandbox.serve import serve_app

from .conftest import FROM, World, WorldFactory


def _stream(twiml: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    (connect,) = list(root)
    assert connect.tag == "Connect"
    (stream,) = list(connect)
    assert stream.tag == "Stream"
    params = {p.get("name", ""): p.get("value", "") for p in stream}
    return stream.get("url", ""), params


async def test_dial_sends_twiml_callbacks_amd_and_time_limit(make_world: WorldFactory) -> None:
    w: World = await make_world(public_base_url="https://node-a.example.com")
    w.carrier.set_script("+15550111111", CarrierScript.busy())
    request = w.request("+15550111111", call_ref="ref_abc", max_call_duration_seconds=300)

    result = await w.dialer.dial(request)

    assert isinstance(w.dialer, Dialer)
    assert result.call_sid.startswith("CA") and len(result.call_sid) == 34
    assert result.status == "queued"
    params = w.carrier.calls[result.call_sid].params
    assert params["To"] == ["+15550111111"] and params["From"] == [FROM]
    url, stream_params = _stream(params["Twiml"][0])
    assert url == "wss://node-a.example.com/v1/twilio/media"
    assert urlsplit(url).query == ""
    assert stream_params == {"call_ref": "ref_abc", "token": result.stream_token}
    assert len(params["Twiml"][0]) <= MAX_TWIML_CHARS
    assert params["StatusCallback"] == ["https://node-a.example.com/v1/twilio/status?ref=ref_abc"]
    assert params["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert params["StatusCallbackMethod"] == ["POST"]
    assert params["MachineDetection"] == ["DetectMessageEnd"]
    assert params["AsyncAmd"] == ["true"]
    assert params["AsyncAmdStatusCallback"] == [
        "https://node-a.example.com/v1/twilio/amd?ref=ref_abc"
    ]
    assert params["AsyncAmdStatusCallbackMethod"] == ["POST"]
    assert params["TimeLimit"] == ["360"]
    assert params["Record"] == ["false"]
    assert "Url" not in params


async def test_no_amd_parameters_when_the_agent_has_amd_off(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.set_script("+15550111112", CarrierScript.busy())
    result = await w.dialer.dial(w.request("+15550111112", amd_enabled=False))
    params = w.carrier.calls[result.call_sid].params
    for key in ("MachineDetection", "AsyncAmd", "AsyncAmdStatusCallback"):
        assert key not in params
    # each node puts its own public URL in what it dials
    assert params["StatusCallback"][0].startswith(w.settings.public_base_url + "/v1/twilio/")


async def test_stream_token_from_the_request_or_generated(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.default_script = CarrierScript.busy()
    given = await w.dialer.dial(w.request("+15550111113", stream_token="tok-given"))
    assert given.stream_token == "tok-given"
    assert _stream(w.carrier.calls[given.call_sid].param("Twiml"))[1]["token"] == "tok-given"
    a = await w.dialer.dial(w.request("+15550111114"))
    b = await w.dialer.dial(w.request("+15550111115"))
    assert a.stream_token and b.stream_token and a.stream_token != b.stream_token
    assert len(a.stream_token) >= 43  # 32 random bytes, url-safe base64
    assert "tok-given" not in repr(given) and "tok-given" not in repr(
        w.request("+1555", stream_token="tok-given")
    )


async def test_one_client_per_account_reused_and_closed(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.default_script = CarrierScript.busy()
    await w.dialer.dial(w.request("+15550111116"))
    await w.dialer.dial(w.request("+15550111117"))
    assert w.dialer.client_count == 1
    other = w.carrier.twilio.add_account()
    w.carrier.twilio.add_number(other.sid, "+15550199999")
    req = DialRequest(
        call_ref="ref-o",
        account_id="acct_2",
        agent_id="agent_2",
        to_number="+15550111118",
        from_number="+15550199999",
        credentials=TwilioCredentials(other.sid, other.auth_token),
    )
    await w.dialer.dial(req)
    assert w.dialer.client_count == 2
    await w.dialer.aclose()
    assert w.dialer.client_count == 0
    with pytest.raises(RuntimeError):
        await w.dialer.dial(req)


@pytest.mark.parametrize(
    ("to", "from_", "bad_token", "code", "status", "words"),
    [
        ("12345", FROM, False, 21211, 400, "is not a valid phone number"),
        ("+15550111119", "+15550177777", False, 21210, 400, "is not yet verified"),
        ("+15550111119", FROM, True, 20003, 401, "Authenticate"),
    ],
)
async def test_twilio_errors_become_dial_errors(
    make_world: WorldFactory,
    to: str,
    from_: str,
    bad_token: bool,
    code: int,
    status: int,
    words: str,
) -> None:
    w: World = await make_world()
    creds = TwilioCredentials(w.account.sid, "wrong" if bad_token else w.account.auth_token)
    request = DialRequest(
        call_ref="ref-e",
        account_id="a",
        agent_id="g",
        to_number=to,
        from_number=from_,
        credentials=creds,
    )
    with pytest.raises(DialError) as caught:
        await w.dialer.dial(request)
    err = caught.value
    assert (err.code, err.status) == (code, status)
    assert words in err.message
    assert not err.message.startswith("Unable to create record")
    assert err.as_details() == {"code": code, "message": err.message, "status": status}
    assert w.carrier.calls == {}


async def test_scripted_refusal_keeps_twilios_code_and_message(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.twilio.call_failures["+15550111120"] = TwilioErrorSpec(
        13227, "No International Permission", 400
    )
    with pytest.raises(DialError) as caught:
        await w.dialer.dial(w.request("+15550111120"))
    assert caught.value.as_details() == {
        "code": 13227,
        "message": "No International Permission",
        "status": 400,
    }


async def test_rfc9457_error_body_is_mapped_too() -> None:
    """A body with type/title/status/code raises TwilioServiceException in the SDK (not a
    TwilioRestException); the dialer maps it the same way."""
    seen: list[dict[str, list[str]]] = []

    async def create(request: Request) -> JSONResponse:
        seen.append(parse_qs((await request.body()).decode()))
        return JSONResponse(
            {
                "type": "https://www.twilio.com/docs/errors/21215",
                "title": "Geo Permission configuration is not permitting call",
                "status": 403,
                "code": 21215,
                "detail": "Account not allowed to call +8869xxxx",
                "instance": "/2010-04-01/Accounts/AC1/Calls.json",
            },
            status_code=403,
            media_type="application/problem+json",
        )

    app = Starlette(
        routes=[Route("/2010-04-01/Accounts/{sid}/Calls.json", create, methods=["POST"])]
    )
    async with serve_app(app) as base:
        dialer = TwilioDialer(
            Settings(public_base_url="https://n.example", twilio_api_base_url=base)
        )
        try:
            with pytest.raises(DialError) as caught:
                await dialer.dial(
                    DialRequest(
                        call_ref="r",
                        account_id="a",
                        agent_id="g",
                        to_number="+886912345678",
                        from_number=FROM,
                        credentials=TwilioCredentials("AC" + "1" * 32, "t"),
                    )
                )
        finally:
            await dialer.aclose()
    assert len(seen) == 1
    assert caught.value.as_details() == {
        "code": 21215,
        "message": "Account not allowed to call +8869xxxx",
        "status": 403,
    }


async def test_unreachable_carrier() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    dialer = TwilioDialer(
        Settings(
            public_base_url="https://n.example", twilio_api_base_url=f"http://127.0.0.1:{port}"
        )
    )
    creds = TwilioCredentials("AC" + "2" * 32, "t")
    try:
        with pytest.raises(DialError) as caught:
            await dialer.dial(
                DialRequest(
                    call_ref="r",
                    account_id="a",
                    agent_id="g",
                    to_number="+15550111121",
                    from_number=FROM,
                    credentials=creds,
                )
            )
        assert caught.value.as_details() == {
            "code": None,
            "message": "carrier unreachable",
            "status": None,
        }
        with pytest.raises(DialError) as hung:
            await dialer.hangup("CA" + "3" * 32, creds)
        assert hung.value.code is None
    finally:
        await dialer.aclose()


async def test_hangup_ringing_call_cancels_it(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.set_script("+15550111122", CarrierScript.answer(ring_s=600))
    result = await w.dialer.dial(w.request("+15550111122"))
    await w.dialer.hangup(result.call_sid, w.credentials)
    call = await w.carrier.wait_ended(result.call_sid, 10)
    assert w.carrier.twilio.calls[result.call_sid].status == "canceled"
    assert call.ended_by == "engine"
    assert call.statuses_sent()[-1] == "canceled"
    assert call.stream is None  # never answered, no media
    # hanging up again, or a call Twilio never had: already gone, not an error
    await w.dialer.hangup(result.call_sid, w.credentials)
    await w.dialer.hangup("CA" + "0" * 32, w.credentials)
    updates = [p for m, p in w.carrier.twilio.requests if m == "POST" and "/Calls/CA" in p]
    assert len(updates) == 3


async def test_hangup_with_wrong_credentials_is_an_error(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.default_script = CarrierScript.answer(ring_s=600)
    result = await w.dialer.dial(w.request("+15550111123"))
    with pytest.raises(DialError) as caught:
        await w.dialer.hangup(result.call_sid, TwilioCredentials(w.account.sid, "bad"))
    assert (caught.value.code, caught.value.status) == (20003, 401)
    await w.dialer.hangup(result.call_sid, w.credentials)
    await w.carrier.wait_ended(result.call_sid, 10)


async def test_hangup_canceled_only_does_not_end_an_answered_call(
    make_world: WorldFactory,
) -> None:
    w: World = await make_world()
    w.carrier.default_script = CarrierScript.answer([Silence(60_000)], ring_s=0.5)
    request = w.request("+15550111124", stream_token="tok-1")
    w.engine.expected_tokens.add("tok-1")
    result = await w.dialer.dial(request)
    await w.engine.started.get()
    await w.dialer.hangup(result.call_sid, w.credentials, status="canceled")
    assert w.carrier.twilio.calls[result.call_sid].status == "in-progress"
    assert "cancel_ignored" in w.carrier.calls[result.call_sid].event_names()
    await w.dialer.hangup(result.call_sid, w.credentials)
    call = await w.carrier.wait_ended(result.call_sid, 10)
    assert call.ended_by == "engine" and call.statuses_sent()[-1] == "completed"


def test_twiml_limits() -> None:
    twiml = build_twiml("wss://x.example/v1/twilio/media", {"call_ref": 'a"<&>', "token": "t"})
    url, params = _stream(twiml)
    assert url == "wss://x.example/v1/twilio/media"
    assert params == {"call_ref": 'a"<&>', "token": "t"}
    with pytest.raises(ValueError, match="query string"):
        build_twiml("wss://x.example/media?token=1", {})
    with pytest.raises(ValueError, match="4000"):
        build_twiml("wss://x.example/media", {"call_ref": "x" * 4000})


def test_time_limit_margin_and_bounds() -> None:
    settings = Settings(public_base_url="https://n.example")
    assert TwilioDialer(settings).time_limit(300) == 360
    assert TwilioDialer(settings, time_limit_margin_seconds=0).time_limit(0) == 1
    assert TwilioDialer(settings).time_limit(10**6) == 86_400
    with pytest.raises(ValueError):
        TwilioDialer(settings, time_limit_margin_seconds=-1)


def test_create_params_use_this_nodes_public_url() -> None:
    creds = TwilioCredentials("AC" + "4" * 32, "t")
    req = DialRequest("ref/1", "a", "g", "+15550111125", FROM, creds)
    a: dict[str, Any] = TwilioDialer(Settings(public_base_url="https://a.example")).create_params(
        req, "tok"
    )
    b: dict[str, Any] = TwilioDialer(Settings(public_base_url="https://b.example/")).create_params(
        req, "tok"
    )
    assert a["status_callback"] == "https://a.example/v1/twilio/status?ref=ref%2F1"
    assert b["status_callback"] == "https://b.example/v1/twilio/status?ref=ref%2F1"
    assert _stream(a["twiml"])[0] == "wss://a.example/v1/twilio/media"
    assert _stream(b["twiml"])[0] == "wss://b.example/v1/twilio/media"


async def test_hangup_falls_back_to_canceled_and_slow_carrier_times_out() -> None:
    """A carrier answering 21220 to ``completed`` gets ``canceled``; one that does not answer
    within ``request_timeout_s`` is unreachable."""
    updates: list[str] = []

    async def update(request: Request) -> JSONResponse:
        status = parse_qs((await request.body()).decode())["Status"][0]
        updates.append(status)
        if status == "completed":
            return JSONResponse(
                {"code": 21220, "message": "Invalid call state for this operation", "status": 400},
                status_code=400,
            )
        return JSONResponse({"sid": request.path_params["sid"], "status": "canceled"})

    async def slow(request: Request) -> JSONResponse:
        await asyncio.sleep(5)
        return JSONResponse({}, status_code=201)

    app = Starlette(
        routes=[
            Route("/2010-04-01/Accounts/{ac}/Calls/{sid}.json", update, methods=["POST"]),
            Route("/2010-04-01/Accounts/{ac}/Calls.json", slow, methods=["POST"]),
        ]
    )
    creds = TwilioCredentials("AC" + "6" * 32, "t")
    async with serve_app(app) as base:
        dialer = TwilioDialer(
            Settings(public_base_url="https://n.example", twilio_api_base_url=base),
            request_timeout_s=0.3,
        )
        try:
            await dialer.hangup("CA" + "7" * 32, creds)
            assert updates == ["completed", "canceled"]
            with pytest.raises(DialError) as caught:
                await dialer.hangup("CA" + "7" * 32, creds, status="completed")
            assert caught.value.code == 21220 and caught.value.status == 400
            with pytest.raises(DialError) as slow_dial:
                await dialer.dial(DialRequest("r", "a", "g", "+15550111126", FROM, creds))
            assert slow_dial.value.as_details() == {
                "code": None,
                "message": "carrier unreachable",
                "status": None,
            }
        finally:
            await dialer.aclose()


async def test_logs_carry_no_secrets_and_no_sdk_chatter(
    make_world: WorldFactory, caplog: pytest.LogCaptureFixture
) -> None:
    w: World = await make_world()
    w.carrier.default_script = CarrierScript.busy()
    caplog.set_level(logging.INFO)
    await w.dialer.dial(w.request("+15550111127", stream_token="secret-stream-token"))
    messages = [(r.name, r.getMessage(), str(getattr(r, "fields", ""))) for r in caplog.records]
    assert ("nixflex_engine.calls.twilio_dialer", "twilio.dialed") in [m[:2] for m in messages]
    assert not any("Twilio API Request" in m for _, m, _ in messages)
    caplog.clear()
    caplog.set_level(logging.DEBUG)  # the SDK's own request lines appear, still without secrets
    await w.dialer.dial(w.request("+15550111128", stream_token="secret-stream-token"))
    text = "\n".join(
        f"{m} {f}"
        for _, m, f in (
            (r.name, r.getMessage(), str(getattr(r, "fields", ""))) for r in caplog.records
        )
    )
    assert "Twilio API Request" in text
    assert "secret-stream-token" not in text
    assert w.account.auth_token not in text


async def test_call_status_for_reconciliation(make_world: WorldFactory) -> None:
    w: World = await make_world()
    w.carrier.set_script("+15550111129", CarrierScript.busy())
    result = await w.dialer.dial(w.request("+15550111129"))
    await w.carrier.wait_ended(result.call_sid, 10)
    status = await w.dialer.call_status(result.call_sid, w.credentials)
    assert status is not None and status.status == "busy"
    assert await w.dialer.call_status("CA" + "8" * 32, w.credentials) is None
    with pytest.raises(DialError) as caught:
        await w.dialer.call_status(result.call_sid, TwilioCredentials(w.account.sid, "bad"))
    assert caught.value.code == 20003
