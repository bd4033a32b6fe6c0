"""heimdall.jobs.ingest: a simulated session exported as SigMF and imported into another database."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.errors import UserError
from heimdall.jobs.ingest import SigmfExportRequest, SigmfImportRequest, export_sigmf, import_sigmf
from heimdall.services import open_services
from heimdall.settings import Settings
from heimdall.storage.iq import load_iq
from heimdall.storage.queries import get_session, list_sessions


def _stored(settings: Settings, session_id: str):  # type: ignore[no-untyped-def]
    """The session's rows and every receiver's IQ samples, read back from the store."""
    services = open_services(settings)
    try:
        s = get_session(services.db, session_id)
        iq = {}
        for m in s.measurements:
            bucket, key = m.iq_bucket_key  # type: ignore[misc]
            iq[m.station_id] = load_iq(services.store, bucket, key, m.iq_samples_count)
    finally:
        services.close()
    return s, iq


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
    # what came back is the session that went out: truth, receivers, their rows and the samples
    (src, src_iq), (dst, dst_iq) = _stored(pipeline.settings, session_id), _stored(other, session_id)
    assert imported.sessions[0].dataset == src.dataset and dst.approval_status == "approved"
    assert (dst.source.latitude, dst.source.longitude) == (src.source.latitude, src.source.longitude)
    assert dst.session_start == src.session_start
    assert sorted(dst_iq) == sorted(src_iq) and len(src_iq) == imported.recordings
    for a, b in zip(src.measurements, dst.measurements, strict=True):
        assert (b.station_id, b.signal_strength_db, b.snr_db) == (
            a.station_id,
            a.signal_strength_db,
            a.snr_db,
        )
        np.testing.assert_array_equal(dst_iq[b.station_id], src_iq[a.station_id])
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
