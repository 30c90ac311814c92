"""TimeSlice: a reader with a backlog yields now and then; one that keeps up never does."""

from __future__ import annotations

import asyncio
import time

import pytest

from nixflex_engine.pipeline import TimeSlice


async def _drain(slice_ms: float, items: int, cost_s: float) -> list[int]:
    """A reader working through ``items`` queued messages (``cost_s`` of CPU each): the
    counts another task sees meanwhile."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(items):
        queue.put_nowait(i)
    done = 0
    slice_ = TimeSlice(slice_ms)

    async def reader() -> None:
        nonlocal done
        while done < items:
            slice_.waiting()
            await queue.get()
            await slice_.worked()
            time.sleep(cost_s)  # noqa: ASYNC251 -- CPU work between awaits, on purpose
            done += 1

    seen: list[int] = []

    async def other() -> None:
        while done < items:
            seen.append(done)
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(reader(), other()), 10)
    return seen


async def test_a_backlog_yields_every_slice() -> None:
    seen = await _drain(slice_ms=2.0, items=30, cost_s=0.001)
    assert len({c for c in seen if 0 < c < 30}) >= 5


async def test_an_unbounded_slice_drains_the_backlog_in_one_step() -> None:
    seen = await _drain(slice_ms=1e9, items=30, cost_s=0.001)
    assert [c for c in seen if 0 < c < 30] == []


async def test_a_reader_that_waited_does_not_yield() -> None:
    slice_ = TimeSlice(0.0)  # would yield on any backlog
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    slice_.waiting()
    await asyncio.sleep(0.005)  # a real wait for the next message
    task = asyncio.create_task(other())
    await slice_.worked()  # caught up: no yield, the other task has not run yet
    order.append("reader")
    await task
    assert order == ["reader", "other"]


async def test_after_a_slice_of_backlog_the_reader_lets_others_run_first() -> None:
    slice_ = TimeSlice(0.0)
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    slice_.waiting()  # the next message was already queued: no wait
    task = asyncio.create_task(other())
    await slice_.worked()
    order.append("reader")
    await task
    assert order == ["other", "reader"]


def test_slice_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="slice_ms"):
        TimeSlice(-1.0)
