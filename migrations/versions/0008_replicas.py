"""replicas: per-model scaling settings, the replicas of running models, in-flight load per process

Revision ID: 0008
Revises: 0007

models: min_replicas (0), max_replicas (1), target_concurrency (4) as registered; desired_replicas
and scale_note as the lifecycle keeps them. replicas: one row per runtime instance of a running
model (starting, ready or draining). model_load: each web process's in-flight requests per model,
reported every half second, which the autoscaler sums.
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("min_replicas", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("max_replicas", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch.add_column(sa.Column("target_concurrency", sa.Integer(), nullable=False, server_default=sa.text("4")))
        batch.add_column(sa.Column("desired_replicas", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("scale_note", sa.Text(), nullable=True))
    op.create_table(
        "replicas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("replica", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance_id", sa.String(length=80), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=80), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "replica", name="uq_replicas_model_replica"),
    )
    op.create_table(
        "model_load",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("process", sa.String(length=128), nullable=False),
        sa.Column("in_flight", sa.Float(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", "process", name="pk_model_load"),
    )
    # Models running before this migration: their one instance becomes replica 0.
    op.execute(
        """
        INSERT INTO replicas (model_id, replica, status, status_changed_at, instance_id, host, port, started_at)
        SELECT id, 0, 'ready', status_changed_at, container_id, container_host, host_port, started_at
        FROM models WHERE status = 'running' AND container_id IS NOT NULL
        """
    )
    op.execute("UPDATE models SET desired_replicas = 1 WHERE status = 'running'")


def downgrade():
    op.drop_table("model_load")
    op.drop_table("replicas")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("scale_note")
        batch.drop_column("desired_replicas")
        batch.drop_column("target_concurrency")
        batch.drop_column("max_replicas")
        batch.drop_column("min_replicas")
