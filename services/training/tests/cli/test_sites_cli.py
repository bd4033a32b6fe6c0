"""`heimdall simulate --sites FILE` end to end on the embedded SQLite store: what it prints and stores,
and a bad sites file as one line with exit code 2."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.services import open_services
from heimdall.simulate.sites import load_sites
from heimdall.storage.schema import KnownSource, RecordingSession

runner = CliRunner()
ARGS = ["simulate", "--scenario", "nw-italy-v2", "--sessions", "6", "--duration", "0.05", "--no-progress"]
SITES = "name,latitude,longitude,power_w\nSuperga,45.080,7.767,25\nAsti,44.900,8.207,\n"


def test_sites_run_prints_its_dataset_and_stores_sessions_at_the_sites(
    embedded_env: Path, tmp_path: Path
) -> None:
    path = tmp_path / "beacons.csv"
    path.write_text(SITES, encoding="utf-8")
    label = f"sim:nw-italy-v2:sites-{load_sites(path).sha256[:8]}"
    r = runner.invoke(app, [*ARGS, "--sites", str(path)])
    assert r.exit_code == 0, r.output
    assert (
        f"simulated 6 sessions of nw-italy-v2 (seed 0) at 2 fixed sites into dataset {label}: 6 written"
        in (r.output)
    )
    services = open_services()
    try:
        with services.db.sessions() as s:
            rows = s.execute(
                select(KnownSource.latitude, KnownSource.longitude)
                .join(RecordingSession, RecordingSession.known_source_id == KnownSource.id)
                .where(RecordingSession.dataset == label)
            ).all()
            total = s.scalar(select(func.count()).select_from(RecordingSession))
    finally:
        services.close()
    assert len(rows) == total == 6
    assert {tuple(row) for row in rows} <= {(45.080, 7.767), (44.900, 8.207)}
    again = runner.invoke(app, [*ARGS, "--sites", str(path)])
    assert "0 written, 6 already present" in again.output, again.output


def test_bad_sites_file_is_one_line_and_exit_2(embedded_env: Path, tmp_path: Path) -> None:
    path = tmp_path / "beacons.csv"
    path.write_text("latitude,longitude\n45.0,8.0\n95.0,8.0\n", encoding="utf-8")
    r = runner.invoke(app, [*ARGS, "--sites", str(path)])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert f"{path}: line 3: latitude 95 is outside -90..90" in lines[0]
    missing = runner.invoke(app, [*ARGS, "--sites", str(tmp_path / "nowhere.yaml")])
    assert missing.exit_code == 2 and "nowhere.yaml: sites file not found" in missing.output
    assert not embedded_env.exists()  # refused before the store was opened


def test_help_lists_sites() -> None:
    r = runner.invoke(app, ["simulate", "--help"])
    assert r.exit_code == 0 and "--sites" in r.output
