"""Run the sandbox (or any ASGI app) under uvicorn, in-process, on a free 127.0.0.1 port.

::

    async with serve_sandbox(deepgram=FakeDeepgram(), anthropic=FakeAnthropic()) as base_url:
        ...  # base_url == "http://127.0.0.1:54321"; ws:// for the Deepgram SDK

Also home of the *abort hook*: :class:`AbortHookMiddleware` puts a callable in each
connection's ASGI scope that drops the TCP connection without a close frame or a final chunk,
which is how the fakes simulate a network failure (:func:`abort_connection`). Servers that do
not expose their transport fall back to a websocket close 1011 / an exception mid-response.
"""

from __future__ import annotations

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
