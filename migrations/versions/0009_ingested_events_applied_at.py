"""ingested_events: no index on applied_at

Revision ID: 0009
Revises: 0008

No query reads ingested_events by applied_at (the API and the dashboard list the newest by id),
and every event the listener applies pays for the index: one of the table's four.
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_index("ix_ingested_events_applied_at", table_name="ingested_events")


def downgrade():
    op.create_index("ix_ingested_events_applied_at", "ingested_events", ["applied_at"])
