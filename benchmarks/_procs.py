"""Helpers for the benchmarks that run the engine and the sandbox as processes of their own
(``call_load.py``, ``campaign.py``): ports, readiness, the environment that points the engine
at the sandbox, and the /proc meters. Our virtual environment only (uses httpx)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

__all__ = ["cpu_s", "free_port", "rss_bytes", "sandbox_env", "stop", "uptime", "wait_http"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uptime() -> str:
    """``uptime``'s line: the machine's load, for the results."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def wait_http(url: str, path: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Wait until ``GET url+path`` answers 200; fail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url} exited with {proc.returncode}")
            try:
                if client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15) -> None:
    """Terminate ``proc`` if it still runs; kill it if it does not exit in ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def sandbox_env(
    work: Path,
    *,
    engine_url: str,
    sandbox_url: str,
    database_url: str,
    fakes_url: str | None = None,
    api_key: str = "bench",
    **extra: str,
) -> dict[str, str]:
    """The engine's environment: dev mode under ``work``, the carrier at ``sandbox_url``, the
    Deepgram and Anthropic fakes at ``fakes_url`` (default: the same sandbox), rate limits out
    of the way; ``extra`` adds ``NIXFLEX_*`` settings. Other ``NIXFLEX_*`` variables of this
    process are dropped."""
    fakes = fakes_url or sandbox_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEX_")}
    env.update(
        NIXFLEX_DEV_MODE="true",
        NIXFLEX_VAR_DIR=str(work / "var"),
        NIXFLEX_DATABASE_URL=database_url,
        NIXFLEX_RECORDINGS_DIR=str(work / "recordings"),
        NIXFLEX_PUBLIC_BASE_URL=engine_url,
        NIXFLEX_TWILIO_API_BASE_URL=sandbox_url,
        NIXFLEX_DEEPGRAM_BASE_URL=fakes,
        NIXFLEX_DEEPGRAM_API_KEY=api_key,
        NIXFLEX_ANTHROPIC_BASE_URL=fakes,
        NIXFLEX_ANTHROPIC_API_KEY=api_key,
        NIXFLEX_RATE_LIMIT_READS_PER_MINUTE="1000000",
        NIXFLEX_RATE_LIMIT_WRITES_PER_MINUTE="1000000",
        NIXFLEX_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
