"""Two dispatchers (two nodes: separate connection pools, dialers and node ids) on one
PostgreSQL database, racing over one campaign: no attempt dialed twice, never over the limit."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.support import Env, start_env
from nixflex_engine.calls.campaigns import CampaignDispatcher
from nixflex_engine.calls.dialer import InstantDialer
from nixflex_engine.calls.outbound import OutboundCallService
from nixflex_engine.sandbox.fake_twilio import FakeTwilio
from nixflex_engine.store.db import Database
from nixflex_engine.store.repositories import Repositories

from .support import numbers, rig

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_env(
    postgres_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path: Any
) -> AsyncIterator[Env]:
    async for e in start_env(postgres_url, fake_twilio, tmp_path, campaign_dispatch_enabled=False):
        yield e


async def test_two_dispatchers_never_dial_an_attempt_twice(pg_env: Env, postgres_url: str) -> None:
    r = await rig(pg_env, max_concurrent_calls=50)
    n, limit = 300, 7
    camp = await r.create(
        [{"phone": p} for p in numbers(n)],
        max_concurrent=limit,
        retry={"max_attempts": 2, "retry_delay_minutes": 0, "on": ["busy"]},
    )
    cid = camp["campaign_id"]
    db_b = Database(postgres_url)
    dialer_b = InstantDialer()
    repos_b = Repositories.over(db_b)
    node_a = CampaignDispatcher(
        repos=r.repos, outbound=r.env.services.outbound, node_id="node-a", interval_seconds=0.005
    )
    node_b = CampaignDispatcher(
        repos=repos_b,
        outbound=OutboundCallService(
            repos=repos_b,
            crypto=r.env.services.crypto,
            dialer=dialer_b,
            default_max_concurrent_calls=10,
            concurrency_retry_after_seconds=1,
        ),
        node_id="node-b",
        interval_seconds=0.005,
    )
    rng = random.Random(3)
    peak = 0
    busy_once: set[str] = set()
    node_a.start()
    node_b.start()
    try:
        deadline = asyncio.get_running_loop().time() + 180
        while asyncio.get_running_loop().time() < deadline:
            live = await r.live(cid)
            peak = max(peak, len(live))
            assert len(live) <= limit
            detail = await r.get(cid, limit=1)
            if detail["status"] == "completed":
                break
            dialed = [c for c in live if c.call_id != c.call_ref]  # the carrier's SID is stored
            for call in rng.sample(dialed, min(len(dialed), rng.randint(0, 3))):
                # the first call to every tenth number is busy (retried once)
                busy = call.to_number.endswith("0") and call.to_number not in busy_once
                if busy:
                    busy_once.add(call.to_number)
                status = "busy" if busy else "completed"
                assert await r.repos.calls.finish_call(call.call_id, status, status)
                final = await r.repos.calls.get(call.call_id)
                await rng.choice((node_a, node_b)).on_final(final)
            await asyncio.sleep(0)
    finally:
        await node_a.aclose()
        await node_b.aclose()
        await db_b.dispose()
    detail = await r.get(cid, limit=1)
    assert detail["status"] == "completed", detail["counts"]
    mine = [
        d for d in [*r.env.dialer.dialed, *dialer_b.dialed] if d.account_id == r.account.account_id
    ]
    refs = Counter(d.call_ref for d in mine)
    assert max(refs.values()) == 1  # no attempt dialed twice
    per_number = Counter(d.to_number for d in mine)
    assert set(per_number) == set(numbers(n))
    assert {num for num, k in per_number.items() if k == 2} == busy_once
    assert all(k == 1 for num, k in per_number.items() if num not in busy_once)
    assert node_a.dialed > 0 and node_b.dialed > 0  # both nodes did work
    assert peak == limit
    calls = await r.all_calls(cid)
    assert len(calls) == len(mine) == n + len(busy_once)
