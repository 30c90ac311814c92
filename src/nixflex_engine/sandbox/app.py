"""One Starlette app serving every sandbox fake on one port, selected by URL path.

* ``/v1/listen``, ``/v1/speak`` (websocket, and ``POST /v1/speak``):
  :class:`~nixflex_engine.sandbox.fake_deepgram.FakeDeepgram`;
* ``POST /v1/messages``: :class:`~nixflex_engine.sandbox.fake_anthropic.FakeAnthropic`;
* ``/2010-04-01/...`` (Twilio REST), when given a ``twilio_state``:
  ``nixflex_engine.sandbox.fake_twilio.twilio_routes(state)``;
* ``GET /sandbox/health``: what is mounted.

So the engine is pointed at the sandbox by settings alone: the Deepgram websocket root, the
Anthropic base URL and the Twilio API base URL are all the one sandbox URL.

Twilio hook: pass ``twilio_state`` and the app mounts ``twilio_routes(twilio_state)`` from
:mod:`nixflex_engine.sandbox.fake_twilio` (imported only then, so this module works without
it); or pass any routes through ``extra_routes``. Routes are matched in order: the fakes'
first, then the Twilio ones, then the extras.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from nixflex_engine.sandbox.fake_anthropic import FakeAnthropic
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram
from nixflex_engine.sandbox.serve import AbortHookMiddleware

if TYPE_CHECKING:
    from nixflex_engine.sandbox.fake_twilio import FakeTwilio

__all__ = ["build_sandbox_app"]

_TWILIO_MODULE = "nixflex_engine.sandbox.fake_twilio"


def _twilio_routes(state: Any) -> list[BaseRoute]:
    module = importlib.import_module(_TWILIO_MODULE)
    routes: list[BaseRoute] = list(module.twilio_routes(state))
    return routes


def build_sandbox_app(
    *,
    deepgram: FakeDeepgram | None = None,
    anthropic: FakeAnthropic | None = None,
    twilio_state: FakeTwilio | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The sandbox app. ``deepgram``/``anthropic`` default to fresh fakes with default
    settings (keep a reference to configure them: pass your own). ``GET /sandbox/health``
    lists what is mounted."""
    deepgram = deepgram if deepgram is not None else FakeDeepgram()
    anthropic = anthropic if anthropic is not None else FakeAnthropic()
    routes: list[BaseRoute] = [*deepgram.routes(), *anthropic.routes()]
    if twilio_state is not None:
        routes.extend(_twilio_routes(twilio_state))
    routes.extend(extra_routes)
    mounted = sorted({getattr(r, "path", "") for r in routes if getattr(r, "path", "")})

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "routes": mounted})

    routes.append(Route("/sandbox/health", health, methods=["GET"]))
    return _SandboxApp(routes=routes)


class _SandboxApp(Starlette):
    """Starlette with :class:`AbortHookMiddleware` outermost, where ``send`` is still the
    server's own for HTTP too (Starlette's error middleware wraps it for HTTP requests)."""

    def build_middleware_stack(self) -> ASGIApp:
        return AbortHookMiddleware(super().build_middleware_stack())
