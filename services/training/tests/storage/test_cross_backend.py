"""The same simulation on SQLite + folder and on PostgreSQL + S3 gives identical values and IQ bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.services import open_services
from heimdall.storage.queries import list_sessions


def _snapshot() -> tuple[list[tuple], dict[str, bytes]]:
    services = open_services()
    rows, blobs = [], {}
    for s in list_sessions(services.db, ["sim:nw-italy-v1"]):
        for m in s.measurements:
            rows.append(
                (
                    str(s.id),
                    s.session_start,
                    s.source.latitude,
                    s.source.longitude,
                    s.source.power_dbm,
                    m.station_id,
                    m.timestamp,
                    m.frequency_hz,
                    m.signal_strength_db,
                    m.snr_db,
                    m.frequency_offset_hz,
                    m.iq_data_location,
                    m.iq_samples_count,
                )
            )
            bucket, key = m.iq_bucket_key
            blobs[key] = services.store.get_bytes(bucket, key)
    services.close()
    return rows, blobs


def test_embedded_and_server_backends_store_identical_sessions(
    embedded_env: Path, postgres_url: str, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the acceptance run uses 300 sessions: HEIMDALL_CROSS_BACKEND_SESSIONS=300
    n_sessions = int(os.environ.get("HEIMDALL_CROSS_BACKEND_SESSIONS", "12"))
    args = ["simulate", "--sessions", str(n_sessions), "--seed", "7", "--no-progress"]
    assert CliRunner().invoke(app, args).exit_code == 0
    embedded = _snapshot()
    monkeypatch.setenv("HEIMDALL_DATABASE_URL", postgres_url)
    monkeypatch.setenv("HEIMDALL_OBJECT_STORE", "s3://")
    monkeypatch.setenv("HEIMDALL_RAW_IQ_BUCKET", "cross-backend-iq")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    servers = _snapshot()
    assert len(embedded[0]) == 7 * n_sessions
    assert [row[:-2] for row in servers[0]] == [row[:-2] for row in embedded[0]]  # values, truth, times
    assert [row[-1] for row in servers[0]] == [row[-1] for row in embedded[0]]
    assert servers[1] == embedded[1]  # identical IQ bytes under identical keys
