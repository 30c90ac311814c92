"""Repositories: every read and write the engine makes, as small async methods.

Each method is one short transaction and returns frozen dataclasses, never live rows. Methods
that take an ``account_id`` only ever see that account's rows; the unscoped getters
(``AgentRepository.get``, ``PhoneNumberRepository.get``, ``CallRepository.get_by_ref``) exist
for ownership checks (403 vs 404) and for the carrier-facing lifecycle, which has no API key.

Concurrency slots: ``accounts.calls_in_flight`` counts calls with ``calls.slot_held``. A slot is
taken by :meth:`CallRepository.create_reserving_slot` (a conditional UPDATE — atomic on one node
and across nodes sharing PostgreSQL) and given back exactly once by
:meth:`CallRepository.finish_call` / :meth:`CallRepository.fail_dial` (a conditional UPDATE on
``slot_held`` decides who releases it).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from nixflex_engine.processors.prompt import HistoryEntry
from nixflex_engine.store.db import Database
from nixflex_engine.store.models import (
    accounts,
    agents,
    api_keys,
    calls,
    idempotency_keys,
    phone_numbers,
)
from nixflex_engine.store.webhooks import WebhookRepository, enqueue_call_webhooks

__all__ = [
    "ACTIVE_CALL_STATUSES",
    "FINAL_CALL_STATUSES",
    "Account",
    "AccountRepository",
    "AgentRecord",
    "AgentRepository",
    "ApiKeyRecord",
    "CallFilters",
    "CallInProgressError",
    "CallRecord",
    "CallRepository",
    "DuplicateError",
    "IdempotencyRecord",
    "IdempotencyRepository",
    "NewCall",
    "PhoneNumberRecord",
    "PhoneNumberRepository",
    "Repositories",
    "Usage",
    "utcnow",
]

ACTIVE_CALL_STATUSES = ("queued", "ringing", "in-progress")
FINAL_CALL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")


def utcnow() -> datetime:
    return datetime.now(UTC)


# Hot-path statements, built once with bound parameters: constructing a statement with
# literal values costs more CPU than running it on SQLite.
_bp = sa.bindparam
_GET_KEY = api_keys.select().where(api_keys.c.key_id == _bp("p_key_id"))
_GET_AGENT = agents.select().where(agents.c.agent_id == _bp("p_agent_id"))
_GET_NUMBER = phone_numbers.select().where(phone_numbers.c.phone_number == _bp("p_number"))
_FIRST_NUMBER = (
    phone_numbers.select()
    .where(phone_numbers.c.agent_id == _bp("p_agent_id"))
    .order_by(phone_numbers.c.created_at, phone_numbers.c.phone_number)
    .limit(1)
)
# The agent and the number an outbound call would use, in one query (steps 3-5 of the seed's
# validation need both): the given from_number, or the agent's first attached number.
_AGENT_AND_NUMBER_COLUMNS = [c.label(f"a_{c.name}") for c in agents.c] + [
    c.label(f"n_{c.name}") for c in phone_numbers.c
]
_AGENT_WITH_FROM_NUMBER = (
    sa.select(*_AGENT_AND_NUMBER_COLUMNS)
    .select_from(agents.outerjoin(phone_numbers, phone_numbers.c.phone_number == _bp("p_number")))
    .where(agents.c.agent_id == _bp("p_agent_id"))
)
_AGENT_WITH_FIRST_NUMBER = (
    sa.select(*_AGENT_AND_NUMBER_COLUMNS)
    .select_from(agents.outerjoin(phone_numbers, phone_numbers.c.agent_id == agents.c.agent_id))
    .where(agents.c.agent_id == _bp("p_agent_id"))
    .order_by(phone_numbers.c.created_at, phone_numbers.c.phone_number)
    .limit(1)
)
_RESERVE_SLOT = (
    accounts.update()
    .where(
        accounts.c.account_id == _bp("p_account_id"),
        accounts.c.calls_in_flight
        < sa.func.coalesce(accounts.c.max_concurrent_calls, _bp("p_default_limit")),
    )
    .values(
        calls_in_flight=accounts.c.calls_in_flight + 1,
        peak_concurrent_calls=sa.case(
            (
                accounts.c.calls_in_flight + 1 > accounts.c.peak_concurrent_calls,
                accounts.c.calls_in_flight + 1,
            ),
            else_=accounts.c.peak_concurrent_calls,
        ),
    )
)
_RELEASE_SLOT = (
    accounts.update()
    .where(accounts.c.account_id == _bp("p_account_id"), accounts.c.calls_in_flight > 0)
    .values(calls_in_flight=accounts.c.calls_in_flight - 1)
)
_MARK_DIALED = (
    calls.update()
    .where(calls.c.call_ref == _bp("p_ref"))
    .values(call_id=_bp("p_sid"), updated_at=_bp("p_now"))
)
_GET_CALL = calls.select().where(calls.c.call_id == _bp("p_call_id"))
_GET_OWN_CALL = calls.select().where(
    calls.c.call_id == _bp("p_call_id"), calls.c.account_id == _bp("p_account_id")
)
_GET_CALL_BY_REF = calls.select().where(calls.c.call_ref == _bp("p_ref"))
_INSERT_CALL = calls.insert().returning(calls.c.id)
# PostgreSQL: reserve the slot and insert the record in ONE statement (a data-modifying CTE
# is atomic), so the whole step is one round trip in autocommit. The UPDATE's row lock and
# READ COMMITTED re-check make racing statements queue on the account row; when the limit is
# reached the UPDATE returns no row and nothing is inserted.
_CALL_INSERT_COLUMNS = [c for c in calls.c if c.name != "id"]
_RESERVED = _RESERVE_SLOT.returning(accounts.c.account_id).cte("reserved")
_RESERVE_AND_INSERT_CALL = (
    calls.insert()
    .from_select(
        [c.name for c in _CALL_INSERT_COLUMNS],
        sa.select(*(_bp(f"v_{c.name}", type_=c.type) for c in _CALL_INSERT_COLUMNS)).select_from(
            _RESERVED
        ),
    )
    .returning(calls.c.id)
)


class DuplicateError(Exception):
    """A row with the same unique key already exists."""


class CallInProgressError(Exception):
    """The call still holds a concurrency slot (it has not ended yet)."""


# --------------------------------------------------------------------------------------------
# accounts and keys


@dataclass(slots=True, frozen=True)
class Account:
    account_id: str
    name: str
    max_concurrent_calls: int | None
    calls_in_flight: int
    peak_concurrent_calls: int
    created_at: datetime


@dataclass(slots=True, frozen=True)
class ApiKeyRecord:
    key_id: str
    account_id: str
    name: str
    secret_hash: str
    secret_encrypted: str
    created_at: datetime
    revoked: bool


@dataclass(slots=True, frozen=True)
class Usage:
    calls: int
    completed_calls: int
    failed_calls: int
    total_duration_seconds: float
    calls_in_flight: int
    peak_concurrent_calls: int
    max_concurrent_calls: int | None


def _account(row: Mapping[Any, Any]) -> Account:
    return Account(
        account_id=row["account_id"],
        name=row["name"],
        max_concurrent_calls=row["max_concurrent_calls"],
        calls_in_flight=row["calls_in_flight"],
        peak_concurrent_calls=row["peak_concurrent_calls"],
        created_at=row["created_at"],
    )


def _key(row: Mapping[Any, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row["key_id"],
        account_id=row["account_id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        secret_encrypted=row["secret_encrypted"],
        created_at=row["created_at"],
        revoked=row["revoked_at"] is not None,
    )


class AccountRepository:
    """Accounts, their API keys, limits and usage."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_with_key(
        self,
        *,
        name: str,
        key_id: str,
        secret_hash: str,
        secret_encrypted: str,
        max_concurrent_calls: int | None = None,
    ) -> Account:
        now = utcnow()
        account_id = "acct_" + secrets.token_hex(8)

        def work(conn: sa.Connection) -> None:
            conn.execute(
                accounts.insert().values(
                    account_id=account_id,
                    name=name,
                    max_concurrent_calls=max_concurrent_calls,
                    calls_in_flight=0,
                    peak_concurrent_calls=0,
                    created_at=now,
                )
            )
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    account_id=account_id,
                    name=name,
                    secret_hash=secret_hash,
                    secret_encrypted=secret_encrypted,
                    created_at=now,
                )
            )

        await self._db.write(work)
        return Account(account_id, name, max_concurrent_calls, 0, 0, now)

    async def get(self, account_id: str) -> Account | None:
        def work(conn: sa.Connection) -> Account | None:
            row = (
                conn.execute(accounts.select().where(accounts.c.account_id == account_id))
                .mappings()
                .first()
            )
            return _account(row) if row else None

        return await self._db.read(work, point=True)

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        row = await self._db.read_row(_GET_KEY, {"p_key_id": key_id})
        return _key(row) if row else None

    async def signing_key(self, account_id: str) -> ApiKeyRecord | None:
        """The key whose secret signs this account's webhooks: its newest live key.
        ``secret_encrypted`` decrypts (``Crypto.decrypt``) to the key secret."""

        def work(conn: sa.Connection) -> ApiKeyRecord | None:
            row = (
                conn.execute(
                    api_keys.select()
                    .where(api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
                    .order_by(api_keys.c.created_at.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
            return _key(row) if row else None

        return await self._db.read(work)

    async def rotate_key(self, key_id: str, *, secret_hash: str, secret_encrypted: str) -> bool:
        """Replace the key's secret; the old one stops matching as soon as this commits."""

        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(
                    secret_hash=secret_hash, secret_encrypted=secret_encrypted, rotated_at=utcnow()
                )
            )
            return result.rowcount == 1

        return await self._db.write(work)

    async def revoke_key(self, key_id: str) -> bool:
        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return result.rowcount == 1

        return await self._db.write(work)

    async def set_max_concurrent_calls(self, account_id: str, limit: int | None) -> None:
        def work(conn: sa.Connection) -> None:
            conn.execute(
                accounts.update()
                .where(accounts.c.account_id == account_id)
                .values(max_concurrent_calls=limit)
            )

        await self._db.write(work)

    async def usage(self, account_id: str, *, since: datetime | None = None) -> Usage:
        """Call counts and minutes (optionally since a time), slots in use, peak concurrency."""
        conditions = [calls.c.account_id == account_id]
        if since is not None:
            conditions.append(calls.c.created_at >= since)
        stmt = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((calls.c.status == "completed", 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((calls.c.status == "failed", 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(calls.c.duration_seconds), 0.0),
        ).where(*conditions)

        def work(conn: sa.Connection) -> Usage:
            total, completed, failed, seconds = conn.execute(stmt).one()
            row = (
                conn.execute(accounts.select().where(accounts.c.account_id == account_id))
                .mappings()
                .one()
            )
            return Usage(
                calls=int(total),
                completed_calls=int(completed),
                failed_calls=int(failed),
                total_duration_seconds=float(seconds),
                calls_in_flight=row["calls_in_flight"],
                peak_concurrent_calls=row["peak_concurrent_calls"],
                max_concurrent_calls=row["max_concurrent_calls"],
            )

        return await self._db.read(work)

    async def total_calls_in_flight(self) -> int:
        """Calls holding a slot across all accounts (the /metrics gauge)."""

        def work(conn: sa.Connection) -> int:
            stmt = sa.select(sa.func.coalesce(sa.func.sum(accounts.c.calls_in_flight), 0))
            return int(conn.execute(stmt).scalar_one())

        return await self._db.read(work)


# --------------------------------------------------------------------------------------------
# agents


@dataclass(slots=True, frozen=True)
class AgentRecord:
    agent_id: str
    account_id: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def _agent(row: Mapping[Any, Any]) -> AgentRecord:
    return AgentRecord(
        agent_id=row["agent_id"],
        account_id=row["account_id"],
        config=dict(row["config"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def new_agent_id() -> str:
    return "agent_" + secrets.token_hex(8)


class AgentRepository:
    """Agents. ``config`` holds every agent field, already validated by the caller."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, account_id: str, config: dict[str, Any]) -> AgentRecord:
        now = utcnow()
        agent_id = new_agent_id()

        def work(conn: sa.Connection) -> None:
            conn.execute(
                agents.insert().values(
                    agent_id=agent_id,
                    account_id=account_id,
                    config=config,
                    created_at=now,
                    updated_at=now,
                )
            )

        await self._db.write(work)
        return AgentRecord(agent_id, account_id, dict(config), now, now)

    async def get(self, agent_id: str) -> AgentRecord | None:
        """The agent whatever its account (callers check ownership)."""

        row = await self._db.read_row(_GET_AGENT, {"p_agent_id": agent_id})
        return _agent(row) if row else None

    async def get_with_number(
        self, agent_id: str, from_number: str | None
    ) -> tuple[AgentRecord | None, PhoneNumberRecord | None]:
        """The agent and, in the same read, the number an outbound call would use: the given
        ``from_number`` (whatever its account; callers check), else the agent's first."""

        if from_number is not None:
            stmt, params = (
                _AGENT_WITH_FROM_NUMBER,
                {"p_agent_id": agent_id, "p_number": from_number},
            )
        else:
            stmt, params = _AGENT_WITH_FIRST_NUMBER, {"p_agent_id": agent_id}

        def work(conn: sa.Connection) -> tuple[AgentRecord | None, PhoneNumberRecord | None]:
            row = conn.execute(stmt, params).mappings().first()
            if row is None:
                return None, None
            agent = _agent({c.name: row[f"a_{c.name}"] for c in agents.c})
            if row["n_phone_number"] is None:
                return agent, None
            return agent, _number({c.name: row[f"n_{c.name}"] for c in phone_numbers.c})

        return await self._db.read(work, point=True)

    async def list_page(
        self, account_id: str, *, limit: int, offset: int
    ) -> tuple[list[AgentRecord], int]:
        where = agents.c.account_id == account_id

        def work(conn: sa.Connection) -> tuple[list[AgentRecord], int]:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(agents).where(where)
            ).scalar_one()
            rows = (
                conn.execute(
                    agents.select()
                    .where(where)
                    .order_by(agents.c.created_at.desc(), agents.c.agent_id.desc())
                    .limit(limit)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
            return [_agent(r) for r in rows], int(count)

        return await self._db.read(work)

    async def replace_config(
        self, agent_id: str, account_id: str, config: dict[str, Any]
    ) -> AgentRecord | None:
        """Store a whole new (validated) config; None when the agent is not this account's."""
        now = utcnow()

        def work(conn: sa.Connection) -> AgentRecord | None:
            row = (
                conn.execute(
                    agents.update()
                    .where(agents.c.agent_id == agent_id, agents.c.account_id == account_id)
                    .values(config=config, updated_at=now)
                    .returning(*agents.c)
                )
                .mappings()
                .first()
            )
            return _agent(row) if row else None

        return await self._db.write(work)

    async def delete(self, agent_id: str, account_id: str) -> bool:
        """Delete the agent and detach its numbers; its past calls stay."""

        def work(conn: sa.Connection) -> bool:
            conn.execute(
                phone_numbers.update()
                .where(
                    phone_numbers.c.agent_id == agent_id,
                    phone_numbers.c.account_id == account_id,
                )
                .values(agent_id=None, updated_at=utcnow())
            )
            result = conn.execute(
                agents.delete().where(
                    agents.c.agent_id == agent_id, agents.c.account_id == account_id
                )
            )
            return result.rowcount == 1

        return await self._db.write(work)

    async def phone_numbers_of(self, agent_ids: Sequence[str]) -> dict[str, list[str]]:
        """Numbers attached to each agent, oldest attachment first."""
        out: dict[str, list[str]] = {a: [] for a in agent_ids}
        if not agent_ids:
            return out

        def work(conn: sa.Connection) -> dict[str, list[str]]:
            rows = conn.execute(
                sa.select(phone_numbers.c.agent_id, phone_numbers.c.phone_number)
                .where(phone_numbers.c.agent_id.in_(list(agent_ids)))
                .order_by(phone_numbers.c.created_at, phone_numbers.c.phone_number)
            )
            for agent_id, number in rows:
                out[agent_id].append(number)
            return out

        return await self._db.read(work)


# --------------------------------------------------------------------------------------------
# phone numbers


@dataclass(slots=True, frozen=True)
class PhoneNumberRecord:
    phone_number: str
    account_id: str
    agent_id: str | None
    carrier: str
    twilio_account_sid: str | None
    twilio_auth_token_encrypted: str | None = field(repr=False)
    twilio_number_sid: str | None
    webhook_url: str | None
    webhook2_url: str | None
    created_at: datetime
    updated_at: datetime


def _number(row: Mapping[Any, Any]) -> PhoneNumberRecord:
    return PhoneNumberRecord(
        phone_number=row["phone_number"],
        account_id=row["account_id"],
        agent_id=row["agent_id"],
        carrier=row["carrier"],
        twilio_account_sid=row["twilio_account_sid"],
        twilio_auth_token_encrypted=row["twilio_auth_token_encrypted"],
        twilio_number_sid=row["twilio_number_sid"],
        webhook_url=row["webhook_url"],
        webhook2_url=row["webhook2_url"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_NUMBER_UPDATABLE = frozenset(
    {
        "agent_id",
        "twilio_account_sid",
        "twilio_auth_token_encrypted",
        "twilio_number_sid",
        "webhook_url",
        "webhook2_url",
    }
)


class PhoneNumberRepository:
    """Imported carrier numbers, their credentials (encrypted) and webhook slots."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        phone_number: str,
        account_id: str,
        agent_id: str | None,
        twilio_account_sid: str,
        twilio_auth_token_encrypted: str,
        twilio_number_sid: str | None,
    ) -> PhoneNumberRecord:
        now = utcnow()
        values = {
            "phone_number": phone_number,
            "account_id": account_id,
            "agent_id": agent_id,
            "carrier": "twilio",
            "twilio_account_sid": twilio_account_sid,
            "twilio_auth_token_encrypted": twilio_auth_token_encrypted,
            "twilio_number_sid": twilio_number_sid,
            "webhook_url": None,
            "webhook2_url": None,
            "created_at": now,
            "updated_at": now,
        }

        def work(conn: sa.Connection) -> None:
            conn.execute(phone_numbers.insert().values(**values))

        try:
            await self._db.write(work)
        except IntegrityError as exc:
            raise DuplicateError(phone_number) from exc
        return _number(values)

    async def get(self, phone_number: str) -> PhoneNumberRecord | None:
        """The number whatever its account (callers check ownership)."""

        row = await self._db.read_row(_GET_NUMBER, {"p_number": phone_number})
        return _number(row) if row else None

    async def get_owned(self, phone_number: str, account_id: str) -> PhoneNumberRecord | None:
        record = await self.get(phone_number)
        return record if record is not None and record.account_id == account_id else None

    async def first_for_agent(self, agent_id: str) -> PhoneNumberRecord | None:
        """The agent's first attached number (oldest import first)."""

        def work(conn: sa.Connection) -> PhoneNumberRecord | None:
            row = conn.execute(_FIRST_NUMBER, {"p_agent_id": agent_id}).mappings().first()
            return _number(row) if row else None

        return await self._db.read(work, point=True)

    async def list_page(
        self, account_id: str, *, agent_id: str | None = None, limit: int, offset: int
    ) -> tuple[list[PhoneNumberRecord], int]:
        conditions = [phone_numbers.c.account_id == account_id]
        if agent_id is not None:
            conditions.append(phone_numbers.c.agent_id == agent_id)

        def work(conn: sa.Connection) -> tuple[list[PhoneNumberRecord], int]:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(phone_numbers).where(*conditions)
            ).scalar_one()
            rows = (
                conn.execute(
                    phone_numbers.select()
                    .where(*conditions)
                    .order_by(
                        phone_numbers.c.created_at.desc(), phone_numbers.c.phone_number.desc()
                    )
                    .limit(limit)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
            return [_number(r) for r in rows], int(count)

        return await self._db.read(work)

    async def update(
        self, phone_number: str, account_id: str, changes: Mapping[str, Any]
    ) -> PhoneNumberRecord | None:
        """Apply ``changes`` (column → value) atomically; None when not this account's."""
        unknown = set(changes) - _NUMBER_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")

        def work(conn: sa.Connection) -> PhoneNumberRecord | None:
            row = (
                conn.execute(
                    phone_numbers.update()
                    .where(
                        phone_numbers.c.phone_number == phone_number,
                        phone_numbers.c.account_id == account_id,
                    )
                    .values(**changes, updated_at=utcnow())
                    .returning(*phone_numbers.c)
                )
                .mappings()
                .first()
            )
            return _number(row) if row else None

        return await self._db.write(work)

    async def delete(self, phone_number: str, account_id: str) -> bool:
        def work(conn: sa.Connection) -> bool:
            result = conn.execute(
                phone_numbers.delete().where(
                    phone_numbers.c.phone_number == phone_number,
                    phone_numbers.c.account_id == account_id,
                )
            )
            return result.rowcount == 1

        return await self._db.write(work)


# --------------------------------------------------------------------------------------------
# calls


@dataclass(slots=True, frozen=True)
class NewCall:
    """What the outbound service knows before dialing."""

    account_id: str
    agent_id: str
    from_number: str
    to_number: str
    voicemail_action: str
    dynamic_vars: dict[str, str]
    metadata: dict[str, Any] | None = None
    campaign_id: str | None = None
    prompt: str | None = None
    voicemail_message: str | None = None
    #: The engine reference to record the call under; None = a fresh one. A campaign fixes it
    #: per attempt before dialing: ``calls.call_ref`` is unique, so a second insert of the same
    #: attempt raises :class:`DuplicateError` and is never dialed.
    call_ref: str | None = None


@dataclass(slots=True, frozen=True)
class CallRecord:
    id: int
    call_id: str
    call_ref: str
    account_id: str
    agent_id: str
    campaign_id: str | None
    direction: str
    status: str
    from_number: str
    to_number: str
    metadata: dict[str, Any] | None
    dynamic_vars: dict[str, Any]
    prompt: str | None
    voicemail_action: str
    voicemail_message: str | None
    created_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    ended_reason: str | None
    voicemail_detected: bool | None
    voicemail_detection_method: str | None
    amd_result: str | None
    transcript: list[Any]
    recording_path: str | None
    recording_duration_seconds: float | None
    call_summary: str | None
    caller_sentiment: str | None
    call_successful: bool | None
    extracted_data: dict[str, Any]
    latency: dict[str, Any] | None
    twilio_error: dict[str, Any] | None
    slot_held: bool
    updated_at: datetime


_CALL_FIELDS = CallRecord.__slots__


def _call(row: Mapping[Any, Any]) -> CallRecord:
    return CallRecord(*(row[name] for name in _CALL_FIELDS))


def call_from_row(row: Mapping[Any, Any]) -> CallRecord:
    """A ``calls`` row as a :class:`CallRecord` (for other stores reading call rows)."""
    return _call(row)


@dataclass(slots=True, frozen=True)
class CallFilters:
    agent_id: str | None = None
    campaign_id: str | None = None
    status: str | None = None
    to_number: str | None = None
    since: datetime | None = None
    until: datetime | None = None


# Fields the call lifecycle may set through update_call / finish_call.
_CALL_LIFECYCLE_FIELDS = frozenset(
    {
        "answered_at",
        "ended_at",
        "duration_seconds",
        "ended_reason",
        "voicemail_detected",
        "voicemail_detection_method",
        "amd_result",
        "transcript",
        "recording_path",
        "recording_duration_seconds",
        "call_summary",
        "caller_sentiment",
        "call_successful",
        "extracted_data",
        "latency",
        "twilio_error",
    }
)


def _history_outcome(successful: bool | None, ended_reason: str | None) -> str:
    """How a past call went, for the history block: "successful"/"unsuccessful" (from the
    analysis) and how it ended, e.g. ``"unsuccessful, ended: caller_hangup"``."""
    parts = []
    if successful is not None:
        parts.append("successful" if successful else "unsuccessful")
    if ended_reason:
        parts.append(f"ended: {ended_reason}")
    return ", ".join(parts)


def new_call_ref() -> str:
    """The engine's own call reference, shaped like a carrier SID (``CA`` + 32 hex)."""
    return "CA" + secrets.token_hex(16)


class CallRepository:
    """Call records: created before the dial, moved through their states by the lifecycle."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_reserving_slot(
        self, call: NewCall, *, default_limit: int
    ) -> CallRecord | None:
        """Take a concurrency slot and write the ``queued`` record, in one transaction.

        Returns None (and writes nothing) when the account's calls in flight have reached its
        limit (``max_concurrent_calls``, else ``default_limit``). The conditional UPDATE is
        the check and the reservation at once, so racing requests — in one process or in
        several sharing PostgreSQL — cannot both take the last slot.
        """
        now = utcnow()
        ref = call.call_ref or new_call_ref()
        values: dict[str, Any] = {
            "call_id": ref,
            "call_ref": ref,
            "account_id": call.account_id,
            "agent_id": call.agent_id,
            "campaign_id": call.campaign_id,
            "direction": "outbound",
            "status": "queued",
            "from_number": call.from_number,
            "to_number": call.to_number,
            "metadata": call.metadata,
            "dynamic_vars": call.dynamic_vars,
            "prompt": call.prompt,
            "voicemail_action": call.voicemail_action,
            "voicemail_message": call.voicemail_message,
            "created_at": now,
            "answered_at": None,
            "ended_at": None,
            "duration_seconds": None,
            "ended_reason": None,
            "voicemail_detected": None,
            "voicemail_detection_method": None,
            "amd_result": None,
            "transcript": [],
            "recording_path": None,
            "recording_duration_seconds": None,
            "call_summary": None,
            "caller_sentiment": None,
            "call_successful": None,
            "extracted_data": {},
            "latency": None,
            "twilio_error": None,
            "slot_held": True,
            "updated_at": now,
        }
        reserve = {"p_account_id": call.account_id, "p_default_limit": default_limit}

        def two_statements(conn: sa.Connection) -> int | None:
            if conn.execute(_RESERVE_SLOT, reserve).rowcount != 1:
                return None
            new_id: int = conn.execute(_INSERT_CALL, values).scalar_one()
            return new_id

        def one_statement(conn: sa.Connection) -> int | None:
            params = {**reserve, **{f"v_{name}": value for name, value in values.items()}}
            new_id: int | None = conn.execute(_RESERVE_AND_INSERT_CALL, params).scalar()
            return new_id

        try:
            if self._db.is_sqlite:  # SQLite has no UPDATE inside WITH; one thread hop anyway
                new_id = await self._db.write(two_statements)
            else:
                new_id = await self._db.write(one_statement, single_statement=True)
        except IntegrityError as exc:
            if call.call_ref is None:
                raise
            raise DuplicateError(call.call_ref) from exc  # nothing written, slot not taken
        return None if new_id is None else _call({"id": new_id, **values})

    async def mark_dialed(self, call_ref: str, call_sid: str) -> bool:
        """The carrier accepted the dial: the call's public id becomes the carrier SID."""
        params = {"p_ref": call_ref, "p_sid": call_sid, "p_now": utcnow()}

        def work(conn: sa.Connection) -> bool:
            return conn.execute(_MARK_DIALED, params).rowcount == 1

        return await self._db.write(work, single_statement=True)

    async def fail_dial(
        self, call_ref: str, twilio_error: dict[str, Any], *, outbox: bool = True
    ) -> bool:
        """The carrier rejected the dial: record it as failed and give the slot back (and,
        with ``outbox``, queue its ``call.failed`` webhooks in the same transaction)."""
        return await self._finish(
            calls.c.call_ref == call_ref,
            status="failed",
            ended_reason="failed",
            fields={"ended_at": utcnow(), "twilio_error": twilio_error},
            outbox=outbox,
        )

    async def update_status(self, call_id: str, status: str, **fields: Any) -> CallRecord | None:
        """Move a live call to a non-final ``status`` (``ringing``, ``in-progress``), with
        optional lifecycle ``fields`` (e.g. ``answered_at``, ``amd_result``). A call that has
        already ended is left alone (late or duplicate carrier callbacks); returns the updated
        record, or None when nothing changed.
        """
        if status not in ACTIVE_CALL_STATUSES:
            raise ValueError(f"{status!r} is not a live status; use finish_call")
        self._check_fields(fields)
        return await self._update_returning(
            calls.update()
            .where(calls.c.call_id == call_id, calls.c.status.in_(ACTIVE_CALL_STATUSES))
            .values(status=status, updated_at=utcnow(), **fields)
        )

    async def finish_call(
        self, call_id: str, status: str, ended_reason: str, *, outbox: bool = True, **fields: Any
    ) -> bool:
        """End a call: final ``status`` + ``ended_reason`` (+ lifecycle ``fields``, e.g.
        ``ended_at``, ``duration_seconds``, ``transcript``), and release its concurrency slot.

        Safe to call twice or from two nodes: only the first call to end it changes the status
        and releases the slot; it returns True for that one and False afterwards.

        With ``outbox`` (the default) the call's webhooks (``call.ended`` if it connected,
        else ``call.failed``) are queued in the same transaction (``store.webhooks``).
        """
        if status not in FINAL_CALL_STATUSES:
            raise ValueError(f"{status!r} is not a final status")
        self._check_fields(fields)
        fields.setdefault("ended_at", utcnow())
        return await self._finish(
            calls.c.call_id == call_id,
            status=status,
            ended_reason=ended_reason,
            fields=fields,
            outbox=outbox,
        )

    async def update_call(self, call_id: str, **fields: Any) -> CallRecord | None:
        """Set lifecycle/analysis fields (transcript, recording, summary, ...) on a call
        without changing its status."""
        self._check_fields(fields)
        return await self._update_returning(
            calls.update().where(calls.c.call_id == call_id).values(updated_at=utcnow(), **fields)
        )

    async def _update_returning(self, stmt: sa.Update) -> CallRecord | None:
        def work(conn: sa.Connection) -> CallRecord | None:
            row = conn.execute(stmt.returning(*calls.c)).mappings().first()
            return _call(row) if row else None

        return await self._db.write(work, single_statement=True)

    async def _finish(
        self,
        where: sa.ColumnElement[bool],
        *,
        status: str,
        ended_reason: str,
        fields: dict[str, Any],
        outbox: bool = True,
    ) -> bool:
        end = (
            calls.update()
            .where(where, calls.c.slot_held.is_(True))
            .values(
                status=status,
                ended_reason=ended_reason,
                slot_held=False,
                updated_at=utcnow(),
                **fields,
            )
            .returning(
                calls.c.account_id,
                calls.c.id,
                calls.c.call_id,
                calls.c.agent_id,
                calls.c.from_number,
                calls.c.answered_at,
            )
        )

        def work(conn: sa.Connection) -> bool:
            row = conn.execute(end).first()
            if row is None:
                return False
            conn.execute(_RELEASE_SLOT, {"p_account_id": row[0]})
            if outbox:
                # The webhooks commit with the final record, or neither does.
                enqueue_call_webhooks(conn, row, utcnow())
            return True

        return await self._db.write(work)

    @staticmethod
    def _check_fields(fields: Mapping[str, Any]) -> None:
        unknown = set(fields) - _CALL_LIFECYCLE_FIELDS
        if unknown:
            raise ValueError(f"not a lifecycle field: {sorted(unknown)}")

    async def _select_one(self, stmt: sa.Select[Any], params: dict[str, Any]) -> CallRecord | None:
        row = await self._db.read_row(stmt, params)
        return _call(row) if row else None

    async def get(self, call_id: str, account_id: str | None = None) -> CallRecord | None:
        """A call by public id; with ``account_id``, only if it is that account's."""
        if account_id is None:
            return await self._select_one(_GET_CALL, {"p_call_id": call_id})
        return await self._select_one(
            _GET_OWN_CALL, {"p_call_id": call_id, "p_account_id": account_id}
        )

    async def get_by_ref(self, call_ref: str) -> CallRecord | None:
        """A call by the engine's reference (stable from creation, before the SID exists)."""
        return await self._select_one(_GET_CALL_BY_REF, {"p_ref": call_ref})

    async def history_for(
        self,
        account_id: str,
        to_number: str,
        *,
        limit: int,
        before: CallRecord | None = None,
    ) -> list[HistoryEntry]:
        """Summaries of this account's past calls to ``to_number``, newest first, for a call's
        history block: completed calls with a ``call_summary``, whatever the agent, never
        another account's. ``before`` (the call being placed) and anything created after it
        are left out."""
        if limit <= 0:
            return []
        conditions: list[sa.ColumnElement[bool]] = [
            calls.c.account_id == account_id,
            calls.c.to_number == to_number,
            calls.c.status == "completed",
            calls.c.call_summary.is_not(None),
        ]
        if before is not None:
            conditions += [calls.c.id != before.id, calls.c.created_at <= before.created_at]
        stmt = (
            sa.select(
                calls.c.created_at,
                calls.c.ended_at,
                calls.c.call_summary,
                calls.c.call_successful,
                calls.c.ended_reason,
            )
            .where(*conditions)
            .order_by(calls.c.created_at.desc(), calls.c.id.desc())
            .limit(limit)
        )

        def work(conn: sa.Connection) -> list[HistoryEntry]:
            return [
                HistoryEntry(
                    date=row.ended_at or row.created_at,
                    summary=row.call_summary,
                    outcome=_history_outcome(row.call_successful, row.ended_reason),
                )
                for row in conn.execute(stmt)
                if row.call_summary.strip()
            ]

        return await self._db.read(work)

    async def list_page(
        self, account_id: str, filters: CallFilters, *, limit: int, offset: int
    ) -> tuple[list[CallRecord], int]:
        conditions: list[sa.ColumnElement[bool]] = [calls.c.account_id == account_id]
        if filters.agent_id is not None:
            conditions.append(calls.c.agent_id == filters.agent_id)
        if filters.campaign_id is not None:
            conditions.append(calls.c.campaign_id == filters.campaign_id)
        if filters.status is not None:
            conditions.append(calls.c.status == filters.status)
        if filters.to_number is not None:
            conditions.append(calls.c.to_number == filters.to_number)
        if filters.since is not None:
            conditions.append(calls.c.created_at >= filters.since)
        if filters.until is not None:
            conditions.append(calls.c.created_at < filters.until)

        def work(conn: sa.Connection) -> tuple[list[CallRecord], int]:
            count = conn.execute(
                sa.select(sa.func.count()).select_from(calls).where(*conditions)
            ).scalar_one()
            rows = (
                conn.execute(
                    calls.select()
                    .where(*conditions)
                    .order_by(calls.c.created_at.desc(), calls.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
            return [_call(r) for r in rows], int(count)

        return await self._db.read(work)

    async def delete(self, call_id: str, account_id: str) -> CallRecord | None:
        """Delete an ended call (returned, so the caller can remove its recording); None when
        it is not this account's. Raises :class:`CallInProgressError` while it is live."""

        def work(conn: sa.Connection) -> CallRecord | None:
            row = (
                conn.execute(
                    calls.select().where(
                        calls.c.call_id == call_id, calls.c.account_id == account_id
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            if row["slot_held"]:
                raise CallInProgressError(call_id)
            conn.execute(
                calls.delete().where(calls.c.id == row["id"], calls.c.slot_held.is_(False))
            )
            return _call(row)

        return await self._db.write(work)

    async def open_calls(self, *, updated_before: datetime, limit: int = 500) -> list[CallRecord]:
        """Calls still holding a slot (queued/ringing/in-progress) that nothing has touched
        since ``updated_before``: candidates for reconciling with the carrier after a crash."""
        stmt = (
            calls.select()
            .where(calls.c.slot_held.is_(True), calls.c.updated_at < updated_before)
            .order_by(calls.c.updated_at)
            .limit(limit)
        )

        def work(conn: sa.Connection) -> list[CallRecord]:
            return [_call(r) for r in conn.execute(stmt).mappings().all()]

        return await self._db.read(work)

    async def touch_calls(self, call_ids: Sequence[str]) -> int:
        """Mark live calls as held by a running node (``updated_at`` = now); returns how many
        are still live. A node heartbeats the calls it holds so other nodes leave them alone."""
        if not call_ids:
            return 0
        stmt = (
            calls.update()
            .where(calls.c.call_id.in_(list(call_ids)), calls.c.slot_held.is_(True))
            .values(updated_at=utcnow())
        )

        def work(conn: sa.Connection) -> int:
            return int(conn.execute(stmt).rowcount)

        return await self._db.write(work, single_statement=True)

    async def recount_in_flight(self, account_id: str) -> int:
        """Reset the account's slot counter from the rows that hold a slot (repair tool)."""

        def work(conn: sa.Connection) -> int:
            held = conn.execute(
                sa.select(sa.func.count())
                .select_from(calls)
                .where(calls.c.account_id == account_id, calls.c.slot_held.is_(True))
            ).scalar_one()
            conn.execute(
                accounts.update()
                .where(accounts.c.account_id == account_id)
                .values(calls_in_flight=held)
            )
            return int(held)

        return await self._db.write(work)


# --------------------------------------------------------------------------------------------
# idempotency


@dataclass(slots=True, frozen=True)
class IdempotencyRecord:
    request_hash: str
    response_status: int | None
    response_body_encrypted: str | None
    created_at: datetime


class IdempotencyRepository:
    """Stored first responses for ``Idempotency-Key`` retries (kept 24 h)."""

    __slots__ = ("_db",)

    TTL = timedelta(hours=24)
    # A claim still without a response after this long belongs to a request that died
    # (process killed mid-request); it is replaced so the client's retry can run.
    ABANDONED = timedelta(seconds=60)

    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, account_id: str, key: str, request_hash: str) -> IdempotencyRecord | None:
        """Claim ``key`` for a new request: None when claimed (go ahead), else the existing
        record (a finished response to replay, or one still in progress). Expired records are
        replaced."""
        now = utcnow()
        pk = (idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)

        def insert(conn: sa.Connection) -> None:
            conn.execute(
                idempotency_keys.delete().where(
                    *pk,
                    sa.or_(
                        idempotency_keys.c.created_at < now - self.TTL,
                        sa.and_(
                            idempotency_keys.c.response_status.is_(None),
                            idempotency_keys.c.created_at < now - self.ABANDONED,
                        ),
                    ),
                )
            )
            conn.execute(
                idempotency_keys.insert().values(
                    account_id=account_id, key=key, request_hash=request_hash, created_at=now
                )
            )

        def existing(conn: sa.Connection) -> IdempotencyRecord | None:
            row = conn.execute(idempotency_keys.select().where(*pk)).mappings().first()
            if row is None:
                return None
            return IdempotencyRecord(
                request_hash=row["request_hash"],
                response_status=row["response_status"],
                response_body_encrypted=row["response_body_encrypted"],
                created_at=row["created_at"],
            )

        for _ in range(3):
            try:
                await self._db.write(insert)
                return None
            except IntegrityError:
                pass
            record = await self._db.read(existing, point=True)
            if record is not None:
                return record
            # released between our insert attempt and the read: try again
        raise RuntimeError("idempotency key contended; retry")

    async def complete(
        self, account_id: str, key: str, *, status: int, body_encrypted: str
    ) -> None:
        def work(conn: sa.Connection) -> None:
            conn.execute(
                idempotency_keys.update()
                .where(idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)
                .values(response_status=status, response_body_encrypted=body_encrypted)
            )

        await self._db.write(work)

    async def release(self, account_id: str, key: str) -> None:
        """Forget a claim whose request should be retryable (429, 5xx)."""

        def work(conn: sa.Connection) -> None:
            conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key
                )
            )

        await self._db.write(work)


# --------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Repositories:
    """All repositories over one database."""

    db: Database
    accounts: AccountRepository
    agents: AgentRepository
    phone_numbers: PhoneNumberRepository
    calls: CallRepository
    idempotency: IdempotencyRepository
    webhooks: WebhookRepository

    @classmethod
    def over(cls, db: Database) -> Repositories:
        return cls(
            db=db,
            accounts=AccountRepository(db),
            agents=AgentRepository(db),
            phone_numbers=PhoneNumberRepository(db),
            calls=CallRepository(db),
            idempotency=IdempotencyRepository(db),
            webhooks=WebhookRepository(db),
        )
