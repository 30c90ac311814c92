"""Run the sandbox (or any ASGI app) under uvicorn, in-process, on a free 127.0.0.1 port.

::

    async with serve_sandbox(deepgram=FakeDeepgram(), anthropic=FakeAnthropic()) as base_url:
        ...  # base_url == "http://127.0.0.1:54321"; ws:// for the Deepgram SDK

``python -m nixflex_engine.sandbox.serve --port 8099 --llm-ttft-ms 350 ...`` runs the same app in
its own process, every latency a flag (``--help``).

Also home of the *abort hook*: :class:`AbortHookMiddleware` puts a callable in each
connection's ASGI scope that drops the TCP connection without a close frame or a final chunk,
which is how the fakes simulate a network failure (:func:`abort_connection`). Servers that do
not expose their transport fall back to a websocket close 1011 / an exception mid-response.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from nixflex_engine.sandbox.fake_anthropic import FakeAnthropic
    from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram

__all__ = [
    "ABORT_SCOPE_KEY",
    "AbortHookMiddleware",
    "abort_connection",
    "build_from_args",
    "main",
    "serve_app",
    "serve_sandbox",
]

ABORT_SCOPE_KEY = "nixflex.sandbox.abort"


class AbortHookMiddleware:
    """Stores ``scope[ABORT_SCOPE_KEY]``: a callable that aborts the underlying transport.

    It must sit where ``send`` is still the server's own (uvicorn's protocol method), i.e. as a
    Starlette user middleware or outside the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            owner = getattr(send, "__self__", None)
            transport = getattr(owner, "transport", None)
            abort = getattr(transport, "abort", None)
            if callable(abort):
                scope[ABORT_SCOPE_KEY] = abort
        await self.app(scope, receive, send)


def abort_connection(scope: Scope) -> bool:
    """Drop the connection of ``scope`` abruptly; False if the server gave no way to."""
    abort: Callable[[], None] | None = scope.get(ABORT_SCOPE_KEY)
    if abort is None:
        return False
    abort()
    return True


@contextlib.asynccontextmanager
async def serve_app(
    app: ASGIApp, *, port: int = 0, log_level: str = "warning"
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port unless ``port``); yields ``http://127.0.0.1:N``.

    Binds the socket first and hands it to uvicorn, so there is no port race.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    bound_port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="off",
        ws_ping_interval=None,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the startup error
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{bound_port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.asynccontextmanager
async def serve_sandbox(
    *,
    deepgram: FakeDeepgram | None = None,
    anthropic: FakeAnthropic | None = None,
    **app_kwargs: Any,
) -> AsyncIterator[str]:
    """Build the sandbox app (see :func:`~nixflex_engine.sandbox.app.build_sandbox_app`) and
    serve it; yields the base URL. Point the SDKs at it: Anthropic ``base_url=url``, Deepgram
    ``production=url.replace("http", "ws", 1)``."""
    from nixflex_engine.sandbox.app import build_sandbox_app

    app = build_sandbox_app(deepgram=deepgram, anthropic=anthropic, **app_kwargs)
    async with serve_app(app) as url:
        yield url


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nixflex_engine.sandbox.serve",
        description="Serve the sandbox fakes (Deepgram STT/TTS, Anthropic) on one port.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--deepgram-key", default=None, help="required Deepgram key (default: any)")
    p.add_argument("--anthropic-key", default=None, help="required Anthropic key (default: any)")
    p.add_argument("--stt-final-delay-ms", type=float, default=150.0)
    p.add_argument("--stt-interim-delay-ms", type=float, default=30.0)
    p.add_argument("--stt-finalize-delay-ms", type=float, default=50.0)
    p.add_argument("--tts-ttfb-ms", type=float, default=120.0)
    p.add_argument("--tts-speed", type=float, default=4.0, help="x real time; 0 = at once")
    p.add_argument("--llm-ttft-ms", type=float, default=350.0)
    p.add_argument("--llm-tokens-per-s", type=float, default=60.0)
    p.add_argument("--log-level", default="warning")
    return p


def build_from_args(argv: list[str] | None = None) -> tuple[ASGIApp, argparse.Namespace]:
    """The sandbox app configured from command-line flags (see ``--help``)."""
    from nixflex_engine.sandbox.app import build_sandbox_app
    from nixflex_engine.sandbox.fake_anthropic import AnthropicSettings, FakeAnthropic
    from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings

    args = _parser().parse_args(argv)
    deepgram = FakeDeepgram(
        api_key=args.deepgram_key,
        listen=ListenSettings(
            final_delay_ms=args.stt_final_delay_ms,
            interim_delay_ms=args.stt_interim_delay_ms,
            finalize_delay_ms=args.stt_finalize_delay_ms,
        ),
        speak=SpeakSettings(ttfb_ms=args.tts_ttfb_ms, speed=args.tts_speed),
    )
    anthropic = FakeAnthropic(
        AnthropicSettings(
            ttft_ms=args.llm_ttft_ms,
            tokens_per_s=args.llm_tokens_per_s,
            api_key=args.anthropic_key,
        )
    )
    return build_sandbox_app(deepgram=deepgram, anthropic=anthropic), args


def main(argv: list[str] | None = None) -> None:
    """Run the sandbox in its own process (e.g. so a benchmark's fakes use another core)."""
    app, args = build_from_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="off")


if __name__ == "__main__":
    main()
