"""What ``turn_latency.py`` (ours) and ``pipecat_turn_latency.py`` (Pipecat's) share.

Standard library only: imported from both virtual environments, so it never imports
``nixflex_engine`` or ``pipecat``.

- The conversation: the agent's prompt and opener, the caller's lines and the fake model's
  replies (the same fakes answer both engines, so both say and hear the very same words).
- The engine-process side of the harness: an event-loop lag monitor and the ``/stats``
  payload (process CPU, the event loop's wait for a CPU, loop lag), so both engines are
  measured alike.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AGENT_PROMPT",
    "ANTHROPIC_KEY",
    "BARGE_IN_AFTER_MS",
    "BARGE_IN_LINE",
    "CALLER_LINES",
    "DEEPGRAM_KEY",
    "GREETING",
    "LLM_MODEL",
    "REPLIES",
    "WELCOME",
    "LoopLagMonitor",
    "percentile",
    "stats_payload",
]

DEEPGRAM_KEY = "bench-deepgram-key"
ANTHROPIC_KEY = "bench-anthropic-key"
LLM_MODEL = "claude-haiku-4-5"

AGENT_PROMPT = (
    "You are Anna, a friendly scheduling assistant at Riverside Clinic. You are calling Sarah "
    "to confirm her appointment on Tuesday at 2pm. Keep replies short."
)
#: The agent's opener, spoken when the person answers (ours: the voicemail arbiter's opener,
#: TTS only; Pipecat: the fake model's reply to the greeting).
WELCOME = "Hi, this is Anna from Riverside Clinic. Is this Sarah?"
#: What the callee says when it picks up (not a measured turn: the opener answers it).
GREETING = "Hello?"

#: The caller's measured lines, in order. Each is a multiple of 4 bytes long: sandbox speech is
#: 75 ms per byte, so every line ends exactly on a 20 ms media-frame boundary and the turn's
#: clock starts at a known place in the frame grid.
CALLER_LINES: tuple[str, ...] = (
    "Yes, this is Sarah speaking.",
    "Could we make it a little later?",
    "Yes, four works well for me.",
    "Anything I should bring?",
)
#: Said over the agent's (long) reply to the last caller line, ``BARGE_IN_AFTER_MS`` into it.
BARGE_IN_LINE = "Sorry, what was that, again?"
BARGE_IN_AFTER_MS = 800.0

#: (regex on the caller's last message, the fake model's reply). The first chunk of each reply
#: is of a different size (one word, a short sentence, a long clause), as in real replies.
REPLIES: tuple[tuple[str, str], ...] = (
    (r"^\W*hello\W*$", WELCOME),
    (
        r"this is sarah",
        "Thanks, Sarah. Your visit is on Tuesday at 2pm. Does that still work?",
    ),
    (r"little later", "Of course. I can move it to 4pm on Tuesday. Shall I book that?"),
    (r"four works", "Done, you are booked for Tuesday at 4pm. See you then!"),
    (
        r"should bring",
        "Please bring your insurance card, a photo ID, and a list of the medicines you take, "
        "and arrive about ten minutes early so we can update your file.",
    ),
    (r"what was that", "Sorry! Please bring your insurance card and a photo ID."),
)

for _line in (*CALLER_LINES, BARGE_IN_LINE):
    if len(_line.encode()) % 4:
        raise AssertionError(f"caller line {_line!r} must be a multiple of 4 bytes")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (NumPy's default); NaN when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _runqueue_wait_s() -> float:
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return math.nan


@dataclass(slots=True)
class LoopLagMonitor:
    """Samples how late the event loop wakes a ``period_s`` sleep (its lag), continuously."""

    period_s: float = 0.01
    lags_ms: list[float] = field(default_factory=list)
    cpu0: float = 0.0
    wall0: float = 0.0
    wait0: float = 0.0
    _task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        self.lags_ms = []
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()
        self.wait0 = _runqueue_wait_s()

    def start(self) -> None:
        self.reset()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.period_s)
            self.lags_ms.append((loop.time() - t - self.period_s) * 1000.0)
            if len(self.lags_ms) > 200_000:
                del self.lags_ms[:100_000]


def stats_payload(monitor: LoopLagMonitor, *, reset: bool) -> dict[str, Any]:
    """The engine process's figures since the last reset; resets them if asked."""
    lags = monitor.lags_ms
    out = {
        "cpu_s": time.process_time() - monitor.cpu0,
        "wall_s": time.perf_counter() - monitor.wall0,
        "runqueue_wait_s": _runqueue_wait_s() - monitor.wait0,
        "loop_lag_ms": {
            "n": len(lags),
            "p50": percentile(lags, 50),
            "p95": percentile(lags, 95),
            "p99": percentile(lags, 99),
            "max": max(lags) if lags else math.nan,
        },
        "pid": os.getpid(),
    }
    if reset:
        monitor.reset()
    return out
