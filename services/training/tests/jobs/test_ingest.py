"""heimdall.jobs.ingest: a simulated session exported as SigMF and imported into another database."""

from __future__ import annotations

import pytest

from heimdall.errors import UserError
from heimdall.jobs.ingest import SigmfExportRequest, SigmfImportRequest, export_sigmf, import_sigmf
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.storage.queries import list_sessions


def test_export_then_import(pipeline, tmp_path) -> None:
    services = open_services(pipeline.settings)
    try:
        session_id = str(list_sessions(services.db, pipeline.trained.report.datasets, limit=1)[0].id)
    finally:
        services.close()
    exported = export_sigmf(
        SigmfExportRequest(session_id=session_id, out_dir=tmp_path / "sigmf"), pipeline.settings
    )
    assert exported.session_id == session_id and exported.recordings
    other = Settings(data_dir=tmp_path / "other")
    imported = import_sigmf(SigmfImportRequest(paths=[tmp_path / "sigmf"]), other)
    assert [s.id for s in imported.sessions] == [session_id]
    assert imported.recordings == len(exported.recordings) == imported.sessions[0].receivers
    assert (imported.written, imported.already_present) == (1, 0)
    again = import_sigmf(SigmfImportRequest(paths=[tmp_path / "sigmf"]), other)
    assert (again.written, again.already_present) == (0, 1)


@pytest.mark.parametrize(
    ("truth", "message"),
    [
        ({"truth_lat": 45.0}, "give both"),
        ({"truth_error_m": 3.0}, "need --truth-lat"),
        ({"truth_lat": 95.0, "truth_lon": 7.0}, "out of range"),
    ],
)
def test_partial_truth_is_refused_before_any_io(truth, message, tmp_path) -> None:
    with pytest.raises(UserError, match=message):
        import_sigmf(SigmfImportRequest(paths=[tmp_path], **truth), Settings(data_dir=tmp_path / "hd"))
    assert not (tmp_path / "hd").exists()
