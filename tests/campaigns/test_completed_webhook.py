"""``campaign.completed`` goes through the webhook outbox: queued in the transaction that
completes the campaign, signed like every webhook, delivered once per URL."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.support import Env, start_env
from nixflex_engine.sandbox.fake_twilio import FakeTwilio
from nixflex_engine.sandbox.serve import serve_app
from nixflex_engine.store.models import webhook_deliveries

from .support import numbers, rig


@pytest.fixture
async def wenv(
    database_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path: Any
) -> AsyncIterator[Env]:
    async for e in start_env(
        database_url,
        fake_twilio,
        tmp_path,
        campaign_dispatch_enabled=False,
        allow_private_webhook_urls=True,
        webhook_poll_interval_seconds=0.05,
    ):
        yield e


async def test_campaign_completed_webhook(wenv: Env) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    got = asyncio.Event()

    async def hook(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        got.set()
        return Response(status_code=204)

    async with serve_app(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        r = await rig(wenv)
        updated = await wenv.client.put(
            f"/v1/agents/{r.agent['agent_id']}",
            json={"webhook_url": f"{url}/hook"},
            headers=r.account.headers,
        )
        assert updated.status_code == 200, updated.text
        camp = await r.create([{"phone": n} for n in numbers(3)], metadata={"batch": "b1"})
        cid = camp["campaign_id"]
        await r.tick()
        live = await r.live(cid)
        await r.end(live[0], "completed")
        await r.end(live[1], "busy")
        queued = await wenv.services.repos.db.read(
            lambda conn: conn.execute(
                sa.select(sa.func.count())
                .select_from(webhook_deliveries)
                .where(webhook_deliveries.c.event == "campaign.completed")
                .where(webhook_deliveries.c.call_id == cid)
            ).scalar_one()
        )
        assert queued == 0  # not complete yet
        await r.end(live[2], "no-answer")
        for _ in range(200):
            events = [json.loads(body)["event"] for _, body in received]
            if "campaign.completed" in events:
                break
            await asyncio.sleep(0.05)
        completed = [(h, b) for h, b in received if json.loads(b)["event"] == "campaign.completed"]
        assert len(completed) == 1
        headers, body = completed[0]
        payload = json.loads(body)
        assert payload["campaign_id"] == cid and payload["status"] == "completed"
        assert payload["counts"] == {
            "queued": 0,
            "in_progress": 0,
            "completed": 1,
            "failed": 2,
            "canceled": 0,
        }
        assert payload["metadata"] == {"batch": "b1"}
        assert headers["x-nixflex-event"] == "campaign.completed"
        t, v1 = (part.split("=", 1)[1] for part in headers["x-nixflex-signature"].split(","))
        expected = hmac.new(
            r.account.key_secret.encode(), f"{t}.".encode() + body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(v1, expected)
