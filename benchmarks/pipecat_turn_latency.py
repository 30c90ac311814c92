"""Pipecat 1.14's side of ``turn_latency.py``: a Twilio media endpoint running Pipecat's chain.

Runs ONLY in ``.venv-pipecat`` (``pip install "pipecat-ai[silero,deepgram,anthropic,websocket]
==1.14.0"``; made by ``benchmarks/run_all.sh``), started by ``turn_latency.py`` — which plays
the callees, measures, and prints the comparison. It serves until SIGTERM and prints
``READY http://127.0.0.1:PORT``; ``/media`` takes the sandbox callee's Twilio media stream,
``/stats[?reset=1]`` gives this process's CPU and event-loop lag (same code as ours).

Per call, as Pipecat's Twilio examples build it::

    FastAPIWebsocketTransport(TwilioFrameSerializer) in → DeepgramSTTService
      → LLMContextAggregatorPair.user() → AnthropicLLMService → DeepgramTTSService
      → transport out → .assistant()
    PipelineWorker(8 kHz in and out) under a WorkerRunner

Pointed at the SAME fakes as ours, by base URL only (found in Pipecat's source):

* ``DeepgramSTTService(base_url="ws://127.0.0.1:P")`` — builds a ``DeepgramClientEnvironment``
  (``_derive_deepgram_urls``); ``endpointing=300``, ``utterance_end_ms=1000``, interim results,
  smart format, as ours. Pipecat sends ``Finalize`` on its VAD stop, as ours does.
* ``AnthropicLLMService(client=AsyncAnthropic(base_url=...))`` — its ``client`` argument
  (``anthropic<2``: sends ``x-api-key``, which the fake accepts).
* ``DeepgramTTSService(base_url="ws://127.0.0.1:P")`` (websocket, ``--tts ws``) — the URL is
  ``{base_url}/v1/speak?...``. Or ``DeepgramHttpTTSService(base_url="http://...")``
  (``--tts http``: one ``POST /v1/speak`` per sentence).

Turn taking made comparable to ours: a VAD with ``stop_secs`` = our ``stop_silence_ms`` (0.3 s)
and ``start_secs`` 0.16 s (our ``start_speech_ms``), and the stop strategy
``SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0)`` (ours has
``response_delay_ms=0``): the turn ends at the VAD stop once a finalized transcript is in.
Pipecat's default (Smart Turn v3, a local model) is not used: ours has no such model.

What is NOT the same, and why:

* Pipecat's websocket Deepgram TTS sends ``Speak`` per sentence but ``Flush`` only when the
  LLM reply is over (``flush_audio`` at ``LLMFullResponseEndFrame``). The fake, like the
  engine's own TTS docs assume of Deepgram, synthesises only what a ``Flush`` releases, so
  Pipecat's first audio waits for the whole reply. If real Deepgram starts on complete
  sentences without a Flush, this flatters us; ``--tts http`` (per-sentence requests) is the
  comparison without that question.
* Pipecat interrupts at its VAD start (no duration threshold), so barge-in figures are not
  comparable one to one.
* The VAD. Pipecat's Silero (a neural VAD trained on real speech) does not hear sandbox
  speech (synthetic: a voiced carrier + tone chords): its confidence stays below 0.42 on a
  whole utterance, never reaching the 0.7 threshold, so with Silero Pipecat never sees a VAD
  start or stop (no ``Finalize``, turns end on Deepgram's ``speech_final``, barge-in only on
  interim transcripts). ``--vad webrtc`` (the default) plugs the same webrtcvad as ours (mode
  2, 20 ms frames) into Pipecat's own ``VADAnalyzer`` state machine (``min_volume`` 0: the
  state machine's loudness gate is for real microphones), so both engines hear the same
  speech; ``--vad silero`` runs Pipecat's stock VAD.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_loop_argument, run_on_loop
from _turn_common import (
    AGENT_PROMPT,
    ANTHROPIC_KEY,
    DEEPGRAM_KEY,
    LLM_MODEL,
    LoopLagMonitor,
    stats_payload,
)

warnings.filterwarnings("ignore", category=DeprecationWarning)

from loguru import logger  # noqa: E402  (configured before pipecat logs anything)

logger.remove()
logger.add(sys.stderr, level="WARNING")

import aiohttp  # noqa: E402
import uvicorn  # noqa: E402
from anthropic import AsyncAnthropic  # noqa: E402
from fastapi import FastAPI, Request, WebSocket  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from pipecat.audio.vad.silero import SileroVADAnalyzer  # noqa: E402
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.serializers.twilio import TwilioFrameSerializer  # noqa: E402
from pipecat.services.anthropic.llm import AnthropicLLMService  # noqa: E402
from pipecat.services.deepgram.stt import DeepgramSTTService  # noqa: E402
from pipecat.services.deepgram.tts import DeepgramHttpTTSService, DeepgramTTSService  # noqa: E402
from pipecat.transports.websocket.fastapi import (  # noqa: E402
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy  # noqa: E402
from pipecat.turns.user_turn_strategies import UserTurnStrategies  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

SAMPLE_RATE = 8000


class WebRTCVADAnalyzer(VADAnalyzer):
    """Pipecat's VAD state machine over webrtcvad (mode 2, 20 ms frames), as ours uses."""

    def __init__(self, *, sample_rate: int, params: VADParams, mode: int = 2) -> None:
        import webrtcvad

        super().__init__(sample_rate=sample_rate, params=params)
        self._vad = webrtcvad.Vad(mode)

    def num_frames_required(self) -> int:
        return int(self.sample_rate * 0.02)

    def voice_confidence(self, buffer: bytes) -> float:
        return 1.0 if self._vad.is_speech(buffer, self.sample_rate) else 0.0


def make_vad(args: argparse.Namespace) -> VADAnalyzer:
    if args.vad == "silero":
        return SileroVADAnalyzer(
            sample_rate=SAMPLE_RATE,
            params=VADParams(start_secs=args.vad_start_secs, stop_secs=args.vad_stop_secs),
        )
    return WebRTCVADAnalyzer(
        sample_rate=SAMPLE_RATE,
        params=VADParams(
            start_secs=args.vad_start_secs, stop_secs=args.vad_stop_secs, min_volume=0.0
        ),
    )


def build_app(args: argparse.Namespace, monitor: LoopLagMonitor) -> FastAPI:
    app = FastAPI()
    ws_base = args.fakes_url.replace("http://", "ws://", 1)
    state: dict[str, Any] = {"http": None}

    async def http_session() -> aiohttp.ClientSession:
        if state["http"] is None:
            state["http"] = aiohttp.ClientSession()
        session: aiohttp.ClientSession = state["http"]
        return session

    @app.get("/stats")
    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(stats_payload(monitor, reset="reset" in request.query_params))

    @app.websocket("/media")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        start: dict[str, Any] = {}
        for _ in range(3):  # "connected", then "start"
            msg = json.loads(await websocket.receive_text())
            if msg.get("event") == "start":
                start = msg["start"]
                break
        serializer = TwilioFrameSerializer(
            stream_sid=start.get("streamSid", ""),
            call_sid=start.get("callSid"),
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        stt = DeepgramSTTService(
            api_key=DEEPGRAM_KEY,
            base_url=ws_base,
            sample_rate=SAMPLE_RATE,
            settings=DeepgramSTTService.Settings(
                model="nova-3",
                language="en",
                interim_results=True,
                smart_format=True,
                punctuate=True,
                endpointing=args.endpointing_ms,
                utterance_end_ms=1000,
            ),
        )
        llm = AnthropicLLMService(
            api_key=ANTHROPIC_KEY,
            client=AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=args.fakes_url),
            settings=AnthropicLLMService.Settings(model=LLM_MODEL, max_tokens=300),
        )
        tts: Any
        if args.tts == "http":
            tts = DeepgramHttpTTSService(
                api_key=DEEPGRAM_KEY,
                aiohttp_session=await http_session(),
                base_url=args.fakes_url,
                sample_rate=SAMPLE_RATE,
                settings=DeepgramHttpTTSService.Settings(voice="aura-2-thalia-en"),
            )
        else:
            tts = DeepgramTTSService(
                api_key=DEEPGRAM_KEY,
                base_url=ws_base,
                sample_rate=SAMPLE_RATE,
                settings=DeepgramTTSService.Settings(voice="aura-2-thalia-en"),
            )
        context = LLMContext(messages=[{"role": "system", "content": AGENT_PROMPT}])
        aggregators = LLMContextAggregatorPair(
            context,
            user_params=LLMUserAggregatorParams(
                vad_analyzer=make_vad(args),
                user_turn_strategies=UserTurnStrategies(
                    stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)]
                ),
            ),
        )
        pipeline = Pipeline(
            [
                transport.input(),
                stt,
                aggregators.user(),
                llm,
                tts,
                transport.output(),
                aggregators.assistant(),
            ]
        )
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=SAMPLE_RATE,
                audio_out_sample_rate=SAMPLE_RATE,
                enable_metrics=True,
            ),
        )

        @transport.event_handler("on_client_disconnected")
        async def _gone(_transport: Any, _client: Any) -> None:
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        await runner.run(worker)

    return app


async def serve(args: argparse.Namespace) -> None:
    monitor = LoopLagMonitor()
    monitor.start()
    app = build_app(args, monitor)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws_ping_interval=None, ws="websockets"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.should_exit = True
    await task


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Pipecat 1.14 behind a Twilio media endpoint")
    p.add_argument("--fakes-url", required=True, help="http://127.0.0.1:P of the fakes")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tts", choices=("ws", "http"), default="ws")
    p.add_argument("--vad", choices=("webrtc", "silero"), default="webrtc")
    p.add_argument("--vad-stop-secs", type=float, default=0.3)
    p.add_argument("--vad-start-secs", type=float, default=0.16)
    p.add_argument("--endpointing-ms", type=int, default=300)
    add_loop_argument(p)
    args = p.parse_args(argv)
    run_on_loop(serve(args), args.loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
