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
  correctness comes from the statements themselves (conditional UPDATEs, row locks). The
  exception is :meth:`Database.read_row` (one row by a unique key, the API's hottest reads):
  it runs its statement — compiled once by SQLAlchemy — straight on a raw asyncpg connection
  of a small pool of its own (:class:`_PgPointReads`), with SQLAlchemy's own result
  processors, so the row is the one ``conn.execute(stmt).mappings().first()`` returns, types
  included. The async engine's connection checkout and return, execution context and
  greenlet cost about five times the query itself (278 vs 51 µs of CPU per read; measured:
  ``GET /v1/calls/{id}`` 0.53 → 0.24 ms of server CPU, 1.6-1.9k → 3.9-4.1k req/s). It reads
  in autocommit, like :meth:`Database.read`, so it sees every committed write at once (no
  cache: nodes sharing the database never see a stale row).

Migrations are Alembic revisions in ``store/migrations``; :func:`upgrade` applies them (the
server does it on start-up, ``nixflex-engine db upgrade`` does it by hand). On PostgreSQL an
advisory lock makes concurrent start-ups of several nodes safe.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
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
        "_pg_point",
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
        self._pg_point: _PgPointReads | None = None
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
            self._pg_point = _PgPointReads(
                self._async_engine.dialect, parsed, size=max(1, pool_size // 2)
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
        docstring); elsewhere it changes nothing (a single-row lookup is faster on PostgreSQL
        through :meth:`read_row`).
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

    async def read_row(
        self, stmt: sa.Select[Any], params: Mapping[str, Any]
    ) -> Mapping[Any, Any] | None:
        """The first row of ``stmt`` (a point read: one row by a unique key) as a mapping by
        column name, or None — what ``conn.execute(stmt, params).mappings().first()`` gives
        inside :meth:`read` with ``point=True``, types included.

        On PostgreSQL it skips the async engine (see the module docstring); ``stmt`` is
        compiled once and kept, so pass a statement built once (a module constant) with bound
        parameters, not one built per call.
        """
        if self._pg_point is not None:
            return await self._pg_point.fetch_row(stmt, params)

        def work(conn: sa.Connection) -> Mapping[Any, Any] | None:
            return conn.execute(stmt, params).mappings().first()

        return await self.read(work, point=True)

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
        if self._pg_point is not None:
            await self._pg_point.close()
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


@dataclass(slots=True, frozen=True)
class _PointStatement:
    """A statement compiled for :class:`_PgPointReads`."""

    stmt: sa.Select[Any]  # kept so its id() is not reused while cached
    sql: str
    compiled: sa.engine.Compiled
    #: Parameter names in ``$n`` order, each with SQLAlchemy's bind processor (or None).
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    #: Column names and result processors, learnt from the first execution (column types).
    names: tuple[str, ...] | None = None
    processors: tuple[tuple[int, Callable[[Any], Any]], ...] = ()


class _PgPointReads:
    """Point reads on PostgreSQL on raw asyncpg connections (see the module docstring).

    A small pool of its own: at most ``size`` connections, reused most recently released
    first, each used by one read at a time and closed after ``recycle_s``. The connections run
    in autocommit and only ever run these SELECTs, so they carry no transaction or session
    state between reads and need no reset. A read that fails on a connection the server has
    dropped (a restart, an idle timeout) is retried once on a new connection — a SELECT is
    safe to repeat; any other failure closes the connection and propagates, wrapped as
    SQLAlchemy wraps driver errors (:class:`sqlalchemy.exc.DBAPIError`).
    """

    __slots__ = (
        "_connect_kwargs",
        "_dialect",
        "_disposed_at",
        "_idle",
        "_recycle_s",
        "_slots",
        "_statements",
    )

    MAX_STATEMENTS = 256

    def __init__(
        self, dialect: sa.Dialect, url: sa.URL, *, size: int, recycle_s: float = 1800.0
    ) -> None:
        self._dialect = dialect
        _, kwargs = dialect.create_connect_args(url)
        # Options of SQLAlchemy's adapter, not of asyncpg.connect.
        for name in ("prepared_statement_cache_size", "prepared_statement_name_func"):
            kwargs.pop(name, None)
        self._connect_kwargs = kwargs
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[float, Any]] = []  # (opened at, asyncpg connection)
        self._recycle_s = recycle_s
        self._statements: dict[int, _PointStatement] = {}
        #: Connections opened before this (monotonic) time are closed when they come back.
        self._disposed_at = -1.0

    async def fetch_row(
        self, stmt: sa.Select[Any], params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        point = self._statements.get(id(stmt))
        if point is None or point.stmt is not stmt:
            point = self._compile(stmt)
        args = _bind_args(point, params)
        async with self._slots:
            try:
                opened, conn, reused = await self._checkout()
            except Exception as exc:
                raise _wrap(point.sql, args, exc) from exc
            try:
                try:
                    record, point = await self._fetch(conn, point, args)
                except Exception as exc:
                    if not (reused and _connection_lost(conn, exc)):
                        raise
                    # A dropped connection (server restart, idle timeout): the others idle
                    # since before it may be gone too. One retry, on a new connection.
                    _terminate(conn)
                    self._drop_idle()
                    opened, conn = await self._open()
                    record, point = await self._fetch(conn, point, args)
            except BaseException as exc:
                if _server_error(exc) and not conn.is_closed():
                    self._checkin(opened, conn)  # PostgreSQL refused the query: conn is idle
                else:
                    _terminate(conn)  # a cancelled or broken read: its state is unknown
                if isinstance(exc, Exception):
                    raise _wrap(point.sql, args, exc) from exc
                raise
            self._checkin(opened, conn)
        if record is None:
            return None
        values = list(record.values())
        for index, process in point.processors:
            values[index] = process(values[index])
        assert point.names is not None
        return dict(zip(point.names, values, strict=True))

    async def _fetch(
        self, conn: Any, point: _PointStatement, args: list[Any]
    ) -> tuple[Any, _PointStatement]:
        if point.names is None:
            point = await self._learn_columns(conn, point)
        return await conn.fetchrow(point.sql, *args), point

    def _compile(self, stmt: sa.Select[Any]) -> _PointStatement:
        compiled = stmt.compile(dialect=self._dialect)
        if (
            compiled.positiontup is None
            or compiled.escaped_bind_names
            or compiled.literal_execute_params
            or compiled.post_compile_params
        ):
            raise sa.exc.InvalidRequestError(
                "read_row: the statement needs SQLAlchemy's full execution path"
            )
        dialect = self._dialect
        binds = tuple(
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup
        )
        point = _PointStatement(stmt, compiled.string, compiled, binds)
        if len(self._statements) >= self.MAX_STATEMENTS:
            self._statements.clear()
        self._statements[id(stmt)] = point
        return point

    async def _learn_columns(self, conn: Any, point: _PointStatement) -> _PointStatement:
        """Column names and result processors (which depend on the column types PostgreSQL
        reports, as in SQLAlchemy's cursor result)."""
        attributes = (await conn.prepare(point.sql)).get_attributes()
        columns = list(point.stmt.selected_columns)
        names = tuple(attribute.name for attribute in attributes)
        if len(columns) != len(attributes) or len(set(names)) != len(names):
            raise sa.exc.InvalidRequestError(
                "read_row: the result columns must match the statement's, with unique names"
            )
        dialect = self._dialect
        processors = []
        for index, (column, attribute) in enumerate(zip(columns, attributes, strict=True)):
            process = column.type.dialect_impl(dialect).result_processor(
                dialect, attribute.type.oid
            )
            if process is not None:
                processors.append((index, process))
        learnt = _PointStatement(
            point.stmt,
            point.sql,
            point.compiled,
            point.binds,
            names,
            tuple(processors),
        )
        self._statements[id(point.stmt)] = learnt
        return learnt

    async def _checkout(self) -> tuple[float, Any, bool]:
        """(opened at, connection, reused): the most recently used idle one, or a new one."""
        while self._idle:
            opened, conn = self._idle.pop()
            if conn.is_closed():
                continue
            if time.monotonic() - opened < self._recycle_s:
                return opened, conn, True
            await _close(conn)
        opened, conn = await self._open()
        return opened, conn, False

    async def _open(self) -> tuple[float, Any]:
        conn = await asyncpg.connect(**self._connect_kwargs)
        try:
            # SQLAlchemy's own JSON/JSONB decoding, as on its connections.
            adapted = _DriverConnection(conn)
            await self._dialect.setup_asyncpg_json_codec(adapted)  # type: ignore[attr-defined]
            await self._dialect.setup_asyncpg_jsonb_codec(adapted)  # type: ignore[attr-defined]
        except BaseException:
            _terminate(conn)
            raise
        return time.monotonic(), conn

    def _checkin(self, opened: float, conn: Any) -> None:
        if opened <= self._disposed_at or conn.is_closed():
            _terminate(conn)
        else:
            self._idle.append((opened, conn))

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for _, conn in idle:
            _terminate(conn)

    async def close(self) -> None:
        """Close the idle connections; one in use is closed when its read ends. Like the
        engine after ``dispose()``, later reads open new connections."""
        self._disposed_at = time.monotonic()
        idle, self._idle = self._idle, []
        for _, conn in idle:
            await _close(conn)


class _DriverConnection:
    """What SQLAlchemy's asyncpg codec set-up expects: the driver connection as
    ``_connection``."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Any) -> None:
        self._connection = connection


def _bind_args(point: _PointStatement, params: Mapping[str, Any]) -> list[Any]:
    values = point.compiled.construct_params(params)
    assert values is not None
    args = []
    for name, process in point.binds:
        value = values[name]
        args.append(value if process is None else process(value))
    return args


def _connection_lost(conn: Any, exc: Exception) -> bool:
    return conn.is_closed() or isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | OSError
    )


def _server_error(exc: BaseException) -> bool:
    """An error PostgreSQL reported for the statement (the connection is fine and idle)."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError
    )


def _wrap(sql: str, args: list[Any], exc: Exception) -> Exception:
    """A driver error as SQLAlchemy would raise it: a connection failure as
    ``OperationalError``, an error PostgreSQL reported as ``DatabaseError``."""
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return exc
    if _server_error(exc):
        return sa.exc.DatabaseError(sql, args, exc)
    return sa.exc.OperationalError(sql, args, exc)


def _terminate(conn: Any) -> None:
    if not conn.is_closed():
        conn.terminate()


async def _close(conn: Any) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except Exception:
        _terminate(conn)


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
