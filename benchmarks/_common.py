"""Helpers shared by ``frame_overhead.py`` (ours) and ``pipecat_overhead.py`` (Pipecat's side).

Standard library, numpy and (optionally) psutil only: this module is imported from both
virtual environments, so it must never import ``nixflex_engine`` or ``pipecat``.

What lives here is what makes the two sides *the same workload*:

- the caller audio (when no shared mu-law file is given) and the Twilio ``media`` message text,
  byte for byte;
- the paced driver: one task per call, one message every 20 ms at real time, calls phased
  evenly across the 20 ms period, latency measured from each frame's *scheduled* time to its
  arrival at the sink (so event-loop lag counts), the same warm-up and measurement window;
- the meters (process CPU time, wall time, RSS) and the statistics (percentiles, late and
  dropped frames);
- running each concurrency level in a fresh child process, so RSS and CPU figures of one level
  never leak into the next.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "QUICK_DIR",
    "RESULTS_DIR",
    "CallStats",
    "NullCall",
    "PacedCall",
    "ProcessMeter",
    "add_loop_argument",
    "call_sid_for",
    "caller_audio_pcm16",
    "connected_message",
    "fit_per_hop",
    "load_mulaw_file",
    "machine_info",
    "media_message",
    "mulaw_frames_b64",
    "print_table",
    "rss_bytes",
    "run_child_levels",
    "run_on_loop",
    "run_paced_calls",
    "start_message",
    "stop_message",
    "stream_sid_for",
    "summarize_us",
    "write_json",
]

FRAME_MS = 20  # Twilio sends one media message per 20 ms
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
SAMPLE_RATE = 8000
LATE_MS = 20.0  # a frame arriving more than one frame period after its schedule is late
SENDER_GRACE_S = 5.0  # after the window, how long a saturated driver may still send
STOP_TIMEOUT_S = 15.0  # how long one call may take to stop
RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_DIR = Path(__file__).resolve().parent.parent / "var" / "bench-quick"  # smoke runs


# --- event loop ------------------------------------------------------------------------------

LOOPS = ("uvloop", "asyncio")


def add_loop_argument(parser: Any, *, help_extra: str = "") -> None:
    """``--loop {uvloop,asyncio}`` (default uvloop), for :func:`run_on_loop`."""
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="uvloop",
        help="event loop (default uvloop: what `nixflex-engine serve` and uvicorn[standard] "
        "apps, Pipecat's included, run on); compared sides must use the same one" + help_extra,
    )


def run_on_loop(main: Awaitable[Any], loop: str = "uvloop") -> Any:
    """Run ``main`` on ``loop``: ``uvloop`` (what ``nixflex-engine serve`` and any uvicorn
    ``[standard]`` app run on) or the standard library's ``asyncio`` loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)  # type: ignore[arg-type]
    if loop != "asyncio":
        raise ValueError(f"unknown event loop {loop!r}; one of {LOOPS}")
    return asyncio.run(main)  # type: ignore[arg-type]


# --- statistics ----------------------------------------------------------------------------


def summarize_us(seconds: Sequence[float] | npt.NDArray[np.float64]) -> dict[str, float]:
    """p50/p90/p99/max/mean of durations given in seconds, reported in microseconds."""
    a = np.asarray(seconds, dtype=np.float64) * 1e6
    if a.size == 0:
        return {
            "n": 0,
            "p50_us": math.nan,
            "p90_us": math.nan,
            "p99_us": math.nan,
            "max_us": math.nan,
            "mean_us": math.nan,
        }
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "n": int(a.size),
        "p50_us": float(p50),
        "p90_us": float(p90),
        "p99_us": float(p99),
        "max_us": float(a.max()),
        "mean_us": float(a.mean()),
    }


def fit_per_hop(hops: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` over ``hops``: the marginal cost of one more hop.

    The slope removes what every chain pays once (task edges, injection, the sink), which is
    what "per hop" means.
    """
    if len(hops) < 2:
        return math.nan
    slope, _ = np.polyfit(np.asarray(hops, dtype=np.float64), np.asarray(values), 1)
    return float(slope)


# --- machine and process -------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the figures were measured on, including the load at the time."""
    load1, load5, load15 = os.getloadavg()
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    except OSError:
        uptime = ""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg": [load1, load5, load15],
        "uptime": uptime.strip(),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def rss_bytes() -> int:
    """Resident set size of this process (psutil when present, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.Process().memory_info().rss)


def runqueue_wait_s() -> float:
    """Seconds this process's main thread (the event loop) has spent runnable but waiting
    for a CPU (``/proc/self/schedstat``); NaN where the kernel does not say."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return math.nan


@dataclass(slots=True)
class ProcessMeter:
    """Process CPU time (all threads), wall time and the event loop's wait for a CPU between
    :meth:`start` and :meth:`stop`, and the largest RSS seen by :meth:`sample`."""

    cpu0: float = 0.0
    wall0: float = 0.0
    wait0: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    wait_s: float = 0.0
    rss_max: int = 0

    def start(self) -> None:
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()
        self.wait0 = runqueue_wait_s()
        self.rss_max = rss_bytes()

    def sample(self) -> None:
        self.rss_max = max(self.rss_max, rss_bytes())

    def stop(self) -> None:
        self.cpu_s = time.process_time() - self.cpu0
        self.wall_s = time.perf_counter() - self.wall0
        self.wait_s = runqueue_wait_s() - self.wait0
        self.sample()


# --- caller audio and Twilio messages ------------------------------------------------------


# (kind, milliseconds): a caller who answers, pauses, speaks at length, hesitates...
_SCRIPT_MS: tuple[tuple[str, int], ...] = (
    ("speech", 1200),
    ("silence", 800),
    ("speech", 2000),
    ("silence", 400),
    ("speech", 600),
    ("silence", 1500),
    ("speech", 1600),
    ("silence", 900),
)


def caller_audio_pcm16(seed: int = 7) -> npt.NDArray[np.int16]:
    """About 9 s of speech-like caller audio at 8 kHz: voiced segments and quiet gaps.

    Voiced segments are a harmonic series on a gliding pitch (105-150 Hz) shaped by two
    formant-like resonances that drift, amplitude-modulated at syllable rate; gaps are line
    noise at about -62 dBFS. Deterministic. Used when the project's own sandbox speech is
    not at hand (e.g. in the Pipecat environment run on its own).
    """
    rng = np.random.default_rng(seed)
    parts: list[npt.NDArray[np.float64]] = []
    for kind, ms in _SCRIPT_MS:
        n = ms * SAMPLE_RATE // 1000
        t = np.arange(n) / SAMPLE_RATE
        if kind == "silence":
            parts.append(rng.standard_normal(n) * 25.0)
            continue
        f0 = 125.0 + 20.0 * np.sin(2 * np.pi * t / 0.9 + rng.uniform(0, 6)) - 8.0 * t
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        f1 = 500.0 + 200.0 * np.sin(2 * np.pi * t / 0.31)
        f2 = 1500.0 + 400.0 * np.sin(2 * np.pi * t / 0.23 + 1.0)
        x = np.zeros(n)
        for k in range(1, 30):
            fk = k * f0
            gain = (
                np.exp(-(((fk - f1) / 180.0) ** 2)) + 0.5 * np.exp(-(((fk - f2) / 250.0) ** 2))
            ) / math.sqrt(k)
            x += gain * np.sin(k * phase)
        envelope = 0.35 + 0.65 * np.sin(np.pi * t / 0.25) ** 2
        ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
        x *= envelope * ramp
        x *= 9000.0 / max(float(np.max(np.abs(x))), 1e-9)
        parts.append(x + rng.standard_normal(n) * 25.0)
    pcm = np.concatenate(parts)
    return np.asarray(np.clip(np.round(pcm), -32768, 32767), dtype=np.int16)


def load_mulaw_file(path: str | os.PathLike[str]) -> bytes:
    """Raw mu-law bytes from ``path`` (whole 160-byte frames only)."""
    data = Path(path).read_bytes()
    usable = len(data) - len(data) % FRAME_BYTES
    if usable == 0:
        raise ValueError(f"{path}: no complete 20 ms mu-law frame")
    return data[:usable]


def mulaw_frames_b64(mulaw: bytes) -> list[str]:
    """The base64 payloads of consecutive 20 ms frames (what Twilio puts in ``media``)."""
    return [
        base64.b64encode(mulaw[i : i + FRAME_BYTES]).decode("ascii")
        for i in range(0, len(mulaw) - FRAME_BYTES + 1, FRAME_BYTES)
    ]


def media_message(stream_sid: str, index: int, payload_b64: str) -> str:
    """The exact text of Twilio's ``media`` message for frame ``index`` (0-based) of a stream.

    As Twilio numbers them: ``start`` is sequence number 1, so media frame 0 is 2; ``chunk``
    counts from 1; ``timestamp`` is the frame's offset from stream start in ms (all strings).
    """
    return (
        f'{{"event":"media","sequenceNumber":"{index + 2}","streamSid":"{stream_sid}",'
        f'"media":{{"track":"inbound","chunk":"{index + 1}","timestamp":"{index * FRAME_MS}",'
        f'"payload":"{payload_b64}"}}}}'
    )


def connected_message() -> str:
    """Twilio's first message on a media stream."""
    return '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start_message(call: int) -> str:
    """Twilio's ``start`` for call number ``call`` (sequence number 1, mu-law 8 kHz mono)."""
    sid, call_sid = stream_sid_for(call), call_sid_for(call)
    return (
        f'{{"event":"start","sequenceNumber":"1","streamSid":"{sid}","start":{{'
        f'"streamSid":"{sid}","accountSid":"AC{"0" * 32}","callSid":"{call_sid}",'
        f'"tracks":["inbound"],"customParameters":{{"call_id":"bench-{call}"}},'
        f'"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}'
    )


def stop_message(call: int, sequence_number: int) -> str:
    """Twilio's ``stop`` for call number ``call``."""
    sid, call_sid = stream_sid_for(call), call_sid_for(call)
    return (
        f'{{"event":"stop","sequenceNumber":"{sequence_number}","streamSid":"{sid}",'
        f'"stop":{{"accountSid":"AC{"0" * 32}","callSid":"{call_sid}"}}}}'
    )


def stream_sid_for(call: int) -> str:
    """A well-formed stream sid (``MZ`` + 32 hex) for call number ``call``."""
    return "MZ" + f"{call:032x}"


def call_sid_for(call: int) -> str:
    """A well-formed call sid (``CA`` + 32 hex) for call number ``call``."""
    return "CA" + f"{call:032x}"


# --- the paced driver ----------------------------------------------------------------------


@dataclass(slots=True)
class CallStats:
    """Arrivals at one call's sink, for the frames inside the measurement window.

    ``t0`` is when frame 0 of this call is scheduled (``time.perf_counter`` seconds); frame
    ``i`` is scheduled at ``t0 + i * 20 ms``. The sink calls :meth:`arrived` with the frame
    index; frames outside ``[first, last)`` are counted but not timed.
    """

    t0: float = 0.0
    first: int = 0
    last: int = 0
    sent: int = 0
    arrived_total: int = 0
    latencies: list[float] = field(default_factory=list)

    def arrived(self, index: int, now: float) -> None:
        self.arrived_total += 1
        if self.first <= index < self.last:
            self.latencies.append(now - (self.t0 + index * (FRAME_MS / 1000.0)))


class PacedCall(Protocol):
    """One simulated call, as the driver sees it (each side implements it)."""

    stats: CallStats

    async def start(self) -> None:
        """Build and start the call's pipeline; return once it accepts frames."""
        ...

    async def feed(self, index: int, text: str) -> None:
        """Handle Twilio message ``text`` (frame ``index``) the way the transport would."""
        ...

    async def stop(self) -> None:
        """End the call's pipeline and wait until it has stopped."""
        ...


class NullCall:
    """A call with no chain at all: the driver's own cost (the *harness floor*).

    Its ``feed`` does only what a sink does, so a run with it measures what every side pays
    for pacing, waking up and building the Twilio text, and nothing else.
    """

    def __init__(self) -> None:
        self.stats = CallStats()

    async def start(self) -> None:
        return None

    async def feed(self, index: int, text: str) -> None:
        self.stats.arrived(index, time.perf_counter())

    async def stop(self) -> None:
        return None


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _sender(call: PacedCall, sid: str, payloads: Sequence[str], total: int) -> None:
    stats = call.stats
    n_payloads = len(payloads)
    period = FRAME_MS / 1000.0
    for i in range(total):
        await _sleep_until(stats.t0 + i * period)
        await call.feed(i, media_message(sid, i, payloads[i % n_payloads]))
        stats.sent += 1


async def run_paced_calls(
    make_call: Callable[[int], Awaitable[PacedCall]],
    calls: int,
    payloads: Sequence[str],
    *,
    warmup_s: float,
    measure_s: float,
    drain_s: float = 1.0,
    baseline_rss: int | None = None,
) -> dict[str, Any]:
    """Run ``calls`` concurrent calls at 50 frames/s each, in this process and event loop.

    Every call starts its pipeline first; then all send frames at real 20 ms pacing, call
    ``k`` phased ``k/calls`` of a period after call 0 and starting at a different point of the
    caller audio. After ``warmup_s`` the meters run for ``measure_s``; frames scheduled in that
    window are timed. Senders then stop, the chain gets ``drain_s`` to deliver what it still
    holds, and frames of the window that never reached the sink count as dropped.
    """
    if baseline_rss is None:
        gc.collect()
        baseline_rss = rss_bytes()
    setup_t = time.perf_counter()
    built: list[PacedCall] = []
    for k in range(calls):
        built.append(await make_call(k))
    for c in built:
        await c.start()
    setup_s = time.perf_counter() - setup_t
    rss_after_setup = rss_bytes()

    period = FRAME_MS / 1000.0
    warm_frames = max(1, round(warmup_s / period))
    measure_frames = max(1, round(measure_s / period))
    total = warm_frames + measure_frames
    base = time.perf_counter() + 0.05
    for k, c in enumerate(built):
        c.stats.t0 = base + period * k / calls
        c.stats.first = warm_frames
        c.stats.last = total
    senders = [
        asyncio.create_task(
            _sender(c, stream_sid_for(k), _rotated(payloads, k * 37), total), name=f"send{k}"
        )
        for k, c in enumerate(built)
    ]

    meter = ProcessMeter()
    window_start = base + warm_frames * period
    window_end = base + total * period
    await _sleep_until(window_start)
    meter.start()
    while time.perf_counter() < window_end:
        await _sleep_until(min(window_end, time.perf_counter() + 0.5))
        meter.sample()
    meter.stop()
    backlog_at_end = sum(
        max(0, (c.stats.sent) - c.stats.arrived_total) for c in built
    )  # frames handed to the chain but not yet at the sink when the window closed
    # A chain that fell behind also holds up its senders: give them a bounded grace to send
    # the rest, then stop them. Window frames still unsent then were at least that late.
    _done, pending = await asyncio.wait(senders, timeout=SENDER_GRACE_S)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(drain_s)
    await asyncio.gather(*(asyncio.wait_for(c.stop(), STOP_TIMEOUT_S) for c in built))

    latencies = np.concatenate([np.asarray(c.stats.latencies, dtype=np.float64) for c in built])
    expected = calls * measure_frames
    unsent = sum(max(0, total - max(c.stats.sent, warm_frames)) for c in built)
    timed = int(latencies.size)
    late = int(np.count_nonzero(latencies > LATE_MS / 1000.0))
    return {
        "calls": calls,
        "frames_per_call_per_s": 1000 // FRAME_MS,
        "warmup_s": warmup_s,
        "measure_s": measure_frames * period,
        "setup_s": setup_s,
        "window_frames": expected,
        # Handed to the chain and never delivered (within the drain time after the run).
        "dropped_frames": expected - unsent - timed,
        # Late by more than 20 ms: delivered late, or never even sent (see below).
        "late_frames_over_20ms": late + unsent,
        # The event loop was so far behind that the driver could not send these window
        # frames within SENDER_GRACE_S after the window: excluded from the percentiles.
        "unsent_frames": unsent,
        "backlog_frames_at_window_end": backlog_at_end,
        "latency": summarize_us(latencies),
        "loadavg_1min_at_end": os.getloadavg()[0],
        # Time the event loop was ready to run but other processes had the CPUs: lateness
        # that comes from the machine's load, not from the chain.
        "runqueue_wait_percent_of_wall": 100.0 * meter.wait_s / meter.wall_s,
        "cpu_s": meter.cpu_s,
        "wall_s": meter.wall_s,
        "cpu_percent_of_core_total": 100.0 * meter.cpu_s / meter.wall_s,
        "cpu_percent_of_core_per_call": 100.0 * meter.cpu_s / meter.wall_s / calls,
        "cpu_us_per_frame": 1e6 * meter.cpu_s / (calls * meter.wall_s * 1000 / FRAME_MS),
        "rss_baseline_mb": baseline_rss / 2**20,
        "rss_after_setup_mb": rss_after_setup / 2**20,
        "rss_max_mb": meter.rss_max / 2**20,
        "rss_per_call_mb": (max(meter.rss_max, rss_after_setup) - baseline_rss) / 2**20 / calls,
    }


def _rotated(items: Sequence[str], shift: int) -> list[str]:
    s = shift % len(items)
    return [*items[s:], *items[:s]]


# --- child processes and output ------------------------------------------------------------


def run_child_levels(
    script: Path, levels: Sequence[int], child_args: Sequence[str], *, timeout_s: float = 900
) -> list[dict[str, Any]]:
    """Run ``script --child-calls N <child_args>`` in a fresh interpreter for each level N.

    Each child prints one JSON object as its last stdout line. A child that fails or times
    out gives ``{"calls": N, "error": ...}`` instead, so one bad level never hides the others.
    """
    out: list[dict[str, Any]] = []
    for n in levels:
        cmd = [sys.executable, str(script), "--child-calls", str(n), *child_args]
        print(f"  … {n} concurrent call(s)", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            out.append({"calls": n, "error": f"timed out after {timeout_s:.0f} s"})
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
            out.append({"calls": n, "error": f"exit {proc.returncode}: " + " | ".join(tail)})
            continue
        out.append(json.loads(lines[-1]))
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (atomically: a ``.tmp`` file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)
    ]
    print(f"\n{title}")
    print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for r in cells:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)
