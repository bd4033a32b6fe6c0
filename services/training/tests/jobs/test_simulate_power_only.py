"""``simulate --power-only``: an RSS network's sessions (power and SNR rows, no IQ objects), the same draws
as the IQ run of the seed under their own ids and label, idempotent, and trainable end to end."""

from __future__ import annotations

import math
from pathlib import Path

from heimdall.jobs.simulate import SimulateRequest, simulate
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.storage.queries import list_sessions
from heimdall.storage.scenarios import read_simulation_truth


def _request(**kw: object) -> SimulateRequest:
    return SimulateRequest(**{"scenario": "nw-italy-v2", "sessions": 10, "seed": 3, "duration": 0.05, **kw})


def test_rows_without_iq_next_to_the_iq_run_of_the_seed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "hd")
    iq = simulate(_request(), settings)
    power = simulate(_request(power_only=True), settings)
    assert (iq.written, power.written, power.dataset) == (10, 10, "sim:nw-italy-v2:power")
    services = open_services(settings)
    try:
        with_iq = list_sessions(services.db, ["sim:nw-italy-v2"])
        rows = list_sessions(services.db, ["sim:nw-italy-v2:power"])
        with services.db.engine.connect() as conn:
            truth = read_simulation_truth(conn, [s.id for s in rows])
    finally:
        services.close()
    assert {s.id for s in rows}.isdisjoint({s.id for s in with_iq})
    assert set(truth) == {s.id for s in rows}  # the oracle's truth is stored with them
    for a, b in zip(with_iq, rows, strict=True):  # the same draws, ordered by start time
        assert (a.source.latitude, a.source.longitude) == (b.source.latitude, b.source.longitude)
        assert all(m.iq_bucket_key is None and m.iq_samples_count is None for m in b.measurements)
        assert [m.signal_strength_db for m in a.measurements] == [
            m.signal_strength_db for m in b.measurements
        ]
        assert all(m.snr_db is not None and math.isfinite(m.snr_db) for m in b.measurements)
    before = {p for p in (tmp_path / "hd" / "objects").rglob("*") if p.is_file()}
    again = simulate(_request(power_only=True), settings)
    assert (again.written, again.skipped) == (0, 10)
    assert {p for p in (tmp_path / "hd" / "objects").rglob("*") if p.is_file()} == before


def test_the_cli_names_the_label(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from heimdall.cli.app import app

    for var in ("HEIMDALL_DATABASE_URL", "HEIMDALL_OBJECT_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(tmp_path / "hd"))
    args = ["simulate", "--scenario", "nw-italy-v2", "--sessions", "4", "--duration", "0.05", "--no-progress"]
    res = CliRunner().invoke(app, [*args, "--power-only"])
    assert res.exit_code == 0, res.output
    assert "into dataset sim:nw-italy-v2:power" in res.output and "4 written" in res.output


def test_training_reads_them_as_power_only_sessions(tmp_path: Path) -> None:
    from heimdall.data.arrays import load_session_arrays
    from heimdall.features import FeatureConfig

    settings = Settings(data_dir=tmp_path / "hd")
    simulate(_request(sessions=30, power_only=True), settings)
    services = open_services(settings)
    try:
        arrays = load_session_arrays(
            services.db, services.store, ["sim:nw-italy-v2:power"], FeatureConfig(), tmp_path / "cache"
        )
    finally:
        services.close()
    assert not arrays.has_spectrogram and len(arrays.session_ids) > 0
    heard = arrays.mask
    assert (arrays.scalars[..., 0][heard] == arrays.row_power_db[heard].astype("float32")).all()
