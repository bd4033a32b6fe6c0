"""``heimdall locate`` from a user's files, as the quickstart runs it: export a stored session as SigMF,
locate it, and compare with ``heimdall predict`` of the same session and with ONNX Runtime fed by hand.

The reference answers are computed without the locate code: ``predict`` reads the session from the
database, and :func:`_onnx_by_hand` builds the model's input tensor from the stored IQ itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from jobs_support import great_circle_m
from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.data.recordings import stored_recordings
from heimdall.inference.localizer import ort_session
from heimdall.services import open_services
from heimdall.storage.queries import get_session

runner = CliRunner()


def _model(pipeline) -> Path:
    return pipeline.root / "model"


def _session_id(pipeline) -> str:
    return json.loads((_model(pipeline) / "split.json").read_text())["test"][0]


def _run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def _export(cli_env, dst: Path) -> Path:
    code, out, err = _run("export", "sigmf", _session_id(cli_env), str(dst))
    assert code == 0, out + err
    return dst


def _locate(*args: str) -> tuple[dict, str]:
    code, out, err = _run("locate", *args)
    assert code == 0, out + err
    return json.loads(out), err


def _predict(cli_env) -> dict:
    code, out, err = _run("predict", "--model", str(_model(cli_env)), "--session", _session_id(cli_env))
    assert code == 0, out + err
    return json.loads(out)


def _onnx_by_hand(pipeline, leave_out: set[int], carrier_hz: float | None = None) -> tuple[float, float]:
    """(lat, lon) of ONNX Runtime on the stored IQ, tensor built here, ``leave_out`` masked, at the
    session's carrier (its rows' frequency_hz) unless ``carrier_hz`` is given."""
    meta_model = _model(pipeline) / "model.onnx"
    session = ort_session(meta_model)
    meta = session.get_modelmeta().custom_metadata_map
    ids, t = json.loads(meta["station_ids"]), int(meta["n_samples"])
    services = open_services(pipeline.settings)
    try:
        stored = stored_recordings(services.db, services.store, _session_id(pipeline))
        rows = get_session(services.db, _session_id(pipeline)).measurements
    finally:
        services.close()
    carrier = np.array([rows[0].frequency_hz if carrier_hz is None else carrier_hz], np.float32)
    x = np.zeros((1, len(ids), 2, t), np.float32)
    mask = np.zeros((1, len(ids)), np.float32)
    for k, sid in enumerate(ids):
        if sid in stored.recordings and sid not in leave_out:
            x[0, k] = np.stack([stored.recordings[sid].real, stored.recordings[sid].imag])
            mask[0, k] = 1.0
    feeds = {"iq": x, "receiver_mask": mask, "frequency_hz": carrier}
    position = session.run(None, feeds)[0][0].astype(np.float64)
    from heimdall.geo import LocalFrame

    frame = LocalFrame(float(meta["frame_origin_lat"]), float(meta["frame_origin_lon"]))
    lat, lon = frame.to_latlon(position)
    return float(lat), float(lon)


def _rewrite(meta: Path, iq: np.ndarray, rate: float, **fields: object) -> None:
    """Replace a SigMF recording's samples and sample rate (and any global fields) in place."""
    doc = json.loads(meta.read_text())
    doc["global"]["core:sample_rate"] = rate
    doc["global"].pop("core:sha512", None)
    doc["global"].update(fields)
    meta.write_text(json.dumps(doc))
    np.ascontiguousarray(iq, "<c8").tofile(meta.with_suffix(".sigmf-data"))


def _samples(meta: Path) -> np.ndarray:
    return np.fromfile(meta.with_suffix(".sigmf-data"), "<c8")


def _station(meta: Path) -> int:
    return int(json.loads(meta.read_text())["global"]["heimdall:station_id"])


def _distance(a: dict, b: dict) -> float:
    return great_circle_m(a["latitude"], a["longitude"], b["latitude"], b["longitude"])


def test_locate_an_exported_session_gives_predicts_position(cli_env, tmp_path: Path) -> None:
    folder = _export(cli_env, tmp_path / "rec")
    got, err = _locate(str(folder), "--model", str(_model(cli_env)))
    want = _predict(cli_env)
    (est,) = got["estimates"]
    assert _distance(est["position"], want["position"]) < 1.0
    np.testing.assert_allclose(est["covariance_enu_m2"], want["covariance_enu_m2"], rtol=1e-5)
    assert sorted(est["receivers"]["used"]) == sorted(want["receivers"]["used"])
    assert est["receivers"]["refused"] == [] and est["receivers"]["excluded"] == [] and err == ""
    assert est["capture"]["label"] == _session_id(cli_env)  # the files name their session
    assert est["truth"]["latitude"] == pytest.approx(want["truth"]["latitude"], abs=1e-12)
    assert [r["station_id"] for r in got["network"]] == [1, 2, 3, 4, 5, 6, 7]
    checks = est["receivers"]["checks"]
    assert all(c["status"] == "used" and c["notes"] == [] and c["power_dbm"] is not None for c in checks)


def test_locate_opens_no_data_store(cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _export(cli_env, tmp_path / "rec")
    empty = tmp_path / "elsewhere" / "heimdall-data"
    monkeypatch.setenv("HEIMDALL_DATA_DIR", str(empty))
    got, _ = _locate(str(folder), "--model", str(_model(cli_env) / "model.onnx"))
    assert len(got["estimates"]) == 1
    assert not empty.exists() and not empty.parent.exists()


def test_a_receiver_at_twice_the_rate_is_resampled(cli_env, tmp_path: Path) -> None:
    """One receiver recorded at 25 kHz (the stored 12.5 kHz recording upsampled ×2) is brought back.

    The round trip is not exact: resample_poly's two anti-aliasing filters attenuate the band edges
    (|f| near 6.25 kHz) and ring for a few samples at each end. Measured on this session: the power moves
    by 0.0005 dB and the position by 12 m, against a 1σ semi-minor axis of 60 km. The bound asserted, 1 %
    of the 1σ semi-minor axis, is a shift no use of the ellipse can notice; the same file read at the
    wrong rate (not resampled) moves the estimate by 6.7 km, far outside it, so the check can fail.
    """
    folder = _export(cli_env, tmp_path / "rec")
    meta = sorted(folder.glob("*.sigmf-meta"))[2]
    original = _samples(meta)
    _rewrite(meta, scipy.signal.resample_poly(original.astype(np.complex128), 2, 1), 25_000.0)
    got, _ = _locate(str(folder), "--model", str(_model(cli_env)))
    want = _predict(cli_env)
    (est,) = got["estimates"]
    (check,) = [c for c in est["receivers"]["checks"] if c["source"] == meta.name]
    assert check["status"] == "used" and check["sample_rate_hz"] == 25_000.0
    assert check["notes"] == ["resampled 25000 → 12500 Hz (×1/2, resample_poly)"]
    power_dbm = 10 * math.log10(float(np.mean(np.abs(original.astype(np.complex128)) ** 2)))
    assert check["power_dbm"] == pytest.approx(power_dbm, abs=0.01)
    shift = _distance(est["position"], want["position"])
    assert shift < 0.01 * want["ellipses"]["1sigma"]["semi_minor_m"], shift
    # the file read at the wrong rate, not resampled, gives another answer: the check above can fail
    _rewrite(
        meta, scipy.signal.resample_poly(original.astype(np.complex128), 2, 1)[: original.size], 12_500.0
    )
    wrong, _ = _locate(str(folder), "--model", str(_model(cli_env)))
    assert _distance(wrong["estimates"][0]["position"], want["position"]) > 10 * max(shift, 1.0)


def test_a_receiver_at_an_unsupported_rate_is_refused_and_the_others_used(cli_env, tmp_path: Path) -> None:
    folder = _export(cli_env, tmp_path / "rec")
    meta = sorted(folder.glob("*.sigmf-meta"))[0]
    slow = scipy.signal.resample_poly(_samples(meta).astype(np.complex128), 16, 25)  # 8 kHz
    _rewrite(meta, slow, 8_000.0)
    got, err = _locate(str(folder), "--model", str(_model(cli_env)))
    (est,) = got["estimates"]
    (refused,) = est["receivers"]["refused"]
    assert refused["station_id"] == _station(meta) and "below the model's 12500 Hz" in refused["reason"]
    assert _station(meta) not in est["receivers"]["used"] and len(est["receivers"]["used"]) == 6
    (line,) = err.strip().splitlines()
    assert line.startswith(f"refused: station {_station(meta)} (") and meta.name in line and "8000 Hz" in line
    lat, lon = _onnx_by_hand(cli_env, leave_out={_station(meta)})
    assert great_circle_m(lat, lon, est["position"]["latitude"], est["position"]["longitude"]) < 1.0


def test_exclude_and_an_unknown_receiver(cli_env, tmp_path: Path) -> None:
    folder = _export(cli_env, tmp_path / "rec")
    metas = sorted(folder.glob("*.sigmf-meta"))
    stranger = metas[1]
    replaced = _station(stranger)
    _rewrite(
        stranger,
        _samples(stranger),
        12_500.0,
        **{"heimdall:station_id": 99, "core:geolocation": {"type": "Point", "coordinates": [2.35, 48.85]}},
    )
    excluded = _station(metas[4])
    got, err = _locate(str(folder), "--model", str(_model(cli_env)), "--exclude", str(excluded))
    (est,) = got["estimates"]
    (refused,) = est["receivers"]["refused"]
    assert refused["station_id"] == 99 and "not in the model's network" in refused["reason"]
    assert [r["station_id"] for r in est["receivers"]["excluded"]] == [excluded]
    assert len(est["receivers"]["used"]) == 5 and len(err.strip().splitlines()) == 2
    assert replaced not in est["receivers"]["used"] and excluded not in est["receivers"]["used"]
    lat, lon = _onnx_by_hand(cli_env, leave_out={excluded, replaced})
    assert great_circle_m(lat, lon, est["position"]["latitude"], est["position"]["longitude"]) < 1.0


def test_npy_with_sidecars_gives_predicts_position(cli_env, tmp_path: Path) -> None:
    folder = _export(cli_env, tmp_path / "rec")
    npy_dir = tmp_path / "npy"
    npy_dir.mkdir()
    for meta in sorted(folder.glob("*.sigmf-meta")):
        doc = json.loads(meta.read_text())
        sid = _station(meta)
        np.save(npy_dir / f"rx{sid}.npy", _samples(meta))
        (npy_dir / f"rx{sid}.json").write_text(
            json.dumps(
                {
                    "station_id": sid,
                    "sample_rate_hz": doc["global"]["core:sample_rate"],
                    "capture_start": doc["captures"][0]["core:datetime"],
                    "frequency_hz": doc["captures"][0]["core:frequency"],
                }
            )
        )
    got, _ = _locate(str(npy_dir), "--model", str(_model(cli_env)))
    (est,) = got["estimates"]
    assert _distance(est["position"], _predict(cli_env)["position"]) < 1.0
    assert "truth" not in est  # the sidecars carry none


def test_locate_feeds_the_carrier_the_files_state(cli_env, tmp_path: Path) -> None:
    """SigMF core:frequency is the model's band: the other band's carrier moves the estimate, exactly as
    ONNX Runtime fed that carrier by hand; files stating none get the training median."""
    folder = _export(cli_env, tmp_path / "rec")
    metas = sorted(folder.glob("*.sigmf-meta"))
    session_carrier = json.loads(metas[0].read_text())["captures"][0]["core:frequency"]
    other = 433.5e6 if session_carrier < 300e6 else 145.5e6  # nw-italy-v1's two bands
    for meta in metas:
        doc = json.loads(meta.read_text())
        doc["captures"][0]["core:frequency"] = other
        doc["global"].pop("core:sha512", None)
        meta.write_text(json.dumps(doc))
    got, _ = _locate(str(folder), "--model", str(_model(cli_env)))
    (est,) = got["estimates"]
    assert est["carrier"]["frequency_hz"] == est["carrier"]["model_frequency_hz"] == other
    lat, lon = _onnx_by_hand(cli_env, leave_out=set(), carrier_hz=other)
    assert great_circle_m(lat, lon, est["position"]["latitude"], est["position"]["longitude"]) < 1.0
    moved = _distance(est["position"], _predict(cli_env)["position"])
    print(f"the other band moves the estimate by {moved:.0f} m")
    assert moved > 10.0


def test_too_few_receivers_is_one_line(cli_env, tmp_path: Path) -> None:
    folder = _export(cli_env, tmp_path / "rec")
    ids = sorted(_station(m) for m in folder.glob("*.sigmf-meta"))
    code, out, err = _run(
        "locate", str(folder), "--model", str(_model(cli_env)), "--exclude", ",".join(map(str, ids[2:]))
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "2 usable receiver(s), at least 3 are needed" in err
