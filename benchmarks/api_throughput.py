"""HTTP API throughput: ``POST /v1/calls/outbound`` and ``GET /v1/calls/{id}``.

Starts the engine in a separate process (uvicorn, one worker, an instant in-memory dialer so
the figures measure the API and the database, not a carrier), prepares an account, an agent
and a number directly in the database, then drives the server with keep-alive connections
from this process and prints requests/s and latency percentiles per backend.

Targets (issue 4, 2-core machine): POST >= 500 req/s with p99 < 50 ms; GET >= 2000 req/s;
on SQLite and on PostgreSQL.

Usage::

    python benchmarks/api_throughput.py                      # SQLite, + PostgreSQL if
                                                             # NIXFLEX_TEST_PG_URL is set
    python benchmarks/api_throughput.py --seconds 10 --connections 32 --backend sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from nixflex_engine.api.fields import agent_defaults  # noqa: E402
from nixflex_engine.api.keys import create_account_key  # noqa: E402
from nixflex_engine.crypto import Crypto  # noqa: E402
from nixflex_engine.store.db import Database, upgrade  # noqa: E402
from nixflex_engine.store.repositories import Repositories  # noqa: E402

TARGETS = {"post": (500.0, 50.0), "get": (2000.0, None)}


# --- the server process ---------------------------------------------------------------------


def serve(port: int) -> None:
    """Run the engine (settings from the environment) with an instant dialer."""
    import logging

    import uvicorn

    from nixflex_engine.calls.dialer import InstantDialer
    from nixflex_engine.config import Settings
    from nixflex_engine.server import create_app

    logging.getLogger("alembic").setLevel(logging.WARNING)
    app = create_app(Settings(), dialer=InstantDialer())  # type: ignore[call-arg]
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


# --- a minimal keep-alive HTTP/1.1 client (the load generator must be cheaper than the server)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def build_request(method: str, path: str, auth: str, body: bytes | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {auth}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_seconds: float = 0.0

    @property
    def server_cpu_ms_per_request(self) -> float:
        return self.server_cpu_seconds * 1000 / max(self.requests, 1)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def drive(
    ports: list[int], name: str, make: list[bytes], seconds: float, connections: int, expect: int
) -> tuple[Result, list[bytes]]:
    """``connections`` keep-alive connections, spread round-robin over the server ``ports``."""
    conns = [await Connection.open(ports[i % len(ports)]) for i in range(connections)]
    latencies: list[float] = []
    bodies: list[bytes] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int, conn: Connection) -> None:
        nonlocal errors
        n = i
        while time.perf_counter() < stop:
            raw = make[n % len(make)]
            n += connections
            t0 = time.perf_counter()
            status, body = await conn.request(raw)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != expect:
                errors += 1
                if errors < 3:
                    print(f"  unexpected {status}: {body[:200]!r}", file=sys.stderr)
            elif len(bodies) < 5000:
                bodies.append(body)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return Result(name, len(latencies), errors, elapsed, latencies), bodies


# --- setup and run --------------------------------------------------------------------------


async def prepare(database_url: str, key: str) -> tuple[str, str]:
    """Account (huge slot limit), agent and number, written straight to the database."""
    db = Database(database_url)
    try:
        await upgrade(db)
        repos = Repositories.over(db)
        crypto = Crypto(key.encode())
        created = await create_account_key(repos, crypto, name="bench", max_concurrent_calls=10**9)
        agent = await repos.agents.create(
            created.account_id, {**agent_defaults("claude-haiku-4-5"), "name": "bench"}
        )
        await repos.phone_numbers.create(
            phone_number="+1500" + "".join(secrets.choice("0123456789") for _ in range(7)),
            account_id=created.account_id,
            agent_id=agent.agent_id,
            twilio_account_sid="AC" + "0" * 32,
            twilio_auth_token_encrypted=crypto.encrypt("token"),
            twilio_number_sid=None,
        )
        return f"{created.key_id}:{created.key_secret}", agent.agent_id
    finally:
        await db.dispose()


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(port: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError("server exited")
        try:
            conn = await Connection.open(port)
            status, _ = await conn.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


async def run_backend(
    label: str, database_url: str, seconds: float, connections: int, servers: int
) -> list[Result]:
    """Start ``servers`` engine processes on one database (nodes behind a load balancer)."""
    key = Fernet.generate_key().decode()
    auth, agent_id = await prepare(database_url, key)
    ports = [free_port() for _ in range(servers)]
    env = {
        **os.environ,
        "NIXFLEX_DATABASE_URL": database_url,
        "NIXFLEX_ENCRYPTION_KEY": key,
        "NIXFLEX_RATE_LIMIT_READS_PER_MINUTE": str(10**9),
        "NIXFLEX_RATE_LIMIT_WRITES_PER_MINUTE": str(10**9),
        "NIXFLEX_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT / "src"),
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(port), env=env
        )
        for port in ports
    ]
    if servers > 1:
        label = f"{label} x{servers}"
    try:
        for port, proc in zip(ports, procs, strict=True):
            await wait_ready(port, proc)
        post_body = json.dumps(
            {
                "agent_id": agent_id,
                "to_number": "+447386172392",
                "dynamic_vars": {"patient_name": "Sarah"},
                "metadata": {"internal_lead_id": "lead_abc123"},
            }
        ).encode()
        post = build_request("POST", "/v1/calls/outbound", auth, post_body)
        # warm-up
        await drive(ports, "warmup", [post], 1.0, connections, 201)
        server = [psutil.Process(proc.pid) for proc in procs]
        cpu0 = _cpu(server)
        post_result, bodies = await drive(
            ports, f"{label} POST /v1/calls/outbound", [post], seconds, connections, 201
        )
        post_result.server_cpu_seconds = _cpu(server) - cpu0
        call_ids = [json.loads(b)["call_id"] for b in bodies[:1000]]
        gets = [build_request("GET", f"/v1/calls/{cid}", auth) for cid in call_ids]
        cpu0 = _cpu(server)
        get_result, _ = await drive(
            ports, f"{label} GET /v1/calls/{{id}}", gets, seconds, connections, 200
        )
        get_result.server_cpu_seconds = _cpu(server) - cpu0
        return [post_result, get_result]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()


async def pg_database(base_url: str, name: str, drop: bool = False) -> str:
    import asyncpg

    url = make_url(base_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


def report(results: list[Result]) -> None:
    print(
        f"{'benchmark':40} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'err':>4} "
        f"{'srv CPU ms/req':>15}  target"
    )
    for r in results:
        kind = "post" if "POST" in r.name else "get"
        rps_target, p99_target = TARGETS[kind]
        ok = (
            r.rps >= rps_target
            and (p99_target is None or r.pct(0.99) < p99_target)
            and not r.errors
        )
        target = f">= {rps_target:.0f} req/s" + (
            f", p99 < {p99_target:.0f} ms" if p99_target else ""
        )
        print(
            f"{r.name:40} {r.rps:7.0f} {r.pct(0.5):7.2f} {r.pct(0.99):7.2f} {r.errors:4d} "
            f"{r.server_cpu_ms_per_request:15.3f}  {target}: {'MET' if ok else 'MISSED'}"
        )
    print(f"load average during the run: {os.getloadavg()}, CPUs: {os.cpu_count()}")


async def main_async(args: argparse.Namespace) -> None:
    results: list[Result] = []
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            results += await run_backend("sqlite", url, args.seconds, args.connections, 1)
    pg = args.pg_url or os.environ.get("NIXFLEX_TEST_PG_URL")
    if args.backend in ("postgres", "both") and pg:
        name = f"nixflex_bench_{os.getpid()}"
        url = await pg_database(pg, name)
        try:
            for servers in sorted({1, args.pg_servers}):
                results += await run_backend(
                    "postgres", url, args.seconds, args.connections, servers
                )
        finally:
            await pg_database(pg, name, drop=True)
    elif args.backend == "postgres":
        print("no PostgreSQL URL (--pg-url or NIXFLEX_TEST_PG_URL)", file=sys.stderr)
    report(results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="Duration of each phase.")
    parser.add_argument(
        "--connections", type=int, default=8, help="Concurrent keep-alive connections."
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--pg-url", default=None, help="PostgreSQL admin URL (postgresql+asyncpg://...)."
    )
    parser.add_argument(
        "--pg-servers",
        type=int,
        default=2,
        help="Also run PostgreSQL with this many engine processes (nodes) sharing the database.",
    )
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    import uvloop

    uvloop.run(main_async(args))  # a cheaper client loop leaves more CPU to the server


if __name__ == "__main__":
    main()
