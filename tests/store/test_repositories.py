"""Repositories on SQLite and PostgreSQL: slots reserved and released exactly once, lifecycle
updates, idempotency records, uniqueness, time zones, migrations matching the models."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from api.support import PG_URL, pg_database, random_e164
from nixflex_engine.store.db import Database, alembic_config, upgrade
from nixflex_engine.store.models import idempotency_keys, metadata
from nixflex_engine.store.repositories import (
    DuplicateError,
    NewCall,
    Repositories,
)


@pytest.fixture
async def repos(database_url: str) -> AsyncIterator[Repositories]:
    db = Database(database_url)
    try:
        yield Repositories.over(db)
    finally:
        await db.dispose()


async def new_account(repos: Repositories, limit: int | None = None) -> str:
    account = await repos.accounts.create_with_key(
        name="t",
        key_id="nxf_" + os.urandom(8).hex(),
        secret_hash="0" * 64,
        secret_encrypted="x",
        max_concurrent_calls=limit,
    )
    return account.account_id


def new_call(account_id: str) -> NewCall:
    return NewCall(
        account_id=account_id,
        agent_id="agent_0123456789abcdef",
        from_number="+15005550001",
        to_number="+15005550006",
        voicemail_action="hangup",
        dynamic_vars={},
    )


async def test_reserve_is_atomic_under_concurrency(repos: Repositories) -> None:
    account_id = await new_account(repos, limit=3)
    results = await asyncio.gather(
        *(
            repos.calls.create_reserving_slot(new_call(account_id), default_limit=10)
            for _ in range(25)
        )
    )
    placed = [r for r in results if r is not None]
    assert len(placed) == 3
    account = await repos.accounts.get(account_id)
    assert account is not None
    assert account.calls_in_flight == 3 and account.peak_concurrent_calls == 3


async def test_default_limit_applies_when_account_has_none(repos: Repositories) -> None:
    account_id = await new_account(repos)
    got = [
        await repos.calls.create_reserving_slot(new_call(account_id), default_limit=2)
        for _ in range(3)
    ]
    assert [g is not None for g in got] == [True, True, False]


async def test_finish_releases_exactly_once_even_when_racing(repos: Repositories) -> None:
    account_id = await new_account(repos, limit=2)
    call = await repos.calls.create_reserving_slot(new_call(account_id), default_limit=10)
    assert call is not None
    assert await repos.calls.mark_dialed(call.call_ref, "CA" + "a" * 32)
    dialed = await repos.calls.get("CA" + "a" * 32)
    assert dialed is not None and dialed.call_ref == call.call_ref
    outcomes = await asyncio.gather(
        *(repos.calls.finish_call(dialed.call_id, "completed", "caller_hangup") for _ in range(10))
    )
    assert outcomes.count(True) == 1
    account = await repos.accounts.get(account_id)
    assert account is not None and account.calls_in_flight == 0
    # a failed dial after the end changes nothing either
    assert await repos.calls.fail_dial(call.call_ref, {"code": 1}) is False
    record = await repos.calls.get(dialed.call_id)
    assert record is not None and record.status == "completed" and not record.slot_held
    assert record.ended_at is not None and record.ended_at.tzinfo is not None


async def test_lifecycle_updates_and_guards(repos: Repositories) -> None:
    account_id = await new_account(repos)
    call = await repos.calls.create_reserving_slot(new_call(account_id), default_limit=10)
    assert call is not None
    with pytest.raises(ValueError):
        await repos.calls.update_status(call.call_id, "completed")
    with pytest.raises(ValueError):
        await repos.calls.finish_call(call.call_id, "ringing", "x")
    with pytest.raises(ValueError):
        await repos.calls.update_call(call.call_id, status="completed")
    answered = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    updated = await repos.calls.update_status(call.call_id, "in-progress", answered_at=answered)
    assert updated is not None and updated.status == "in-progress"
    assert updated.answered_at == answered
    by_ref = await repos.calls.get_by_ref(call.call_ref)
    assert by_ref is not None and by_ref.answered_at == answered
    assert await repos.calls.get(call.call_id, account_id="acct_other") is None
    assert await repos.calls.recount_in_flight(account_id) == 1


async def test_idempotency_records(repos: Repositories) -> None:
    account_id = await new_account(repos)
    idem = repos.idempotency
    assert await idem.claim(account_id, "k", "h1") is None
    pending = await idem.claim(account_id, "k", "h1")
    assert pending is not None and pending.response_status is None
    await idem.complete(account_id, "k", status=201, body_encrypted="enc")
    done = await idem.claim(account_id, "k", "h2")
    assert done is not None and done.request_hash == "h1" and done.response_status == 201
    await idem.release(account_id, "k")
    assert await idem.claim(account_id, "k", "h3") is None
    # expired records are replaced
    await repos.db.write(
        lambda conn: conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.key == "k", idempotency_keys.c.account_id == account_id)
            .values(created_at=datetime.now(UTC) - timedelta(hours=25))
        )
    )
    assert await idem.claim(account_id, "k", "h4") is None
    # a claim abandoned mid-request (no response after a minute) is replaced too
    assert await idem.claim(account_id, "k", "h4") is not None
    await repos.db.write(
        lambda conn: conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.key == "k", idempotency_keys.c.account_id == account_id)
            .values(created_at=datetime.now(UTC) - timedelta(seconds=61))
        )
    )
    assert await idem.claim(account_id, "k", "h5") is None


async def test_phone_number_unique_and_agent_delete_detaches(repos: Repositories) -> None:
    account_id = await new_account(repos)
    agent = await repos.agents.create(account_id, {"name": "a"})
    number = random_e164()
    await repos.phone_numbers.create(
        phone_number=number,
        account_id=account_id,
        agent_id=agent.agent_id,
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token_encrypted="enc",
        twilio_number_sid=None,
    )
    with pytest.raises(DuplicateError):
        await repos.phone_numbers.create(
            phone_number=number,
            account_id=await new_account(repos),
            agent_id=None,
            twilio_account_sid="AC" + "1" * 32,
            twilio_auth_token_encrypted="enc",
            twilio_number_sid=None,
        )
    first = await repos.phone_numbers.first_for_agent(agent.agent_id)
    assert first is not None and first.phone_number == number
    assert "enc" not in repr(first)
    assert await repos.agents.delete(agent.agent_id, account_id)
    detached = await repos.phone_numbers.get(number)
    assert detached is not None and detached.agent_id is None


async def test_usage_counts(repos: Repositories) -> None:
    account_id = await new_account(repos)
    c1 = await repos.calls.create_reserving_slot(new_call(account_id), default_limit=10)
    c2 = await repos.calls.create_reserving_slot(new_call(account_id), default_limit=10)
    assert c1 is not None and c2 is not None
    await repos.calls.finish_call(c1.call_id, "completed", "agent_hangup", duration_seconds=90.0)
    await repos.calls.fail_dial(c2.call_ref, {"code": 21211})
    usage = await repos.accounts.usage(account_id)
    assert (usage.calls, usage.completed_calls, usage.failed_calls) == (2, 1, 1)
    assert usage.total_duration_seconds == 90.0
    assert usage.calls_in_flight == 0 and usage.peak_concurrent_calls == 2


def _diff(connection: sa.Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def _check_fresh_migration(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
        await upgrade(db)  # idempotent
        diff = await db.read(_diff)
        version = await db.read(
            lambda conn: conn.execute(
                sa.text("SELECT version_num FROM alembic_version")
            ).scalar_one()
        )
        assert diff == [], diff
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert version == head
    finally:
        await db.dispose()


async def test_migrations_match_models_sqlite(tmp_path: Path) -> None:
    await _check_fresh_migration(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")


@pytest.mark.postgres
def test_migrations_match_models_postgres() -> None:
    if PG_URL is None:
        pytest.skip("NIXFLEX_TEST_PG_URL is not set")
    for url in pg_database(f"nixflex_migrate_{os.getpid()}"):
        asyncio.run(_check_fresh_migration(url))


def test_two_processes_migrate_and_write_one_sqlite_file(tmp_path: Path) -> None:
    """Concurrent start-ups and read-then-write transactions from two processes on one SQLite
    file wait for each other instead of failing."""
    import subprocess
    import sys

    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    script = (
        "import asyncio, sys\n"
        "from nixflex_engine.store.db import Database, upgrade\n"
        "from nixflex_engine.store.repositories import Repositories\n"
        "async def main():\n"
        "    db = Database(sys.argv[1])\n"
        "    await upgrade(db)\n"
        "    repos = Repositories.over(db)\n"
        "    for i in range(30):\n"
        "        a = await repos.accounts.create_with_key(name='p',"
        " key_id=f'nxf_{sys.argv[2]}_{i}', secret_hash='0'*64, secret_encrypted='x')\n"
        "        agent = await repos.agents.create(a.account_id, {'name': 'x'})\n"
        "        assert await repos.agents.delete(agent.agent_id, a.account_id)\n"
        "    await db.dispose()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url, str(n)], stderr=subprocess.PIPE)
        for n in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
