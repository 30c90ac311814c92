"""Smoke test of benchmarks/frame_overhead.py: its smallest workloads run and give well-formed
results. Benchmarks are never timed tests, so nothing here asserts on a figure."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "frame_overhead.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("frame_overhead_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x) and x >= 0


def _well_formed_latency(lat: dict[str, Any]) -> None:
    assert {"n", "p50_us", "p99_us", "max_us"} <= lat.keys()
    assert lat["n"] > 0
    assert lat["p50_us"] <= lat["p99_us"] <= lat["max_us"]


async def test_passthrough_smallest_chain(bench: ModuleType) -> None:
    res = await bench.run_passthrough(200, (1, 2))
    assert len(res["rows"]) == 4  # audio and text frames, 1 and 2 hops
    for row in res["rows"]:
        assert row["dropped"] == 0
        assert _is_number(row["cpu_us_per_frame"])
        _well_formed_latency(row["latency"])
    assert set(res["per_hop"]) == {"default/InputAudioFrame", "default/LLMTextFrame"}


async def test_inbound_one_call_for_a_second(bench: ModuleType) -> None:
    res = await bench.run_inbound(1, warmup_s=0.2, measure_s=0.8)
    assert res["calls"] == 1 and res["window_frames"] == 40
    assert res["dropped_frames"] == 0  # every frame reaches the sink (not a timing claim)
    assert res["latency"]["n"] == 40
    _well_formed_latency(res["latency"])
    for key in ("cpu_percent_of_core_per_call", "cpu_us_per_frame", "rss_max_mb"):
        assert _is_number(res[key])
    assert res["chain"]["vad"].startswith("nixflex_engine.processors.vad")


def test_comparison_reports_every_target(bench: ModuleType) -> None:
    row = {
        "hops": 10,
        "frame": "InputAudioFrame",
        "cpu_us_per_frame": 2.0,
        "latency": {"p99_us": 3.0},
    }
    level = {
        "calls": 300,
        "window_frames": 100,
        "dropped_frames": 0,
        "late_frames_over_20ms": 0,
        "latency": {"p99_us": 900.0},
        "rss_per_call_mb": 0.1,
        "cpu_percent_of_core_per_call": 0.1,
    }
    ours = {
        "passthrough": {
            "rows": [row],
            "per_hop": {
                "default/InputAudioFrame": {"cpu_us": 0.2, "latency_p50_us": 0.1},
                "default/LLMTextFrame": {"cpu_us": 0.2, "latency_p50_us": 0.1},
            },
        },
        "inbound": {"levels": [level]},
    }
    theirs = {
        "passthrough": {"rows": [], "per_hop": {"extras_off/InputAudioRawFrame": {"cpu_us": 9}}},
        "inbound": {"levels": [{**level, "cpu_percent_of_core_per_call": 3.0}]},
    }
    cmp = bench.compare(ours, theirs)
    assert set(cmp["targets"]) == {
        "cpu_per_hop_le_3us",
        "ten_hops_p99_lt_50us",
        "rss_per_call_le_1mb",
        "300_calls_p99_lt_5ms_no_drop",
        "inbound_cpu_10x_less_than_pipecat",
    }
    assert cmp["targets"]["inbound_cpu_10x_less_than_pipecat"]["ratio"] == pytest.approx(30.0)
