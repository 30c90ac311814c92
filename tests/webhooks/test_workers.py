"""Several workers over one outbox: never two deliveries of one row at once, and a worker process
killed in the middle of a delivery loses nothing (its lease runs out, another worker sends it).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter

from nixflex_engine.store.db import Database
from nixflex_engine.store.repositories import Repositories
from webhooks.support import CRYPTO_KEY, Receiver, party, placed_call, wait_for, worker


async def _queue_failed_calls(repos: Repositories, url: str, n: int) -> tuple[str, list[str]]:
    p = await party(repos, agent_url=url)
    ids = []
    for _ in range(n):
        call = await placed_call(repos, p)
        assert await repos.calls.finish_call(call.call_id, "no-answer", "no-answer")
        ids.append(call.call_id)
    return p.account_id, ids


async def test_two_workers_never_deliver_a_row_twice(database_url: str, receiver: Receiver) -> None:
    """Two workers, each with its own connection pool (two nodes as far as the database can
    tell), race for 120 due rows while the receiver answers slowly and fails some first
    attempts: every event is answered 2xx exactly once and no row is attempted twice at once."""
    receiver.script = lambda d, n: (503 if n == 1 and d[-1] in "0123" else 200, 0.02)
    dbs = [Database(database_url), Database(database_url)]
    repos = [Repositories.over(db) for db in dbs]
    try:
        account_id, ids = await _queue_failed_calls(repos[0], receiver.url, 120)
        workers = [worker(r, max_concurrency=16, worker_id=f"node{i}") for i, r in enumerate(repos)]
        for w in workers:
            w.start()
        try:
            await wait_for(
                lambda: all(receiver.ok_for(c, "call.failed") == 1 for c in ids), timeout_s=120
            )
        finally:
            for w in workers:
                await w.stop()
        assert all(receiver.ok_for(c, "call.failed") == 1 for c in ids)
        by_worker: Counter[str] = Counter()
        for call_id in ids:
            [delivery], _ = await repos[0].webhooks.list_for_call(
                call_id, account_id, limit=5, offset=0
            )
            assert delivery.status == "delivered"
            # attempts are numbered 1..n without a gap or a repeat: never two at once
            assert [a.attempt for a in delivery.attempt_log] == list(
                range(1, delivery.attempts + 1)
            )
            assert [a.outcome for a in delivery.attempt_log].count("delivered") == 1
            by_worker.update(a.worker for a in delivery.attempt_log)
            assert receiver.seen[delivery.delivery_id] == delivery.attempts
        assert set(by_worker) == {"node0", "node1"}  # both took part
    finally:
        for db in dbs:
            await db.dispose()


_WORKER_SCRIPT = """
import asyncio, sys
from nixflex_engine.api.calls import call_json
from nixflex_engine.calls.webhooks import RetryPolicy, WebhookWorker
from nixflex_engine.config import Settings
from nixflex_engine.crypto import Crypto
from nixflex_engine.store.db import Database
from nixflex_engine.store.repositories import Repositories

async def main():
    key = sys.argv[2]
    settings = Settings(encryption_key=key, public_base_url="https://engine.example.com")
    db = Database(sys.argv[1])
    w = WebhookWorker(repos=Repositories.over(db), crypto=Crypto(key.encode()),
        serialize=lambda r: call_json(r, settings), allow_private=True, timeout_s=6.0,
        lease_s=float(sys.argv[3]), poll_interval_s=0.05, worker_id="doomed",
        policy=RetryPolicy(schedule_s=(0.05,), deadline_s=60.0))
    w.start()
    print("started", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_worker_killed_mid_delivery_loses_nothing(
    database_url: str, receiver: Receiver
) -> None:
    # The first attempt of every delivery hangs (the receiver never answers in time); the
    # worker process is killed while it waits.
    receiver.script = lambda _d, n: (200, 30.0 if n == 1 else 0.0)
    db = Database(database_url)
    repos = Repositories.over(db)
    lease_s = 8.0
    try:
        account_id, ids = await _queue_failed_calls(repos, receiver.url, 3)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER_SCRIPT,
            database_url,
            CRYPTO_KEY,
            str(lease_s),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_for(lambda: all(receiver.of(c) for c in ids), timeout_s=30)
            killed_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        # nobody may take the rows while the dead worker's lease holds
        survivor = worker(repos, worker_id="survivor", timeout_s=2.0, lease_s=5.0)
        survivor.start()
        try:
            await asyncio.sleep(1.0)
            assert all(receiver.ok_for(c, "call.failed") == 0 for c in ids)
            assert all(len(receiver.of(c)) == 1 for c in ids)
            await wait_for(
                lambda: all(receiver.ok_for(c, "call.failed") == 1 for c in ids), timeout_s=120
            )
        finally:
            await survivor.stop()
        assert time.monotonic() - killed_at >= lease_s - 4.0  # lease set before the kill
        for call_id in ids:
            [delivery], _ = await repos.webhooks.list_for_call(
                call_id, account_id, limit=5, offset=0
            )
            assert delivery.status == "delivered"
            # the dead worker's attempt was never recorded; the survivor's is attempt 1
            assert [(a.worker, a.outcome) for a in delivery.attempt_log] == [
                ("survivor", "delivered")
            ]
    finally:
        await db.dispose()
