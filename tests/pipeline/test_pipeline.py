"""The pipeline core: linking, directions, nesting, errors, queues and the runner."""

from __future__ import annotations

import asyncio

import pytest

from nixflex_engine.frames import (
    CancelFrame,
    EndCallFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMTextFrame,
    MetricsFrame,
    StartFrame,
    TranscriptFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    FrameQueue,
    Pipeline,
    PipelineTask,
)


class Recorder(FrameProcessor):
    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.seen: list[tuple[Frame, FrameDirection]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.seen.append((frame, direction))
        await self.push_frame(frame, direction)


class Upper(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMTextFrame):
            frame = LLMTextFrame(text=frame.text.upper())
        await self.push_frame(frame, direction)


class Boom(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMTextFrame) and frame.text == "boom":
            raise ValueError("kaboom")
        await self.push_frame(frame, direction)


def texts(rec: Recorder, direction: FrameDirection = DOWNSTREAM) -> list[str]:
    return [f.text for f, d in rec.seen if isinstance(f, LLMTextFrame) and d == direction]


async def run_with(task: PipelineTask) -> asyncio.Task:  # type: ignore[type-arg]
    runner = asyncio.create_task(task.run())
    await asyncio.sleep(0)
    return runner


async def test_frames_flow_both_ways_through_nested_pipelines() -> None:
    first, last = Recorder("first"), Recorder("last")
    inner = Pipeline([Upper(), Recorder("inner")])
    task = PipelineTask(Pipeline([first, inner, last]), call_id="CA1")
    seen_at_edges: list[tuple[str, FrameDirection]] = []
    task.add_observer(lambda f, d: seen_at_edges.append((type(f).__name__, d)))
    runner = await run_with(task)
    await task.queue_frame(LLMTextFrame(text="hi"))
    await task.queue_frame(TranscriptFrame(text="up"), UPSTREAM)
    await task.queue_frame(EndCallFrame())
    result = await asyncio.wait_for(runner, 2)
    assert result.reason == "agent_hangup" and not result.cancelled
    assert texts(first) == ["hi"] and texts(last) == ["HI"]
    assert [f.text for f, d in first.seen if isinstance(f, TranscriptFrame)] == ["up"]
    assert isinstance(first.seen[0][0], StartFrame)
    assert ("TranscriptFrame", UPSTREAM) in seen_at_edges
    assert ("EndCallFrame", DOWNSTREAM) in seen_at_edges
    assert task.tasks.pending == 0


async def test_processor_error_becomes_error_frame_and_run_goes_on(caplog) -> None:
    before, after = Recorder("before"), Recorder("after")
    errors: list[ErrorFrame] = []
    task = PipelineTask(Pipeline([before, Boom(), after]), call_id="CA-err")
    task.add_observer(lambda f, d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    runner = await run_with(task)
    await task.queue_frame(LLMTextFrame(text="boom"))
    await task.queue_frame(LLMTextFrame(text="fine"))
    await task.end("done")
    result = await asyncio.wait_for(runner, 2)
    assert [e.processor for e in errors] == ["Boom"] and "kaboom" in errors[0].error
    assert not errors[0].fatal
    assert texts(after) == ["fine"]
    assert result.reason == "done" and result.error is not None
    assert any("CA-err" in str(getattr(r, "fields", "")) for r in caplog.records)


async def test_fatal_error_stops_the_run() -> None:
    class Fatal(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, LLMTextFrame):
                await self.push_error("provider down", fatal=True)
            await self.push_frame(frame, direction)

    task = PipelineTask(Pipeline([Fatal()]))
    runner = await run_with(task)
    await task.queue_frame(LLMTextFrame(text="x"))
    result = await asyncio.wait_for(runner, 2)
    assert result.reason == "error" and result.error == "provider down"


async def test_queue_lets_system_frames_overtake_and_interruption_drops_agent_output() -> None:
    gate = asyncio.Event()

    class Slow(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, LLMTextFrame) and frame.text == "block":
                await gate.wait()
            await self.push_frame(frame, direction)

    sink = Recorder("sink")
    queue = FrameQueue()
    task = PipelineTask(Pipeline([queue, Slow(), sink]))
    runner = await run_with(task)
    for t in ["block", "a", "b"]:
        await task.queue_frame(LLMTextFrame(text=t))
    await asyncio.sleep(0.01)
    assert queue.queued == 2
    await task.queue_frame(MetricsFrame(name="m", value=1.0))
    # The metrics frame overtook "a" and "b", which wait behind "block".
    assert [type(f).__name__ for f, _ in sink.seen][-1] == "MetricsFrame"
    await task.queue_frame(InterruptionFrame())
    assert queue.queued == 0
    gate.set()
    await task.end()
    await asyncio.wait_for(runner, 2)
    assert texts(sink) == ["block"]


async def test_cancel_stops_at_once_and_leaves_no_task() -> None:
    started = asyncio.Event()

    class Reader(FrameProcessor):
        cleaned = False

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, StartFrame):
                self.create_task(self._forever(), "reader")
            await self.push_frame(frame, direction)

        async def _forever(self) -> None:
            started.set()
            await asyncio.sleep(3600)

        async def cleanup(self) -> None:
            Reader.cleaned = True

    task = PipelineTask(Pipeline([Reader(), FrameQueue()]))
    runner = await run_with(task)
    await started.wait()
    assert task.tasks.pending == 2
    await task.cancel("caller_hangup")
    result = await asyncio.wait_for(runner, 2)
    assert result.cancelled and result.reason == "caller_hangup"
    assert Reader.cleaned and task.tasks.pending == 0
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftovers == []


async def test_cancel_frame_from_inside_ends_the_run() -> None:
    class Hangup(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await self.push_frame(frame, direction)
            if isinstance(frame, StartFrame):
                await self.push_frame(CancelFrame(reason="caller_hangup"))

    result = await asyncio.wait_for(PipelineTask(Pipeline([Hangup()])).run(), 2)
    assert result.cancelled and result.reason == "caller_hangup"


async def test_background_task_failure_is_reported() -> None:
    errors: list[ErrorFrame] = []

    class Flaky(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, StartFrame):
                self.create_task(self._fail(), "fail")
            await self.push_frame(frame, direction)

        async def _fail(self) -> None:
            raise ConnectionError("socket dropped")

    task = PipelineTask(Pipeline([Flaky()]))
    task.add_observer(lambda f, d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    runner = await run_with(task)
    await asyncio.sleep(0.01)
    await task.end()
    await asyncio.wait_for(runner, 2)
    assert errors and "socket dropped" in errors[0].error and errors[0].processor == "Flaky"


def test_pipeline_rejects_empty_and_repeated_processors() -> None:
    with pytest.raises(ValueError):
        Pipeline([])
    p = FrameProcessor()
    with pytest.raises(ValueError):
        Pipeline([p, p])


async def test_run_only_once() -> None:
    task = PipelineTask(Pipeline([FrameProcessor()]))
    runner = await run_with(task)
    await task.end()
    await runner
    with pytest.raises(RuntimeError):
        await task.run()


async def test_task_cancelled_before_it_runs_leaves_no_unawaited_coroutine() -> None:
    import gc
    import warnings

    from nixflex_engine.pipeline import TaskManager

    async def never() -> None:
        await asyncio.sleep(3600)

    manager = TaskManager("CA-x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = manager.create_task(never(), name="t")
        task.cancel()
        await manager.cancel_all()
        del task
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert manager.pending == 0
