"""The two-channel recording: placement, alignment, clears, the WAV file, the processor."""

from __future__ import annotations

import asyncio
import io
import threading
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixflex_engine.frames import (
    CancelFrame,
    EndCallFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioFrame,
    PlaybackClearedFrame,
    PlayedAudioFrame,
)
from nixflex_engine.pipeline import (
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
)
from nixflex_engine.processors.codec import MulawDecoder, mulaw_to_pcm16, pcm16_array_to_mulaw
from nixflex_engine.processors.recorder import RecorderProcessor, TwoChannelRecording

FRAME = 160
TOL = 80  # 10 ms of jitter tolerance, in samples


def pcm_of(value: int, n: int = FRAME) -> bytes:
    return np.full(n, value, dtype="<i2").tobytes()


def read_wav(data: bytes) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    with wave.open(io.BytesIO(data), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        assert len(frames) == w.getnframes()
    return frames[:, 0].copy(), frames[:, 1].copy()


def channel(data: bytes) -> npt.NDArray[np.int16]:
    return np.frombuffer(data, dtype="<i2")


# --- the reference model -----------------------------------------------------------------


class Reference:
    """The rules of the module docstring, one sample at a time, no buffers to manage."""

    def __init__(self) -> None:
        self.left: dict[int, int] = {}
        self.right: dict[int, int] = {}
        self.left_len = 0
        self.right_len = 0
        self.placed: dict[int, int] = {}
        self.caller_head: int | None = None
        self.agent_head: int | None = None

    def caller(self, values: Sequence[int], ts_ms: float) -> int:
        ts = round(ts_ms * 8)
        if ts in self.placed:
            pos = self.placed[ts]
        else:
            head = self.caller_head
            pos = head if head is not None and abs(ts - head) <= TOL else max(ts, 0)
            self.placed[ts] = pos
            if head is None or pos + len(values) > head:
                self.caller_head = pos + len(values)
        for i, v in enumerate(values):
            self.left[pos + i] = v
        self.left_len = max(self.left_len, pos + len(values))
        return pos

    def agent(self, values: Sequence[int], at_ms: float) -> None:
        pos = round(at_ms * 8)
        head = self.agent_head
        if head is not None and abs(pos - head) <= TOL:
            pos = head
        if head is None or pos + len(values) > head:
            self.agent_head = pos + len(values)
        for i, v in enumerate(values):
            if pos + i >= 0:
                self.right[pos + i] = v
        self.right_len = max(self.right_len, pos + len(values))

    def clear(self, at_ms: float) -> None:
        cut = max(round(at_ms * 8), 0)
        self.right = {k: v for k, v in self.right.items() if k < cut}
        self.right_len = min(self.right_len, cut)
        if self.agent_head is not None:
            self.agent_head = min(self.agent_head, cut)

    def channels(self) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
        n = max(self.left_len, self.right_len)
        left = np.zeros(n, dtype=np.int16)
        right = np.zeros(n, dtype=np.int16)
        for k, v in self.left.items():
            left[k] = v
        for k, v in self.right.items():
            if k < n:
                right[k] = v
        return left, right


# --- caller placement: properties --------------------------------------------------------


@st.composite
def caller_streams(draw: st.DrawFn) -> list[tuple[int, int]]:
    """(frame number, timestamp ms) in arrival order: drops, duplicates, swaps, jitter."""
    n = draw(st.integers(min_value=1, max_value=40))
    first = draw(st.integers(min_value=0, max_value=3)) * 20 + draw(st.sampled_from([0, 5]))
    keep = [i for i in range(n) if draw(st.booleans()) or i == 0 or draw(st.booleans())]
    jitter = st.integers(min_value=-9, max_value=9)
    stream = [(i, first + 20 * i + draw(jitter)) for i in keep]
    for _ in range(draw(st.integers(min_value=0, max_value=5))):  # reorder neighbours
        j = draw(st.integers(min_value=0, max_value=max(0, len(stream) - 2)))
        if j + 1 < len(stream):
            stream[j], stream[j + 1] = stream[j + 1], stream[j]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):  # duplicates, later on
        src = draw(st.integers(min_value=0, max_value=len(stream) - 1))
        dst = draw(st.integers(min_value=src + 1, max_value=len(stream)))
        stream.insert(dst, stream[src])
    return stream


@given(caller_streams())
@settings(max_examples=300, deadline=None)
def test_caller_channel_equals_the_reference_model(stream: list[tuple[int, int]]) -> None:
    rec, ref = TwoChannelRecording(), Reference()
    for number, ts in stream:
        pos = rec.add_caller(pcm_of(number + 1), ts)
        assert pos == ref.caller([number + 1] * FRAME, ts)
        assert abs(pos - ts * 8) <= TOL  # never further than the tolerance from its timestamp
    left, right = ref.channels()
    assert np.array_equal(channel(rec.caller_pcm), left)
    assert rec.num_frames == len(left) and not right.any()
    wav_left, wav_right = read_wav(rec.wav_bytes())
    assert np.array_equal(wav_left, left) and not wav_right.any()


@given(
    st.integers(min_value=0, max_value=200),
    st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=60),
)
def test_jittered_timestamps_give_a_gapless_channel(first: int, jitter: list[int]) -> None:
    # timestamps within +-5 ms of a steady 20 ms grid: always within the 10 ms tolerance
    # of where the previous frame ended, so each frame follows the last exactly
    rec = TwoChannelRecording()
    for i, j in enumerate(jitter):
        rec.add_caller(pcm_of(i + 1), max(first + 20 * i + j, 0))
    start = round(max(first + jitter[0], 0) * 8)
    expected = np.concatenate(
        [np.zeros(start, np.int16)] + [np.full(FRAME, i + 1, np.int16) for i in range(len(jitter))]
    )
    assert np.array_equal(channel(rec.caller_pcm), expected)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=60), st.randoms())
def test_exact_timestamps_any_order_any_duplicates(numbers: list[int], rnd: Any) -> None:
    # Twilio's own timestamps (multiples of 20): the channel does not depend on the order
    # frames arrive in, nor on duplicates; lost frames are silence.
    rec = TwoChannelRecording()
    shuffled = list(numbers)
    rnd.shuffle(shuffled)
    for k in shuffled:
        rec.add_caller(pcm_of(k + 1), 20 * k)
    expected = np.zeros(FRAME * (max(numbers) + 1), dtype=np.int16)
    for k in set(numbers):
        expected[k * FRAME : (k + 1) * FRAME] = k + 1
    assert np.array_equal(channel(rec.caller_pcm), expected)


def test_long_silence_gap_stays_aligned() -> None:
    rec = TwoChannelRecording()
    rec.add_caller(pcm_of(1), 0)
    rec.add_caller(pcm_of(2), 3_600_000)  # an hour later
    rec.add_agent(pcm_of(3), 1_800_000)
    left, right = channel(rec.caller_pcm), channel(rec.agent_pcm)
    assert len(left) == 3_600_020 * 8 and left[-FRAME:].tolist() == [2] * FRAME
    assert not left[FRAME:-FRAME].any()
    assert right[1_800_000 * 8 : 1_800_000 * 8 + FRAME].tolist() == [3] * FRAME
    assert rec.duration_seconds == pytest.approx(3600.02)


# --- agent placement and clears ------------------------------------------------------------


@st.composite
def agent_ops(draw: st.DrawFn) -> list[tuple[str, int, float]]:
    """('play', chunk number, play_at) or ('clear', 0, at): replies of contiguous chunks,
    some cut short by a clear, each reply starting a little after the last one."""
    ops: list[tuple[str, int, float]] = []
    t = draw(st.floats(min_value=0, max_value=500))
    number = 0
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        chunks = draw(st.integers(min_value=1, max_value=8))
        for c in range(chunks):
            number += 1
            ops.append(("play", number, t + 20 * c))
        if draw(st.booleans()):
            cut = t + draw(st.floats(min_value=0, max_value=20 * chunks + 40))
            ops.append(("clear", 0, cut))
            t = cut + draw(st.floats(min_value=0, max_value=300))
        else:
            t += 20 * chunks + draw(st.floats(min_value=0, max_value=300))
    return ops


@given(caller_streams(), agent_ops())
@settings(max_examples=300, deadline=None)
def test_both_channels_equal_the_reference_model(
    stream: list[tuple[int, int]], ops: list[tuple[str, int, float]]
) -> None:
    rec, ref = TwoChannelRecording(), Reference()
    # interleave caller frames and agent operations as they might arrive
    for k in range(max(len(stream), len(ops))):
        if k < len(stream):
            number, ts = stream[k]
            rec.add_caller(pcm_of(number + 1), ts)
            ref.caller([number + 1] * FRAME, ts)
        if k < len(ops):
            kind, number, at = ops[k]
            if kind == "play":
                rec.add_agent(pcm_of(-number), at)
                ref.agent([-number] * FRAME, at)
            else:
                rec.clear_agent(at)
                ref.clear(at)
    left, right = ref.channels()
    wav_left, wav_right = read_wav(rec.wav_bytes())
    assert np.array_equal(wav_left, left)
    assert np.array_equal(wav_right, right)
    assert rec.num_frames == len(left)


def test_clear_truncates_scheduled_agent_audio() -> None:
    rec = TwoChannelRecording()
    for c in range(10):  # 200 ms of agent audio from 1 s
        rec.add_agent(pcm_of(c + 1), 1000 + 20 * c)
    rec.clear_agent(1050)  # the caller barged in 50 ms into it
    right = channel(rec.agent_pcm)
    assert len(right) == 1050 * 8
    assert right[8000 : 8000 + FRAME].tolist() == [1] * FRAME
    assert right[-1] == 3 and right[1040 * 8] == 3
    rec.clear_agent(5000)  # a clear after everything played changes nothing
    assert len(channel(rec.agent_pcm)) == 1050 * 8
    rec.add_agent(pcm_of(9), 1300)  # the next reply
    assert channel(rec.agent_pcm)[1300 * 8] == 9 and not channel(rec.agent_pcm)[8400:10400].any()


def test_agent_audio_before_the_stream_start_is_cut() -> None:
    rec = TwoChannelRecording()
    rec.add_agent(pcm_of(5), -10)
    assert channel(rec.agent_pcm).tolist() == [5] * 80


def test_wav_header_and_interleaving() -> None:
    rec = TwoChannelRecording()
    rec.add_caller(pcm_of(7, 8), 0)
    rec.add_agent(pcm_of(-3, 4), 0.5)
    data = rec.wav_bytes()
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and len(data) == 44 + 8 * 4
    left, right = read_wav(data)
    assert left.tolist() == [7] * 8
    assert right.tolist() == [0, 0, 0, 0, -3, -3, -3, -3]
    empty = TwoChannelRecording().wav_bytes()
    assert read_wav(empty)[0].size == 0


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = TwoChannelRecording()
    rec.add_caller(pcm_of(1), 0)
    target = tmp_path / "calls" / "CA1.wav"
    assert rec.save(target) == target
    assert read_wav(target.read_bytes())[0].tolist() == [1] * FRAME
    before = target.read_bytes()

    def broken(out: Any) -> int:
        out.write(b"RIFF partial")
        raise OSError("disk full")

    rec2 = TwoChannelRecording()
    rec2.add_caller(pcm_of(2), 0)
    monkeypatch.setattr(TwoChannelRecording, "write_wav", lambda self, out: broken(out))
    with pytest.raises(OSError):
        rec2.save(target)
    # the old file is intact and no temporary file is left behind
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["CA1.wav"]


# --- the processor -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def now_ms(self) -> float:
        return self.now


class Sink(FrameProcessor):
    def __init__(self) -> None:
        super().__init__(name="sink")
        self.seen: list[tuple[Frame, FrameDirection]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.seen.append((frame, direction))
        await self.push_frame(frame, direction)


class Harness:
    def __init__(self, processors: list[FrameProcessor]) -> None:
        self.clock = FakeClock()
        self.task = PipelineTask(Pipeline(processors), call_id="CArec", clock=self.clock)
        self.errors: list[ErrorFrame] = []
        self.task.add_observer(
            lambda f, d: self.errors.append(f) if isinstance(f, ErrorFrame) else None
        )
        self.runner: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self.runner = asyncio.create_task(self.task.run())
        await asyncio.sleep(0)

    async def send(self, frame: Frame, at: float, direction: FrameDirection | None = None) -> None:
        self.clock.now = at
        if direction is None:
            await self.task.queue_frame(frame)
        else:
            await self.task.queue_frame(frame, direction)

    async def end(self, frame: Frame, at: float) -> Any:
        await self.send(frame, at)
        assert self.runner is not None
        return await asyncio.wait_for(self.runner, 5)


def caller_frame(k: int, ts: int) -> InputAudioFrame:
    return InputAudioFrame(
        audio=pcm16_array_to_mulaw(np.full(FRAME, 1000 + k, np.int16)), timestamp_ms=ts
    )


def agent_frame(value: int, play_at: float, n: int = FRAME) -> PlayedAudioFrame:
    audio = pcm16_array_to_mulaw(np.full(n, value, np.int16))
    return PlayedAudioFrame(audio=audio, play_at_ms=play_at, chunk_id="c")


def decoded(value: int) -> int:
    return int(
        np.frombuffer(mulaw_to_pcm16(pcm16_array_to_mulaw(np.array([value], np.int16))), "<i2")[0]
    )


async def test_processor_aligns_agent_audio_on_the_caller_timeline(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "CA1.wav"
    recorder = RecorderProcessor(path)
    sink = Sink()
    h = Harness([MulawDecoder(), recorder, sink])
    await h.start()
    offset = 2000.0  # run clock = stream + 2000 (+ network delay 30, + jitter on some)
    # agent audio sent before any caller audio: held until the clock is anchored
    await h.send(agent_frame(-500, play_at=offset + 40 + 30), at=offset + 10)
    for k in range(100):  # 2 s of caller audio, frames 30..39 are 200 ms late (a burst)
        ts = 20 * k
        late = 200 if 30 <= k < 40 else 0
        await h.send(caller_frame(k, ts), at=offset + ts + 20 + 30 + late)
        if k == 50:  # a 400 ms reply starting at stream 1100, cleared at stream 1250
            for c in range(20):
                await h.send(
                    agent_frame(-(c + 1), play_at=offset + 30 + 1100 + 20 * c), at=offset + ts + 50
                )
        if k == 75:
            await h.send(
                PlaybackClearedFrame(at_ms=offset + 30 + 1250, heard={"c": 150}),
                at=offset + ts + 50,
            )
    # a reply scheduled after the call ends (never played) is not in the recording
    await h.send(agent_frame(-900, play_at=offset + 30 + 2000), at=offset + 2030)
    result = await h.end(EndFrame(reason="done"), at=offset + 2030)  # stream time 2000
    assert result.reason == "done" and result.error is None

    assert recorder.saved_path == path and path.exists() and recorder.finalized
    assert recorder.stream_clock.offset_ms == offset + 30
    left, right = read_wav(path.read_bytes())
    assert len(left) == 2000 * 8 and recorder.duration_seconds == 2.0
    for k in range(100):
        assert left[k * FRAME : (k + 1) * FRAME].tolist() == [decoded(1000 + k)] * FRAME
    assert right[40 * 8 : 60 * 8].tolist() == [decoded(-500)] * FRAME
    assert not right[: 40 * 8].any() and not right[60 * 8 : 1100 * 8].any()
    for c in range(7):  # 1100..1240 played; the clear cut the 8th chunk at 1250
        start = (1100 + 20 * c) * 8
        assert right[start : start + FRAME].tolist() == [decoded(-(c + 1))] * FRAME
    assert right[1240 * 8 : 1250 * 8].tolist() == [decoded(-8)] * 80
    assert not right[1250 * 8 :].any()
    # everything passed through; nothing new was pushed
    kinds = [type(f).__name__ for f, _ in sink.seen]
    assert kinds.count("InputAudioFrame") == 100 and kinds.count("PlayedAudioFrame") == 22
    assert kinds[-1] == "EndFrame"
    assert [p.name for p in path.parent.iterdir()] == ["CA1.wav"]


@pytest.mark.parametrize("end", [EndFrame(), EndCallFrame(), CancelFrame(reason="hangup")])
async def test_processor_finalizes_once_off_the_loop(
    end: Frame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_save = TwoChannelRecording.save

    def spy(self: TwoChannelRecording, path: Any) -> Path:
        calls.append(threading.current_thread().name)
        return real_save(self, path)

    monkeypatch.setattr(TwoChannelRecording, "save", spy)
    recorder = RecorderProcessor(tmp_path / "x.wav")
    h = Harness([recorder])
    await h.start()
    for k in range(5):
        await h.send(caller_frame(k, 20 * k), at=20.0 * k + 20)
    await h.end(end, at=200)
    assert len(calls) == 1 and calls[0] != threading.main_thread().name
    assert recorder.saved_path == tmp_path / "x.wav"
    assert read_wav((tmp_path / "x.wav").read_bytes())[0].size == 5 * FRAME
    # audio after the end is not recorded
    await recorder.process_frame(caller_frame(9, 100), FrameDirection.DOWNSTREAM)
    assert recorder.duration_seconds == 0.1
    assert await recorder.finalize() == tmp_path / "x.wav" and len(calls) == 1


async def test_processor_without_path_keeps_the_bytes() -> None:
    recorder = RecorderProcessor(None)
    h = Harness([recorder])
    await h.start()
    await h.send(caller_frame(1, 0), at=20)
    await h.send(agent_frame(-7, play_at=0, n=80), at=20, direction=UPSTREAM)
    await h.end(EndFrame(), at=100)
    assert recorder.saved_path is None and recorder.path is None
    left, right = read_wav(recorder.wav_bytes())
    assert left.tolist() == [decoded(1001)] * FRAME
    assert right[:80].tolist() == [decoded(-7)] * 80


async def test_agent_only_call_starts_at_the_first_agent_audio() -> None:
    recorder = RecorderProcessor(None)
    h = Harness([recorder])
    await h.start()
    await h.send(agent_frame(-1, play_at=500), at=480)
    await h.send(agent_frame(-2, play_at=520), at=500)
    await h.end(EndFrame(), at=1000)
    left, right = read_wav(recorder.wav_bytes())
    assert right.tolist() == [decoded(-1)] * FRAME + [decoded(-2)] * FRAME and not left.any()


async def test_cleanup_writes_when_the_run_is_cancelled(tmp_path: Path) -> None:
    recorder = RecorderProcessor(tmp_path / "c.wav")
    h = Harness([recorder])
    await h.start()
    await h.send(caller_frame(1, 0), at=20)
    assert h.runner is not None
    h.runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await h.runner
    assert (tmp_path / "c.wav").exists() and recorder.finalized


async def test_write_failure_is_reported_and_the_end_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: TwoChannelRecording, path: Any) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(TwoChannelRecording, "save", broken)
    recorder = RecorderProcessor(tmp_path / "f.wav")
    h = Harness([recorder])
    await h.start()
    await h.send(caller_frame(1, 0), at=20)
    result = await h.end(EndCallFrame(), at=100)
    assert result.reason == "agent_hangup"
    assert any("disk full" in e.error and not e.fatal for e in h.errors)
    assert not (tmp_path / "f.wav").exists() and recorder.saved_path is None
