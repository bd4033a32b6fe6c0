"""Training jobs: what the job service (``heimdall serve`` / ``heimdall worker``) was asked to train.

One row per submitted job: the request (JSON), its state (queued → running → succeeded | failed |
cancelled), the worker and its last heartbeat (a running job whose heartbeat is older than the lease
is marked failed, so a worker killed with ``kill -9`` never leaves a job "running" forever), the
progress the training callback writes (epoch, step, losses, ETA), and the outcome (model id, registry
version, MLflow run, error).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("worker", sa.String(256)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("epoch", sa.Integer),
        sa.Column("max_epochs", sa.Integer),
        sa.Column("step", sa.Integer),
        sa.Column("train_loss", sa.Float),
        sa.Column("val_loss", sa.Float),
        sa.Column("eta_s", sa.Float),
        sa.Column("model_id", sa.String(64)),
        sa.Column("model_version", sa.String(32)),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name="ck_training_jobs_state",
        ),
    )
    op.create_index("ix_training_jobs_state", "training_jobs", ["state"])
    op.create_index("ix_training_jobs_created", "training_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_created", "training_jobs")
    op.drop_index("ix_training_jobs_state", "training_jobs")
    op.drop_table("training_jobs")
