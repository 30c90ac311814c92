"""The concurrency limit holds across processes: two engine processes share one PostgreSQL
database and many concurrent requests race for the last slots; exactly ``limit`` calls are
placed. (The single-process race runs on both backends in test_outbound.py.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from nixflex_engine.api.keys import create_account_key
from nixflex_engine.crypto import Crypto
from nixflex_engine.store.db import Database
from nixflex_engine.store.models import accounts, calls
from nixflex_engine.store.repositories import Repositories

from .support import ENCRYPTION_KEY, free_port, random_e164

LIMIT = 5
REQUESTS = 60


def _start(
    port: int, database_url: str, twilio_base: str, tmp_path: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NIXFLEX_DATABASE_URL": database_url,
        "NIXFLEX_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "NIXFLEX_VAR_DIR": str(tmp_path / f"var{port}"),
        "NIXFLEX_TWILIO_API_BASE_URL": twilio_base,
        "NIXFLEX_RATE_LIMIT_WRITES_PER_MINUTE": "100000",
        "NIXFLEX_RATE_LIMIT_READS_PER_MINUTE": "100000",
    }
    script = Path(__file__).with_name("race_server.py")
    return subprocess.Popen(
        [sys.executable, str(script), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("engine process did not become ready")


@pytest.mark.slow
@pytest.mark.postgres
async def test_two_processes_never_exceed_the_limit(
    postgres_url: str, fake_twilio: Any, tmp_path: Path
) -> None:
    database_url = postgres_url
    state, twilio_base = fake_twilio
    db = Database(database_url)
    repos = Repositories.over(db)
    crypto = Crypto(ENCRYPTION_KEY.encode())
    try:
        key = await create_account_key(repos, crypto, name="race", max_concurrent_calls=LIMIT)
        headers = {"Authorization": f"Bearer {key.key_id}:{key.key_secret}"}
        ports = [free_port(), free_port()]
        procs = [_start(p, database_url, twilio_base, tmp_path) for p in ports]
        try:
            bases = [f"http://127.0.0.1:{p}" for p in ports]
            await asyncio.gather(*(_wait_ready(b, p) for b, p in zip(bases, procs, strict=True)))
            async with httpx.AsyncClient(timeout=30) as client:
                agent = (
                    await client.post(f"{bases[0]}/v1/agents", json={"name": "r"}, headers=headers)
                ).json()
                tw = state.add_account()
                number = random_e164()
                state.add_number(tw.sid, number)
                r = await client.post(
                    f"{bases[1]}/v1/phone-numbers",
                    json={
                        "phone_number": number,
                        "agent_id": agent["agent_id"],
                        "twilio_account_sid": tw.sid,
                        "twilio_auth_token": tw.auth_token,
                    },
                    headers=headers,
                )
                assert r.status_code == 201, r.text
                body = {"agent_id": agent["agent_id"], "to_number": "+447386172392"}
                results = await asyncio.gather(
                    *(
                        client.post(f"{bases[i % 2]}/v1/calls/outbound", json=body, headers=headers)
                        for i in range(REQUESTS)
                    )
                )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
        statuses = [r.status_code for r in results]
        assert statuses.count(201) == LIMIT, statuses
        assert statuses.count(429) == REQUESTS - LIMIT, statuses
        created_on = {bases[i % 2] for i, r in enumerate(results) if r.status_code == 201}

        def counts(conn: sa.Connection) -> tuple[int, int]:
            in_flight = conn.execute(
                sa.select(accounts.c.calls_in_flight).where(accounts.c.account_id == key.account_id)
            ).scalar_one()
            held = conn.execute(
                sa.select(sa.func.count())
                .select_from(calls)
                .where(calls.c.account_id == key.account_id, calls.c.slot_held.is_(True))
            ).scalar_one()
            return int(in_flight), int(held)

        in_flight, held = await db.read(counts)
        assert in_flight == held == LIMIT
        assert created_on  # at least one process placed calls
    finally:
        await db.dispose()
