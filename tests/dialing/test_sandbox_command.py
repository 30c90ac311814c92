"""``nixflex-engine sandbox``: one process serving the carrier, Deepgram and Anthropic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from nixflex_engine.calls.dialer import DialRequest, TwilioCredentials
from nixflex_engine.calls.twilio_dialer import TwilioDialer
from nixflex_engine.cli import build_parser
from nixflex_engine.config import Settings
from nixflex_engine.sandbox.serve import serve_app

from .conftest import EngineSide, engine_app

SID = "AC" + "5" * 32
TOKEN = "sandbox-token-for-tests"
FROM = "+15550100000"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_sandbox_command_serves_the_carrier_and_the_fakes(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps({"+15550144001": {"outcome": "busy"}}))
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nixflex_engine.cli",
        "sandbox",
        "--port",
        str(port),
        "--scripts",
        str(scripts),
        "--twilio-account",
        f"{SID}:{TOKEN}",
        "--twilio-number",
        FROM,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        info = json.loads(line)
        # a given token is not echoed; the numbers are
        assert info["twilio_accounts"] == [{"account_sid": SID, "numbers": [FROM]}]
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    health = await http.get(f"{base}/sandbox/health")
                    break
                await asyncio.sleep(0.05)
            routes = health.json()["routes"]
            assert "/v1/messages" in routes and "/v1/listen" in routes
            assert "/2010-04-01/Accounts/{account_sid}/Calls.json" in routes
        # a dial through the real SDK reaches the carrier, which calls back the engine
        engine = EngineSide(public_base_url="", auth_tokens={SID: TOKEN})
        holder: dict[str, Starlette] = {}

        async def app(scope: object, receive: object, send: object) -> None:
            await holder["app"](scope, receive, send)  # type: ignore[arg-type]

        async with serve_app(app) as engine_url:
            engine.public_base_url = engine_url
            settings = Settings(public_base_url=engine_url, twilio_api_base_url=base)
            holder["app"] = engine_app(
                engine, public_ws_base_url=settings.public_ws_base_url, speed=1.0
            )
            dialer = TwilioDialer(settings)
            try:
                result = await dialer.dial(
                    DialRequest(
                        "ref-cli",
                        "acct",
                        "agent",
                        "+15550144001",
                        FROM,
                        TwilioCredentials(SID, TOKEN),
                    )
                )
            finally:
                await dialer.aclose()
            for _ in range(600):
                if "busy" in engine.statuses(result.call_sid):
                    break
                await asyncio.sleep(0.01)
        assert engine.statuses(result.call_sid) == ["initiated", "busy"]
        assert all(c.valid for c in engine.callbacks)
        async with httpx.AsyncClient() as http:
            # scripts can be set over HTTP too; the per-call log is readable
            put = await http.put(
                f"{base}/sandbox/carrier/scripts/default", json={"outcome": "sometimes"}
            )
            assert put.status_code == 400
            put = await http.put(
                f"{base}/sandbox/carrier/scripts/+15550144002", json={"outcome": "failed"}
            )
            assert put.json() == {"number": "+15550144002", "script": "failed"}
            log = await http.get(f"{base}/sandbox/carrier/calls/{result.call_sid}")
            assert log.status_code == 200
            body = log.json()
            assert body["status"] == "busy" and body["done"] is True
            assert [c["params"]["CallStatus"] for c in body["callbacks"]] == ["initiated", "busy"]
            assert [c["http_status"] for c in body["callbacks"]] == [204, 204]
            listed = (await http.get(f"{base}/sandbox/carrier/calls")).json()["calls"]
            assert [c["sid"] for c in listed] == [result.call_sid]
            missing = await http.get(f"{base}/sandbox/carrier/calls/CA0")
            assert missing.status_code == 404
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def test_sandbox_command_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"+1555": {"outcome": "sometimes"}}))
    settings = Settings()
    args = build_parser().parse_args(["sandbox", "--port", "0", "--scripts", str(bad)])
    assert args.handler(args, settings) == 2
    assert "cannot load call scripts" in capsys.readouterr().err
    args = build_parser().parse_args(["sandbox", "--map-url", "nonsense"])
    assert args.handler(args, settings) == 2
