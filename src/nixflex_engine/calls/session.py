"""The call lifecycle on one node: carrier callbacks, the media stream, and the final record.

A call moves ``queued → ringing → in-progress → one final state``. Three things drive it, in
any order and any number of times:

- Twilio's **status callbacks** (:meth:`CallSessions.on_status`): ringing, answered, and the
  final ``completed``/``busy``/``no-answer``/``failed``/``canceled``. A call that never
  connected ends here, without a pipeline.
- Twilio's **async AMD callback** (:meth:`CallSessions.on_amd`): recorded on the call and
  handed to the live pipeline as an ``AMDResultFrame``.
- The **media stream** (:meth:`CallSessions.authorize_stream`, :meth:`CallSessions.on_stream`):
  authorized by its one-time token, it runs the agent's chain (the standard one from
  :mod:`~nixflex_engine.calls.chain`) with :func:`~nixflex_engine.calls.run.run_call`; when
  the run ends the session hangs up through the dialer if the agent ended the call, and writes
  the final record: status, ``ended_reason``, times, transcript, latency, voicemail verdict,
  recording.

Every path ends in :meth:`CallRepository.finish_call`, which releases the concurrency slot
exactly once however many paths race to it. Then ``after_call`` runs (post-call analysis and
webhooks hang off it).

Calls a crash left open are reconciled with the carrier (:meth:`CallSessions.reconcile`, run
at start-up and then periodically by :meth:`CallSessions.run_maintenance`): a node heartbeats
the calls it holds (their ``updated_at``), so a call nothing has touched for
``stale_after_s`` (``ring_stale_after_s`` while queued or ringing, which can legitimately last
as long as the carrier rings) and that is not live here was lost with its node. The carrier
is asked how the call stands: over → finished with the carrier's status (a call that was
connected ends as ``error``: its session was lost); still up → hung up and finished as
``error``; unknown to the carrier → ``failed``. The slot is released and ``after_call`` runs.

The per-call stream token is a keyed hash of the call's reference (so any node with the same
key can check it), used once: a reused token, a token for a call already over, or a call that
is not in flight closes the socket.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from twilio.request_validator import RequestValidator

from nixflex_engine.calls.chain import (
    AgentProfile,
    CallContext,
    ProviderClients,
    build_standard_chain,
)
from nixflex_engine.calls.dialer import CallStatusSource, Dialer, DialError, TwilioCredentials
from nixflex_engine.calls.factories import ChainFactory, resolve_chain_factory
from nixflex_engine.calls.run import CallOutcome, run_call
from nixflex_engine.calls.tokens import media_stream_token
from nixflex_engine.config import Settings
from nixflex_engine.crypto import Crypto
from nixflex_engine.frames import AMDResultFrame, EndReason
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline import PipelineTask
from nixflex_engine.processors.prompt import HistoryEntry
from nixflex_engine.store.repositories import (
    ACTIVE_CALL_STATUSES,
    FINAL_CALL_STATUSES,
    CallRecord,
    Repositories,
    utcnow,
)
from nixflex_engine.transports.twilio_media import StreamAuthRequest, TwilioMediaTransport
from nixflex_engine.transports.twilio_protocol import StartEvent

__all__ = [
    "AfterCall",
    "CallSessions",
    "ChainFactory",
    "StreamRefused",
]

_log = get_logger("nixflex_engine.calls")

#: Runs after a call's record is final: (record, outcome of the media session or None).
AfterCall = Callable[[CallRecord, CallOutcome | None], Awaitable[None]]

#: Parameter names in the TwiML ``<Stream>`` (and so in the ``start`` message).
CALL_REF_PARAMETER = "call_ref"
TOKEN_PARAMETER = "token"

#: Reasons after which the engine, not the caller, ended the call: hang up the carrier leg.
_ENGINE_ENDED = {
    EndReason.AGENT_HANGUP.value,
    EndReason.VOICEMAIL.value,
    EndReason.SILENCE_TIMEOUT.value,
    EndReason.MAX_DURATION.value,
    EndReason.ERROR.value,
}
_NEVER_CONNECTED = {"busy", "no-answer", "failed", "canceled"}


class StreamRefused(Exception):
    """A media stream was refused; ``reason`` says why (logged, never sent to Twilio)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _LiveCall:
    call_id: str
    task: PipelineTask | None = None
    pending_amd: list[AMDResultFrame] = field(default_factory=list)
    carrier_ended: str | None = None  # final status the carrier reported while live
    in_session: bool = False  # a media session runs (or is starting) for the call here


class CallSessions:
    """Owns the calls in flight on this node."""

    def __init__(
        self,
        *,
        settings: Settings,
        repos: Repositories,
        crypto: Crypto,
        dialer: Dialer | None,
        chain_factory: ChainFactory = build_standard_chain,
        after_call: AfterCall | None = None,
        stale_after_s: float = 30.0,
        ring_stale_after_s: float = 150.0,
    ) -> None:
        if stale_after_s <= 0 or ring_stale_after_s <= 0:
            raise ValueError("stale_after_s and ring_stale_after_s must be positive")
        self._stale_after_s = stale_after_s
        self._ring_stale_after_s = ring_stale_after_s
        self._settings = settings
        self._repos = repos
        self._crypto = crypto
        self._dialer = dialer
        self._chain_factory = chain_factory
        self._after_call = after_call
        self._live: dict[str, _LiveCall] = {}
        self._used_tokens: set[str] = set()
        self._sessions = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Built on the first call and shared by every call of this node: an SDK client costs
        # tens of ms of CPU to build, which would stall every other live call's event loop.
        self._clients: ProviderClients | None = None

    def _provider_clients(self) -> ProviderClients:
        if self._clients is None:
            self._clients = ProviderClients.from_settings(self._settings)
        return self._clients

    # --- tokens and signatures ----------------------------------------------------------

    def stream_token(self, call_ref: str) -> str:
        """The one-time media-stream token for a call (a keyed hash of its reference)."""
        return media_stream_token(self._crypto, call_ref)

    async def _credentials(self, record: CallRecord) -> TwilioCredentials | None:
        number = await self._repos.phone_numbers.get(record.from_number)
        if (
            number is None
            or number.account_id != record.account_id
            or not number.twilio_account_sid
            or not number.twilio_auth_token_encrypted
        ):
            return None
        token = self._crypto.decrypt(number.twilio_auth_token_encrypted)
        return TwilioCredentials(account_sid=number.twilio_account_sid, auth_token=token)

    async def _find(self, params: Mapping[str, str], ref: str | None) -> CallRecord | None:
        sid = params.get("CallSid", "")
        record = await self._repos.calls.get(sid) if sid else None
        if record is None and ref:
            record = await self._repos.calls.get_by_ref(ref)
        if record is not None and sid and record.call_id not in (sid, record.call_ref):
            return None
        return record

    async def verify_callback(
        self,
        url: str,
        params: Mapping[str, str],
        signature: str | None,
        *,
        ref: str | None = None,
    ) -> CallRecord | None:
        """The call a carrier callback is about, if its ``X-Twilio-Signature`` is valid.

        ``url`` is the public URL Twilio posted to (``public_base_url`` + path and query),
        so the check holds behind a proxy. Returns None (nothing changes) when the call is
        unknown or the signature does not match the number's auth token. ``ref`` (the
        callback URL's ``ref`` query parameter) finds a call whose SID is not stored yet.
        """
        record = await self._find(params, ref)
        if record is None or not signature:
            return None
        creds = await self._credentials(record)
        if creds is None:
            return None
        if not RequestValidator(creds.auth_token).validate(url, dict(params), signature):
            return None
        return record

    # --- carrier callbacks --------------------------------------------------------------

    async def on_status(self, record: CallRecord, params: Mapping[str, str]) -> None:
        """Apply a (verified) status callback. Idempotent; tolerates any order."""
        status = params.get("CallStatus", "")
        call_id = record.call_id
        log_event(_log, "call.status_callback", call_id=call_id, carrier_status=status)
        if status == "ringing":
            if record.status == "queued":
                await self._repos.calls.update_status(call_id, "ringing")
        elif status in ("in-progress", "answered"):
            if record.status in ("queued", "ringing"):
                await self._repos.calls.update_status(
                    call_id, "in-progress", answered_at=record.answered_at or utcnow()
                )
        elif status in FINAL_CALL_STATUSES:
            live = self._live.get(call_id)
            if live is not None and not live.in_session:
                # Only an early AMD result was waiting for a stream that never came.
                self._live.pop(call_id, None)
                live = None
            if live is not None:
                # The media session finishes the record; tell it the line is gone.
                live.carrier_ended = status
                if live.task is not None:
                    await live.task.cancel(EndReason.CALLER_HANGUP.value)
                return
            await self._finish_without_media(record, status, params)

    async def _finish_without_media(
        self, record: CallRecord, status: str, params: Mapping[str, str]
    ) -> None:
        duration = _int(params.get("CallDuration"))
        fields: dict[str, Any] = {"ended_at": utcnow()}
        if status == "completed":
            # Answered, but no media session ran here (or it was lost): the caller's side
            # ended it, or the stream never came.
            reason = (
                EndReason.CALLER_HANGUP.value
                if record.status == "in-progress" or (duration or 0) > 0
                else EndReason.ERROR.value
            )
            if duration is not None:
                fields["duration_seconds"] = float(duration)
            if record.answered_at is None and duration:
                fields["answered_at"] = fields["ended_at"]
        else:
            reason = status
        if await self._repos.calls.finish_call(record.call_id, status, reason, **fields):
            log_event(
                _log, "call.ended", call_id=record.call_id, status=status, ended_reason=reason
            )
            await self._run_after_call(record.call_id, None)

    async def on_amd(self, record: CallRecord, params: Mapping[str, str]) -> None:
        """Apply a (verified) async AMD callback: store it, and tell the live pipeline."""
        answered_by = params.get("AnsweredBy", "")
        if not answered_by:
            return
        duration = _float(params.get("MachineDetectionDuration"))
        frame = AMDResultFrame(answered_by=answered_by, machine_detection_duration_ms=duration)
        log_event(_log, "call.amd_result", call_id=record.call_id, answered_by=answered_by)
        if record.status in ACTIVE_CALL_STATUSES:
            await self._repos.calls.update_call(record.call_id, amd_result=answered_by)
        live = self._live.get(record.call_id)
        if live is None:
            if record.status not in ACTIVE_CALL_STATUSES:
                return  # a late result for a call already over: nothing to tell
            live = self._live.setdefault(record.call_id, _LiveCall(record.call_id))
        if live.task is not None:
            await live.task.queue_frame(frame)
        else:
            live.pending_amd.append(frame)

    # --- the media stream ---------------------------------------------------------------

    async def authorize_stream(self, request: StreamAuthRequest) -> bool:
        """Whether a media stream may run: signature, one-time token, call in flight."""
        try:
            await self._check_stream(request)
        except StreamRefused as refused:
            log_event(
                _log,
                "call.stream_refused",
                level=logging.WARNING,
                call_id=request.start.call_sid,
                reason=refused.reason,
            )
            return False
        return True

    async def _check_stream(self, request: StreamAuthRequest) -> None:
        params = request.custom_parameters
        ref, token = params.get(CALL_REF_PARAMETER, ""), params.get(TOKEN_PARAMETER, "")
        if not ref or not token:
            raise StreamRefused("missing call reference or token")
        if not hmac.compare_digest(self.stream_token(ref), token):
            raise StreamRefused("unknown token")
        if token in self._used_tokens:
            raise StreamRefused("token already used")
        record = await self._repos.calls.get_by_ref(ref)
        if record is None:
            raise StreamRefused("unknown call")
        if record.status not in ACTIVE_CALL_STATUSES:
            raise StreamRefused(f"call is {record.status}")
        if request.start.call_sid and request.start.call_sid != record.call_id:
            raise StreamRefused("stream is for another call")
        creds = await self._credentials(record)
        if creds is None:
            raise StreamRefused("no carrier credentials for the call's number")
        signature = request.headers.get("x-twilio-signature")
        if not signature or not RequestValidator(creds.auth_token).validate(
            request.url, {}, signature
        ):
            raise StreamRefused("bad signature")
        self._used_tokens.add(token)

    async def on_stream(self, transport: TwilioMediaTransport, start: StartEvent) -> None:
        """Run the call's conversation on an authorized stream and finish its record."""
        ref = start.custom_parameters.get(CALL_REF_PARAMETER, "")
        record = await self._repos.calls.get_by_ref(ref)
        if record is None:  # deleted in the meantime
            return
        call_id = record.call_id
        if record.status in ("queued", "ringing"):
            updated = await self._repos.calls.update_status(
                call_id, "in-progress", answered_at=utcnow()
            )
            record = updated or record
        answered_at = record.answered_at or utcnow()
        live = self._live.setdefault(call_id, _LiveCall(call_id))
        live.in_session = True
        outcome: CallOutcome | None = None
        self._sessions += 1
        self._idle.clear()
        try:
            agent = await self._repos.agents.get(record.agent_id)
            profile = AgentProfile.from_config(agent.config if agent else {})
            ctx = CallContext(
                call_id=call_id,
                agent=profile,
                transport=transport,
                settings=self._settings,
                dynamic_vars=dict(record.dynamic_vars or {}),
                call_prompt=record.prompt,
                history=await self._history(record, profile),
                voicemail_action=record.voicemail_action or None,  # type: ignore[arg-type]
                voicemail_message=record.voicemail_message,
                clients=self._provider_clients(),
            )
            recording = (
                self._settings.recordings_dir / f"{call_id}.wav" if profile.record_call else None
            )
            # The agent's own chain factory (if it names one the operator allows), else the
            # server's; a broken one raises here and the call ends as an error.
            factory = resolve_chain_factory(
                agent.config if agent else {},
                allowed=self._settings.allowed_chain_factories,
                default=self._chain_factory,
            )
            chain = factory(ctx)

            def attach(task: PipelineTask) -> None:
                live.task = task

            pending = live.pending_amd
            run = asyncio.ensure_future(
                run_call(chain, call_id=call_id, recording_path=recording, on_task=attach)
            )
            await asyncio.sleep(0)
            for frame in pending:
                if live.task is not None:
                    await live.task.queue_frame(frame)
            outcome = await run
        except asyncio.CancelledError:
            # The node is going away mid-call: the record is left to the reconciler.
            self._live.pop(call_id, None)
            self._sessions -= 1
            if self._sessions == 0:
                self._idle.set()
            raise
        except Exception as exc:
            log_event(
                _log,
                "call.session_failed",
                level=logging.ERROR,
                call_id=call_id,
                error=repr(exc),
                exc_info=exc,
            )
        try:
            await self._finish_connected(record, answered_at, outcome, live.carrier_ended)
        finally:
            # Only now: a carrier callback arriving while the session hangs up and writes the
            # record (the `completed` its own hang-up caused) must not finish it first.
            self._live.pop(call_id, None)
            self._sessions -= 1
            if self._sessions == 0:
                self._idle.set()

    async def _history(self, record: CallRecord, profile: AgentProfile) -> list[HistoryEntry]:
        finder = getattr(self._repos.calls, "history_for", None)
        if finder is None or profile.history_calls <= 0:
            return []
        rows: list[HistoryEntry] = await finder(
            record.account_id, record.to_number, limit=profile.history_calls, before=record
        )
        return rows

    async def _finish_connected(
        self,
        record: CallRecord,
        answered_at: datetime,
        outcome: CallOutcome | None,
        carrier_ended: str | None,
    ) -> None:
        call_id = record.call_id
        ended_reason = outcome.ended_reason if outcome else EndReason.ERROR.value
        if carrier_ended is not None and ended_reason not in _ENGINE_ENDED - {"error"}:
            ended_reason = EndReason.CALLER_HANGUP.value
        if ended_reason in _ENGINE_ENDED and carrier_ended is None:
            await self._hangup(record)
        ended_at = utcnow()
        fields: dict[str, Any] = {
            "ended_at": ended_at,
            "answered_at": answered_at,
            "duration_seconds": round((ended_at - answered_at).total_seconds(), 2),
        }
        if outcome is not None:
            fields["transcript"] = [line.as_dict() for line in outcome.transcript]
            fields["latency"] = outcome.latency
            if outcome.voicemail is not None:
                fields["voicemail_detected"] = outcome.voicemail.voicemail_detected
                fields["voicemail_detection_method"] = outcome.voicemail.method
                if outcome.voicemail.amd_result:
                    fields["amd_result"] = outcome.voicemail.amd_result
            if outcome.recording_path is not None:
                fields["recording_path"] = str(outcome.recording_path)
                fields["recording_duration_seconds"] = outcome.recording_duration_seconds
        status = "completed"
        if await self._repos.calls.finish_call(call_id, status, ended_reason, **fields):
            log_event(_log, "call.ended", call_id=call_id, status=status, ended_reason=ended_reason)
        else:
            # Another path ended the record first (e.g. a reconciler): keep what the
            # session learned.
            await self._repos.calls.update_call(
                call_id, **{k: v for k, v in fields.items() if k != "ended_at"}
            )
        await self._run_after_call(call_id, outcome)

    async def _hangup(self, record: CallRecord) -> None:
        if self._dialer is None:
            return
        creds = await self._credentials(record)
        if creds is None:
            return
        try:
            await self._dialer.hangup(record.call_id, creds)
        except Exception as exc:
            log_event(
                _log,
                "call.hangup_failed",
                level=logging.WARNING,
                call_id=record.call_id,
                error=repr(exc),
            )

    async def _run_after_call(self, call_id: str, outcome: CallOutcome | None) -> None:
        if self._after_call is None:
            return
        record = await self._repos.calls.get(call_id)
        if record is None:
            return
        try:
            await self._after_call(record, outcome)
        except Exception as exc:
            log_event(
                _log,
                "call.after_call_failed",
                level=logging.ERROR,
                call_id=call_id,
                error=repr(exc),
                exc_info=exc,
            )

    # --- crash recovery -----------------------------------------------------------------

    async def heartbeat(self) -> int:
        """Touch the calls this node holds (so other nodes never reconcile them)."""
        ids = [live.call_id for live in self._live.values() if live.task is not None]
        return await self._repos.calls.touch_calls(ids) if ids else 0

    async def reconcile(self) -> int:
        """Finish the calls a crash left open (see the module doc); returns how many."""
        now = utcnow()
        oldest = now - timedelta(seconds=min(self._stale_after_s, self._ring_stale_after_s))
        finished = 0
        for record in await self._repos.calls.open_calls(updated_before=oldest):
            if record.call_id in self._live:
                continue
            limit = (
                self._ring_stale_after_s
                if record.status in ("queued", "ringing")
                else self._stale_after_s
            )
            if record.updated_at > now - timedelta(seconds=limit):
                continue
            try:
                if await self._reconcile_one(record):
                    finished += 1
            except Exception as exc:  # one call must not stop the others
                log_event(
                    _log,
                    "call.reconcile_failed",
                    level=logging.WARNING,
                    call_id=record.call_id,
                    error=repr(exc),
                )
        if finished:
            log_event(_log, "call.reconciled", calls=finished)
        return finished

    async def _reconcile_one(self, record: CallRecord) -> bool:
        call_id = record.call_id
        fields: dict[str, Any] = {"ended_at": utcnow()}
        source = self._dialer if isinstance(self._dialer, CallStatusSource) else None
        creds = await self._credentials(record)
        dialed = call_id != record.call_ref  # the carrier's SID was stored
        carrier: Any = None
        if dialed and source is not None and creds is not None:
            try:
                carrier = await source.call_status(call_id, creds)
            except DialError as exc:
                if exc.code is None:  # carrier unreachable: try again later
                    log_event(
                        _log,
                        "call.reconcile_deferred",
                        level=logging.WARNING,
                        call_id=call_id,
                        error=exc.message,
                    )
                    return False
                carrier = None
        elif dialed:
            # No way to ask the carrier: the call is over as far as this engine can tell.
            carrier = None
        connected = record.status == "in-progress" or record.answered_at is not None
        if not dialed or carrier is None:
            status = "completed" if connected else "failed"
            reason = EndReason.ERROR.value if connected else "failed"
            if not dialed:
                fields["twilio_error"] = {
                    "code": None,
                    "message": "The engine stopped before the carrier accepted the dial.",
                    "status": None,
                }
        elif carrier.status in FINAL_CALL_STATUSES:
            status = carrier.status
            if carrier.answered_by and record.amd_result is None:
                fields["amd_result"] = carrier.answered_by
            if status == "completed":
                answered = connected or bool(carrier.duration_seconds)
                reason = EndReason.ERROR.value if answered else EndReason.CALLER_HANGUP.value
                if carrier.duration_seconds is not None:
                    fields["duration_seconds"] = float(carrier.duration_seconds)
            else:
                reason = status
        else:
            # Still up at the carrier, but no node holds it: end it.
            up = carrier.status == "in-progress"
            if self._dialer is not None and creds is not None:
                await self._dialer.hangup(call_id, creds)
            status = "completed" if up or connected else "canceled"
            reason = EndReason.ERROR.value
        if connected and record.answered_at is not None and "duration_seconds" not in fields:
            span = (fields["ended_at"] - record.answered_at).total_seconds()
            fields["duration_seconds"] = round(max(0.0, span), 2)
        if not await self._repos.calls.finish_call(call_id, status, reason, **fields):
            return False
        log_event(
            _log,
            "call.ended",
            call_id=call_id,
            status=status,
            ended_reason=reason,
            reconciled=True,
            carrier_status=carrier.status if carrier is not None else None,
        )
        await self._run_after_call(call_id, None)
        return True

    async def run_maintenance(self) -> None:
        """Heartbeat this node's calls and reconcile lost ones, periodically, until cancelled
        (the start-up reconcile is the caller's: :meth:`reconcile`)."""
        interval = max(0.05, min(self._stale_after_s, self._ring_stale_after_s) / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
                await self.reconcile()
            except Exception as exc:
                log_event(_log, "call.maintenance_failed", level=logging.WARNING, error=repr(exc))

    # --- node lifecycle -----------------------------------------------------------------

    @property
    def live_calls(self) -> int:
        """Calls with a media session on this node now."""
        return sum(1 for live in self._live.values() if live.task is not None)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop every live call on this node (their records are finished as ``error``)."""
        tasks = [live.task for live in self._live.values() if live.task is not None]
        for task in tasks:
            await task.cancel("shutdown")
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log_event(_log, "call.shutdown_timeout", level=logging.WARNING, live=self._sessions)
        if self._clients is not None:
            await self._clients.aclose()
            self._clients = None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def recording_path_for(settings: Settings, call_id: str) -> Path:
    """Where a call's recording is written."""
    return settings.recordings_dir / f"{call_id}.wav"
