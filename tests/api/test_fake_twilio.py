"""The fake Twilio REST API, driven by the official twilio SDK (async client, base URL
override as in wire-protocols §5.1): call creation with the real JSON shape, Twilio's error
codes and bodies, status updates, number listing, auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from nixflex_engine.sandbox.fake_twilio import FakeTwilio, FakeTwilioAccount, TwilioErrorSpec

from .support import random_e164

TWIML = "<Response><Connect><Stream url='wss://x/media'/></Connect></Response>"


@pytest.fixture
async def twilio(
    fake_twilio: tuple[FakeTwilio, str],
) -> AsyncIterator[tuple[FakeTwilio, Any, FakeTwilioAccount, str]]:
    state, base = fake_twilio
    account = state.add_account()
    number = random_e164("+1555")
    state.add_number(account.sid, number)
    http = AsyncTwilioHttpClient()
    client = Client(account.sid, account.auth_token, http_client=http)
    client.api.base_url = base
    yield state, client, account, number
    await http.close()


async def test_create_fetch_and_hang_up(twilio: Any) -> None:
    state, client, account, number = twilio
    seen: list[str] = []

    async def hook(call: Any) -> None:
        seen.append(call.sid)

    state.on_call_created.append(hook)
    try:
        call = await client.calls.create_async(
            to="+447386172392",
            from_=number,
            twiml=TWIML,
            status_callback="https://engine.example.com/twilio/status",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            machine_detection="DetectMessageEnd",
            async_amd="true",
            time_limit=360,
        )
    finally:
        state.on_call_created.remove(hook)
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert call.status == "queued" and call.direction == "outbound-api"
    assert call.to == "+447386172392" and call._from == number
    assert call.account_sid == account.sid
    assert seen == [call.sid]
    fake = state.calls[call.sid]
    assert fake.params["Twiml"] == [TWIML]
    assert fake.params["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert fake.params["AsyncAmd"] == ["true"] and fake.params["TimeLimit"] == ["360"]

    fetched = await client.calls(call.sid).fetch_async()
    assert fetched.sid == call.sid
    updated = await client.calls(call.sid).update_async(status="completed")
    assert updated.status == "completed"
    with pytest.raises(TwilioRestException) as gone:
        await client.calls("CA" + "0" * 32).update_async(status="completed")
    assert gone.value.status == 404 and gone.value.code == 20404


async def test_twilio_error_codes(twilio: Any) -> None:
    state, client, _account, number = twilio
    with pytest.raises(TwilioRestException) as bad_to:
        await client.calls.create_async(to="07386172392", from_=number, twiml=TWIML)
    assert bad_to.value.status == 400 and bad_to.value.code == 21211
    assert "07386172392" in bad_to.value.msg
    with pytest.raises(TwilioRestException) as unowned:
        await client.calls.create_async(to="+447386172392", from_="+15005550009", twiml=TWIML)
    assert unowned.value.code == 21210
    with pytest.raises(TwilioRestException) as no_url:
        await client.calls.create_async(to="+447386172392", from_=number)
    assert no_url.value.code == 21205
    blocked = random_e164("+1555")
    state.call_failures[blocked] = TwilioErrorSpec(13225, "Call blocked by Twilio", 403)
    with pytest.raises(TwilioRestException) as scripted:
        await client.calls.create_async(to=blocked, from_=number, twiml=TWIML)
    assert (scripted.value.status, scripted.value.code) == (403, 13225)


async def test_bad_credentials_and_raw_error_body(fake_twilio: tuple[FakeTwilio, str]) -> None:
    state, base = fake_twilio
    account = state.add_account()
    http = AsyncTwilioHttpClient()
    client = Client(account.sid, "wrong-token", http_client=http)
    client.api.base_url = base
    try:
        with pytest.raises(TwilioRestException) as denied:
            await client.calls.create_async(to="+447386172392", from_="+1", twiml=TWIML)
    finally:
        await http.close()
    assert denied.value.status == 401 and denied.value.code == 20003
    async with httpx.AsyncClient() as raw:
        r = await raw.post(
            f"{base}/2010-04-01/Accounts/{account.sid}/Calls.json",
            data={"To": "bad", "From": "+1", "Twiml": TWIML},
            auth=(account.sid, account.auth_token),
        )
        # another account's credentials cannot use this account's path
        other = state.add_account()
        r2 = await raw.get(
            f"{base}/2010-04-01/Accounts/{account.sid}/IncomingPhoneNumbers.json",
            auth=(other.sid, other.auth_token),
        )
    assert r.status_code == 400
    assert r.json() == {
        "code": 21211,
        "message": "The 'To' number bad is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }
    assert r2.status_code == 401 and r2.json()["code"] == 20003


async def test_number_listing_filter(twilio: Any) -> None:
    state, client, account, number = twilio
    other = random_e164("+1555")
    state.add_number(account.sid, other)
    listed = await client.incoming_phone_numbers.list_async(phone_number=number)
    assert [n.phone_number for n in listed] == [number]
    everything = await client.incoming_phone_numbers.list_async()
    assert {n.phone_number for n in everything} == {number, other}
    assert all(n.sid.startswith("PN") for n in everything)
