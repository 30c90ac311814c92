"""The dialer interface: how the engine asks a carrier to place (and end) a call.

The outbound service calls :meth:`Dialer.dial` once the call record exists and a concurrency
slot is reserved. A dialer returns as soon as the carrier *accepted* the dial (Twilio's
``calls.create`` answering 201) — it never waits for the call itself — and raises
:class:`DialError` when the carrier refuses, carrying the carrier's own error
(``code``, ``message``, ``status``), which the API returns as ``details.twilio_error``.

:class:`InstantDialer` accepts every dial at once, in memory. It is the dialer of tests and
benchmarks (the API's own behaviour measured without a network hop), and it can be told to
refuse numbers, to exercise the 502 path.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from nixflex_engine.calls.twilio_dialer import CarrierCallStatus

__all__ = [
    "CallStatusSource",
    "DialError",
    "DialRequest",
    "DialResult",
    "Dialer",
    "InstantDialer",
    "TwilioCredentials",
]


@dataclass(slots=True, frozen=True)
class TwilioCredentials:
    """A Twilio account SID and auth token (the token never appears in ``repr``)."""

    account_sid: str
    auth_token: str = field(repr=False)


@dataclass(slots=True, frozen=True)
class DialRequest:
    """Everything a dialer needs to place one outbound call.

    ``call_ref`` is the engine's reference for the call, fixed before the dial (the public
    ``call_id`` becomes the carrier SID afterwards); put it in callback URLs/stream parameters
    to find the record (``CallRepository.get_by_ref``) even before the SID is stored.
    """

    call_ref: str
    account_id: str
    agent_id: str
    to_number: str
    from_number: str
    credentials: TwilioCredentials
    amd_enabled: bool = True
    record_call: bool = True
    max_call_duration_seconds: int = 300
    #: The call's one-time media-stream token, sent as a ``<Parameter>``; ``None``: the
    #: dialer generates one and returns it in :attr:`DialResult.stream_token`.
    stream_token: str | None = field(default=None, repr=False)


@dataclass(slots=True, frozen=True)
class DialResult:
    """The carrier accepted the dial. ``call_sid`` becomes the call's public id."""

    call_sid: str
    status: str = "queued"
    #: The stream token the dial used (the request's, or one the dialer generated).
    stream_token: str | None = field(default=None, repr=False)


class DialError(Exception):
    """The carrier refused the dial. ``code``/``message``/``status`` are the carrier's
    (e.g. Twilio 21211, "The 'To' number ... is not a valid phone number.", 400)."""

    def __init__(self, code: int | str | None, message: str, status: int | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def as_details(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "status": self.status}


@runtime_checkable
class Dialer(Protocol):
    """Places and ends calls with a carrier."""

    async def dial(self, request: DialRequest) -> DialResult:
        """Ask the carrier to place the call; raise :class:`DialError` if it refuses."""
        ...

    async def hangup(self, call_sid: str, credentials: TwilioCredentials) -> None:
        """End (or cancel, if not yet answered) a call; a call already gone is not an error."""
        ...


@runtime_checkable
class CallStatusSource(Protocol):
    """An optional dialer capability: the call as the carrier has it now (``None``: the
    carrier does not know it). Used to reconcile calls a crash left open."""

    async def call_status(
        self, call_sid: str, credentials: TwilioCredentials
    ) -> CarrierCallStatus | None: ...


class InstantDialer:
    """Accepts every dial immediately (no network), except numbers told to fail.

    ``failures`` maps a ``to_number`` to the :class:`DialError` the carrier would raise. Every
    accepted request is kept in :attr:`dialed` (in order) and every hangup in :attr:`hung_up`,
    so tests can assert what was (not) dialed. ``delay_seconds`` simulates carrier latency.
    """

    def __init__(
        self,
        failures: Mapping[str, DialError] | None = None,
        *,
        delay_seconds: float = 0.0,
    ) -> None:
        self.failures: dict[str, DialError] = dict(failures or {})
        self.delay_seconds = delay_seconds
        self.dialed: list[DialRequest] = []
        self.attempts: list[DialRequest] = []
        self.hung_up: list[str] = []

    async def dial(self, request: DialRequest) -> DialResult:
        self.attempts.append(request)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        failure = self.failures.get(request.to_number)
        if failure is not None:
            raise failure
        self.dialed.append(request)
        return DialResult(call_sid="CA" + secrets.token_hex(16))

    async def hangup(self, call_sid: str, credentials: TwilioCredentials) -> None:
        self.hung_up.append(call_sid)
