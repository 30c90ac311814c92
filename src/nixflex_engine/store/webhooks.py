"""The webhook outbox: rows written with the final call record, claimed by delivery workers.

**Enqueue.** :func:`enqueue_call_webhooks` runs *inside* the transaction that finishes a call
(:meth:`CallRepository.finish_call` / :meth:`CallRepository.fail_dial`), so a final record
and its deliveries commit together or not at all. One row per distinct URL among the agent's
``webhook_url`` and the number's two slots. The event is ``call.ended`` when the call
connected (``answered_at`` set, voicemail hang-ups included), else ``call.failed``.

A ``call.ended`` row waits for post-call analysis: its ``payload`` stays NULL and it is due
only after :data:`ANALYSIS_HOLD_S`. :meth:`WebhookRepository.release` (run once the analysis
has been written) fixes the payload and makes it due at once; if the node died before that,
the row comes due anyway and the worker builds the payload from the record as it is.

**Claim.** :meth:`WebhookRepository.claim` takes due rows with a lease in one statement:
PostgreSQL ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`` (workers on many nodes
take disjoint rows without waiting on each other); SQLite the same conditional UPDATE inside
its ``BEGIN IMMEDIATE`` write transaction (one writer at a time, across processes). A claim
whose lease ran out (the worker died) is due again. The result of an attempt is written only
while the claim's ``lease_token`` still matches, together with the attempt's log row.

**Prune.** :meth:`WebhookRepository.prune_finished` deletes finished rows (``status`` in
:data:`FINAL_STATUSES`: delivered, failed, gone, refused — never ``pending``, which is what a
row waiting, held for analysis or claimed in flight has) whose ``updated_at`` — the moment the
row became final, the last time anything writes it — is older than a cutoff, at most ``limit``
rows per call, one short transaction each; their attempt log goes with them (``ON DELETE
CASCADE``). PostgreSQL picks the rows ``FOR UPDATE SKIP LOCKED`` (pruners on several nodes
take disjoint rows and never wait on each other); SQLite runs it in its one write transaction
at a time. The index ``ix_webhook_deliveries_finished`` (status, updated_at; migration 0004)
keeps the pick from scanning the table.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from nixflex_engine.store.db import Database
from nixflex_engine.store.models import (
    UTCDateTime,
    agents,
    calls,
    phone_numbers,
    webhook_attempts,
    webhook_deliveries,
)

__all__ = [
    "ANALYSIS_HOLD_S",
    "FINAL_STATUSES",
    "AttemptRecord",
    "AttemptResult",
    "ClaimedDelivery",
    "DeliveryRecord",
    "WebhookRepository",
    "enqueue_call_webhooks",
    "event_for",
]

#: How long a ``call.ended`` delivery waits for post-call analysis before it is sent anyway
#: (the analysis gives up after 120 s; this only matters when a node died in between).
ANALYSIS_HOLD_S = 300.0

#: A delivery in one of these is over: no worker will touch it again (pruned after the
#: retention). ``pending`` — waiting, held for analysis, or claimed in flight — is not.
FINAL_STATUSES: tuple[str, ...] = ("delivered", "failed", "gone", "refused")

_d = webhook_deliveries
_a = webhook_attempts


def event_for(answered_at: datetime | None) -> str:
    """``call.ended`` for a call that connected, ``call.failed`` for one that never did."""
    return "call.ended" if answered_at is not None else "call.failed"


def new_delivery_id() -> str:
    return "whd_" + secrets.token_hex(12)


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def enqueue_call_webhooks(conn: sa.Connection, call: Any, now: datetime) -> int:
    """Queue the webhooks of a call that has just become final, in the caller's transaction.

    ``call`` is the finished row (needs ``id``, ``call_id``, ``account_id``, ``agent_id``,
    ``from_number``, ``answered_at``). Returns the number of rows queued.
    """
    targets: list[tuple[str, str]] = []
    config = conn.execute(
        sa.select(agents.c.config).where(
            agents.c.agent_id == call.agent_id, agents.c.account_id == call.account_id
        )
    ).scalar()
    if isinstance(config, dict) and isinstance(config.get("webhook_url"), str):
        targets.append(("agent", config["webhook_url"]))
    number = conn.execute(
        sa.select(phone_numbers.c.webhook_url, phone_numbers.c.webhook2_url).where(
            phone_numbers.c.phone_number == call.from_number,
            phone_numbers.c.account_id == call.account_id,
        )
    ).first()
    if number is not None:
        targets += [("number", number[0]), ("number2", number[1])]
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    event = event_for(call.answered_at)
    event_id = new_event_id()
    due = now + timedelta(seconds=ANALYSIS_HOLD_S) if event == "call.ended" else now
    for target, url in targets:
        if not url or not url.strip() or url in seen:
            continue
        seen.add(url)
        rows.append(
            {
                "delivery_id": new_delivery_id(),
                "event_id": event_id,
                "call_pk": call.id,
                "call_id": call.call_id,
                "account_id": call.account_id,
                "event": event,
                "target": target,
                "url": url,
                "status": "pending",
                "payload": None,
                "attempts": 0,
                "next_attempt_at": due,
                "created_at": now,
                "updated_at": now,
            }
        )
    if rows:
        conn.execute(_d.insert(), rows)
    return len(rows)


@dataclass(slots=True, frozen=True)
class ClaimedDelivery:
    """A due delivery this worker holds until ``lease_expires_at``."""

    id: int
    delivery_id: str
    event_id: str
    call_pk: int
    call_id: str
    account_id: str
    event: str
    url: str
    payload: str | None
    attempts: int
    first_attempt_at: datetime | None
    lease_token: str
    lease_expires_at: datetime
    #: The call row (a ``CallRecord``) when ``payload`` is still to be built, read in the
    #: claim's transaction; None when the payload is fixed or the call is gone.
    call: Any = None


@dataclass(slots=True, frozen=True)
class AttemptResult:
    """What one attempt came to, for :meth:`WebhookRepository.record_attempts`."""

    claimed: ClaimedDelivery
    worker: str
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    #: delivered | retry | failed | gone | refused
    outcome: str
    next_attempt_at: datetime | None
    #: The body this attempt built (stored if the row had none yet).
    payload: str | None


@dataclass(slots=True, frozen=True)
class AttemptRecord:
    attempt: int
    worker: str
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    outcome: str
    next_attempt_at: datetime | None


@dataclass(slots=True, frozen=True)
class DeliveryRecord:
    delivery_id: str
    event_id: str
    call_id: str
    event: str
    target: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    attempt_log: tuple[AttemptRecord, ...]


_CLAIM_COLUMNS = (
    _d.c.id,
    _d.c.delivery_id,
    _d.c.event_id,
    _d.c.call_pk,
    _d.c.call_id,
    _d.c.account_id,
    _d.c.event,
    _d.c.url,
    _d.c.payload,
    _d.c.attempts,
    _d.c.first_attempt_at,
    _d.c.lease_token,
    _d.c.lease_expires_at,
)
_P = sa.bindparam


def _due(now_param: str = "p_now") -> list[sa.ColumnElement[bool]]:
    return [
        _d.c.status == "pending",
        _d.c.next_attempt_at <= _P(now_param),
        sa.or_(_d.c.lease_expires_at.is_(None), _d.c.lease_expires_at <= _P(now_param)),
    ]


class WebhookRepository:
    """Claims, results, releases and listings of webhook deliveries."""

    __slots__ = ("_claim_stmt", "_db", "_prune_stmt")

    def __init__(self, db: Database) -> None:
        self._db = db
        pick = sa.select(_d.c.id).where(*_due()).order_by(_d.c.next_attempt_at).limit(_P("p_limit"))
        if not db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        self._claim_stmt = (
            _d.update()
            .where(_d.c.id.in_(pick), *_due())
            .values(
                lease_owner=_P("p_owner"),
                lease_token=_P("p_token"),
                lease_expires_at=_P("p_until"),
            )
            .returning(*_CLAIM_COLUMNS)
        )
        finished = (_d.c.status.in_(FINAL_STATUSES), _d.c.updated_at < _P("p_before"))
        old = sa.select(_d.c.id).where(*finished).limit(_P("p_limit"))
        if not db.is_sqlite:
            old = old.with_for_update(skip_locked=True)
        # Only the id test outside: the planners then delete by primary key (with the
        # conditions repeated, both scan the whole range of old rows for every batch).
        self._prune_stmt = _d.delete().where(_d.c.id.in_(old))

    async def any_due(self, now: datetime) -> bool:
        """A cheap read: is any delivery due (so a claim is worth a write)?"""
        stmt = sa.select(_d.c.id).where(*_due()).limit(1)

        def work(conn: sa.Connection) -> bool:
            return conn.execute(stmt, {"p_now": now}).first() is not None

        return await self._db.read(work)

    async def claim(
        self, owner: str, *, limit: int, lease_s: float, now: datetime
    ) -> list[ClaimedDelivery]:
        """Take up to ``limit`` due deliveries for ``lease_s`` seconds."""
        if limit <= 0:
            return []
        params = {
            "p_now": now,
            "p_limit": limit,
            "p_owner": owner[:64],
            "p_token": secrets.token_hex(16),
            "p_until": now + timedelta(seconds=lease_s),
        }

        def work(conn: sa.Connection) -> list[ClaimedDelivery]:
            from nixflex_engine.store.repositories import call_from_row

            claimed = [ClaimedDelivery(*row) for row in conn.execute(self._claim_stmt, params)]
            need = [c.call_pk for c in claimed if c.payload is None]
            if not need:
                return claimed
            found = {
                row["id"]: call_from_row(row)
                for row in conn.execute(calls.select().where(calls.c.id.in_(need))).mappings()
            }
            return [
                dataclasses.replace(c, call=found.get(c.call_pk)) if c.payload is None else c
                for c in claimed
            ]

        return await self._db.write(work)

    async def record_attempts(self, results: Sequence[AttemptResult], now: datetime) -> list[bool]:
        """Log attempts and apply their results, in one transaction (see
        :meth:`record_attempt`); returns, for each, whether its claim still held the row."""

        def work(conn: sa.Connection) -> list[bool]:
            return [self._record(conn, r, now) for r in results]

        return await self._db.write(work)

    @staticmethod
    def _record(conn: sa.Connection, r: AttemptResult, now: datetime) -> bool:
        claimed = r.claimed
        status = {"retry": "pending"}.get(r.outcome, r.outcome)
        changes: dict[str, Any] = {
            "status": status,
            "attempts": _d.c.attempts + 1,
            "first_attempt_at": sa.func.coalesce(_d.c.first_attempt_at, r.started_at),
            "last_attempt_at": r.started_at,
            "last_status_code": r.status_code,
            "last_error": r.error,
            "lease_owner": None,
            "lease_token": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        if r.next_attempt_at is not None:
            changes["next_attempt_at"] = r.next_attempt_at
        if r.outcome == "delivered":
            changes["delivered_at"] = now
        if r.payload is not None:
            changes["payload"] = sa.func.coalesce(_d.c.payload, r.payload)
        held = (
            conn.execute(
                _d.update()
                .where(_d.c.id == claimed.id, _d.c.lease_token == claimed.lease_token)
                .values(**changes)
            ).rowcount
            == 1
        )
        # The log row, unless the delivery is gone (its call was deleted meanwhile).
        conn.execute(
            _a.insert().from_select(
                [
                    "delivery_pk",
                    "attempt",
                    "worker",
                    "started_at",
                    "duration_ms",
                    "status_code",
                    "error",
                    "outcome",
                    "next_attempt_at",
                ],
                sa.select(
                    _d.c.id,
                    sa.literal(claimed.attempts + 1),
                    sa.literal(r.worker[:64]),
                    sa.literal(r.started_at, UTCDateTime),
                    sa.literal(round(r.duration_ms, 1), sa.Float),
                    sa.literal(r.status_code, sa.Integer),
                    sa.literal(r.error, sa.Text),
                    sa.literal(r.outcome),
                    sa.literal(r.next_attempt_at, UTCDateTime),
                ).where(_d.c.id == claimed.id),
            )
        )
        return held

    async def record_attempt(
        self,
        claimed: ClaimedDelivery,
        *,
        worker: str,
        started_at: datetime,
        duration_ms: float,
        status_code: int | None,
        error: str | None,
        outcome: str,
        next_attempt_at: datetime | None,
        payload: str | None,
        now: datetime,
    ) -> bool:
        """Log one attempt and apply its result (``outcome``: delivered, retry, failed, gone,
        refused). The log row is always written; the delivery changes only while this claim
        still holds it — returns False when the lease had been lost meanwhile."""
        result = AttemptResult(
            claimed=claimed,
            worker=worker,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=status_code,
            error=error,
            outcome=outcome,
            next_attempt_at=next_attempt_at,
            payload=payload,
        )
        return (await self.record_attempts([result], now))[0]

    async def give_back(self, claims: Sequence[ClaimedDelivery]) -> None:
        """Return claims that were never attempted (shutdown), so any worker takes them now."""
        if not claims:
            return

        def work(conn: sa.Connection) -> None:
            for claimed in claims:
                conn.execute(
                    _d.update()
                    .where(_d.c.id == claimed.id, _d.c.lease_token == claimed.lease_token)
                    .values(lease_owner=None, lease_token=None, lease_expires_at=None)
                )

        await self._db.write(work)

    async def release(self, call_pk: int, payloads: dict[str, str], now: datetime) -> int:
        """The call's analysis is written: fix each held event's payload and make it due now.
        Rows already claimed or already fixed are left alone. Returns rows released."""

        def work(conn: sa.Connection) -> int:
            released = 0
            for event, payload in payloads.items():
                result = conn.execute(
                    _d.update()
                    .where(
                        _d.c.call_pk == call_pk,
                        _d.c.event == event,
                        _d.c.status == "pending",
                        _d.c.payload.is_(None),
                        _d.c.attempts == 0,
                        sa.or_(_d.c.lease_expires_at.is_(None), _d.c.lease_expires_at <= now),
                    )
                    .values(payload=payload, next_attempt_at=now, updated_at=now)
                )
                released += result.rowcount
            return released

        return await self._db.write(work)

    async def pending_events(self, call_pk: int) -> list[str]:
        """Events of this call still waiting for their payload."""
        stmt = (
            sa.select(_d.c.event)
            .where(_d.c.call_pk == call_pk, _d.c.status == "pending", _d.c.payload.is_(None))
            .distinct()
        )

        def work(conn: sa.Connection) -> list[str]:
            return [row[0] for row in conn.execute(stmt)]

        return await self._db.read(work)

    async def list_for_call(
        self, call_id: str, account_id: str, *, limit: int, offset: int
    ) -> tuple[list[DeliveryRecord], int]:
        """The call's deliveries (oldest first) with every attempt, for this account only."""
        where = (_d.c.call_id == call_id, _d.c.account_id == account_id)

        def work(conn: sa.Connection) -> tuple[list[DeliveryRecord], int]:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(_d).where(*where)
            ).scalar_one()
            rows = (
                conn.execute(
                    _d.select().where(*where).order_by(_d.c.id).limit(limit).offset(offset)
                )
                .mappings()
                .all()
            )
            attempts: dict[int, list[AttemptRecord]] = {row["id"]: [] for row in rows}
            if attempts:
                for a in (
                    conn.execute(
                        _a.select()
                        .where(_a.c.delivery_pk.in_(list(attempts)))
                        .order_by(_a.c.delivery_pk, _a.c.id)
                    )
                    .mappings()
                    .all()
                ):
                    attempts[a["delivery_pk"]].append(
                        AttemptRecord(
                            attempt=a["attempt"],
                            worker=a["worker"],
                            started_at=a["started_at"],
                            duration_ms=a["duration_ms"],
                            status_code=a["status_code"],
                            error=a["error"],
                            outcome=a["outcome"],
                            next_attempt_at=a["next_attempt_at"],
                        )
                    )
            out = [
                DeliveryRecord(
                    delivery_id=row["delivery_id"],
                    event_id=row["event_id"],
                    call_id=row["call_id"],
                    event=row["event"],
                    target=row["target"],
                    url=row["url"],
                    status=row["status"],
                    attempts=row["attempts"],
                    next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
                    first_attempt_at=row["first_attempt_at"],
                    last_attempt_at=row["last_attempt_at"],
                    delivered_at=row["delivered_at"],
                    last_status_code=row["last_status_code"],
                    last_error=row["last_error"],
                    created_at=row["created_at"],
                    attempt_log=tuple(attempts[row["id"]]),
                )
                for row in rows
            ]
            return out, int(count)

        return await self._db.read(work)

    async def prune_finished(self, before: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` finished deliveries (and their attempt logs) that became
        final before ``before``, in one short transaction; returns how many went. Call it
        again while it returns ``limit``. Safe to run on many nodes at once."""
        if limit <= 0:
            return 0
        params = {"p_before": before, "p_limit": limit}

        def work(conn: sa.Connection) -> int:
            return int(conn.execute(self._prune_stmt, params).rowcount)

        return await self._db.write(work, single_statement=True)

    async def counts(self) -> dict[str, int]:
        """Deliveries by status (metrics, benchmarks)."""
        stmt = sa.select(_d.c.status, sa.func.count()).group_by(_d.c.status)

        def work(conn: sa.Connection) -> dict[str, int]:
            return {status: int(n) for status, n in conn.execute(stmt)}

        return await self._db.read(work)
