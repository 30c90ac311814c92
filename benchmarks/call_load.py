"""Whole simulated calls under load: through the API, the sandbox carrier and the full pipeline.

Three processes on this machine:

- the **sandbox** (``nixflex-engine sandbox``): the carrier playing every call (status callbacks,
  async AMD, a callee on each media stream), fake Deepgram STT/TTS and fake Anthropic — its
  own process, because the fake STT decoder alone costs ~150 µs per 20 ms frame;
- the **engine** (``nixflex-engine serve``, SQLite or ``--database-url``), pointed at it by
  settings alone;
- this **driver**: creates a key (``keys create``), an agent and a number through the API, then
  keeps ``--concurrency`` calls in flight (``POST /v1/calls/outbound``) until ``--calls`` were
  placed, polling each call's record until it is final.

Every call is a person who says "Hello?", hears the opener, says goodbye and waits; the agent
ends the call with ``[END_CALL]``. A call counts as correct when its record is ``completed`` /
``agent_hangup`` with both sides in the transcript and a latency entry.

Reported: calls/s sustained (calls finished ÷ time from the first dial to the last final
record), the engine process's CPU seconds per call and its RSS per call in flight (peak RSS
minus RSS before the first call, ÷ peak calls in flight), turn latency from the records (the
engine's own figures: caller stops → agent audio out), failures, and the load (``uptime``)::

    .venv/bin/python benchmarks/call_load.py [--calls 200] [--concurrency 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import cpu_s, free_port, rss_bytes, sandbox_env, stop, uptime, wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
QUICK_DIR = ROOT / "var" / "bench-quick"
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "c" * 32
FROM = "+15550100000"
FINAL = ("completed", "busy", "no-answer", "failed", "canceled")
CALLEE = [
    {"silence": 300},
    {"say": "Hello?"},
    {"until_agent_silent": {"silence_ms": 500}},
    {"say": "Okay, thank you. Goodbye."},
    {"until_agent_silent": {"silence_ms": 500, "timeout_ms": 20000}},
    {"silence": 8000},  # stays on the line: the agent hangs up
]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="call-load-"))
    engine_port, sandbox_port, fakes_port = free_port(), free_port(), free_port()
    engine_url = f"http://127.0.0.1:{engine_port}"
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    # the provider fakes in a sandbox process of their own (--split-fakes): the carrier's
    # callees and the fake STT decoder then use separate cores
    fakes_url = f"http://127.0.0.1:{fakes_port}" if args.split_fakes else sandbox_url
    scripts = work / "scripts.json"
    scripts.write_text(
        json.dumps({"default": {"outcome": "answer", "ring_s": 1.0, "callee": CALLEE}})
    )
    env = sandbox_env(
        work,
        engine_url=engine_url,
        sandbox_url=sandbox_url,
        fakes_url=fakes_url,
        database_url=args.database_url or f"sqlite+aiosqlite:///{work / 'load.db'}",
        api_key="load",
    )
    exe = [sys.executable, "-m", "nixflex_engine.cli"]
    sandbox_args = [
        "--scripts",
        str(scripts),
        "--twilio-account",
        f"{ACCOUNT_SID}:{AUTH_TOKEN}",
        "--twilio-number",
        FROM,
    ]
    helpers: list[subprocess.Popen[bytes]] = []
    helpers.append(
        subprocess.Popen(
            [*exe, "sandbox", "--port", str(sandbox_port), *sandbox_args],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    )
    if args.split_fakes:
        helpers.append(
            subprocess.Popen(
                [*exe, "sandbox", "--port", str(fakes_port)], env=env, stdout=subprocess.DEVNULL
            )
        )
    engine: subprocess.Popen[bytes] | None = None
    try:
        wait_http(sandbox_url, "/sandbox/health", helpers[0])
        wait_http(fakes_url, "/sandbox/health", helpers[-1])
        key = json.loads(
            subprocess.run(
                [
                    *exe,
                    "keys",
                    "create",
                    "--name",
                    "load",
                    "--json",
                    "--max-concurrent-calls",
                    str(args.concurrency),
                ],
                env=env,
                check=True,
                capture_output=True,
            ).stdout
        )
        engine = subprocess.Popen([*exe, "serve", "--port", str(engine_port)], env=env)
        wait_http(engine_url, "/healthz", engine)
        cpu0 = [cpu_s(p.pid) for p in helpers]
        result = asyncio.run(_drive(args, engine, engine_url, key))
        result["sandbox_cpu_s"] = [
            round(cpu_s(p.pid) - c, 1) for p, c in zip(helpers, cpu0, strict=True)
        ]
        result["uptime_after"] = uptime()
        return result
    finally:
        for proc in (engine, *helpers):
            stop(proc)


async def _drive(
    args: argparse.Namespace,
    engine: subprocess.Popen[bytes],
    engine_url: str,
    key: dict[str, str],
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key['key_id']}:{key['key_secret']}"}
    limits = httpx.Limits(max_connections=args.concurrency + 10)
    async with httpx.AsyncClient(base_url=engine_url, timeout=30, limits=limits) as client:
        r = await client.post(
            "/v1/agents",
            json={
                "name": "Load",
                "system_prompt": "You are Anna from Acme, calling {name}.",
                "welcome_message": "Hi {name}, this is Anna from Acme.",
                "voicemail_action": "hangup",
            },
            headers=headers,
        )
        r.raise_for_status()
        agent_id = r.json()["agent_id"]
        r = await client.post(
            "/v1/phone-numbers",
            json={
                "phone_number": FROM,
                "agent_id": agent_id,
                "twilio_account_sid": ACCOUNT_SID,
                "twilio_auth_token": AUTH_TOKEN,
            },
            headers=headers,
        )
        r.raise_for_status()

        records: list[dict[str, Any]] = []
        errors: list[str] = []
        polls_retried = [0]
        in_flight = 0
        peak_in_flight = 0
        slots = asyncio.Semaphore(args.concurrency)
        rss0 = rss_bytes(engine.pid)
        rss_peak = rss0
        cpu0 = cpu_s(engine.pid)
        t0 = time.monotonic()

        async def one(i: int) -> None:
            nonlocal in_flight, peak_in_flight
            async with slots:
                in_flight += 1
                peak_in_flight = max(peak_in_flight, in_flight)
                try:
                    body = {
                        "agent_id": agent_id,
                        "to_number": f"+1555{2000000 + i:07d}",
                        "dynamic_vars": {"name": f"caller {i}"},
                        "metadata": {"i": i},
                    }
                    resp = await client.post("/v1/calls/outbound", json=body, headers=headers)
                    if resp.status_code != 201:
                        errors.append(f"dial {i}: {resp.status_code} {resp.text[:200]}")
                        return
                    call_id = resp.json()["call_id"]
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        await asyncio.sleep(1.0)
                        try:
                            got = await client.get(f"/v1/calls/{call_id}", headers=headers)
                        except httpx.TransportError:
                            polls_retried[0] += 1  # a pooled connection the server closed
                            continue
                        rec = got.json()
                        if rec.get("status") in FINAL:
                            records.append(rec)
                            return
                    errors.append(f"call {i}: not final after 120 s")
                except httpx.HTTPError as exc:
                    errors.append(f"call {i}: {exc!r}")
                finally:
                    in_flight -= 1

        async def sample() -> None:
            nonlocal rss_peak
            while True:
                rss_peak = max(rss_peak, rss_bytes(engine.pid))
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one(i) for i in range(args.calls)))
        wall = time.monotonic() - t0
        sampler.cancel()
        cpu = cpu_s(engine.pid) - cpu0

    correct = [
        r
        for r in records
        if r["status"] == "completed"
        and r["ended_reason"] == "agent_hangup"
        and {line["role"] for line in r["transcript"]} == {"caller", "agent"}
        and (r.get("latency") or {}).get("turns")
    ]
    wrong = [
        f"{r['call_id']}: {r['status']}/{r['ended_reason']}" for r in records if r not in correct
    ]
    totals = [
        t["total_ms"]
        for r in records
        for t in (r.get("latency") or {}).get("turns", [])
        if t.get("total_ms") is not None
    ]
    firsts = [
        (r.get("latency") or {}).get("turns", [{}])[0].get("total_ms")
        for r in records
        if (r.get("latency") or {}).get("turns")
    ]
    return {
        "command": " ".join(["benchmarks/call_load.py", *sys.argv[1:]]),
        "calls": args.calls,
        "concurrency": args.concurrency,
        "peak_in_flight": peak_in_flight,
        "completed_correctly": len(correct),
        "failures": len(errors) + len(wrong),
        "failure_examples": (errors + wrong)[:10],
        "failure_transcripts": [
            [f"{line['timestamp_ms']}ms {line['role']}: {line['text']}" for line in r["transcript"]]
            for r in records
            if r not in correct
        ][:3],
        "wall_s": round(wall, 1),
        "calls_per_s": round(len(records) / wall, 2) if wall else None,
        "poll_requests_retried": polls_retried[0],
        "engine_cpu_s": round(cpu, 1),
        "engine_cpu_s_per_call": round(cpu / max(1, len(records)), 3),
        "engine_cpu_share": round(cpu / wall, 2) if wall else None,
        "engine_rss_start_mib": round(rss0 / 2**20, 1),
        "engine_rss_peak_mib": round(rss_peak / 2**20, 1),
        "engine_rss_per_call_kib": round((rss_peak - rss0) / max(1, peak_in_flight) / 1024, 1),
        "turn_total_ms": {
            "n": len(totals),
            "p50": _pct(totals, 0.5),
            "p95": _pct(totals, 0.95),
            "max": _pct(totals, 1.0),
            "mean": round(statistics.fmean(totals), 1) if totals else None,
        },
        "first_turn_total_ms_p50": _pct([f for f in firsts if f is not None], 0.5),
        "turn_breakdown_ms": {
            field: {"p50": _pct(vals, 0.5), "p95": _pct(vals, 0.95)}
            for field in ("endpointing_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms")
            if (
                vals := [
                    t[field]
                    for r in records
                    for t in (r.get("latency") or {}).get("turns", [])
                    if t.get(field) is not None
                ]
            )
        },
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Whole simulated calls under load.")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--quick", action="store_true", help="10 calls, 5 at a time")
    parser.add_argument(
        "--split-fakes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the Deepgram/Anthropic fakes from a second sandbox process (default)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.concurrency = 10, 5
    before = uptime()
    print("load before:", before)
    result = run(args)
    result["uptime_before"] = before
    out = (QUICK_DIR if args.quick else RESULTS_DIR) / f"call_load_c{args.concurrency}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["failures"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
