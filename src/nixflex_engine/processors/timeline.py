"""The caller-audio timeline and the run clock, and how one maps onto the other.

Two clocks meet in the processors that look at caller audio:

- the **stream timeline**: Twilio's ``media.timestamp`` (``InputAudioFrame.timestamp_ms``),
  milliseconds of caller audio since the stream started. It is exact about the audio (gaps,
  duplicates and reordering show up in it) and immune to network jitter, so VAD and the
  recording work on it;
- the **run clock**: ``FrameProcessor.now_ms()``, the one clock every latency figure uses
  (``decided_ms``, ``play_at_ms``, ``heard_ms``...). Frames that other processors compare
  with ``now_ms()`` must carry run-clock times.

:class:`StreamClock` maps between them with a single offset, ``run = stream + offset``.
The audio at stream time ``t`` cannot reach us before it was spoken, so each caller frame
gives an upper bound on the offset: ``arrival_ms - end_of_frame_ms`` (its last sample
arrives with it). The offset is the smallest such bound seen so far: it starts at the first
frame's (the anchor) and only ever moves down when a later frame proves the path faster,
so a late or bursty first frame does not skew the whole call, and jitter (frames arriving
late) never moves it. A stream time therefore maps to *the earliest moment that audio could
have been with us*, which is what a turn-latency figure should start from (network jitter
then counts as latency, as the caller experiences it).

Valid at real-time pacing. A sandbox run paced N times faster than real time compresses the
stream timeline against the run clock, and mapped times are then only roughly ordered.
"""

from __future__ import annotations

__all__ = ["StreamClock"]


class StreamClock:
    """Maps stream milliseconds (Twilio timestamps) to run-clock milliseconds and back.

    Call :meth:`observe` for each caller frame as it arrives; :attr:`offset_ms` is ``None``
    until the first one.
    """

    __slots__ = ("offset_ms",)

    def __init__(self, offset_ms: float | None = None) -> None:
        self.offset_ms: float | None = offset_ms

    def observe(self, stream_end_ms: float, arrival_ms: float) -> None:
        """A frame whose audio ends at ``stream_end_ms`` arrived at run time ``arrival_ms``."""
        offset = arrival_ms - stream_end_ms
        if self.offset_ms is None or offset < self.offset_ms:
            self.offset_ms = offset

    @property
    def anchored(self) -> bool:
        """Whether a caller frame has been seen (the mapping is known)."""
        return self.offset_ms is not None

    def to_run(self, stream_ms: float) -> float:
        """The run-clock time of stream time ``stream_ms``."""
        if self.offset_ms is None:
            raise RuntimeError("no caller audio yet: the stream clock is not anchored")
        return stream_ms + self.offset_ms

    def to_stream(self, run_ms: float) -> float:
        """The stream time of run-clock time ``run_ms``."""
        if self.offset_ms is None:
            raise RuntimeError("no caller audio yet: the stream clock is not anchored")
        return run_ms - self.offset_ms
