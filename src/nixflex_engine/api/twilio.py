"""Carrier-facing routes: Twilio's status and AMD callbacks, and the media-stream websocket.

No API key here: each request proves it comes from Twilio with ``X-Twilio-Signature``,
checked against the auth token of the call's number over the *public* URL (the one Twilio
used, rebuilt from ``public_base_url`` so the check holds behind a proxy). Anything else is
refused with 403 and changes nothing. The media stream must also present the call's
one-time token (see :mod:`nixflex_engine.calls.session`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from nixflex_engine.api.errors import ApiError, error_response
from nixflex_engine.calls.session import CallSessions
from nixflex_engine.config import Settings
from nixflex_engine.store.repositories import CallRecord
from nixflex_engine.transports.twilio_media import (
    StreamAuthRequest,
    TwilioMediaTransport,
    twilio_media_route,
)
from nixflex_engine.transports.twilio_protocol import StartEvent

__all__ = ["AMD_PATH", "MEDIA_PATH", "STATUS_PATH", "carrier_routes"]

STATUS_PATH = "/v1/twilio/status"
AMD_PATH = "/v1/twilio/amd"
MEDIA_PATH = "/v1/twilio/media"
_MAX_FORM_BYTES = 64 * 1024

_FORBIDDEN = ApiError(403, "invalid_signature", "The request is not signed by the carrier.")


def _public_url(settings: Settings, request: Request) -> str:
    query = request.url.query
    return settings.public_base_url + request.url.path + (f"?{query}" if query else "")


def carrier_routes(settings: Settings, sessions: Callable[[], CallSessions]) -> list[BaseRoute]:
    """The carrier routes; ``sessions`` returns the app's :class:`CallSessions` (built at
    start-up)."""

    async def read_form(request: Request) -> dict[str, str] | None:
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return dict(parse_qsl(text, keep_blank_values=True))

    Apply = Callable[[CallSessions, CallRecord, dict[str, str]], Awaitable[None]]

    def callback(apply: Apply) -> Callable[[Request], Awaitable[Response]]:
        """A signed form-post endpoint that hands the verified call to ``apply``."""

        async def endpoint(request: Request) -> Response:
            form = await read_form(request)
            if form is None:
                return error_response(_FORBIDDEN)
            record = await sessions().verify_callback(
                _public_url(settings, request),
                form,
                request.headers.get("x-twilio-signature"),
                ref=request.query_params.get("ref"),
            )
            if record is None:
                return error_response(_FORBIDDEN)
            await apply(sessions(), record, form)
            return Response(status_code=204)

        return endpoint

    async def authorize(request: StreamAuthRequest) -> bool:
        return await sessions().authorize_stream(request)

    async def on_stream(transport: TwilioMediaTransport, start: StartEvent) -> None:
        await sessions().on_stream(transport, start)

    return [
        Route(STATUS_PATH, callback(CallSessions.on_status), methods=["POST"]),
        Route(AMD_PATH, callback(CallSessions.on_amd), methods=["POST"]),
        twilio_media_route(
            MEDIA_PATH, on_stream, authorize=authorize, public_url=settings.public_ws_base_url
        ),
    ]
