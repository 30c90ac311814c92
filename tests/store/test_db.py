"""``Database.read(point=True)``: on SQLite it runs on the event loop, unless the file is locked."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from nixflex_engine.store.db import Database

pytestmark = pytest.mark.asyncio


async def _db_with_row(path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}")

    def create(conn: sa.Connection) -> None:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))

    await db.write(create)
    return db


def _reader(seen: list[int]) -> object:
    def work(conn: sa.Connection) -> list[int]:
        seen.append(threading.get_ident())
        return [int(x) for x in conn.execute(sa.text("SELECT x FROM t ORDER BY x")).scalars()]

    return work


async def test_point_read_runs_on_the_loop_thread_other_reads_do_not(tmp_path: Path) -> None:
    db = await _db_with_row(tmp_path / "a.db")
    try:
        seen: list[int] = []
        assert await db.read(_reader(seen), point=True) == [1]  # type: ignore[arg-type]
        assert await db.read(_reader(seen)) == [1]  # type: ignore[arg-type]
        assert seen[0] == threading.get_ident()
        assert seen[1] != threading.get_ident()
    finally:
        await db.dispose()


async def test_point_read_moves_to_a_thread_when_the_file_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    # Another process's connection in exclusive locking mode: WAL readers get SQLITE_BUSY.
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (2)")
    holder.execute("COMMIT")  # the exclusive lock stays held in this locking mode
    db = Database(f"sqlite+aiosqlite:///{path}")

    def release() -> None:
        holder.execute("PRAGMA locking_mode=NORMAL")
        holder.execute("SELECT x FROM t").fetchall()  # the next access drops the lock

    try:
        seen: list[int] = []
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, lambda: threading.Thread(target=release).start())
        started = time.monotonic()
        result = await db.read(_reader(seen), point=True)  # type: ignore[arg-type]
        assert result == [1, 2]  # waited for the lock, in a thread, and saw the commit
        # Not a speed check: a loop held by the lock (the full 30 s busy timeout) would also
        # hold the release scheduled on it; 10 s tells the two apart.
        assert time.monotonic() - started < 10
        assert seen[-1] != threading.get_ident()
        # Unlocked again: the next point read is back on the loop.
        assert await db.read(_reader(seen), point=True) == [1, 2]  # type: ignore[arg-type]
        assert seen[-1] == threading.get_ident()
    finally:
        holder.close()
        await db.dispose()


async def test_point_read_errors_other_than_busy_propagate(tmp_path: Path) -> None:
    db = await _db_with_row(tmp_path / "c.db")

    def bad(conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT nope FROM t"))

    try:
        with pytest.raises(sa.exc.OperationalError, match="no such column"):
            await db.read(bad, point=True)
    finally:
        await db.dispose()
