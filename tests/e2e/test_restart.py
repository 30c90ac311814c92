"""An engine killed mid-call (SIGKILL: no shutdown) leaves its calls open; the next engine on the
same database reconciles them with the carrier on start-up."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from nixflex_engine.api.keys import create_account_key
from nixflex_engine.crypto import Crypto
from nixflex_engine.sandbox.callee import Hangup, Say, Silence, UntilAgentSilent
from nixflex_engine.sandbox.carrier import CarrierScript
from nixflex_engine.store.db import Database, upgrade
from nixflex_engine.store.repositories import Repositories

from .conftest import DG_KEY, FROM, engine_settings, start_engine, start_sandbox

ANSWERED = "+15550124001"
RINGING = "+15550124002"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp: Path, url: str, sandbox_url: str) -> dict[str, str]:
    settings = engine_settings(tmp, url, sandbox_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEX_")}
    env.update(
        NIXFLEX_DEV_MODE="true",
        NIXFLEX_VAR_DIR=str(settings.var_dir),
        NIXFLEX_DATABASE_URL=settings.database_url,
        NIXFLEX_RECORDINGS_DIR=str(settings.recordings_dir),
        NIXFLEX_PUBLIC_BASE_URL=url,
        NIXFLEX_TWILIO_API_BASE_URL=sandbox_url,
        NIXFLEX_DEEPGRAM_BASE_URL=sandbox_url,
        NIXFLEX_DEEPGRAM_API_KEY=DG_KEY,
        NIXFLEX_ANTHROPIC_BASE_URL=sandbox_url,
        NIXFLEX_ANTHROPIC_API_KEY="sandbox-anthropic",
        NIXFLEX_LOG_LEVEL="WARNING",
    )
    return env


async def _wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline:
            assert proc.returncode is None, "engine exited"
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("engine did not start")


@pytest.mark.slow
async def test_engine_killed_mid_call_is_reconciled_on_start_up(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        sandbox = await start_sandbox(stack, speed=1.0)
        sandbox.carrier.set_script(
            ANSWERED,
            CarrierScript.answer(
                [Silence(200), Say("Hello?"), UntilAgentSilent(), Silence(60_000)], ring_s=0.3
            ),
        )
        sandbox.carrier.set_script(RINGING, CarrierScript.no_answer(ring_s=None))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        settings = engine_settings(tmp_path, url, sandbox.url)
        db = Database(settings.database_url)
        await upgrade(db)
        key = await create_account_key(
            Repositories.over(db), Crypto.from_settings(settings), name="restart"
        )
        await db.dispose()
        headers = {"Authorization": f"Bearer {key.key_id}:{key.key_secret}"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nixflex_engine.cli",
            "serve",
            "--port",
            str(port),
            env=_env(tmp_path, url, sandbox.url),
        )
        try:
            await _wait_healthy(url, proc)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                r = await client.post(
                    "/v1/agents",
                    json={"name": "A", "system_prompt": "Hi.", "welcome_message": "Hi there."},
                    headers=headers,
                )
                agent_id = r.json()["agent_id"]
                r = await client.post(
                    "/v1/phone-numbers",
                    json={
                        "phone_number": FROM,
                        "agent_id": agent_id,
                        "twilio_account_sid": sandbox.account.sid,
                        "twilio_auth_token": sandbox.account.auth_token,
                    },
                    headers=headers,
                )
                assert r.status_code == 201, r.text
                ids = {}
                for to in (ANSWERED, RINGING):
                    r = await client.post(
                        "/v1/calls/outbound",
                        json={"agent_id": agent_id, "to_number": to, "metadata": {"n": to}},
                        headers=headers,
                    )
                    assert r.status_code == 201, r.text
                    ids[to] = r.json()["call_id"]
                # wait until the answered call's media session is running on this engine
                deadline = time.monotonic() + 20
                while True:
                    r = await client.get(f"/v1/calls/{ids[ANSWERED]}", headers=headers)
                    carrier_call = sandbox.carrier.calls[ids[ANSWERED]]
                    if r.json()["status"] == "in-progress" and carrier_call.stream is not None:
                        break
                    assert time.monotonic() < deadline, "the call never got going"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.5)  # mid-conversation
                r = await client.get(f"/v1/calls/{ids[RINGING]}", headers=headers)
                assert r.json()["status"] in ("queued", "ringing")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)  # a crash: no shutdown, nothing finished
            await proc.wait()
        # the answered call's line drops with the engine's socket; the carrier ends it
        answered = await sandbox.carrier.wait_ended(ids[ANSWERED], 20)
        assert answered.status == "completed"
        await asyncio.sleep(0.6)  # older than the new engine's staleness threshold

        # a new engine on the same database (and encryption key) reconciles on start-up
        new_url, _, app = await start_engine(
            stack,
            tmp_path,
            sandbox,
            reconcile_stale_after_s=0.5,
            reconcile_ringing_after_s=0.5,
        )
        repos = app.state.services.repos
        rec = await repos.calls.get(ids[ANSWERED])
        assert rec is not None
        assert rec.status == "completed" and rec.ended_reason == "error"
        assert rec.ended_at is not None and not rec.slot_held
        assert rec.metadata == {"n": ANSWERED}
        rec = await repos.calls.get(ids[RINGING])
        assert rec is not None
        assert rec.status == "canceled" and rec.ended_reason == "error"
        assert rec.ended_at is not None and not rec.slot_held
        # the ringing call was hung up at the carrier
        ringing = await sandbox.carrier.wait_ended(ids[RINGING], 10)
        assert ringing.status == "canceled" and ringing.ended_by == "engine"
        account = await repos.accounts.get(key.account_id)
        assert account is not None and account.calls_in_flight == 0
        assert new_url != url


@pytest.mark.slow
async def test_a_live_call_on_another_node_is_left_alone(tmp_path: Path) -> None:
    """Node B reconciles every ~0.3 s with a 1 s threshold; node A heartbeats the call it
    holds, so B never touches it and the call ends normally."""
    async with AsyncExitStack() as stack:
        sandbox = await start_sandbox(stack, speed=1.0)
        to = "+15550124003"
        sandbox.carrier.set_script(
            to,
            CarrierScript.answer(
                [Silence(200), Say("Hello?"), UntilAgentSilent(), Silence(4000), Hangup()],
                ring_s=0.3,
            ),
        )
        fast = {"reconcile_stale_after_s": 1.0, "reconcile_ringing_after_s": 1.0}
        url_a, _, app_a = await start_engine(stack, tmp_path, sandbox, **fast)
        await start_engine(stack, tmp_path, sandbox, **fast)  # node B, same database
        services = app_a.state.services
        key = await create_account_key(services.repos, services.crypto, name="two")
        headers = {"Authorization": f"Bearer {key.key_id}:{key.key_secret}"}
        async with httpx.AsyncClient(base_url=url_a, timeout=10) as client:
            r = await client.post(
                "/v1/agents",
                json={"name": "A", "system_prompt": "Hi.", "welcome_message": "Hi there."},
                headers=headers,
            )
            agent_id = r.json()["agent_id"]
            r = await client.post(
                "/v1/phone-numbers",
                json={
                    "phone_number": FROM,
                    "agent_id": agent_id,
                    "twilio_account_sid": sandbox.account.sid,
                    "twilio_auth_token": sandbox.account.auth_token,
                },
                headers=headers,
            )
            assert r.status_code == 201, r.text
            r = await client.post(
                "/v1/calls/outbound", json={"agent_id": agent_id, "to_number": to}, headers=headers
            )
            call_id = r.json()["call_id"]
            call = await sandbox.carrier.wait_ended(call_id, 30)
            assert call.ended_by == "callee"
            deadline = time.monotonic() + 10
            while (rec := await services.repos.calls.get(call_id)) is not None and rec.slot_held:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert rec is not None
        assert rec.status == "completed" and rec.ended_reason == "caller_hangup"
        assert rec.duration_seconds is not None and rec.duration_seconds > 4
