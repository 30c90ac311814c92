"""Pipelines: link processors into a chain, nestable as a processor itself."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from nixflex_engine.frames import Frame
from nixflex_engine.pipeline.processor import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
)

__all__ = ["Pipeline"]


class _Edge(FrameProcessor):
    """The inside ends of a pipeline: frames leaving the chain continue outside it."""

    __slots__ = ("_exit", "_outer")

    def __init__(self, outer: Pipeline, exit_direction: FrameDirection, name: str) -> None:
        super().__init__(name=name)
        self._outer = outer
        self._exit = exit_direction

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction == self._exit:
            await self._outer.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)


class Pipeline(FrameProcessor):
    """A chain of processors, itself a processor.

    Frames entering downstream go to the first processor; frames leaving the last one go on
    to whatever follows the pipeline (and upstream the other way round)::

        Pipeline([TwilioInput(ws), MulawDecoder(), VADProcessor(), ..., TwilioOutput(ws)])
    """

    __slots__ = ("_head", "_processors", "_tail")

    def __init__(self, processors: Sequence[FrameProcessor], *, name: str | None = None) -> None:
        super().__init__(name=name)
        if not processors:
            raise ValueError("a pipeline needs at least one processor")
        if len(set(map(id, processors))) != len(processors):
            raise ValueError("a processor can appear only once in a pipeline")
        self._processors = list(processors)
        self._head = _Edge(self, UPSTREAM, f"{self.name}.head")
        self._tail = _Edge(self, DOWNSTREAM, f"{self.name}.tail")
        chain: list[FrameProcessor] = [self._head, *self._processors, self._tail]
        for a, b in itertools.pairwise(chain):
            a.link(b)

    @property
    def processors(self) -> list[FrameProcessor]:
        """The processors, in order (a copy)."""
        return list(self._processors)

    def walk(self) -> Iterator[FrameProcessor]:
        """This pipeline, its edges, and every processor inside, depth first."""
        yield self
        yield self._head
        for p in self._processors:
            yield from p.walk()
        yield self._tail

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction == DOWNSTREAM:
            await self._head.push_frame(frame, DOWNSTREAM)
        else:
            await self._tail.push_frame(frame, UPSTREAM)
