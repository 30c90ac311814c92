"""``make demo``: a whole simulated call through the engine's API, offline, no keys.

Starts the sandbox on 127.0.0.1 — a carrier speaking Twilio's REST API that plays each call
(status callbacks, async AMD, a callee on the media stream), fake Deepgram STT/TTS and fake
Anthropic, all speaking the real wire protocols — and the engine itself (SQLite under
``var/demo/``, dev mode) pointed at it by settings alone. Then, as a user's app would: creates an
API key, an agent (prompt with ``{patient_name}``, an opener, a ``webhook_url`` to a local
receiver), imports a number (verified against the carrier's REST API) and places
``POST /v1/calls/outbound`` with ``dynamic_vars`` and ``metadata``.

The person who answers says "Hello?", hears the opener, answers, interrupts a long reply, asks
who is calling, accepts and says goodbye; the agent ends the call with ``[END_CALL]``. Printed
live: the call's states (polled from ``GET /v1/calls/{id}``), each line as it is said, the
barge-in; then the final record — transcript, latency waterfall, recording, analysis — and the
``call.ended`` webhook.

Sandbox speech is a data signal shaped like speech (``sandbox/speech.py``): the fake STT decodes
the callee's audio back to text and the callee decodes what it heard of the agent, so the demo
shows what was really heard after a barge-in. With real keys and a public URL the same engine
places real calls (see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from nixflex_engine.api.keys import create_account_key
from nixflex_engine.calls.chain import CallContext, build_standard_chain
from nixflex_engine.calls.twilio_dialer import TwilioDialer
from nixflex_engine.calls.webhook_rules import SIGNATURE_HEADER, verify_webhook
from nixflex_engine.config import Settings
from nixflex_engine.frames import (
    Frame,
    InterruptionFrame,
    TranscriptEntryFrame,
    VoicemailResultFrame,
)
from nixflex_engine.pipeline import FrameDirection, FrameProcessor, Pipeline
from nixflex_engine.sandbox.app import build_sandbox_app
from nixflex_engine.sandbox.callee import (
    BargeIn,
    CalleeResult,
    Say,
    Silence,
    Step,
    UntilAgentSilent,
    UntilAgentSpeaks,
)
from nixflex_engine.sandbox.carrier import CarrierScript, SandboxCarrier, carrier_routes
from nixflex_engine.sandbox.fake_anthropic import AnthropicSettings, FakeAnthropic, Rule
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
from nixflex_engine.sandbox.serve import serve_app
from nixflex_engine.server import create_app

__all__ = ["DEMO_AGENT", "DemoResult", "main", "run_demo"]

DEEPGRAM_KEY = "sandbox-deepgram-key"
ANTHROPIC_KEY = "sandbox-anthropic-key"
FROM_NUMBER = "+15550100001"
TO_NUMBER = "+447386172392"
WEBHOOK_PATH = "/demo/webhook"
FINAL = ("completed", "busy", "no-answer", "failed", "canceled")

#: The agent, as ``POST /v1/agents`` receives it (``webhook_url`` is added at run time).
DEMO_AGENT: dict[str, Any] = {
    "name": "Anna (Riverside Clinic)",
    "system_prompt": (
        "You are Anna, a friendly scheduling assistant at Riverside Clinic. You are calling "
        "{patient_name} to confirm their appointment on {appointment_time}. Keep replies short."
    ),
    "welcome_message": "Hi, is this {patient_name}?",
    "voicemail_action": "hangup",
}
DYNAMIC_VARS = {"patient_name": "Sarah", "appointment_time": "Tuesday at 2pm"}
METADATA = {"internal_lead_id": "lead_abc123"}

#: The fake model's replies, matched on what the caller said last.
REPLIES = (
    Rule(
        r"what is it about",
        "I'm calling from Riverside Clinic about your appointment on Tuesday at 2pm. "
        "We wanted to confirm the time, and remind you to bring your insurance card and a "
        "list of the medicines you take.",
        times=1,
    ),
    Rule(
        r"who is this",
        "Sorry! This is Anna from Riverside Clinic. Does Tuesday at 2pm still work for you?",
        times=1,
    ),
    Rule(
        r"works",
        "Wonderful, you're all set for Tuesday at 2pm. Goodbye! [END_CALL]",
        times=1,
    ),
)

#: The person on the phone.
CALLEE_SCRIPT: list[Step] = [
    Silence(ms=300),
    Say("Hello?"),
    UntilAgentSilent(silence_ms=600),
    Say("Yes, speaking. What is it about?"),
    BargeIn("Sorry, who is this?", after_ms=2500),
    UntilAgentSpeaks(),
    UntilAgentSilent(silence_ms=600),
    Say("Yes, that works. Thank you!"),
    UntilAgentSilent(silence_ms=600),
    Silence(ms=3000),
]


class _Live:
    """Prints each state, transcript line and event as it happens."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()
        self._seen: set[int] = set()
        self._human = False

    def say(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.t0:6.2f}s] {text}", file=self.out, flush=True)

    def frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptEntryFrame) and frame.text.strip():
            if id(frame) in self._seen:
                return
            self._seen.add(id(frame))
            who = "agent " if frame.role == "agent" else "caller"
            cut = "  (interrupted: the caller heard only this)" if frame.interrupted else ""
            self.say(f"{who}: {frame.text}{cut}")
        elif isinstance(frame, VoicemailResultFrame) and frame.voicemail_detected is False:
            if not self._human:
                self._human = True
                self.say("a person answered — the agent speaks its opener")
        elif isinstance(frame, InterruptionFrame) and direction == FrameDirection.DOWNSTREAM:
            self.say("barge-in: the caller talks over the agent — stream cancelled, Twilio clear")


class _Tap(FrameProcessor):
    """Passes every frame on; shows the ones leaving the agent's chain."""

    def __init__(self, live: _Live) -> None:
        super().__init__(name="demo-tap")
        self._live = live

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self._live.frame(frame, direction)
        await self.push_frame(frame, direction)


class _Holder:
    """An ASGI app whose real app is set once the server's URL is known (it goes in the
    engine's settings as its public URL)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@dataclass(slots=True)
class DemoResult:
    """What the demo call left: the final record (``GET /v1/calls/{id}``), what the callee
    heard, the webhooks the local receiver got, and where the recording is."""

    record: dict[str, Any]
    heard: CalleeResult
    states: list[str] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    recording_file: Path | None = None


def _settings(var_dir: Path, public: str, sandbox_url: str) -> Settings:
    return Settings(
        dev_mode=True,
        var_dir=var_dir,
        database_url=f"sqlite+aiosqlite:///{var_dir / 'demo.db'}",
        recordings_dir=var_dir / "recordings",
        public_base_url=public,
        twilio_api_base_url=sandbox_url,
        deepgram_api_key=SecretStr(DEEPGRAM_KEY),
        deepgram_base_url=sandbox_url,
        anthropic_api_key=SecretStr(ANTHROPIC_KEY),
        anthropic_base_url=sandbox_url,
        allow_private_webhook_urls=True,  # the demo's receiver is on 127.0.0.1
    )


async def _poll_states(
    client: httpx.AsyncClient, call_id: str, headers: dict[str, str], live: _Live, seen: list[str]
) -> dict[str, Any]:
    while True:
        r = await client.get(f"/v1/calls/{call_id}", headers=headers)
        record: dict[str, Any] = r.json()
        status = record.get("status", "?")
        if not seen or seen[-1] != status:
            seen.append(status)
            live.say(
                f"call is {status}"
                + (f" ({record.get('ended_reason')})" if status in FINAL else "")
            )
        if status in FINAL:
            if record.get("ended_reason") == "agent_hangup":
                live.say(
                    "[END_CALL] in the agent's reply: the goodbye played, then the engine hung up"
                )
            return record
        await asyncio.sleep(0.1)


def _fresh_database(db_file: Path) -> None:
    """A fresh demo each time: a new database (recordings accumulate under the var dir)."""
    db_file.parent.mkdir(parents=True, exist_ok=True)
    db_file.unlink(missing_ok=True)


async def run_demo(*, out: TextIO = sys.stdout, var_dir: Path = Path("var/demo")) -> DemoResult:
    """Run the demo call through the API; returns its :class:`DemoResult`."""
    db_file = var_dir / "demo.db"
    await asyncio.to_thread(_fresh_database, db_file)
    live = _Live(out)
    deepgram = FakeDeepgram(
        api_key=DEEPGRAM_KEY,
        listen=ListenSettings(final_delay_ms=150),
        speak=SpeakSettings(ttfb_ms=120),
    )
    anthropic = FakeAnthropic(
        AnthropicSettings(ttft_ms=350, tokens_per_s=60, api_key=ANTHROPIC_KEY)
    )
    anthropic.rules.extend(REPLIES)
    carrier = SandboxCarrier()
    twilio_account = carrier.twilio.add_account()
    carrier.twilio.add_number(twilio_account.sid, FROM_NUMBER)
    carrier.set_script(TO_NUMBER, CarrierScript.answer(CALLEE_SCRIPT, ring_s=1.5, name="Sarah"))
    webhooks: list[dict[str, Any]] = []
    webhook_arrived = asyncio.Event()

    signing_secret: list[str] = []  # the account's key secret, once the key exists

    async def receive_webhook(request: Request) -> Response:
        body = await request.body()
        valid = verify_webhook(
            signing_secret[0] if signing_secret else "",
            body,
            request.headers.get(SIGNATURE_HEADER),
            now=int(time.time()),
        )
        webhooks.append({**json.loads(body), "_signature_valid": valid})
        webhook_arrived.set()
        return Response(status_code=204 if valid else 401)

    sandbox_app = build_sandbox_app(
        deepgram=deepgram,
        anthropic=anthropic,
        extra_routes=[
            *carrier_routes(carrier),
            Route(WEBHOOK_PATH, receive_webhook, methods=["POST"]),
        ],
    )

    def chain_with_tap(ctx: CallContext) -> FrameProcessor:
        # agent lines leave the chain upstream (from the context aggregator), caller lines
        # and events downstream: a tap at each end
        return Pipeline([_Tap(live), build_standard_chain(ctx), _Tap(live)], name="demo-agent")

    async with contextlib.AsyncExitStack() as stack:
        sandbox_url = await stack.enter_async_context(serve_app(sandbox_app))
        stack.push_async_callback(carrier.aclose)
        holder = _Holder()
        engine_url = await stack.enter_async_context(serve_app(holder))
        settings = _settings(var_dir, engine_url, sandbox_url)
        dialer = TwilioDialer(settings)
        stack.push_async_callback(dialer.aclose)
        app = create_app(settings, dialer=dialer, chain_factory=chain_with_tap)
        await stack.enter_async_context(app.router.lifespan_context(app))
        holder.app = app
        live.say(f"sandbox (carrier, Deepgram, Anthropic) on {sandbox_url}")
        live.say(f"engine on {engine_url} (SQLite {db_file}, dev mode)")

        services = app.state.services
        key = await create_account_key(services.repos, services.crypto, name="demo")
        headers = {"Authorization": f"Bearer {key.key_id}:{key.key_secret}"}
        signing_secret.append(key.key_secret)
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=engine_url, timeout=15))
        live.say(f"API key {key.key_id}:… created")
        agent_body = {**DEMO_AGENT, "webhook_url": sandbox_url + WEBHOOK_PATH}
        r = await client.post("/v1/agents", json=agent_body, headers=headers)
        r.raise_for_status()
        agent_id = r.json()["agent_id"]
        live.say(f"POST /v1/agents → {r.status_code} {agent_id}")
        r = await client.post(
            "/v1/phone-numbers",
            json={
                "phone_number": FROM_NUMBER,
                "agent_id": agent_id,
                "twilio_account_sid": twilio_account.sid,
                "twilio_auth_token": twilio_account.auth_token,
            },
            headers=headers,
        )
        r.raise_for_status()
        live.say(f"POST /v1/phone-numbers → {r.status_code} {FROM_NUMBER} (verified with Twilio)")
        body = {
            "agent_id": agent_id,
            "to_number": TO_NUMBER,
            "from_number": FROM_NUMBER,
            "dynamic_vars": DYNAMIC_VARS,
            "metadata": METADATA,
        }
        r = await client.post("/v1/calls/outbound", json=body, headers=headers)
        r.raise_for_status()
        call_id = r.json()["call_id"]
        live.say(f"POST /v1/calls/outbound → {r.status_code} {json.dumps(r.json())}")
        states: list[str] = []
        await asyncio.wait_for(_poll_states(client, call_id, headers, live, states), 120)
        carrier_call = await carrier.wait_ended(call_id, 30)
        # post-call analysis, then the webhook
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(webhook_arrived.wait(), 20)
        if webhooks:
            live.say(
                f"webhook {webhooks[-1].get('event', '?')} delivered to the agent's webhook_url"
            )
        r = await client.get(f"/v1/calls/{call_id}", headers=headers)
        record: dict[str, Any] = r.json()
        stored = await services.repos.calls.get(call_id)
        recording = Path(stored.recording_path) if stored and stored.recording_path else None
        assert carrier_call.callee is not None
        return DemoResult(record, carrier_call.callee, states, webhooks, recording)


def _waterfall(latency: dict[str, Any], out: TextIO) -> None:
    turns = latency.get("turns", [])
    if not turns:
        print("  (no agent reply was measured)", file=out)
        return
    scale = 40.0 / max(max((t.get("total_ms") or 0.0) for t in turns), 1.0)
    print(
        "  turn  endpointing   stt     llm_ttft  tts_ttfb  total   (caller stops → agent heard)",
        file=out,
    )
    for i, t in enumerate(turns, 1):

        def ms(name: str, turn: dict[str, Any] = t) -> str:
            v = turn.get(name)
            return "    -   " if v is None else f"{v:7.0f} "

        bar_parts: list[str] = []
        for name, ch in (("endpointing_ms", "e"), ("llm_ttft_ms", "L"), ("tts_ttfb_ms", "T")):
            v = t.get(name) or 0.0
            bar_parts.append(ch * max(1, round(v * scale)) if v else "")
        print(
            f"  {i:>4}  {ms('endpointing_ms')}  {ms('stt_ms')} {ms('llm_ttft_ms')}  "
            f"{ms('tts_ttfb_ms')} {ms('total_ms')}  {''.join(bar_parts)}",
            file=out,
        )
    p50, p95 = latency.get("p50", {}), latency.get("p95", {})
    print(f"  p50 total {p50.get('total_ms')} ms, p95 total {p95.get('total_ms')} ms", file=out)
    print("  bar: e = endpointing, L = LLM first token, T = TTS first byte", file=out)


def _report(result: DemoResult, out: TextIO) -> None:
    p: Callable[..., None] = lambda *a: print(*a, file=out)  # noqa: E731
    record = result.record
    p(
        f"\nCall {record['call_id']}: {record['status']}, ended_reason {record['ended_reason']}, "
        f"{record['duration_seconds']} s; metadata echoed: {json.dumps(record.get('metadata'))}"
    )
    p("\nTranscript (GET /v1/calls/{id}):")
    for line in record["transcript"]:
        flag = " [interrupted]" if line.get("interrupted") else ""
        p(f"  {line['timestamp_ms'] / 1000:6.2f}s  {line['role']:>6}: {line['text']}{flag}")
    p("\nWhat the callee heard, decoded from the audio it played:")
    for utterance in result.heard.heard_text().split("\n"):
        if utterance.strip():
            p(f"  {utterance}")
    p("\nTurn latency (ms):")
    _waterfall(record.get("latency") or {}, out)
    if result.recording_file is not None:
        p(
            f"\nRecording: {result.recording_file} ({record['recording_duration_seconds']} s, "
            f"caller left, agent right), served at {record.get('recording_url')}"
        )
    p("\nPost-call analysis:")
    p(f"  call_summary:     {record.get('call_summary')}")
    p(f"  caller_sentiment: {record.get('caller_sentiment')}")
    p(f"  call_successful:  {record.get('call_successful')}")
    p(f"  extracted_data:   {json.dumps(record.get('extracted_data'))}")
    if result.webhooks:
        hook = result.webhooks[-1]
        p(f"\nWebhook received: {hook.get('event')} for {hook.get('call_id') or ''}".rstrip())
        verdict = "valid" if hook.get("_signature_valid") else "INVALID"
        p(f"  X-Nixflex-Signature checked by the receiver with the key secret: {verdict}")
    else:
        p("\nWebhook: none received within 20 s")


def main(argv: list[str] | None = None) -> int:
    """Run the demo and print its report; exit status 0 when the call ended as scripted."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--var-dir", type=Path, default=Path("var/demo"))
    args = parser.parse_args(argv)
    print("nixflex-engine demo: one simulated call through the API, offline\n")
    result = asyncio.run(run_demo(var_dir=args.var_dir))
    _report(result, sys.stdout)
    ok = (
        result.record.get("ended_reason") == "agent_hangup" and not result.heard.protocol_violations
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
