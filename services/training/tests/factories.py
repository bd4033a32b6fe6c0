"""Small, explicit test data: sessions in the acquisition format without running the simulator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from heimdall.storage.recordings import MeasurementRecord, SessionRecord, SourceRecord

NAMESPACE = uuid.UUID("2f1b6c1e-8a39-4d5e-9d1c-0c7a4a1e9b11")


def make_iq(rng: np.random.Generator, n: int = 512, power_dbm: float = -100.0) -> np.ndarray:
    """A 1 kHz carrier at `power_dbm` over a -127 dBm noise floor (sqrt(mW) units): clearly heard."""
    noise = np.sqrt(10 ** (-127.0 / 10) / 2) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    tone = np.sqrt(10 ** (power_dbm / 10)) * np.exp(
        2j * np.pi * 1000.0 * np.arange(n) / 12_500.0 + 1j * rng.uniform(0, 6.3)
    )
    return (tone + noise).astype(np.complex64)


def make_session_record(
    index: int,
    stations: tuple[int, ...] = (1, 2, 3),
    dataset: str = "test:unit",
    n_samples: int = 512,
    seed: int = 0,
    with_iq: bool = True,
) -> SessionRecord:
    """A deterministic session of `stations` with random IQ, truth near Torino."""
    rng = np.random.default_rng([seed, index])
    sid = uuid.uuid5(NAMESPACE, f"{dataset}/{seed}/{index}")
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index)
    source = SourceRecord(
        id=uuid.uuid5(sid, "source"),
        name=f"test source {index}",
        latitude=45.0 + 0.01 * index,
        longitude=7.6 + 0.01 * index,
        altitude_m=1.5,
        power_dbm=37.0,
        error_margin_meters=5.0,
        frequency_hz=145_500_000.0,
    )
    measurements = tuple(
        MeasurementRecord(
            id=uuid.uuid5(sid, f"station/{st}"),
            timestamp=start,
            station_id=st,
            frequency_hz=145_500_000.0,
            signal_strength_db=float(-100.0 - st),
            snr_db=float(20.0 - st),
            frequency_offset_hz=float(st),
            duration_seconds=n_samples / 12_500.0,
            iq=make_iq(rng, n_samples) if with_iq else None,
            iq_sample_rate=12_500.0 if with_iq else None,
        )
        for st in stations
    )
    return SessionRecord(
        id=sid,
        acquisition_task_id=str(sid),
        dataset=dataset,
        session_start=start,
        duration_seconds=n_samples / 12_500.0,
        measurements=measurements,
        source=source,
        notes="unit test",
    )
