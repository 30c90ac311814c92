"""Webhook retention: index finished deliveries by when they became final.

The retention prune (``WebhookRepository.prune_finished``) deletes rows with a final status
whose ``updated_at`` is older than ``NIXFLEX_WEBHOOK_RETENTION_DAYS``; this index lets it find
them without scanning the table. On PostgreSQL the build blocks writes to webhook_deliveries
while it runs (seconds for millions of rows).

Revision ID: 0004_webhook_retention
Revises: 0003_campaigns
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_webhook_retention"
down_revision: str | None = "0003_campaigns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_finished", ["status", "updated_at"])


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_finished")
