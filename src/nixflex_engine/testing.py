"""Test a processor (or a whole chain) by feeding it frames: no network, no sandbox.

::

    log = await run_frames(MyProcessor(), [TranscriptFrame(text="hi")])
    assert log.down(MyFrame) == [MyFrame(...)]

:func:`run_frames` runs the processor in a :class:`~nixflex_engine.pipeline.PipelineTask`
(``setup``, ``StartFrame``, your frames in order, then ``EndFrame`` and ``cleanup``) and
returns a :class:`FrameLog` of every frame that left it, in each direction. Frames are
pushed with ``direction`` (downstream by default; pass ``(frame, UPSTREAM)`` pairs for
upstream ones). A processor that answers from a background task (an LLM stream, an I/O
reader, a timer) needs time before the end: ``until`` waits (up to ``timeout_s``) until a
condition on the log holds, ``settle_s`` waits a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from nixflex_engine.frames import Frame, StartFrame
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    Clock,
    FrameDirection,
    FrameProcessor,
    PipelineTask,
    RunResult,
)

__all__ = ["FrameLog", "run_frames"]

F = TypeVar("F", bound=Frame)


@dataclass(slots=True)
class FrameLog:
    """Every frame that left the processor under test, with its direction, in order."""

    frames: list[tuple[Frame, FrameDirection]] = field(default_factory=list)
    result: RunResult | None = None

    def down(self, kind: type[F] = Frame) -> list[F]:  # type: ignore[assignment]
        """Frames of type ``kind`` that left downstream (``StartFrame``/``EndFrame`` too)."""
        return [f for f, d in self.frames if d == DOWNSTREAM and isinstance(f, kind)]

    def up(self, kind: type[F] = Frame) -> list[F]:  # type: ignore[assignment]
        """Frames of type ``kind`` that left upstream."""
        return [f for f, d in self.frames if d == UPSTREAM and isinstance(f, kind)]

    def kinds(self, direction: FrameDirection = DOWNSTREAM) -> list[str]:
        """The class names of the frames that left in ``direction``, in order."""
        return [type(f).__name__ for f, d in self.frames if d == direction]


async def run_frames(
    processor: FrameProcessor,
    frames: Iterable[Frame | tuple[Frame, FrameDirection]],
    *,
    call_id: str = "CA-test",
    clock: Clock | None = None,
    until: Callable[[FrameLog], bool] | None = None,
    settle_s: float = 0.0,
    timeout_s: float = 10.0,
) -> FrameLog:
    """Run ``processor`` over ``frames`` and return what came out (see the module doc).

    Raises :class:`TimeoutError` when ``until`` does not hold within ``timeout_s``.
    """
    log = FrameLog()
    started = asyncio.Event()
    changed = asyncio.Event()

    def observe(frame: Frame, direction: FrameDirection) -> None:
        log.frames.append((frame, direction))
        changed.set()
        if isinstance(frame, StartFrame):
            started.set()

    task = PipelineTask(processor, call_id=call_id, clock=clock, observers=[observe])
    runner = asyncio.ensure_future(task.run())
    try:
        async with asyncio.timeout(timeout_s):
            await started.wait()
            items: Sequence[Frame | tuple[Frame, FrameDirection]] = list(frames)
            for item in items:
                frame, direction = item if isinstance(item, tuple) else (item, DOWNSTREAM)
                await task.queue_frame(frame, direction)
            while until is not None and not until(log):
                changed.clear()
                await changed.wait()
            if settle_s > 0:
                await asyncio.sleep(settle_s)
            await task.end("test_done")
            log.result = await runner
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    return log
