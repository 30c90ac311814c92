"""Campaigns: campaigns, campaign_recipients, campaign_attempts.

Revision ID: 0003_campaigns
Revises: 0002_webhooks
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_campaigns"
down_revision: str | None = "0002_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("from_number", sa.String(length=16), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("schedule_type", sa.String(length=16), nullable=False),
        sa.Column("scheduled_at", _TS, nullable=True),
        sa.Column("window_start_minutes", sa.Integer(), nullable=False),
        sa.Column("window_end_minutes", sa.Integer(), nullable=False),
        sa.Column("window_days", sa.JSON(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("retry_max_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_delay_seconds", sa.Float(), nullable=False),
        sa.Column("retry_on", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("invalid_recipients", sa.JSON(), nullable=False),
        sa.Column("recipients_total", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.JSON(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("launched_at", _TS, nullable=True),
        sa.Column("completed_at", _TS, nullable=True),
        sa.Column("canceled_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.account_id"],
            name=op.f("fk_campaigns_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaigns")),
    )
    op.create_index("ix_campaigns_account_created", "campaigns", ["account_id", "created_at"])
    op.create_index("ix_campaigns_status", "campaigns", ["status"])

    op.create_table(
        "campaign_recipients",
        sa.Column("id", _ID, nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("phone_number", sa.String(length=16), nullable=False),
        sa.Column("dynamic_vars", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("prompt_override", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=True),
        sa.Column("call_ref", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", _TS, nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("last_call_id", sa.String(length=64), nullable=True),
        sa.Column("last_outcome", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.JSON(), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaign_id"],
            name=op.f("fk_campaign_recipients_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_recipients")),
        sa.UniqueConstraint("call_ref", name=op.f("uq_campaign_recipients_call_ref")),
        sa.UniqueConstraint("campaign_id", "phone_number", name="uq_campaign_recipients_number"),
    )
    op.create_index(
        "ix_campaign_recipients_due", "campaign_recipients", ["campaign_id", "state", "position"]
    )

    op.create_table(
        "campaign_attempts",
        sa.Column("call_ref", sa.String(length=64), nullable=False),
        sa.Column("recipient_id", _ID, nullable=False),
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("ended_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["campaign_recipients.id"],
            name=op.f("fk_campaign_attempts_recipient_id_campaign_recipients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_ref", name=op.f("pk_campaign_attempts")),
    )
    op.create_index(
        op.f("ix_campaign_attempts_recipient_id"), "campaign_attempts", ["recipient_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_campaign_attempts_recipient_id"), table_name="campaign_attempts")
    op.drop_table("campaign_attempts")
    op.drop_index("ix_campaign_recipients_due", table_name="campaign_recipients")
    op.drop_table("campaign_recipients")
    op.drop_index("ix_campaigns_status", table_name="campaigns")
    op.drop_index("ix_campaigns_account_created", table_name="campaigns")
    op.drop_table("campaigns")
