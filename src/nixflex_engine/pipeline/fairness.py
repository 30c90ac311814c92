"""Cooperative time slices for reader loops that can fall behind.

A task that reads a socket and runs the chain for each message suspends only when the socket
has nothing queued. After the event loop fell behind (a burst of work, a GC pause, a CPU
taken by another process) every socket has a backlog, and such a reader drains all of it in
one step: with a hundred calls, steps of a hundred milliseconds and more, while other calls'
tokens, audio and marks wait behind it. :class:`TimeSlice` bounds that: the reader marks
where it waits for its next message, and after ``slice_ms`` of work without a real wait it
yields once to every other ready task::

    slice_ = TimeSlice(2.0)
    while True:
        slice_.waiting()
        msg = await socket.receive()
        await slice_.worked()   # yields if the backlog has had the loop for a whole slice
        ...                     # run the chain for msg

The cost when the reader keeps up is two clock reads per message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

__all__ = ["TimeSlice"]

#: A wait longer than this (seconds) means the reader had caught up: the message was not
#: already queued.
WAITED_S: Final = 0.0002


class TimeSlice:
    """How long a reader has run without a real wait; yields when that exceeds the slice."""

    __slots__ = ("_asked", "_busy_since", "_slice_s")

    def __init__(self, slice_ms: float = 2.0) -> None:
        if slice_ms < 0:
            raise ValueError("slice_ms must not be negative")
        self._slice_s = slice_ms / 1000.0
        now = time.perf_counter()
        self._asked = now
        self._busy_since = now

    def waiting(self) -> None:
        """Call right before awaiting the next message."""
        self._asked = time.perf_counter()

    async def worked(self) -> None:
        """Call right after the message arrived: yields to the other ready tasks once the
        reader has worked through queued messages for a whole slice."""
        now = time.perf_counter()
        if now - self._asked > WAITED_S:
            self._busy_since = now  # it waited: the reader had caught up
        elif now - self._busy_since >= self._slice_s:
            await asyncio.sleep(0)
            self._busy_since = time.perf_counter()
