"""Fixtures: the sandbox carrier and a small test engine, each on its own 127.0.0.1 port.

The test engine serves the carrier-facing paths the dialer puts in its TwiML and callback
URLs: ``POST /v1/twilio/status`` and ``/v1/twilio/amd`` (every request is kept, with whether
its ``X-Twilio-Signature`` verifies over the *public* URL) and the ``/v1/twilio/media``
websocket (``twilio_media_route`` with ``signature_authorizer`` and a token check, running a
trivial chain: input → greeter → output; the greeter says :data:`GREETING` once the stream
starts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from nixflex_engine.calls.dialer import DialRequest, TwilioCredentials
from nixflex_engine.calls.twilio_dialer import TwilioDialer
from nixflex_engine.config import Settings
from nixflex_engine.frames import Frame, MarkFrame, OutputAudioFrame, TransportStartedFrame
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
    RunResult,
)
from nixflex_engine.sandbox import speech
from nixflex_engine.sandbox.carrier import SandboxCarrier, carrier_routes
from nixflex_engine.sandbox.fake_twilio import FakeTwilioAccount
from nixflex_engine.sandbox.serve import serve_app
from nixflex_engine.transports.twilio_media import (
    StartEvent,
    TwilioMediaTransport,
    signature_authorizer,
    twilio_media_route,
)

SPEED = 10.0
FROM = "+15550100000"
GREETING = "Hello from the engine."


class Greeter(FrameProcessor):
    """Says :data:`GREETING` when the stream starts (a stand-in for the agent chain)."""

    def __init__(self) -> None:
        super().__init__(name="greeter")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, TransportStartedFrame) and direction == DOWNSTREAM:
            await self.push_frame(OutputAudioFrame(audio=speech.synthesize_mulaw(GREETING)))
            await self.push_frame(MarkFrame(name="greeting"))


@dataclass(slots=True)
class Received:
    """One callback the test engine received."""

    path: str
    public_url: str
    form: dict[str, str]
    signature: str | None
    valid: bool


@dataclass(slots=True)
class Stream:
    start: StartEvent
    result: RunResult


@dataclass(slots=True)
class EngineSide:
    """The engine side: what Twilio (the carrier) sent it."""

    public_base_url: str
    auth_tokens: dict[str, str]
    expected_tokens: set[str] = field(default_factory=set)
    callbacks: list[Received] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)
    started: asyncio.Queue[StartEvent] = field(default_factory=asyncio.Queue)
    # set by the fixture: end the stream from the engine's side right after the greeting
    close_after_greeting: bool = False
    # seconds the AMD route takes to answer
    amd_delay_s: float = 0.0

    def statuses(self, call_sid: str) -> list[str]:
        return [
            c.form["CallStatus"]
            for c in self.callbacks
            if c.path == "/v1/twilio/status" and c.form.get("CallSid") == call_sid
        ]


@dataclass(slots=True)
class World:
    carrier: SandboxCarrier
    carrier_url: str
    engine: EngineSide
    account: FakeTwilioAccount
    dialer: TwilioDialer
    settings: Settings

    @property
    def credentials(self) -> TwilioCredentials:
        return TwilioCredentials(self.account.sid, self.account.auth_token)

    def request(self, to: str, **kw: Any) -> DialRequest:
        kw.setdefault("call_ref", "ref-" + to.lstrip("+"))
        return DialRequest(
            account_id="acct_1",
            agent_id="agent_1",
            to_number=to,
            from_number=FROM,
            credentials=self.credentials,
            **kw,
        )


def engine_app(engine: EngineSide, *, public_ws_base_url: str, speed: float) -> Starlette:
    async def callback(request: Request) -> Response:
        query = request.url.query
        public = engine.public_base_url + request.url.path + (f"?{query}" if query else "")
        signature = request.headers.get("x-twilio-signature")
        if request.method == "GET":  # parameters in the query, signed as part of the URL
            form = dict(parse_qsl(query, keep_blank_values=True))
            signed: dict[str, str] = {}
        else:
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            signed = form
        token = engine.auth_tokens.get(form.get("AccountSid", ""), "")
        valid = bool(signature) and RequestValidator(token).validate(public, signed, signature)
        if request.url.path == "/v1/twilio/amd" and engine.amd_delay_s:
            await asyncio.sleep(engine.amd_delay_s)
        engine.callbacks.append(Received(request.url.path, public, form, signature, valid))
        return Response(status_code=204 if valid else 403)

    async def check_token(params: Any) -> bool:
        return params.get("token") in engine.expected_tokens

    async def on_stream(transport: TwilioMediaTransport, start: StartEvent) -> None:
        engine.started.put_nowait(start)
        task = PipelineTask(
            Pipeline([transport.input(), Greeter(), transport.output()]),
            call_id=start.call_sid,
        )
        if engine.close_after_greeting:

            async def close_soon() -> None:
                await asyncio.sleep(0.3)
                await task.cancel("agent_hangup")

            closer = asyncio.ensure_future(close_soon())
            result = await task.run()
            closer.cancel()
        else:
            result = await task.run()
        engine.streams.append(Stream(start, result))

    async def authorize(request: Any) -> bool:
        token = engine.auth_tokens.get(request.start.account_sid, "")
        checker = signature_authorizer(token, check_parameters=check_token)
        return await checker(request)

    return Starlette(
        routes=[
            Route("/v1/twilio/status", callback, methods=["POST", "GET"]),
            Route("/v1/twilio/amd", callback, methods=["POST"]),
            twilio_media_route(
                "/v1/twilio/media",
                on_stream,
                authorize=authorize,
                public_url=public_ws_base_url,
                playout_speed=speed,
            ),
        ]
    )


WorldFactory = Callable[..., Any]


@pytest.fixture
async def make_world() -> AsyncIterator[WorldFactory]:
    """``await make_world(public_base_url=None, speed=SPEED, margin=60)`` → :class:`World`.

    ``public_base_url``: the engine's public URL (default: its real 127.0.0.1 URL); another
    one is mapped to the real one for the carrier (``url_map``), like a proxy in front.
    """
    async with AsyncExitStack() as stack:

        async def build(
            *, public_base_url: str | None = None, speed: float = SPEED, margin: int = 60
        ) -> World:
            carrier = SandboxCarrier(speed=speed)
            account = carrier.twilio.add_account()
            carrier.twilio.add_number(account.sid, FROM)
            carrier_url = await stack.enter_async_context(
                serve_app(Starlette(routes=carrier_routes(carrier)))
            )
            engine = EngineSide(public_base_url="", auth_tokens={account.sid: account.auth_token})
            # the engine's public URL must be known to build its app: reserve the port first
            holder: dict[str, Starlette] = {}

            async def app(scope: Any, receive: Any, send: Any) -> None:
                await holder["app"](scope, receive, send)

            real_url = await stack.enter_async_context(serve_app(app))
            public = public_base_url or real_url
            if public_base_url:
                carrier.url_map[public_base_url] = real_url  # covers wss:// too
            engine.public_base_url = public
            stack.push_async_callback(carrier.aclose)  # first out: before the servers stop
            settings = Settings(public_base_url=public, twilio_api_base_url=carrier_url)
            holder["app"] = engine_app(
                engine, public_ws_base_url=settings.public_ws_base_url, speed=speed
            )
            dialer = TwilioDialer(settings, time_limit_margin_seconds=margin)
            stack.push_async_callback(dialer.aclose)
            return World(carrier, carrier_url, engine, account, dialer, settings)

        yield build
