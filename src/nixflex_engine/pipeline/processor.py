"""The processor base class: receive a frame, push frames downstream or upstream.

Processors are linked into a doubly linked list by :class:`~nixflex_engine.pipeline.Pipeline`.
A hop is a direct ``await next.process_frame(frame, direction)``: no queue and no task per
hop, so a frame crosses a chain of pass-through processors in a few microseconds. Where a
processor needs to decouple (an I/O reader, a paced writer) it owns a background task made
with :meth:`FrameProcessor.create_task`, and where a chain needs an asynchronous boundary
it inserts a :class:`~nixflex_engine.pipeline.FrameQueue`, which lets system frames
overtake the data it holds.

An exception raised by a processor never escapes into the processor before it: the hop
catches it, logs it with the call id, and sends an :class:`~nixflex_engine.frames.ErrorFrame`
upstream from the processor that failed. The frame that caused it is lost; the run goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from nixflex_engine.frames import ErrorFrame, Frame
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline.clock import Clock, MonotonicClock

__all__ = [
    "DOWNSTREAM",
    "UPSTREAM",
    "FrameDirection",
    "FrameProcessor",
    "ProcessorContext",
    "TaskManager",
]

_log = get_logger("nixflex_engine.pipeline")


class FrameDirection(IntEnum):
    """Which way a frame travels: downstream (towards the caller's ear) or upstream."""

    DOWNSTREAM = 1
    UPSTREAM = 2


#: Towards the caller's ear (the default direction of ``push_frame``).
DOWNSTREAM = FrameDirection.DOWNSTREAM
#: Back towards the line input (e.g. errors, what the agent said as heard).
UPSTREAM = FrameDirection.UPSTREAM


class TaskManager:
    """Owns every background task of one run, so none is left behind.

    A task that raises is logged with the call id and reported as an ``ErrorFrame`` pushed
    upstream from the processor that owns it.
    """

    __slots__ = ("_call_id", "_closed", "_tasks")

    def __init__(self, call_id: str = "") -> None:
        self._call_id = call_id
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def create_task(
        self, coro: Coroutine[Any, Any, Any], *, name: str, owner: FrameProcessor | None = None
    ) -> asyncio.Task[Any]:
        """Start ``coro`` as a tracked task."""
        if self._closed:
            coro.close()
            raise RuntimeError("the run is over: no new tasks")
        task = asyncio.get_running_loop().create_task(self._guard(coro, name, owner), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before it first ran never awaited ``coro``: close it, so Python
        # does not warn "coroutine was never awaited" (a no-op once it has run).
        task.add_done_callback(lambda _t: coro.close())
        return task

    async def _guard(
        self, coro: Coroutine[Any, Any, Any], name: str, owner: FrameProcessor | None
    ) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_event(
                _log,
                "pipeline.task_failed",
                level=logging.ERROR,
                call_id=self._call_id,
                task=name,
                error=repr(exc),
                exc_info=exc,
            )
            if owner is not None:
                await owner.push_error(exc)
            return None

    @property
    def pending(self) -> int:
        """How many tasks are still running."""
        return len(self._tasks)

    async def cancel_all(self, timeout_s: float = 2.0) -> None:
        """Cancel every task and wait (up to ``timeout_s``) for them to finish."""
        self._closed = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            _done, still = await asyncio.wait(tasks, timeout=timeout_s)
            for t in still:
                log_event(
                    _log,
                    "pipeline.task_stuck",
                    level=logging.WARNING,
                    call_id=self._call_id,
                    task=t.get_name(),
                )


@dataclass(slots=True)
class ProcessorContext:
    """What a run gives each processor: the call id, the clock and the task manager."""

    call_id: str = ""
    clock: Clock = field(default_factory=MonotonicClock)
    tasks: TaskManager = field(default_factory=TaskManager)


class FrameProcessor:
    """Base class of every processor.

    Override :meth:`process_frame`; call :meth:`push_frame` to send frames on (the default
    passes every frame through unchanged, in its direction). Override :meth:`setup` to open
    resources when the run starts and :meth:`cleanup` to release them when it ends (always
    called, also after a cancellation or an error).
    """

    __slots__ = ("_ctx", "_next", "_prev", "name")

    def __init__(self, *, name: str | None = None) -> None:
        self.name: str = name or type(self).__name__
        self._prev: FrameProcessor | None = None
        self._next: FrameProcessor | None = None
        self._ctx: ProcessorContext | None = None

    # --- linking -----------------------------------------------------------------------

    def link(self, nxt: FrameProcessor) -> None:
        """Make ``nxt`` the processor after this one."""
        self._next = nxt
        nxt._prev = self

    def walk(self) -> Iterator[FrameProcessor]:
        """This processor and, for containers, every processor inside (depth first)."""
        yield self

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def context(self) -> ProcessorContext:
        """The run's context; available from :meth:`setup` on."""
        if self._ctx is None:
            raise RuntimeError(f"{self.name} is not part of a running pipeline")
        return self._ctx

    @property
    def call_id(self) -> str:
        """The call this processor serves ('' outside a run)."""
        return self._ctx.call_id if self._ctx is not None else ""

    def now_ms(self) -> float:
        """The run clock, in milliseconds."""
        return self.context.clock.now_ms()

    async def setup(self, ctx: ProcessorContext) -> None:
        """Called once before the run's ``StartFrame``. Subclasses call ``super().setup``."""
        self._ctx = ctx

    async def cleanup(self) -> None:
        """Called once when the run ends, in any way. Must not raise."""

    def create_task(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Start a background task owned by this processor and cancelled with the run."""
        return self.context.tasks.create_task(
            coro, name=f"{self.name}:{name or 'task'}", owner=self
        )

    # --- frames ------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Handle one frame. The default passes it on in the same direction."""
        await self.push_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = DOWNSTREAM) -> None:
        """Send ``frame`` to the next processor in ``direction`` (no-op at the chain's end)."""
        nxt = self._next if direction == 1 else self._prev
        if nxt is None:
            return
        try:
            await nxt.process_frame(frame, direction)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await nxt._failed(exc, frame)

    async def _failed(self, exc: Exception, frame: Frame) -> None:
        log_event(
            _log,
            "pipeline.processor_failed",
            level=logging.ERROR,
            call_id=self.call_id,
            processor=self.name,
            frame=type(frame).__name__,
            error=repr(exc),
            exc_info=exc,
        )
        await self.push_error(exc)

    async def push_error(self, exc: BaseException | str, *, fatal: bool = False) -> None:
        """Report an error upstream as an :class:`ErrorFrame` from this processor."""
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        frame = ErrorFrame(error=text, processor=self.name, fatal=fatal)
        prev = self._prev
        if prev is None:
            return
        try:
            await prev.process_frame(frame, UPSTREAM)
        except Exception as again:  # an error handler must never loop or escape
            log_event(
                _log,
                "pipeline.error_frame_failed",
                level=logging.ERROR,
                call_id=self.call_id,
                processor=prev.name,
                error=repr(again),
            )

    def __repr__(self) -> str:
        return f"<{self.name}>"
