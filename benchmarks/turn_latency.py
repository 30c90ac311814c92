"""Turn latency: the caller stops talking → the agent's first audio is heard, on real sockets.

Three processes, so the load of one never counts against another:

1. **fakes** — the sandbox's fake Deepgram STT/TTS and fake Anthropic (real wire protocols,
   injected latencies below), on one port;
2. **engine** — ours (the standard chain of ``calls/chain.py``, run by ``calls/run.run_call``
   behind the Twilio media endpoint) or Pipecat 1.14 (``pipecat_turn_latency.py`` in
   ``.venv-pipecat``), pointed at the fakes by base URL alone;
3. **callees** (this process) — one :class:`~nixflex_engine.sandbox.callee.SandboxCallee` per
   call, a fake Twilio media stream playing a person: it says "Hello?", hears the opener,
   then says each line of ``_turn_common.CALLER_LINES`` once the agent has been silent for
   600 ms, talks over the long reply to the last one (barge-in), hears the answer, hangs up.

**Turn latency** (ground truth, the callee's side, line clock): from the end of the caller's
speech audio (the ``Say`` step's start + its audio length: sandbox speech is 75 ms per byte,
and every line ends on a 20 ms frame boundary) to the start of the first agent audio the
callee *heard* after it (Twilio's playback model: audio plays from when it arrives).
The engine's own per-component figures come from ``CallOutcome.latency`` (``endpointing_ms``,
``stt_ms``, ``llm_ttft_ms``, ``tts_ttfb_ms``, ``total_ms``), and a profile of each reply from
pass-through probes in the chain (VAD stop, final transcript, turn decision, LLM request, each
token, first TTS audio, audio handed to Twilio).

Injected latencies (every one a flag) and what counts as injected, per turn
---------------------------------------------------------------------------
``injected = end_of_turn + line_lead + llm_ttft + first_chunk_tokens + tts_ttfb`` where

* ``end_of_turn = min(stop_silence + finalize_delay, max(stop_silence, endpointing +
  final_delay))``: the engine's VAD needs ``stop_silence_ms`` (300) of silence, then asks the
  STT to ``Finalize`` (answered ``--stt-finalize-delay-ms`` later); or Deepgram's own
  endpointing (``endpointing`` 300 ms of silence, then ``--stt-final-delay-ms``). With the
  defaults (150 and 150) both are 450 ms. webrtcvad's hangover (it keeps saying "speech" for
  up to ~100 ms after a voice stops) is NOT injected: it is the engine's choice of VAD.
* ``line_lead = 0``: the sandbox callee sends each 20 ms media packet once the span it carries
  has been spoken, as Twilio does (a ``Say`` step starts on the line clock one frame period
  before its first packet leaves), so nothing is credited to the line. (Checked: the engine
  sees its VAD stop 300-301 ms after the line's end of speech, with ``stop_silence_ms=300``.)
* ``llm_ttft`` (``--llm-ttft-ms``, 350) + ``first_chunk_tokens``: ``(n - 1) / tokens_per_s``
  where ``n`` is the number of streamed tokens (the fake's ``split_tokens`` of the actual
  reply) the engine's sentence chunker (its default settings) needs before the reply's first
  chunk is complete — computed per turn from the reply text, so a reply whose first clause is
  long is charged for it.
* ``tts_ttfb`` (``--tts-ttfb-ms``, 120): the fake TTS sends the first audio that long after
  the chunk's ``Flush``.

``overhead = measured - injected``: everything else — the VAD's hangover, the hops through the
chain, the SDKs, sockets on loopback, event-loop lag, Twilio reframing.

With preemptive generation (``TurnTakingProcessor(preemptive_generation=True)``) the reply
starts at the VAD stop, before the STT has confirmed the words; the *serial sum* it is compared
with is the injected sum above (VAD stop, then the STT's final, then LLM, then TTS).

**Barge-in**: from the caller's barge-in speech crossing the threshold (its start +
``interruption_threshold_ms(sensitivity)``, line clock) to the Twilio ``clear`` received by
the callee. Pipecat has no such threshold (it interrupts on VAD start), so its row gives the
time from the barge-in speech start to the ``clear``.

Pipecat is run on the SAME fakes, same conversation, same endpointing (Deepgram
``endpointing=300``, ``utterance_end_ms=1000``; VAD stop 0.3 s; no extra turn wait); see
``pipecat_turn_latency.py`` for exactly what it runs and what could not be made identical.

Usage::

    .venv/bin/python benchmarks/turn_latency.py            # ~5 min: 1 and 100 calls
    .venv/bin/python benchmarks/turn_latency.py --quick    # smoke run (~1 min)
    .venv/bin/python benchmarks/turn_latency.py --concurrency 1 --calls 3 --no-pipecat

Results: ``benchmarks/results/turn_latency.json`` (``--quick``: ``var/bench-quick/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    QUICK_DIR,
    RESULTS_DIR,
    add_loop_argument,
    machine_info,
    run_on_loop,
    write_json,
)
from _turn_common import (
    AGENT_PROMPT,
    ANTHROPIC_KEY,
    BARGE_IN_AFTER_MS,
    BARGE_IN_LINE,
    CALLER_LINES,
    DEEPGRAM_KEY,
    GREETING,
    LLM_MODEL,
    REPLIES,
    WELCOME,
    LoopLagMonitor,
    percentile,
    stats_payload,
)

ROOT = Path(__file__).resolve().parent.parent
PIPECAT_SCRIPT = Path(__file__).resolve().parent / "pipecat_turn_latency.py"
LINE_LEAD_MS = 0.0
FRAME_MS = 20.0
SYMBOL_MS = 75.0  # sandbox speech: one UTF-8 byte per 75 ms
SENSITIVITY = 50
COMPONENTS = ("endpointing_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "total_ms")


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Injected:
    """The fakes' latencies and the engine settings that add to every turn."""

    stt_final_delay_ms: float = 150.0
    stt_finalize_delay_ms: float = 150.0
    stt_interim_delay_ms: float = 30.0
    llm_ttft_ms: float = 350.0
    llm_tokens_per_s: float = 60.0
    tts_ttfb_ms: float = 120.0
    tts_speed: float = 4.0
    vad_stop_silence_ms: float = 300.0
    stt_endpointing_ms: float = 300.0

    def fakes_args(self) -> list[str]:
        return [
            f"--stt-final-delay-ms={self.stt_final_delay_ms}",
            f"--stt-finalize-delay-ms={self.stt_finalize_delay_ms}",
            f"--stt-interim-delay-ms={self.stt_interim_delay_ms}",
            f"--llm-ttft-ms={self.llm_ttft_ms}",
            f"--llm-tokens-per-s={self.llm_tokens_per_s}",
            f"--tts-ttfb-ms={self.tts_ttfb_ms}",
            f"--tts-speed={self.tts_speed}",
        ]

    def end_of_turn_ms(self) -> float:
        by_vad = self.vad_stop_silence_ms + self.stt_finalize_delay_ms
        by_stt = max(self.vad_stop_silence_ms, self.stt_endpointing_ms + self.stt_final_delay_ms)
        return min(by_vad, by_stt)


def first_chunk_tokens(reply: str) -> int:
    """How many streamed tokens of ``reply`` the engine's chunker needs for its first chunk."""
    from nixflex_engine.processors.text import SentenceChunker
    from nixflex_engine.sandbox.fake_anthropic import split_tokens

    chunker = SentenceChunker()  # the TTS processor's defaults
    pieces = split_tokens(reply)
    for n, piece in enumerate(pieces, 1):
        if chunker.push(piece):
            return n
    return len(pieces)  # the first chunk is the whole reply, at its end


def reply_for(text: str) -> str | None:
    """The fake model's reply to caller line ``text`` (the benchmark's rules)."""
    for pattern, reply in REPLIES:
        if re.search(pattern, text, flags=re.IGNORECASE):
            return reply
    return None


def injected_for(reply: str, inj: Injected, *, preemptive: bool) -> dict[str, float]:
    """The injected latencies of one turn, by part; ``total`` is their sum."""
    n = first_chunk_tokens(reply)
    parts = {
        "end_of_turn_ms": inj.vad_stop_silence_ms if preemptive else inj.end_of_turn_ms(),
        "line_lead_ms": LINE_LEAD_MS,
        "llm_ttft_ms": inj.llm_ttft_ms,
        "first_chunk_tokens": float(n),
        "first_chunk_tokens_ms": (n - 1) * 1000.0 / inj.llm_tokens_per_s,
        "tts_ttfb_ms": inj.tts_ttfb_ms,
    }
    parts["total_ms"] = sum(v for k, v in parts.items() if k.endswith("_ms"))
    return parts


# --- role: fakes ---------------------------------------------------------------------------


async def run_fakes(args: argparse.Namespace) -> None:
    """Serve the fakes with the benchmark's replies until SIGTERM; print ``READY url``."""
    from nixflex_engine.sandbox.app import build_sandbox_app
    from nixflex_engine.sandbox.fake_anthropic import AnthropicSettings, FakeAnthropic, Rule
    from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
    from nixflex_engine.sandbox.serve import serve_app

    deepgram = FakeDeepgram(
        api_key=DEEPGRAM_KEY,
        listen=ListenSettings(
            final_delay_ms=args.stt_final_delay_ms,
            interim_delay_ms=args.stt_interim_delay_ms,
            finalize_delay_ms=args.stt_finalize_delay_ms,
        ),
        speak=SpeakSettings(ttfb_ms=args.tts_ttfb_ms, speed=args.tts_speed),
    )
    anthropic = FakeAnthropic(
        AnthropicSettings(
            ttft_ms=args.llm_ttft_ms, tokens_per_s=args.llm_tokens_per_s, api_key=ANTHROPIC_KEY
        )
    )
    anthropic.rules.extend(Rule(pattern, reply) for pattern, reply in REPLIES)
    stop = _stop_event()
    async with serve_app(build_sandbox_app(deepgram=deepgram, anthropic=anthropic)) as url:
        print(f"READY {url}", flush=True)
        await stop.wait()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


# --- role: engine (ours) -------------------------------------------------------------------


@dataclass(slots=True)
class _Reply:
    """One reply's profile on the run clock (ms)."""

    speech_end_ms: float
    decided_ms: float
    preemptive: bool
    vad_stop_seen_ms: float | None = None
    final_ms: float | None = None
    confirmed_ms: float | None = None
    llm_start_ms: float | None = None
    tokens_ms: list[float] = field(default_factory=list)
    first_audio_ms: float | None = None
    interrupted: bool = False
    mono_offset_ms: float = math.nan  # monotonic ms - run clock ms (to put it on the line)

    def as_dict(self, play_at_ms: float) -> dict[str, Any]:
        def rel(v: float | None) -> float | None:
            return None if v is None else round(v - self.speech_end_ms, 2)

        return {
            "preemptive": self.preemptive,
            "vad_stop_ms": rel(self.vad_stop_seen_ms),
            "final_ms": rel(self.final_ms),
            "decided_ms": rel(self.decided_ms),
            "confirmed_ms": rel(self.confirmed_ms),
            "llm_start_ms": rel(self.llm_start_ms),
            "tokens_ms": [rel(t) for t in self.tokens_ms],
            "first_audio_ms": rel(self.first_audio_ms),
            "played_ms": rel(play_at_ms),
            "speech_end_mono_ms": round(self.speech_end_ms + self.mono_offset_ms, 3),
        }


class TurnProfiler:
    """Per-call profile of each reply, fed by :class:`ProbeProcessor` s (run clock)."""

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self._open: _Reply | None = None
        self._vad_stop: tuple[float, float] | None = None  # (stop_ms, seen at)
        self._vad_stop_mono = math.nan
        self._final_ms: float | None = None
        self._final_mono = math.nan
        from nixflex_engine import frames as f

        #: The frame types it reads (the probes skip every other frame at once).
        self.watched: frozenset[type] = frozenset(
            (
                f.InterruptionFrame,
                f.LLMResponseStartFrame,
                f.LLMTextFrame,
                f.OutputAudioFrame,
                f.PlayedAudioFrame,
                f.TranscriptFrame,
                f.UserStoppedSpeakingFrame,
                f.UserTurnEndedFrame,
            )
        )

    def on_frame(self, frame: Any, now: float, mono_ms: float) -> None:
        from nixflex_engine.frames import (
            InterruptionFrame,
            LLMResponseStartFrame,
            LLMTextFrame,
            OutputAudioFrame,
            PlayedAudioFrame,
            TranscriptFrame,
            UserStoppedSpeakingFrame,
            UserTurnEndedFrame,
        )

        cur = self._open
        if isinstance(frame, UserStoppedSpeakingFrame):
            if self._vad_stop is None or self._vad_stop[0] != frame.stop_ms:
                self._vad_stop = (frame.stop_ms, now)
                self._vad_stop_mono = mono_ms
        elif isinstance(frame, TranscriptFrame):
            if frame.text.strip():
                self._final_ms = frame.received_ms or now
                self._final_mono = mono_ms
        elif isinstance(frame, UserTurnEndedFrame):
            if (
                not frame.preemptive
                and cur is not None
                and cur.preemptive
                and cur.confirmed_ms is None
                and not cur.interrupted
            ):
                cur.confirmed_ms = now
                if cur.final_ms is None:
                    cur.final_ms = self._final_ms
                return
            reply = _Reply(frame.speech_end_ms, frame.decided_ms, frame.preemptive)
            reply.mono_offset_ms = mono_ms - now
            vad = self._vad_stop
            if vad is not None and abs(vad[0] - frame.speech_end_ms) < 1.0:
                reply.vad_stop_seen_ms = vad[1]
            if self._final_ms is not None and self._final_ms <= now:
                reply.final_ms = self._final_ms
            self._open = reply
        elif isinstance(frame, LLMResponseStartFrame):
            if cur is not None and cur.first_audio_ms is None:
                cur.llm_start_ms = now
                cur.tokens_ms = []
        elif isinstance(frame, LLMTextFrame):
            if cur is not None and cur.first_audio_ms is None:
                cur.tokens_ms.append(now)
        elif isinstance(frame, OutputAudioFrame):
            if cur is not None and cur.first_audio_ms is None and cur.llm_start_ms is not None:
                cur.first_audio_ms = now
        elif isinstance(frame, PlayedAudioFrame):
            if cur is not None and frame.play_at_ms >= cur.decided_ms:
                self.replies.append(cur.as_dict(frame.play_at_ms))
                self._open = None
        elif isinstance(frame, InterruptionFrame):
            if cur is not None:
                cur.interrupted = True
                if cur.first_audio_ms is None:
                    self._open = None


def _probe_class() -> type:
    from nixflex_engine.frames import Frame
    from nixflex_engine.pipeline import FrameDirection, FrameProcessor

    class ProbeProcessor(FrameProcessor):
        """Pass-through: shows downstream frames to a :class:`TurnProfiler` (~1 µs a frame)."""

        def __init__(self, profiler: TurnProfiler, name: str) -> None:
            super().__init__(name=name)
            self._profiler = profiler
            self._watched = profiler.watched

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if type(frame) in self._watched and direction == FrameDirection.DOWNSTREAM:
                self._profiler.on_frame(frame, self.now_ms(), time.monotonic() * 1000.0)
            await self.push_frame(frame, direction)

    return ProbeProcessor


def build_chain(
    ctx: Any, *, preemptive: bool, profiler: TurnProfiler, stt_send_chunk_ms: float = 0.0
) -> Any:
    """``build_standard_chain``'s processors, with ``preemptive_generation`` as asked and four
    pass-through probes (after the STT, the LLM, the TTS, and at the end)."""
    from nixflex_engine.calls.chain import build_standard_chain
    from nixflex_engine.pipeline import Pipeline
    from nixflex_engine.processors.llm import ClaudeLLM
    from nixflex_engine.processors.stt import DeepgramSTT
    from nixflex_engine.processors.tts import TextToSpeech
    from nixflex_engine.processors.turns import TurnTakingProcessor

    standard = build_standard_chain(ctx)
    processors = list(standard.processors)
    probe = _probe_class()
    out = []
    agent = ctx.agent
    for p in processors:
        if isinstance(p, TurnTakingProcessor):
            p = TurnTakingProcessor(
                interruption_sensitivity=agent.interruption_sensitivity,
                silence_hangup_seconds=agent.silence_hangup_seconds,
                max_call_duration_seconds=agent.max_call_duration_seconds,
                preemptive_generation=preemptive,
            )
        out.append(p)
        if isinstance(p, DeepgramSTT):
            if stt_send_chunk_ms:
                p.send_chunk_bytes = max(1, int(stt_send_chunk_ms * 8))
            out.append(probe(profiler, "probe_stt"))
        elif isinstance(p, ClaudeLLM):
            out.append(probe(profiler, "probe_llm"))
        elif isinstance(p, TextToSpeech):
            out.append(probe(profiler, "probe_tts"))
    out.append(probe(profiler, "probe_end"))
    return Pipeline(out, name="agent")


async def run_engine(args: argparse.Namespace) -> None:
    """Serve our engine's Twilio media endpoint until SIGTERM; one ``CALL {json}`` line per
    finished call; ``GET /stats[?reset=1]`` gives the process's CPU and loop lag."""
    from pydantic import SecretStr
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from nixflex_engine.calls.chain import AgentProfile, CallContext, ProviderClients
    from nixflex_engine.calls.run import run_call
    from nixflex_engine.config import Settings
    from nixflex_engine.sandbox.serve import serve_app
    from nixflex_engine.transports.twilio_media import TwilioMediaTransport, twilio_media_route
    from nixflex_engine.transports.twilio_protocol import StartEvent

    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()
    settings = Settings(
        deepgram_api_key=SecretStr(DEEPGRAM_KEY),
        deepgram_base_url=args.fakes_url,
        anthropic_api_key=SecretStr(ANTHROPIC_KEY),
        anthropic_base_url=args.fakes_url,
    )
    agent = AgentProfile(
        system_prompt=AGENT_PROMPT,
        welcome_message=WELCOME,
        llm_model=LLM_MODEL,
        interruption_sensitivity=SENSITIVITY,
        voicemail_action="hangup",
        record_call=False,
    )
    # One set of SDK clients for every call (calls.chain.ProviderClients); --per-call-clients
    # builds them per call, as a CallContext without ``clients`` does.
    clients = None if args.per_call_clients else ProviderClients.from_settings(settings)
    monitor = LoopLagMonitor()
    monitor.start()

    async def on_stream(transport: TwilioMediaTransport, start: StartEvent) -> None:
        ctx = CallContext(
            call_id=start.call_sid,
            agent=agent,
            transport=transport,
            settings=settings,
            clients=clients,
        )
        profiler = TurnProfiler()
        chain = build_chain(
            ctx,
            preemptive=args.engine_preemptive,
            profiler=profiler,
            stt_send_chunk_ms=args.stt_send_chunk_ms,
        )
        outcome = await run_call(chain, call_id=start.call_sid)
        line = {
            "call_sid": start.call_sid,
            "ended_reason": outcome.ended_reason,
            "latency": outcome.latency,
            "profile": profiler.replies,
            "transcript": [t.as_dict() for t in outcome.transcript],
            "errors": outcome.errors,
        }
        print("CALL " + json.dumps(line, default=str), flush=True)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(stats_payload(monitor, reset="reset" in request.query_params))

    app = Starlette(routes=[twilio_media_route("/media", on_stream), Route("/stats", stats)])
    stop = _stop_event()
    async with serve_app(app) as url:
        print(f"READY {url}", flush=True)
        await stop.wait()


# --- role: orchestrator --------------------------------------------------------------------


def _engine_priority() -> None:
    """In the engine's child: back to nice 0 (the harness runs niced)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


class Child:
    """A subprocess that prints ``READY url`` when it serves, then ``CALL {json}`` lines."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.url = ""
        self.calls: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[str] | None = None
        self._call_event = asyncio.Event()

    async def __aenter__(self) -> Child:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            preexec_fn=_engine_priority if self.name != "fakes" else None,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            limit=1 << 24,
        )
        self._reader = loop.create_task(self._read())
        try:
            self.url = await asyncio.wait_for(asyncio.shield(self._ready), 120)
        except BaseException:
            await self.__aexit__(None, None, None)
            tail = "\n    ".join(self.log[-15:])
            raise RuntimeError(f"{self.name} did not start:\n    {tail}") from None
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith("READY ") and self._ready is not None and not self._ready.done():
                self._ready.set_result(line.split(" ", 1)[1])
            elif line.startswith("CALL "):
                data = json.loads(line[5:])
                self.calls[data["call_sid"]] = data
                self._call_event.set()
            else:
                self.log.append(line)
                if len(self.log) > 2000:
                    del self.log[:1000]
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError("exited"))

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def wait_calls(self, sids: Sequence[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(s in self.calls for s in sids):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._call_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._call_event.wait(), left)

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 5)
        log_dir = os.environ.get("TURN_LATENCY_CHILD_LOGS")  # for debugging: its output
        if log_dir:
            await asyncio.to_thread(self._write_log, Path(log_dir))

    def _write_log(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", self.name)
        (log_dir / f"{name}.log").write_text("\n".join(self.log) + "\n")


async def _get_json(url: str) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(url)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


def proc_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (NaN if unknown)."""
    if pid is None:
        return math.nan
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def callee_script(turns: int, barge_in: bool) -> list[Any]:
    from nixflex_engine.sandbox.callee import (
        BargeIn,
        Hangup,
        Say,
        UntilAgentSilent,
        UntilAgentSpeaks,
    )

    steps: list[Any] = [Say(GREETING), UntilAgentSilent(silence_ms=600)]
    lines = plain_lines(turns, barge_in)
    for line in lines:
        steps += [Say(line), UntilAgentSilent(silence_ms=600)]
    if barge_in:
        steps[-1:] = [BargeIn(BARGE_IN_LINE, after_ms=BARGE_IN_AFTER_MS)]
        steps += [UntilAgentSpeaks(), UntilAgentSilent(silence_ms=600)]
    steps.append(Hangup())
    return steps


def plain_lines(turns: int, barge_in: bool) -> list[str]:
    """The caller's lines; with a barge-in the last one is the question with the long reply,
    which the barge-in then interrupts mid-sentence."""
    if not barge_in or turns == 0:
        return list(CALLER_LINES[:turns])
    return [*CALLER_LINES[: turns - 1], CALLER_LINES[-1]]


def measured_lines(turns: int, barge_in: bool) -> list[str]:
    """The caller lines whose reply is measured, in order."""
    lines = plain_lines(turns, barge_in)
    return [*lines, BARGE_IN_LINE] if barge_in else lines


def analyse_callee(
    result: Any, lines: list[str], barge_in: bool, threshold_ms: float
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[str]]:
    """Per-turn latency from the callee's records; the barge-in figure; problems seen."""
    from nixflex_engine.sandbox.callee import Say

    problems: list[str] = []
    records = {r.step: r for r in result.steps}
    segments = result.heard_segments
    turns: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        rec = records.get(repr(Say(line)))
        if rec is None:
            problems.append(f"line {i + 1} never said")
            continue
        end = rec.started_ms + len(line.encode()) * SYMBOL_MS
        heard = next((s for s in segments if s.start_ms >= end - 1e-6), None)
        overlap = next((s for s in segments if s.start_ms < end < s.end_ms), None)
        if heard is None:
            problems.append(f"line {i + 1}: no agent audio heard after it")
            continue
        turns.append(
            {
                "index": i + 1,
                "line": line,
                "speech_end_line_ms": round(end, 2),
                "heard_line_ms": round(heard.start_ms, 2),
                "measured_ms": round(heard.start_ms - end, 2),
                "agent_audio_over_end": overlap is not None,
            }
        )
    barge: dict[str, Any] | None = None
    if barge_in:
        rec = records.get(repr(Say(BARGE_IN_LINE)))
        if rec is None:
            problems.append("barge-in never said")
        else:
            clear = next((c for c in result.clears if c.at_ms >= rec.started_ms), None)
            if clear is None:
                problems.append("no clear after the barge-in")
            else:
                barge = {
                    "speech_start_line_ms": round(rec.started_ms, 2),
                    "clear_line_ms": round(clear.at_ms, 2),
                    "from_speech_start_ms": round(clear.at_ms - rec.started_ms, 2),
                    "after_threshold_ms": round(clear.at_ms - rec.started_ms - threshold_ms, 2),
                }
    if result.protocol_violations:
        problems += [f"protocol: {v}" for v in result.protocol_violations[:3]]
    if result.script_errors:
        problems += [f"script: {e}" for e in result.script_errors[:3]]
    return turns, barge, problems


@dataclass(slots=True)
class Scenario:
    engine: str  # "nixflex" | "pipecat"
    mode: str  # "standard" | "preemptive" | "pipecat-ws" | ...
    concurrency: int
    calls: int  # sequential rounds x concurrency


async def run_scenario(
    sc: Scenario,
    fakes: Child,
    args: argparse.Namespace,
    inj: Injected,
) -> dict[str, Any]:
    from nixflex_engine.processors.turns import interruption_threshold_ms
    from nixflex_engine.sandbox.callee import SandboxCallee

    threshold = interruption_threshold_ms(SENSITIVITY) or math.nan
    fakes_url = fakes.url
    if sc.engine == "nixflex":
        argv = [sys.executable, __file__, "--role", "engine", "--fakes-url", fakes_url]
        argv.append(f"--loop={args.loop}")
        if sc.mode == "preemptive":
            argv.append("--engine-preemptive")
        if args.gc_freeze:
            argv.append("--gc-freeze")
        if args.per_call_clients:
            argv.append("--per-call-clients")
        if args.stt_send_chunk_ms:
            argv.append(f"--stt-send-chunk-ms={args.stt_send_chunk_ms}")
        if args.cprofile:
            argv.append(f"--cprofile={args.cprofile}.{sc.mode}.{sc.concurrency}")
    else:
        argv = [
            args.pipecat_python,
            str(PIPECAT_SCRIPT),
            "--fakes-url",
            fakes_url,
            "--tts",
            "http" if sc.mode.startswith("pipecat-http") else "ws",
            "--vad",
            "silero" if sc.mode.endswith("-silero") else "webrtc",
            f"--vad-stop-secs={inj.vad_stop_silence_ms / 1000}",
            f"--endpointing-ms={int(inj.stt_endpointing_ms)}",
            f"--loop={args.loop}",
        ]
    label = f"{sc.engine}/{sc.mode} x{sc.concurrency}"
    print(f"\n== {label}: {sc.calls} call(s); load {os.getloadavg()[0]:.2f} ==", flush=True)
    preemptive = sc.mode == "preemptive"
    lines = measured_lines(args.turns, args.barge_in)
    script = callee_script(args.turns, args.barge_in)
    rng = random.Random(7)
    rounds = max(1, sc.calls // sc.concurrency)
    t0_ms: dict[str, float] = {}
    unmatched: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    turns: list[dict[str, Any]] = []
    barges: list[dict[str, Any]] = []
    problems: list[str] = []
    async with Child(label, argv) as engine:
        ws_url = engine.url.replace("http://", "ws://") + "/media"
        await _get_json(engine.url + "/stats?reset=1")
        t0 = time.perf_counter()
        cpu0 = (proc_cpu_s(fakes.pid), time.process_time())
        for rnd in range(rounds):

            async def one(k: int, delay: float) -> Any:
                await asyncio.sleep(delay)
                callee = SandboxCallee(ws_url, script, max_call_ms=120_000)
                res = await asyncio.wait_for(callee.run(), 240)
                # The line clock's origin on the monotonic clock (the engine's probes use the
                # same clock), to put the engine's events on the line clock.
                t0_ms[res.call_sid] = callee._t0 * 1000.0
                return res

            spread = args.stagger_s if sc.concurrency > 1 else 0.0
            results = await asyncio.gather(
                *(one(k, rng.uniform(0, spread)) for k in range(sc.concurrency)),
                return_exceptions=True,
            )
            ok = [r for r in results if not isinstance(r, BaseException)]
            for r in results:
                if isinstance(r, BaseException):
                    problems.append(f"callee failed: {r!r}")
            if sc.engine == "nixflex":
                await engine.wait_calls([r.call_sid for r in ok], 20)
            for k, res in enumerate(ok):
                call_no = rnd * sc.concurrency + k + 1
                ts, barge, probs = analyse_callee(res, lines, args.barge_in, threshold)
                problems += [f"call {call_no}: {p}" for p in probs]
                eng = engine.calls.get(res.call_sid)
                eng_turns = (eng or {}).get("latency", {}).get("turns", [])
                profile = (eng or {}).get("profile", [])
                if eng is not None and eng.get("errors"):
                    problems += [f"call {call_no} engine: {e}" for e in eng["errors"][:3]]
                matched = len(eng_turns) == len(ts) and len(ts) == len(lines)
                if eng is not None and not matched:
                    problems.append(
                        f"call {call_no}: engine measured {len(eng_turns)} replies, "
                        f"callee {len(ts)}"
                    )
                    unmatched.append(
                        {
                            "call": call_no,
                            "callee_turns": ts,
                            "engine_latency": eng.get("latency"),
                            "engine_profile": profile,
                        }
                    )
                for j, t in enumerate(ts):
                    reply = reply_for(t["line"]) or ""
                    t["call"] = call_no
                    t["reply"] = reply
                    t["injected"] = injected_for(reply, inj, preemptive=preemptive)
                    if preemptive:
                        t["serial_injected_ms"] = injected_for(reply, inj, preemptive=False)[
                            "total_ms"
                        ]
                    t["overhead_ms"] = round(t["measured_ms"] - t["injected"]["total_ms"], 2)
                    if matched:
                        t["engine"] = eng_turns[j]
                        if j < len(profile):
                            t["profile"] = profile[j]
                            # engine speech end (its run clock) vs the line's, in line ms
                            t["engine_clock_shift_ms"] = round(
                                profile[j]["speech_end_mono_ms"]
                                - t0_ms.get(res.call_sid, math.nan)
                                - t["speech_end_line_ms"],
                                2,
                            )
                    turns.append(t)
                if barge is not None:
                    barge["call"] = call_no
                    barges.append(barge)
        wall = time.perf_counter() - t0
        stats = await _get_json(engine.url + "/stats")
        cpu = {
            "engine_s": round(stats["cpu_s"], 2),
            "fakes_s": round(proc_cpu_s(fakes.pid) - cpu0[0], 2),
            "callees_s": round(time.process_time() - cpu0[1], 2),
        }
        if sc.engine != "nixflex":
            await asyncio.sleep(0.5)
    load_after = os.getloadavg()
    summary = summarize(turns, barges, sc, preemptive)
    summary["engine_process"] = {
        **stats,
        "cpu_ms_per_turn": (stats["cpu_s"] * 1000 / len(turns)) if turns else math.nan,
    }
    out = {
        "engine": sc.engine,
        "mode": sc.mode,
        "concurrency": sc.concurrency,
        "calls": sc.calls,
        "wall_s": round(wall, 2),
        "cpu_by_process": cpu,
        "load_before": load_before,
        "load_after": load_after,
        "summary": summary,
        "turns": turns,
        "barge_in": barges,
        "problems": problems,
        "unmatched_calls": unmatched[:5],
    }
    print_scenario(out, waterfall=sc.concurrency == 1 or args.waterfall_all)
    return out


def _pct(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "max": round(max(values), 1) if values else math.nan,
    }


def summarize(
    turns: list[dict[str, Any]], barges: list[dict[str, Any]], sc: Scenario, preemptive: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "measured_ms": _pct([t["measured_ms"] for t in turns]),
        "injected_ms": _pct([t["injected"]["total_ms"] for t in turns]),
        "overhead_ms": _pct([t["overhead_ms"] for t in turns]),
        "barge_in_after_threshold_ms": _pct([b["after_threshold_ms"] for b in barges]),
        "barge_in_from_speech_start_ms": _pct([b["from_speech_start_ms"] for b in barges]),
    }
    if preemptive:
        out["serial_injected_ms"] = _pct([t["serial_injected_ms"] for t in turns])
    eng = [t["engine"] for t in turns if "engine" in t]
    if eng:
        out["engine"] = {
            name: _pct([float(e[name]) for e in eng if e.get(name) is not None])
            for name in COMPONENTS
        }
    prof = [t for t in turns if "profile" in t]
    if prof:
        out["profile"] = profile_summary(prof)
    return out


def profile_breakdown(t: dict[str, Any]) -> dict[str, float | None]:
    """Where one turn's time went (None where a probe saw nothing): points in time in ms after
    the caller's speech ended on the line clock (the engine's events put on it through the
    shared monotonic clock), and ``..._to_...`` spans between two of them."""
    p, inj = t["profile"], t["injected"]
    n = int(inj["first_chunk_tokens"])
    toks = p["tokens_ms"]
    chunk_tok = toks[n - 1] if len(toks) >= n else None
    first_tok = toks[0] if toks else None

    def d(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 2)

    start = p["llm_start_ms"]
    shift = t.get("engine_clock_shift_ms", math.nan)

    def line(v: float | None) -> float | None:
        return None if v is None or math.isnan(shift) else round(v + shift, 2)

    return {
        "engine_speech_end_ms": line(0.0),
        "vad_stop_ms": line(p["vad_stop_ms"]),
        "final_ms": line(p["final_ms"]),
        "decided_ms": line(p["decided_ms"]),
        "decided_to_llm_start_ms": d(start, p["decided_ms"]),
        "llm_first_token_ms": d(first_tok, start),
        "first_chunk_token_ms": d(chunk_tok, start),
        "chunk_to_first_audio_ms": d(p["first_audio_ms"], chunk_tok),
        "first_audio_to_played_ms": d(p["played_ms"], p["first_audio_ms"]),
        "played_ms": line(p["played_ms"]),
        "heard_ms": t["measured_ms"],
    }


def profile_summary(turns: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [profile_breakdown(t) for t in turns]
    keys = rows[0].keys() if rows else []
    return {k: _pct([float(v) for r in rows if (v := r[k]) is not None]) for k in keys}


def _f(v: Any, width: int = 6) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-".rjust(width)
    return f"{v:{width}.0f}"


def print_scenario(out: dict[str, Any], *, waterfall: bool) -> None:
    s = out["summary"]
    turns = out["turns"]
    if waterfall and turns:
        print(
            "  call turn | measured injected overhead | engine: endp   stt  ttft  ttfb total |"
            " vad_stop final decided llm+1st chunk audio played"
        )
        for t in turns:
            e = t.get("engine", {})
            b = profile_breakdown(t) if "profile" in t else {}
            print(
                f"  {t['call']:>4} {t['index']:>4} | {_f(t['measured_ms'], 8)} "
                f"{_f(t['injected']['total_ms'], 8)} {_f(t['overhead_ms'], 8)} |"
                f"         {_f(e.get('endpointing_ms'), 5)} {_f(e.get('stt_ms'), 5)}"
                f" {_f(e.get('llm_ttft_ms'), 5)} {_f(e.get('tts_ttfb_ms'), 5)}"
                f" {_f(e.get('total_ms'), 5)} |"
                f" {_f(b.get('vad_stop_ms'), 8)} {_f(b.get('final_ms'), 5)}"
                f" {_f(b.get('decided_ms'), 7)} {_f(b.get('llm_first_token_ms'), 7)}"
                f" {_f(b.get('first_chunk_token_ms'), 5)} {_f(b.get('chunk_to_first_audio_ms'), 5)}"
                f" {_f(b.get('played_ms'), 6)}"
            )
    m, i, o = s["measured_ms"], s["injected_ms"], s["overhead_ms"]
    print(
        f"  turns {m['n']}: measured p50 {m['p50']} p95 {m['p95']} ms | injected p50 {i['p50']}"
        f" | overhead p50 {o['p50']} p95 {o['p95']} ms"
    )
    if "serial_injected_ms" in s:
        print(f"  serial sum of injected latencies p50 {s['serial_injected_ms']['p50']} ms")
    if "engine" in s:
        parts = ", ".join(f"{k[:-3]} {v['p50']}/{v['p95']}" for k, v in s["engine"].items())
        print(f"  engine's own figures p50/p95 (ms): {parts}")
    if "profile" in s:
        parts = ", ".join(f"{k[:-3]} {v['p50']}/{v['p95']}" for k, v in s["profile"].items())
        print(f"  engine profile p50/p95 (ms after speech end / between steps): {parts}")
    b = s["barge_in_after_threshold_ms"]
    if b["n"]:
        print(
            f"  barge-in: clear {b['p50']} ms p50 / {b['p95']} ms p95 after the threshold; "
            f"{s['barge_in_from_speech_start_ms']['p50']} ms p50 after speech start"
        )
    elif s["barge_in_from_speech_start_ms"]["n"]:
        print(f"  barge-in: clear {s['barge_in_from_speech_start_ms']} after speech start")
    ep = s["engine_process"]
    print(
        f"  engine process: CPU {ep['cpu_s']:.2f} s ({ep['cpu_ms_per_turn']:.1f} ms/turn), "
        f"waited for a CPU {ep['runqueue_wait_s']:.2f} s, loop lag p50 "
        f"{ep['loop_lag_ms']['p50']:.2f} p99 {ep['loop_lag_ms']['p99']:.2f} max "
        f"{ep['loop_lag_ms']['max']:.1f} ms; load {out['load_before'][0]:.2f} → "
        f"{out['load_after'][0]:.2f}"
    )
    c = out["cpu_by_process"]
    print(
        f"  CPU over {out['wall_s']:.0f} s: engine {c['engine_s']} s, fakes {c['fakes_s']} s, "
        f"callees {c['callees_s']} s"
    )
    if out["problems"]:
        print(f"  problems ({len(out['problems'])}): " + "; ".join(out["problems"][:5]))


async def calibrate(fakes_url: str, inj: Injected, lines: list[str], rounds: int) -> dict[str, Any]:
    """What the fakes deliver to a minimal client (raw httpx / websockets, no engine), on this
    machine now: the LLM's first token and first-chunk token, and the TTS's first byte, each
    minus its nominal latency (ms). Their p50 sum is the floor any engine pays here (loopback,
    the fakes' own event loop and CPU); ``overhead_minus_fakes_floor_ms`` subtracts it. (The
    STT's part is seen in the engine's profile: the final's arrival after the VAD stop.)"""
    import httpx
    from websockets.asyncio.client import connect

    llm_first: list[float] = []
    llm_chunk: list[float] = []
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=fakes_url, timeout=30) as client:
        for _ in range(rounds):
            for line in lines:
                reply = reply_for(line) or ""
                n = first_chunk_tokens(reply)
                body = {
                    "model": LLM_MODEL,
                    "max_tokens": 300,
                    "stream": True,
                    "system": AGENT_PROMPT,
                    "messages": [{"role": "user", "content": line}],
                }
                t0 = time.perf_counter()
                k = 0
                async with client.stream("POST", "/v1/messages", json=body, headers=headers) as r:
                    async for raw in r.aiter_lines():
                        if raw.startswith("data:") and '"content_block_delta"' in raw:
                            k += 1
                            dt = (time.perf_counter() - t0) * 1000.0
                            if k == 1:
                                llm_first.append(dt - inj.llm_ttft_ms)
                            if k == n:
                                nominal = inj.llm_ttft_ms + (n - 1) * 1000.0 / inj.llm_tokens_per_s
                                llm_chunk.append(dt - nominal)
    ws_base = fakes_url.replace("http://", "ws://", 1)
    auth = {"Authorization": f"Token {DEEPGRAM_KEY}"}
    tts: list[float] = []
    speak_url = ws_base + "/v1/speak?model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000"
    async with connect(speak_url, additional_headers=auth) as ws:
        for _ in range(rounds):
            for line in lines:
                await ws.send(json.dumps({"type": "Speak", "text": reply_for(line) or line}))
                t0 = time.perf_counter()
                await ws.send(json.dumps({"type": "Flush"}))
                first = None
                async for msg in ws:
                    if isinstance(msg, bytes) and first is None:
                        first = (time.perf_counter() - t0) * 1000.0
                        tts.append(first - inj.tts_ttfb_ms)
                    elif isinstance(msg, str) and '"Flushed"' in msg:
                        break
    chunk, first_byte = _pct(llm_chunk), _pct(tts)
    return {
        "llm_first_token_extra_ms": _pct(llm_first),
        "llm_first_chunk_extra_ms": chunk,
        "tts_first_byte_extra_ms": first_byte,
        "floor_p50_ms": round(chunk["p50"] + first_byte["p50"], 2),
    }


def pipecat_available(python: str) -> str | None:
    """None if ``python`` can run the Pipecat side, else why not."""
    import subprocess

    if not Path(python).exists():
        return f"{python} not found (make bench creates .venv-pipecat)"
    probe = (
        "import importlib.metadata as m, deepgram, anthropic, fastapi, uvicorn;"
        "print(m.version('pipecat-ai'))"
    )
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"{python} lacks the pipecat extras: {r.stderr.strip().splitlines()[-1:]}"
    if r.stdout.strip() != "1.14.0":
        return f"{python} has pipecat-ai {r.stdout.strip()}, not 1.14.0"
    return None


def compare(scenarios: list[dict[str, Any]], inj: Injected) -> dict[str, Any]:
    """Ours vs Pipecat, and the targets, from the scenarios' summaries."""

    def find(engine: str, mode: str, conc: int) -> dict[str, Any] | None:
        for s in scenarios:
            if s["engine"] == engine and s["mode"] == mode and s["concurrency"] == conc:
                return s
        return None

    out: dict[str, Any] = {"ratios": [], "targets": {}}
    for conc in sorted({s["concurrency"] for s in scenarios}):
        ours = find("nixflex", "standard", conc)
        for mode in sorted({s["mode"] for s in scenarios if s["engine"] == "pipecat"}):
            theirs = find("pipecat", mode, conc)
            if ours is None or theirs is None:
                continue
            a = ours["summary"]["measured_ms"]["p50"]
            b = theirs["summary"]["measured_ms"]["p50"]
            out["ratios"].append(
                {
                    "concurrency": conc,
                    "pipecat": mode,
                    "ours_p50_ms": a,
                    "pipecat_p50_ms": b,
                    "ours_p95_ms": ours["summary"]["measured_ms"]["p95"],
                    "pipecat_p95_ms": theirs["summary"]["measured_ms"]["p95"],
                    "pipecat_over_ours": round(b / a, 3) if a else math.nan,
                }
            )
    t = out["targets"]
    for conc in sorted({s["concurrency"] for s in scenarios}):
        ours = find("nixflex", "standard", conc)
        if ours is None:
            continue
        o = ours["summary"]["overhead_ms"]
        t[f"overhead_x{conc}"] = {
            "p50_ms": o["p50"],
            "p95_ms": o["p95"],
            "target": "p50 <= 5 ms and p95 <= 20 ms",
            "met": bool(o["p50"] <= 5 and o["p95"] <= 20),
        }
        f = ours["summary"].get("overhead_minus_fakes_floor_ms")
        if f is not None:
            t[f"overhead_minus_fakes_floor_x{conc}"] = {
                "p50_ms": f["p50"],
                "p95_ms": f["p95"],
                "met": bool(f["p50"] <= 5 and f["p95"] <= 20),
                "note": "informative: the target is on the overhead above",
            }
        b = ours["summary"]["barge_in_after_threshold_ms"]
        if b["n"]:
            t[f"barge_in_x{conc}"] = {
                "p50_ms": b["p50"],
                "max_ms": b["max"],
                "target": "clear <= 50 ms after the threshold (every barge-in)",
                "met": bool(b["max"] <= 50),
            }
        for r in out["ratios"]:
            if r["concurrency"] == conc:
                t[f"below_{r['pipecat']}_x{conc}"] = {
                    "ours_p50_ms": r["ours_p50_ms"],
                    "pipecat_p50_ms": r["pipecat_p50_ms"],
                    "met": bool(r["ours_p50_ms"] < r["pipecat_p50_ms"]),
                }
        pre = find("nixflex", "preemptive", conc)
        if pre is not None:
            m = pre["summary"]["measured_ms"]["p50"]
            serial = pre["summary"]["serial_injected_ms"]["p50"]
            t[f"preemptive_below_serial_x{conc}"] = {
                "measured_p50_ms": m,
                "serial_injected_p50_ms": serial,
                "met": bool(m < serial),
            }
    return out


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    if args.harness_nice:
        # The fakes (started from here, so they inherit it) and the callees (this process)
        # stand for other machines: they yield the CPU to the engine, which runs at nice 0.
        os.nice(args.harness_nice)
    inj = Injected(
        stt_final_delay_ms=args.stt_final_delay_ms,
        stt_finalize_delay_ms=args.stt_finalize_delay_ms,
        stt_interim_delay_ms=args.stt_interim_delay_ms,
        llm_ttft_ms=args.llm_ttft_ms,
        llm_tokens_per_s=args.llm_tokens_per_s,
        tts_ttfb_ms=args.tts_ttfb_ms,
        tts_speed=args.tts_speed,
    )
    levels = [int(c) for c in args.concurrency.split(",") if c]
    pipecat_why = None
    pipecat_modes: list[str] = []
    if not args.no_pipecat:
        pipecat_why = pipecat_available(args.pipecat_python)
        if pipecat_why is None:
            pipecat_modes = [f"pipecat-{m}" for m in args.pipecat_modes.split(",") if m]
        else:
            print(f"Pipecat side skipped: {pipecat_why}", flush=True)
    plan: list[Scenario] = []
    for conc in levels:
        calls = args.calls if conc == 1 else conc
        others = args.calls_others if conc == 1 else conc
        plan.append(Scenario("nixflex", "standard", conc, calls))
        if args.preemptive and (conc == 1 or args.preemptive_all):
            plan.append(Scenario("nixflex", "preemptive", conc, others))
        for mode in pipecat_modes:
            if conc == 1 or args.pipecat_all:
                plan.append(Scenario("pipecat", mode, conc, others))
    print(f"turn_latency: {len(plan)} scenario(s); {machine_info()['uptime']}", flush=True)
    fakes_argv = [
        sys.executable,
        __file__,
        "--role",
        "fakes",
        f"--loop={args.loop}",
        *inj.fakes_args(),
    ]
    scenarios: list[dict[str, Any]] = []
    lines = measured_lines(max(args.turns, 1), False)
    async with Child("fakes", fakes_argv) as fakes:
        calibration = await calibrate(fakes.url, inj, lines, 1 if args.quick else 3)
        print_calibration(calibration)
        for sc in plan:
            scenarios.append(await run_scenario(sc, fakes, args, inj))
    result: dict[str, Any] = {
        "benchmark": "turn_latency",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "injected": {
            "stt_final_delay_ms": inj.stt_final_delay_ms,
            "stt_finalize_delay_ms": inj.stt_finalize_delay_ms,
            "stt_interim_delay_ms": inj.stt_interim_delay_ms,
            "stt_endpointing_ms": inj.stt_endpointing_ms,
            "vad_stop_silence_ms": inj.vad_stop_silence_ms,
            "llm_ttft_ms": inj.llm_ttft_ms,
            "llm_tokens_per_s": inj.llm_tokens_per_s,
            "tts_ttfb_ms": inj.tts_ttfb_ms,
            "tts_speed": inj.tts_speed,
            "line_lead_ms": LINE_LEAD_MS,
            "end_of_turn_ms": inj.end_of_turn_ms(),
            "definition": (
                "injected = min(vad_stop_silence + stt_finalize_delay, max(vad_stop_silence, "
                "stt_endpointing + stt_final_delay)) + line_lead + llm_ttft + (n-1)/tokens_per_s"
                " + tts_ttfb, n = tokens the chunker needs for the reply's first chunk; "
                "preemptive: vad_stop_silence instead of the first term"
            ),
        },
        "conversation": {
            "caller_lines": list(measured_lines(args.turns, args.barge_in)),
            "first_chunk_tokens": {
                line: first_chunk_tokens(reply_for(line) or "")
                for line in measured_lines(args.turns, args.barge_in)
            },
            "barge_in_threshold_ms": _threshold(),
        },
        "fakes_calibration": calibration,
        "pipecat_skipped": pipecat_why,
        "scenarios": scenarios,
    }
    floor = calibration["floor_p50_ms"]
    for sc_out in scenarios:
        if sc_out["engine"] == "nixflex":
            rest = [t["overhead_ms"] - floor for t in sc_out["turns"]]
            sc_out["summary"]["overhead_minus_fakes_floor_ms"] = _pct(rest)
    result["comparison"] = compare(scenarios, inj)
    print_comparison(result["comparison"])
    return result


def print_calibration(cal: dict[str, Any]) -> None:
    parts = ", ".join(
        f"{k[:-3]} {v['p50']}/{v['p95']}" for k, v in cal.items() if isinstance(v, dict)
    )
    print(f"fakes to a minimal client, actual - nominal p50/p95 (ms): {parts}", flush=True)
    print(
        f"  floor of any engine here (LLM first chunk + TTS first byte): {cal['floor_p50_ms']} ms"
    )


def _threshold() -> float | None:
    from nixflex_engine.processors.turns import interruption_threshold_ms

    return interruption_threshold_ms(SENSITIVITY)


def print_comparison(comp: dict[str, Any]) -> None:
    if comp["ratios"]:
        print("\n== ours vs Pipecat 1.14 (median turn latency, callee's side) ==")
        for r in comp["ratios"]:
            print(
                f"  x{r['concurrency']:<4} ours p50 {r['ours_p50_ms']} / p95 {r['ours_p95_ms']} ms"
                f"   {r['pipecat']} p50 {r['pipecat_p50_ms']} / p95 {r['pipecat_p95_ms']} ms"
                f"   Pipecat / ours = {r['pipecat_over_ours']}"
            )
    print("\n== targets ==")
    for name, t in comp["targets"].items():
        verdict = "met" if t["met"] else "MISSED"
        detail = ", ".join(f"{k} {v}" for k, v in t.items() if k not in ("met", "target"))
        print(f"  {name:<28} {verdict:<7} {detail}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=("orchestrate", "fakes", "engine"), default="orchestrate")
    add_loop_argument(p, help_extra="; applies to every process here")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 call x 1 and 5, 2 turns")
    p.add_argument("--concurrency", default="1,100", help="comma-separated levels")
    p.add_argument("--calls", type=int, default=2, help="sequential calls at concurrency 1")
    p.add_argument(
        "--calls-others",
        type=int,
        default=1,
        help="the same for the preemptive and Pipecat scenarios",
    )
    p.add_argument("--turns", type=int, default=3, help="plain caller turns per call (max 4)")
    p.add_argument("--no-barge-in", dest="barge_in", action="store_false")
    p.add_argument("--no-preemptive", dest="preemptive", action="store_false")
    p.add_argument("--preemptive-all", action="store_true", help="also preemptive at >1 call")
    p.add_argument("--no-pipecat", action="store_true")
    p.add_argument("--pipecat-all", action="store_true", help="Pipecat at every level too")
    p.add_argument(
        "--pipecat-modes",
        default="ws,http",
        help="Pipecat configurations: ws, http (its TTS), ws-silero, http-silero (stock VAD)",
    )
    p.add_argument("--pipecat-python", default=str(ROOT / ".venv-pipecat" / "bin" / "python"))
    p.add_argument("--stagger-s", type=float, default=3.0, help="spread of call starts")
    p.add_argument("--waterfall-all", action="store_true", help="per-turn rows at every level")
    p.add_argument("--gc-freeze", action="store_true", help="engine: gc.freeze() at start")
    p.add_argument(
        "--harness-nice",
        type=int,
        default=0,
        help="niceness of the fakes and the callees (the engine stays at 0)",
    )
    p.add_argument(
        "--stt-send-chunk-ms",
        type=float,
        default=0.0,
        help="engine: the STT's send_chunk_ms (0: the processor's default)",
    )
    p.add_argument(
        "--per-call-clients",
        action="store_true",
        help="engine: SDK clients built per call (CallContext without clients), not shared",
    )
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--cprofile", default="", help="engine: write cProfile stats to this file")
    # engine / fakes roles
    p.add_argument("--fakes-url", default="")
    p.add_argument("--engine-preemptive", action="store_true", help=argparse.SUPPRESS)
    inj = Injected()
    p.add_argument("--stt-final-delay-ms", type=float, default=inj.stt_final_delay_ms)
    p.add_argument("--stt-finalize-delay-ms", type=float, default=inj.stt_finalize_delay_ms)
    p.add_argument("--stt-interim-delay-ms", type=float, default=inj.stt_interim_delay_ms)
    p.add_argument("--llm-ttft-ms", type=float, default=inj.llm_ttft_ms)
    p.add_argument("--llm-tokens-per-s", type=float, default=inj.llm_tokens_per_s)
    p.add_argument("--tts-ttfb-ms", type=float, default=inj.tts_ttfb_ms)
    p.add_argument("--tts-speed", type=float, default=inj.tts_speed)
    args = p.parse_args(argv)
    if args.quick:
        if "--concurrency" not in (argv or sys.argv):
            args.concurrency = "1,5"
        args.calls = args.calls_others = 1
        args.turns = min(args.turns, 2)
        args.stagger_s = min(args.stagger_s, 1.0)
    args.turns = max(0, min(args.turns, len(CALLER_LINES)))
    if args.barge_in and args.turns == 0:
        args.barge_in = False
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "fakes":
        run_on_loop(run_fakes(args), args.loop)
        return 0
    if args.role == "engine":
        if args.cprofile:
            import cProfile

            with cProfile.Profile() as prof:
                run_on_loop(run_engine(args), args.loop)
            prof.dump_stats(args.cprofile)
        else:
            run_on_loop(run_engine(args), args.loop)
        return 0
    result = run_on_loop(orchestrate(args), args.loop)
    out = args.json_out or (QUICK_DIR if args.quick else RESULTS_DIR) / "turn_latency.json"
    write_json(out, result)
    print(f"\nresults: {out}")
    bad = [p for s in result["scenarios"] for p in s["problems"]]
    return 1 if bad and not result["scenarios"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
