"""models.pinned_by_admin: a model kept warm by an administrator, beyond the per-owner limit

Revision ID: 0007
Revises: 0006

Fair share across owners takes kept-warm slots back from owners above their share, but
never a pin an administrator set on purpose.
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("models", sa.Column("pinned_by_admin", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    op.drop_column("models", "pinned_by_admin")
