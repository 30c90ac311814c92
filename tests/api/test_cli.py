"""The ``nixflex-engine`` command: keys create, db upgrade, serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nixflex_engine.cli import build_parser
from nixflex_engine.config import Settings

from .support import ENCRYPTION_KEY, free_port


def run(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args, settings))


def test_keys_create_and_db_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        encryption_key=ENCRYPTION_KEY,
        var_dir=tmp_path,
    )
    assert run(["db", "upgrade"], settings) == 0
    assert (
        run(["keys", "create", "--name", "acme", "--max-concurrent-calls", "3", "--json"], settings)
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()[-1]
    key = json.loads(out)
    assert set(key) == {"key_id", "key_secret"}
    assert key["key_id"].startswith("nxf_") and key["key_secret"].startswith("nxfs_")
    assert run(["keys", "create", "--name", "x", "--max-concurrent-calls", "0"], settings) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["keys", "create"])  # --name is required


def test_serve_runs_the_engine(tmp_path: Path) -> None:
    port = free_port()
    env: dict[str, Any] = {
        **os.environ,
        "NIXFLEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "NIXFLEX_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "NIXFLEX_VAR_DIR": str(tmp_path),
        "NIXFLEX_SIGNUP_ENABLED": "true",
        "NIXFLEX_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nixflex_engine.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)
        key = httpx.post(f"{base}/v1/keys", json={"name": "cli"}).json()
        headers = {"Authorization": f"Bearer {key['key_id']}:{key['key_secret']}"}
        assert httpx.get(f"{base}/v1/agents", headers=headers).json()["count"] == 0
    finally:
        proc.terminate()
        proc.wait(10)
