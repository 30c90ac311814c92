"""ASGI middleware: request ids, the request-size cap, the catch-all 500, request metrics.

Written as plain ASGI (not ``BaseHTTPMiddleware``) so it adds microseconds, not a task per
request. It sits outside the router, so every response — including 404s, 405s and crashes —
gets an ``X-Request-Id`` header, and an unhandled exception becomes the error envelope (500
``internal_error``) with the stack trace only in the log.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nixflex_engine.api.errors import ApiError, error_response
from nixflex_engine.api.metrics import Metrics
from nixflex_engine.log import get_logger, log_event

__all__ = ["BodyTooLargeError", "RequestContextMiddleware"]

_log = get_logger(__name__)
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class BodyTooLargeError(ApiError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413,
            "payload_too_large",
            f"The request body is larger than {max_bytes} bytes.",
            {"max_bytes": max_bytes},
        )


def _too_large(max_bytes: int) -> ApiError:
    return BodyTooLargeError(max_bytes)


class RequestContextMiddleware:
    """Adds ``X-Request-Id``, enforces the body cap, turns crashes into the envelope."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        #: Per-path caps that replace ``max_body_bytes`` (a 10,000-recipient campaign).
        self.body_limits = dict(body_limits or {})
        # Request ids: a random per-process prefix plus a counter -- unique, and far cheaper
        # than a getrandom() syscall per request.
        self._id_prefix = "req_" + secrets.token_hex(6)
        self._id_counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope) or f"{self._id_prefix}{next(self._id_counter):012x}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        limit = self.body_limits.get(scope.get("path", ""), self.max_body_bytes)
        declared = _content_length(scope)
        try:
            if declared is not None and declared > limit:
                status = 413
                await error_response(_too_large(limit), {"X-Request-Id": request_id})(
                    scope, receive, send
                )
                return
            received = 0

            async def capped_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _too_large(limit)
                return message

            await self.app(scope, capped_receive, send_wrapper)
        except Exception as exc:
            status = 500
            if isinstance(exc, ApiError):
                status = exc.status
            else:
                log_event(
                    _log,
                    "http.unhandled_error",
                    level=logging.ERROR,
                    exc_info=exc,
                    request_id=request_id,
                    method=scope.get("method"),
                    path=scope.get("path"),
                )
            if not response_started:
                error = (
                    exc
                    if isinstance(exc, ApiError)
                    else ApiError(
                        500,
                        "internal_error",
                        "An unexpected error occurred. Retry later; quote the request id if "
                        "it persists.",
                        {"request_id": request_id},
                    )
                )
                await error_response(error, {"X-Request-Id": request_id})(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                scope.get("method", "?"), template, status, time.perf_counter() - started
            )


def _request_id(scope: Scope) -> str | None:
    """The caller's ``X-Request-Id`` if it is a sane token."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return str(candidate)
            break
    return None


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers", ())
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
