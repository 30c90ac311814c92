"""Campaign storage: campaigns, their recipients and every dial attempt.

Recipient states: ``queued`` (waiting for its first attempt or a retry, not before
``next_attempt_at``), ``in_progress`` (claimed by a dispatcher: being dialed or on a call),
``completed`` (its last call connected — a person or a voicemail), ``failed`` (its last call did
not connect and no retry is left, or the dial was refused) and ``canceled``.

How one attempt is dialed at most once (see also ``calls/campaigns.py``):

1. :meth:`CampaignRepository.claim` moves due recipients ``queued → in_progress`` and fixes the
   attempt's ``call_ref`` (a new one, or the one a previous claim of the *same* attempt left),
   with a ``campaign_attempts`` row, all in one transaction. The campaign row is locked
   (``FOR UPDATE``) so the in-flight count and the claim are atomic across nodes; recipient
   rows are taken ``FOR UPDATE SKIP LOCKED`` (SQLite: ``BEGIN IMMEDIATE`` serialises writers
   and the conditional ``UPDATE ... WHERE state = 'queued'`` decides).
2. The dispatcher dials through the outbound service with that ``call_ref``. The call row is
   written (with the concurrency slot) *before* the dial, and ``calls.call_ref`` is unique:
   whoever writes the row for an attempt is the only one who may dial it; a second writer
   gets ``DuplicateError`` and dials nothing.
3. A claim that never produced a call row (the process died between claim and insert) is
   re-queued after its lease, *keeping* its ``call_ref`` — a late insert by a stalled original
   and the new claimer's insert collide on that unique key. A claim whose call row exists is
   never re-queued: its outcome is applied when the call is final (by the node that finished
   it, or by the reconciler), and a call whose dial was never confirmed is finished as
   ``failed`` by the call reconciler — never redialed.

Outcomes are applied with the campaign row locked, so "no recipient left → completed" is
decided exactly once, and the ``campaign.completed`` webhooks are queued in that same
transaction (the outbox of ``store/webhooks.py``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from nixflex_engine.calls.calling_window import CallingWindow
from nixflex_engine.store.db import Database
from nixflex_engine.store.models import (
    agents,
    calls,
    campaign_attempts,
    campaign_recipients,
    campaigns,
    phone_numbers,
    webhook_deliveries,
)
from nixflex_engine.store.repositories import new_call_ref, utcnow
from nixflex_engine.store.webhooks import new_delivery_id, new_event_id

__all__ = [
    "CAMPAIGN_STATUSES",
    "RECIPIENT_STATES",
    "AttemptView",
    "CampaignRecord",
    "CampaignRepository",
    "Claim",
    "NewCampaign",
    "NewRecipient",
    "OutcomeResult",
    "RecipientView",
    "StaleClaim",
    "new_campaign_id",
]

CAMPAIGN_STATUSES = ("draft", "scheduled", "running", "paused", "completed", "canceled")
RECIPIENT_STATES = ("queued", "in_progress", "completed", "failed", "canceled")
_OPEN_STATES = ("queued", "in_progress")
#: Outcomes after which a recipient counts as reached.
_REACHED = frozenset({"completed", "voicemail"})


def new_campaign_id() -> str:
    return "camp_" + secrets.token_hex(8)


@dataclass(slots=True, frozen=True)
class NewRecipient:
    position: int
    phone_number: str
    dynamic_vars: dict[str, str]
    metadata: dict[str, Any] | None
    prompt_override: str | None


@dataclass(slots=True, frozen=True)
class NewCampaign:
    campaign_id: str
    account_id: str
    agent_id: str
    from_number: str | None
    name: str
    prompt: str | None
    status: str
    schedule_type: str
    scheduled_at: datetime | None
    window: CallingWindow
    max_concurrent: int
    retry_max_attempts: int
    retry_delay_seconds: float
    retry_on: tuple[str, ...]
    metadata: dict[str, Any] | None
    invalid_recipients: list[dict[str, Any]]


@dataclass(slots=True, frozen=True)
class CampaignRecord:
    campaign_id: str
    account_id: str
    agent_id: str
    from_number: str | None
    name: str
    prompt: str | None
    status: str
    schedule_type: str
    scheduled_at: datetime | None
    window: CallingWindow
    max_concurrent: int
    retry_max_attempts: int
    retry_delay_seconds: float
    retry_on: tuple[str, ...]
    metadata: dict[str, Any] | None
    invalid_recipients: list[dict[str, Any]]
    recipients_total: int
    last_error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    completed_at: datetime | None
    canceled_at: datetime | None


def _campaign(row: Mapping[Any, Any]) -> CampaignRecord:
    return CampaignRecord(
        campaign_id=row["campaign_id"],
        account_id=row["account_id"],
        agent_id=row["agent_id"],
        from_number=row["from_number"],
        name=row["name"],
        prompt=row["prompt"],
        status=row["status"],
        schedule_type=row["schedule_type"],
        scheduled_at=row["scheduled_at"],
        window=CallingWindow(
            start_minutes=row["window_start_minutes"],
            end_minutes=row["window_end_minutes"],
            days=frozenset(int(d) for d in row["window_days"]),
            timezone=row["timezone"],
        ),
        max_concurrent=row["max_concurrent"],
        retry_max_attempts=row["retry_max_attempts"],
        retry_delay_seconds=float(row["retry_delay_seconds"]),
        retry_on=tuple(row["retry_on"]),
        metadata=row["metadata"],
        invalid_recipients=list(row["invalid_recipients"] or []),
        recipients_total=row["recipients_total"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        launched_at=row["launched_at"],
        completed_at=row["completed_at"],
        canceled_at=row["canceled_at"],
    )


@dataclass(slots=True, frozen=True)
class AttemptView:
    attempt: int
    call_ref: str
    call_id: str | None
    call_status: str | None
    outcome: str | None
    created_at: datetime
    ended_at: datetime | None


@dataclass(slots=True, frozen=True)
class RecipientView:
    position: int
    phone_number: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_call_id: str | None
    last_outcome: str | None
    last_error: dict[str, Any] | None
    dynamic_vars: dict[str, Any]
    metadata: dict[str, Any] | None
    prompt_override: str | None
    calls: list[AttemptView] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Claim:
    """One recipient a dispatcher took for one attempt."""

    recipient_id: int
    campaign_id: str
    call_ref: str
    attempt: int
    token: str
    phone_number: str
    dynamic_vars: dict[str, Any]
    metadata: dict[str, Any] | None
    prompt_override: str | None


@dataclass(slots=True, frozen=True)
class StaleClaim:
    """A claim older than its lease, with what became of its call (if anything)."""

    call_ref: str
    campaign_id: str
    call_exists: bool
    call_final: bool


@dataclass(slots=True, frozen=True)
class OutcomeResult:
    """What applying a call's outcome did."""

    applied: bool
    state: str | None = None
    retry_at: datetime | None = None
    campaign_completed: CampaignRecord | None = None


def _lock(stmt: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
    # SQLite ignores FOR UPDATE (the compiler omits it); its writers are serialised instead.
    return stmt.with_for_update(skip_locked=skip_locked)


class CampaignRepository:
    """Every campaign read and write; each method is one transaction."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- create and read ----------------------------------------------------------------

    async def create(
        self, campaign: NewCampaign, recipients: Sequence[NewRecipient]
    ) -> CampaignRecord:
        """Store the campaign and all its recipients at once (all or nothing)."""
        now = utcnow()
        w = campaign.window
        values: dict[str, Any] = {
            "campaign_id": campaign.campaign_id,
            "account_id": campaign.account_id,
            "agent_id": campaign.agent_id,
            "from_number": campaign.from_number,
            "name": campaign.name,
            "prompt": campaign.prompt,
            "status": campaign.status,
            "schedule_type": campaign.schedule_type,
            "scheduled_at": campaign.scheduled_at,
            "window_start_minutes": w.start_minutes,
            "window_end_minutes": w.end_minutes,
            "window_days": sorted(w.days),
            "timezone": w.timezone,
            "max_concurrent": campaign.max_concurrent,
            "retry_max_attempts": campaign.retry_max_attempts,
            "retry_delay_seconds": campaign.retry_delay_seconds,
            "retry_on": list(campaign.retry_on),
            "metadata": campaign.metadata,
            "invalid_recipients": campaign.invalid_recipients,
            "recipients_total": len(recipients),
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "launched_at": now if campaign.status == "running" else None,
            "completed_at": None,
            "canceled_at": None,
        }
        rows = [
            {
                "campaign_id": campaign.campaign_id,
                "position": r.position,
                "phone_number": r.phone_number,
                "dynamic_vars": r.dynamic_vars,
                "metadata": r.metadata,
                "prompt_override": r.prompt_override,
                "state": "queued",
                "attempts": 0,
                "next_attempt_at": None,
                "call_ref": None,
                "claimed_at": None,
                "claimed_by": None,
                "last_call_id": None,
                "last_outcome": None,
                "last_error": None,
                "updated_at": now,
            }
            for r in recipients
        ]

        def work(conn: sa.Connection) -> None:
            conn.execute(campaigns.insert().values(**values))
            for start in range(0, len(rows), 1000):
                conn.execute(campaign_recipients.insert(), rows[start : start + 1000])

        await self._db.write(work)
        return _campaign(values)

    async def get(self, campaign_id: str, account_id: str | None = None) -> CampaignRecord | None:
        conditions = [campaigns.c.campaign_id == campaign_id]
        if account_id is not None:
            conditions.append(campaigns.c.account_id == account_id)

        def work(conn: sa.Connection) -> CampaignRecord | None:
            row = conn.execute(campaigns.select().where(*conditions)).mappings().first()
            return _campaign(row) if row else None

        return await self._db.read(work)

    async def list_page(
        self, account_id: str, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[CampaignRecord], int]:
        conditions = [campaigns.c.account_id == account_id]
        if status is not None:
            conditions.append(campaigns.c.status == status)

        def work(conn: sa.Connection) -> tuple[list[CampaignRecord], int]:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(campaigns).where(*conditions)
            ).scalar_one()
            rows = (
                conn.execute(
                    campaigns.select()
                    .where(*conditions)
                    .order_by(campaigns.c.created_at.desc(), campaigns.c.campaign_id.desc())
                    .limit(limit)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
            return [_campaign(r) for r in rows], int(count)

        return await self._db.read(work)

    async def counts(self, campaign_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Recipients per state, for each campaign (every state present, zeros included)."""
        out = {cid: dict.fromkeys(RECIPIENT_STATES, 0) for cid in campaign_ids}
        if not campaign_ids:
            return out
        stmt = (
            sa.select(
                campaign_recipients.c.campaign_id,
                campaign_recipients.c.state,
                sa.func.count(),
            )
            .where(campaign_recipients.c.campaign_id.in_(list(campaign_ids)))
            .group_by(campaign_recipients.c.campaign_id, campaign_recipients.c.state)
        )

        def work(conn: sa.Connection) -> dict[str, dict[str, int]]:
            for cid, state, n in conn.execute(stmt):
                out[cid][state] = int(n)
            return out

        return await self._db.read(work)

    async def recipients_page(
        self, campaign_id: str, *, state: str | None, limit: int, offset: int
    ) -> tuple[list[RecipientView], int]:
        """Recipients in dialing order, each with its attempts and their calls."""
        r = campaign_recipients.c
        conditions = [r.campaign_id == campaign_id]
        if state is not None:
            conditions.append(r.state == state)
        a = campaign_attempts.c
        attempts_stmt = (
            sa.select(
                a.recipient_id,
                a.attempt,
                a.call_ref,
                a.outcome,
                a.created_at,
                a.ended_at,
                calls.c.call_id,
                calls.c.status,
            )
            .select_from(
                campaign_attempts.outerjoin(calls, calls.c.call_ref == campaign_attempts.c.call_ref)
            )
            .where(a.recipient_id.in_(sa.bindparam("ids", expanding=True)))
            .order_by(a.recipient_id, a.attempt)
        )

        def work(conn: sa.Connection) -> tuple[list[RecipientView], int]:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(campaign_recipients).where(*conditions)
            ).scalar_one()
            rows = (
                conn.execute(
                    campaign_recipients.select()
                    .where(*conditions)
                    .order_by(r.position)
                    .limit(limit)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
            by_id: dict[int, list[AttemptView]] = {row["id"]: [] for row in rows}
            if by_id:
                for att in conn.execute(attempts_stmt, {"ids": list(by_id)}).mappings():
                    by_id[att["recipient_id"]].append(
                        AttemptView(
                            attempt=att["attempt"],
                            call_ref=att["call_ref"],
                            call_id=att["call_id"],
                            call_status=att["status"],
                            outcome=att["outcome"],
                            created_at=att["created_at"],
                            ended_at=att["ended_at"],
                        )
                    )
            views = [
                RecipientView(
                    position=row["position"],
                    phone_number=row["phone_number"],
                    state=row["state"],
                    attempts=row["attempts"],
                    next_attempt_at=row["next_attempt_at"],
                    last_call_id=row["last_call_id"],
                    last_outcome=row["last_outcome"],
                    last_error=row["last_error"],
                    dynamic_vars=dict(row["dynamic_vars"] or {}),
                    metadata=row["metadata"],
                    prompt_override=row["prompt_override"],
                    calls=by_id[row["id"]],
                )
                for row in rows
            ]
            return views, int(count)

        return await self._db.read(work)

    # --- status changes -----------------------------------------------------------------

    async def transition(
        self, campaign_id: str, account_id: str, action: str
    ) -> tuple[CampaignRecord | None, bool]:
        """``launch`` / ``pause`` / ``cancel``. Returns (the campaign after, whether the action
        applied); (None, False) when the campaign is not this account's. An action that does
        not apply to the current status changes nothing (the caller decides 200 vs 409)."""
        now = utcnow()
        allowed = {
            "launch": ("draft", "scheduled", "paused", "running"),
            "pause": ("scheduled", "running", "paused"),
            "cancel": ("draft", "scheduled", "running", "paused", "canceled"),
        }[action]
        target = {"launch": "running", "pause": "paused", "cancel": "canceled"}[action]

        def work(conn: sa.Connection) -> tuple[CampaignRecord | None, bool]:
            row = (
                conn.execute(
                    _lock(
                        campaigns.select().where(
                            campaigns.c.campaign_id == campaign_id,
                            campaigns.c.account_id == account_id,
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None, False
            if row["status"] not in allowed:
                return _campaign(row), False
            if row["status"] == target:
                return _campaign(row), True
            changes: dict[str, Any] = {"status": target, "updated_at": now}
            if target == "running":
                changes["last_error"] = None
                if row["launched_at"] is None:
                    changes["launched_at"] = now
            if target == "canceled":
                changes["canceled_at"] = now
                conn.execute(
                    campaign_recipients.update()
                    .where(
                        campaign_recipients.c.campaign_id == campaign_id,
                        campaign_recipients.c.state == "queued",
                    )
                    .values(state="canceled", call_ref=None, updated_at=now)
                )
            updated = (
                conn.execute(
                    campaigns.update()
                    .where(campaigns.c.campaign_id == campaign_id)
                    .values(**changes)
                    .returning(*campaigns.c)
                )
                .mappings()
                .one()
            )
            record = _campaign(updated)
            if target == "running":
                # a launched campaign with nothing left to dial is complete at once
                completed = _complete_if_done(conn, campaign_id, now)
                record = completed or record
            return record, True

        return await self._db.write(work)

    async def promote_scheduled(self, now: datetime) -> int:
        """Scheduled campaigns whose time has come start running."""
        stmt = (
            campaigns.update()
            .where(campaigns.c.status == "scheduled", campaigns.c.scheduled_at <= now)
            .values(status="running", launched_at=now, updated_at=now)
        )

        def work(conn: sa.Connection) -> int:
            return int(conn.execute(stmt).rowcount)

        return await self._db.write(work)

    async def running(self) -> list[CampaignRecord]:
        def work(conn: sa.Connection) -> list[CampaignRecord]:
            rows = conn.execute(
                campaigns.select()
                .where(campaigns.c.status == "running")
                .order_by(campaigns.c.created_at)
            ).mappings()
            return [_campaign(r) for r in rows]

        return await self._db.read(work)

    async def pause_with_error(self, campaign_id: str, error: dict[str, Any]) -> bool:
        """The dispatcher stops a running campaign that cannot dial at all (e.g. its agent was
        deleted); ``launch`` resumes it once fixed."""

        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                campaigns.update()
                .where(campaigns.c.campaign_id == campaign_id, campaigns.c.status == "running")
                .values(status="paused", last_error=error, updated_at=utcnow())
            )
            return result.rowcount == 1

        return await self._db.write(work)

    # --- claiming -------------------------------------------------------------------------

    async def claim(self, campaign_id: str, *, node: str, now: datetime, limit: int) -> list[Claim]:
        """Take up to ``limit`` due recipients, never more than the campaign's
        ``max_concurrent`` minus its calls in flight (see the module docstring)."""
        r = campaign_recipients.c
        in_flight = (
            sa.select(sa.func.count())
            .select_from(campaign_recipients.outerjoin(calls, calls.c.call_ref == r.call_ref))
            .where(
                r.campaign_id == campaign_id,
                r.state == "in_progress",
                sa.or_(calls.c.id.is_(None), calls.c.slot_held.is_(True)),
            )
        )
        token = f"{node[:40]}:{secrets.token_hex(6)}"

        def work(conn: sa.Connection) -> list[Claim]:
            camp = conn.execute(
                _lock(
                    sa.select(campaigns.c.max_concurrent).where(
                        campaigns.c.campaign_id == campaign_id, campaigns.c.status == "running"
                    )
                )
            ).first()
            if camp is None:
                return []
            room = min(limit, int(camp[0]) - int(conn.execute(in_flight).scalar_one()))
            if room <= 0:
                return []
            rows = (
                conn.execute(
                    _lock(
                        sa.select(campaign_recipients)
                        .where(
                            r.campaign_id == campaign_id,
                            r.state == "queued",
                            sa.or_(r.next_attempt_at.is_(None), r.next_attempt_at <= now),
                        )
                        .order_by(r.position)
                        .limit(room),
                        skip_locked=True,
                    )
                )
                .mappings()
                .all()
            )
            claims: list[Claim] = []
            for row in rows:
                ref, attempt = row["call_ref"], row["attempts"]
                if ref is None:  # a new attempt; else the same attempt claimed again
                    ref, attempt = new_call_ref(), attempt + 1
                    conn.execute(
                        campaign_attempts.insert().values(
                            call_ref=ref,
                            recipient_id=row["id"],
                            campaign_id=campaign_id,
                            attempt=attempt,
                            created_at=now,
                        )
                    )
                taken = conn.execute(
                    campaign_recipients.update()
                    .where(r.id == row["id"], r.state == "queued")
                    .values(
                        state="in_progress",
                        call_ref=ref,
                        attempts=attempt,
                        claimed_at=now,
                        claimed_by=token,
                        updated_at=now,
                    )
                ).rowcount
                if taken != 1:  # pragma: no cover - the row lock / writer lock prevents it
                    raise RuntimeError("recipient claimed concurrently")
                claims.append(
                    Claim(
                        recipient_id=row["id"],
                        campaign_id=campaign_id,
                        call_ref=ref,
                        attempt=attempt,
                        token=token,
                        phone_number=row["phone_number"],
                        dynamic_vars=dict(row["dynamic_vars"] or {}),
                        metadata=row["metadata"],
                        prompt_override=row["prompt_override"],
                    )
                )
            return claims

        return await self._db.write(work)

    async def release(self, claim: Claim, *, retry_at: datetime | None = None) -> bool:
        """Give a claim back (no slot free, or the campaign cannot dial now): ``queued`` again,
        same attempt and ``call_ref``. Only while no call row exists for it."""
        no_call = ~sa.exists().where(calls.c.call_ref == claim.call_ref)

        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                campaign_recipients.update()
                .where(
                    campaign_recipients.c.id == claim.recipient_id,
                    campaign_recipients.c.call_ref == claim.call_ref,
                    campaign_recipients.c.claimed_by == claim.token,
                    campaign_recipients.c.state == "in_progress",
                    no_call,
                )
                .values(
                    state="queued",
                    claimed_at=None,
                    claimed_by=None,
                    next_attempt_at=retry_at,
                    updated_at=utcnow(),
                )
            )
            return result.rowcount == 1

        return await self._db.write(work)

    async def reject(self, claim: Claim, error: dict[str, Any]) -> OutcomeResult:
        """The outbound path refused the recipient before any call existed: ``failed``."""
        no_call = ~sa.exists().where(calls.c.call_ref == claim.call_ref)
        now = utcnow()

        def work(conn: sa.Connection) -> OutcomeResult:
            conn.execute(
                _lock(
                    sa.select(campaigns.c.campaign_id).where(
                        campaigns.c.campaign_id == claim.campaign_id
                    )
                )
            )
            result = conn.execute(
                campaign_recipients.update()
                .where(
                    campaign_recipients.c.id == claim.recipient_id,
                    campaign_recipients.c.call_ref == claim.call_ref,
                    campaign_recipients.c.claimed_by == claim.token,
                    campaign_recipients.c.state == "in_progress",
                    no_call,
                )
                .values(
                    state="failed",
                    call_ref=None,
                    last_outcome="rejected",
                    last_error=error,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:
                return OutcomeResult(applied=False)
            conn.execute(
                campaign_attempts.update()
                .where(campaign_attempts.c.call_ref == claim.call_ref)
                .values(outcome="rejected", ended_at=now)
            )
            return OutcomeResult(
                applied=True,
                state="failed",
                campaign_completed=_complete_if_done(conn, claim.campaign_id, now),
            )

        return await self._db.write(work)

    # --- outcomes -----------------------------------------------------------------------

    async def apply_outcome(
        self, call_ref: str, *, call_id: str, outcome: str, now: datetime | None = None
    ) -> OutcomeResult:
        """A campaign call is final: record its outcome on the recipient, and either queue a
        retry (per the campaign's policy) or settle the recipient. Idempotent: only the first
        application for an attempt changes anything."""
        at = now or utcnow()
        r = campaign_recipients.c

        def work(conn: sa.Connection) -> OutcomeResult:
            attempt = conn.execute(
                sa.select(campaign_attempts.c.campaign_id).where(
                    campaign_attempts.c.call_ref == call_ref
                )
            ).first()
            if attempt is None:
                return OutcomeResult(applied=False)
            camp = (
                conn.execute(
                    _lock(
                        sa.select(
                            campaigns.c.status,
                            campaigns.c.retry_max_attempts,
                            campaigns.c.retry_delay_seconds,
                            campaigns.c.retry_on,
                        ).where(campaigns.c.campaign_id == attempt[0])
                    )
                )
                .mappings()
                .first()
            )
            row = (
                conn.execute(
                    _lock(
                        sa.select(r.id, r.attempts, r.state).where(
                            r.call_ref == call_ref, r.state.in_(_OPEN_STATES)
                        )
                    )
                )
                .mappings()
                .first()
            )
            if camp is None or row is None:
                return OutcomeResult(applied=False)
            retry = (
                outcome in set(camp["retry_on"])
                and row["attempts"] < camp["retry_max_attempts"]
                and camp["status"] not in ("canceled", "completed")
            )
            changes: dict[str, Any] = {
                "call_ref": None,
                "claimed_at": None,
                "claimed_by": None,
                "last_call_id": call_id,
                "last_outcome": outcome,
                "updated_at": at,
            }
            retry_at: datetime | None = None
            if retry:
                retry_at = at + timedelta(seconds=float(camp["retry_delay_seconds"]))
                state = "queued"
                changes["next_attempt_at"] = retry_at
            else:
                state = "completed" if outcome in _REACHED else "failed"
            changes["state"] = state
            conn.execute(campaign_recipients.update().where(r.id == row["id"]).values(**changes))
            conn.execute(
                campaign_attempts.update()
                .where(campaign_attempts.c.call_ref == call_ref)
                .values(outcome=outcome, ended_at=at)
            )
            completed = None if retry else _complete_if_done(conn, attempt[0], at)
            return OutcomeResult(
                applied=True, state=state, retry_at=retry_at, campaign_completed=completed
            )

        return await self._db.write(work)

    async def stale_claims(self, *, claimed_before: datetime, limit: int = 500) -> list[StaleClaim]:
        """``in_progress`` recipients claimed before ``claimed_before`` whose call is missing
        or already final (a live call is left to the call lifecycle)."""
        r = campaign_recipients.c
        stmt = (
            sa.select(r.call_ref, r.campaign_id, calls.c.id, calls.c.slot_held)
            .select_from(campaign_recipients.outerjoin(calls, calls.c.call_ref == r.call_ref))
            .where(
                r.state == "in_progress",
                r.claimed_at < claimed_before,
                sa.or_(calls.c.id.is_(None), calls.c.slot_held.is_(False)),
            )
            .order_by(r.claimed_at)
            .limit(limit)
        )

        def work(conn: sa.Connection) -> list[StaleClaim]:
            return [
                StaleClaim(
                    call_ref=ref,
                    campaign_id=cid,
                    call_exists=call_pk is not None,
                    call_final=call_pk is not None and not held,
                )
                for ref, cid, call_pk, held in conn.execute(stmt)
                if ref is not None
            ]

        return await self._db.read(work)

    async def requeue_unstarted(self, call_ref: str, *, claimed_before: datetime) -> bool:
        """A claim whose dispatcher died before writing the call row: ``queued`` again with
        the same ``call_ref`` (so a stalled original and the next claimer cannot both dial)."""
        r = campaign_recipients.c
        no_call = ~sa.exists().where(calls.c.call_ref == call_ref)

        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                campaign_recipients.update()
                .where(
                    r.call_ref == call_ref,
                    r.state == "in_progress",
                    r.claimed_at < claimed_before,
                    no_call,
                )
                .values(state="queued", claimed_at=None, claimed_by=None, updated_at=utcnow())
            )
            return result.rowcount == 1

        return await self._db.write(work)

    async def in_flight(self, campaign_id: str) -> int:
        """Calls of this campaign holding a concurrency slot now."""

        def work(conn: sa.Connection) -> int:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(calls)
                    .where(calls.c.campaign_id == campaign_id, calls.c.slot_held.is_(True))
                ).scalar_one()
            )

        return await self._db.read(work)


def _complete_if_done(
    conn: sa.Connection, campaign_id: str, now: datetime
) -> CampaignRecord | None:
    """Mark a running/paused campaign completed when no recipient is queued or in progress
    (callers hold the campaign row lock). Returns the completed campaign, once."""
    left = conn.execute(
        sa.select(sa.func.count())
        .select_from(campaign_recipients)
        .where(
            campaign_recipients.c.campaign_id == campaign_id,
            campaign_recipients.c.state.in_(_OPEN_STATES),
        )
    ).scalar_one()
    if left:
        return None
    row = (
        conn.execute(
            campaigns.update()
            .where(
                campaigns.c.campaign_id == campaign_id,
                campaigns.c.status.in_(("running", "paused")),
            )
            .values(status="completed", completed_at=now, updated_at=now)
            .returning(*campaigns.c)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    record = _campaign(row)
    _enqueue_completed_webhooks(conn, record, now)
    return record


def _enqueue_completed_webhooks(
    conn: sa.Connection, campaign: CampaignRecord, now: datetime
) -> int:
    """Queue ``campaign.completed`` in the transaction that completes the campaign (the webhook
    outbox of ``store/webhooks.py``): to the agent's ``webhook_url`` and the calling number's
    slots, with the payload fixed now. Outbox rows hang off a call (``call_pk``): the
    campaign's newest call carries them; a campaign that placed no call has nothing to attach
    to and sends none. The receiver's idempotency key is ``campaign_id`` + ``event``."""
    last_call = conn.execute(
        sa.select(calls.c.id, calls.c.from_number)
        .where(calls.c.campaign_id == campaign.campaign_id)
        .order_by(calls.c.id.desc())
        .limit(1)
    ).first()
    if last_call is None:
        return 0
    counts = dict.fromkeys(RECIPIENT_STATES, 0)
    for state, n in conn.execute(
        sa.select(campaign_recipients.c.state, sa.func.count())
        .where(campaign_recipients.c.campaign_id == campaign.campaign_id)
        .group_by(campaign_recipients.c.state)
    ):
        counts[state] = int(n)
    targets: list[tuple[str, str]] = []
    config = conn.execute(
        sa.select(agents.c.config).where(
            agents.c.agent_id == campaign.agent_id, agents.c.account_id == campaign.account_id
        )
    ).scalar()
    if isinstance(config, dict) and isinstance(config.get("webhook_url"), str):
        targets.append(("agent", config["webhook_url"]))
    number = conn.execute(
        sa.select(phone_numbers.c.webhook_url, phone_numbers.c.webhook2_url).where(
            phone_numbers.c.phone_number == (campaign.from_number or last_call[1]),
            phone_numbers.c.account_id == campaign.account_id,
        )
    ).first()
    if number is not None:
        targets += [("number", number[0]), ("number2", number[1])]
    payload = json.dumps(
        {
            "event": "campaign.completed",
            "campaign_id": campaign.campaign_id,
            "name": campaign.name,
            "agent_id": campaign.agent_id,
            "status": campaign.status,
            "recipients_total": campaign.recipients_total,
            "counts": counts,
            "metadata": campaign.metadata,
            "created_at": campaign.created_at.isoformat().replace("+00:00", "Z"),
            "completed_at": now.isoformat().replace("+00:00", "Z"),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    event_id = new_event_id()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for target, url in targets:
        if not url or not url.strip() or url in seen:
            continue
        seen.add(url)
        rows.append(
            {
                "delivery_id": new_delivery_id(),
                "event_id": event_id,
                "call_pk": last_call[0],
                "call_id": campaign.campaign_id,
                "account_id": campaign.account_id,
                "event": "campaign.completed",
                "target": target,
                "url": url,
                "status": "pending",
                "payload": payload,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    if rows:
        conn.execute(webhook_deliveries.insert(), rows)
    return len(rows)
