"""Running one call's pipeline and collecting what the call record needs.

:func:`run_call` runs a chain (standard or custom) wrapped by
:func:`~nixflex_engine.calls.chain.call_pipeline`, watches the frames that leave it —
transcript lines, latency figures, the voicemail verdict, errors — and returns a
:class:`CallOutcome` once the run has stopped and the recording is written. It knows nothing
of HTTP, the database or Twilio's REST API: the call session (and the demo, and a developer's
own script) put it to work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixflex_engine.calls.chain import call_pipeline
from nixflex_engine.frames import (
    EndReason,
    ErrorFrame,
    Frame,
    TranscriptEntryFrame,
    VoicemailResultFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline import FrameDirection, FrameProcessor, PipelineTask, RunResult
from nixflex_engine.pipeline.clock import Clock

__all__ = ["CallOutcome", "TranscriptLine", "ended_reason_of", "run_call"]

_log = get_logger("nixflex_engine.calls")

_FINAL_REASONS = {r.value for r in EndReason}


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One line of the call record's transcript."""

    role: str
    text: str
    timestamp_ms: int
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The call record's shape (``interrupted`` only when true)."""
        out: dict[str, Any] = {
            "role": self.role,
            "text": self.text,
            "timestamp_ms": self.timestamp_ms,
        }
        if self.interrupted:
            out["interrupted"] = True
        return out


@dataclass(slots=True)
class CallOutcome:
    """How a connected call went: everything the session writes onto the record."""

    ended_reason: str
    run: RunResult
    transcript: list[TranscriptLine] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    voicemail: VoicemailResultFrame | None = None
    errors: list[str] = field(default_factory=list)
    recording_path: Path | None = None
    recording_duration_seconds: float | None = None


def ended_reason_of(result: RunResult) -> str:
    """The record's ``ended_reason`` for a run's result.

    A Twilio ``stop`` ends the run as ``caller_hangup``; a socket lost without ``stop``, a
    run cancelled from outside without a known reason, or a fatal error is ``error``.
    """
    if result.reason in _FINAL_REASONS:
        return result.reason
    return EndReason.ERROR.value


class _Collector:
    __slots__ = ("errors", "transcript", "voicemail")

    def __init__(self) -> None:
        self.transcript: list[TranscriptLine] = []
        self.voicemail: VoicemailResultFrame | None = None
        self.errors: list[str] = []

    def __call__(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptEntryFrame):
            if frame.text.strip():
                self.transcript.append(
                    TranscriptLine(
                        role=frame.role,
                        text=frame.text,
                        timestamp_ms=max(0, round(frame.timestamp_ms)),
                        interrupted=frame.interrupted,
                    )
                )
        elif isinstance(frame, VoicemailResultFrame):
            self.voicemail = frame
        elif isinstance(frame, ErrorFrame):
            self.errors.append(f"{frame.processor}: {frame.error}")


async def run_call(
    chain: FrameProcessor,
    *,
    call_id: str,
    recording_path: Path | None = None,
    clock: Clock | None = None,
    on_task: Callable[[PipelineTask], None] | None = None,
    extra_observers: tuple[Callable[[Frame, FrameDirection], Any], ...] = (),
) -> CallOutcome:
    """Run ``chain`` for call ``call_id`` to its end; return the :class:`CallOutcome`.

    ``on_task`` receives the :class:`PipelineTask` before it starts, so the caller can inject
    frames (an AMD result) or cancel the run (the carrier says the call is over).
    """
    wrapped = call_pipeline(chain, recording_path=recording_path)
    collector = _Collector()
    task = PipelineTask(
        wrapped.pipeline, call_id=call_id, clock=clock, observers=[collector, *extra_observers]
    )
    if on_task is not None:
        on_task(task)
    result = await task.run()
    outcome = CallOutcome(
        ended_reason=ended_reason_of(result),
        run=result,
        transcript=sorted(collector.transcript, key=lambda line: line.timestamp_ms),
        latency=wrapped.metrics.summary(),
        voicemail=collector.voicemail,
        errors=collector.errors,
    )
    recorder = wrapped.recorder
    if recorder is not None:
        await recorder.finalize()
        if recorder.saved_path is not None:
            outcome.recording_path = recorder.saved_path
            outcome.recording_duration_seconds = round(recorder.duration_seconds, 2)
    log_event(
        _log,
        "call.run_ended",
        level=logging.INFO,
        call_id=call_id,
        ended_reason=outcome.ended_reason,
        run_reason=result.reason,
        turns=len(outcome.latency.get("turns", [])),
        errors=len(outcome.errors),
    )
    return outcome
