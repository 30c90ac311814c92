"""G.711 mu-law ⇄ PCM16, vectorised with numpy lookup tables.

Pure functions (no I/O, no event loop). Bit-exact with the ITU-T G.711 reference and
Python's ``audioop.lin2ulaw``/``ulaw2lin`` on every code and every 16-bit sample: decoding
is a 256-entry table, encoding a 65,536-entry table indexed by the sample's bit pattern,
so both are one ``numpy.take`` per buffer (≈1 µs for a 20 ms Twilio frame).

Twilio and Deepgram both speak mu-law 8 kHz, so the standard chain only decodes where a
processor needs linear samples (VAD, beep detection, recording) and never resamples.

Below the pure functions, :class:`MulawDecoder` is the processor that decodes caller audio
once per frame for everyone after it (it sets ``InputAudioFrame.pcm``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from nixflex_engine.frames import Frame, InputAudioFrame
from nixflex_engine.pipeline.processor import FrameDirection, FrameProcessor

__all__ = [
    "MULAW_SILENCE",
    "MulawDecoder",
    "mulaw_to_pcm16",
    "mulaw_to_pcm16_array",
    "pcm16_array_to_mulaw",
    "pcm16_to_mulaw",
]

#: The mu-law byte for a zero sample.
MULAW_SILENCE = 0xFF

_BIAS = 0x84
_CLIP = 32635


def _build_decode_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    # Index by the sample's uint16 bit pattern; value is the mu-law byte (audioop's
    # algorithm: 14-bit magnitude, bias 0x84, segment search, bit inversion).
    samples = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)
    pcm = samples >> 2  # audioop works on 14-bit values
    sign = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), 8159) + (_BIAS >> 2)
    seg = np.zeros_like(magnitude)
    for i, end in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)):
        seg = np.where((magnitude > end) & (seg == i), i + 1, seg)
    uval = (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F)
    out = np.where(seg >= 8, 0x7F ^ sign, uval ^ sign)
    return (out & 0xFF).astype(np.uint8)


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()
_DECODE.setflags(write=False)
_ENCODE.setflags(write=False)
# The decode table as little-endian int16, so ``take`` yields the wire byte order directly
# (no ``astype`` pass on big-endian hosts either).
_DECODE_LE = _DECODE.astype("<i2")
_DECODE_LE.setflags(write=False)
_U8 = np.dtype(np.uint8)


def mulaw_to_pcm16_array(data: bytes) -> npt.NDArray[np.int16]:
    """Decode mu-law bytes to an int16 array (one sample per byte)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_to_pcm16(data: bytes) -> bytes:
    """Decode mu-law bytes to little-endian PCM16 bytes."""
    # ``take`` on the little-endian table: one gather, one copy out (≈1 µs for 160 bytes).
    return _DECODE_LE.take(np.frombuffer(data, dtype=_U8)).tobytes()


def pcm16_array_to_mulaw(samples: npt.NDArray[np.int16]) -> bytes:
    """Encode an int16 array to mu-law bytes."""
    return _ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def pcm16_to_mulaw(data: bytes) -> bytes:
    """Encode little-endian PCM16 bytes to mu-law bytes (odd trailing byte ignored)."""
    usable = len(data) - (len(data) % 2)
    return pcm16_array_to_mulaw(np.frombuffer(data[:usable], dtype="<i2"))


# --- processor ---------------------------------------------------------------------------

# The field layout the fast path in MulawDecoder rebuilds positionally. If frames.py ever
# changes InputAudioFrame's fields, the decoder falls back to ``dataclasses.replace``.
_INPUT_FIELDS = ("audio", "timestamp_ms", "sample_rate", "encoding", "pcm")
_FAST_REBUILD = tuple(f.name for f in dataclasses.fields(InputAudioFrame)) == _INPUT_FIELDS


class MulawDecoder(FrameProcessor):
    """Decodes caller audio once, for every processor after it.

    Consumes: :class:`~nixflex_engine.frames.InputAudioFrame` with ``encoding="mulaw"`` and
    ``pcm is None``; emits the same frame with ``pcm`` set to its little-endian PCM16
    (``dataclasses.replace`` semantics: a new frozen frame, ``audio`` kept as is, so the STT
    can still send the mu-law bytes unchanged). Every other frame, and audio that is already
    PCM16 or already decoded, passes through untouched, in its direction.

    On the hot path of every call: ≈2 µs of CPU per 20 ms frame (one numpy gather and one
    frame construction).
    """

    __slots__ = ()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioFrame) and frame.pcm is None and frame.encoding == "mulaw":
            pcm = _DECODE_LE.take(np.frombuffer(frame.audio, dtype=_U8)).tobytes()
            if _FAST_REBUILD and type(frame) is InputAudioFrame:
                frame = InputAudioFrame(
                    frame.audio, frame.timestamp_ms, frame.sample_rate, frame.encoding, pcm
                )
            else:
                frame = dataclasses.replace(frame, pcm=pcm)
        await self.push_frame(frame, direction)
