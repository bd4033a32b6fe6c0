"""Simulated sessions in the acquisition format: the simulator's output as `SessionRecord`s."""

from __future__ import annotations

import json
import uuid

from heimdall.simulate.session import SimulatedSession
from heimdall.storage.recordings import MeasurementRecord, SessionRecord, SourceRecord

TX_ANTENNA_HEIGHT_M = 1.5


def dataset_label(scenario_name: str) -> str:
    """The `recording_sessions.dataset` label of a scenario's sessions."""
    return f"sim:{scenario_name}"


def session_record(
    sim: SimulatedSession, scenario_name: str, seed: int, dataset: str | None = None
) -> SessionRecord:
    """Rows and IQ for one simulated session; ids derive from the session id so re-runs match.

    `dataset` overrides the label (default `sim:<scenario>`), e.g. to keep a held-out test campaign apart.
    """
    source = SourceRecord(
        id=uuid.uuid5(sim.session_id, "known_source"),
        name=f"sim {scenario_name} seed {seed} #{sim.index}",
        latitude=float(sim.latitude),
        longitude=float(sim.longitude),
        altitude_m=TX_ANTENNA_HEIGHT_M,
        power_dbm=float(sim.tx_power_dbm),
        error_margin_meters=0.0,  # the simulator knows the truth exactly
        frequency_hz=float(sim.frequency_hz),
    )
    measurements = tuple(
        MeasurementRecord(
            id=uuid.uuid5(sim.session_id, f"websdr/{r.station_id}"),
            timestamp=sim.start,
            station_id=r.station_id,
            frequency_hz=float(sim.frequency_hz),
            signal_strength_db=float(r.signal_strength_db),
            snr_db=float(r.snr_db),
            frequency_offset_hz=float(r.frequency_offset_hz),
            duration_seconds=float(sim.duration_s),
            iq=r.iq,
            iq_sample_rate=float(sim.sample_rate_hz),
        )
        for r in sim.receivers
    )
    notes = json.dumps(
        {
            "simulator": "heimdall",
            "scenario": scenario_name,
            "seed": seed,
            "index": sim.index,
            "content": sim.content,
            "doppler_hz": round(float(sim.doppler_hz), 6),
        },
        sort_keys=True,
    )
    return SessionRecord(
        id=sim.session_id,
        acquisition_task_id=str(sim.session_id),
        dataset=dataset or dataset_label(scenario_name),
        session_start=sim.start,
        duration_seconds=float(sim.duration_s),
        measurements=measurements,
        source=source,
        approval_status="approved",
        notes=notes,
    )
