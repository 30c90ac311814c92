"""Smoke test of ``benchmarks/turn_latency.py``: one call, one turn, our engine only.

It runs the benchmark as ``make bench`` does (fakes and engine in their own processes, the
callee here) and checks the shape of what it reports. No timing is asserted: benchmarks are
never timed tests.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "turn_latency.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("turn_latency_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_one_call_one_turn(tmp_path: Path) -> None:
    bench = _load()
    out = tmp_path / "turn_latency.json"
    argv = [
        "--concurrency=1",
        "--calls=1",
        "--turns=1",
        "--no-barge-in",
        "--no-preemptive",
        "--no-pipecat",
        f"--json-out={out}",
    ]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    [scenario] = result["scenarios"]
    assert (scenario["engine"], scenario["mode"], scenario["concurrency"]) == (
        "nixflex",
        "standard",
        1,
    )
    assert scenario["problems"] == []
    [turn] = scenario["turns"]
    assert turn["line"] == result["conversation"]["caller_lines"][0]
    assert turn["reply"]
    assert set(turn["engine"]) >= {"endpointing_ms", "llm_ttft_ms", "tts_ttfb_ms", "total_ms"}
    injected = turn["injected"]
    assert injected["first_chunk_tokens"] >= 1
    assert turn["overhead_ms"] == round(turn["measured_ms"] - injected["total_ms"], 2)
    assert scenario["summary"]["measured_ms"]["n"] == 1
    assert "overhead_x1" in result["comparison"]["targets"]
