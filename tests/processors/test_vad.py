"""VAD: the hysteresis core on synthetic audio and scripted decisions, and the processor."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixflex_engine.frames import (
    EndFrame,
    Frame,
    InputAudioFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from nixflex_engine.pipeline import FrameDirection, FrameProcessor, Pipeline, PipelineTask
from nixflex_engine.processors.codec import MulawDecoder, mulaw_to_pcm16, pcm16_array_to_mulaw
from nixflex_engine.processors.vad import (
    SpeechStarted,
    SpeechStopped,
    VADEvent,
    VADProcessor,
    VoiceActivityDetector,
)
from nixflex_engine.sandbox.speech import cough, noise, silence, synthesize

FRAME = 160  # samples per 20 ms at 8 kHz


def feed(
    detector: VoiceActivityDetector,
    samples: npt.NDArray[np.int16],
    *,
    chunk: int = FRAME,
    start_ms: float = 0.0,
    via_mulaw: bool = True,
) -> list[VADEvent]:
    """Feed ``samples`` as Twilio would (mu-law, 20 ms frames) and collect the events."""
    if via_mulaw:
        samples = np.frombuffer(mulaw_to_pcm16(pcm16_array_to_mulaw(samples)), dtype="<i2")
    pcm = samples.astype("<i2").tobytes()
    events: list[VADEvent] = []
    for i in range(0, len(samples), chunk):
        events += detector.process(pcm[2 * i : 2 * (i + chunk)], start_ms + i / 8)
    return events


def speech(ms: float, **kw: float) -> npt.NDArray[np.int16]:
    text = "the quick brown fox jumps over the lazy dog " * 10
    return synthesize(text, **kw)[: int(ms * 8)]


def cat(*parts: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    return np.concatenate(parts).astype(np.int16)


# --- webrtcvad on synthetic audio --------------------------------------------------------


def test_silence_and_line_noise_never_start_speech() -> None:
    for audio in (silence(3000), noise(3000, level_dbfs=-55), noise(3000, level_dbfs=-40)):
        det = VoiceActivityDetector()
        assert feed(det, audio) == [] and det.frames_analysed == 150 and not det.speaking


def test_speech_segment_start_and_stop_times() -> None:
    det = VoiceActivityDetector()
    events = feed(det, cat(silence(1000), speech(1800), silence(1000)))
    assert len(events) == 2
    started, stopped = events
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    # the segment starts where the speech does, and is confirmed start_speech_ms later
    assert 1000 <= started.start_ms <= 1040
    assert started.at_ms == started.start_ms + det.start_speech_ms
    # stop_ms is where the speech ended (webrtcvad's hangover trimmed), confirmed after
    # stop_silence_ms of non-speech on top of that hangover
    assert stopped.start_ms == started.start_ms
    assert 2780 <= stopped.stop_ms <= 2820
    assert stopped.stop_ms + det.stop_silence_ms <= stopped.at_ms <= stopped.stop_ms + 500


@pytest.mark.parametrize("amplitude", [0.05, 0.1, 0.3, 0.9])
@pytest.mark.parametrize("pitch_hz", [90.0, 125.0, 220.0])
def test_speech_found_at_any_level_and_pitch(amplitude: float, pitch_hz: float) -> None:
    audio = cat(silence(500), speech(1500, amplitude=amplitude, pitch_hz=pitch_hz), silence(800))
    events = feed(VoiceActivityDetector(), audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_speech_found_over_background_noise() -> None:
    audio = cat(silence(500), speech(1500), silence(800))
    audio = cat(np.clip(audio.astype(np.int32) + noise(2800, level_dbfs=-45), -32768, 32767))
    events = feed(VoiceActivityDetector(), audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_cough_is_activity_but_a_click_is_not() -> None:
    assert len(feed(VoiceActivityDetector(), cat(silence(500), cough(), silence(800)))) == 2
    click = cat(silence(500), speech(20), silence(800))
    assert feed(VoiceActivityDetector(), click) == []


def test_hysteresis_on_real_audio_blip_and_pause() -> None:
    # a 60 ms blip does not start speech (even with webrtcvad's own hangover after it)
    blip = cat(silence(1000), speech(2000)[8000 : 8000 + 480], silence(1000))
    assert feed(VoiceActivityDetector(), blip) == []
    # a 100 ms pause inside speech does not stop it
    talk = speech(2000)
    paused = cat(silence(500), talk[:8000], silence(100), talk[8000:], silence(800))
    events = feed(VoiceActivityDetector(), paused)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    # ...a 700 ms one does
    paused = cat(silence(500), talk[:8000], silence(700), talk[8000:], silence(800))
    events = feed(VoiceActivityDetector(), paused)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 2


@pytest.mark.parametrize("chunk", [1, 37, 80, 159, 161, 240, 480, 4000])
def test_frames_of_any_size_give_the_same_events(chunk: int) -> None:
    audio = cat(silence(700), speech(1300), silence(200), speech(500), silence(900))
    reference = feed(VoiceActivityDetector(), audio)
    assert len(reference) == 2
    assert feed(VoiceActivityDetector(), audio, chunk=chunk) == reference


# --- the hysteresis, with scripted webrtcvad answers -------------------------------------


def scripted(pattern: str, **kw: float) -> tuple[VoiceActivityDetector, list[VADEvent]]:
    """Run the core on ``pattern``: one char per 20 ms frame, '1' speech, '.' not, ' ' a
    20 ms gap in the timestamps (lost packet). webrtcvad is replaced by the script."""
    det = VoiceActivityDetector(**kw)  # type: ignore[arg-type]
    det._is_speech = lambda pcm, rate: pcm[0] == 1
    events: list[VADEvent] = []
    for i, c in enumerate(pattern):
        if c != " ":
            events += det.process(bytes([c == "1"]) * 320, i * 20)
    return det, events


def test_start_needs_start_speech_ms_of_consecutive_speech() -> None:
    _, events = scripted("....1111111.....11111111........", start_speech_ms=160)
    # 7 frames (140 ms) is not enough; 8 frames (160 ms) is, dated at the run's start
    assert events[0] == SpeechStarted(start_ms=320, at_ms=480)
    assert all(e.start_ms == 320 for e in events)


def test_a_60_ms_blip_does_not_start_speech() -> None:
    _, events = scripted("....111......111.....", start_speech_ms=160)
    assert events == []


def test_stop_ms_trims_webrtcvads_hangover_but_keeps_soft_endings() -> None:
    def frames(*levels: int) -> list[bytes]:
        return [np.full(FRAME, v, dtype="<i2").tobytes() for v in levels]

    def stop_of(levels: tuple[int, ...]) -> VADEvent:
        det = VoiceActivityDetector(start_speech_ms=60, stop_silence_ms=100)
        det._is_speech = lambda pcm, rate: pcm != bytes(len(pcm))
        events: list[VADEvent] = []
        audio = frames(*levels) + [bytes(2 * FRAME)] * 5
        for i, pcm in enumerate(audio):
            events += det.process(pcm, 20 * i)
        assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
        return events[1]

    # loud speech, then 3 frames webrtcvad still calls speech at -40 dB: trimmed, and they
    # count towards stop_silence_ms, so the stop is confirmed 100 ms after the voice ended
    assert stop_of((3000,) * 6 + (30,) * 3) == SpeechStopped(0, 120, 220)
    # a soft ending 20 dB down is speech: kept
    assert stop_of((3000,) * 6 + (300,) * 3) == SpeechStopped(0, 180, 280)
    # the confirming frames alone are never trimmed away
    assert stop_of((30, 30, 3000)) == SpeechStopped(0, 60, 160)


def test_stop_needs_stop_silence_ms_of_consecutive_non_speech() -> None:
    pattern = "11111111" + "....." + "111" + "...............1"
    _, events = scripted(pattern, start_speech_ms=160, stop_silence_ms=300)
    # the 100 ms pause does not stop it; 300 ms after the last speech frame does
    assert events == [
        SpeechStarted(start_ms=0, at_ms=160),
        SpeechStopped(start_ms=0, stop_ms=320, at_ms=620),
    ]


def test_exact_event_order_over_several_segments() -> None:
    pattern = "..1111111111........1.1111111111111...................11111111111"
    det, events = scripted(pattern, start_speech_ms=200, stop_silence_ms=160)
    assert events == [
        SpeechStarted(start_ms=40, at_ms=240),
        SpeechStopped(start_ms=40, stop_ms=240, at_ms=400),
        SpeechStarted(start_ms=440, at_ms=640),
        SpeechStopped(start_ms=440, stop_ms=700, at_ms=860),
        SpeechStarted(start_ms=1080, at_ms=1280),
    ]
    assert det.speaking
    assert list(det.finish()) == [SpeechStopped(start_ms=1080, stop_ms=1300, at_ms=1300)]


def test_finish_closes_an_open_segment() -> None:
    det, events = scripted("111111111111", start_speech_ms=100)
    assert events == [SpeechStarted(start_ms=0, at_ms=100)]
    assert list(det.finish()) == [SpeechStopped(start_ms=0, stop_ms=240, at_ms=240)]
    assert not det.speaking and list(det.finish()) == []


def test_lost_packets_count_as_silence() -> None:
    # a 100 ms gap in the timestamps inside speech: still one segment
    _, events = scripted("1111111111     11111111" + "." * 16, stop_silence_ms=300)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    # a 400 ms gap: the stop is dated where the silence reached stop_silence_ms
    _, events = scripted("1111111111" + " " * 20 + "1111111111", stop_silence_ms=300)
    assert events[:2] == [
        SpeechStarted(start_ms=0, at_ms=160),
        SpeechStopped(start_ms=0, stop_ms=200, at_ms=500),
    ]
    assert events[2] == SpeechStarted(start_ms=600, at_ms=760)
    # a gap also breaks a run that has not started yet
    _, events = scripted("1111111 11111111", start_speech_ms=160)
    assert events == [SpeechStarted(start_ms=160, at_ms=320)]


def test_duplicates_and_late_frames_are_skipped_and_jitter_tolerated() -> None:
    det = VoiceActivityDetector(start_speech_ms=100, stop_silence_ms=100)
    det._is_speech = lambda pcm, rate: pcm[0] == 1
    on, off = b"\x01" * 320, b"\x00" * 320
    events: list[VADEvent] = []
    for ts, pcm in [(0, on), (20, on), (20, on), (0, on), (41, on), (59, on), (80, on)]:
        events += det.process(pcm, ts)  # 41 and 59: within the 10 ms jitter tolerance
    assert det.frames_skipped == 2 and det.frames_analysed == 5
    assert events == [SpeechStarted(start_ms=0, at_ms=100)]
    for ts in (100, 120, 140, 160, 180):
        events += det.process(off, ts)
    assert events[-1] == SpeechStopped(start_ms=0, stop_ms=100, at_ms=200)


@given(
    st.lists(st.booleans(), max_size=120),
    st.integers(min_value=1, max_value=15),
    st.integers(min_value=1, max_value=15),
)
def test_hysteresis_matches_a_reference_model(
    decisions: list[bool], start_frames: int, stop_frames: int
) -> None:
    pattern = "".join("1" if d else "." for d in decisions)
    _, events = scripted(
        pattern, start_speech_ms=20 * start_frames, stop_silence_ms=20 * stop_frames
    )
    # reference: scan for runs
    expected: list[VADEvent] = []
    speaking, run, quiet, seg, last = False, 0, 0, 0, 0
    for i, d in enumerate(decisions):
        if not speaking:
            run = run + 1 if d else 0
            if run == start_frames:
                speaking, seg, last, quiet = True, (i - run + 1) * 20, (i + 1) * 20, 0
                expected.append(SpeechStarted(seg, (i + 1) * 20))
                run = 0
        elif d:
            quiet, last = 0, (i + 1) * 20
        else:
            quiet += 1
            if quiet == stop_frames:
                speaking = False
                expected.append(SpeechStopped(seg, last, (i + 1) * 20))
    assert events == expected
    # and the events alternate, started first
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechStopped] * (len(kinds) // 2) + [SpeechStarted] * (
        len(kinds) % 2
    )


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        VoiceActivityDetector(aggressiveness=4)
    with pytest.raises(ValueError):
        VoiceActivityDetector(sample_rate=11025)
    with pytest.raises(ValueError):
        VoiceActivityDetector(frame_ms=25)
    with pytest.raises(ValueError):
        VoiceActivityDetector(start_speech_ms=-1)


# --- the processor -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def now_ms(self) -> float:
        return self.now


class Sink(FrameProcessor):
    def __init__(self) -> None:
        super().__init__(name="sink")
        self.seen: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.seen.append(frame)
        await self.push_frame(frame, direction)


async def run_audio(
    processors: Sequence[FrameProcessor],
    frames: Sequence[InputAudioFrame],
    arrivals: Sequence[float],
) -> None:
    clock = FakeClock()
    task = PipelineTask(Pipeline(list(processors)), call_id="CAvad", clock=clock)
    runner = asyncio.create_task(task.run())
    await asyncio.sleep(0)
    for frame, arrival in zip(frames, arrivals, strict=True):
        clock.now = arrival
        await task.queue_frame(frame)
    await task.queue_frame(EndFrame())
    result = await asyncio.wait_for(runner, 2)
    assert result.error is None


def twilio_frames(samples: npt.NDArray[np.int16], first_ts: int = 0) -> list[InputAudioFrame]:
    mulaw = pcm16_array_to_mulaw(samples)
    return [
        InputAudioFrame(audio=mulaw[i : i + FRAME], timestamp_ms=first_ts + i // 8)
        for i in range(0, len(mulaw), FRAME)
    ]


@pytest.mark.parametrize("with_decoder", [True, False])
async def test_processor_emits_run_clock_events_right_after_the_triggering_frame(
    with_decoder: bool,
) -> None:
    audio = cat(silence(1000), speech(1800), silence(1000))
    frames = twilio_frames(audio, first_ts=5)
    # each frame arrives 30 ms after its audio ended, the stream began at run time 1000,
    # and a few frames come in late bursts (jitter) without moving the mapping
    arrivals = [
        1000 + f.timestamp_ms + 20 + 30 + (80 if 60 <= i < 64 else 0) for i, f in enumerate(frames)
    ]
    sink = Sink()
    vad = VADProcessor()
    chain: list[FrameProcessor] = [MulawDecoder(), vad, sink] if with_decoder else [vad, sink]
    await run_audio(chain, frames, arrivals)

    seen = [
        f
        for f in sink.seen
        if isinstance(f, InputAudioFrame | UserStartedSpeakingFrame | UserStoppedSpeakingFrame)
    ]
    kinds = [type(f).__name__ for f in seen if not isinstance(f, InputAudioFrame)]
    assert kinds == ["UserStartedSpeakingFrame", "UserStoppedSpeakingFrame"]
    offset = 1030.0  # run = stream + offset
    assert vad.stream_clock.offset_ms == offset
    i_start = next(i for i, f in enumerate(seen) if isinstance(f, UserStartedSpeakingFrame))
    i_stop = next(i for i, f in enumerate(seen) if isinstance(f, UserStoppedSpeakingFrame))
    start, stop = seen[i_start], seen[i_stop]
    assert isinstance(start, UserStartedSpeakingFrame)
    assert isinstance(stop, UserStoppedSpeakingFrame)
    # same times as the core's, on the run clock
    core = feed(VoiceActivityDetector(), audio, start_ms=5)
    assert start.start_ms == core[0].start_ms + offset
    assert isinstance(core[1], SpeechStopped)
    assert (stop.start_ms, stop.stop_ms) == (core[1].start_ms + offset, core[1].stop_ms + offset)
    # each event comes right after the audio frame whose end confirmed it
    before_start = seen[i_start - 1]
    assert isinstance(before_start, InputAudioFrame)
    assert before_start.timestamp_ms + 20 == core[0].at_ms
    before_stop = seen[i_stop - 1]
    assert isinstance(before_stop, InputAudioFrame)
    assert before_stop.timestamp_ms + 20 == core[1].at_ms
    # all audio frames pass through, in order
    audio_out = [f for f in seen if isinstance(f, InputAudioFrame)]
    assert [f.timestamp_ms for f in audio_out] == [f.timestamp_ms for f in frames]


async def test_processor_uses_the_decoded_pcm_when_present() -> None:
    # audio says silence, pcm (set by a decoder) says speech: the VAD must read pcm
    talk = speech(1500)
    mute = bytes([0xFF]) * FRAME
    frames = [
        InputAudioFrame(
            audio=mute,
            timestamp_ms=i // 8,
            pcm=mulaw_to_pcm16(pcm16_array_to_mulaw(talk[i : i + FRAME])),
        )
        for i in range(0, len(talk), FRAME)
    ]
    sink = Sink()
    await run_audio([VADProcessor(), sink], frames, [f.timestamp_ms + 20.0 for f in frames])
    assert any(isinstance(f, UserStartedSpeakingFrame) for f in sink.seen)


async def test_processor_passes_other_sample_rates_through() -> None:
    frames = [
        InputAudioFrame(
            audio=b"\x00" * 640, timestamp_ms=20 * i, sample_rate=16000, encoding="pcm16"
        )
        for i in range(30)
    ]
    sink = Sink()
    vad = VADProcessor()
    await run_audio([vad, sink], frames, [20.0 * i for i in range(30)])
    assert vad.detector.frames_analysed == 0
    assert sum(isinstance(f, InputAudioFrame) for f in sink.seen) == 30
