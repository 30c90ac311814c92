"""The frame-overhead workloads of ``frame_overhead.py``, on Pipecat 1.14 (for comparison).

Runs ONLY in ``.venv-pipecat`` (``pip install "pipecat-ai[silero]==1.14.0" psutil``; made by
``benchmarks/run_all.sh``), never in the project's venv and never imported by the package.

1. **Pass-through hops.** Chains of 1, 5 and 10 pass-through ``FrameProcessor``\\ s in a
   ``Pipeline`` run by a ``PipelineWorker`` (1.14's name for ``PipelineTask``) under a
   ``WorkerRunner`` (ex ``PipelineRunner``), frames injected with ``worker.queue_frame``, one
   at a time (the next is injected once the previous reached the sink). Two configurations:

   - ``extras_off``: no RTVI, no turn tracking, no idle monitor, no metrics, no observers;
   - ``defaults``: ``PipelineWorker(pipeline, params=PipelineParams(...8 kHz...))`` as is
     (RTVI processor + observer, turn tracking, idle-timeout observer).

2. **The inbound chain**, at 50 frames/s per call for 1, 10, 100 and 300 concurrent calls in
   one process, the same Twilio ``media`` text and caller audio as ours:
   ``TwilioFrameSerializer.deserialize(text)`` (json + base64 + mu-law → PCM16) →
   ``worker.queue_frame`` → ``VADProcessor(SileroVADAnalyzer())`` → pass-through → sink,
   one ``PipelineWorker`` + ``WorkerRunner`` per call (the ``defaults`` configuration, as in
   Pipecat's Twilio examples, at 8 kHz so nothing is resampled). Silero's ONNX model ships
   inside the pipecat wheel (``pipecat/audio/vad/data/silero_vad.onnx``), so it runs offline.

Same metrics as ours (see ``_common.py``). Loguru is set to WARNING so Pipecat's debug lines
do not cost stderr writes (which only flatters Pipecat).

    .venv-pipecat/bin/python benchmarks/pipecat_overhead.py [--quick] [--caller-audio FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # the benchmarks folder is not a package
    QUICK_DIR,
    RESULTS_DIR,
    CallStats,
    add_loop_argument,
    call_sid_for,
    caller_audio_pcm16,
    fit_per_hop,
    load_mulaw_file,
    machine_info,
    media_message,
    mulaw_frames_b64,
    print_table,
    rss_bytes,
    run_child_levels,
    run_on_loop,
    run_paced_calls,
    stream_sid_for,
    summarize_us,
    write_json,
)

warnings.filterwarnings("ignore", category=DeprecationWarning)

from loguru import logger  # noqa: E402  (configured before pipecat logs anything)

logger.remove()
logger.add(sys.stderr, level="WARNING")

from pipecat.audio.vad.silero import SileroVADAnalyzer  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    TextFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.audio.vad_processor import VADProcessor  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.serializers.twilio import TwilioFrameSerializer  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

HOPS = (1, 5, 10)
CPU_REPEATS = 3
HOT_FRAMES = 2000
CALL_LEVELS = (1, 10, 100, 300)
CONFIGS = ("extras_off", "defaults")
SIDE = "pipecat-1.14.0"


def pipecat_version() -> str:
    from importlib.metadata import version

    return version("pipecat-ai")


# --- building and running a worker ---------------------------------------------------------


def make_worker(pipeline: Pipeline, config: str, sample_rate: int) -> PipelineWorker:
    params = PipelineParams(audio_in_sample_rate=sample_rate, audio_out_sample_rate=sample_rate)
    if config == "defaults":
        return PipelineWorker(pipeline, params=params)
    if config == "extras_off":
        return PipelineWorker(
            pipeline,
            params=params,
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )
    raise ValueError(f"unknown config {config!r}")


class Running:
    """A worker under its own ``WorkerRunner``, as a Pipecat bot runs one per connection."""

    def __init__(self, worker: PipelineWorker) -> None:
        self.worker = worker
        self.runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        self.task: asyncio.Task[Any] | None = None

    async def start(self, started: asyncio.Event) -> None:
        await self.runner.add_workers(self.worker)
        self.task = asyncio.create_task(self.runner.run())
        await asyncio.wait_for(started.wait(), 30)

    async def stop(self, *, cancel: bool = False) -> None:
        """End the worker: gracefully (``EndFrame``, after what is queued), or ``cancel``
        at once, which is what a hung-up call does and what a chain that fell behind needs."""
        if cancel:
            await self.worker.cancel(reason="benchmark over")
        else:
            await self.worker.queue_frame(EndFrame())
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 10)
            except TimeoutError:
                await self.worker.cancel(reason="end timed out")
                await self.task


# --- pass-through hops ---------------------------------------------------------------------


class PassThrough(FrameProcessor):
    """Pipecat's canonical pass-through: let the base class see the frame, push it on."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class TimingSink(FrameProcessor):
    """Last processor: notes when a frame of ``kind`` arrives and wakes the injector."""

    def __init__(self, kind: type[Frame]) -> None:
        super().__init__(name="sink")
        self.kind = kind
        self.arrived_at = 0.0
        self.count = 0
        self.started = asyncio.Event()
        self.arrival = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if type(frame) is self.kind:
            self.arrived_at = time.perf_counter()
            self.count += 1
            self.arrival.set()
        elif isinstance(frame, StartFrame):
            self.started.set()
        await self.push_frame(frame, direction)


def _sample_frame(kind: str, sample_rate: int) -> Frame:
    if kind == "audio":
        return InputAudioRawFrame(audio=b"\x00" * 320, sample_rate=sample_rate, num_channels=1)
    return TextFrame(text="Hello, this is Anna from the clinic.")


async def bench_passthrough(
    hops: int, frames: int, kind: str, config: str, sample_rate: int = 8000
) -> dict[str, Any]:
    probe = _sample_frame(kind, sample_rate)
    sink = TimingSink(type(probe))
    pipeline = Pipeline([*(PassThrough() for _ in range(hops)), sink])
    run = Running(make_worker(pipeline, config, sample_rate))
    await run.start(sink.started)
    worker = run.worker
    arrival = sink.arrival

    async def one() -> None:
        # A new frame each time: Pipecat frames carry ids and per-pipeline state.
        arrival.clear()
        await worker.queue_frame(_sample_frame(kind, sample_rate))
        await arrival.wait()

    for _ in range(min(500, frames)):
        await one()
    latencies = np.empty(frames, dtype=np.float64)
    perf = time.perf_counter
    for i in range(frames):
        t = perf()
        await one()
        latencies[i] = sink.arrived_at - t
    cpu_runs = []
    for _ in range(CPU_REPEATS):
        gc.collect()
        cpu0 = time.process_time()
        for _ in range(frames):
            await one()
        cpu_runs.append(time.process_time() - cpu0)
    cpu_s = float(np.median(cpu_runs))
    await run.stop()
    return {
        "config": config,
        "frame": type(probe).__name__,
        "hops": hops,
        "frames": frames,
        "dropped": frames * (1 + CPU_REPEATS) + min(500, frames) - sink.count,
        "cpu_us_per_frame": 1e6 * cpu_s / frames,
        "cpu_us_per_frame_min": 1e6 * min(cpu_runs) / frames,
        "latency": summarize_us(latencies),
    }


async def run_passthrough(frames: int, hops_list: tuple[int, ...]) -> dict[str, Any]:
    rows = []
    for config in CONFIGS:
        for kind in ("audio", "text"):
            for hops in hops_list:
                rows.append(await bench_passthrough(hops, frames, kind, config))
    per_hop: dict[str, Any] = {}
    for key in sorted({(r["config"], r["frame"]) for r in rows}):
        sel = [r for r in rows if (r["config"], r["frame"]) == key]
        hs = [r["hops"] for r in sel]
        per_hop[f"{key[0]}/{key[1]}"] = {
            "cpu_us": fit_per_hop(hs, [r["cpu_us_per_frame"] for r in sel]),
            "latency_p50_us": fit_per_hop(hs, [r["latency"]["p50_us"] for r in sel]),
            "latency_p99_us": fit_per_hop(hs, [r["latency"]["p99_us"] for r in sel]),
        }
    return {"rows": rows, "per_hop": per_hop}


# --- the inbound chain ---------------------------------------------------------------------


class InboundSink(FrameProcessor):
    """End of a call's chain: matches each audio frame to the Twilio frame it came from."""

    def __init__(self, stats: CallStats, pending: dict[int, int]) -> None:
        super().__init__(name="sink")
        self.stats = stats
        self.pending = pending
        self.started = asyncio.Event()
        #: Set on each audio frame when someone waits for it (the hot-chain measurement).
        self.arrival: asyncio.Event | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if type(frame) is InputAudioRawFrame:
            index = self.pending.pop(frame.id, None)
            if index is not None:
                self.stats.arrived(index, time.perf_counter())
            if self.arrival is not None:
                self.arrival.set()
        elif isinstance(frame, StartFrame):
            self.started.set()
        await self.push_frame(frame, direction)


class PipecatCall:
    """One call: serializer → worker(VAD → pass-through → sink) under its own runner."""

    def __init__(self, number: int, config: str, sample_rate: int) -> None:
        self.stats = CallStats()
        self._pending: dict[int, int] = {}  # frame id → Twilio frame index
        self._serializer = TwilioFrameSerializer(
            stream_sid_for(number),
            call_sid_for(number),
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        self._vad = VADProcessor(vad_analyzer=SileroVADAnalyzer())
        self._sink = InboundSink(self.stats, self._pending)
        pipeline = Pipeline([self._vad, PassThrough(), self._sink])
        self._run = Running(make_worker(pipeline, config, sample_rate))

    async def start(self) -> None:
        await self._run.start(self._sink.started)
        # What the websocket transport does when it starts: give the serializer the
        # pipeline's setup (it reads the pipeline's input sample rate from it).
        await self._serializer.setup(self._vad.processor_setup)

    async def feed(self, index: int, text: str) -> None:
        frame = await self._serializer.deserialize(text)
        if frame is not None:
            self._pending[frame.id] = index
            await self._run.worker.queue_frame(frame)

    async def stop(self) -> None:
        # Twilio's ``stop`` (caller hung up) cancels a Pipecat call, as it ends ours.
        await self._run.stop(cancel=True)


def caller_mulaw(audio_path: str | None) -> tuple[bytes, str]:
    if audio_path:
        return load_mulaw_file(audio_path), f"file {audio_path}"
    import audioop  # Python 3.11: deprecated but present (pipecat itself uses it)

    mulaw = audioop.lin2ulaw(caller_audio_pcm16().tobytes(), 2)
    return mulaw[: len(mulaw) - len(mulaw) % 160], "benchmarks/_common.caller_audio_pcm16"


async def run_inbound(
    calls: int,
    *,
    warmup_s: float,
    measure_s: float,
    audio_path: str | None = None,
    config: str = "defaults",
    sample_rate: int = 8000,
) -> dict[str, Any]:
    mulaw, audio_src = caller_mulaw(audio_path)
    payloads = mulaw_frames_b64(mulaw)

    # Baseline RSS after one throw-away call: onnxruntime's and Pipecat's one-time
    # allocations are not per-call memory.
    warm = PipecatCall(-1, config, sample_rate)
    await warm.start()
    for i in range(50):
        await warm.feed(i, media_message(stream_sid_for(0), i, payloads[i % len(payloads)]))
    await asyncio.sleep(0.3)
    await warm.stop()
    del warm
    gc.collect()
    baseline = rss_bytes()

    async def make(k: int) -> PipecatCall:
        return PipecatCall(k, config, sample_rate)

    result = await run_paced_calls(
        make, calls, payloads, warmup_s=warmup_s, measure_s=measure_s, baseline_rss=baseline
    )
    result["side"] = SIDE
    result["config"] = config
    result["sample_rate"] = sample_rate
    result["chain"] = {
        "parser": "pipecat.serializers.twilio.TwilioFrameSerializer.deserialize",
        "vad": "pipecat.processors.audio.vad_processor.VADProcessor(SileroVADAnalyzer())",
        "pass_through": "PassThrough(FrameProcessor)",
        "worker": f"PipelineWorker ({config}) under a WorkerRunner per call",
    }
    result["audio"] = audio_src
    return result


async def hot_chain(
    frames: int, audio_path: str | None, config: str = "defaults", sample_rate: int = 8000
) -> dict[str, Any]:
    """The whole inbound chain of one call, one message at a time, back to back (as ours)."""
    mulaw, _ = caller_mulaw(audio_path)
    payloads = mulaw_frames_b64(mulaw)
    n = len(payloads)
    call = PipecatCall(0, config, sample_rate)
    await call.start()
    arrival = call._sink.arrival = asyncio.Event()
    sid = stream_sid_for(0)
    texts = [media_message(sid, i, payloads[i % n]) for i in range(frames * 2 + 500)]
    perf = time.perf_counter
    for i in range(500):
        arrival.clear()
        await call.feed(i, texts[i])
        await arrival.wait()
    latencies = np.empty(frames, dtype=np.float64)
    for j in range(frames):
        i = 500 + j
        t = perf()
        arrival.clear()
        await call.feed(i, texts[i])
        await arrival.wait()
        latencies[j] = perf() - t  # until the driver is back: both sides measure the same
    gc.collect()
    cpu0 = time.process_time()
    for j in range(frames):
        i = 500 + frames + j
        arrival.clear()
        await call.feed(i, texts[i])
        await arrival.wait()
    cpu_s = time.process_time() - cpu0
    # Let the VAD catch up with what it was handed, then stop.
    await asyncio.sleep(0.2)
    await call.stop()
    return {
        "frames": frames,
        "config": config,
        "cpu_us_per_frame": 1e6 * cpu_s / frames,
        "latency": summarize_us(latencies),
    }


# --- stage costs ---------------------------------------------------------------------------


async def stage_costs(frames: int, sample_rate: int = 8000) -> dict[str, float]:
    """CPU µs per 20 ms frame of Pipecat's inbound stages alone."""
    mulaw, _ = caller_mulaw(None)
    payloads = mulaw_frames_b64(mulaw)
    n = len(payloads)
    texts = [media_message(stream_sid_for(1), i, payloads[i]) for i in range(n)]
    serializer = TwilioFrameSerializer(
        stream_sid_for(1), params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
    )
    pcm: list[bytes] = []
    serializer._sample_rate = sample_rate  # what setup() sets from the pipeline's setup
    for t in texts:
        f = await serializer.deserialize(t)
        assert isinstance(f, InputAudioRawFrame)
        pcm.append(f.audio)
    analyzer = SileroVADAnalyzer(sample_rate=sample_rate)
    analyzer.set_sample_rate(sample_rate)

    t0 = time.process_time()
    for i in range(frames):
        await serializer.deserialize(texts[i % n])
    deser = 1e6 * (time.process_time() - t0) / frames

    t0 = time.process_time()
    for i in range(frames):
        analyzer._run_analyzer(pcm[i % n])
    vad_inline = 1e6 * (time.process_time() - t0) / frames

    vad_frames = min(frames, 5000)
    t0 = time.process_time()
    for i in range(vad_frames):
        await analyzer.analyze_audio(pcm[i % n])
    vad_executor = 1e6 * (time.process_time() - t0) / vad_frames
    await analyzer.cleanup()
    return {
        "deserialize_us": deser,
        "silero_analyzer_inline_us": vad_inline,
        "silero_analyze_audio_executor_us": vad_executor,
    }


# --- entry points --------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: few frames, 1 and 10 calls")
    p.add_argument("--calls", default=None, help="comma-separated call levels (1,10,100,300)")
    p.add_argument("--measure-s", type=float, default=None, help="measured seconds per level")
    p.add_argument("--warmup-s", type=float, default=None, help="warm-up seconds per level")
    p.add_argument("--frames", type=int, default=None, help="frames per pass-through chain")
    p.add_argument("--inbound-config", choices=CONFIGS, default="defaults")
    p.add_argument("--sample-rate", type=int, choices=(8000, 16000), default=8000)
    add_loop_argument(p)
    p.add_argument("--skip-passthrough", action="store_true")
    p.add_argument("--skip-inbound", action="store_true")
    p.add_argument("--caller-audio", help="mu-law 8 kHz file to use as the caller's audio")
    p.add_argument(
        "--json-out",
        help="where to write the results (default: benchmarks/results/pipecat_overhead.json, "
        "or var/bench-quick/pipecat_overhead.json with --quick)",
    )
    p.add_argument("--child-calls", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.json_out is None:
        args.json_out = str(
            QUICK_DIR / "pipecat_overhead.json"
            if args.quick
            else RESULTS_DIR / "pipecat_overhead.json"
        )
    return args


def _print_passthrough(pt: dict[str, Any]) -> None:
    print_table(
        f"{SIDE}: pass-through chains (one frame at a time)",
        ["config", "frame", "hops", "cpu µs/frame", "lat p50 µs", "lat p99 µs"],
        [
            [
                r["config"],
                r["frame"],
                r["hops"],
                r["cpu_us_per_frame"],
                r["latency"]["p50_us"],
                r["latency"]["p99_us"],
            ]
            for r in pt["rows"]
        ],
    )
    print_table(
        f"{SIDE}: marginal cost per hop (slope over 1/5/10 hops)",
        ["config/frame", "cpu µs/hop", "p50 µs/hop", "p99 µs/hop"],
        [
            [k, v["cpu_us"], v["latency_p50_us"], v["latency_p99_us"]]
            for k, v in pt["per_hop"].items()
        ],
    )


def _print_inbound(levels: list[dict[str, Any]]) -> None:
    rows = []
    for lv in levels:
        if "error" in lv:
            rows.append([lv["calls"], "ERROR", lv["error"][:60], "", "", "", "", "", "", ""])
            continue
        rows.append(
            [
                lv["calls"],
                lv["cpu_percent_of_core_per_call"],
                lv["cpu_percent_of_core_total"],
                lv["cpu_us_per_frame"],
                lv["latency"]["p50_us"] / 1000,
                lv["latency"]["p99_us"] / 1000,
                f"{lv['dropped_frames']}/{lv['late_frames_over_20ms']}",
                lv["rss_per_call_mb"],
                lv.get("runqueue_wait_percent_of_wall", math.nan),
                lv.get("loadavg_1min_at_end", math.nan),
            ]
        )
    print_table(
        f"{SIDE}: inbound chain, 50 frames/s per call",
        [
            "calls",
            "cpu %/call",
            "cpu % total",
            "cpu µs/frame",
            "p50 ms",
            "p99 ms",
            "dropped/late",
            "MB/call",
            "cpu-wait %",
            "load",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    warmup_s = args.warmup_s if args.warmup_s is not None else (1.0 if args.quick else 2.0)
    measure_s = args.measure_s if args.measure_s is not None else (2.0 if args.quick else 8.0)
    if args.child_calls is not None:
        res = run_on_loop(
            run_inbound(
                args.child_calls,
                warmup_s=warmup_s,
                measure_s=measure_s,
                audio_path=args.caller_audio,
                config=args.inbound_config,
                sample_rate=args.sample_rate,
            ),
            args.loop,
        )
        print(json.dumps(res))
        return 0

    levels = (
        tuple(int(x) for x in args.calls.split(","))
        if args.calls
        else ((1, 10) if args.quick else CALL_LEVELS)
    )
    frames = args.frames or (500 if args.quick else 2000)
    result: dict[str, Any] = {
        "benchmark": "pipecat_overhead",
        "side": SIDE,
        "pipecat_version": pipecat_version(),
        "machine_before": machine_info(),
        "args": {
            "frames": frames,
            "levels": list(levels),
            "warmup_s": warmup_s,
            "measure_s": measure_s,
            "inbound_config": args.inbound_config,
            "sample_rate": args.sample_rate,
            "quick": args.quick,
            "loop": args.loop,
        },
    }
    print(
        f"Pipecat {result['pipecat_version']} frame overhead — load before: "
        f"{result['machine_before']['uptime']}"
    )
    if not args.skip_passthrough:
        result["passthrough"] = run_on_loop(run_passthrough(frames, HOPS), args.loop)
        _print_passthrough(result["passthrough"])
        result["stages"] = run_on_loop(stage_costs(frames, args.sample_rate), args.loop)
        print_table(
            f"{SIDE}: inbound stages alone, CPU µs per 20 ms frame",
            list(result["stages"]),
            [list(result["stages"].values())],
        )
    if not args.skip_inbound:
        result["hot_chain"] = run_on_loop(
            hot_chain(HOT_FRAMES, args.caller_audio, args.inbound_config, args.sample_rate),
            args.loop,
        )
        hc = result["hot_chain"]
        print_table(
            f"{SIDE}: inbound chain of one call, one message at a time, back to back",
            ["frames", "cpu µs/frame", "p50 µs", "p99 µs"],
            [
                [
                    hc["frames"],
                    hc["cpu_us_per_frame"],
                    hc["latency"]["p50_us"],
                    hc["latency"]["p99_us"],
                ]
            ],
        )
        child_args = [
            "--warmup-s",
            str(warmup_s),
            "--measure-s",
            str(measure_s),
            "--inbound-config",
            args.inbound_config,
            "--sample-rate",
            str(args.sample_rate),
            f"--loop={args.loop}",
        ]
        if args.caller_audio:
            child_args += ["--caller-audio", args.caller_audio]
        lv = run_child_levels(Path(__file__), levels, child_args)
        result["inbound"] = {"levels": lv}
        _print_inbound(lv)
    result["machine_after"] = machine_info()
    out = Path(args.json_out)
    write_json(out, result)
    print(f"\nload after: {result['machine_after']['uptime']}\nresults: {out}")
    failed = [lv for lv in result.get("inbound", {}).get("levels", []) if "error" in lv]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
