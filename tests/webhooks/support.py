"""Webhook test support: a local receiver on 127.0.0.1, calls finished through the repository,
and a worker with a short retry schedule.

The receiver is a real HTTP server (uvicorn in a thread) so the worker's httpx client, timeouts
and connection handling are the production ones. A ``script`` decides each response from the
delivery id and how many times that delivery was seen: ``(status, delay_s)``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from cryptography.fernet import Fernet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.support import free_port
from nixflex_engine.api.calls import call_json
from nixflex_engine.api.keys import create_account_key
from nixflex_engine.calls.webhooks import RetryPolicy, WebhookWorker
from nixflex_engine.config import Settings
from nixflex_engine.crypto import Crypto
from nixflex_engine.store.repositories import CallRecord, NewCall, Repositories, utcnow

CRYPTO_KEY = Fernet.generate_key().decode()
CRYPTO = Crypto(CRYPTO_KEY.encode())
SETTINGS = Settings(
    encryption_key=Fernet.generate_key().decode(), public_base_url="https://engine.example.com"
)
#: Retries every few tens of milliseconds: the schedule's shape without the waiting.
FAST = RetryPolicy(schedule_s=(0.05, 0.1, 0.2), deadline_s=30.0)

Script = Callable[[str, int], tuple[int, float]]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """Records every request; answers as ``script(delivery_id, nth_time_seen)`` says."""

    url: str
    script: Script = lambda _d, _n: (200, 0.0)
    requests: list[Received] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    answered_ok: Counter[tuple[str, str]] = field(default_factory=Counter)

    def ok_for(self, call_id: str, event: str) -> int:
        """2xx answers given for this call's event (duplicates show as > 1)."""
        return self.answered_ok[(call_id, event)]

    def of(self, call_id: str) -> list[Received]:
        return [r for r in self.requests if r.json.get("call_id") == call_id]


def start_receiver(path: str = "/hook") -> Iterator[Receiver]:
    receiver = Receiver(url="")

    async def hook(request: Request) -> Response:
        body = await request.body()
        delivery = request.headers.get("x-nixflex-delivery", "")
        receiver.seen[delivery] += 1
        item = Received(dict(request.headers), body, time.monotonic())
        receiver.requests.append(item)
        status, delay = receiver.script(delivery, receiver.seen[delivery])
        if delay:
            await asyncio.sleep(delay)
        if 200 <= status < 300:
            data = item.json
            receiver.answered_ok[(data.get("call_id", ""), data.get("event", ""))] += 1
        return Response(b"ok", status_code=status)

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route(path, hook, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{port}{path}"
    yield receiver
    server.should_exit = True
    thread.join(5)


@dataclass
class Party:
    account_id: str
    key_secret: str
    agent_id: str
    number: str


async def party(
    repos: Repositories,
    *,
    agent_url: str | None,
    number_url: str | None = None,
    number2_url: str | None = None,
) -> Party:
    """An account (real key), an agent with ``webhook_url`` and a number with its slots."""
    key = await create_account_key(repos, CRYPTO, name="hooks")
    config: dict[str, Any] = {"name": "A", "system_prompt": "Hi"}
    if agent_url is not None:
        config["webhook_url"] = agent_url
    agent = await repos.agents.create(key.account_id, config)
    number = "+1555" + "".join(secrets.choice("0123456789") for _ in range(7))
    await repos.phone_numbers.create(
        phone_number=number,
        account_id=key.account_id,
        agent_id=agent.agent_id,
        twilio_account_sid="AC" + secrets.token_hex(16),
        twilio_auth_token_encrypted=CRYPTO.encrypt("token"),
        twilio_number_sid=None,
    )
    await repos.phone_numbers.update(
        number, key.account_id, {"webhook_url": number_url, "webhook2_url": number2_url}
    )
    return Party(key.account_id, key.key_secret, agent.agent_id, number)


async def placed_call(
    repos: Repositories, p: Party, to_number: str = "+15005550006", **extra: Any
) -> CallRecord:
    record = await repos.calls.create_reserving_slot(
        NewCall(
            account_id=p.account_id,
            agent_id=p.agent_id,
            from_number=p.number,
            to_number=to_number,
            voicemail_action="hangup",
            dynamic_vars={"name": "Ada"},
            **extra,
        ),
        default_limit=10_000,
    )
    assert record is not None
    sid = "CA" + secrets.token_hex(16)
    assert await repos.calls.mark_dialed(record.call_ref, sid)
    got = await repos.calls.get(sid)
    assert got is not None
    return got


async def connected_call(repos: Repositories, p: Party, **extra: Any) -> CallRecord:
    """A call that connected and ended (its call.ended deliveries are queued, held)."""
    record = await placed_call(repos, p, **extra)
    now = utcnow()
    assert await repos.calls.finish_call(
        record.call_id,
        "completed",
        "agent_hangup",
        answered_at=now,
        duration_seconds=42.0,
        transcript=[
            {"role": "agent", "text": "Hello Ada", "timestamp_ms": 0},
            {"role": "caller", "text": "Hi", "timestamp_ms": 900},
        ],
    )
    final = await repos.calls.get(record.call_id)
    assert final is not None
    return final


def worker(repos: Repositories, **overrides: Any) -> WebhookWorker:
    values: dict[str, Any] = {
        "repos": repos,
        "crypto": CRYPTO,
        "serialize": lambda record: call_json(record, SETTINGS),
        "allow_private": True,
        "timeout_s": 2.0,
        "lease_s": 5.0,
        "max_concurrency": 8,
        "poll_interval_s": 0.05,
        "policy": FAST,
        **overrides,
    }
    return WebhookWorker(**values)


async def wait_for(
    predicate: Callable[[], Any], timeout_s: float = 20.0, interval_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval_s)


async def statuses(repos: Repositories, call_id: str, account_id: str) -> list[str]:
    deliveries, _ = await repos.webhooks.list_for_call(call_id, account_id, limit=100, offset=0)
    return [d.status for d in deliveries]
