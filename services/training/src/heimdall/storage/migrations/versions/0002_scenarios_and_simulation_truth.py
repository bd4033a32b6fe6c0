"""Scenarios and simulation truth: what the simulator drew, stored with the sessions it drew.

`scenarios` keeps every scenario a store's sessions were simulated from, content-addressed: the primary
key is the SHA-256 of its canonical JSON (`Scenario.content_sha256`), the content is that JSON, and a
name belongs to one content only (a store refuses a second scenario of the same name). `simulation_truth`
holds per simulated session what no measurement row says but the Bayes oracle needs: the scenario, the
transmitter's speed (NULL where the scenario draws the Doppler itself), the maximum Doppler, and each
receiver's Rician K in dB (JSON text: station id → K).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scenarios",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "simulation_truth",
        sa.Column("recording_session_id", sa.Uuid, sa.ForeignKey("recording_sessions.id"), primary_key=True),
        sa.Column("scenario_sha256", sa.String(64), sa.ForeignKey("scenarios.sha256"), nullable=False),
        sa.Column("speed_mps", sa.Float),
        sa.Column("doppler_hz", sa.Float, nullable=False),
        sa.Column("rician_k_db", sa.Text, nullable=False),
    )
    op.create_index("ix_simulation_truth_scenario", "simulation_truth", ["scenario_sha256"])


def downgrade() -> None:
    op.drop_index("ix_simulation_truth_scenario", "simulation_truth")
    op.drop_table("simulation_truth")
    op.drop_table("scenarios")
