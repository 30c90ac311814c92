"""An asynchronous boundary that lets system frames overtake queued data."""

from __future__ import annotations

import asyncio
from collections import deque

from nixflex_engine.frames import CancelFrame, Frame, InterruptionFrame, SystemFrame
from nixflex_engine.pipeline.processor import (
    DOWNSTREAM,
    FrameDirection,
    FrameProcessor,
    ProcessorContext,
)

__all__ = ["FrameQueue"]


class FrameQueue(FrameProcessor):
    """Decouples the processors before it from the ones after it (downstream).

    Consumes: every frame. Emits: the same frames, downstream from its own task, in order.
    System frames (and everything travelling upstream) are passed on at once, overtaking
    what is queued. An :class:`InterruptionFrame` also discards the queued frames marked
    ``interruptible`` (agent output); a :class:`CancelFrame` discards everything.

    Most chains need no queue: I/O processors already own their reader tasks. Use one where a
    slow consumer must not hold up its producer.
    """

    __slots__ = ("_items", "_ready", "_runner")

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._items: deque[Frame] = deque()
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """How many frames are waiting."""
        return len(self._items)

    async def setup(self, ctx: ProcessorContext) -> None:
        await super().setup(ctx)
        self._runner = self.create_task(self._drain(), "drain")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction != DOWNSTREAM or isinstance(frame, SystemFrame):
            if isinstance(frame, InterruptionFrame):
                self._items = deque(f for f in self._items if not f.interruptible)
            elif isinstance(frame, CancelFrame):
                self._items.clear()
            await self.push_frame(frame, direction)
            return
        self._items.append(frame)
        self._ready.set()

    async def _drain(self) -> None:
        items_ready = self._ready
        while True:
            await items_ready.wait()
            while self._items:
                await self.push_frame(self._items.popleft(), DOWNSTREAM)
            items_ready.clear()

    async def cleanup(self) -> None:
        self._items.clear()
