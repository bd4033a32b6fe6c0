"""What ``heimdall locate`` checks before a recording reaches the model: receiver, rate, length, power.

Recordings are built here with known power and length; the expected thresholds and crop windows are
written out (kTB at 12.5 kHz = -174 + 10·log10(12500) = -133.03 dBm), not read from the checks module.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from exported_models import BANDS_HZ, NETWORK, Exported, T

from heimdall.inference.checks import check_capture
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.inference.recordings_in import (
    Capture,
    RecordingInputError,
    UserRecording,
    group_captures,
    read_user_recordings,
)
from heimdall.jobs.locate import LocateRequest, TooFewReceiversError, locate
from heimdall.settings import Settings

KTB_DBM = -133.03  # -174 dBm/Hz + 10·log10(12500 Hz)
START = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def noise(power_dbm: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = math.sqrt(10 ** (power_dbm / 10) / 2)
    return (scale * (rng.normal(size=n) + 1j * rng.normal(size=n))).astype(np.complex64)


def rec(iq: np.ndarray, station: int | None, rate: float = 12_500.0, **kw: object) -> UserRecording:
    return UserRecording(
        source=Path(f"rx{station}.npy"), iq=iq, sample_rate_hz=rate, start=START, station_id=station, **kw
    )


@pytest.fixture(scope="module")
def loc(iq_model: Exported) -> OnnxLocalizer:
    return OnnxLocalizer(iq_model.path)


def checked(loc: OnnxLocalizer, *recs: UserRecording, exclude: tuple[int, ...] = ()) -> dict:
    out = check_capture(loc, Capture("c", START, recs, None), exclude)
    return {"checks": out.checks, "recordings": out.recordings}


@pytest.mark.parametrize(
    ("level_dbm", "verdict"),
    [
        (KTB_DBM + 6.0, None),  # a receiver with a 6 dB noise figure
        (KTB_DBM - 1.5, None),  # inside the 3 dB allowance for the estimator
        (KTB_DBM - 4.5, "below the thermal noise"),
        (KTB_DBM - 20.0, "below the thermal noise"),  # e.g. IQ scaled to volts, not √mW
        (KTB_DBM + 55.0, None),
        (KTB_DBM + 65.0, "above thermal noise"),  # raw ADC units at ~-68 dBFS
    ],
)
def test_noise_floor_rule(loc: OnnxLocalizer, level_dbm: float, verdict: str | None) -> None:
    (chk,) = checked(loc, rec(noise(level_dbm, T, 1), 3))["checks"]
    assert chk.noise_floor_dbm == pytest.approx(level_dbm, abs=1.0)  # white noise: floor = its power
    if verdict is None:
        assert chk.status == "used" and chk.reason is None and chk.heard is False
    else:
        assert chk.status == "refused" and verdict in chk.reason


def test_a_power_no_receiver_survives_is_refused(loc: OnnxLocalizer) -> None:
    tone = (np.sqrt(10 ** (25 / 10)) * np.exp(2j * np.pi * 0.1 * np.arange(T))).astype(np.complex64)
    (chk,) = checked(loc, rec(tone + noise(-120.0, T, 2), 3))["checks"]
    assert chk.status == "refused" and "25.0 dBm is above 20 dBm" in chk.reason
    (ok,) = checked(loc, rec(tone / 100 + noise(-120.0, T, 2), 3))["checks"]  # -15 dBm: a close transmitter
    assert ok.status == "used" and ok.heard is True and ok.power_dbm == pytest.approx(-15.0, abs=0.1)


def test_rates_and_lengths(loc: OnnxLocalizer) -> None:
    x = noise(KTB_DBM + 6, 4800, 3)  # 0.1 s at 48 kHz: 1250 samples at 12.5 kHz, the model reads 1024
    got = checked(
        loc,
        rec(x, 3, 48_000.0),
        rec(noise(KTB_DBM + 6, 2 * T, 4), 5, 25_000.3),  # not a ratio of small integers
        rec(noise(KTB_DBM + 6, T, 5), 8, 8_000.0),  # below the model's rate
        rec(noise(KTB_DBM + 6, T - 1, 6), 13),  # one sample short
        rec(noise(KTB_DBM + 6, T + 11, 7), 21),  # longer: the middle T samples
    )
    c = {k.station_id: k for k in got["checks"]}
    assert c[3].status == "used"
    assert c[3].notes == [
        "resampled 48000 → 12500 Hz (×25/96, resample_poly)",
        "cropped 1250 → 1024 samples, centred (samples 113…1136)",  # (1250 - 1024) // 2 = 113
    ]
    assert "not a ratio of small integers" in c[5].reason and c[5].status == "refused"
    assert "8000 Hz is below the model's 12500 Hz" in c[8].reason
    assert "1023 samples" in c[13].reason and "too short" in c[13].reason
    assert c[21].notes == ["cropped 1035 → 1024 samples, centred (samples 5…1028)"]
    x21 = got["recordings"][21]
    np.testing.assert_array_equal(x21, rec(noise(KTB_DBM + 6, T + 11, 7), 21).iq[5 : 5 + T])
    assert sorted(got["recordings"]) == [3, 21]


def test_receivers_are_identified_by_id_or_by_position(loc: OnnxLocalizer) -> None:
    lat, lon = NETWORK.latitudes[2], NETWORK.longitudes[2]  # station 8 ("charlie")
    x = noise(KTB_DBM + 6, T, 8)
    near = lat + 50 / 111_195, lon  # 50 m north
    far = lat + 5000 / 111_195, lon  # 5 km north
    got = checked(
        loc,
        rec(x, None, latitude=near[0], longitude=near[1]),
        rec(x, None, latitude=far[0], longitude=far[1]),
        rec(x, 13, latitude=far[0], longitude=far[1]),  # id 13, recorded near station 8
        rec(x, 99),
        rec(x, 8),  # a second recording of station 8
        rec(x, 34),
        exclude=(34,),
    )["checks"]
    assert [(c.station_id, c.status) for c in got] == [
        (8, "used"),
        (None, "refused"),
        (13, "refused"),
        (99, "refused"),
        (8, "refused"),
        (34, "excluded"),
    ]
    assert got[0].station_name == "charlie"
    assert "5.0 km from the nearest receiver of the model (8)" in got[1].reason
    assert "not the receiver the model knows" in got[2].reason
    assert "not in the model's network (3 alpha, 5 bravo, 8 charlie" in got[3].reason
    assert "a second recording of this station (first: rxNone.npy)" in got[4].reason


def test_captures_are_grouped_by_time_and_session() -> None:
    x = noise(KTB_DBM, T, 9)  # 0.08192 s at 12.5 kHz

    def at(s: float, station: int, session: str | None = None) -> UserRecording:
        r = rec(x, station, session=session)
        return UserRecording(**{**r.__dict__, "start": START + timedelta(seconds=s)})

    groups = group_captures(
        [at(60.0, 3), at(0.0, 3), at(0.01, 5), at(60.05, 5), at(0.2, 8), at(0.0, 13, "s1"), at(0.0, 21, "s1")]
    )
    assert [sorted(r.station_id for r in g.recordings) for g in groups] == [[3, 5], [13, 21], [8], [3, 5]]
    assert [g.label for g in groups] == [
        "2025-05-01T12:00:00Z",
        "s1",
        "2025-05-01T12:00:00.200000Z",
        "2025-05-01T12:01:00Z",
    ]


def test_a_captures_carrier_is_what_its_files_state(tmp_path: Path) -> None:
    """The median of the stated centre frequencies (receivers tuned a little apart); None when no file
    states one; two bands in one capture are refused (two transmissions)."""
    x = noise(KTB_DBM, T, 11)
    (one,) = group_captures([rec(x, 3, frequency_hz=868.3e6), rec(x, 5, frequency_hz=868.301e6), rec(x, 8)])
    assert one.frequency_hz == pytest.approx(868.3005e6)
    (unknown,) = group_captures([rec(x, 3), rec(x, 5)])
    assert unknown.frequency_hz is None
    with pytest.raises(
        RecordingInputError, match=r"disagree on the carrier frequency \(rx3.npy 4.3392e\+08 Hz"
    ):
        group_captures([rec(x, 3, frequency_hz=433.92e6), rec(x, 5, frequency_hz=868.3e6)])
    np.save(tmp_path / "rx3.npy", x)
    side = {"station_id": 3, "sample_rate_hz": 12500, "capture_start": "2025-05-01T12:00:00Z"}
    for bad in (0, -868.3e6):
        (tmp_path / "rx3.json").write_text(json.dumps({**side, "frequency_hz": bad}))
        with pytest.raises(RecordingInputError, match=r"rx3.json: frequency_hz must be the carrier in Hz"):
            read_user_recordings([tmp_path / "rx3.npy"], 1 << 30)
    (tmp_path / "rx3.json").write_text(json.dumps({**side, "frequency_hz": 433.92e6}))
    assert read_user_recordings([tmp_path / "rx3.npy"], 1 << 30)[0].frequency_hz == 433.92e6


@pytest.mark.parametrize(("stated", "carrier"), [(433.92e6, 433.92e6), (0.0, None), (-1e6, None)])
def test_a_sigmf_file_centred_on_zero_states_no_carrier(
    tmp_path: Path, stated: float, carrier: float | None
) -> None:
    """SigMF's core:frequency is the model's carrier; ≤ 0 (a file centred on 0 Hz) is read as unknown."""
    meta = {
        "global": {
            "core:datatype": "cf32_le",
            "core:sample_rate": 12500.0,
            "core:version": "1.2.0",
            "core:geolocation": {"type": "Point", "coordinates": [10.75, 59.91]},
        },
        "captures": [
            {"core:sample_start": 0, "core:frequency": stated, "core:datetime": "2025-05-01T12:00:00Z"}
        ],
        "annotations": [{"core:sample_start": 0, "core:sample_count": T}],
    }
    (tmp_path / "rx.sigmf-meta").write_text(json.dumps(meta))
    noise(KTB_DBM, T, 12).astype("<c8").tofile(tmp_path / "rx.sigmf-data")
    (got,) = read_user_recordings([tmp_path / "rx.sigmf-meta"], 1 << 30)
    assert got.frequency_hz == carrier


def test_locate_predicts_each_capture_as_onnx_does_by_hand(iq_model: Exported, tmp_path: Path) -> None:
    """Two captures of .npy + sidecar in one folder: two estimates, each the model run on a hand-built
    tensor (cropped centred, absent receivers zero and masked), and the truth of the sidecar reported."""
    rng = np.random.default_rng(10)
    loc = OnnxLocalizer(iq_model.path)
    want = []
    for capture, start in enumerate(["2025-05-01T12:00:00Z", "2025-05-01T12:05:00Z"]):
        x = np.zeros((1, len(NETWORK.station_ids), 2, T), np.float32)
        mask = np.zeros((1, len(NETWORK.station_ids)), np.float32)
        for k, sid in enumerate(NETWORK.station_ids[: 4 + capture]):
            tone = 10 ** ((-100 - 5 * k) / 20) * np.exp(
                2j * np.pi * rng.uniform(-0.3, 0.3) * np.arange(T + 2)
            )
            iq = (tone + noise(KTB_DBM + 6, T + 2, 20 + k)).astype(np.complex64)
            np.save(tmp_path / f"c{capture}_{sid}.npy", iq)
            side: dict[str, object] = {"station_id": sid, "sample_rate_hz": 12500, "capture_start": start}
            if capture == 1:  # the second capture states its carrier (receivers tuned 1 kHz apart)
                side["truth"] = {"latitude": 59.9, "longitude": 10.7}
                side["frequency_hz"] = 433.92e6 + 1e3 * (k % 2)
            (tmp_path / f"c{capture}_{sid}.json").write_text(json.dumps(side))
            x[0, k] = np.stack([iq[1 : 1 + T].real, iq[1 : 1 + T].imag])
            mask[0, k] = 1.0
        # the carrier the files state (the median of 433.92 and 433.921 MHz), NaN where none does
        carrier = np.array(
            [np.nan if capture == 0 else np.median([433.92e6 + 1e3 * (k % 2) for k in range(5)])]
        )
        feeds = {"iq": x, "receiver_mask": mask, "frequency_hz": carrier.astype(np.float32)}
        pos, cov, _ = loc.session.run(None, feeds)
        want.append((loc.to_latlon(pos[0].astype(np.float64)), cov[0]))
    before = sorted(tmp_path.iterdir())
    out = locate(
        LocateRequest(recordings=[tmp_path], model=str(iq_model.path)), Settings(data_dir=tmp_path / "d")
    )
    assert sorted(tmp_path.iterdir()) == before  # nothing written, no data store
    assert [len(e.used()) for e in out.estimates] == [4, 5]
    for est, ((lat, lon), cov) in zip(out.estimates, want, strict=True):
        assert est.latitude == pytest.approx(float(lat), abs=1e-9) and est.longitude == pytest.approx(
            float(lon), abs=1e-9
        )
        np.testing.assert_allclose(est.covariance_enu_m2, cov, rtol=1e-5)
    assert out.estimates[0].truth is None and out.estimates[1].truth is not None
    assert out.as_json()["estimates"][1]["truth"]["latitude"] == 59.9
    carriers = [e.as_json()["carrier"] for e in out.estimates]
    assert carriers[0]["frequency_hz"] is None and carriers[1]["frequency_hz"] == 433.92e6
    assert carriers[0]["model_frequency_hz"] == pytest.approx(BANDS_HZ[1])  # unknown: the training median


def test_too_few_usable_receivers(iq_model: Exported, tmp_path: Path) -> None:
    for sid in (3, 5, 8):
        np.save(tmp_path / f"rx{sid}.npy", noise(KTB_DBM + 6, T, sid))
        rate = 8000 if sid == 8 else 12500
        side = {"station_id": sid, "sample_rate_hz": rate, "capture_start": "2025-05-01T12:00:00Z"}
        (tmp_path / f"rx{sid}.json").write_text(json.dumps(side))
    with pytest.raises(
        TooFewReceiversError, match=r"2 usable receiver\(s\), at least 3 .*station 8 \(charlie\)"
    ):
        locate(
            LocateRequest(recordings=[tmp_path], model=str(iq_model.path)), Settings(data_dir=tmp_path / "d")
        )
