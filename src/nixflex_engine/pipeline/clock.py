"""The one clock every latency figure is measured on."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock"]


class Clock(Protocol):
    """Milliseconds since some fixed origin; never goes backwards."""

    def now_ms(self) -> float:
        """The current time in milliseconds."""
        ...


class MonotonicClock:
    """``time.perf_counter`` in milliseconds, from the moment the clock was made."""

    __slots__ = ("_origin",)

    def __init__(self) -> None:
        self._origin = time.perf_counter()

    def now_ms(self) -> float:
        """Milliseconds since this clock was created."""
        return (time.perf_counter() - self._origin) * 1000.0
