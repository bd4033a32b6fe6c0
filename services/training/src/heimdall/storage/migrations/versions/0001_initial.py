"""Initial schema: stations, known sources, recording sessions, measurements (docs/TRAINING.md §2).

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("heimdall.storage")


def upgrade() -> None:
    op.create_table(
        "websdr_stations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("url", sa.String(512)),
        sa.Column("latitude", sa.Float, nullable=False),
        sa.Column("longitude", sa.Float, nullable=False),
        sa.Column("altitude_asl", sa.Float),
        sa.Column("frequency_min_hz", sa.Float),
        sa.Column("frequency_max_hz", sa.Float),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "known_sources",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("latitude", sa.Float, nullable=False),
        sa.Column("longitude", sa.Float, nullable=False),
        sa.Column("altitude_m", sa.Float),
        sa.Column("power_dbm", sa.Float),
        sa.Column("error_margin_meters", sa.Float, nullable=False, server_default="0"),
        sa.Column("frequency_hz", sa.Float),
    )
    op.create_table(
        "recording_sessions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("known_source_id", sa.Uuid, sa.ForeignKey("known_sources.id")),
        sa.Column("acquisition_task_id", sa.String(128), nullable=False, unique=True),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("session_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=False),
        sa.Column("approval_status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("notes", sa.Text),
        sa.CheckConstraint(
            "approval_status IN ('pending', 'approved', 'rejected')", name="ck_recording_sessions_approval"
        ),
    )
    op.create_index(
        "ix_recording_sessions_dataset_status", "recording_sessions", ["dataset", "approval_status"]
    )
    op.create_table(
        "measurements",
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("websdr_station_id", sa.Integer, sa.ForeignKey("websdr_stations.id"), nullable=False),
        sa.Column("recording_session_id", sa.Uuid, sa.ForeignKey("recording_sessions.id"), nullable=False),
        sa.Column("frequency_hz", sa.Float, nullable=False),
        sa.Column("signal_strength_db", sa.Float),
        sa.Column("snr_db", sa.Float),
        sa.Column("frequency_offset_hz", sa.Float),
        sa.Column("iq_data_location", sa.String(512)),
        sa.Column("iq_data_format", sa.String(32)),
        sa.Column("iq_sample_rate", sa.Float),
        sa.Column("iq_samples_count", sa.Integer),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("receiver_latitude", sa.Float),
        sa.Column("receiver_longitude", sa.Float),
        sa.Column("receiver_altitude", sa.Float),
        sa.PrimaryKeyConstraint("timestamp", "id", name="pk_measurements"),
    )
    op.create_index("ix_measurements_session", "measurements", ["recording_session_id"])
    _time_partitioning()


def _time_partitioning() -> None:
    """A TimescaleDB hypertable where the extension exists, else a plain time index (said once)."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        available = bind.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).first()
        if available is not None:
            op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            op.execute("SELECT create_hypertable('measurements', 'timestamp', if_not_exists => TRUE)")
            log.info("measurements is a TimescaleDB hypertable on timestamp")
            return
    op.create_index("ix_measurements_timestamp", "measurements", ["timestamp"])
    # expected on SQLite (the embedded default): only PostgreSQL without the extension is worth a warning
    log.log(
        logging.WARNING if bind.dialect.name == "postgresql" else logging.DEBUG,
        "TimescaleDB is not available on %s: measurements is a plain table with a time index",
        bind.dialect.name,
    )


def downgrade() -> None:
    op.drop_table("measurements")
    op.drop_table("recording_sessions")
    op.drop_table("known_sources")
    op.drop_table("websdr_stations")
