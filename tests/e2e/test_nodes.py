"""Two engine processes (``nixflex-engine serve``) sharing PostgreSQL, each with its own public
URL, dialing concurrently through the sandbox carrier in a third process
(``nixflex-engine sandbox``): each call's stream and callbacks go to the node that dialed it,
and the account's concurrency limit holds across both nodes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from .conftest import FINAL

PG_URL = os.environ.get("NIXFLEX_TEST_PG_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(not PG_URL, reason="NIXFLEX_TEST_PG_URL is not set"),
]
ACCOUNT_SID = "AC" + "e" * 32
AUTH_TOKEN = "f" * 32
FROM = "+15550100000"
LIMIT = 3
CALLS = 8
#: The person says hello and hangs up a little later: every call ends the same way, whatever
#: the machine's load does to the conversation's timing.
CALLEE = [{"silence": 200}, {"say": "Hello?"}, {"silence": 2500}, "hangup"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pg(sql: str, database: str = "postgres") -> None:
    import asyncpg

    assert PG_URL is not None
    url = make_url(PG_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test."""
    assert PG_URL is not None
    name = f"nixflex_e2e_nodes_{secrets.token_hex(4)}"
    await _pg(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Procs:
    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, *args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nixflex_engine.cli",
            *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    # terminate synchronously at teardown too (the async stop runs in the test)
    for proc in p.procs:
        if proc.returncode is None:
            proc.kill()


async def _wait_http(url: str, path: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 40
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline:
            assert proc.returncode is None, f"{url} exited"
            try:
                if (await client.get(path)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not start")


def _env(tmp: Path, database_url: str, public: str, sandbox_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEX_")}
    env.update(
        NIXFLEX_ENCRYPTION_KEY="5qY7nY3WqkB5Wq2g0cQk6Vf2V7K4d9XG6k1sJ0mWcZ8=",
        NIXFLEX_VAR_DIR=str(tmp / "var"),
        NIXFLEX_DATABASE_URL=database_url,
        NIXFLEX_RECORDINGS_DIR=str(tmp / "recordings"),
        NIXFLEX_PUBLIC_BASE_URL=public,
        NIXFLEX_TWILIO_API_BASE_URL=sandbox_url,
        NIXFLEX_DEEPGRAM_BASE_URL=sandbox_url,
        NIXFLEX_DEEPGRAM_API_KEY="nodes",
        NIXFLEX_ANTHROPIC_BASE_URL=sandbox_url,
        NIXFLEX_ANTHROPIC_API_KEY="nodes",
        NIXFLEX_LOG_LEVEL="WARNING",
    )
    return env


async def test_two_nodes_share_postgres_and_the_limit(
    tmp_path: Path, database_url: str, procs: Procs
) -> None:
    import asyncpg

    sandbox_port = _free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    nodes = [f"http://127.0.0.1:{_free_port()}" for _ in range(2)]
    scripts = tmp_path / "scripts.json"
    scripts.write_text(
        json.dumps({"default": {"outcome": "answer", "ring_s": 0.5, "callee": CALLEE}})
    )
    base_env = _env(tmp_path, database_url, nodes[0], sandbox_url)
    sandbox = await procs.start(
        "sandbox",
        "--port",
        str(sandbox_port),
        "--scripts",
        str(scripts),
        "--twilio-account",
        f"{ACCOUNT_SID}:{AUTH_TOKEN}",
        "--twilio-number",
        FROM,
        env=base_env,
    )
    upgrade = await procs.start("db", "upgrade", env=base_env)
    assert await upgrade.wait() == 0
    keys = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nixflex_engine.cli",
        "keys",
        "create",
        "--name",
        "nodes",
        "--json",
        "--max-concurrent-calls",
        str(LIMIT),
        env=base_env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await keys.communicate()
    key = json.loads(out)
    headers = {"Authorization": f"Bearer {key['key_id']}:{key['key_secret']}"}
    engines = []
    for node_url in nodes:
        port = node_url.rsplit(":", 1)[1]
        env = _env(tmp_path, database_url, node_url, sandbox_url)
        engines.append(await procs.start("serve", "--port", port, env=env))
    try:
        await _wait_http(sandbox_url, "/sandbox/health", sandbox)
        for url, proc in zip(nodes, engines, strict=True):
            await _wait_http(url, "/healthz", proc)
        async with httpx.AsyncClient(timeout=20) as client:
            r = await client.post(
                nodes[0] + "/v1/agents",
                json={"name": "N", "system_prompt": "Hi.", "welcome_message": "Hi there."},
                headers=headers,
            )
            agent_id = r.json()["agent_id"]
            r = await client.post(
                nodes[1] + "/v1/phone-numbers",
                json={
                    "phone_number": FROM,
                    "agent_id": agent_id,
                    "twilio_account_sid": ACCOUNT_SID,
                    "twilio_auth_token": AUTH_TOKEN,
                },
                headers=headers,
            )
            assert r.status_code == 201, r.text

            db = make_url(database_url)
            conn = await asyncpg.connect(
                host=db.host,
                port=db.port or 5432,
                user=db.username,
                password=db.password,
                database=db.database,
            )
            samples: list[int] = []
            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    held = await conn.fetchval("SELECT count(*) FROM calls WHERE slot_held")
                    samples.append(int(held))
                    await asyncio.sleep(0.02)

            placed: dict[str, str] = {}  # call_id -> node
            refused = 0

            async def place(i: int) -> None:
                nonlocal refused
                node = nodes[i % 2]
                body = {"agent_id": agent_id, "to_number": f"+1555300{i:04d}"}
                deadline = time.monotonic() + 90
                while True:
                    resp = await client.post(
                        node + "/v1/calls/outbound", json=body, headers=headers
                    )
                    if resp.status_code == 201:
                        placed[resp.json()["call_id"]] = node
                        return
                    assert resp.status_code == 429, resp.text
                    assert resp.json()["error"]["code"] == "concurrent_call_limit"
                    refused += 1
                    assert time.monotonic() < deadline, "never got a slot"
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            try:
                await asyncio.gather(*(place(i) for i in range(CALLS)))
            except BaseException:
                sampler.cancel()
                raise
            records: dict[str, dict[str, Any]] = {}
            deadline = time.monotonic() + 90
            while len(records) < CALLS:
                assert time.monotonic() < deadline, "calls did not end"
                for call_id, node in placed.items():
                    if call_id in records:
                        continue
                    rec = (await client.get(f"{node}/v1/calls/{call_id}", headers=headers)).json()
                    if rec["status"] in FINAL:
                        records[call_id] = rec
                await asyncio.sleep(0.3)
            stop.set()
            await sampler
            await conn.close()

            # the limit held across both nodes, and it was reached
            assert samples and max(samples) <= LIMIT, max(samples)
            assert max(samples) == LIMIT and refused > 0
            # both nodes dialed; each call came back to the node that dialed it
            assert set(placed.values()) == set(nodes)
            for call_id, node in placed.items():
                rec = records[call_id]
                assert rec["status"] == "completed" and rec["ended_reason"] == "caller_hangup", rec
                assert rec["transcript"] and rec["transcript"][0]["text"] == "Hello?", rec
                log = (await client.get(f"{sandbox_url}/sandbox/carrier/calls/{call_id}")).json()
                ws = node.replace("http://", "ws://")
                assert log["stream"]["url"] == ws + "/v1/twilio/media"
                assert log["callbacks"], log
                for callback in log["callbacks"]:
                    assert callback["url"].startswith(node + "/v1/twilio/"), callback
                    assert callback["http_status"] == 204, callback
    finally:
        await procs.stop()
