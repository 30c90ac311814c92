"""The mu-law codec: bit-exact with audioop, G.711 round trips, and the decoder processor."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixflex_engine.frames import (
    DTMFFrame,
    EndFrame,
    Frame,
    InputAudioFrame,
    StartFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
)
from nixflex_engine.processors.codec import (
    MULAW_SILENCE,
    MulawDecoder,
    mulaw_to_pcm16,
    mulaw_to_pcm16_array,
    pcm16_array_to_mulaw,
    pcm16_to_mulaw,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference; gone in Python 3.13

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


# --- bit-exact against audioop ---------------------------------------------------------


def test_decode_matches_audioop_on_every_code() -> None:
    assert mulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert mulaw_to_pcm16_array(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_encode_matches_audioop_on_every_sample() -> None:
    pcm = ALL_SAMPLES.astype("<i2").tobytes()
    assert pcm16_to_mulaw(pcm) == audioop.lin2ulaw(pcm, 2)
    assert pcm16_array_to_mulaw(ALL_SAMPLES) == audioop.lin2ulaw(pcm, 2)


def test_silence_byte_and_odd_trailing_byte() -> None:
    assert mulaw_to_pcm16(bytes([MULAW_SILENCE])) == b"\x00\x00"
    assert pcm16_to_mulaw(b"\x00\x00\x07") == bytes([MULAW_SILENCE])
    assert mulaw_to_pcm16(b"") == b""


# --- round trips (G.711) ---------------------------------------------------------------


def g711_step(level: int) -> int:
    """The quantisation step of the mu-law segment holding ``level`` (G.711: 8 segments of
    16 steps, step 2**(seg+3) in 16-bit units)."""
    biased = abs(level) + 0x84
    seg = max(0, biased.bit_length() - 8)
    return 1 << (seg + 3)


def decode_encode(x: int) -> int:
    return int(mulaw_to_pcm16_array(pcm16_array_to_mulaw(np.array([x], dtype=np.int16)))[0])


@given(st.integers(min_value=-32768, max_value=32767))
def test_decode_encode_error_is_within_half_a_step(x: int) -> None:
    y = decode_encode(x)
    assert (y > 0) == (x > 0) or y == 0 or abs(x) <= 8
    if abs(x) > 32635:  # beyond the last segment: clipped to the top level
        assert abs(y) == 32124
    else:
        # G.711 reconstructs at the middle of the step: half a step of error; plus up to 3
        # because the reference (audioop) first truncates to 14 bits (floor, for negatives).
        assert abs(y - x) <= g711_step(y) // 2 + 3, (x, y)


def test_decode_encode_error_bound_on_every_sample() -> None:
    x = ALL_SAMPLES.astype(np.int64)
    y = mulaw_to_pcm16_array(pcm16_array_to_mulaw(ALL_SAMPLES)).astype(np.int64)
    inside = np.abs(x) <= 32635
    biased = np.abs(y) + 0x84
    half_step = (1 << (np.maximum(0, np.floor(np.log2(biased)).astype(np.int64) - 7) + 3)) // 2
    assert np.all((np.abs(y - x) <= half_step + 3)[inside])
    assert set(np.abs(y[~inside]).tolist()) == {32124}
    assert np.all(np.diff(y) >= 0)  # the quantiser is monotonic


@given(st.lists(st.integers(min_value=-32768, max_value=32767), max_size=400))
def test_round_trip_on_buffers_equals_audioop(xs: list[int]) -> None:
    pcm = np.array(xs, dtype="<i2").tobytes()
    assert mulaw_to_pcm16(pcm16_to_mulaw(pcm)) == audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)


@given(st.integers(min_value=0, max_value=255))
def test_encode_decode_is_identity_except_the_two_zeros(code: int) -> None:
    again = pcm16_to_mulaw(mulaw_to_pcm16(bytes([code])))[0]
    if code in (0x7F, 0xFF):  # -0 and +0 both decode to 0, which encodes to 0xFF
        assert again == 0xFF
    else:
        assert again == code


def test_encode_decode_on_all_codes_at_once() -> None:
    again = pcm16_to_mulaw(mulaw_to_pcm16(ALL_CODES))
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert again == bytes(expected)


# --- the processor ---------------------------------------------------------------------


class Sink(FrameProcessor):
    def __init__(self) -> None:
        super().__init__(name="sink")
        self.seen: list[tuple[Frame, FrameDirection]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.seen.append((frame, direction))
        await self.push_frame(frame, direction)


async def run_chain(processors: list[FrameProcessor], frames: list[tuple[Frame, int]]) -> None:
    task = PipelineTask(Pipeline(processors), call_id="CAcodec")
    runner = asyncio.create_task(task.run())
    await asyncio.sleep(0)
    for frame, direction in frames:
        await task.queue_frame(frame, FrameDirection(direction))
    await task.queue_frame(EndFrame())
    result = await asyncio.wait_for(runner, 2)
    assert result.error is None


async def test_decoder_sets_pcm_and_passes_everything_else_through() -> None:
    audio = bytes(range(96, 256))  # 160 bytes
    decoded_already = InputAudioFrame(audio=audio, timestamp_ms=20, pcm=b"keep")
    pcm16_frame = InputAudioFrame(audio=b"\x01\x00" * 160, timestamp_ms=40, encoding="pcm16")
    dtmf = DTMFFrame(digit="5")
    frames: list[tuple[Frame, int]] = [
        (InputAudioFrame(audio=audio, timestamp_ms=0), DOWNSTREAM),
        (decoded_already, DOWNSTREAM),
        (pcm16_frame, DOWNSTREAM),
        (dtmf, DOWNSTREAM),
        (InputAudioFrame(audio=audio, timestamp_ms=60), UPSTREAM),
    ]
    before, after = Sink(), Sink()
    await run_chain([before, MulawDecoder(), after], frames)

    got = [f for f, _ in after.seen if not isinstance(f, StartFrame | EndFrame)]
    first = got[0]
    assert isinstance(first, InputAudioFrame)
    assert first == dataclasses.replace(
        InputAudioFrame(audio=audio, timestamp_ms=0), pcm=audioop.ulaw2lin(audio, 2)
    )
    assert got[1] is decoded_already and got[2] is pcm16_frame and got[3] is dtmf
    # upstream audio is decoded too, and keeps travelling upstream
    up = [(f, d) for f, d in before.seen if isinstance(f, InputAudioFrame)]
    assert len(up) == 4 and up[-1][1] == UPSTREAM
    assert up[-1][0].pcm == audioop.ulaw2lin(audio, 2)


async def test_decoder_keeps_subclass_fields() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class TaggedAudio(InputAudioFrame):
        tag: str = ""

    sink = Sink()
    frame = TaggedAudio(audio=b"\x00\xff", timestamp_ms=7, tag="x")
    await run_chain([MulawDecoder(), sink], [(frame, DOWNSTREAM)])
    out = next(f for f, _ in sink.seen if isinstance(f, TaggedAudio))
    assert out.tag == "x" and out.timestamp_ms == 7
    assert out.pcm == audioop.ulaw2lin(b"\x00\xff", 2)


@pytest.mark.parametrize("size", [0, 1, 160, 333])
async def test_decoder_any_frame_size(size: int) -> None:
    audio = bytes(i % 256 for i in range(size))
    sink = Sink()
    await run_chain([MulawDecoder(), sink], [(InputAudioFrame(audio=audio), DOWNSTREAM)])
    out = next(f for f, _ in sink.seen if isinstance(f, InputAudioFrame))
    assert out.pcm == audioop.ulaw2lin(audio, 2) and out.audio == audio
