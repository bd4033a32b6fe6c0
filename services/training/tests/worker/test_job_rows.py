"""The training_jobs state machine (storage.training_jobs, migration 0003) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from heimdall.jobs import service
from heimdall.settings import Settings
from heimdall.storage import training_jobs as rows
from heimdall.storage.database import open_database

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'h.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    database = open_database(url)
    yield database
    database.dispose()


def test_migration_0003_creates_the_table_at_head(db) -> None:
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    columns = {c["name"] for c in inspect(db.engine).get_columns("training_jobs")}
    assert {
        "state",
        "heartbeat_at",
        "worker",
        "cancel_requested",
        "epoch",
        "eta_s",
        "model_version",
    } <= columns


def test_one_claim_wins_and_only_its_worker_finishes(db) -> None:
    rows.insert_job(db, "a", "{}", T0)
    assert rows.claim(db, "a", "w1", T0) is True
    assert rows.claim(db, "a", "w2", T0) is False  # a duplicate delivery does not run it twice
    assert rows.finish(db, "a", "w2", "succeeded", T0) is False
    assert rows.finish(db, "a", "w1", "succeeded", T0, model_version="3") is True
    job = rows.get_job(db, "a")
    assert (job.state, job.worker, job.attempts, job.model_version) == ("succeeded", "w1", 1, "3")
    assert rows.finish(db, "a", "w1", "failed", T0) is False  # terminal stays terminal
    rows.request_cancel(db, "a", T0)
    assert rows.get_job(db, "a").state == "succeeded"


def test_cancel_of_a_queued_job_is_immediate_and_of_a_running_one_a_flag(db) -> None:
    rows.insert_job(db, "q", "{}", T0)
    rows.insert_job(db, "r", "{}", T0)
    rows.claim(db, "r", "w", T0)
    rows.request_cancel(db, "q", T0)
    rows.request_cancel(db, "r", T0)
    assert rows.get_job(db, "q").state == "cancelled" and rows.claim(db, "q", "w", T0) is False
    assert rows.get_job(db, "r").state == "running"
    assert rows.heartbeat(db, "r", "w", T0) == (True, True)  # the worker learns it at its next beat


def test_an_expired_lease_fails_the_job_and_a_fresh_one_does_not(db) -> None:
    for job_id in ("old", "new"):
        rows.insert_job(db, job_id, "{}", T0)
        rows.claim(db, job_id, "w", T0)
    rows.heartbeat(db, "new", "w", T0 + timedelta(seconds=9), {"epoch": 4, "val_loss": 1.5})
    assert rows.expire_leases(db, T0 + timedelta(seconds=10), lease_s=5) == 1
    old, new = rows.get_job(db, "old"), rows.get_job(db, "new")
    assert old.state == "failed" and "no heartbeat for more than 5 s" in old.error
    assert new.state == "running" and (new.epoch, new.val_loss) == (4, 1.5)
    assert rows.heartbeat(db, "old", "w", T0) == (False, False)  # the lost worker no longer owns it


def test_run_job_leaves_a_job_that_is_not_queued_as_it_is(db) -> None:
    settings = Settings(database_url=db.url)
    rows.insert_job(db, "c", "{}", datetime.now(UTC))
    rows.request_cancel(db, "c", datetime.now(UTC))
    assert service.run_job(db, "c", settings, worker="w") == "cancelled"
    assert rows.get_job(db, "c").attempts == 0


def test_migration_0003_downgrades_and_upgrades_again(db) -> None:
    from alembic import command

    from heimdall.storage.database import _alembic_config

    cfg = _alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert "training_jobs" not in inspect(db.engine).get_table_names()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    assert "training_jobs" in inspect(db.engine).get_table_names()
    rows.insert_job(db, "x", "{}", T0)
    assert rows.get_job(db, "x").state == "queued"
