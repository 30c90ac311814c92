"""The Twilio dialer: places and ends calls through the official ``twilio`` SDK (async client).

:meth:`TwilioDialer.dial` sends one ``calls.create_async`` (``wire-protocols.md`` §2.1):

* ``twiml`` — inline, so Twilio needs no TwiML fetch round trip::

      <Response><Connect><Stream url="wss://PUBLIC/v1/twilio/media">
        <Parameter name="call_ref" value="…"/><Parameter name="token" value="…"/>
      </Stream></Connect></Response>

  No query string on the stream URL (Twilio forbids it); the call's reference and its
  one-time stream token travel as ``<Parameter>``s and arrive in ``start.customParameters``.
* ``status_callback`` ``PUBLIC/v1/twilio/status?ref=CALL_REF`` with
  ``status_callback_event`` ``initiated ringing answered completed`` (repeated form keys).
  ``ref`` lets the engine find the call before it has stored the SID that ``create``
  returns (a fast ``initiated`` can overtake the 201); Twilio signs the URL with its query.
* when the agent has ``amd_enabled``: ``machine_detection="DetectMessageEnd"``,
  ``async_amd="true"`` (a *string*: the SDK sends Python ``True`` as ``True``) and
  ``async_amd_status_callback`` ``PUBLIC/v1/twilio/amd?ref=CALL_REF`` — the media stream
  starts at pickup and AMD runs beside it.
* ``time_limit`` = the agent's ``max_call_duration_seconds`` + ``time_limit_margin_seconds``
  (default 60 s, clamped to 1 … 86,400). The engine ends a call itself at its maximum duration
  with a short goodbye; the margin leaves room for that goodbye to play, for a voicemail
  message still being left, and for the hang-up's REST round trip, so Twilio's limit only
  fires when the engine could not end the call (a lost node): a safety net, never the
  normal path.
* ``record=False``: the engine records both sides itself.

``PUBLIC`` is this node's ``Settings.public_base_url`` (``wss://`` form for the stream): with
several nodes each dials with its own, so Twilio's stream and callbacks reach the node that
holds the call.

The one-time stream token is ``DialRequest.stream_token`` when the caller supplies it (the
call session derives it from the call reference), else a fresh ``secrets.token_urlsafe(32)``;
either way it is returned in ``DialResult.stream_token``. It is never logged.

:meth:`TwilioDialer.hangup` updates the call to ``completed`` — which Twilio applies to a
call in any live state — and falls back to ``canceled`` when Twilio answers 21220 (call not in
a state that allows it); 20404 means the call is already gone, which is success.
:meth:`TwilioDialer.call_status` fetches a call as Twilio has it (``None`` once Twilio does
not know it), for reconciling calls a crash left open.

Errors: the SDK raises ``TwilioRestException`` for the classic body and
``TwilioServiceException`` (a sibling, *not* a subclass) for RFC-9457 bodies; both are caught
as ``TwilioException`` and become :class:`~nixflex_engine.calls.dialer.DialError` with the
Twilio code, message and HTTP status. A connection failure or timeout becomes
``DialError(None, "carrier unreachable", None)``.

One SDK client (and aiohttp session) per Twilio account is kept and reused; :meth:`aclose`
closes them all (call it at shutdown). With ``Settings.twilio_api_base_url`` set, every
request's scheme and host are rewritten to it after the SDK built the URL (recipe B of
§5.1), so ``TWILIO_EDGE``/``TWILIO_REGION`` cannot break a local URL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from nixflex_engine.calls.dialer import DialError, DialRequest, DialResult, TwilioCredentials
from nixflex_engine.config import Settings
from nixflex_engine.log import get_logger, log_event

__all__ = [
    "AMD_PATH",
    "CALL_REF_PARAMETER",
    "MAX_TWIML_CHARS",
    "MEDIA_PATH",
    "REF_QUERY",
    "STATUS_CALLBACK_EVENTS",
    "STATUS_PATH",
    "TOKEN_PARAMETER",
    "CarrierCallStatus",
    "TwilioDialer",
    "build_twiml",
    "carrier_error",
]

_log = get_logger(__name__)
_sdk_log = get_logger(__name__ + ".sdk")

#: The engine's carrier-facing paths (served by ``nixflex_engine.api.twilio``).
STATUS_PATH: Final = "/v1/twilio/status"
AMD_PATH: Final = "/v1/twilio/amd"
MEDIA_PATH: Final = "/v1/twilio/media"
#: ``<Parameter>`` names in the TwiML ``<Stream>`` (``start.customParameters``).
CALL_REF_PARAMETER: Final = "call_ref"
TOKEN_PARAMETER: Final = "token"
#: Query parameter carrying the call reference on callback URLs.
REF_QUERY: Final = "ref"
STATUS_CALLBACK_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
#: Twilio's limit on inline TwiML.
MAX_TWIML_CHARS: Final = 4000
_MAX_TIME_LIMIT_SECONDS: Final = 86_400
_ALREADY_GONE: Final = 20404
_WRONG_STATE: Final = 21220


def build_twiml(stream_url: str, parameters: dict[str, str]) -> str:
    """``<Response><Connect><Stream url=…>`` with one ``<Parameter>`` per item (XML-escaped).

    Raises ``ValueError`` if ``stream_url`` has a query string or the TwiML exceeds
    Twilio's 4000 characters.
    """
    if urlsplit(stream_url).query:
        raise ValueError("the <Stream> url must not carry a query string; use <Parameter>s")
    response = VoiceResponse()
    stream = response.connect().stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    twiml = str(response.to_xml(xml_declaration=False))
    if len(twiml) > MAX_TWIML_CHARS:
        raise ValueError(f"TwiML is {len(twiml)} characters; Twilio allows {MAX_TWIML_CHARS}")
    return twiml


def carrier_error(exc: TwilioException) -> DialError:
    """The :class:`DialError` for an SDK exception (either error body shape)."""
    if isinstance(exc, TwilioServiceException):
        message = exc.detail or exc.title or "Twilio refused the request"
        return DialError(exc.code, str(message), int(exc.status) if exc.status else None)
    if isinstance(exc, TwilioRestException):
        # ``msg`` is "Unable to create record: <Twilio's message>"; keep Twilio's own words.
        msg = str(exc.msg or "")
        _, sep, rest = msg.partition(": ")
        message = rest if sep and msg.startswith("Unable to ") else msg
        return DialError(exc.code, message or f"HTTP {exc.status}", exc.status)
    return DialError(None, str(exc) or type(exc).__name__, None)


class _SdkHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client with two changes: with ``base``, every request goes to it
    (same path and query: recipe B of §5.1); and the SDK's per-request INFO lines (about ten
    a request) are only written when this module's logger is at DEBUG."""

    def __init__(self, base: str | None) -> None:
        super().__init__(logger=_sdk_log)
        self._base = urlsplit(base) if base else None

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self._base is not None:
            p = urlsplit(url)
            b = self._base
            url = urlunsplit((b.scheme, b.netloc, b.path.rstrip("/") + p.path, p.query, ""))
        return await super().request(method, url, *args, **kwargs)

    def log_request(self, kwargs: dict[str, Any]) -> None:
        if _sdk_log.isEnabledFor(logging.DEBUG):
            super().log_request(kwargs)

    def log_response(self, status_code: int, response: Any) -> None:
        if _sdk_log.isEnabledFor(logging.DEBUG):
            super().log_response(status_code, response)


@dataclass(slots=True, frozen=True)
class CarrierCallStatus:
    """A call as the carrier reports it: ``status`` (``queued`` … ``completed``, ``busy``,
    ``no-answer``, ``failed``, ``canceled``), ``duration_seconds`` once over, ``answered_by``
    when AMD ran."""

    status: str
    duration_seconds: int | None = None
    answered_by: str | None = None


class TwilioDialer:
    """:class:`~nixflex_engine.calls.dialer.Dialer` on Twilio's REST API (see the module doc).

    ``request_timeout_s`` bounds each REST request; ``time_limit_margin_seconds`` is added to
    the agent's maximum duration for Twilio's ``TimeLimit``.
    """

    __slots__ = (
        "_api_base_url",
        "_clients",
        "_closed",
        "_public_base_url",
        "_public_ws_base_url",
        "_request_timeout_s",
        "_retired",
        "time_limit_margin_seconds",
    )

    def __init__(
        self,
        settings: Settings,
        *,
        time_limit_margin_seconds: int = 60,
        request_timeout_s: float = 15.0,
    ) -> None:
        if time_limit_margin_seconds < 0:
            raise ValueError("time_limit_margin_seconds must not be negative")
        self._public_base_url = settings.public_base_url.rstrip("/")
        self._public_ws_base_url = settings.public_ws_base_url.rstrip("/")
        self._api_base_url = settings.twilio_api_base_url
        self._request_timeout_s = request_timeout_s
        self.time_limit_margin_seconds = time_limit_margin_seconds
        # account SID -> (auth token, client); a rotated token replaces the client
        self._clients: dict[str, tuple[str, Any]] = {}
        self._retired: list[Any] = []
        self._closed = False

    # --- what a dial sends --------------------------------------------------------------

    @property
    def stream_url(self) -> str:
        """The ``<Stream url>`` this node puts in its TwiML."""
        return self._public_ws_base_url + MEDIA_PATH

    def callback_url(self, path: str, call_ref: str) -> str:
        """A callback URL on this node for one call (``?ref=`` the call's reference)."""
        return f"{self._public_base_url}{path}?{REF_QUERY}={quote(call_ref, safe='')}"

    def time_limit(self, max_call_duration_seconds: int) -> int:
        """Twilio's ``TimeLimit`` for an agent's maximum duration."""
        limit = max_call_duration_seconds + self.time_limit_margin_seconds
        return max(1, min(_MAX_TIME_LIMIT_SECONDS, limit))

    def create_params(self, request: DialRequest, stream_token: str) -> dict[str, Any]:
        """The keyword arguments of ``calls.create_async`` for ``request``."""
        twiml = build_twiml(
            self.stream_url,
            {CALL_REF_PARAMETER: request.call_ref, TOKEN_PARAMETER: stream_token},
        )
        params: dict[str, Any] = {
            "to": request.to_number,
            "from_": request.from_number,
            "twiml": twiml,
            "status_callback": self.callback_url(STATUS_PATH, request.call_ref),
            "status_callback_event": list(STATUS_CALLBACK_EVENTS),
            "status_callback_method": "POST",
            "time_limit": self.time_limit(request.max_call_duration_seconds),
            "record": False,
        }
        if request.amd_enabled:
            params.update(
                machine_detection="DetectMessageEnd",
                async_amd="true",
                async_amd_status_callback=self.callback_url(AMD_PATH, request.call_ref),
                async_amd_status_callback_method="POST",
            )
        return params

    # --- the Dialer protocol ------------------------------------------------------------

    async def dial(self, request: DialRequest) -> DialResult:
        """Place the call; returns once Twilio accepted it (201)."""
        token = request.stream_token or secrets.token_urlsafe(32)
        params = self.create_params(request, token)
        client = self._client(request.credentials)
        try:
            async with asyncio.timeout(self._request_timeout_s):
                call = await client.calls.create_async(**params)
        except TwilioException as exc:
            error = carrier_error(exc)
            log_event(
                _log,
                "twilio.dial_refused",
                level=logging.WARNING,
                call_id=request.call_ref,
                twilio_code=error.code,
                http_status=error.status,
                message=error.message,
            )
            raise error from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log_event(
                _log,
                "twilio.unreachable",
                level=logging.WARNING,
                call_id=request.call_ref,
                error=type(exc).__name__,
            )
            raise DialError(None, "carrier unreachable", None) from exc
        sid = str(call.sid)
        status = str(call.status or "queued")
        log_event(
            _log,
            "twilio.dialed",
            call_id=request.call_ref,
            call_sid=sid,
            status=status,
            amd=request.amd_enabled,
        )
        return DialResult(call_sid=sid, status=status, stream_token=token)

    async def hangup(
        self, call_sid: str, credentials: TwilioCredentials, *, status: str | None = None
    ) -> None:
        """End the call: ``completed``, then ``canceled`` if Twilio says the state does not
        allow it (or only ``status`` when given). A call already gone (20404) is fine."""
        client = self._client(credentials)
        attempts = (status,) if status is not None else ("completed", "canceled")
        for i, attempt in enumerate(attempts):
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    await client.calls(call_sid).update_async(status=attempt)
            except TwilioException as exc:
                error = carrier_error(exc)
                if error.code == _ALREADY_GONE:
                    log_event(_log, "twilio.hangup_gone", call_id=call_sid)
                    return
                if error.code == _WRONG_STATE and i + 1 < len(attempts):
                    continue
                log_event(
                    _log,
                    "twilio.hangup_refused",
                    level=logging.WARNING,
                    call_id=call_sid,
                    twilio_code=error.code,
                    http_status=error.status,
                    message=error.message,
                )
                raise error from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log_event(
                    _log,
                    "twilio.unreachable",
                    level=logging.WARNING,
                    call_id=call_sid,
                    error=type(exc).__name__,
                )
                raise DialError(None, "carrier unreachable", None) from exc
            log_event(_log, "twilio.hung_up", call_id=call_sid, status=attempt)
            return

    async def call_status(
        self, call_sid: str, credentials: TwilioCredentials
    ) -> CarrierCallStatus | None:
        """The call as Twilio has it now (``None``: Twilio does not know it, 20404) — for
        reconciling calls a crash left open. Raises :class:`DialError` like :meth:`dial`."""
        client = self._client(credentials)
        try:
            async with asyncio.timeout(self._request_timeout_s):
                call = await client.calls(call_sid).fetch_async()
        except TwilioException as exc:
            error = carrier_error(exc)
            if error.code == _ALREADY_GONE:
                return None
            raise error from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DialError(None, "carrier unreachable", None) from exc
        duration = str(call.duration) if call.duration not in (None, "") else None
        return CarrierCallStatus(
            status=str(call.status),
            duration_seconds=int(duration) if duration and duration.isdigit() else None,
            answered_by=str(call.answered_by) if call.answered_by else None,
        )

    # --- clients ------------------------------------------------------------------------

    def _client(self, credentials: TwilioCredentials) -> Any:
        if self._closed:
            raise RuntimeError("the dialer is closed")
        cached = self._clients.get(credentials.account_sid)
        if cached is not None:
            token, client = cached
            if token == credentials.auth_token:
                return client
            self._retired.append(client)  # in-flight requests may still use it
        client = Client(
            credentials.account_sid,
            credentials.auth_token,
            http_client=_SdkHttpClient(self._api_base_url),
        )
        self._clients[credentials.account_sid] = (credentials.auth_token, client)
        return client

    @property
    def client_count(self) -> int:
        """SDK clients held (one per Twilio account)."""
        return len(self._clients)

    async def aclose(self) -> None:
        """Close every client's HTTP session. The dialer is unusable afterwards."""
        self._closed = True
        clients = [client for _, client in self._clients.values()] + self._retired
        self._clients.clear()
        self._retired.clear()
        for client in clients:
            try:
                await client.http_client.close()
            except Exception as exc:  # closing must not fail shutdown
                log_event(_log, "twilio.close_failed", level=logging.WARNING, error=repr(exc))
