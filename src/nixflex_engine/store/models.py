"""Table definitions (SQLAlchemy Core), shared by the repositories and the migrations.

Core tables rather than ORM classes: every request runs a handful of short statements and the
repositories return plain dataclasses, so the unit-of-work machinery would only add latency.
Timestamps are stored in UTC; :class:`UTCDateTime` makes SQLite (which has no time zones)
hand back aware datetimes like PostgreSQL does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

__all__ = [
    "JSONValue",
    "UTCDateTime",
    "accounts",
    "agents",
    "api_keys",
    "calls",
    "campaign_attempts",
    "campaign_recipients",
    "campaigns",
    "idempotency_keys",
    "metadata",
    "phone_numbers",
    "webhook_attempts",
    "webhook_deliveries",
]


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned time-zone aware (UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSON (not JSONB) on PostgreSQL keeps objects exactly as given, key order included, which is
# what "metadata echoed exactly" needs.
JSONValue = sa.JSON().with_variant(postgresql.JSON(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    # NULL = the operator's default (Settings.default_max_concurrent_calls).
    sa.Column("max_concurrent_calls", sa.Integer, nullable=True),
    # Calls holding a concurrency slot. Changed only by conditional UPDATEs in the same
    # transaction that sets/clears calls.slot_held, so it always equals the count of those rows.
    sa.Column("calls_in_flight", sa.Integer, nullable=False, server_default="0"),
    sa.Column("peak_concurrent_calls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(40), primary_key=True),
    sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    # The key secret also signs webhooks, so an encrypted copy is kept (Fernet).
    sa.Column("secret_encrypted", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("rotated_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("agent_id", sa.String(40), primary_key=True),
    sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # Every agent field (api.md "Agent fields") as one validated JSON object.
    sa.Column("config", JSONValue, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_agents_account_created", "account_id", "created_at"),
)

phone_numbers = sa.Table(
    "phone_numbers",
    metadata,
    # A carrier number belongs to one account (inbound calls must map to one owner).
    sa.Column("phone_number", sa.String(16), primary_key=True),
    sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "agent_id",
        sa.String(40),
        sa.ForeignKey("agents.agent_id", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    sa.Column("carrier", sa.String(20), nullable=False, server_default="twilio"),
    sa.Column("twilio_account_sid", sa.String(64), nullable=True, index=True),
    sa.Column("twilio_auth_token_encrypted", sa.Text, nullable=True),
    sa.Column("twilio_number_sid", sa.String(64), nullable=True),
    sa.Column("webhook_url", sa.Text, nullable=True),
    sa.Column("webhook2_url", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_phone_numbers_account_created", "account_id", "created_at"),
)

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    # Public id: the carrier call SID once the dial is accepted; before that (and for dials
    # the carrier rejected) the engine's own reference.
    sa.Column("call_id", sa.String(64), nullable=False, unique=True),
    # The engine's reference, fixed at creation (callback URLs can carry it before the SID
    # is known).
    sa.Column("call_ref", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # Plain string, no foreign key: deleting an agent keeps its past calls.
    sa.Column("agent_id", sa.String(40), nullable=False),
    sa.Column("campaign_id", sa.String(64), nullable=True),
    sa.Column("direction", sa.String(16), nullable=False, server_default="outbound"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("from_number", sa.String(16), nullable=False),
    sa.Column("to_number", sa.String(16), nullable=False),
    sa.Column("metadata", JSONValue, nullable=True),
    sa.Column("dynamic_vars", JSONValue, nullable=False),
    sa.Column("prompt", sa.Text, nullable=True),
    sa.Column("voicemail_action", sa.String(16), nullable=False),
    sa.Column("voicemail_message", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("answered_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=True),
    sa.Column("ended_reason", sa.String(32), nullable=True),
    sa.Column("voicemail_detected", sa.Boolean, nullable=True),
    sa.Column("voicemail_detection_method", sa.String(16), nullable=True),
    sa.Column("amd_result", sa.String(32), nullable=True),
    sa.Column("transcript", JSONValue, nullable=False),
    sa.Column("recording_path", sa.Text, nullable=True),
    sa.Column("recording_duration_seconds", sa.Float, nullable=True),
    sa.Column("call_summary", sa.Text, nullable=True),
    sa.Column("caller_sentiment", sa.String(16), nullable=True),
    sa.Column("call_successful", sa.Boolean, nullable=True),
    sa.Column("extracted_data", JSONValue, nullable=False),
    sa.Column("latency", JSONValue, nullable=True),
    sa.Column("twilio_error", JSONValue, nullable=True),
    # True while this call holds one of the account's concurrency slots.
    sa.Column("slot_held", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_calls_account_created", "account_id", "created_at", "id"),
    sa.Index("ix_calls_account_to_number", "account_id", "to_number", "created_at"),
    sa.Index("ix_calls_campaign", "campaign_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account_id", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    # NULL while the first request is still running.
    sa.Column("response_status", sa.Integer, nullable=True),
    # Encrypted (Fernet): responses can carry personal data.
    sa.Column("response_body_encrypted", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)


def row_dict(row: Any) -> dict[str, Any]:
    """A result row as a plain dict."""
    return dict(row._mapping)


# --------------------------------------------------------------------------------------------
# webhooks (migration 0002_webhooks)

# The durable outbox: one row per (call event, receiving URL), written in the transaction that
# finishes the call. Workers on any node claim due rows with a lease (see calls/webhooks.py).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    # Public id of this delivery (X-Nixflex-Delivery).
    sa.Column("delivery_id", sa.String(40), nullable=False, unique=True),
    # The same for every URL that receives one call's event (X-Nixflex-Event-Id).
    sa.Column("event_id", sa.String(40), nullable=False),
    sa.Column(
        "call_pk",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("calls.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("event", sa.String(32), nullable=False),
    # Where the URL came from: agent | number | number2.
    sa.Column("target", sa.String(16), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    # pending | delivered | failed (gave up) | gone (410) | refused (unsafe address).
    sa.Column("status", sa.String(16), nullable=False),
    # The exact JSON body, fixed once (after post-call analysis); NULL until then.
    sa.Column("payload", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("first_attempt_at", UTCDateTime, nullable=True),
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    # The claim: which worker holds the row, until when, and a token only that claim knows.
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_token", sa.String(32), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    # Finished rows by when they became final: the retention prune (migration 0004).
    sa.Index("ix_webhook_deliveries_finished", "status", "updated_at"),
)

# Every attempt, as it happened (GET /v1/calls/{call_id}/webhooks).
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column(
        "delivery_pk",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(64), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # delivered | retry | failed | gone | refused
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
)


# --------------------------------------------------------------------------------------------
# campaigns (migration 0003_campaigns)

_PK = sa.BigInteger().with_variant(sa.Integer, "sqlite")

# A batch of outbound calls under one agent and prompt (POST /v1/calls/batch). The dispatcher
# (calls/campaigns.py) dials its recipients; see there for the states and guarantees.
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("campaign_id", sa.String(40), primary_key=True),
    sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("agent_id", sa.String(40), nullable=False),
    sa.Column("from_number", sa.String(16), nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prompt", sa.Text, nullable=True),
    # draft | scheduled | running | paused | completed | canceled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("schedule_type", sa.String(16), nullable=False),
    sa.Column("scheduled_at", UTCDateTime, nullable=True),
    sa.Column("window_start_minutes", sa.Integer, nullable=False),
    sa.Column("window_end_minutes", sa.Integer, nullable=False),
    # ISO weekdays (1 = Monday) on which the window opens.
    sa.Column("window_days", JSONValue, nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("max_concurrent", sa.Integer, nullable=False),
    sa.Column("retry_max_attempts", sa.Integer, nullable=False),
    sa.Column("retry_delay_seconds", sa.Float, nullable=False),
    sa.Column("retry_on", JSONValue, nullable=False),
    sa.Column("metadata", JSONValue, nullable=True),
    # Rows refused at creation with skip_invalid: [{index, phone_number, error}].
    sa.Column("invalid_recipients", JSONValue, nullable=False),
    sa.Column("recipients_total", sa.Integer, nullable=False),
    # Why the dispatcher paused the campaign (a campaign-wide dial error), else NULL.
    sa.Column("last_error", JSONValue, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("launched_at", UTCDateTime, nullable=True),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    sa.Column("canceled_at", UTCDateTime, nullable=True),
    sa.Index("ix_campaigns_account_created", "account_id", "created_at"),
    sa.Index("ix_campaigns_status", "status"),
)

# One row per distinct number of a campaign.
campaign_recipients = sa.Table(
    "campaign_recipients",
    metadata,
    sa.Column("id", _PK, primary_key=True),
    sa.Column(
        "campaign_id",
        sa.String(40),
        sa.ForeignKey("campaigns.campaign_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # Index of the (first) row in the request's recipients list: dialing order.
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("phone_number", sa.String(16), nullable=False),
    sa.Column("dynamic_vars", JSONValue, nullable=False),
    sa.Column("metadata", JSONValue, nullable=True),
    sa.Column("prompt_override", sa.Text, nullable=True),
    # queued | in_progress | completed | failed | canceled
    sa.Column("state", sa.String(16), nullable=False),
    # Attempts started (each has a campaign_attempts row and a fixed call_ref).
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # A queued recipient is not dialed before this (retry delay); NULL = at once.
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    # The current attempt's call reference: fixed when the attempt starts and kept until its
    # outcome is applied, so whoever dials it writes the one call row with this call_ref
    # (calls.call_ref is unique: a second dial of the same attempt cannot be recorded, so it
    # is never placed).
    sa.Column("call_ref", sa.String(64), nullable=True, unique=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("last_call_id", sa.String(64), nullable=True),
    sa.Column("last_outcome", sa.String(16), nullable=True),
    sa.Column("last_error", JSONValue, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("campaign_id", "phone_number", name="uq_campaign_recipients_number"),
    sa.Index("ix_campaign_recipients_due", "campaign_id", "state", "position"),
)

# Every attempt ever started, by its call reference (the call row, once written, has the same).
campaign_attempts = sa.Table(
    "campaign_attempts",
    metadata,
    sa.Column("call_ref", sa.String(64), primary_key=True),
    sa.Column(
        "recipient_id",
        _PK,
        sa.ForeignKey("campaign_recipients.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("campaign_id", sa.String(40), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # completed | voicemail | busy | no-answer | failed | canceled | rejected; NULL while open
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
)
