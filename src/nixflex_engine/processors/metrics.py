"""Per-turn latency: from the end of the caller's speech to the agent's first audio.

:class:`TurnMetricsProcessor` sits at the end of the chain (after the assistant context
aggregator), where every frame it needs passes downstream.

Consumes (downstream; all passed on): ``TranscriptFrame`` (finals: when the transcript
arrived), ``UserTurnEndedFrame`` (speech end, when the turn was decided), ``MetricsFrame``
``llm_ttft_ms``/``tts_ttfb_ms`` (from the LLM and TTS processors), ``InterruptionFrame`` and
``PlayedAudioFrame`` (when the reply's first audio is scheduled to play).

Emits downstream, once per agent reply, when its first audio is scheduled:
``MetricsFrame(name, value, turn, processor=<this processor's name>)`` for each of

* ``endpointing_ms`` — caller speech end → turn decided (for a preemptive turn that was
  confirmed, the tentative decision, which is when the LLM started);
* ``stt_ms`` — caller speech end → the last final transcript of the turn received (0 when
  it came before the VAD noticed the end of speech);
* ``llm_ttft_ms`` and ``tts_ttfb_ms`` — as reported by the LLM and the TTS for that reply;
* ``total_ms`` — caller speech end → first agent audio scheduled to play
  (``PlayedAudioFrame.play_at_ms``).

A value not known is left out (``None`` in the summary). ``turn`` is the LLM request number
when the LLM reported it, else the reply's position in the call. :meth:`TurnMetricsProcessor.
summary` gives the call record's ``latency`` field: the turns, and p50/p95 of each figure
over the call.

The bookkeeping is a pure class, :class:`LatencyTracker`; :func:`percentile` is linear
interpolation between closest ranks (NumPy's default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nixflex_engine.frames import (
    Frame,
    InterruptionFrame,
    MetricsFrame,
    PlayedAudioFrame,
    TranscriptFrame,
    UserTurnEndedFrame,
)
from nixflex_engine.pipeline.processor import DOWNSTREAM, FrameDirection, FrameProcessor
from nixflex_engine.processors.turns import same_utterance

__all__ = [
    "LATENCY_FIELDS",
    "LatencyTracker",
    "TurnLatency",
    "TurnMetricsProcessor",
    "percentile",
]

#: The per-turn figures, in the order the call record lists them.
LATENCY_FIELDS = ("endpointing_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "total_ms")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100) of ``values``, interpolated; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class TurnLatency:
    """The latency figures of one agent reply (milliseconds; ``None`` when not known)."""

    index: int
    turn: int | None
    speech_end_ms: float
    endpointing_ms: float | None
    stt_ms: float | None
    llm_ttft_ms: float | None
    tts_ttfb_ms: float | None
    total_ms: float | None
    preemptive: bool = False

    @property
    def number(self) -> int:
        """The LLM request number if known, else the position in the call."""
        return self.turn if self.turn is not None else self.index

    def figures(self) -> dict[str, float | None]:
        """The five figures by name."""
        return {name: getattr(self, name) for name in LATENCY_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``turn``, the five figures (1 decimal) and ``preemptive``."""
        out: dict[str, Any] = {"turn": self.number}
        for name, value in self.figures().items():
            out[name] = None if value is None else round(value, 1)
        out["preemptive"] = self.preemptive
        return out


@dataclass(slots=True)
class _Open:
    text: str
    speech_end_ms: float
    decided_ms: float
    preemptive: bool
    stt_ms: float | None
    confirmed: bool = False
    turn: int | None = None
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None


class LatencyTracker:
    """Pure bookkeeping of per-turn latency; feed it events in the order frames arrive."""

    __slots__ = ("_last_final_ms", "_open", "_turns")

    def __init__(self) -> None:
        self._turns: list[TurnLatency] = []
        self._open: _Open | None = None
        self._last_final_ms: float | None = None

    @property
    def turns(self) -> list[TurnLatency]:
        """The measured replies, in order (a copy)."""
        return list(self._turns)

    def on_final_transcript(self, received_ms: float) -> None:
        """A final transcript with words arrived."""
        self._last_final_ms = received_ms

    def _stt(self, speech_end_ms: float, decided_ms: float) -> float | None:
        last = self._last_final_ms
        if last is None or last > decided_ms:
            return None
        return max(0.0, last - speech_end_ms)

    def on_user_turn(
        self, text: str, speech_end_ms: float, decided_ms: float, *, preemptive: bool = False
    ) -> None:
        """The caller's turn ended (or, ``preemptive``, probably ended)."""
        current = self._open
        if (
            not preemptive
            and current is not None
            and current.preemptive
            and not current.confirmed
            and same_utterance(current.text, text)
        ):
            current.confirmed = True  # the reply started at the tentative decision goes on
            if current.stt_ms is None:
                current.stt_ms = self._stt(speech_end_ms, decided_ms)
        else:
            self._open = _Open(
                text,
                speech_end_ms,
                decided_ms,
                preemptive,
                self._stt(speech_end_ms, decided_ms),
            )
        if not preemptive:
            self._last_final_ms = None

    def on_interruption(self) -> None:
        """Agent output was dropped: a reply not yet audible is not measured."""
        self._open = None

    def on_metric(self, name: str, value: float, turn: int | None) -> None:
        """An ``llm_ttft_ms`` or ``tts_ttfb_ms`` report (others are ignored)."""
        current = self._open
        if current is None or name not in ("llm_ttft_ms", "tts_ttfb_ms"):
            return
        if turn is not None and current.turn is not None and turn < current.turn:
            return  # a late report from an earlier, abandoned request
        if turn is not None:
            current.turn = turn
        if name == "llm_ttft_ms":
            current.llm_ttft_ms = value
        else:
            current.tts_ttfb_ms = value

    def on_audio_played(self, play_at_ms: float) -> TurnLatency | None:
        """Agent audio scheduled at ``play_at_ms``: completes the open reply's figures."""
        current = self._open
        if current is None or play_at_ms < current.decided_ms:
            return None
        self._open = None
        latency = TurnLatency(
            index=len(self._turns) + 1,
            turn=current.turn,
            speech_end_ms=current.speech_end_ms,
            endpointing_ms=current.decided_ms - current.speech_end_ms,
            stt_ms=current.stt_ms,
            llm_ttft_ms=current.llm_ttft_ms,
            tts_ttfb_ms=current.tts_ttfb_ms,
            total_ms=play_at_ms - current.speech_end_ms,
            preemptive=current.preemptive,
        )
        self._turns.append(latency)
        return latency

    def summary(self) -> dict[str, Any]:
        """The call record's ``latency``: ``turns`` and ``p50``/``p95`` of each figure."""
        out: dict[str, Any] = {"turns": [t.as_dict() for t in self._turns]}
        for label, q in (("p50", 50.0), ("p95", 95.0)):
            row: dict[str, float | None] = {}
            for name in LATENCY_FIELDS:
                values = [v for t in self._turns if (v := getattr(t, name)) is not None]
                p = percentile(values, q)
                row[name] = None if p is None else round(p, 1)
            out[label] = row
        return out


class TurnMetricsProcessor(FrameProcessor):
    """Measures each agent reply's latency and reports it as ``MetricsFrame`` s."""

    __slots__ = ("_tracker",)

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._tracker = LatencyTracker()

    @property
    def tracker(self) -> LatencyTracker:
        """The per-call bookkeeping."""
        return self._tracker

    def summary(self) -> dict[str, Any]:
        """The call's latency summary (see :meth:`LatencyTracker.summary`)."""
        return self._tracker.summary()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if direction != DOWNSTREAM:
            return
        tracker = self._tracker
        if isinstance(frame, PlayedAudioFrame):
            done = tracker.on_audio_played(frame.play_at_ms)
            if done is not None:
                for name, value in done.figures().items():
                    if value is not None:
                        await self.push_frame(
                            MetricsFrame(
                                name=name, value=value, turn=done.number, processor=self.name
                            )
                        )
        elif isinstance(frame, TranscriptFrame):
            if frame.text.strip():
                tracker.on_final_transcript(frame.received_ms or self.now_ms())
        elif isinstance(frame, UserTurnEndedFrame):
            tracker.on_user_turn(
                frame.text, frame.speech_end_ms, frame.decided_ms, preemptive=frame.preemptive
            )
        elif isinstance(frame, MetricsFrame):
            if frame.processor != self.name:
                tracker.on_metric(frame.name, frame.value, frame.turn)
        elif isinstance(frame, InterruptionFrame):
            tracker.on_interruption()
