"""``make demo-campaign``: a 20-recipient campaign through the whole engine, offline, no keys.

Starts the sandbox (the carrier that plays each call, fake Deepgram and fake Anthropic on one
127.0.0.1 port) and a real engine (its HTTP API, campaign dispatcher, carrier callbacks and
media streams on another), creates a campaign with ``POST /v1/calls/batch`` and prints its
progress live as the dispatcher dials: people who answer and talk to the agent, busy lines,
phones that ring out, voicemail greetings (hung up on by the agent), and retries — two busy
lines are free on the second try. The campaign allows 5 calls at once and retries no-answer,
busy and voicemail once, 3 seconds later. The carrier's clock runs 3x faster than real time.

A voicemail recipient whose retry also reaches the machine ends ``completed`` (the call
connected); its ``calls`` list the ``voicemail`` outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import httpx
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from nixflex_engine.api.keys import create_account_key
from nixflex_engine.calls.twilio_dialer import TwilioDialer
from nixflex_engine.config import Settings
from nixflex_engine.sandbox.app import build_sandbox_app
from nixflex_engine.sandbox.callee import Say, Silence, Step, UntilAgentSilent
from nixflex_engine.sandbox.carrier import CarrierScript, SandboxCarrier, carrier_routes
from nixflex_engine.sandbox.fake_anthropic import AnthropicSettings, FakeAnthropic, Rule
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
from nixflex_engine.sandbox.serve import serve_app
from nixflex_engine.server import create_app

__all__ = ["RECIPIENTS", "main", "run_demo_campaign"]

DG_KEY = "sandbox-deepgram-key"
ANTHROPIC_KEY = "sandbox-anthropic-key"
FROM = "+15550100000"
SPEED = 3.0
RETRY_DELAY_MINUTES = 0.05  # 3 seconds

PERSON: list[Step] = [
    Silence(300),
    Say("Hello?"),
    UntilAgentSilent(),
    Say("Yes, Tuesday works. Goodbye."),
    UntilAgentSilent(timeout_ms=10_000),
]

#: (number, name, what the carrier does: first try, then later tries)
RECIPIENTS: list[tuple[str, str, str, str]] = [
    *[
        (f"+1555020{i:04d}", name, "answer", "answer")
        for i, name in enumerate(["Sarah", "Omar", "Lena", "Kofi", "Mia", "Raj", "Ines", "Tom"])
    ],
    *[(f"+1555021{i:04d}", name, "busy", "busy") for i, name in enumerate(["Ada", "Ben", "Cleo"])],
    *[(f"+1555022{i:04d}", name, "busy", "answer") for i, name in enumerate(["Dev", "Eva"])],
    *[
        (f"+1555023{i:04d}", name, "no-answer", "no-answer")
        for i, name in enumerate(["Finn", "Gia", "Hugo"])
    ],
    *[
        (f"+1555024{i:04d}", name, "voicemail", "voicemail")
        for i, name in enumerate(["Ivy", "Jon", "Kai", "Luz"])
    ],
]


def _script(kind: str) -> CarrierScript:
    if kind == "answer":
        return CarrierScript.answer(PERSON, ring_s=1.0, hangup_after_s=20.0)
    if kind == "busy":
        return CarrierScript.busy()
    if kind == "no-answer":
        return CarrierScript.no_answer(ring_s=15.0)
    return CarrierScript.voicemail("en_personal_beep_short", ring_s=2.0)


class _Holder:
    """An ASGI app whose real app is set once the server's URL is known."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _line(out: TextIO, t0: float, text: str) -> None:
    print(f"  [{time.monotonic() - t0:6.1f}s] {text}", file=out, flush=True)


def _counts(c: dict[str, int]) -> str:
    return (
        f"queued {c['queued']:2d} | in progress {c['in_progress']:2d} | "
        f"completed {c['completed']:2d} | failed {c['failed']:2d}"
    )


async def run_demo_campaign(
    *, out: TextIO = sys.stdout, workdir: Path, timeout_s: float = 240.0
) -> dict[str, Any]:
    """Run the campaign to completion; returns its final ``GET /v1/calls/batch/{id}`` body."""
    t0 = time.monotonic()
    async with AsyncExitStack() as stack:
        carrier = SandboxCarrier(speed=SPEED)
        twilio = carrier.twilio.add_account()
        carrier.twilio.add_number(twilio.sid, FROM)
        later: dict[str, str] = {}
        for number, _, first, then in RECIPIENTS:
            carrier.set_script(number, _script(first))
            if then != first:
                later[number] = then
        anthropic = FakeAnthropic(
            AnthropicSettings(ttft_ms=150, tokens_per_s=120, api_key=ANTHROPIC_KEY)
        )
        anthropic.rules.append(
            Rule(r"tuesday works", "Great, see you Tuesday. Goodbye! [END_CALL]")
        )
        sandbox = build_sandbox_app(
            deepgram=FakeDeepgram(
                api_key=DG_KEY,
                listen=ListenSettings(final_delay_ms=100),
                speak=SpeakSettings(ttfb_ms=80),
            ),
            anthropic=anthropic,
            extra_routes=carrier_routes(carrier),
        )
        sandbox_url = await stack.enter_async_context(serve_app(sandbox))
        stack.push_async_callback(carrier.aclose)
        holder = _Holder()
        engine_url = await stack.enter_async_context(serve_app(holder))
        settings = Settings(
            dev_mode=True,
            var_dir=workdir / "var",
            database_url=f"sqlite+aiosqlite:///{workdir / 'engine.db'}",
            recordings_dir=workdir / "recordings",
            public_base_url=engine_url,
            twilio_api_base_url=sandbox_url,
            deepgram_base_url=sandbox_url,
            deepgram_api_key=SecretStr(DG_KEY),
            anthropic_base_url=sandbox_url,
            anthropic_api_key=SecretStr(ANTHROPIC_KEY),
            campaign_dispatch_interval_seconds=0.2,
        )
        dialer = TwilioDialer(settings)
        stack.push_async_callback(dialer.aclose)
        app = create_app(settings, dialer=dialer, analysis=False)
        await stack.enter_async_context(app.router.lifespan_context(app))
        holder.app = app
        _line(out, t0, f"sandbox carrier on {sandbox_url}, engine on {engine_url}")

        services = app.state.services
        key = await create_account_key(services.repos, services.crypto, name="demo")
        headers = {"Authorization": f"Bearer {key.key_id}:{key.key_secret}"}
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=engine_url, headers=headers, timeout=30)
        )
        r = await client.post(
            "/v1/agents",
            json={
                "name": "Anna",
                "system_prompt": "You are Anna from Riverside Clinic. Confirm {name}'s visit.",
                "welcome_message": "Hi {name}, this is Anna from Riverside Clinic.",
                "voicemail_action": "hangup",
            },
        )
        r.raise_for_status()
        agent_id = r.json()["agent_id"]
        r = await client.post(
            "/v1/phone-numbers",
            json={
                "phone_number": FROM,
                "agent_id": agent_id,
                "twilio_account_sid": twilio.sid,
                "twilio_auth_token": twilio.auth_token,
            },
        )
        r.raise_for_status()
        r = await client.post(
            "/v1/calls/batch",
            json={
                "agent_id": agent_id,
                "from_number": FROM,
                "name": "Tuesday confirmations",
                "prompt": "Confirm Tuesday's appointment with {name}.",
                "recipients": [
                    {"phone": number, "variables": {"name": name}}
                    for number, name, _, _ in RECIPIENTS
                ],
                "max_concurrent": 5,
                "retry": {
                    "max_attempts": 2,
                    "retry_delay_minutes": RETRY_DELAY_MINUTES,
                    "on": ["no-answer", "busy", "voicemail"],
                },
            },
        )
        r.raise_for_status()
        campaign = r.json()
        cid = campaign["campaign_id"]
        _line(
            out,
            t0,
            f"campaign {cid}: {campaign['recipients_total']} recipients, 5 at a time, "
            "no-answer/busy/voicemail retried once after 3 s",
        )
        names = {number: name for number, name, _, _ in RECIPIENTS}
        seen: dict[str, tuple[str, int, str | None]] = {}
        last_counts = ""
        deadline = time.monotonic() + timeout_s
        while True:
            r = await client.get(f"/v1/calls/batch/{cid}", params={"limit": 100})
            r.raise_for_status()
            body = r.json()
            for row in body["recipients"]:
                number = row["phone_number"]
                now = (row["state"], row["attempts"], row["last_outcome"])
                if seen.get(number) == now:
                    continue
                seen[number] = now
                who = f"{names[number]:<5} {number}"
                if row["state"] == "in_progress":
                    _line(out, t0, f"dialing   {who}  (attempt {row['attempts']})")
                elif row["state"] == "queued" and row["last_outcome"]:
                    _line(out, t0, f"{row['last_outcome']:<10}{who}  -> retry in 3 s")
                    if number in later:  # the line is free now
                        carrier.set_script(number, _script(later.pop(number)))
                elif row["state"] in ("completed", "failed"):
                    _line(
                        out,
                        t0,
                        f"{row['last_outcome']:<10}{who}  -> {row['state']} after "
                        f"{row['attempts']} attempt(s)",
                    )
            counts = _counts(body["counts"])
            if counts != last_counts:
                last_counts = counts
                _line(out, t0, f"progress: {counts}")
            if body["status"] == "completed":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"campaign still {body['status']}: {counts}")
            await asyncio.sleep(0.25)
        calls = await client.get("/v1/calls", params={"campaign_id": cid, "limit": 100})
        calls.raise_for_status()
        body["calls_placed"] = calls.json()["count"]
        return dict(body)


def _report(body: dict[str, Any], out: TextIO) -> None:
    p = print
    p(f"\nCampaign {body['campaign_id']} {body['status']}: {_counts(body['counts'])}", file=out)
    p(f"Calls placed: {body['calls_placed']} (one per attempt)\n", file=out)
    p("  recipient       state      attempts  outcomes", file=out)
    for row in body["recipients"]:
        outcomes = ", ".join(str(c["outcome"]) for c in row["calls"])
        p(f"  {row['phone_number']}  {row['state']:<10} {row['attempts']:>8}  {outcomes}", file=out)


def main(argv: list[str] | None = None) -> int:
    """Run the demo campaign; exit status 0 when it completed with the expected outcomes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    print("nixflex-engine campaign demo: 20 recipients through the sandbox carrier\n")
    with tempfile.TemporaryDirectory(prefix="nixflex-campaign-") as tmp:
        workdir = args.workdir or Path(tmp)
        body = asyncio.run(run_demo_campaign(workdir=workdir))
    _report(body, sys.stdout)
    counts = body["counts"]
    ok = (
        body["status"] == "completed"
        and counts["completed"] + counts["failed"] == len(RECIPIENTS)
        # the counters match the calls: one call per attempt, each attempt one call
        and body["calls_placed"] == sum(row["attempts"] for row in body["recipients"])
        and all(len(row["call_ids"]) == row["attempts"] for row in body["recipients"])
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
