"""Phone numbers: import verified against the fake Twilio through the twilio SDK, credentials
encrypted and never returned, list/patch/delete, per-number webhook slots, scoping."""

from __future__ import annotations

import sqlalchemy as sa

from nixflex_engine.store.models import phone_numbers

from .support import Env, assert_error, random_e164


def enc(number: str) -> str:
    return number.replace("+", "%2B")


async def test_import_verifies_with_twilio_and_never_returns_credentials(env: Env) -> None:
    account = await env.account()
    agent = await env.agent(account)
    tw = env.twilio_account(account)
    number = random_e164()
    twilio_number = env.twilio.add_number(tw.sid, number)
    r = await env.client.post(
        "/v1/phone-numbers",
        json={
            "phone_number": number,
            "agent_id": agent["agent_id"],
            "twilio_sid": tw.sid,  # aliases accepted
            "twilio_token": tw.auth_token,
        },
        headers=account.headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["phone_number"] == number and body["agent_id"] == agent["agent_id"]
    assert body["twilio_number_sid"] == twilio_number.sid
    assert body["has_twilio_credentials"] is True
    assert tw.auth_token not in r.text and tw.sid not in r.text
    # the SDK really went to the fake's IncomingPhoneNumbers endpoint
    assert (
        "GET",
        f"/2010-04-01/Accounts/{tw.sid}/IncomingPhoneNumbers.json",
    ) in env.twilio.requests
    listing = await env.client.get("/v1/phone-numbers", headers=account.headers)
    assert tw.auth_token not in listing.text and tw.sid not in listing.text
    # at rest: encrypted, decryptable with the server key only
    row = await env.services.repos.db.read(
        lambda conn: conn.execute(
            sa.select(phone_numbers.c.twilio_auth_token_encrypted).where(
                phone_numbers.c.phone_number == number
            )
        ).scalar_one()
    )
    assert tw.auth_token not in row
    assert env.services.crypto.decrypt(row) == tw.auth_token


async def test_import_errors(env: Env) -> None:
    account = await env.account()
    tw = env.twilio_account(account)
    owned = random_e164()
    env.twilio.add_number(tw.sid, owned)
    h = account.headers

    async def imp(**body: object) -> object:
        return await env.client.post("/v1/phone-numbers", json=body, headers=h)

    creds = {"twilio_account_sid": tw.sid, "twilio_auth_token": tw.auth_token}
    assert_error(await imp(**creds), 400, "missing_field")
    assert_error(await imp(phone_number="07446466847", **creds), 400, "invalid_phone_format")
    assert_error(await imp(phone_number=owned, twilio_auth_token="x"), 400, "missing_field")
    assert_error(
        await imp(phone_number=owned, twilio_account_sid="nope", twilio_auth_token="x"),
        400,
        "invalid_request",
    )
    assert_error(await imp(phone_number=owned, telnyx_api_key="k", **creds), 400, "invalid_request")
    assert_error(await imp(phone_number=owned, twilio_sid=tw.sid, **creds), 400, "invalid_request")
    err = assert_error(
        await imp(phone_number=owned, twilio_account_sid=tw.sid, twilio_auth_token="wrong"),
        400,
        "twilio_credentials_invalid",
    )
    assert err["details"]["twilio_error"]["code"] == 20003
    assert_error(
        await imp(phone_number=random_e164(), **creds), 400, "phone_number_not_in_twilio_account"
    )
    assert_error(
        await imp(phone_number=owned, agent_id="agent_0000000000000000", **creds),
        404,
        "agent_not_found",
    )
    other = await env.account()
    others_agent = await env.agent(other)
    assert_error(
        await imp(phone_number=owned, agent_id=others_agent["agent_id"], **creds),
        403,
        "agent_not_owned",
    )
    assert (await imp(phone_number=owned, **creds)).status_code == 201
    assert_error(await imp(phone_number=owned, **creds), 409, "phone_number_exists")
    # the same number cannot be claimed by another account either
    tw2 = env.twilio_account(other)
    env.twilio.add_number(tw2.sid, owned)
    r = await env.client.post(
        "/v1/phone-numbers",
        json={
            "phone_number": owned,
            "twilio_account_sid": tw2.sid,
            "twilio_auth_token": tw2.auth_token,
        },
        headers=other.headers,
    )
    assert_error(r, 409, "phone_number_exists")


async def test_twilio_unreachable_is_502(env: Env) -> None:
    env.settings.twilio_api_base_url = "http://127.0.0.1:9"  # nothing listens on port 9
    account = await env.account()
    r = await env.client.post(
        "/v1/phone-numbers",
        json={
            "phone_number": random_e164(),
            "twilio_account_sid": "AC" + "0" * 32,
            "twilio_auth_token": "t",
        },
        headers=account.headers,
    )
    err = assert_error(r, 502, "twilio_unavailable")
    assert err["type"] == "provider_error"


async def test_patch_delete_and_list_filter(env: Env) -> None:
    account = await env.account()
    a1 = await env.agent(account)
    a2 = await env.agent(account)
    n1 = await env.number(account, a1["agent_id"])
    n2 = await env.number(account, None)
    h = account.headers
    r = await env.client.patch(
        f"/v1/phone-numbers/{enc(n2)}", json={"agent_id": a2["agent_id"]}, headers=h
    )
    assert r.status_code == 200 and r.json()["agent_id"] == a2["agent_id"]
    only_a1 = (
        await env.client.get(f"/v1/phone-numbers?agent_id={a1['agent_id']}", headers=h)
    ).json()
    assert [n["phone_number"] for n in only_a1["phone_numbers"]] == [n1]
    everything = (await env.client.get("/v1/phone-numbers", headers=h)).json()
    assert everything["count"] == 2
    assert [n["phone_number"] for n in everything["phone_numbers"]] == [n2, n1]
    # re-credential: verified again
    tw = env.twilio_account(account)
    bad = await env.client.patch(
        f"/v1/phone-numbers/{enc(n1)}",
        json={"twilio_account_sid": tw.sid, "twilio_auth_token": "wrong"},
        headers=h,
    )
    assert_error(bad, 400, "twilio_credentials_invalid")
    good = await env.client.patch(
        f"/v1/phone-numbers/{enc(n1)}",
        json={"twilio_account_sid": tw.sid, "twilio_auth_token": tw.auth_token, "agent_id": None},
        headers=h,
    )
    assert good.status_code == 200 and good.json()["agent_id"] is None
    assert_error(
        await env.client.patch(f"/v1/phone-numbers/{enc(n1)}", json={"voice": "x"}, headers=h),
        400,
        "invalid_request",
    )
    assert_error(
        await env.client.patch("/v1/phone-numbers/07446466847", json={}, headers=h),
        400,
        "invalid_phone_format",
    )
    r = await env.client.delete(f"/v1/phone-numbers/{enc(n1)}", headers=h)
    assert r.status_code == 200 and r.json() == {"phone_number": n1, "deleted": True}
    assert_error(
        await env.client.delete(f"/v1/phone-numbers/{enc(n1)}", headers=h),
        404,
        "phone_number_not_found",
    )
    # a raw '+' in the path works too
    r = await env.client.request("DELETE", f"http://engine.test/v1/phone-numbers/{n2}", headers=h)
    assert r.status_code == 200, r.text


async def test_numbers_are_account_scoped(env: Env) -> None:
    owner, _, number = await env.ready()
    stranger = await env.account()
    h = stranger.headers
    assert (await env.client.get("/v1/phone-numbers", headers=h)).json()["count"] == 0
    assert_error(
        await env.client.patch(
            f"/v1/phone-numbers/{enc(number)}", json={"agent_id": None}, headers=h
        ),
        404,
        "phone_number_not_found",
    )
    assert_error(
        await env.client.delete(f"/v1/phone-numbers/{enc(number)}", headers=h),
        404,
        "phone_number_not_found",
    )
    for slot in ("webhook", "webhook2"):
        path = f"/v1/integrations/{slot}/number/{enc(number)}"
        assert_error(await env.client.get(path, headers=h), 404, "phone_number_not_found")
        assert_error(
            await env.client.put(path, json={"url": "https://x.example.com"}, headers=h),
            404,
            "phone_number_not_found",
        )
    assert (await env.client.get("/v1/phone-numbers", headers=owner.headers)).json()["count"] == 1


async def test_webhook_slots(env: Env) -> None:
    account, _, number = await env.ready()
    h = account.headers
    p1 = f"/v1/integrations/webhook/number/{enc(number)}"
    p2 = f"/v1/integrations/webhook2/number/{enc(number)}"
    assert (await env.client.get(p1, headers=h)).json() == {
        "phone_number": number,
        "slot": 1,
        "url": None,
    }
    r = await env.client.put(p1, json={"url": "https://crm.example.com/hook"}, headers=h)
    assert r.status_code == 200 and r.json()["url"] == "https://crm.example.com/hook"
    r = await env.client.put(p2, json={"url": "https://backup.example.com/hook"}, headers=h)
    assert r.json() == {"phone_number": number, "slot": 2, "url": "https://backup.example.com/hook"}
    assert (await env.client.get(p1, headers=h)).json()["url"] == "https://crm.example.com/hook"
    listing = (await env.client.get("/v1/phone-numbers", headers=h)).json()["phone_numbers"][0]
    assert listing["webhook_url"] == "https://crm.example.com/hook"
    assert listing["webhook2_url"] == "https://backup.example.com/hook"
    r = await env.client.delete(p1, headers=h)
    assert r.status_code == 200 and r.json()["url"] is None
    assert (await env.client.get(p1, headers=h)).json()["url"] is None
    assert (await env.client.get(p2, headers=h)).json()["url"] == "https://backup.example.com/hook"
    for bad in (
        {"url": "ftp://x"},
        {"url": "http://192.168.1.1/x"},
        {"url": 5},
        {"uri": "https://x.y"},
    ):
        assert_error(await env.client.put(p1, json=bad, headers=h), 400, "invalid_request")
    assert_error(await env.client.put(p1, json={}, headers=h), 400, "missing_field")
