"""The database handle: transactions as functions, and migrations.

Repositories hand :class:`Database` a plain function over a *synchronous* SQLAlchemy
``Connection``; :meth:`Database.read` / :meth:`Database.write` run it in one transaction and
return its result::

    def work(conn: sa.Connection) -> int:
        return conn.execute(sa.select(sa.func.count()).select_from(calls)).scalar_one()

    count = await db.read(work)

Why functions: the cost of a database call from asyncio is the hops, not the SQL.

* **SQLite**: a sync ``pysqlite`` engine; each transaction is *one* hop to a worker thread —
  a single writer thread (SQLite allows one writer; queueing in-process is cheaper than
  spinning on ``SQLITE_BUSY``) whose transactions start with ``BEGIN IMMEDIATE`` (so other
  processes' writers wait for each other through the busy timeout), and a small pool of
  autocommit reader threads (WAL lets reads run beside the write). The event loop never
  waits on SQLite's locks. The exception is a **point read** (``read(work, point=True)``: a
  handful of lookups by a unique key, tens of microseconds of SQLite): it runs right on the
  event loop, on a connection of its own whose busy timeout is
  :data:`INLINE_BUSY_TIMEOUT_MS`, because handing it to a thread and back costs ten times
  more CPU than the query (measured: ``GET /v1/calls/{id}`` 0.57 → 0.30 ms of server CPU). If
  that connection finds the database locked (a WAL reader rarely can: another process in
  exclusive locking mode, a recovery), the read is retried in a reader thread, which waits
  for the lock with the full busy timeout — so the loop is never held longer than that.
* **PostgreSQL**: the asyncpg async engine; the function runs through ``run_sync`` (greenlet),
  so each statement is a native await. Transactions run concurrently under READ COMMITTED and
  correctness comes from the statements themselves (conditional UPDATEs, row locks).

Migrations are Alembic revisions in ``store/migrations``; :func:`upgrade` applies them (the
server does it on start-up, ``nixflex-engine db upgrade`` does it by hand). On PostgreSQL an
advisory lock makes concurrent start-ups of several nodes safe.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["Database", "upgrade"]

T = TypeVar("T")
Work = Callable[[sa.Connection], T]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 7_412_093_001  # arbitrary constant key for pg_advisory_xact_lock
_SQLITE_READERS = 2
#: How long a point read on the event loop may wait for a SQLite lock before it moves to a
#: reader thread (which waits as long as needed).
INLINE_BUSY_TIMEOUT_MS = 20


class Database:
    """One engine plus the transaction discipline described in the module docstring."""

    __slots__ = (
        "_async_engine",
        "_async_read_engine",
        "_inline_engine",
        "_read_engine",
        "_readers",
        "_sync_engine",
        "_writer",
        "is_sqlite",
        "url",
    )

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._sync_engine: sa.Engine | None = None
        self._read_engine: sa.Engine | None = None
        self._inline_engine: sa.Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._async_read_engine: AsyncEngine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            sync_url = parsed.set(drivername="sqlite+pysqlite")
            connect_args = {"timeout": 30, "check_same_thread": False}
            # Writes: explicit BEGIN ... COMMIT on the one writer connection.
            self._sync_engine = sa.create_engine(
                sync_url, echo=echo, connect_args=connect_args, pool_size=1, max_overflow=0
            )
            event.listen(self._sync_engine, "connect", _sqlite_on_connect)
            event.listen(self._sync_engine, "begin", _sqlite_begin)
            # Reads: autocommit, one implicit transaction per statement (no BEGIN round).
            self._read_engine = sa.create_engine(
                sync_url,
                echo=echo,
                connect_args=connect_args,
                pool_size=_SQLITE_READERS,
                max_overflow=0,
            )
            event.listen(self._read_engine, "connect", _sqlite_on_connect)
            # Point reads on the event loop: autocommit too, and a short busy timeout.
            self._inline_engine = sa.create_engine(
                sync_url,
                echo=echo,
                connect_args={**connect_args, "timeout": INLINE_BUSY_TIMEOUT_MS / 1000},
                pool_size=1,
                max_overflow=4,
            )
            event.listen(self._inline_engine, "connect", _sqlite_on_connect_inline)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
            self._readers = ThreadPoolExecutor(_SQLITE_READERS, thread_name_prefix="sqlite-reader")
        else:
            self._async_engine = create_async_engine(
                url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=1800,
            )
            # Reads run in autocommit: no BEGIN/ROLLBACK round trips around a SELECT.
            self._async_read_engine = self._async_engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )

    @property
    def dialect_name(self) -> str:
        engine = self._sync_engine or self._async_engine
        assert engine is not None
        return engine.dialect.name

    async def read(self, work: Work[T], *, point: bool = False) -> T:
        """Run ``work(conn)`` in a transaction that is rolled back (reads only).

        ``point=True`` promises that ``work`` is a few lookups by a unique key (no scan, no
        aggregate): on SQLite it then runs on the event loop itself (see the module
        docstring); elsewhere it changes nothing.
        """
        if self._sync_engine is not None:
            assert self._readers is not None
            if point:
                assert self._inline_engine is not None
                try:
                    with self._inline_engine.connect() as conn:
                        return work(conn)
                except sa.exc.OperationalError as exc:
                    if not _sqlite_busy(exc):
                        raise
                # Locked: wait for it in a thread, not on the loop.
            return await _in_thread(self._readers, functools.partial(self._sync_read, work))
        assert self._async_read_engine is not None
        async with self._async_read_engine.connect() as conn:
            return await conn.run_sync(work)

    async def write(self, work: Work[T], *, single_statement: bool = False) -> T:
        """Run ``work(conn)`` in a transaction, committed if it returns, rolled back if it
        raises (the exception propagates).

        ``single_statement=True`` promises that ``work`` runs one statement (atomic by
        itself); on PostgreSQL it then runs in autocommit, saving the BEGIN and COMMIT round
        trips.
        """
        if self._sync_engine is not None:
            assert self._writer is not None
            return await _in_thread(self._writer, functools.partial(self._sync_write, work))
        if single_statement:
            assert self._async_read_engine is not None
            async with self._async_read_engine.connect() as conn:
                return await conn.run_sync(work)
        assert self._async_engine is not None
        async with self._async_engine.begin() as conn:
            return await conn.run_sync(work)

    def _sync_read(self, work: Work[T]) -> T:
        assert self._read_engine is not None
        with self._read_engine.connect() as conn:
            return work(conn)

    def _sync_write(self, work: Work[T]) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            return work(conn)

    async def ping(self) -> None:
        await self.read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar_one())

    async def dispose(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.dispose()
        if self._sync_engine is not None:
            for pool in (self._writer, self._readers):
                if pool is not None:
                    pool.shutdown(wait=True)
            self._sync_engine.dispose()
            for engine in (self._read_engine, self._inline_engine):
                if engine is not None:
                    engine.dispose()


async def _in_thread(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn)


def _sqlite_on_connect(
    dbapi_connection: Any, _record: Any, *, busy_timeout_ms: int = 30_000
) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (_sqlite_begin),
    # so every transaction -- reads included -- is a real one with a consistent snapshot.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.close()


def _sqlite_on_connect_inline(dbapi_connection: Any, record: Any) -> None:
    # The short timeout from the start (``connect_args``): even setting up the connection
    # must not hold the event loop on a lock.
    _sqlite_on_connect(dbapi_connection, record, busy_timeout_ms=INLINE_BUSY_TIMEOUT_MS)


def _sqlite_busy(exc: sa.exc.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED, as the sqlite3 module reports them."""
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


def _sqlite_begin(conn: sa.Connection) -> None:
    # IMMEDIATE: take the write lock up front, so a transaction that reads before it writes
    # waits (busy_timeout) for another *process's* writer instead of failing with
    # SQLITE_BUSY when its snapshot turns stale. In-process, writes are already serialised by
    # the single writer thread, so this costs nothing there. Straight to the driver: a full
    # SQLAlchemy execution costs more than the BEGIN itself.
    conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _upgrade_sync(revision: str, connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` in one transaction."""
    await db.write(functools.partial(_upgrade_sync, revision))
