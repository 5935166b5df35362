"""dashboard sessions: a server-side record per sign-in, so signing out ends the session

Revision ID: 0006
Revises: 0005

The session cookie holds a random session id; this table holds its hash, the token's hash and
when the session ends (SESSION_LIFETIME_SECONDS). Signing out deletes the row, so a copy of the
cookie is worthless afterwards.
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dashboard_sessions_token_hash", "dashboard_sessions", ["token_hash"])
    op.create_index("ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"])


def downgrade():
    op.drop_table("dashboard_sessions")
