"""SQLAlchemy tables mirroring the acquisition service (docs/TRAINING.md §2), SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

APPROVAL_STATUSES = ("pending", "approved", "rejected")


class Base(DeclarativeBase):
    """Declarative base; Alembic migrations are the source of truth for DDL, this for queries."""


class WebSDRStation(Base):
    __tablename__ = "websdr_stations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    url: Mapped[str | None] = mapped_column(String(512))
    latitude: Mapped[float] = mapped_column(Float, nullable=False)
    longitude: Mapped[float] = mapped_column(Float, nullable=False)
    altitude_asl: Mapped[float | None] = mapped_column(Float)
    frequency_min_hz: Mapped[float | None] = mapped_column(Float)
    frequency_max_hz: Mapped[float | None] = mapped_column(Float)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class KnownSource(Base):
    __tablename__ = "known_sources"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    latitude: Mapped[float] = mapped_column(Float, nullable=False)
    longitude: Mapped[float] = mapped_column(Float, nullable=False)
    altitude_m: Mapped[float | None] = mapped_column(Float)
    power_dbm: Mapped[float | None] = mapped_column(Float)
    error_margin_meters: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    frequency_hz: Mapped[float | None] = mapped_column(Float)


class RecordingSession(Base):
    __tablename__ = "recording_sessions"
    __table_args__ = (
        CheckConstraint(
            "approval_status IN ('pending', 'approved', 'rejected')", name="ck_recording_sessions_approval"
        ),
        Index("ix_recording_sessions_dataset_status", "dataset", "approval_status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    known_source_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("known_sources.id"))
    acquisition_task_id: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    dataset: Mapped[str] = mapped_column(String(128), nullable=False)
    session_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    duration_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    approval_status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    notes: Mapped[str | None] = mapped_column(Text)


class Measurement(Base):
    __tablename__ = "measurements"
    __table_args__ = (Index("ix_measurements_session", "recording_session_id"),)

    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    websdr_station_id: Mapped[int] = mapped_column(Integer, ForeignKey("websdr_stations.id"), nullable=False)
    recording_session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("recording_sessions.id"), nullable=False
    )
    frequency_hz: Mapped[float] = mapped_column(Float, nullable=False)
    signal_strength_db: Mapped[float | None] = mapped_column(Float)
    snr_db: Mapped[float | None] = mapped_column(Float)
    frequency_offset_hz: Mapped[float | None] = mapped_column(Float)
    iq_data_location: Mapped[str | None] = mapped_column(String(512))
    iq_data_format: Mapped[str | None] = mapped_column(String(32))
    iq_sample_rate: Mapped[float | None] = mapped_column(Float)
    iq_samples_count: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    receiver_latitude: Mapped[float | None] = mapped_column(Float)
    receiver_longitude: Mapped[float | None] = mapped_column(Float)
    receiver_altitude: Mapped[float | None] = mapped_column(Float)


class StoredScenario(Base):
    """A scenario sessions were simulated from: content-addressed (sha256 of its canonical JSON)."""

    __tablename__ = "scenarios"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SimulationTruth(Base):
    """What the simulator drew for a session beyond its rows: scenario, speed, Doppler, K per receiver."""

    __tablename__ = "simulation_truth"
    __table_args__ = (Index("ix_simulation_truth_scenario", "scenario_sha256"),)

    recording_session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("recording_sessions.id"), primary_key=True
    )
    scenario_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("scenarios.sha256"), nullable=False)
    speed_mps: Mapped[float | None] = mapped_column(Float)
    doppler_hz: Mapped[float] = mapped_column(Float, nullable=False)
    rician_k_db: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: station id → K (dB)


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class TrainingJob(Base):
    """One training submitted to the job service: request, state, progress, outcome (migration 0003)."""

    __tablename__ = "training_jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name="ck_training_jobs_state",
        ),
        Index("ix_training_jobs_state", "state"),
        Index("ix_training_jobs_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    request: Mapped[str] = mapped_column(Text, nullable=False)  # JSON of the submitted configuration
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    epoch: Mapped[int | None] = mapped_column(Integer)
    max_epochs: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    eta_s: Mapped[float | None] = mapped_column(Float)
    model_id: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(32))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
