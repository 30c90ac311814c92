"""The one error envelope: ``{"error": {type, code, message, doc_url, details}}``.

Raise :class:`ApiError` anywhere below a route; the routing layer and the exception handlers
turn it into the envelope. ``type`` follows from the HTTP status (api.md): 400
``invalid_request``, 401 ``authentication_error``, 403 ``permission_error``, 404 ``not_found``,
409 ``conflict``, 429 ``rate_limit_error``, 502 ``provider_error``, 500 ``server_error``.
Messages never carry stack traces, SQL or secrets.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

__all__ = ["DOC_URL", "ApiError", "envelope", "error_response", "json_bytes"]

DOC_URL = "https://docs.nixflex.com/api-reference/errors#{code}"

_TYPE_BY_STATUS = {
    400: "invalid_request",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    413: "invalid_request",
    415: "invalid_request",
    416: "invalid_request",
    429: "rate_limit_error",
    500: "server_error",
    502: "provider_error",
    503: "server_error",
}


class ApiError(Exception):
    """An API failure with its HTTP status, machine code, message and details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPE_BY_STATUS.get(self.status, "server_error" if self.status >= 500 else "error")

    # Constructors for the common cases ------------------------------------------------------

    @classmethod
    def invalid(cls, field: str, message: str, **details: Any) -> ApiError:
        return cls(400, "invalid_request", message, {"field": field, **details})

    @classmethod
    def missing(cls, field: str) -> ApiError:
        return cls(400, "missing_field", f"'{field}' is required.", {"field": field})

    @classmethod
    def not_found(cls, code: str, message: str, **details: Any) -> ApiError:
        return cls(404, code, message, details)


def envelope(error: ApiError) -> dict[str, Any]:
    return {
        "error": {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "doc_url": DOC_URL.format(code=error.code),
            "details": error.details,
        }
    }


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode(
        "utf-8"
    )


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    merged = dict(error.headers)
    if headers:
        merged.update(headers)
    return Response(
        json_bytes(envelope(error)),
        status_code=error.status,
        media_type="application/json",
        headers=merged,
    )
