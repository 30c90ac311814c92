"""Per-turn latency bookkeeping and the percentile summary."""

from __future__ import annotations

import asyncio
import statistics

from conversation_fakes import Edges, start
from hypothesis import given
from hypothesis import strategies as st

from nixflex_engine.frames import (
    ErrorFrame,
    InterruptionFrame,
    MetricsFrame,
    PlayedAudioFrame,
    TranscriptFrame,
    UserTurnEndedFrame,
)
from nixflex_engine.pipeline import UPSTREAM, Pipeline, PipelineTask
from nixflex_engine.processors.metrics import (
    LATENCY_FIELDS,
    LatencyTracker,
    TurnMetricsProcessor,
    percentile,
)


def test_one_turn() -> None:
    t = LatencyTracker()
    t.on_final_transcript(1150)
    t.on_user_turn("Hi.", speech_end_ms=1000, decided_ms=1200)
    t.on_metric("llm_ttft_ms", 350, turn=1)
    t.on_metric("tts_ttfb_ms", 120, turn=1)
    done = t.on_audio_played(1700)
    assert done is not None
    assert done.figures() == {
        "endpointing_ms": 200,
        "stt_ms": 150,
        "llm_ttft_ms": 350,
        "tts_ttfb_ms": 120,
        "total_ms": 700,
    }
    assert done.number == 1
    assert t.on_audio_played(1720) is None  # later audio of the same reply


def test_audio_without_a_turn_is_not_measured() -> None:
    t = LatencyTracker()
    t.on_metric("tts_ttfb_ms", 100, None)  # the opener
    assert t.on_audio_played(500) is None
    assert t.turns == []


def test_cancelled_reply_and_stale_reports() -> None:
    t = LatencyTracker()
    t.on_user_turn("one", 0, 100)
    t.on_metric("llm_ttft_ms", 300, 1)
    t.on_interruption()  # the caller went on before any audio
    assert t.on_audio_played(500) is None
    t.on_user_turn("one two", 1000, 1100)
    t.on_metric("llm_ttft_ms", 999, 1)  # the abandoned request's late report: held for now
    t.on_metric("llm_ttft_ms", 250, 2)  # this reply's own report replaces it
    t.on_metric("llm_ttft_ms", 777, 1)  # stale: ignored
    done = t.on_audio_played(1500)
    assert done is not None and done.turn == 2 and done.llm_ttft_ms == 250
    assert done.stt_ms is None  # no final transcript was seen


def test_preemptive_turn_confirmed_keeps_the_early_decision() -> None:
    t = LatencyTracker()
    t.on_user_turn("what time", 1000, 1010, preemptive=True)
    t.on_final_transcript(1150)
    t.on_user_turn("What time?", 1000, 1150)
    done = t.on_audio_played(1600)
    assert done is not None and done.preemptive
    assert done.endpointing_ms == 10 and done.stt_ms == 150 and done.total_ms == 600


def test_final_before_the_vad_stop_counts_as_zero() -> None:
    t = LatencyTracker()
    t.on_final_transcript(900)
    t.on_user_turn("Yes.", 1000, 1000)
    done = t.on_audio_played(1400)
    assert done is not None and done.stt_ms == 0


def test_summary_shape() -> None:
    t = LatencyTracker()
    for i, total in enumerate([500, 700, 900]):
        t.on_user_turn("x", i * 10_000, i * 10_000 + 100)
        t.on_audio_played(i * 10_000 + total)
    s = t.summary()
    assert [row["total_ms"] for row in s["turns"]] == [500, 700, 900]
    assert s["p50"]["total_ms"] == 700 and s["p95"]["total_ms"] == 880
    assert s["p50"]["llm_ttft_ms"] is None
    assert set(s["p50"]) == set(LATENCY_FIELDS)


@given(st.lists(st.floats(0, 1e5), min_size=1, max_size=50))
def test_percentile_matches_the_standard_library(values: list[float]) -> None:
    assert (
        percentile(values, 50) == statistics.median(values)
        or abs(
            percentile(values, 50) - statistics.median(values)  # type: ignore[operator]
        )
        < 1e-6
    )
    if len(values) > 1:
        expected = statistics.quantiles(values, n=20, method="inclusive")[18]
        assert abs(percentile(values, 95) - expected) < 1e-6  # type: ignore[operator]
    assert min(values) <= percentile(values, 95) <= max(values)  # type: ignore[operator]
    assert percentile([], 50) is None


@given(st.lists(st.floats(0, 1e5), min_size=1, max_size=30), st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_monotone_in_q(values: list[float], a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert percentile(values, lo) <= percentile(values, hi)  # type: ignore[operator]


async def test_processor_emits_the_figures_as_metrics_frames() -> None:
    metrics = TurnMetricsProcessor()
    task = PipelineTask(Pipeline([metrics]))
    edges = Edges(task)
    runner = await start(task)
    for frame in [
        TranscriptFrame(text="Hello.", received_ms=1100),
        UserTurnEndedFrame(text="Hello.", speech_end_ms=1000, decided_ms=1100),
        MetricsFrame(name="llm_ttft_ms", value=300.0, turn=1, processor="ClaudeLLM"),
        MetricsFrame(name="tts_ttfb_ms", value=100.0, turn=1, processor="DeepgramTTS"),
        PlayedAudioFrame(audio=b"\xff" * 160, play_at_ms=1550),
        PlayedAudioFrame(audio=b"\xff" * 160, play_at_ms=1570),
        InterruptionFrame(),
    ]:
        await task.queue_frame(frame)
    await task.end()
    await asyncio.wait_for(runner, 5)
    assert edges.of(ErrorFrame, UPSTREAM) == []
    mine = [m for m in edges.of(MetricsFrame) if m.processor == metrics.name]
    assert {m.name: m.value for m in mine} == {
        "endpointing_ms": 100,
        "stt_ms": 100,
        "llm_ttft_ms": 300,
        "tts_ttfb_ms": 100,
        "total_ms": 550,
    }
    assert {m.turn for m in mine} == {1}
    assert len(edges.of(PlayedAudioFrame)) == 2 and len(edges.of(MetricsFrame)) == 7
    assert metrics.summary()["p50"]["total_ms"] == 550
