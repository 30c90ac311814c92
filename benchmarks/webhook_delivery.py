"""Webhook delivery benchmark: the durable outbox drained by worker processes.

What it does (issue 7's target):

1. Seeds ``--deliveries`` queued ``call.failed`` deliveries (one call each, so ``call_id`` +
   ``event`` identifies every event) into a fresh database, the way the engine queues them:
   payload left for the worker to build from the call record.
2. Starts a local receiver (127.0.0.1) that answers 503 to the *first* attempt of a fixed
   ``--fail-ratio`` of the deliveries (chosen by hashing the delivery id) and 200 otherwise.
   It dedupes on ``call_id`` + ``event`` and counts every 2xx answer, so duplicates show.
3. Starts ``--workers`` worker processes (each a :class:`WebhookWorker` with its own database
   connection pool — separate nodes as far as the database can tell), with a short retry
   schedule passed as a policy parameter (the production schedule is never changed).
4. With ``--restart kill`` (or ``term``), when ``--restart-at`` of the deliveries are done, one
   worker is killed with SIGKILL (or stopped with SIGTERM) and a new one started: its claims
   come back when their lease (``--lease-s``) ends.
5. Waits until every row is ``delivered`` and reports: time, deliveries/s (overall and over
   the middle 80 %), attempts, duplicates at the receiver, lost events, rows the engine
   delivered twice, and the machine load (``uptime``) before and after.

Run::

    .venv/bin/python benchmarks/webhook_delivery.py                      # SQLite, 1 worker, kill
    .venv/bin/python benchmarks/webhook_delivery.py --database-url \\
        postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/postgres --workers 2
    .venv/bin/python benchmarks/webhook_delivery.py --quick              # 1,000 deliveries

On PostgreSQL a database ``nixflex_bench_webhooks`` is created (dropped first) on the server
the URL names. Results: ``benchmarks/results/webhook_delivery.json`` (``--quick``:
``var/bench-quick/``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUICK_DIR = ROOT / "var" / "bench-quick"
PG_BENCH_DB = "nixflex_bench_webhooks"


# --------------------------------------------------------------------------------------------
# the receiver


@dataclass
class Receiver:
    fail_ratio: float
    requests: int = 0
    first_seen: Counter[str] = field(default_factory=Counter)
    ok: Counter[tuple[str, str]] = field(default_factory=Counter)
    ok_times: list[float] = field(default_factory=list)
    failed_first: int = 0
    bad_signature_header: int = 0

    def fails_first(self, delivery_id: str) -> bool:
        digest = hashlib.sha256(delivery_id.encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < self.fail_ratio

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        self.requests += 1
        delivery = request.headers.get("x-nixflex-delivery", "")
        if not request.headers.get("x-nixflex-signature", "").startswith("t="):
            self.bad_signature_header += 1
        self.first_seen[delivery] += 1
        if self.first_seen[delivery] == 1 and self.fails_first(delivery):
            self.failed_first += 1
            return Response(b"try later", status_code=503)
        data = json.loads(body)
        self.ok[(data["call_id"], data["event"])] += 1
        self.ok_times.append(time.monotonic())
        return Response(b"ok")


def start_receiver(receiver: Receiver) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            backlog=4096,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("receiver did not start")
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}/hook"


# --------------------------------------------------------------------------------------------
# database


async def prepare_database(url: str) -> str:
    """A fresh, migrated database; returns its URL."""
    from nixflex_engine.store.db import Database, upgrade

    if make_url(url).get_backend_name() == "postgresql":
        import asyncpg

        parsed = make_url(url)
        conn = await asyncpg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            database=parsed.database or "postgres",
        )
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{PG_BENCH_DB}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{PG_BENCH_DB}"')
        finally:
            await conn.close()
        url = parsed.set(database=PG_BENCH_DB).render_as_string(hide_password=False)
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()
    return url


async def seed(url: str, key_encrypted: str, hook_url: str, n: int) -> None:
    """``n`` ended calls, each with one queued call.failed delivery (as the outbox has it)."""
    from nixflex_engine.store.db import Database
    from nixflex_engine.store.models import accounts, agents, api_keys, calls, webhook_deliveries
    from nixflex_engine.store.repositories import utcnow
    from nixflex_engine.store.webhooks import new_delivery_id, new_event_id

    db = Database(url)
    now = utcnow()
    account_id = "acct_" + secrets.token_hex(8)
    agent_id = "agent_" + secrets.token_hex(8)

    def setup(conn: sa.Connection) -> None:
        conn.execute(
            accounts.insert().values(
                account_id=account_id,
                name="bench",
                calls_in_flight=0,
                peak_concurrent_calls=0,
                created_at=now,
            )
        )
        conn.execute(
            api_keys.insert().values(
                key_id="nxf_" + secrets.token_hex(8),
                account_id=account_id,
                name="bench",
                secret_hash="0" * 64,
                secret_encrypted=key_encrypted,
                created_at=now,
            )
        )
        conn.execute(
            agents.insert().values(
                agent_id=agent_id,
                account_id=account_id,
                config={"name": "bench", "webhook_url": hook_url},
                created_at=now,
                updated_at=now,
            )
        )

    def chunk(conn: sa.Connection, size: int) -> None:
        rows = []
        for _ in range(size):
            sid = "CA" + secrets.token_hex(16)
            rows.append(
                {
                    "call_id": sid,
                    "call_ref": sid,
                    "account_id": account_id,
                    "agent_id": agent_id,
                    "direction": "outbound",
                    "status": "no-answer",
                    "from_number": "+15005550001",
                    "to_number": "+15005550006",
                    "metadata": {"n": len(rows)},
                    "dynamic_vars": {},
                    "voicemail_action": "hangup",
                    "created_at": now,
                    "ended_at": now,
                    "ended_reason": "no-answer",
                    "transcript": [],
                    "extracted_data": {},
                    "slot_held": False,
                    "updated_at": now,
                }
            )
        ids = conn.execute(
            calls.insert().returning(calls.c.id, calls.c.call_id, sort_by_parameter_order=True),
            rows,
        ).all()
        conn.execute(
            webhook_deliveries.insert(),
            [
                {
                    "delivery_id": new_delivery_id(),
                    "event_id": new_event_id(),
                    "call_pk": pk,
                    "call_id": call_id,
                    "account_id": account_id,
                    "event": "call.failed",
                    "target": "agent",
                    "url": hook_url,
                    "status": "pending",
                    "payload": None,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for pk, call_id in ids
            ],
        )

    try:
        await db.write(setup)
        left = n
        while left > 0:
            size = min(1000, left)
            await db.write(lambda conn, size=size: chunk(conn, size))  # type: ignore[misc]
            left -= size
    finally:
        await db.dispose()


async def db_counts(url: str) -> dict[str, Any]:
    from nixflex_engine.store.db import Database
    from nixflex_engine.store.models import webhook_attempts, webhook_deliveries

    db = Database(url)
    d, a = webhook_deliveries, webhook_attempts

    def work(conn: sa.Connection) -> dict[str, Any]:
        by_status = {
            s: int(c)
            for s, c in conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))
        }
        attempts = int(conn.execute(sa.select(sa.func.count()).select_from(a)).scalar_one())
        delivered_twice = int(
            conn.execute(
                sa.select(sa.func.count()).select_from(
                    sa.select(a.c.delivery_pk)
                    .where(a.c.outcome == "delivered")
                    .group_by(a.c.delivery_pk)
                    .having(sa.func.count() > 1)
                    .subquery()
                )
            ).scalar_one()
        )
        workers = int(conn.execute(sa.select(sa.func.count(sa.distinct(a.c.worker)))).scalar_one())
        return {
            "by_status": by_status,
            "attempts": attempts,
            "rows_delivered_twice": delivered_twice,
            "workers_seen": workers,
        }

    try:
        return await db.read(work)
    finally:
        await db.dispose()


async def delivered_count(db: Any) -> int:
    from nixflex_engine.store.models import webhook_deliveries as d

    def work(conn: sa.Connection) -> int:
        stmt = sa.select(sa.func.count()).select_from(d).where(d.c.status == "delivered")
        return int(conn.execute(stmt).scalar_one())

    return int(await db.read(work))


# --------------------------------------------------------------------------------------------
# a worker process


async def run_worker(args: argparse.Namespace) -> None:
    from nixflex_engine.api.calls import call_json
    from nixflex_engine.calls.webhooks import RetryPolicy, WebhookWorker
    from nixflex_engine.config import Settings
    from nixflex_engine.crypto import Crypto
    from nixflex_engine.store.db import Database
    from nixflex_engine.store.repositories import Repositories

    logging.getLogger("nixflex_engine").setLevel(logging.ERROR)  # one line per attempt otherwise
    key = os.environ["BENCH_FERNET_KEY"]
    settings = Settings(encryption_key=key, public_base_url="https://engine.example.com")
    db = Database(args.worker)
    repos = Repositories.over(db)
    worker = WebhookWorker(
        repos=repos,
        crypto=Crypto(key.encode()),
        serialize=lambda record: call_json(record, settings),
        allow_private=True,  # the receiver is on 127.0.0.1
        timeout_s=args.timeout_s,
        lease_s=args.lease_s,
        max_concurrency=args.concurrency,
        poll_interval_s=0.05,
        policy=RetryPolicy(schedule_s=(0.5, 1.0, 2.0), deadline_s=600.0),
        worker_id=args.worker_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    worker.start()
    await stop.wait()
    await worker.stop()
    await db.dispose()


def spawn_worker(url: str, name: str, args: argparse.Namespace, key: str) -> subprocess.Popen[Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        url,
        "--worker-id",
        name,
        "--concurrency",
        str(args.concurrency),
        "--lease-s",
        str(args.lease_s),
        "--timeout-s",
        str(args.timeout_s),
    ]
    env = {**os.environ, "BENCH_FERNET_KEY": key}
    log = open(args.log_dir / f"{name}.log", "ab")
    try:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    finally:
        log.close()


# --------------------------------------------------------------------------------------------
# the run


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def rate_middle(times: list[float]) -> float | None:
    """Deliveries/s between the 10th and the 90th percentile of the 2xx answers."""
    if len(times) < 10:
        return None
    ordered = sorted(times)
    lo, hi = ordered[len(ordered) // 10], ordered[(len(ordered) * 9) // 10]
    count = (len(ordered) * 9) // 10 - len(ordered) // 10
    return round(count / (hi - lo), 1) if hi > lo else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from nixflex_engine.crypto import Crypto
    from nixflex_engine.store.db import Database

    load_before = uptime()
    url = await prepare_database(args.database_url)
    key = Fernet.generate_key().decode()
    secret = "nxfs_" + secrets.token_hex(16)
    receiver = Receiver(fail_ratio=args.fail_ratio)
    server, thread, hook_url = start_receiver(receiver)
    t_seed = time.monotonic()
    await seed(url, Crypto(key.encode()).encrypt(secret), hook_url, args.deliveries)
    seed_s = time.monotonic() - t_seed

    workers = [spawn_worker(url, f"w{i}", args, key) for i in range(args.workers)]
    t0 = time.monotonic()
    restarted: dict[str, Any] | None = None
    monitor = Database(url)
    deadline = t0 + args.max_seconds
    done = 0
    try:
        while True:
            await asyncio.sleep(0.25)
            done = await delivered_count(monitor)
            if (
                args.restart != "none"
                and restarted is None
                and done >= args.deliveries * args.restart_at
            ):
                victim = workers[0]
                victim.send_signal(signal.SIGKILL if args.restart == "kill" else signal.SIGTERM)
                victim.wait(30)
                workers[0] = spawn_worker(url, "w0-restarted", args, key)
                restarted = {
                    "mode": args.restart,
                    "at_delivered": done,
                    "at_s": round(time.monotonic() - t0, 2),
                }
            if done >= args.deliveries:
                break
            for w in workers:
                if w.poll() is not None:
                    logs = "\n".join(p.read_text()[-1500:] for p in args.log_dir.glob("*.log"))
                    raise RuntimeError(f"worker exited with {w.returncode}: {logs}")
            if time.monotonic() > deadline:
                break
        elapsed = time.monotonic() - t0
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        await monitor.dispose()
    await asyncio.sleep(0.2)  # answers still being counted by the receiver thread
    counts = await db_counts(url)
    server.should_exit = True
    thread.join(5)
    keys_ok = receiver.ok
    duplicates = sum(c - 1 for c in keys_ok.values() if c > 1)
    lost = args.deliveries - len(keys_ok)
    return {
        "benchmark": "webhook_delivery",
        "database": make_url(url).get_backend_name(),
        "deliveries": args.deliveries,
        "fail_ratio_first_attempt": args.fail_ratio,
        "worker_processes": args.workers,
        "concurrency_per_worker": args.concurrency,
        "lease_s": args.lease_s,
        "restart": restarted,
        "seed_s": round(seed_s, 2),
        "all_delivered": done >= args.deliveries,
        "elapsed_s": round(elapsed, 2),
        "deliveries_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
        "deliveries_per_s_middle_80pct": rate_middle(receiver.ok_times),
        "receiver": {
            "requests": receiver.requests,
            "first_attempts_failed": receiver.failed_first,
            "distinct_events_ok": len(keys_ok),
            "duplicates": duplicates,
            "lost": lost,
            "missing_signature": receiver.bad_signature_header,
        },
        "engine": counts,
        "load_before": load_before,
        "load_after": uptime(),
        "cpus": os.cpu_count(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="sqlite+aiosqlite:///path or postgresql+asyncpg://... (default: a temp SQLite file)",
    )
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--fail-ratio", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=32, help="attempts in flight per worker")
    parser.add_argument("--lease-s", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=2.0)
    parser.add_argument("--restart", choices=("kill", "term", "none"), default="kill")
    parser.add_argument("--restart-at", type=float, default=0.4, help="fraction delivered")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--quick", action="store_true", help="1,000 deliveries")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(run_worker(args))
        return
    if args.quick:
        args.deliveries = min(args.deliveries, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        if args.database_url is None:
            args.database_url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        args.log_dir = Path(tmp)
        result = asyncio.run(run(args))
    out = args.out or (QUICK_DIR if args.quick else RESULTS) / "webhook_delivery.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[Any] = []
    if out.exists():
        try:
            previous = json.loads(out.read_text())
            runs = previous.get("runs", []) if isinstance(previous, dict) else []
        except ValueError:
            runs = []

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["database"], r["worker_processes"], (r["restart"] or {}).get("mode"))

    runs = [r for r in runs if key(r) != key(result)]
    runs.append(result)
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = (
        result["all_delivered"]
        and result["receiver"]["lost"] == 0
        and result["engine"]["rows_delivered_twice"] == 0
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
