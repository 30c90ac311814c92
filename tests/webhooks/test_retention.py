"""Retention of the webhook outbox, on SQLite and PostgreSQL: finished deliveries older than the
retention (counted from when they became final) are deleted with their attempt logs, in
bounded batches, by any number of workers at once; pending, held and in-flight rows never are.

These tests count rows, so they run on a database of their own (one per backend and xdist
worker, wiped before each test) rather than the shared one. The clock is injected: "31 days
later" is a ``prune_clock``, not a wait.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from api.support import PG_URL, _migrate, pg_database
from nixflex_engine.calls.webhooks import WebhookWorker
from nixflex_engine.store.db import Database
from nixflex_engine.store.models import webhook_attempts, webhook_deliveries
from nixflex_engine.store.repositories import Repositories, utcnow
from nixflex_engine.store.webhooks import FINAL_STATUSES, WebhookRepository
from webhooks.support import Receiver, party, placed_call, statuses, wait_for, worker

DAY = 86400.0
RETENTION_S = 30 * DAY


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def own_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('retention') / 'engine.db'}"
        asyncio.run(_migrate(url))
        yield url
        return
    if PG_URL is None:
        pytest.skip("NIXFLEX_TEST_PG_URL is not set")
    worker_id = os.environ.get("PYTEST_XDIST_WORKER", "main")
    yield from pg_database(f"nixflex_retention_{worker_id}_{os.getpid()}")


@pytest.fixture
async def db(own_url: str) -> AsyncIterator[Database]:
    database = Database(own_url)
    await database.write(lambda conn: conn.execute(webhook_deliveries.delete()))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def repos(db: Database) -> Repositories:
    return Repositories.over(db)


class Seeder:
    """Inserts outbox rows in any state, with any timestamps, under one real call."""

    def __init__(self, db: Database, account_id: str, call_pk: int, call_id: str) -> None:
        self.db = db
        self.account_id = account_id
        self.call_pk = call_pk
        self.call_id = call_id

    async def rows(
        self,
        n: int,
        *,
        status: str,
        final_at: datetime,
        created_at: datetime | None = None,
        leased_until: datetime | None = None,
        payload: str | None = "{}",
        attempts: int = 1,
    ) -> list[int]:
        """``n`` rows; ``final_at`` is the last write (``updated_at``). Each finished row gets
        ``attempts`` log rows. Returns the rows' ids."""
        values = [
            {
                "delivery_id": "whd_" + secrets.token_hex(12),
                "event_id": "evt_" + secrets.token_hex(12),
                "call_pk": self.call_pk,
                "call_id": self.call_id,
                "account_id": self.account_id,
                "event": "call.failed",
                "target": "agent",
                "url": "https://hooks.example.com/x",
                "status": status,
                "payload": payload,
                "attempts": attempts if status != "pending" else 0,
                "next_attempt_at": final_at,
                "delivered_at": final_at if status == "delivered" else None,
                "lease_owner": "node-x" if leased_until else None,
                "lease_token": secrets.token_hex(16) if leased_until else None,
                "lease_expires_at": leased_until,
                "created_at": created_at or final_at,
                "updated_at": final_at,
            }
            for _ in range(n)
        ]

        def work(conn: sa.Connection) -> list[int]:
            ids = [
                int(row[0])
                for row in conn.execute(
                    webhook_deliveries.insert().returning(webhook_deliveries.c.id), values
                )
            ]
            log = [
                {
                    "delivery_pk": pk,
                    "attempt": k + 1,
                    "worker": "node-x",
                    "started_at": final_at,
                    "duration_ms": 1.0,
                    "status_code": 200,
                    "error": None,
                    "outcome": "delivered",
                    "next_attempt_at": None,
                }
                for pk in ids
                for k in range(attempts if status != "pending" else 0)
            ]
            if log:
                conn.execute(webhook_attempts.insert(), log)
            return ids

        return await self.db.write(work)


@pytest.fixture
async def seed(repos: Repositories, db: Database) -> Seeder:
    p = await party(repos, agent_url=None)
    call = await placed_call(repos, p)
    return Seeder(db, p.account_id, call.id, call.call_id)


async def remaining(db: Database) -> dict[int, str]:
    def work(conn: sa.Connection) -> dict[int, str]:
        stmt = sa.select(webhook_deliveries.c.id, webhook_deliveries.c.status)
        return {int(pk): status for pk, status in conn.execute(stmt)}

    return await db.read(work)


async def attempt_owners(db: Database) -> set[int]:
    def work(conn: sa.Connection) -> set[int]:
        stmt = sa.select(webhook_attempts.c.delivery_pk).distinct()
        return {int(row[0]) for row in conn.execute(stmt)}

    return await db.read(work)


def pruner(repos: Repositories, now: datetime, **overrides: Any) -> WebhookWorker:
    values: dict[str, Any] = {
        "retention_s": RETENTION_S,
        "prune_clock": lambda: now,
        "prune_pause_s": 0.0,
        **overrides,
    }
    return worker(repos, **values)


async def test_prunes_only_finished_rows_older_than_the_retention(
    db: Database, repos: Repositories, seed: Seeder
) -> None:
    now = utcnow()
    old, young = now - timedelta(days=31), now - timedelta(days=29)
    doomed: list[int] = []
    kept: list[int] = []
    for status in FINAL_STATUSES:
        doomed += await seed.rows(2, status=status, final_at=old, attempts=3)
        kept += await seed.rows(2, status=status, final_at=young)
    # created long ago but final only recently (retried for a day): age counts from final
    kept += await seed.rows(1, status="failed", created_at=now - timedelta(days=90), final_at=young)
    # never final, however old: waiting, held for the analysis, claimed and in flight
    kept += await seed.rows(2, status="pending", final_at=old)
    kept += await seed.rows(1, status="pending", final_at=old, payload=None)
    kept += await seed.rows(
        1, status="pending", final_at=old, leased_until=now + timedelta(seconds=60)
    )
    # right at the cutoff: not older than the retention yet
    kept += await seed.rows(1, status="delivered", final_at=now - timedelta(seconds=RETENTION_S))
    assert set(doomed) <= await attempt_owners(db)

    w = pruner(repos, now)
    try:
        assert await w.prune() == len(doomed) == 8
        assert set(await remaining(db)) == set(kept)
        # their attempt logs went with them; the kept rows' stayed
        owners = await attempt_owners(db)
        assert not owners & set(doomed)
        assert owners == {pk for pk, s in (await remaining(db)).items() if s != "pending"}
        assert await w.prune() == 0  # nothing left to do
        assert w.pruned == 8 and w.prune_passes == 2
    finally:
        await w.stop()


async def test_retention_zero_keeps_everything(
    db: Database, repos: Repositories, seed: Seeder
) -> None:
    now = utcnow()
    ids = await seed.rows(5, status="delivered", final_at=now - timedelta(days=3650))
    w = pruner(repos, now, retention_s=0.0, prune_interval_s=0.01)
    w.start()
    try:
        assert await w.prune() == 0
        await asyncio.sleep(0.2)  # twenty intervals: a pruning loop would have run
    finally:
        await w.stop()
    assert w.prune_passes == 0 and w.pruned == 0
    assert set(await remaining(db)) == set(ids)


async def test_a_backlog_goes_in_bounded_batches(
    db: Database, repos: Repositories, seed: Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow()
    total = 1234
    await seed.rows(total, status="delivered", final_at=now - timedelta(days=40), attempts=1)
    young = await seed.rows(3, status="delivered", final_at=now - timedelta(days=1))
    batches: list[int] = []
    prune_finished = WebhookRepository.prune_finished

    async def counted(self: WebhookRepository, before: datetime, *, limit: int) -> int:
        n = await prune_finished(self, before, limit=limit)
        batches.append(n)
        return n

    monkeypatch.setattr(WebhookRepository, "prune_finished", counted)
    w = pruner(repos, now, prune_batch_size=100, prune_max_batches=5)
    try:
        # a pass stops at its cap and says a backlog is left ...
        assert await w.prune() == 500
        assert batches == [100] * 5 and w._prune_backlog
        assert len(await remaining(db)) == total + 3 - 500
        assert await w.prune() == 500
        # ... and the pass that finds fewer than a batch ends there
        assert await w.prune() == 234
        assert not w._prune_backlog
        assert batches == [100] * 10 + [100, 100, 34]
    finally:
        await w.stop()
    assert set(await remaining(db)) == set(young)
    assert await attempt_owners(db) == set(young)


async def test_two_workers_prune_at_once(own_url: str, db: Database, seed: Seeder) -> None:
    """Two workers, each with its own connection pool (two nodes as far as the database can
    tell), prune one backlog at once: no error, every row deleted once, counted once."""
    now = utcnow()
    total = 3000
    await seed.rows(total, status="failed", final_at=now - timedelta(days=60), attempts=2)
    kept = await seed.rows(4, status="pending", final_at=now - timedelta(days=60))
    kept += await seed.rows(4, status="delivered", final_at=now - timedelta(days=2))
    dbs = [Database(own_url), Database(own_url)]
    workers = [
        pruner(Repositories.over(d), now, prune_batch_size=50, prune_max_batches=1000) for d in dbs
    ]
    try:
        counts = await asyncio.gather(*(w.prune() for w in workers))
    finally:
        for w in workers:
            await w.stop()
        for d in dbs:
            await d.dispose()
    assert sum(counts) == total
    assert [w.pruned for w in workers] == counts
    assert set(await remaining(db)) == set(kept)
    assert await attempt_owners(db) == set(kept[4:])


async def test_the_worker_prunes_on_its_own_and_stops(
    db: Database, repos: Repositories, seed: Seeder
) -> None:
    """Started, a worker with a retention runs passes every ``prune_interval_s`` (0.05 s
    here) until stopped; rows that age past the retention later go in a later pass."""
    now = utcnow()
    clock = {"now": now}
    first = await seed.rows(30, status="delivered", final_at=now - timedelta(days=31))
    later = await seed.rows(30, status="gone", final_at=now - timedelta(days=20))
    w = pruner(
        repos,
        now,
        prune_clock=lambda: clock["now"],
        prune_interval_s=0.05,
        prune_batch_size=7,
        rng=random.Random(7),
    )
    w.start()
    try:
        await wait_for(lambda: w.pruned == len(first), timeout_s=20)
        passes = w.prune_passes
        await wait_for(lambda: w.prune_passes >= passes + 2, timeout_s=20)
        assert set(await remaining(db)) == set(later)
        clock["now"] = now + timedelta(days=11)
        await wait_for(lambda: w.pruned == len(first) + len(later), timeout_s=20)
    finally:
        await asyncio.wait_for(w.stop(), 10)
    assert await remaining(db) == {}
    passes = w.prune_passes
    await asyncio.sleep(0.2)
    assert w.prune_passes == passes  # stopped for good


async def test_delivered_history_goes_pending_stays(
    repos: Repositories, receiver: Receiver
) -> None:
    """Through the real worker: one call's webhook is delivered, another's receiver keeps
    failing (still retrying). After the retention the delivered one is gone from the call's
    webhook history (GET /v1/calls/{call_id}/webhooks lists none); the pending one stays."""
    failing = receiver.url + "?fail"
    receiver.script = lambda _d, _n: (200, 0.0)
    ok_party = await party(repos, agent_url=receiver.url)
    bad_party = await party(repos, agent_url=failing)
    ok_call = await placed_call(repos, ok_party)
    bad_call = await placed_call(repos, bad_party)
    assert await repos.calls.finish_call(ok_call.call_id, "no-answer", "no-answer")
    w = worker(repos)
    await w.run_once()
    assert await statuses(repos, ok_call.call_id, ok_party.account_id) == ["delivered"]
    receiver.script = lambda _d, _n: (503, 0.0)
    assert await repos.calls.finish_call(bad_call.call_id, "busy", "busy")
    await w.run_once()
    await w.stop()
    assert await statuses(repos, bad_call.call_id, bad_party.account_id) == ["pending"]

    later = pruner(repos, utcnow() + timedelta(days=31))
    try:
        assert await later.prune() == 1
    finally:
        await later.stop()
    assert await repos.webhooks.list_for_call(
        ok_call.call_id, ok_party.account_id, limit=10, offset=0
    ) == ([], 0)
    assert await repos.calls.get(ok_call.call_id) is not None  # the call record stays
    assert await statuses(repos, bad_call.call_id, bad_party.account_id) == ["pending"]


def test_worker_arguments_are_checked() -> None:
    repos: Any = object()
    with pytest.raises(ValueError, match="retention_s"):
        worker(repos, retention_s=-1.0)
    for bad in ({"prune_interval_s": 0.0}, {"prune_batch_size": 0}, {"prune_max_batches": 0}):
        with pytest.raises(ValueError, match="prune_"):
            worker(repos, retention_s=DAY, **bad)
