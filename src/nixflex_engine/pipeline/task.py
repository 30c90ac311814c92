"""The runner: starts, ends and cancels one run of a pipeline, leaving nothing behind.

A :class:`PipelineTask` wraps a processor (usually a :class:`Pipeline`) between two edges
it owns. Frames that leave the chain at either end are shown to the task's observers (the
call session collects transcripts, metrics and errors this way) and decide when the run
stops:

- an :class:`EndFrame` or :class:`EndCallFrame` reaching the downstream end → graceful stop,
  with the frame's reason;
- a :class:`CancelFrame` reaching either end, or :meth:`PipelineTask.cancel` → stop now;
- a fatal :class:`ErrorFrame` reaching the upstream end → stop with reason ``error``.

When the run stops, every processor's ``cleanup`` runs (last to first) and every task made
through the run's :class:`TaskManager` is cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from nixflex_engine.frames import (
    CancelFrame,
    EndCallFrame,
    EndFrame,
    EndReason,
    ErrorFrame,
    Frame,
    StartFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline.clock import Clock, MonotonicClock
from nixflex_engine.pipeline.processor import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    ProcessorContext,
    TaskManager,
)

__all__ = ["FrameObserver", "PipelineTask", "RunResult"]

_log = get_logger("nixflex_engine.pipeline")

#: Called with each frame that leaves the chain, and the direction it left in.
FrameObserver = Callable[[Frame, FrameDirection], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: ``reason`` (e.g. ``agent_hangup``), ``cancelled``, last ``error``."""

    reason: str
    cancelled: bool = False
    error: str | None = None


class _TaskEdge(FrameProcessor):
    __slots__ = ("_task",)

    def __init__(self, task: PipelineTask, name: str) -> None:
        super().__init__(name=name)
        self._task = task

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self._task._at_edge(frame, direction)


class PipelineTask:
    """Runs one processor chain for one call.

    ``await task.run()`` returns a :class:`RunResult` once the run has stopped and cleaned
    up. From elsewhere: :meth:`queue_frame` injects a frame, :meth:`end` asks for a graceful
    stop, :meth:`cancel` stops at once.
    """

    def __init__(
        self,
        pipeline: FrameProcessor,
        *,
        call_id: str = "",
        clock: Clock | None = None,
        observers: Sequence[FrameObserver] = (),
        end_timeout_s: float = 10.0,
    ) -> None:
        self.call_id = call_id
        self.clock: Clock = clock or MonotonicClock()
        self._pipeline = pipeline
        self._observers = list(observers)
        self._end_timeout_s = end_timeout_s
        self._tasks = TaskManager(call_id)
        self._source = _TaskEdge(self, "task.source")
        self._sink = _TaskEdge(self, "task.sink")
        self._source.link(pipeline)
        pipeline.link(self._sink)
        self._done = asyncio.Event()
        self._result: RunResult | None = None
        self._last_error: str | None = None
        self._started = False

    @property
    def tasks(self) -> TaskManager:
        """The run's task manager (for tests and diagnostics)."""
        return self._tasks

    def add_observer(self, observer: FrameObserver) -> None:
        """Also show frames leaving the chain to ``observer``."""
        self._observers.append(observer)

    # --- control -----------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Set up every processor, send the ``StartFrame``, and wait for the run to stop."""
        if self._started:
            raise RuntimeError("a PipelineTask runs once")
        self._started = True
        ctx = ProcessorContext(call_id=self.call_id, clock=self.clock, tasks=self._tasks)
        processors = [self._source, *self._pipeline.walk(), self._sink]
        set_up: list[FrameProcessor] = []
        try:
            for p in processors:
                await p.setup(ctx)
                set_up.append(p)
            await self._source.push_frame(StartFrame(call_id=self.call_id), DOWNSTREAM)
            await self._done.wait()
        except asyncio.CancelledError:
            self._finish(RunResult("cancelled", cancelled=True, error=self._last_error))
            raise
        except Exception as exc:
            log_event(
                _log,
                "pipeline.run_failed",
                level=logging.ERROR,
                call_id=self.call_id,
                error=repr(exc),
                exc_info=exc,
            )
            self._finish(RunResult(EndReason.ERROR.value, error=repr(exc)))
        finally:
            await self._teardown(set_up)
        assert self._result is not None
        return self._result

    async def _teardown(self, processors: list[FrameProcessor]) -> None:
        for p in reversed(processors):
            try:
                await p.cleanup()
            except Exception as exc:
                log_event(
                    _log,
                    "pipeline.cleanup_failed",
                    level=logging.ERROR,
                    call_id=self.call_id,
                    processor=p.name,
                    error=repr(exc),
                )
        await self._tasks.cancel_all()

    async def queue_frame(self, frame: Frame, direction: FrameDirection = DOWNSTREAM) -> None:
        """Inject ``frame`` at the start (downstream) or the end (upstream) of the chain."""
        if direction == DOWNSTREAM:
            await self._source.push_frame(frame, DOWNSTREAM)
        else:
            await self._sink.push_frame(frame, UPSTREAM)

    async def end(self, reason: str = "") -> None:
        """Graceful stop: an ``EndFrame`` travels the chain; cancel if it takes too long."""
        if self._done.is_set():
            return
        await self.queue_frame(EndFrame(reason=reason))
        if not self._done.is_set():
            try:
                await asyncio.wait_for(self._done.wait(), self._end_timeout_s)
            except TimeoutError:
                await self.cancel(reason or "end_timeout")

    async def cancel(self, reason: str = "cancelled") -> None:
        """Stop now: a ``CancelFrame`` travels the chain, then the run stops."""
        if self._done.is_set():
            return
        try:
            await self.queue_frame(CancelFrame(reason=reason))
        finally:
            self._finish(RunResult(reason, cancelled=True, error=self._last_error))

    @property
    def done(self) -> bool:
        """Whether the run has stopped."""
        return self._done.is_set()

    @property
    def result(self) -> RunResult | None:
        """The result, once the run has stopped."""
        return self._result

    # --- edges -------------------------------------------------------------------------

    def _finish(self, result: RunResult) -> None:
        if self._result is None:
            self._result = result
        self._done.set()

    async def _at_edge(self, frame: Frame, direction: FrameDirection) -> None:
        for observer in self._observers:
            try:
                maybe = observer(frame, direction)
                if maybe is not None:
                    await maybe
            except Exception as exc:
                log_event(
                    _log,
                    "pipeline.observer_failed",
                    level=logging.ERROR,
                    call_id=self.call_id,
                    error=repr(exc),
                )
        if isinstance(frame, ErrorFrame):
            self._last_error = frame.error
            if frame.fatal:
                self._finish(RunResult(EndReason.ERROR.value, error=frame.error))
        elif isinstance(frame, CancelFrame):
            self._finish(RunResult(frame.reason or "cancelled", cancelled=True))
        elif direction == DOWNSTREAM and isinstance(frame, EndFrame | EndCallFrame):
            self._finish(RunResult(frame.reason, error=self._last_error))
