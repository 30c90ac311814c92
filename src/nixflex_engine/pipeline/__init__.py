"""The frame pipeline: processors, pipelines, queues and the runner. No I/O, no vendor."""

from nixflex_engine.pipeline.clock import Clock, MonotonicClock
from nixflex_engine.pipeline.fairness import TimeSlice
from nixflex_engine.pipeline.pipeline import Pipeline
from nixflex_engine.pipeline.processor import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    ProcessorContext,
    TaskManager,
)
from nixflex_engine.pipeline.queue import FrameQueue
from nixflex_engine.pipeline.task import FrameObserver, PipelineTask, RunResult

__all__ = [
    "DOWNSTREAM",
    "UPSTREAM",
    "Clock",
    "FrameDirection",
    "FrameObserver",
    "FrameProcessor",
    "FrameQueue",
    "MonotonicClock",
    "Pipeline",
    "PipelineTask",
    "ProcessorContext",
    "RunResult",
    "TaskManager",
    "TimeSlice",
]
