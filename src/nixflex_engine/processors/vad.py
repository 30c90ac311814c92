"""Voice activity detection on caller audio: webrtcvad at 8 kHz with hysteresis in ms.

Two layers, as everywhere in the engine:

- :class:`VoiceActivityDetector` — the pure core. Feed it PCM16 with the stream timestamp
  it starts at (:meth:`~VoiceActivityDetector.process`); it cuts the audio into 20 ms
  analysis frames (buffering input that is not a whole number of frames), asks webrtcvad
  whether each is speech, and runs a two-state hysteresis over the answers. It returns
  :class:`SpeechStarted` / :class:`SpeechStopped` events on the **stream timeline**
  (Twilio's ``timestamp_ms``). No event loop, no clock.
- :class:`VADProcessor` — feeds it every :class:`~nixflex_engine.frames.InputAudioFrame`
  and emits :class:`~nixflex_engine.frames.UserStartedSpeakingFrame` /
  :class:`~nixflex_engine.frames.UserStoppedSpeakingFrame` right after the audio frame that
  triggered them, with times mapped onto the **run clock** (see below).

Hysteresis (both thresholds count *consecutive* 20 ms analysis frames):

- quiet → speaking after ``start_speech_ms`` of uninterrupted speech. The event's
  ``start_ms`` is where that run of speech began, not where it was confirmed, so the
  confirmation delay does not distort turn timing.
- speaking → quiet after ``stop_silence_ms`` of uninterrupted non-speech. ``stop_ms`` is
  where the speech ended (when the caller actually stopped), not the confirmation.

Defaults, for 8 kHz phone audio:

- ``aggressiveness=2`` and ``start_speech_ms=160``, chosen by sweeps through mu-law over
  two kinds of synthetic voiced speech (the sandbox's ``synthesize`` from -41 to -11 dBFS
  RMS at 90-220 Hz pitch; a harmonic series with 4 Hz syllable AM) and white noise from
  -55 to -26 dBFS RMS. Mode 2 with 160 ms found every utterance of both kinds down to
  -37 dBFS RMS (at -41 dBFS it splits some in two) and ignored noise up to -35 dBFS RMS
  (louder noise is speech to every mode but 3). Mode 3 never found speech at -37 dBFS RMS
  or below, and drops the onsets of louder speech; modes 0-1 gain nothing on speech and
  take -34 dBFS noise for speech. With mode 2, 200 ms missed the quietest harmonic speech
  and is 40 ms slower to notice a barge-in, with no gain on noise. 160 ms still rejects
  clicks and bursts up to ~80 ms (webrtcvad's hangover stretches a 60 ms burst to 140 ms
  of "speech"), and webrtcvad's start-up transient (it calls the first 80-100 ms of any
  non-silent input speech while its noise model adapts). A cough (~250 ms) is speech.
- ``stop_silence_ms=300`` — webrtcvad itself keeps answering "speech" for up to ~100 ms
  after a voice stops (its hangover, in modes 2-3 at 20 ms frames); those frames count as
  silence when they are 25 dB quieter than the voice (below), so the stop is confirmed
  300 ms after the voice ended, not ≈400 ms (up to ~100 ms later on a line too noisy for
  that). Pauses inside an utterance (stop-consonant closures, hesitations, breaths) are
  mostly shorter, so this rarely splits a sentence, and it lets the STT finalize early. It
  is a cue, not the end of the turn: turn taking adds its own judgement (transcripts) on
  top.

``stop_ms`` is trimmed back over that hangover: trailing speech frames 25 dB quieter than
the loudest of the last ten are taken for silence, both for ``stop_ms`` and, as they arrive,
for the ``stop_silence_ms`` count (one dot product per frame while speaking). A
soft ending (a fricative, 20 dB down) is kept; on a line noisier than ~25 dB below the
voice nothing is trimmed and ``stop_ms`` is up to ~100 ms late.

Gaps in the timestamps (lost packets) count as non-speech; frames from the past (duplicates,
late reordered frames) are skipped, since the detector must run in arrival order; timestamps
within ``jitter_tolerance_ms`` of where the previous frame ended are taken as contiguous.

Which clock the frames carry: the run clock. The turn-latency code downstream subtracts
these times from ``now_ms()`` (``decided_ms - speech_end_ms`` is the endpointing delay,
``first audio played - speech_end_ms`` the caller's wait), so they must be on that clock.
Stream times are mapped with :class:`~nixflex_engine.processors.timeline.StreamClock`: a
stream time becomes the earliest run time at which that audio could have been with us, so
network jitter counts as latency, as the caller experiences it.

Cost: ≈3 µs of CPU per 20 ms frame (webrtcvad itself ≈1.5 µs at 8 kHz).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import webrtcvad

from nixflex_engine.frames import (
    Frame,
    InputAudioFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline.processor import (
    DOWNSTREAM,
    FrameDirection,
    FrameProcessor,
    ProcessorContext,
)
from nixflex_engine.processors.codec import mulaw_to_pcm16
from nixflex_engine.processors.timeline import StreamClock

__all__ = [
    "SpeechStarted",
    "SpeechStopped",
    "VADEvent",
    "VADProcessor",
    "VoiceActivityDetector",
]

_log = get_logger(__name__)

_NO_EVENTS: tuple[()] = ()
_TAIL_FRAMES = 10  # speech frames kept to trim webrtcvad's hangover (it is <= 7 frames)
_TRIM_POWER_RATIO = 10**-2.5  # a tail frame 25 dB below the loudest recent one: hangover


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began at ``start_ms``; confirmed at ``at_ms`` (stream timeline, ms)."""

    start_ms: float
    at_ms: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The segment that began at ``start_ms`` ended at ``stop_ms``; confirmed at ``at_ms``."""

    start_ms: float
    stop_ms: float
    at_ms: float


VADEvent = SpeechStarted | SpeechStopped


class VoiceActivityDetector:
    """webrtcvad plus start/stop hysteresis, on the stream timeline. Pure: no I/O, no clock.

    ``process(pcm, timestamp_ms)`` takes little-endian PCM16 at ``sample_rate`` of any
    length and returns the events it caused (usually none), in order.
    """

    __slots__ = (
        "_buf",
        "_bytes_per_ms",
        "_end_ms",
        "_frame_bytes",
        "_frame_ms",
        "_is_speech",
        "_last_speech_end_ms",
        "_run_ms",
        "_run_start_ms",
        "_sample_rate",
        "_segment_start_ms",
        "_silence_ms",
        "_speaking",
        "_tail",
        "aggressiveness",
        "frames_analysed",
        "frames_skipped",
        "jitter_tolerance_ms",
        "start_speech_ms",
        "stop_silence_ms",
    )

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        frame_ms: int = 20,
        aggressiveness: int = 2,
        start_speech_ms: float = 160.0,
        stop_silence_ms: float = 300.0,
        jitter_tolerance_ms: float = 10.0,
    ) -> None:
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad needs 8, 16, 32 or 48 kHz, not {sample_rate} Hz")
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtcvad needs 10, 20 or 30 ms frames, not {frame_ms} ms")
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness is 0..3, not {aggressiveness}")
        if start_speech_ms < 0 or stop_silence_ms < 0 or jitter_tolerance_ms < 0:
            raise ValueError("start_speech_ms, stop_silence_ms, jitter_tolerance_ms are >= 0")
        self.aggressiveness = aggressiveness
        self.start_speech_ms = float(start_speech_ms)
        self.stop_silence_ms = float(stop_silence_ms)
        self.jitter_tolerance_ms = float(jitter_tolerance_ms)
        self._sample_rate = sample_rate
        self._frame_ms = float(frame_ms)
        self._bytes_per_ms = sample_rate * 2 / 1000.0
        self._frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._is_speech = webrtcvad.Vad(aggressiveness).is_speech
        self._buf = bytearray()  # audio received but not yet analysed (< one frame)
        self._end_ms: float | None = None  # stream time just after the last audio received
        self._speaking = False
        self._run_start_ms: float | None = None  # start of the current speech run (quiet)
        self._run_ms = 0.0
        self._silence_ms = 0.0  # non-speech since the last speech frame (speaking)
        self._segment_start_ms = 0.0
        self._last_speech_end_ms = 0.0
        self._tail: deque[tuple[float, bytes, float]] = deque(maxlen=_TAIL_FRAMES)
        #: 20 ms frames given to webrtcvad so far.
        self.frames_analysed = 0
        #: Input chunks ignored because their audio lies in the past (duplicates, late).
        self.frames_skipped = 0

    @property
    def speaking(self) -> bool:
        """Whether the caller is speaking (a segment has started and not stopped)."""
        return self._speaking

    @property
    def sample_rate(self) -> int:
        """The sample rate the detector expects, in Hz."""
        return self._sample_rate

    def process(self, pcm: bytes, timestamp_ms: float) -> Sequence[VADEvent]:
        """Analyse ``pcm`` (PCM16 LE) that starts at stream time ``timestamp_ms``."""
        end = self._end_ms
        events: Sequence[VADEvent] = _NO_EVENTS
        if end is not None:
            drift = timestamp_ms - end
            if drift < -self.jitter_tolerance_ms:
                self.frames_skipped += 1
                return _NO_EVENTS
            if drift > self.jitter_tolerance_ms:
                events = self._gap(timestamp_ms)
            else:
                timestamp_ms = end
        buf = self._buf
        if not buf and len(pcm) == self._frame_bytes:
            # The hot path: one whole 20 ms frame, nothing buffered.
            self.frames_analysed += 1
            self._end_ms = timestamp_ms + self._frame_ms
            step = self._step(self._is_speech(pcm, self._sample_rate), timestamp_ms, pcm)
            return step if not events else (*events, *step)
        t = timestamp_ms - len(buf) / self._bytes_per_ms  # where the buffered audio starts
        buf += pcm
        self._end_ms = timestamp_ms + len(pcm) / self._bytes_per_ms
        fb = self._frame_bytes
        if len(buf) < fb:
            return events
        out = list(events)
        usable = len(buf) - len(buf) % fb
        view = memoryview(buf)
        try:
            for i in range(0, usable, fb):
                self.frames_analysed += 1
                frame = bytes(view[i : i + fb])
                out.extend(self._step(self._is_speech(frame, self._sample_rate), t, frame))
                t += self._frame_ms
        finally:
            view.release()
        del buf[:usable]
        return out

    def finish(self) -> Sequence[VADEvent]:
        """End of audio: close an open speech segment (for offline use)."""
        self._buf.clear()
        if not self._speaking:
            return _NO_EVENTS
        self._speaking = False
        end = self._end_ms if self._end_ms is not None else self._last_speech_end_ms
        return (SpeechStopped(self._segment_start_ms, self._speech_end_ms(), end),)

    # --- hysteresis ------------------------------------------------------------------------

    def _step(self, speech: bool, t: float, pcm: bytes) -> Sequence[VADEvent]:
        """One analysis frame ``pcm`` starting at stream time ``t``."""
        dur = self._frame_ms
        if self._speaking:
            if speech:
                power = _power(pcm)
                tail = self._tail
                loudest = max(p for _, _, p in tail) if tail else 0.0
                self._last_speech_end_ms = t + dur
                tail.append((t + dur, pcm, power))
                if power >= loudest * _TRIM_POWER_RATIO:
                    self._silence_ms = 0.0
                    return _NO_EVENTS
                # webrtcvad's hangover (25 dB below the voice): already silence, so it counts
                # towards the stop, and the stop is confirmed stop_silence_ms after the voice
                # ended, not after the hangover (which _speech_end_ms trims the same way).
            self._silence_ms += dur
            if self._silence_ms >= self.stop_silence_ms:
                self._speaking = False
                return (SpeechStopped(self._segment_start_ms, self._speech_end_ms(), t + dur),)
            return _NO_EVENTS
        if not speech:
            self._run_start_ms = None
            self._run_ms = 0.0
            return _NO_EVENTS
        if self._run_start_ms is None:
            self._run_start_ms = t
        self._run_ms += dur
        if self._run_ms >= self.start_speech_ms:
            self._speaking = True
            self._segment_start_ms = self._run_start_ms
            self._last_speech_end_ms = t + dur
            self._silence_ms = 0.0
            self._run_start_ms = None
            self._run_ms = 0.0
            self._tail.clear()
            self._tail.append((t + dur, pcm, _power(pcm)))
            return (SpeechStarted(self._segment_start_ms, t + dur),)
        return _NO_EVENTS

    def _gap(self, resume_ms: float) -> Sequence[VADEvent]:
        """Audio is missing until ``resume_ms``: drop the partial frame, count it as silence."""
        assert self._end_ms is not None
        analysed_end = self._end_ms - len(self._buf) / self._bytes_per_ms
        self._buf.clear()
        gap = resume_ms - analysed_end
        if not self._speaking:
            self._run_start_ms = None
            self._run_ms = 0.0
            return _NO_EVENTS
        needed = self.stop_silence_ms - self._silence_ms
        self._silence_ms += gap
        if self._silence_ms >= self.stop_silence_ms:
            self._speaking = False
            stopped = SpeechStopped(
                self._segment_start_ms, self._speech_end_ms(), analysed_end + needed
            )
            return (stopped,)
        return _NO_EVENTS

    def _speech_end_ms(self) -> float:
        """Where the speech really ended: the last speech frame, minus webrtcvad's hangover.

        After sustained speech webrtcvad keeps answering "speech" for up to 5 frames (modes
        2-3; 7 in modes 0-1) of what is already silence. Those trailing frames are trimmed
        when they are 25 dB quieter than the loudest of the last speech frames; a quiet
        caller on a noisy line keeps the untrimmed (later) end.
        """
        tail = self._tail
        if len(tail) < 2:
            return self._last_speech_end_ms
        powers = [p for _, _, p in tail]
        floor = max(powers) * _TRIM_POWER_RATIO
        i = len(powers) - 1
        while i > 0 and powers[i] < floor:
            i -= 1
        end = tail[i][0]
        tail.clear()
        return end


class VADProcessor(FrameProcessor):
    """Emits user-started/stopped-speaking frames from the caller's audio.

    Consumes: nothing (every frame passes through). Reads
    :class:`~nixflex_engine.frames.InputAudioFrame` (its ``pcm`` when a
    :class:`~nixflex_engine.processors.codec.MulawDecoder` has set it, else it decodes
    ``audio`` itself). Emits downstream, right after the audio frame that triggered them:
    :class:`~nixflex_engine.frames.UserStartedSpeakingFrame` (``start_ms``: where the speech
    began) and :class:`~nixflex_engine.frames.UserStoppedSpeakingFrame` (``start_ms`` of the
    segment, ``stop_ms``: where the speech ended). Times are on the run clock (see the module
    docstring); the confirmation itself happens ``start_speech_ms`` / ``stop_silence_ms``
    later, at the frame's arrival.

    Audio at another sample rate than ``sample_rate`` is passed through unanalysed (logged
    once).
    """

    __slots__ = ("_bytes_per_ms", "_now", "_warned_rate", "detector", "stream_clock")

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        aggressiveness: int = 2,
        start_speech_ms: float = 160.0,
        stop_silence_ms: float = 300.0,
        jitter_tolerance_ms: float = 10.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        #: The pure core (stream timeline).
        self.detector = VoiceActivityDetector(
            sample_rate=sample_rate,
            aggressiveness=aggressiveness,
            start_speech_ms=start_speech_ms,
            stop_silence_ms=stop_silence_ms,
            jitter_tolerance_ms=jitter_tolerance_ms,
        )
        #: Stream timeline → run clock.
        self.stream_clock = StreamClock()
        self._bytes_per_ms = sample_rate * 2 / 1000.0
        self._warned_rate = False
        self._now = _unset_clock

    async def setup(self, ctx: ProcessorContext) -> None:
        await super().setup(ctx)
        self._now = ctx.clock.now_ms

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, InputAudioFrame):
            await self.push_frame(frame, direction)
            return
        detector = self.detector
        if frame.sample_rate != detector.sample_rate:
            if not self._warned_rate:
                self._warned_rate = True
                log_event(
                    _log,
                    "vad.unsupported_sample_rate",
                    level=logging.WARNING,
                    call_id=self.call_id,
                    sample_rate=frame.sample_rate,
                )
            await self.push_frame(frame, direction)
            return
        pcm = frame.pcm
        if pcm is None:
            pcm = frame.audio if frame.encoding == "pcm16" else mulaw_to_pcm16(frame.audio)
        ts = frame.timestamp_ms
        clock = self.stream_clock
        clock.observe(ts + len(pcm) / self._bytes_per_ms, self._now())
        events = detector.process(pcm, ts)
        await self.push_frame(frame, direction)
        for event in events:
            if isinstance(event, SpeechStarted):
                await self.push_frame(
                    UserStartedSpeakingFrame(start_ms=clock.to_run(event.start_ms)), DOWNSTREAM
                )
            else:
                await self.push_frame(
                    UserStoppedSpeakingFrame(
                        start_ms=clock.to_run(event.start_ms),
                        stop_ms=clock.to_run(event.stop_ms),
                    ),
                    DOWNSTREAM,
                )


def _power(pcm: bytes) -> float:
    """Energy of a PCM16 frame (sum of squares)."""
    a = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.dot(a, a))


def _unset_clock() -> float:
    raise RuntimeError("VADProcessor is not part of a running pipeline")
