"""The sandbox carrier: the fake Twilio REST API grown into a carrier that *plays* each call.

:class:`SandboxCarrier` wraps a :class:`~nixflex_engine.sandbox.fake_twilio.FakeTwilio` (which
validates ``Calls.json`` like Twilio and answers 201 ``queued`` at once) and, for every call
created, runs the call in a background task as Twilio would:

1. ``initiated``, then (unless the script is busy/failed) ``ringing`` for the script's ring
   time, bounded by the request's ``Timeout`` (default 60 s: ringing longer is ``no-answer``);
2. the outcome — ``busy``, ``no-answer``, ``failed``, or answered (``in-progress``);
3. on answer, the TwiML (inline ``Twiml``, or fetched from ``Url`` with a signed request) is
   parsed and a :class:`~nixflex_engine.sandbox.callee.SandboxCallee` connects to the
   ``<Connect><Stream url>`` (``wss://`` is dialled as ``ws://``; the upgrade is signed over
   the URL as written in the TwiML; the ``<Parameter>``s become ``customParameters``) and plays
   the number's callee script;
4. with ``MachineDetection`` and ``AsyncAmd=true``, the async AMD callback (``AnsweredBy``,
   ``MachineDetectionDuration``) is posted ``amd.callback_ms`` after the stream started
   (``Enable`` reports ``machine_start`` for a ``machine_end_*`` result); without
   ``AsyncAmd``, detection holds the TwiML for ``MachineDetectionDuration`` and ``AnsweredBy``
   goes in the TwiML request and later status callbacks instead;
5. the call ends when the callee hangs up (its script, or the script's ``hangup_after_s``), when
   the stream ends (the engine closed the socket, or refused it: no TwiML follows, so Twilio
   hangs up), when the engine hangs up through REST (``Status=completed``: the callee gets
   ``stop``), or at ``TimeLimit`` (counted from the answer); then ``completed`` with
   ``CallDuration`` (seconds from the answer to the moment the line went down, rounded up).
   A REST ``completed`` or ``canceled`` before the answer ends the call as ``canceled``;
   ``canceled`` on an answered call changes nothing (as Twilio documents).

Status callbacks go to ``StatusCallback`` for the events in ``StatusCallbackEvent``
(``initiated``/``ringing``/``answered``; the final status is always sent), form-encoded
(``StatusCallbackMethod=GET``: as a query), signed with ``X-Twilio-Signature``
(``RequestValidator(auth_token).compute_signature(url, params)``), with Twilio's names:
``CallSid AccountSid From To Called Caller CallStatus Direction ApiVersion CallbackSource
SequenceNumber Timestamp``, plus ``CallDuration`` and ``SipResponseCode`` on the final one and
``AnsweredBy`` once AMD has decided. They are sent in order, one at a time, per call.

Per-number scripts (:class:`CarrierScript`) live in :attr:`SandboxCarrier.scripts`, with
:attr:`SandboxCarrier.default_script` for other numbers; :func:`script_from_json` /
:meth:`SandboxCarrier.load_scripts` read the JSON form::

    {"default": {"outcome": "answer", "ring_s": 1},
     "+15550001111": {"outcome": "busy"},
     "+15550002222": {"outcome": "answer", "voicemail": "en_personal_beep_short"},
     "+15550003333": {"outcome": "answer", "ring_s": 2, "hangup_after_s": 4,
                      "callee": [{"silence": 300}, {"say": "Hello?"}, "until_agent_silent",
                                 {"say": "Not now, thanks."}, "hangup"]}}

Every call keeps a log (:class:`CarrierCall`): events on the carrier clock, each callback sent
with its parameters and the HTTP status it got, and the callee's result (what it heard).
``speed`` > 1 runs the carrier's clock (ring, AMD, time limit, the callee's line) N times
faster, for tests; durations reported to the engine stay in line seconds.

:func:`carrier_routes` gives the Starlette routes (the REST API with the carrier's
``Calls/{CA}.json`` update in front); mount them with the other fakes as
``build_sandbox_app(extra_routes=carrier_routes(carrier))`` (do not also pass
``twilio_state``: its update route would shadow the carrier's). ``nixflex-engine sandbox``
serves exactly that on one port (:func:`run_sandbox`). ``url_map`` sends requests for a public
URL (a tunnel or proxy in front of the engine) to where the engine really listens, while the
signatures still cover the public URL, as Twilio's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.request_validator import RequestValidator
from websockets.exceptions import WebSocketException

from nixflex_engine.log import get_logger, log_event
from nixflex_engine.sandbox.callee import (
    BargeIn,
    CalleeResult,
    CalleeScript,
    Drop,
    Dtmf,
    Hangup,
    Noise,
    PlayFile,
    SandboxCallee,
    Say,
    Silence,
    Step,
    Tone,
    UntilAgentHeard,
    UntilAgentSilent,
    UntilAgentSpeaks,
    UntilCleared,
)
from nixflex_engine.sandbox.fake_twilio import (
    API,
    FakeCall,
    FakeTwilio,
    TwilioErrorSpec,
    twilio_routes,
)
from nixflex_engine.sandbox.voicemail_scripts import AmdOutcome, VoicemailScript, get_script

__all__ = [
    "CallbackRecord",
    "CarrierCall",
    "CarrierEvent",
    "CarrierScript",
    "SandboxCarrier",
    "carrier_routes",
    "default_callee_script",
    "parse_twiml",
    "run_sandbox",
    "script_from_json",
    "steps_from_json",
]

_log = get_logger(__name__)

Outcome = Literal["answer", "busy", "no-answer", "failed"]
_OUTCOMES: Final = ("answer", "busy", "no-answer", "failed")
_FINAL: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
_SIP_CODES: Final = {"completed": 200, "busy": 486, "no-answer": 487, "canceled": 487}
_DEFAULT_TIMEOUT_S: Final = 60.0
_DEFAULT_TIME_LIMIT_S: Final = 14_400.0
#: What async AMD reports when a script names no result: a person (Twilio decides ``human``
#: after the short greeting and ``MachineDetectionSpeechEndThreshold`` of silence).
DEFAULT_AMD: Final = AmdOutcome("human", 1900, 2150.0)


def default_callee_script() -> CalleeScript:
    """A person who picks up, answers the agent twice and stays until the engine hangs up."""
    return CalleeScript(
        [
            Silence(400),
            Say("Hello?"),
            UntilAgentSilent(),
            Say("Yes, this is a good time."),
            UntilAgentSilent(),
            Say("Okay, thank you. Goodbye."),
            UntilAgentSilent(timeout_ms=20_000),
        ]
    )


# --- scripts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CarrierScript:
    """What happens when a number is called.

    ``outcome``: ``answer`` (the callee plays ``callee``), ``busy``, ``no-answer`` or
    ``failed``. ``ring_s``: seconds from ``initiated`` to the outcome (ringing, for
    ``answer``/``no-answer``; ``None`` with ``no-answer`` rings until the request's
    ``Timeout``); an answer later than ``Timeout`` is a ``no-answer``. ``amd``: what async
    AMD reports (``None``: :data:`DEFAULT_AMD`, a person). ``hangup_after_s``: the callee hangs
    up this long after answering whatever its script is doing. ``sip_response_code`` for the
    final callback (defaults: busy 486, no-answer 487, failed 404).
    """

    outcome: Outcome = "answer"
    ring_s: float | None = 1.0
    callee: CalleeScript = field(default_factory=default_callee_script)
    amd: AmdOutcome | None = None
    hangup_after_s: float | None = None
    sip_response_code: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(_OUTCOMES)}")
        if self.ring_s is not None and self.ring_s < 0:
            raise ValueError("ring_s must not be negative")
        if self.hangup_after_s is not None and self.hangup_after_s < 0:
            raise ValueError("hangup_after_s must not be negative")

    @classmethod
    def answer(
        cls,
        callee: CalleeScript | Sequence[Step] | None = None,
        *,
        ring_s: float = 1.0,
        amd: AmdOutcome | None = None,
        hangup_after_s: float | None = None,
        name: str = "",
    ) -> CarrierScript:
        """Answered after ``ring_s`` by a callee playing ``callee`` (default: a person)."""
        if callee is None:
            script = default_callee_script()
        elif isinstance(callee, CalleeScript):
            script = callee
        else:
            script = CalleeScript(callee)
        return cls(
            "answer", ring_s, script, amd=amd, hangup_after_s=hangup_after_s, name=name or "answer"
        )

    @classmethod
    def voicemail(cls, script: VoicemailScript | str, *, ring_s: float = 4.0) -> CarrierScript:
        """Answered by ``script`` (a voicemail script or its name), with its AMD result."""
        vm = get_script(script) if isinstance(script, str) else script
        return cls("answer", ring_s, vm.callee_script(), amd=vm.amd, name=f"voicemail:{vm.name}")

    @classmethod
    def busy(cls, *, after_s: float = 0.5, sip_response_code: int | None = None) -> CarrierScript:
        """The line is busy (no ringing)."""
        return cls("busy", after_s, sip_response_code=sip_response_code, name="busy")

    @classmethod
    def no_answer(cls, *, ring_s: float | None = None) -> CarrierScript:
        """Rings out: until the request's ``Timeout`` unless ``ring_s`` is shorter."""
        return cls("no-answer", ring_s, name="no-answer")

    @classmethod
    def failed(cls, *, after_s: float = 0.2, sip_response_code: int | None = None) -> CarrierScript:
        """The call cannot be connected (e.g. an unreachable network)."""
        return cls("failed", after_s, sip_response_code=sip_response_code, name="failed")


_STEP_TYPES: Final[Mapping[str, type[Any]]] = {
    "say": Say,
    "silence": Silence,
    "wait": Silence,
    "tone": Tone,
    "noise": Noise,
    "play_file": PlayFile,
    "dtmf": Dtmf,
    "until_agent_speaks": UntilAgentSpeaks,
    "until_agent_silent": UntilAgentSilent,
    "until_agent_heard": UntilAgentHeard,
    "until_cleared": UntilCleared,
    "barge_in": BargeIn,
    "hangup": Hangup,
    "drop": Drop,
}


def steps_from_json(items: Iterable[Any]) -> list[Step]:
    """Callee steps from their JSON form: ``"hangup"``, ``{"say": "Hi"}``, ``{"silence":
    500}``, ``{"tone": [1000, 400]}``, ``{"until_agent_silent": {"silence_ms": 800}}`` …
    (a string is a step without arguments; a scalar is the first argument; a list the
    positional arguments; an object the keyword arguments)."""
    steps: list[Step] = []
    for item in items:
        if isinstance(item, str):
            name, value = item, None
        elif isinstance(item, Mapping) and len(item) == 1:
            name, value = next(iter(item.items()))
        else:
            raise ValueError(f"a step is a name or a one-key object, not {item!r}")
        kind = _STEP_TYPES.get(name)
        if kind is None:
            raise ValueError(f"unknown step {name!r} (known: {', '.join(sorted(_STEP_TYPES))})")
        if value is None or value is True or value == {}:
            step = kind()
        elif isinstance(value, Mapping):
            step = kind(**value)
        elif isinstance(value, list):
            step = kind(*value)
        else:
            step = kind(value)
        steps.append(step)
    return steps


def script_from_json(obj: Mapping[str, Any]) -> CarrierScript:
    """A :class:`CarrierScript` from its JSON form (see the module doc).

    Keys: ``outcome``, ``ring_s``, ``callee`` (steps), ``voicemail`` (a voicemail script's
    name: its steps and AMD result), ``amd`` (``{"answered_by", "machine_detection_duration_ms",
    "callback_ms"}``), ``hangup_after_s``, ``sip_response_code``, ``name``.
    """
    known = {
        "outcome",
        "ring_s",
        "callee",
        "voicemail",
        "amd",
        "hangup_after_s",
        "sip_response_code",
        "name",
    }
    unknown = set(obj) - known
    if unknown:
        raise ValueError(f"unknown script keys: {', '.join(sorted(unknown))}")
    outcome = obj.get("outcome", "answer")
    defaults: dict[Any, float | None] = {"busy": 0.5, "failed": 0.2, "no-answer": None}
    ring_s = obj.get("ring_s", defaults.get(outcome, 1.0))
    callee = default_callee_script()
    amd: AmdOutcome | None = None
    name = str(obj.get("name", "") or outcome)
    if "voicemail" in obj:
        vm = get_script(str(obj["voicemail"]))
        callee, amd, name = vm.callee_script(), vm.amd, str(obj.get("name") or vm.name)
    if "callee" in obj:
        callee = CalleeScript(steps_from_json(obj["callee"]))
    if obj.get("amd") is not None:
        a = obj["amd"]
        amd = AmdOutcome(
            str(a["answered_by"]),
            int(a.get("machine_detection_duration_ms", DEFAULT_AMD.machine_detection_duration_ms)),
            float(a.get("callback_ms", DEFAULT_AMD.callback_ms)),
        )
    hangup_after = obj.get("hangup_after_s")
    sip = obj.get("sip_response_code")
    return CarrierScript(
        outcome,
        None if ring_s is None else float(ring_s),
        callee,
        amd=amd,
        hangup_after_s=None if hangup_after is None else float(hangup_after),
        sip_response_code=None if sip is None else int(sip),
        name=name,
    )


# --- TwiML --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamInstruction:
    """A ``<Connect><Stream>``: its ``url`` and ``<Parameter>``s."""

    url: str
    parameters: Mapping[str, str]


def parse_twiml(twiml: str) -> StreamInstruction | None:
    """The ``<Connect><Stream>`` of a TwiML document (``None`` if it has none).

    Raises ``ValueError`` for a document that is not ``<Response>`` XML (Twilio error 12100).
    """
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise ValueError(f"TwiML is not XML: {exc}") from exc
    if root.tag != "Response":
        raise ValueError(f"TwiML root is <{root.tag}>, not <Response>")
    for connect in root.iter("Connect"):
        stream = connect.find("Stream")
        if stream is None or not stream.get("url"):
            continue
        params = {
            p.get("name", ""): p.get("value", "")
            for p in stream.findall("Parameter")
            if p.get("name")
        }
        return StreamInstruction(str(stream.get("url")), params)
    return None


# --- the per-call log ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CarrierEvent:
    """Something the carrier did, at ``at_s`` on the carrier clock (line seconds)."""

    at_s: float
    event: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CallbackRecord:
    """A request the carrier made to the engine and how it went."""

    kind: Literal["status", "amd", "twiml"]
    url: str
    method: str
    params: dict[str, str]
    signature: str
    at_s: float
    http_status: int | None = None
    error: str | None = None
    attempts: int = 0


@dataclass(slots=True)
class CarrierCall:
    """One call as the carrier played it (tests and the demo read it).

    ``status`` is the carrier's view (``queued`` … the final status). ``ended_by``: ``callee``
    (its script hung up, or ``hangup_after_s``), ``engine`` (REST hang-up), ``time_limit``,
    ``stream_closed`` (the engine closed or refused the media socket), ``stream_rejected``
    (the upgrade was refused), ``stream_failed`` (no connection), ``twiml_ended`` (no
    ``<Connect><Stream>``), ``twiml_error``, or the never-connected outcome (``busy``,
    ``no-answer``, ``failed``). Times are carrier-clock seconds since the create.
    """

    sid: str
    account_sid: str
    to: str
    from_: str
    script: CarrierScript
    params: Mapping[str, list[str]]
    status: str = "queued"
    events: list[CarrierEvent] = field(default_factory=list)
    callbacks: list[CallbackRecord] = field(default_factory=list)
    stream: StreamInstruction | None = None
    callee: CalleeResult | None = None
    answered_by: str | None = None
    answered_at_s: float | None = None
    ended_at_s: float | None = None
    duration_s: int | None = None
    ended_by: str | None = None
    _t0: float = field(default=0.0, repr=False)
    _end_request: str | None = field(default=None, repr=False)
    _end_changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _amd_sending: bool = field(default=False, repr=False)
    _helpers: list[asyncio.Task[Any]] = field(default_factory=list, repr=False)
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _sequence: int = field(default=0, repr=False)

    @property
    def done(self) -> bool:
        """The call has ended and every callback has been sent."""
        return self._done.is_set()

    def param(self, name: str, default: str = "") -> str:
        """The first value of a ``Calls.json`` form parameter."""
        values = self.params.get(name)
        return values[0] if values else default

    def status_callbacks(self) -> list[CallbackRecord]:
        return [c for c in self.callbacks if c.kind == "status"]

    def statuses_sent(self) -> list[str]:
        """``CallStatus`` of each status callback, in order."""
        return [c.params["CallStatus"] for c in self.status_callbacks()]

    def amd_callbacks(self) -> list[CallbackRecord]:
        return [c for c in self.callbacks if c.kind == "amd"]

    def event_names(self) -> list[str]:
        return [e.event for e in self.events]

    def heard_text(self) -> str:
        """What the callee heard the agent say (empty if the call never connected)."""
        return self.callee.heard_text() if self.callee is not None else ""

    def as_json(self) -> dict[str, Any]:
        """The log as JSON (``GET /sandbox/carrier/calls/{sid}``); the stream token is
        masked."""
        callee = self.callee
        stream = None
        if self.stream is not None:
            stream = {
                "url": self.stream.url,
                "parameters": {
                    k: ("***" if "token" in k.lower() else v)
                    for k, v in self.stream.parameters.items()
                },
            }
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from_,
            "script": self.script.name,
            "status": self.status,
            "done": self.done,
            "answered_by": self.answered_by,
            "answered_at_s": self.answered_at_s,
            "ended_at_s": self.ended_at_s,
            "duration_s": self.duration_s,
            "ended_by": self.ended_by,
            "events": [{"at_s": e.at_s, "event": e.event, **e.detail} for e in self.events],
            "callbacks": [
                {
                    "kind": c.kind,
                    "at_s": round(c.at_s, 3),
                    "method": c.method,
                    "url": c.url,
                    "params": c.params,
                    "http_status": c.http_status,
                    "error": c.error,
                }
                for c in self.callbacks
            ],
            "stream": stream,
            "callee": None
            if callee is None
            else {
                "ended_by": callee.ended_by,
                "close_code": callee.close_code,
                "handshake_status": callee.handshake_status,
                "frames_sent": callee.frames_sent,
                "media_received": callee.media_received,
                "heard_ms": callee.heard_ms,
                "heard_text": callee.heard_text(),
                "protocol_violations": callee.protocol_violations,
                "script_errors": callee.script_errors,
            },
        }


class _CarrierCallee(SandboxCallee):
    """The callee, plus what only the carrier can do to it: end the line (``stop``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = asyncio.Event()
        self._end_line: str | None = None

    def end_line(self, reason: str) -> None:
        """Hang up from the carrier's side: the next frame tick sends ``stop`` and closes."""
        if self._end_line is None:
            self._end_line = reason

    async def _open(self) -> None:
        await super()._open()
        self.started.set()

    async def _send_frame(self, frame: bytes) -> None:
        if self._end_line is not None and not self._closed:
            await self._hangup(self._end_line)  # sends stop, ends the script
        await super()._send_frame(frame)


# --- the carrier --------------------------------------------------------------------------


class SandboxCarrier:
    """The fake carrier (see the module doc).

    ``twilio``: the REST state to play calls of (default: a new one). ``speed``: carrier and
    line clock multiplier. ``url_map``: ``{"https://public.example": "http://127.0.0.1:8080"}``
    — where to actually send requests for a public URL prefix (the signature still covers the
    public URL, as Twilio's would). ``initiate_s``: from create to ``initiated``.
    """

    def __init__(
        self,
        twilio: FakeTwilio | None = None,
        *,
        speed: float = 1.0,
        scripts: Mapping[str, CarrierScript] | None = None,
        default_script: CarrierScript | None = None,
        url_map: Mapping[str, str] | None = None,
        initiate_s: float = 0.05,
        callback_timeout_s: float = 10.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.twilio = twilio if twilio is not None else FakeTwilio()
        self.speed = speed
        self.scripts: dict[str, CarrierScript] = dict(scripts or {})
        self.default_script = default_script or CarrierScript()
        self.url_map: dict[str, str] = dict(url_map or {})
        self.initiate_s = initiate_s
        self.callback_timeout_s = callback_timeout_s
        self.calls: dict[str, CarrierCall] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self.twilio.on_call_created.append(self._on_created)

    # --- configuration --------------------------------------------------------------------

    def set_script(self, number: str, script: CarrierScript) -> None:
        """Play ``script`` for calls to ``number``."""
        self.scripts[number] = script

    def script_for(self, number: str) -> CarrierScript:
        """The script a call to ``number`` plays (else :attr:`default_script`)."""
        return self.scripts.get(number, self.default_script)

    def load_scripts(self, obj: Mapping[str, Any]) -> None:
        """Scripts from JSON: ``{"default": {...}, "+1555…": {...}, …}``."""
        for key, value in obj.items():
            script = script_from_json(value)
            if key == "default":
                self.default_script = script
            else:
                self.scripts[key] = script

    # --- lifecycle -------------------------------------------------------------------------

    async def wait_ended(self, call_sid: str, timeout_s: float = 30.0) -> CarrierCall:
        """Wait until the call is over and its last callback sent."""
        call = self.calls[call_sid]
        async with asyncio.timeout(timeout_s):
            await call._done.wait()
        return call

    async def aclose(self) -> None:
        """Stop every call in progress (no more callbacks) and close the HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_created(self, fake: FakeCall) -> None:
        call = CarrierCall(
            sid=fake.sid,
            account_sid=fake.account_sid,
            to=fake.to,
            from_=fake.from_,
            script=self.script_for(fake.to),
            params=fake.params,
            _t0=asyncio.get_running_loop().time(),
        )
        self.calls[call.sid] = call
        self._event(call, "created", script=call.script.name)
        self._spawn(self._play(call, fake), f"carrier:{call.sid}")

    # --- the REST hang-up ------------------------------------------------------------------

    def request_end(self, call_sid: str, status: str) -> None:
        """The engine asked (REST ``Status``) to end the call: ``completed`` ends it in any
        live state, ``canceled`` only before it is answered. The REST view changes at once."""
        fake = self.twilio.calls.get(call_sid)
        call = self.calls.get(call_sid)
        if fake is None or fake.status in _FINAL:
            return
        answered = fake.status == "in-progress"
        if status == "canceled" and answered:
            if call is not None:
                self._event(call, "cancel_ignored")
            return
        fake.status = "completed" if answered else "canceled"
        fake.date_updated = datetime.now(UTC)
        if call is not None and call._end_request is None:
            call._end_request = "engine"
            self._event(call, "rest_hangup", requested=status)
            call._end_changed.set()

    # --- playing a call --------------------------------------------------------------------

    def _now(self, call: CarrierCall) -> float:
        return (asyncio.get_running_loop().time() - call._t0) * self.speed

    def _event(self, call: CarrierCall, event: str, **detail: Any) -> None:
        call.events.append(CarrierEvent(round(self._now(call), 3), event, detail))

    async def _wait(self, call: CarrierCall, seconds: float | None) -> bool:
        """Wait ``seconds`` of carrier time; True if the engine ended the call meanwhile."""
        if call._end_request is not None:
            return True
        if seconds is None:
            await call._end_changed.wait()
            return True
        try:
            async with asyncio.timeout(max(0.0, seconds) / self.speed):
                await call._end_changed.wait()
        except TimeoutError:
            return call._end_request is not None
        return True

    async def _play(self, call: CarrierCall, fake: FakeCall) -> None:
        sender = _Sender(self, call)
        try:
            final = await self._run(call, fake, sender)
        except asyncio.CancelledError:
            sender.close()
            raise
        except Exception as exc:  # a bug in the carrier must still end the call
            log_event(_log, "carrier.failed", level=logging.ERROR, call_id=call.sid, exc_info=exc)
            self._event(call, "carrier_error", error=repr(exc))
            final = "failed"
        call.status = final
        # the line went down when the carrier ended it, not when the socket finished closing
        call.ended_at_s = call.ended_at_s if call.ended_at_s is not None else self._now(call)
        if final == "completed" and call.answered_at_s is not None:
            span = call.ended_at_s - call.answered_at_s
            call.duration_s = max(1, math.ceil(span - 1e-9)) if span > 0 else 0
        else:
            call.duration_s = 0
        if fake.status != final:
            fake.status = final
            fake.date_updated = datetime.now(UTC)
        self._event(call, "ended", status=final, ended_by=call.ended_by, duration_s=call.duration_s)
        sender.status(final)
        await sender.drain()
        await asyncio.gather(*call._helpers, return_exceptions=True)  # an AMD callback in flight
        call._done.set()

    async def _run(self, call: CarrierCall, fake: FakeCall, sender: _Sender) -> str:
        script = call.script
        if await self._wait(call, self.initiate_s):
            call.ended_by = "engine"
            return "canceled"
        call.status = "initiated"
        self._event(call, "initiated")
        sender.status("initiated")
        timeout_s = _number(call.param("Timeout"), _DEFAULT_TIMEOUT_S)
        if script.outcome in ("busy", "failed"):
            if await self._wait(call, script.ring_s or 0.0):
                call.ended_by = "engine"
                return "canceled"
            call.ended_by = script.outcome
            return script.outcome
        fake.status = call.status = "ringing"
        fake.date_updated = datetime.now(UTC)
        self._event(call, "ringing")
        sender.status("ringing")
        ring_s = timeout_s if script.ring_s is None else min(script.ring_s, timeout_s)
        if await self._wait(call, ring_s):
            call.ended_by = "engine"
            return "canceled"
        if script.outcome == "no-answer" or (script.ring_s or 0.0) >= timeout_s:
            call.ended_by = "no-answer"
            return "no-answer"
        # answered
        fake.status = call.status = "in-progress"
        fake.date_updated = datetime.now(UTC)
        call.answered_at_s = self._now(call)
        self._event(call, "answered")
        sender.status("in-progress")
        await self._connected(call, fake, sender)
        return "completed"

    async def _connected(self, call: CarrierCall, fake: FakeCall, sender: _Sender) -> None:
        """The answered call: AMD, TwiML, the media stream, until one side ends it."""
        detection = call.param("MachineDetection")
        amd = call.script.amd or DEFAULT_AMD
        if detection:
            answered_by = amd.answered_by
            if detection == "Enable" and answered_by.startswith("machine_end"):
                answered_by = "machine_start"
            amd = AmdOutcome(answered_by, amd.machine_detection_duration_ms, amd.callback_ms)
        async_amd = bool(detection) and call.param("AsyncAmd").lower() == "true"
        if detection and not async_amd:
            # Synchronous AMD holds the TwiML until it decides.
            if await self._wait(call, amd.machine_detection_duration_ms / 1000.0):
                call.ended_by = "engine"
                return
            self._amd_decided(call, fake, amd.answered_by)
        twiml = await self._twiml(call, sender)
        stream = None
        if twiml is not None:
            try:
                stream = parse_twiml(twiml)
            except ValueError as exc:
                self._event(call, "twiml_error", code=12100, error=str(exc))
                call.ended_by = "twiml_error"
                return
        if stream is None:
            self._event(call, "no_stream")
            call.ended_by = "twiml_ended"
            return
        call.stream = stream
        await self._stream(call, fake, stream, amd if async_amd else None, sender)

    def _amd_decided(self, call: CarrierCall, fake: FakeCall, answered_by: str) -> None:
        call.answered_by = answered_by
        fake.answered_by = answered_by
        self._event(call, "amd_decided", answered_by=answered_by)

    async def _twiml(self, call: CarrierCall, sender: _Sender) -> str | None:
        inline = call.param("Twiml")
        if inline:
            return inline
        url = call.param("Url")
        if not url:
            return None
        method = call.param("Method", "POST").upper()
        record, body = await self._request(
            call, "twiml", url, method, sender.base_params("in-progress")
        )
        if record.http_status is None or not 200 <= record.http_status < 300:
            self._event(call, "twiml_fetch_failed", http_status=record.http_status)
            return None
        return body

    async def _stream(
        self,
        call: CarrierCall,
        fake: FakeCall,
        stream: StreamInstruction,
        amd: AmdOutcome | None,
        sender: _Sender,
    ) -> None:
        token = self.twilio.accounts[call.account_sid].auth_token
        time_limit_s = _number(call.param("TimeLimit"), _DEFAULT_TIME_LIMIT_S)
        callee = _CarrierCallee(
            self._reachable(stream.url, websocket=True),
            call.script.callee,
            speed=self.speed,
            custom_parameters=stream.parameters,
            auth_token=token,
            signed_url=stream.url,
            call_sid=call.sid,
            account_sid=call.account_sid,
            max_call_ms=(time_limit_s + 60.0) * 1000.0,
        )
        self._event(call, "stream_connecting", url=stream.url)
        run = asyncio.ensure_future(callee.run())
        helpers = call._helpers
        if amd is not None:
            helpers.append(
                self._spawn(self._async_amd(call, fake, amd, callee, run), f"amd:{call.sid}")
            )
        try:
            await self._watch(call, callee, run, time_limit_s)
            try:
                call.callee = await run
            except (OSError, TimeoutError, WebSocketException) as exc:
                self._event(call, "stream_failed", error=type(exc).__name__)
                call.ended_by = call.ended_by or "stream_failed"
                return
            result = call.callee
            self._event(
                call,
                "stream_ended",
                callee_ended_by=result.ended_by,
                handshake_status=result.handshake_status,
                close_code=result.close_code,
            )
            if call.ended_by is None:
                call.ended_by = {
                    "callee_hangup": "callee",
                    "callee_drop": "callee",
                    "engine_closed": "stream_closed",
                    "rejected": "stream_rejected",
                }.get(result.ended_by, result.ended_by or "stream_closed")
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run
            for helper in helpers:  # AMD not decided yet: it never will be; sending: let it
                if not helper.done() and not call._amd_sending:
                    helper.cancel()

    async def _watch(
        self,
        call: CarrierCall,
        callee: _CarrierCallee,
        run: asyncio.Future[CalleeResult],
        time_limit_s: float,
    ) -> None:
        """Until the callee's line is down, end it for the engine, the script or TimeLimit."""
        loop = asyncio.get_running_loop()
        answered = loop.time()
        deadlines = [(time_limit_s, "time_limit")]
        if call.script.hangup_after_s is not None:
            deadlines.append((call.script.hangup_after_s, "callee"))
        deadlines.sort()
        while not run.done():
            if call._end_request is not None:
                call.ended_by = call._end_request
                call.ended_at_s = self._now(call)
                self._event(call, "stop_stream", reason=call.ended_by)
                callee.end_line("carrier_hangup")
                return
            elapsed = (loop.time() - answered) * self.speed
            due = [d for d in deadlines if d[0] <= elapsed]
            if due:
                call.ended_by = due[0][1]
                call.ended_at_s = self._now(call)
                self._event(call, "stop_stream", reason=call.ended_by)
                callee.end_line("callee_hangup" if call.ended_by == "callee" else "carrier_hangup")
                return
            next_s = min(d[0] for d in deadlines) - elapsed
            changed: asyncio.Future[Any] = asyncio.ensure_future(call._end_changed.wait())
            waiters: set[asyncio.Future[Any]] = {run, changed}
            try:
                await asyncio.wait(
                    waiters,
                    timeout=max(0.0, next_s) / self.speed,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                changed.cancel()

    async def _async_amd(
        self,
        call: CarrierCall,
        fake: FakeCall,
        amd: AmdOutcome,
        callee: _CarrierCallee,
        run: asyncio.Future[CalleeResult],
    ) -> None:
        started: asyncio.Future[Any] = asyncio.ensure_future(callee.started.wait())
        waiters: set[asyncio.Future[Any]] = {started, run}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if not callee.started.is_set():
            self._event(call, "amd_skipped", reason="no media")
            return
        await asyncio.sleep(amd.callback_ms / 1000.0 / self.speed)
        if call.ended_at_s is not None:
            return
        self._amd_decided(call, fake, amd.answered_by)
        url = call.param("AsyncAmdStatusCallback")
        if not url:
            self._event(call, "amd_no_callback", warning=21262)
            return
        params = {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "AnsweredBy": amd.answered_by,
            "MachineDetectionDuration": str(amd.machine_detection_duration_ms),
        }
        method = call.param("AsyncAmdStatusCallbackMethod", "POST").upper()
        call._amd_sending = True  # decided and sent: the call ending no longer stops it
        await self._request(call, "amd", url, method, params)

    # --- requests to the engine -----------------------------------------------------------

    def _reachable(self, url: str, *, websocket: bool = False) -> str:
        """Where to send a request for ``url``: ``url_map`` applied (its keys are http(s)
        prefixes and also match the ws(s) form of the same host), and a websocket always as
        plain ``ws://`` (the sandbox has no TLS)."""
        parts = urlsplit(url)
        http_scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
        url = urlunsplit((http_scheme, *parts[1:]))
        for public, local in self.url_map.items():
            if url.startswith(public):
                url = local + url[len(public) :]
                break
        if websocket:
            url = "ws://" + url.split("://", 1)[1]
        return url

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.callback_timeout_s,
                trust_env=False,
                # hundreds of calls may call back at once: never queue behind a pool limit
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
            )
        return self._http

    async def _request(
        self,
        call: CarrierCall,
        kind: Literal["status", "amd", "twiml"],
        url: str,
        method: str,
        params: dict[str, str],
    ) -> tuple[CallbackRecord, str]:
        """Send one signed webhook request; returns its record (also kept on the call) and
        the response body."""
        token = self.twilio.accounts[call.account_sid].auth_token
        validator = RequestValidator(token)
        if method == "GET":
            signed = url + ("&" if urlsplit(url).query else "?") + urlencode(params)
            signature = str(validator.compute_signature(signed, {}))
        else:
            signed = url
            signature = str(validator.compute_signature(url, params))
        record = CallbackRecord(kind, url, method, dict(params), signature, self._now(call))
        call.callbacks.append(record)
        headers = {
            "X-Twilio-Signature": signature,
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        target = self._reachable(signed)
        try:
            response = await self._send(record, target, method, params, headers)
        except asyncio.CancelledError:
            record.error = "cancelled"
            raise
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            log_event(
                _log,
                "carrier.callback_failed",
                level=logging.WARNING,
                call_id=call.sid,
                kind=kind,
                error=type(exc).__name__,
            )
            return record, ""
        record.http_status = response.status_code
        log_event(
            _log,
            "carrier.callback",
            level=logging.DEBUG,
            call_id=call.sid,
            kind=kind,
            status=params.get("CallStatus"),
            http_status=response.status_code,
        )
        return record, response.text

    async def _send(
        self,
        record: CallbackRecord,
        target: str,
        method: str,
        params: dict[str, str],
        headers: dict[str, str],
    ) -> httpx.Response:
        """One request, retried once when the connection failed (as Twilio retries a failed
        connection once by default; a pooled connection the server just closed fails so)."""
        for attempt in (1, 2):
            record.attempts = attempt
            try:
                if method == "GET":
                    return await self._client().get(target, headers=headers)
                return await self._client().post(target, data=params, headers=headers)
            except (
                httpx.ConnectError,
                httpx.ReadError,
                httpx.WriteError,
                httpx.RemoteProtocolError,
            ):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


class _Sender:
    """Status callbacks of one call, sent in order, one at a time, without blocking the call."""

    __slots__ = ("_call", "_carrier", "_events", "_queue", "_task")

    _EVENT_OF: Final = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}

    def __init__(self, carrier: SandboxCarrier, call: CarrierCall) -> None:
        self._carrier = carrier
        self._call = call
        self._queue: asyncio.Queue[dict[str, str] | None] = asyncio.Queue()
        self._events = {e.strip().lower() for e in call.params.get("StatusCallbackEvent", [])}
        self._task: asyncio.Task[None] | None = None

    def base_params(self, status: str) -> dict[str, str]:
        call = self._call
        params = {
            "AccountSid": call.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api",
            "From": call.from_,
            "To": call.to,
        }
        if call.answered_by is not None:
            params["AnsweredBy"] = call.answered_by
        return params

    def status(self, status: str) -> None:
        """Queue the callback for ``status`` if the call asked for it."""
        call = self._call
        if not call.param("StatusCallback"):
            return
        final = status in _FINAL
        if not final and self._EVENT_OF.get(status) not in self._events:
            return
        params = self.base_params(status)
        if self._events:  # call-progress events were asked for
            params["CallbackSource"] = "call-progress-events"
            params["SequenceNumber"] = str(call._sequence)
            params["Timestamp"] = format_datetime(datetime.now(UTC))
            call._sequence += 1
        if final:
            params["CallDuration"] = str(call.duration_s or 0)
            sip = call.script.sip_response_code or _SIP_CODES.get(status, 404)
            params["SipResponseCode"] = str(sip)
        self._queue.put_nowait(params)
        if self._task is None:
            self._task = self._carrier._spawn(self._run(), f"callbacks:{call.sid}")

    async def _run(self) -> None:
        call = self._call
        url = call.param("StatusCallback")
        method = call.param("StatusCallbackMethod", "POST").upper()
        while True:
            params = await self._queue.get()
            if params is None:
                return
            await self._carrier._request(call, "status", url, method, params)

    async def drain(self) -> None:
        """Wait until every queued callback has been sent."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def _number(text: str, default: float) -> float:
    try:
        value = float(text)
    except ValueError:
        return default
    return value if value > 0 else default


# --- routes -------------------------------------------------------------------------------


def carrier_routes(carrier: SandboxCarrier) -> list[BaseRoute]:
    """The carrier's routes: the fake Twilio API, with ``POST …/Calls/{CA}.json`` handled by
    the carrier (a ``Status`` update ends the call it is playing); and, for tests and the
    demo, ``GET /sandbox/carrier/calls[/{sid}]`` (the per-call logs as JSON) and
    ``PUT /sandbox/carrier/scripts/{number|default}`` (a script in its JSON form)."""
    state = carrier.twilio

    async def update_call(request: Request) -> Response:
        account_sid = request.path_params["account_sid"]
        state.requests.append(("POST", request.url.path))
        if state.authenticate(request, account_sid) is None:
            return TwilioErrorSpec(20003, "Authenticate", 401).response()
        fake = state.calls.get(request.path_params["call_sid"])
        if fake is None or fake.account_sid != account_sid:
            return TwilioErrorSpec(
                20404, f"The requested resource {request.url.path} was not found", 404
            ).response()
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        status = (form.get("Status") or [""])[0]
        if status:
            if status not in ("completed", "canceled"):
                return TwilioErrorSpec(21218, f"Invalid value for Status: {status}").response()
            carrier.request_end(fake.sid, status)
        return JSONResponse(fake.as_json())

    async def list_calls(request: Request) -> Response:
        return JSONResponse(
            {
                "calls": [
                    {k: v for k, v in c.as_json().items() if k not in ("events", "callbacks")}
                    for c in carrier.calls.values()
                ]
            }
        )

    async def get_call(request: Request) -> Response:
        call = carrier.calls.get(request.path_params["call_sid"])
        if call is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        return JSONResponse(call.as_json())

    async def put_script(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            script = script_from_json(body)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        number = request.path_params["number"]
        if number == "default":
            carrier.default_script = script
        else:
            carrier.set_script(number, script)
        return JSONResponse({"number": number, "script": script.name})

    path = f"{API}/Accounts/{{account_sid}}/Calls/{{call_sid}}.json"
    return [
        Route(path, update_call, methods=["POST"]),
        *twilio_routes(state),
        Route("/sandbox/carrier/calls", list_calls, methods=["GET"]),
        Route("/sandbox/carrier/calls/{call_sid}", get_call, methods=["GET"]),
        Route("/sandbox/carrier/scripts/{number}", put_script, methods=["PUT"]),
    ]


# --- the one-command sandbox --------------------------------------------------------------


def run_sandbox(
    *,
    host: str,
    port: int,
    speed: float = 1.0,
    scripts_path: str | None = None,
    accounts: Sequence[str] = (),
    numbers: Sequence[str] = (),
    url_map: Mapping[str, str] | None = None,
    log_level: str = "warning",
) -> int:
    """Serve fake Twilio (this carrier), Deepgram and Anthropic on ``host:port`` until
    interrupted. ``accounts``: ``SID:TOKEN`` (a random one when none is given); ``numbers``
    are added to the first account. Prints one JSON line with the accounts and numbers."""
    import uvicorn

    from nixflex_engine.sandbox.app import build_sandbox_app

    carrier = SandboxCarrier(speed=speed, url_map=url_map)
    if scripts_path:
        try:
            carrier.load_scripts(json.loads(Path(scripts_path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"cannot load call scripts from {scripts_path}: {exc}", file=sys.stderr)
            return 2
    shown: list[dict[str, Any]] = []
    created = []
    for spec in accounts or [""]:
        sid, _, token = spec.partition(":")
        account = carrier.twilio.add_account(sid or None, token or None)
        created.append(account)
        entry: dict[str, Any] = {"account_sid": account.sid}
        if not token:  # generated here: the only way to learn it (a sandbox account)
            entry["auth_token"] = account.auth_token
        shown.append(entry)
    for number in numbers:
        carrier.twilio.add_number(created[0].sid, number)
    for entry, account in zip(shown, created, strict=True):
        entry["numbers"] = list(account.numbers)
    print(json.dumps({"sandbox_url": f"http://{host}:{port}", "twilio_accounts": shown}))
    app = build_sandbox_app(extra_routes=carrier_routes(carrier))
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, lifespan="off", ws_ping_interval=None
    )
    return 0
