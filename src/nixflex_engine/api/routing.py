"""The request pipeline every ``/v1`` route shares: auth → rate limit → idempotency → handler.

A route handler is ``async def handler(call: ApiCall) -> Reply``; :func:`endpoint` wraps it
into a Starlette endpoint that

1. authenticates ``Authorization: Bearer key_id:key_secret`` (401 ``invalid_api_key`` /
   ``key_secret_required``; the secret is checked against its keyed hash in constant time);
2. takes a token from the key's read or write bucket (429 ``rate_limit_exceeded`` with
   ``Retry-After``; ``X-RateLimit-*`` headers on every response);
3. for POSTs with ``Idempotency-Key``, replays the first response of the same key and body
   (24 h), refuses the key with another body (409 ``idempotency_key_reused``), and lets a
   request run only once at a time per key;
4. runs the handler, turning :class:`ApiError` into the envelope.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from nixflex_engine.api.errors import ApiError, envelope, error_response, json_bytes
from nixflex_engine.api.metrics import Metrics
from nixflex_engine.api.ratelimit import RateLimiter
from nixflex_engine.calls.dialer import Dialer
from nixflex_engine.calls.outbound import OutboundCallService
from nixflex_engine.calls.recordings import RecordingStore
from nixflex_engine.config import Settings
from nixflex_engine.crypto import Crypto, DecryptionError
from nixflex_engine.store.repositories import ApiKeyRecord, Repositories

__all__ = [
    "ApiCall",
    "AuthCache",
    "AuthContext",
    "Reply",
    "Services",
    "authenticate",
    "endpoint",
    "parse_json_body",
]

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_MAX_JSON_DEPTH = 32


@dataclass(slots=True)
class Services:
    """Everything routes need, built once per app (see ``server.create_app``)."""

    settings: Settings
    repos: Repositories
    crypto: Crypto
    dialer: Dialer | None
    rate_limiter: RateLimiter
    metrics: Metrics
    outbound: OutboundCallService
    auth_cache: AuthCache
    recordings: RecordingStore


@dataclass(slots=True, frozen=True)
class AuthContext:
    key_id: str
    account_id: str


@dataclass(slots=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ApiCall:
    """One API request as a handler sees it."""

    request: Request
    services: Services
    auth: AuthContext | None
    _body: bytes | None = None

    @property
    def account_id(self) -> str:
        if self.auth is None:
            raise RuntimeError("route declared without authentication")
        return self.auth.account_id

    @property
    def query(self) -> dict[str, str]:
        return dict(self.request.query_params)

    def path_param(self, name: str) -> str:
        return str(self.request.path_params[name])

    async def body_bytes(self) -> bytes:
        if self._body is None:
            self._body = await self.request.body()
        return self._body

    async def json_object(self, *, allow_empty: bool = False) -> dict[str, Any]:
        """The body as a JSON object (400 ``invalid_json`` / ``invalid_request`` otherwise)."""
        raw = await self.body_bytes()
        if not raw.strip():
            if allow_empty:
                return {}
            raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
        value = parse_json_body(raw)
        if not isinstance(value, dict):
            raise ApiError(
                400, "invalid_request", "The request body must be a JSON object.", {"field": ""}
            )
        return value


Handler = Callable[[ApiCall], Awaitable[Reply]]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, bounded nesting, no NUL or lone surrogates."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from exc
    _check_json_value(value, 0)
    return value


def _check_json_value(value: Any, depth: int) -> None:
    if depth > _MAX_JSON_DEPTH:
        raise ApiError(
            400, "invalid_json", f"The request body nests deeper than {_MAX_JSON_DEPTH} levels."
        )
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        # 1e400 parses as inf, which no JSON column (nor JSON output) can hold
        raise ApiError(400, "invalid_json", "Numbers must be finite (1e400 overflows).")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise ApiError(400, "invalid_request", "Strings must not contain NUL characters.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400, "invalid_json", "The request body contains an unpaired surrogate."
        ) from exc


# --------------------------------------------------------------------------------------------
# auth


async def authenticate(request: Request, services: Services) -> AuthContext:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(
            401,
            "invalid_api_key",
            "Missing API key. Send 'Authorization: Bearer <key_id>:<key_secret>'.",
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "invalid_api_key",
            "Use 'Authorization: Bearer <key_id>:<key_secret>'.",
        )
    key_id, colon, secret = token.partition(":")
    if not colon or not secret:
        if key_id.startswith("nxf_") and len(key_id) <= 64:
            raise ApiError(
                401,
                "key_secret_required",
                "The API key needs its secret half: 'Bearer <key_id>:<key_secret>'.",
            )
        raise ApiError(401, "invalid_api_key", "Invalid API key.")
    if len(key_id) > 64 or len(secret) > 256:
        raise ApiError(401, "invalid_api_key", "Invalid API key.")
    crypto = services.crypto
    record = services.auth_cache.get(key_id)
    if record is None or not crypto.verify_secret(secret, record.secret_hash):
        # Not cached, or the secret does not match what we cached: read the key again (a
        # secret rotated on another node works here at once).
        record = await services.repos.accounts.get_key(key_id)
        if record is None:
            crypto.hash_secret(secret)  # same work as a miss-by-secret
            raise ApiError(401, "invalid_api_key", "Invalid API key.")
        services.auth_cache.put(record)
        if not crypto.verify_secret(secret, record.secret_hash):
            raise ApiError(401, "invalid_api_key", "Invalid API key.")
    if record.revoked:
        raise ApiError(401, "invalid_api_key", "Invalid API key.")
    return AuthContext(key_id=record.key_id, account_id=record.account_id)


class AuthCache:
    """Key records this node read recently, so most requests skip the key lookup.

    A record is used for at most ``ttl_seconds``. Rotating a key invalidates it here at once;
    other nodes sharing the database keep accepting the *old* secret for at most
    ``ttl_seconds`` (a *new* secret is never refused: a mismatch re-reads the key). 0 turns
    the cache off.
    """

    __slots__ = ("_clock", "_entries", "_ttl")

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, ApiKeyRecord]] = {}

    def get(self, key_id: str) -> ApiKeyRecord | None:
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        if self._clock() - entry[0] >= self._ttl:
            del self._entries[key_id]
            return None
        return entry[1]

    def put(self, record: ApiKeyRecord) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[record.key_id] = (self._clock(), record)

    def invalidate(self, key_id: str) -> None:
        self._entries.pop(key_id, None)


# --------------------------------------------------------------------------------------------
# the wrapper


def endpoint(
    handler: Handler,
    *,
    authenticated: bool = True,
    idempotent: bool = True,
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``handler`` in auth, rate limiting, idempotency and the error envelope."""

    async def run(request: Request) -> Response:
        services: Services = request.app.state.services
        rate_headers: dict[str, str] = {}
        try:
            auth = await authenticate(request, services) if authenticated else None
            if auth is not None:
                write = request.method not in ("GET", "HEAD", "OPTIONS")
                decision = services.rate_limiter.hit(auth.key_id, write=write)
                rate_headers = decision.headers()
                if not decision.allowed:
                    retry = decision.retry_after_seconds
                    raise ApiError(
                        429,
                        "rate_limit_exceeded",
                        f"Too many requests for this key; retry in {retry} s.",
                        {"limit": decision.limit, "retry_after": retry},
                        headers={"Retry-After": str(retry)},
                    )
            call = ApiCall(request=request, services=services, auth=auth)
            key = request.headers.get("idempotency-key")
            if auth is not None and idempotent and request.method == "POST" and key is not None:
                reply = await _idempotent(call, handler, key)
            else:
                reply = await handler(call)
        except ApiError as error:
            return error_response(error, rate_headers)
        headers = {**rate_headers, **reply.headers}
        if reply.status == 204:
            return Response(status_code=204, headers=headers)
        return Response(
            json_bytes(reply.body),
            status_code=reply.status,
            media_type="application/json",
            headers=headers,
        )

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _request_hash(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(
            json.loads(body.decode("utf-8")), sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256()
    digest.update(method.encode() + b" " + path.encode("utf-8", "surrogateescape") + b"\n")
    digest.update(canonical)
    return digest.hexdigest()


async def _idempotent(call: ApiCall, handler: Handler, key: str) -> Reply:
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError.invalid(
            "Idempotency-Key",
            "The Idempotency-Key header must be 1-255 printable ASCII characters.",
        )
    services = call.services
    repo = services.repos.idempotency
    account_id = call.account_id
    request_hash = _request_hash(
        call.request.method, call.request.url.path, await call.body_bytes()
    )
    existing = await repo.claim(account_id, key, request_hash)
    if existing is not None:
        if existing.request_hash != request_hash:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request.",
                {"idempotency_key": key},
            )
        if existing.response_status is None or existing.response_body_encrypted is None:
            raise ApiError(
                409,
                "idempotency_request_in_progress",
                "A request with this Idempotency-Key is still being processed; retry shortly.",
                {"idempotency_key": key, "retry_after": 1},
                headers={"Retry-After": "1"},
            )
        try:
            body = json.loads(services.crypto.decrypt(existing.response_body_encrypted))
        except (DecryptionError, ValueError) as exc:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "The stored response for this Idempotency-Key cannot be read; use a new key.",
                {"idempotency_key": key},
            ) from exc
        return Reply(existing.response_status, body, {"Idempotent-Replayed": "true"})
    try:
        try:
            reply = await handler(call)
        except ApiError as error:
            if error.status == 429 or (error.status >= 500 and error.code != "outbound_failed"):
                await repo.release(account_id, key)
                raise
            stored = json.dumps(envelope(error))
            await repo.complete(
                account_id, key, status=error.status, body_encrypted=services.crypto.encrypt(stored)
            )
            raise
    except ApiError:
        raise
    except BaseException:
        await repo.release(account_id, key)
        raise
    await repo.complete(
        account_id,
        key,
        status=reply.status,
        body_encrypted=services.crypto.encrypt(json.dumps(reply.body, default=str)),
    )
    return reply
