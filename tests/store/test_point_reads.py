"""``Database.read_row``: the point reads (one row by a unique key) that skip the async engine
on PostgreSQL must return exactly what SQLAlchemy's own path returns — same keys, values and
types (aware UTC datetimes, decoded JSON in its key order, floats, booleans, NULLs) — and fail
the way SQLAlchemy fails."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from nixflex_engine.store import repositories as r
from nixflex_engine.store.db import Database
from nixflex_engine.store.models import calls
from nixflex_engine.store.repositories import NewCall, Repositories

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def pg_db(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url, pool_size=2)  # one point-read connection
    try:
        yield database
    finally:
        await database.dispose()


async def _sqlalchemy_row(
    db: Database, stmt: sa.Select[Any], params: dict[str, Any]
) -> Mapping[Any, Any] | None:
    """The row as the engine read it before ``read_row`` existed."""

    def work(conn: sa.Connection) -> Mapping[Any, Any] | None:
        row = conn.execute(stmt, params).mappings().first()
        return None if row is None else dict(row)

    return await db.read(work)


def _assert_same(new: Mapping[Any, Any] | None, old: Mapping[Any, Any] | None) -> None:
    assert (new is None) == (old is None)
    if new is None or old is None:
        return
    assert list(new) == list(old)  # same keys, same order
    for key in old:
        a, b = new[key], old[key]
        assert a == b, key
        assert type(a) is type(b), key
        if isinstance(b, datetime):
            assert a.tzinfo == b.tzinfo == UTC, key
        if isinstance(b, dict):
            assert list(a.items()) == list(b.items()), key  # JSON key order kept


async def _full_call(repos: Repositories) -> tuple[str, r.CallRecord]:
    """An account with a key, an agent, a number and a call with every field set."""
    key_id = "nxf_" + os.urandom(8).hex()
    account = await repos.accounts.create_with_key(
        name="t",
        key_id=key_id,
        secret_hash="0" * 64,
        secret_encrypted="x",
        max_concurrent_calls=None,
    )
    created = await repos.calls.create_reserving_slot(
        NewCall(
            account_id=account.account_id,
            agent_id="agent_0123456789abcdef",
            from_number="+15005550001",
            to_number="+15005550006",
            voicemail_action="leave_message",
            voicemail_message="Héllo — call us back 👋",
            dynamic_vars={"zeta": "last", "alpha": 1, "nested": {"b": [1, 2.5, None], "a": True}},
            metadata={"z": 1, "a": "ü", "sql": "'; DROP TABLE calls; --"},
            prompt="Say {hi}",
            campaign_id="cmp_0123",
        ),
        default_limit=10,
    )
    assert created is not None
    started = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    await repos.calls.update_status(
        created.call_id, "in-progress", answered_at=started, amd_result="human"
    )
    await repos.calls.finish_call(
        created.call_id,
        "completed",
        "customer_hangup",
        ended_at=started + timedelta(seconds=61.5),
        duration_seconds=61.5,
        voicemail_detected=False,
        voicemail_detection_method="transcript",
        transcript=[{"role": "agent", "text": "Hi", "t": 0.25}],
        recording_path="/tmp/x.wav",
        recording_duration_seconds=60.25,
        call_summary="Booked.",
        caller_sentiment="positive",
        call_successful=True,
        extracted_data={"date": "2024-03-01", "count": 3},
        latency={"p50_ms": 410.5, "turns": 4},
        twilio_error=None,
    )
    record = await repos.calls.get(created.call_id, account.account_id)
    assert record is not None
    return key_id, record


async def test_read_row_returns_what_sqlalchemy_returns(db: Database) -> None:
    repos = Repositories.over(db)
    key_id, call = await _full_call(repos)
    agent = await repos.agents.create(call.account_id, {"name": "A", "voice": {"z": 1, "a": 2}})
    number = "+1500" + os.urandom(4).hex()[:7].translate(str.maketrans("abcdef", "123456"))
    await repos.phone_numbers.create(
        phone_number=number,
        account_id=call.account_id,
        agent_id=agent.agent_id,
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token_encrypted="enc",
        twilio_number_sid=None,
    )
    cases: list[tuple[sa.Select[Any], dict[str, Any]]] = [
        (r._GET_OWN_CALL, {"p_call_id": call.call_id, "p_account_id": call.account_id}),
        (r._GET_CALL, {"p_call_id": call.call_id}),
        (r._GET_CALL_BY_REF, {"p_ref": call.call_ref}),
        (r._GET_KEY, {"p_key_id": key_id}),
        (r._GET_AGENT, {"p_agent_id": agent.agent_id}),
        (r._GET_NUMBER, {"p_number": number}),
        # no row
        (r._GET_OWN_CALL, {"p_call_id": call.call_id, "p_account_id": "acct_other"}),
        (r._GET_KEY, {"p_key_id": "nxf_missing"}),
        # a LIMIT with a default parameter, a join and labels
        (r._AGENT_WITH_FIRST_NUMBER, {"p_agent_id": agent.agent_id}),
    ]
    for _ in range(2):  # first use learns the columns; the second runs the cached statement
        for stmt, params in cases:
            _assert_same(await db.read_row(stmt, params), await _sqlalchemy_row(db, stmt, params))
    row = await db.read_row(r._GET_CALL, {"p_call_id": call.call_id})
    assert row is not None
    assert r._call(row) == call
    assert row["answered_at"] == datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    assert list(row["metadata"]) == ["z", "a", "sql"]
    assert row["call_successful"] is True and row["voicemail_detected"] is False
    assert row["twilio_error"] is None and row["latency"] == {"p50_ms": 410.5, "turns": 4}


async def test_read_row_sees_a_write_at_once(db: Database) -> None:
    repos = Repositories.over(db)
    _, call = await _full_call(repos)
    await repos.calls.update_call(call.call_id, call_summary="changed")
    again = await repos.calls.get(call.call_id, call.account_id)
    assert again is not None and again.call_summary == "changed"
    assert await repos.calls.delete(call.call_id, call.account_id) is not None
    assert await repos.calls.get(call.call_id) is None


# --- PostgreSQL: the raw asyncpg pool -----------------------------------------------------


def _point_pool(db: Database) -> Any:
    pool = db._pg_point
    assert pool is not None
    return pool


async def _backend_pids(db: Database) -> list[int]:
    return [conn.get_server_pid() for _, conn in _point_pool(db)._idle]


@pytest.mark.postgres
async def test_pg_reads_share_a_bounded_pool(pg_db: Database) -> None:
    repos = Repositories.over(pg_db)
    _, call = await _full_call(repos)
    results = await asyncio.gather(*(repos.calls.get(call.call_id) for _ in range(50)))
    assert all(result == call for result in results)
    assert len(_point_pool(pg_db)._idle) == 1  # pool_size=2: one point-read connection


@pytest.mark.postgres
async def test_pg_read_after_the_server_dropped_an_idle_connection_opens_a_new_one(
    pg_db: Database,
) -> None:
    repos = Repositories.over(pg_db)
    _, call = await _full_call(repos)
    assert await repos.calls.get(call.call_id) == call
    (pid,) = await _backend_pids(pg_db)

    def kill(conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    await pg_db.write(kill)
    await asyncio.sleep(0.2)
    assert await repos.calls.get(call.call_id) == call  # on a new connection
    assert await _backend_pids(pg_db) != [pid]


@pytest.mark.postgres
async def test_pg_server_errors_raise_as_sqlalchemy_does_and_keep_the_pool(
    pg_db: Database,
) -> None:
    missing = sa.Table("no_such_table", sa.MetaData(), sa.Column("x", sa.Integer))
    stmt = sa.select(missing).where(missing.c.x == sa.bindparam("p_x"))
    with pytest.raises(sa.exc.DatabaseError) as caught:
        await pg_db.read_row(stmt, {"p_x": 1})
    with pytest.raises(sa.exc.DBAPIError):  # what SQLAlchemy's path raises for the same read
        await _sqlalchemy_row(pg_db, stmt, {"p_x": 1})
    assert "no_such_table" in str(caught.value)
    assert len(_point_pool(pg_db)._idle) == 1  # the connection itself is fine: kept
    repos = Repositories.over(pg_db)
    _, call = await _full_call(repos)
    assert await repos.calls.get(call.call_id) == call


@pytest.mark.postgres
async def test_pg_unreachable_server_raises_operational_error(pg_db: Database) -> None:
    pool = _point_pool(pg_db)
    pool._drop_idle()
    pool._connect_kwargs = {**pool._connect_kwargs, "port": 1, "timeout": 2}
    with pytest.raises(sa.exc.OperationalError):
        await pg_db.read_row(r._GET_CALL, {"p_call_id": "CA0"})


@pytest.mark.postgres
async def test_pg_cancelled_read_drops_its_connection(pg_db: Database) -> None:
    slow = sa.select(sa.func.pg_sleep(sa.bindparam("p_s", type_=sa.Float)).label("slept"))
    task = asyncio.create_task(pg_db.read_row(slow, {"p_s": 5.0}))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _point_pool(pg_db)._idle == []
    row = await pg_db.read_row(slow, {"p_s": 0.0})
    assert row is not None and list(row) == ["slept"]


@pytest.mark.postgres
async def test_pg_dispose_closes_the_point_connections(postgres_url: str) -> None:
    db = Database(postgres_url)
    await db.read_row(r._GET_CALL, {"p_call_id": "CA0"})
    conns = [conn for _, conn in _point_pool(db)._idle]
    assert conns
    await db.dispose()
    assert all(conn.is_closed() for conn in conns)


@pytest.mark.postgres
async def test_pg_connection_in_use_at_dispose_is_closed_after_its_read(
    pg_db: Database,
) -> None:
    slow = sa.select(sa.func.pg_sleep(sa.bindparam("p_s", type_=sa.Float)).label("slept"))
    task = asyncio.create_task(pg_db.read_row(slow, {"p_s": 0.5}))
    await asyncio.sleep(0.2)
    await pg_db.dispose()
    assert await task == {"slept": None}
    assert _point_pool(pg_db)._idle == []
    # Like the engine after dispose(): a later read opens a new connection.
    assert await pg_db.read_row(r._GET_CALL, {"p_call_id": "CA0"}) is None


@pytest.mark.postgres
async def test_pg_statement_without_plain_parameters_is_refused(pg_db: Database) -> None:
    stmt = sa.select(calls.c.id).where(calls.c.call_id.in_(sa.bindparam("p_ids", expanding=True)))
    with pytest.raises(sa.exc.InvalidRequestError, match="full execution path"):
        await pg_db.read_row(stmt, {"p_ids": ["a"]})


class _DroppedConnection:
    """An idle connection the server dropped without the client noticing yet."""

    def __init__(self) -> None:
        self.terminated = False

    def is_closed(self) -> bool:
        return self.terminated

    async def fetchrow(self, *_args: Any) -> Any:
        import asyncpg

        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

    def terminate(self) -> None:
        self.terminated = True


@pytest.mark.postgres
async def test_pg_read_on_a_dropped_connection_is_retried_on_a_new_one(
    pg_db: Database,
) -> None:
    repos = Repositories.over(pg_db)
    _, call = await _full_call(repos)
    assert await repos.calls.get(call.call_id) == call
    pool = _point_pool(pg_db)
    (live,) = pool._idle
    dropped = _DroppedConnection()
    pool._idle = [live, (live[0], dropped)]  # the dropped one is used first
    assert await repos.calls.get(call.call_id) == call
    assert dropped.terminated
    assert live[1].is_closed()  # idle since before the drop: closed too
    (fresh,) = pool._idle
    assert fresh[1] is not live[1] and not fresh[1].is_closed()
