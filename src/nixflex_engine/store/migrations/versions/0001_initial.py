"""Initial schema: accounts, API keys, agents, phone numbers, calls, idempotency keys.

Revision ID: 0001_initial
Revises: (none)
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("max_concurrent_calls", sa.Integer(), nullable=True),
        sa.Column("calls_in_flight", sa.Integer(), server_default="0", nullable=False),
        sa.Column("peak_concurrent_calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body_encrypted", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.account_id"],
            name=op.f("fk_agents_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agents")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_agents_account_created", ["account_id", "created_at"], unique=False
        )

    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.account_id"],
            name=op.f("fk_api_keys_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_account_id"), ["account_id"], unique=False)

    op.create_table(
        "calls",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("call_ref", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=True),
        sa.Column("direction", sa.String(length=16), server_default="outbound", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("from_number", sa.String(length=16), nullable=False),
        sa.Column("to_number", sa.String(length=16), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("dynamic_vars", sa.JSON(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("voicemail_action", sa.String(length=16), nullable=False),
        sa.Column("voicemail_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("ended_reason", sa.String(length=32), nullable=True),
        sa.Column("voicemail_detected", sa.Boolean(), nullable=True),
        sa.Column("voicemail_detection_method", sa.String(length=16), nullable=True),
        sa.Column("amd_result", sa.String(length=32), nullable=True),
        sa.Column("transcript", sa.JSON(), nullable=False),
        sa.Column("recording_path", sa.Text(), nullable=True),
        sa.Column("recording_duration_seconds", sa.Float(), nullable=True),
        sa.Column("call_summary", sa.Text(), nullable=True),
        sa.Column("caller_sentiment", sa.String(length=16), nullable=True),
        sa.Column("call_successful", sa.Boolean(), nullable=True),
        sa.Column("extracted_data", sa.JSON(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=True),
        sa.Column("twilio_error", sa.JSON(), nullable=True),
        sa.Column("slot_held", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.account_id"],
            name=op.f("fk_calls_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
        sa.UniqueConstraint("call_id", name=op.f("uq_calls_call_id")),
        sa.UniqueConstraint("call_ref", name=op.f("uq_calls_call_ref")),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.create_index(
            "ix_calls_account_created", ["account_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_calls_account_to_number", ["account_id", "to_number", "created_at"], unique=False
        )
        batch_op.create_index("ix_calls_campaign", ["campaign_id"], unique=False)

    op.create_table(
        "phone_numbers",
        sa.Column("phone_number", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=True),
        sa.Column("carrier", sa.String(length=20), server_default="twilio", nullable=False),
        sa.Column("twilio_account_sid", sa.String(length=64), nullable=True),
        sa.Column("twilio_auth_token_encrypted", sa.Text(), nullable=True),
        sa.Column("twilio_number_sid", sa.String(length=64), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook2_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.account_id"],
            name=op.f("fk_phone_numbers_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.agent_id"],
            name=op.f("fk_phone_numbers_agent_id_agents"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("phone_number", name=op.f("pk_phone_numbers")),
    )
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_phone_numbers_account_created", ["account_id", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_phone_numbers_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_phone_numbers_twilio_account_sid"), ["twilio_account_sid"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_phone_numbers_twilio_account_sid"))
        batch_op.drop_index(batch_op.f("ix_phone_numbers_agent_id"))
        batch_op.drop_index("ix_phone_numbers_account_created")

    op.drop_table("phone_numbers")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_campaign")
        batch_op.drop_index("ix_calls_account_to_number")
        batch_op.drop_index("ix_calls_account_created")

    op.drop_table("calls")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_account_id"))

    op.drop_table("api_keys")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index("ix_agents_account_created")

    op.drop_table("agents")
    op.drop_table("idempotency_keys")
    op.drop_table("accounts")
