"""Helpers: an account with an agent and a number, campaigns through the API, manual dispatcher
passes, and calls ended through the real after-call hook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from api.support import Account, Env
from nixflex_engine.calls.campaigns import CampaignDispatcher
from nixflex_engine.calls.dialer import DialRequest
from nixflex_engine.store.models import calls
from nixflex_engine.store.repositories import CallRecord, utcnow


@dataclass
class Rig:
    env: Env
    account: Account
    agent: dict[str, Any]
    number: str

    @property
    def dispatcher(self) -> CampaignDispatcher:
        dispatcher: CampaignDispatcher = self.env.app.state.campaign_dispatcher
        return dispatcher

    @property
    def repos(self) -> Any:
        return self.env.services.repos

    async def create(self, recipients: list[Any], **fields: Any) -> dict[str, Any]:
        body = {"agent_id": self.agent["agent_id"], "recipients": recipients, **fields}
        r = await self.env.client.post("/v1/calls/batch", json=body, headers=self.account.headers)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def get(self, campaign_id: str, **query: Any) -> dict[str, Any]:
        r = await self.env.client.get(
            f"/v1/calls/batch/{campaign_id}", params=query, headers=self.account.headers
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def post(self, campaign_id: str, action: str) -> Any:
        return await self.env.client.post(
            f"/v1/calls/batch/{campaign_id}/{action}", headers=self.account.headers
        )

    async def tick(self, dispatcher: CampaignDispatcher | None = None) -> int:
        """One dispatcher pass; returns how many of *this account's* recipients it dialed
        (the per-worker database is shared with other tests' campaigns)."""
        d = dispatcher or self.dispatcher
        before = len(self.dialed())
        await d.tick()
        await d.idle()
        return len(self.dialed()) - before

    def dialed(self) -> list[DialRequest]:
        """Dials this account's campaigns placed with the carrier."""
        return [d for d in self.env.dialer.dialed if d.account_id == self.account.account_id]

    def dialed_numbers(self) -> list[str]:
        return [d.to_number for d in self.dialed()]

    async def live(self, campaign_id: str) -> list[CallRecord]:
        """The campaign's calls holding a concurrency slot, oldest first."""
        records: list[CallRecord] = await self.repos.db.read(
            lambda conn: [
                _record(row)
                for row in conn.execute(
                    calls.select()
                    .where(calls.c.campaign_id == campaign_id, calls.c.slot_held.is_(True))
                    .order_by(calls.c.id)
                ).mappings()
            ]
        )
        return records

    async def all_calls(self, campaign_id: str) -> list[CallRecord]:
        records: list[CallRecord] = await self.repos.db.read(
            lambda conn: [
                _record(row)
                for row in conn.execute(
                    calls.select().where(calls.c.campaign_id == campaign_id).order_by(calls.c.id)
                ).mappings()
            ]
        )
        return records

    async def end(self, record: CallRecord, status: str, *, voicemail: bool = False) -> None:
        """End a live call as the lifecycle would, then run the after-call hook."""
        fields: dict[str, Any] = {}
        reason = status
        if status == "completed":
            fields = {"answered_at": utcnow(), "duration_seconds": 1.0}
            reason = "voicemail" if voicemail else "agent_hangup"
            fields["voicemail_detected"] = voicemail
        assert await self.repos.calls.finish_call(record.call_id, status, reason, **fields)
        final = await self.repos.calls.get(record.call_id)
        await self.env.app.state.after_call(final, None)


def _record(row: Any) -> CallRecord:
    from nixflex_engine.store.repositories import _call

    return _call(row)


async def rig(env: Env, *, max_concurrent_calls: int | None = None) -> Rig:
    account = await env.account(max_concurrent_calls=max_concurrent_calls)
    agent = await env.agent(account)
    number = await env.number(account, agent["agent_id"])
    return Rig(env, account, agent, number)


def numbers(n: int, prefix: str = "+1555") -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(n)]


async def count_where(env: Env, stmt: sa.Select[Any]) -> int:
    return int(await env.services.repos.db.read(lambda conn: conn.execute(stmt).scalar_one()))
