"""A 10,000-recipient campaign through the real engine and the sandbox carrier, with the engine
killed (SIGKILL) and restarted mid-run.

Three kinds of process on this machine:

- the **sandbox** (``nixflex-engine sandbox``): the carrier that plays every call (status
  callbacks through the engine's real, signed callback routes; for answered calls a media
  stream and a callee), fake Deepgram and Anthropic;
- the **engine** (``nixflex-engine serve``; SQLite by default, ``--database-url`` for
  PostgreSQL) with its campaign dispatcher — killed with SIGKILL ``--kills`` times during the
  run and started again on the same database and port;
- this **driver**: creates the key (CLI), agent and number (API), POSTs the campaign (timed),
  samples the campaign's calls holding a slot every ``--sample-ms`` straight from the database,
  restarts the engine after each kill and waits for ``completed``.

Every call is an *instant short call*: ``--outcome no-answer`` (default) rings out at once
(``initiated``/``ringing``/``no-answer`` callbacks, signed, through the engine's real status
route); ``busy`` likewise; ``answer`` picks up at once and the callee hangs up at once (a media
stream accepted and closed, the agent chain started and stopped — about 7 s of engine time per
call on a loaded 2-core machine, so use it with fewer recipients). The campaign has no
retries, so every recipient is one attempt.

Checked and reported: the time to accept the campaign (POST → 201); calls per second and the
mean number in flight against ``--concurrency`` (the campaign's ``max_concurrent`` and the
account's limit); the peak of slots held, sampled *and* exact (the account's
``peak_concurrent_calls``, raised atomically with every reservation); duplicate dials from the
**carrier's** own log (calls per number: must be ≤ 1), numbers never dialed (an attempt whose
dial a kill left unconfirmed is finished ``failed`` and never redialed), that the campaign's
counters match the calls, and the load (``uptime``)::

    .venv/bin/python benchmarks/campaign.py [--recipients 10000] [--concurrency 20] [--kills 2]
        [--outcome no-answer|busy|answer] [--database-url postgresql+asyncpg://...] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import free_port, sandbox_env, stop, uptime, wait_http
from nixflex_engine.store.db import Database
from nixflex_engine.store.models import accounts, api_keys, calls, campaign_recipients

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "campaign.json"
QUICK_RESULTS = ROOT / "var" / "bench-quick" / "campaign.json"
ACCOUNT_SID = "AC" + "d" * 32
AUTH_TOKEN = "e" * 32
FROM = "+15550100000"
SCRIPTS: dict[str, dict[str, Any]] = {
    "answer": {"outcome": "answer", "ring_s": 0.0, "hangup_after_s": 0.0, "callee": ["hangup"]},
    "no-answer": {"outcome": "no-answer", "ring_s": 0.0},
    "busy": {"outcome": "busy", "ring_s": 0.0},
}


def _env(work: Path, engine_url: str, sandbox_url: str, database_url: str) -> dict[str, str]:
    return sandbox_env(
        work,
        engine_url=engine_url,
        sandbox_url=sandbox_url,
        database_url=database_url,
        # a claim a killed engine never turned into a call row is re-queued after 10 s
        NIXFLEX_CAMPAIGN_CLAIM_LEASE_SECONDS="10",
        NIXFLEX_CAMPAIGN_RECONCILE_INTERVAL_SECONDS="2",
    )


class Engine:
    """The engine process, started again after each kill."""

    def __init__(self, exe: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.exe, self.port, self.env, self.log = exe, port, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        t = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.exe, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"http://127.0.0.1:{self.port}", "/healthz", self.proc)
        self.starts += 1
        return time.monotonic() - t

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        stop(self.proc, 20)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="campaign-bench-"))
    engine_port, sandbox_port = free_port(), free_port()
    engine_url = f"http://127.0.0.1:{engine_port}"
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    database_url = args.database_url or f"sqlite+aiosqlite:///{work / 'campaign.db'}"
    scripts = work / "scripts.json"
    scripts.write_text(json.dumps({"default": SCRIPTS[args.outcome]}))
    env = _env(work, engine_url, sandbox_url, database_url)
    exe = [sys.executable, "-m", "nixflex_engine.cli"]
    sandbox = subprocess.Popen(
        [
            *exe,
            "sandbox",
            "--port",
            str(sandbox_port),
            "--scripts",
            str(scripts),
            "--twilio-account",
            f"{ACCOUNT_SID}:{AUTH_TOKEN}",
            "--twilio-number",
            FROM,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    engine = Engine(exe, engine_port, env, work / "engine.log")
    try:
        wait_http(sandbox_url, "/sandbox/health", sandbox)
        engine.start()  # migrates the database
        key = json.loads(
            subprocess.run(
                [
                    *exe,
                    "keys",
                    "create",
                    "--name",
                    "campaign-bench",
                    "--json",
                    "--max-concurrent-calls",
                    str(args.concurrency),
                ],
                env=env,
                check=True,
                capture_output=True,
            ).stdout
        )
        result = asyncio.run(_drive(args, engine, engine_url, sandbox_url, database_url, key))
        result["uptime_after"] = uptime()
        result["database"] = "postgresql" if args.database_url else "sqlite"
        return result
    finally:
        engine.stop()
        stop(sandbox)


async def _drive(
    args: argparse.Namespace,
    engine: Engine,
    engine_url: str,
    sandbox_url: str,
    database_url: str,
    key: dict[str, str],
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key['key_id']}:{key['key_secret']}"}
    db = Database(database_url)
    uptime_before = uptime()
    async with httpx.AsyncClient(base_url=engine_url, timeout=60, headers=headers) as client:
        r = await client.post(
            "/v1/agents",
            json={
                "name": "Bench",
                "system_prompt": "You are Anna, calling {name}.",
                "welcome_message": "Hi {name}.",
                "amd_enabled": False,
                "record_call": False,
            },
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
        )
        r.raise_for_status()
        numbers = [f"+1666{i:07d}" for i in range(args.recipients)]
        body = {
            "agent_id": agent_id,
            "from_number": FROM,
            "name": "benchmark",
            "prompt": "Say hello to {name}.",
            "recipients": [
                {"phone": n, "variables": {"name": f"n{i}"}} for i, n in enumerate(numbers)
            ],
            "max_concurrent": args.concurrency,
            "retry": {"max_attempts": 1},
        }
        t_post = time.monotonic()
        r = await client.post("/v1/calls/batch", json=body)
        accept_s = time.monotonic() - t_post
        r.raise_for_status()
        cid = r.json()["campaign_id"]
        t0 = time.monotonic()

        in_flight = (
            sa.select(sa.func.count())
            .select_from(calls)
            .where(calls.c.campaign_id == cid, calls.c.slot_held.is_(True))
        )
        settled = (
            sa.select(sa.func.count())
            .select_from(campaign_recipients)
            .where(
                campaign_recipients.c.campaign_id == cid,
                campaign_recipients.c.state.in_(("completed", "failed")),
            )
        )
        samples: list[tuple[float, int]] = []
        kills: list[dict[str, Any]] = []
        kill_at = [int(args.recipients * (k + 1) / (args.kills + 1)) for k in range(args.kills)]
        done = False
        last_progress = 0.0
        while not done:
            n = await db.read(lambda conn: int(conn.execute(in_flight).scalar_one()))
            samples.append((time.monotonic() - t0, n))
            if kill_at or time.monotonic() - last_progress > 1.0:
                finished = await db.read(lambda conn: int(conn.execute(settled).scalar_one()))
                if kill_at and finished >= kill_at[0]:
                    kill_at.pop(0)
                    t_kill = time.monotonic()
                    engine.kill()
                    restart_s = engine.start()
                    kills.append(
                        {
                            "at_s": round(t_kill - t0, 2),
                            "settled_before": finished,
                            "in_flight_at_kill": n,
                            "restart_s": round(restart_s, 2),
                        }
                    )
                    print(
                        f"  killed at {finished} settled ({n} in flight), "
                        f"restarted in {restart_s:.1f} s",
                        flush=True,
                    )
                if time.monotonic() - last_progress > 1.0:
                    last_progress = time.monotonic()
                    if finished == args.recipients:
                        r = await client.get(f"/v1/calls/batch/{cid}", params={"limit": 1})
                        done = r.status_code == 200 and r.json()["status"] == "completed"
                    print(
                        f"  {time.monotonic() - t0:7.1f}s settled {finished:6d}, in flight {n}",
                        flush=True,
                    )
            if time.monotonic() - t0 > args.timeout:
                raise TimeoutError("the campaign did not complete")
            await asyncio.sleep(args.sample_ms / 1000)
        elapsed = time.monotonic() - t0
        detail = (await client.get(f"/v1/calls/batch/{cid}", params={"limit": 1})).json()

    async with httpx.AsyncClient(base_url=sandbox_url, timeout=120) as sandbox:
        carrier_calls = (await sandbox.get("/sandbox/carrier/calls")).json()
    if isinstance(carrier_calls, dict):
        carrier_calls = carrier_calls.get("calls", [])
    per_number = Counter(c["to"] for c in carrier_calls if c["from"] == FROM)

    def db_facts(conn: sa.Connection) -> dict[str, Any]:
        rows = conn.execute(
            sa.select(calls.c.to_number, calls.c.status, calls.c.twilio_error).where(
                calls.c.campaign_id == cid
            )
        ).all()
        attempts = conn.execute(
            sa.select(sa.func.sum(campaign_recipients.c.attempts)).where(
                campaign_recipients.c.campaign_id == cid
            )
        ).scalar_one()
        peak = conn.execute(
            sa.select(accounts.c.peak_concurrent_calls)
            .select_from(accounts.join(api_keys, api_keys.c.account_id == accounts.c.account_id))
            .where(api_keys.c.key_id == key["key_id"])
        ).scalar_one()
        return {
            "call_rows": len(rows),
            "call_rows_per_number_max": max(Counter(r[0] for r in rows).values()),
            "statuses": dict(Counter(r[1] for r in rows)),
            "unconfirmed_dials": sum(
                1 for r in rows if r[2] and "before the carrier accepted" in str(r[2])
            ),
            "attempts": int(attempts or 0),
            "account_peak_concurrent_calls": int(peak),
        }

    facts = await db.read(db_facts)
    await db.dispose()
    steady = [n for t, n in samples]
    return {
        "recipients": args.recipients,
        "concurrency": args.concurrency,
        "outcome": args.outcome,
        "kills": kills,
        "accept_s": round(accept_s, 3),
        "elapsed_s": round(elapsed, 1),
        "calls_per_s": round(facts["call_rows"] / elapsed, 1),
        "in_flight_mean": round(sum(steady) / len(steady), 2),
        "in_flight_max_sampled": max(steady),
        "samples": len(samples),
        "sample_ms": args.sample_ms,
        **facts,
        "carrier_calls": sum(per_number.values()),
        "carrier_duplicate_numbers": sum(1 for k in per_number.values() if k > 1),
        "numbers_never_dialed": sum(1 for n in numbers if per_number.get(n, 0) == 0),
        "campaign_status": detail["status"],
        "campaign_counts": detail["counts"],
        "uptime_before": uptime_before,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--outcome", choices=sorted(SCRIPTS), default="no-answer")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--sample-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--quick", action="store_true", help="500 recipients, one kill")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.kills = 500, 1
    result = run(args)
    print(json.dumps(result, indent=2))
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    ok = (
        result["accept_s"] < 2.0
        and result["carrier_duplicate_numbers"] == 0
        and result["call_rows_per_number_max"] == 1
        and result["account_peak_concurrent_calls"] <= args.concurrency
        and result["in_flight_max_sampled"] <= args.concurrency
        and result["campaign_status"] == "completed"
        and result["attempts"] == result["call_rows"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
