"""The call recording: a time-aligned two-channel WAV, caller left, agent right.

Two layers:

- :class:`TwoChannelRecording` — the pure core. Two PCM16 tracks on the **stream
  timeline** (Twilio's ``timestamp_ms``, sample 0 = stream start), each a growable
  ``bytearray`` (a one-hour call is 2 x 57.6 MB), written straight into place:

  * caller audio at its timestamp. A frame that starts within ``jitter_tolerance_ms`` of
    where the track currently ends is placed exactly there (timestamp jitter leaves no
    clicks, gaps or overlaps); otherwise at its own timestamp: a gap becomes silence, a
    late (reordered) frame fills its hole, a repeated timestamp lands on the same samples
    as before (a duplicate changes nothing). So every frame lies within
    ``jitter_tolerance_ms`` of its timestamp, and the channel can never drift.
  * agent audio at the stream time it was scheduled to play, with the same snapping, and
    :meth:`~TwoChannelRecording.clear_agent` drops every agent sample from a time on (a
    barge-in ``clear``: what was scheduled but never played is not in the recording).

  Unwritten samples are silence. The WAV is streamed out in blocks (no full interleaved
  copy in memory): :meth:`~TwoChannelRecording.write_wav`, :meth:`~TwoChannelRecording.
  wav_bytes`, or :meth:`~TwoChannelRecording.save` (atomic: temporary file in the same
  directory, fsync, ``os.replace``; a half-written file is never visible under ``path``).

- :class:`RecorderProcessor` — feeds it from the chain and writes the file when the call
  ends.

Clocks: the agent's ``PlayedAudioFrame.play_at_ms`` and ``PlaybackClearedFrame.at_ms`` are
on the run clock; the processor maps them onto the stream timeline with a
:class:`~nixflex_engine.processors.timeline.StreamClock` anchored on the caller frames'
arrival (``now_ms()`` at arrival vs ``timestamp_ms``; the smallest offset seen wins, so
jitter does not move it). The right channel therefore shows the agent where the caller's
audio shows the same moment as it reached us: a barge-in appears where the caller heard
it, give or take the one-way network delay. Agent audio that arrives before any caller
audio is held until the first caller frame anchors the clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nixflex_engine.frames import (
    CancelFrame,
    EndCallFrame,
    EndFrame,
    Frame,
    InputAudioFrame,
    PlaybackClearedFrame,
    PlayedAudioFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline.processor import FrameDirection, FrameProcessor, ProcessorContext
from nixflex_engine.processors.codec import mulaw_to_pcm16
from nixflex_engine.processors.timeline import StreamClock

__all__ = ["RecorderProcessor", "TwoChannelRecording"]

_log = get_logger(__name__)

_RECENT = 64  # caller timestamps remembered, so a duplicate lands on its original samples
_BLOCK_FRAMES = 1 << 18  # frames interleaved per block when writing (1 MB of output)


class _Track:
    """One channel: little-endian PCM16 in a bytearray, written in place by sample index."""

    __slots__ = ("data", "head")

    def __init__(self) -> None:
        self.data = bytearray()
        self.head: int | None = None  # the furthest sample written (exclusive), for snapping

    def __len__(self) -> int:
        return len(self.data) >> 1

    def write(self, pos: int, pcm: bytes) -> None:
        if pos < 0:  # audio before the stream started: keep the part after it
            pcm = pcm[-2 * pos :]
            pos = 0
        start = pos << 1
        data = self.data
        if start > len(data):
            data.extend(bytes(start - len(data)))
        data[start : start + len(pcm)] = pcm  # grows the buffer if it runs past the end

    def truncate(self, pos: int) -> None:
        pos = max(pos, 0)
        if (pos << 1) < len(self.data):
            del self.data[pos << 1 :]
        if self.head is not None and self.head > pos:
            self.head = pos


class TwoChannelRecording:
    """Caller (left) and agent (right) PCM16 tracks on the stream timeline. Pure: no I/O
    but the explicit writers, no clock.

    Times are stream milliseconds; a position is ``round(ms * sample_rate / 1000)``.
    """

    __slots__ = ("_agent", "_caller", "_recent", "_samples_per_ms", "_tol", "sample_rate")

    def __init__(self, *, sample_rate: int = 8000, jitter_tolerance_ms: float = 10.0) -> None:
        if sample_rate <= 0 or jitter_tolerance_ms < 0:
            raise ValueError("sample_rate must be > 0 and jitter_tolerance_ms >= 0")
        self.sample_rate = sample_rate
        self._samples_per_ms = sample_rate / 1000.0
        self._tol = round(jitter_tolerance_ms * self._samples_per_ms)
        self._caller = _Track()
        self._agent = _Track()
        self._recent: dict[int, int] = {}  # caller timestamp (samples) -> where it was placed

    # --- writing ---------------------------------------------------------------------------

    def add_caller(self, pcm: bytes, timestamp_ms: float) -> int:
        """Place caller PCM16 that starts at stream time ``timestamp_ms``; returns the sample
        index it was written at."""
        ts = round(timestamp_ms * self._samples_per_ms)
        track = self._caller
        recent = self._recent
        pos = recent.get(ts)
        if pos is None:
            head = track.head
            pos = head if head is not None and abs(ts - head) <= self._tol else max(ts, 0)
            recent[ts] = pos
            if len(recent) > _RECENT:
                del recent[next(iter(recent))]
            end = pos + (len(pcm) >> 1)
            if head is None or end > head:
                track.head = end
        track.write(pos, pcm)
        return pos

    def add_agent(self, pcm: bytes, at_ms: float) -> int:
        """Place agent PCM16 scheduled to play from stream time ``at_ms``; returns the sample
        index it was written at (negative if it began before the stream)."""
        pos = round(at_ms * self._samples_per_ms)
        track = self._agent
        head = track.head
        if head is not None and abs(pos - head) <= self._tol:
            pos = head
        end = pos + (len(pcm) >> 1)
        if head is None or end > head:
            track.head = end
        track.write(pos, pcm)
        return pos

    def clear_agent(self, at_ms: float) -> None:
        """Drop all agent audio from stream time ``at_ms`` on (playback was cleared)."""
        self._agent.truncate(round(at_ms * self._samples_per_ms))

    # --- reading ---------------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        """Length of the recording in sample frames (the longer channel)."""
        return max(len(self._caller), len(self._agent))

    @property
    def duration_seconds(self) -> float:
        """Length of the recording in seconds."""
        return self.num_frames / self.sample_rate

    @property
    def caller_pcm(self) -> bytes:
        """The left channel as written so far (PCM16 LE; may be shorter than the file)."""
        return bytes(self._caller.data)

    @property
    def agent_pcm(self) -> bytes:
        """The right channel as written so far (PCM16 LE; may be shorter than the file)."""
        return bytes(self._agent.data)

    def wav_header(self) -> bytes:
        """The 44-byte RIFF/WAVE header for the recording as it stands."""
        data_bytes = self.num_frames * 4
        return struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF",
            36 + data_bytes,
            b"WAVE",
            b"fmt ",
            16,
            1,  # PCM
            2,  # channels
            self.sample_rate,
            self.sample_rate * 4,  # byte rate
            4,  # block align
            16,  # bits per sample
            b"data",
            data_bytes,
        )

    def write_wav(self, out: BinaryIO) -> int:
        """Write the WAV to ``out`` in blocks; returns the number of bytes written.

        Do not add audio while this runs (the processor stops recording first).
        """
        n = self.num_frames
        out.write(self.wav_header())
        # Views on the bytearrays (no copy); they pin the buffers until this returns.
        left = np.frombuffer(self._caller.data, dtype="<i2")
        right = np.frombuffer(self._agent.data, dtype="<i2")
        for start in range(0, n, _BLOCK_FRAMES):
            stop = min(n, start + _BLOCK_FRAMES)
            block = np.zeros((stop - start, 2), dtype="<i2")
            a = left[start:stop]
            block[: len(a), 0] = a
            b = right[start:stop]
            block[: len(b), 1] = b
            out.write(block.data.cast("B"))
        return 44 + n * 4

    def wav_bytes(self) -> bytes:
        """The whole WAV file as bytes."""
        import io

        buf = io.BytesIO()
        self.write_wav(buf)
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the WAV to ``path`` atomically (blocking: call it off the event loop)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                self.write_wav(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return target


class RecorderProcessor(FrameProcessor):
    """Records the call as a two-channel 8 kHz PCM16 WAV (caller left, agent right).

    Consumes nothing: every frame passes through, and it pushes nothing new. Reads
    :class:`~nixflex_engine.frames.InputAudioFrame` (``pcm`` if a decoder set it, else it
    decodes), :class:`~nixflex_engine.frames.PlayedAudioFrame` (mu-law agent audio placed at
    ``play_at_ms``) and :class:`~nixflex_engine.frames.PlaybackClearedFrame` (drops agent
    audio scheduled after ``at_ms``), in either direction, so it works wherever it sits.
    Caller audio at another sample rate than ``sample_rate`` is skipped (logged once).

    On :class:`~nixflex_engine.frames.EndFrame`, :class:`~nixflex_engine.frames.EndCallFrame`
    or :class:`~nixflex_engine.frames.CancelFrame` (before passing it on) and in
    :meth:`cleanup`, it finalizes once: stops recording, drops agent audio scheduled after
    the present moment (never played: the call ended), and writes the WAV to ``path`` off
    the event loop (``asyncio.to_thread``), atomically. With ``path=None`` nothing is
    written; :meth:`wav_bytes` still gives the file. A write failure is logged and reported
    as a non-fatal ``ErrorFrame``; the end frame goes on regardless.
    """

    __slots__ = (
        "_finalizing",
        "_now",
        "_pending",
        "_recording_open",
        "_warned_rate",
        "path",
        "recording",
        "saved_path",
        "stream_clock",
    )

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        sample_rate: int = 8000,
        jitter_tolerance_ms: float = 10.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        #: Where the WAV goes (``None``: keep it in memory only).
        self.path: Path | None = Path(path) if path is not None else None
        #: Set once the file is on disk (``None`` before, or when ``path`` is ``None``).
        self.saved_path: Path | None = None
        #: The pure core.
        self.recording = TwoChannelRecording(
            sample_rate=sample_rate, jitter_tolerance_ms=jitter_tolerance_ms
        )
        #: Stream timeline ⇄ run clock.
        self.stream_clock = StreamClock()
        self._pending: list[tuple[bytes | None, float]] = []  # agent ops before the anchor
        self._recording_open = True
        self._finalizing: asyncio.Future[None] | None = None
        self._now: Callable[[], float] | None = None
        self._warned_rate = False

    @property
    def duration_seconds(self) -> float:
        """Length of the recording so far, in seconds."""
        return self.recording.duration_seconds

    @property
    def finalized(self) -> bool:
        """Whether recording has stopped (the call ended)."""
        return not self._recording_open

    def wav_bytes(self) -> bytes:
        """The WAV file as bytes (the recording so far, or the final one)."""
        return self.recording.wav_bytes()

    async def setup(self, ctx: ProcessorContext) -> None:
        await super().setup(ctx)
        self._now = ctx.clock.now_ms

    # --- frames ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if self._recording_open:
            if isinstance(frame, InputAudioFrame):
                self._caller(frame)
            elif isinstance(frame, PlayedAudioFrame):
                self._agent(mulaw_to_pcm16(frame.audio), frame.play_at_ms)
            elif isinstance(frame, PlaybackClearedFrame):
                self._agent(None, frame.at_ms)
            elif isinstance(frame, EndFrame | EndCallFrame | CancelFrame):
                try:
                    await self.finalize()
                except Exception as exc:
                    await self._failed(exc, frame)
        await self.push_frame(frame, direction)

    def _caller(self, frame: InputAudioFrame) -> None:
        if frame.sample_rate != self.recording.sample_rate:
            if not self._warned_rate:
                self._warned_rate = True
                log_event(
                    _log,
                    "recorder.unsupported_sample_rate",
                    level=logging.WARNING,
                    call_id=self.call_id,
                    sample_rate=frame.sample_rate,
                )
            return
        pcm = frame.pcm
        if pcm is None:
            pcm = frame.audio if frame.encoding == "pcm16" else mulaw_to_pcm16(frame.audio)
        ts = frame.timestamp_ms
        if self._now is not None:
            clock = self.stream_clock
            clock.observe(ts + len(pcm) * 500 / self.recording.sample_rate, self._now())
            if self._pending:
                self._replay_pending()
        self.recording.add_caller(pcm, ts)

    def _agent(self, pcm: bytes | None, at_run_ms: float) -> None:
        """Agent audio (``pcm``) or a clear (``None``) at run time ``at_run_ms``."""
        clock = self.stream_clock
        if not clock.anchored:
            self._pending.append((pcm, at_run_ms))
            return
        if pcm is None:
            self.recording.clear_agent(clock.to_stream(at_run_ms))
        else:
            self.recording.add_agent(pcm, clock.to_stream(at_run_ms))

    def _replay_pending(self) -> None:
        pending, self._pending = self._pending, []
        for pcm, at in pending:
            self._agent(pcm, at)

    # --- the end ---------------------------------------------------------------------------

    async def finalize(self) -> Path | None:
        """Stop recording and write the file (once; later calls wait for the same write).

        Returns the path written, or ``None`` when ``path`` is ``None``.
        """
        if self._recording_open:
            self._recording_open = False
            self._close_timeline()
            if self.path is not None:
                self._finalizing = asyncio.ensure_future(self._save())
        if self._finalizing is not None:
            await asyncio.shield(self._finalizing)
        return self.saved_path

    def _close_timeline(self) -> None:
        clock = self.stream_clock
        if not clock.anchored and self._pending:
            # No caller audio at all: start the agent's audio at the beginning.
            clock.offset_ms = min(at for _pcm, at in self._pending)
        if self._pending:
            self._replay_pending()
        if clock.anchored and self._now is not None:
            self.recording.clear_agent(clock.to_stream(self._now()))

    async def _save(self) -> None:
        assert self.path is not None
        self.saved_path = await asyncio.to_thread(self.recording.save, self.path)
        log_event(
            _log,
            "recorder.saved",
            call_id=self.call_id,
            path=str(self.saved_path),
            duration_s=round(self.duration_seconds, 3),
        )

    async def cleanup(self) -> None:
        try:
            await self.finalize()
        except Exception as exc:
            log_event(
                _log,
                "recorder.save_failed",
                level=logging.ERROR,
                call_id=self.call_id,
                path=str(self.path),
                error=repr(exc),
            )
