"""Every combination of failures, against an oracle of the documented order.

Each request combines one choice per facet (agent, to_number, from_number, other fields,
account load); several steps may fail at once. The oracle below is api.md's list, read top
to bottom; the engine must answer with the first failing step for all 288 combinations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from nixflex_engine.calls.dialer import DialError

from .support import Account, Env, random_e164

AGENTS = ("ok", "missing", "unknown", "others", "no_phone", "no_creds")
TOS = ("ok", "invalid", "refused")
FROMS = ("none", "own", "not_owned", "invalid")
EXTRAS = ("none", "bad_type")
LOADS = ("free", "full")


def oracle(agent: str, to: str, from_: str, extra: str, load: str) -> tuple[int, str]:
    if agent == "missing":
        return 400, "missing_field"
    if to == "invalid" or from_ == "invalid":
        return 400, "invalid_phone_format"
    if extra == "bad_type":
        return 400, "invalid_request"
    if agent == "unknown":
        return 404, "agent_not_found"
    if agent == "others":
        return 403, "agent_not_owned"
    if from_ == "not_owned":
        return 403, "from_number_not_owned"
    if from_ == "none" and agent == "no_phone":
        return 400, "agent_no_phone"
    if from_ == "none" and agent == "no_creds":
        return 400, "twilio_credentials_missing"
    if load == "full":
        return 429, "concurrent_call_limit"
    if to == "refused":
        return 502, "outbound_failed"
    return 201, ""


@dataclass
class World:
    account: Account
    agents: dict[str, str]
    own_number: str


async def build_world(env: Env, limit: int, others_agent: str) -> World:
    account = await env.account(max_concurrent_calls=limit)
    ok = await env.agent(account)
    await env.number(account, ok["agent_id"])
    no_phone = await env.agent(account)
    no_creds = await env.agent(account)
    bare = await env.number(account, no_creds["agent_id"])
    r = await env.client.patch(
        f"/v1/phone-numbers/{bare.replace('+', '%2B')}",
        json={"twilio_account_sid": None, "twilio_auth_token": None},
        headers=account.headers,
    )
    assert r.status_code == 200
    own = await env.number(account, None)
    return World(
        account,
        {
            "ok": ok["agent_id"],
            "missing": "",
            "unknown": "agent_ffffffffffffffff",
            "others": others_agent,
            "no_phone": no_phone["agent_id"],
            "no_creds": no_creds["agent_id"],
        },
        own,
    )


async def test_every_combination_follows_the_documented_order(env: Env) -> None:
    stranger = await env.account()
    others_agent = (await env.agent(stranger))["agent_id"]
    await env.number(stranger, others_agent)
    others_number = random_e164()
    free = await build_world(env, 10_000, others_agent)
    full = await build_world(env, 1, others_agent)
    # fill the "full" account's only slot
    r = await env.client.post(
        "/v1/calls/outbound",
        json={"agent_id": full.agents["ok"], "to_number": "+15005550006"},
        headers=full.account.headers,
    )
    assert r.status_code == 201
    refused = random_e164("+1555")
    env.dialer.failures[refused] = DialError(21215, "Geo permission denied", 400)
    tos = {"ok": "+447386172392", "invalid": "07386172392", "refused": refused}
    # register the stranger's number under another Twilio account so it exists but is not ours
    tw = env.twilio.add_account()
    env.twilio.add_number(tw.sid, others_number)
    r = await env.client.post(
        "/v1/phone-numbers",
        json={
            "phone_number": others_number,
            "twilio_account_sid": tw.sid,
            "twilio_auth_token": tw.auth_token,
        },
        headers=stranger.headers,
    )
    assert r.status_code == 201

    mismatches = []
    for agent, to, from_, extra, load in itertools.product(AGENTS, TOS, FROMS, EXTRAS, LOADS):
        world = free if load == "free" else full
        body: dict[str, Any] = {"agent_id": world.agents[agent], "to_number": tos[to]}
        if from_ != "none":
            body["from_number"] = {
                "own": world.own_number,
                "not_owned": others_number,
                "invalid": "0744",
            }[from_]
        if extra == "bad_type":
            body["voicemail_action"] = "shout"
        r = await env.client.post("/v1/calls/outbound", json=body, headers=world.account.headers)
        expected = oracle(agent, to, from_, extra, load)
        got = (r.status_code, "" if r.status_code == 201 else r.json()["error"]["code"])
        if got != expected:
            mismatches.append(((agent, to, from_, extra, load), expected, got))
    assert mismatches == []
