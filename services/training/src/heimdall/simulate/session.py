"""Seeded session simulation: transmitter draws, IQ per receiver, measured power/SNR, keep rule.

Randomness. Kept session k of a run with seed s is found by rejection sampling in its own *slot*:
candidate ``(k, j)`` (attempt j = 0, 1, …) draws everything from
``Generator(PCG64(SeedSequence(s, spawn_key=(k, j))))``, and the slot's first candidate heard by
≥ `min_receivers_heard` receivers becomes session k. Each kept session is therefore an independent
draw from the same conditional distribution as filtering one long candidate stream, but session k
depends only on (scenario, s, k): not on `n_sessions`, `start`, batching or other sessions, so runs can be
resumed or sharded (`start`) and re-runs are byte-identical and idempotent.

Per candidate, in this order: position uniform over the world's ENU area (then `frame.to_latlon`),
band by probability, power uniform in dBm (log-uniform in W), content by probability, one uniform draw
per session that is the maximum Doppler (v1: uniform in Hz) or the transmitter's speed (v2: uniform in
km/h, Doppler = v·f/c of the band), per link Rician K uniform in dB and frequency offset uniform ±50 Hz,
then the dynamic shadowing ε_r ~ N(0, 3²). The session-mean powers ``s_r = field_r(x, b) + P_tx + ε_r``
follow; the IQ stage (`heimdall.simulate.rendering`) then draws noise, content and fading from the
same generator (see `propagation.MeasurementModel` for the exact measurement model).

Cheap pre-check (exact: see `rendering`): v1 — a receiver whose ``s_r`` is more than 3 dB below its
detection threshold cannot measure SNR ≥ 6 dB (that would need a noise-power excursion of > 14 standard
deviations even at 256 samples), so it gets noise only and no signal is generated; v2 — the same idea
for the blind estimator, with the fading's hard ceiling before any IQ and its realisation at rendering.
A candidate with fewer than `min_receivers_heard` plausible receivers is rejected before any IQ is
made. Candidates are drawn and pre-checked in vectorised batches across slots.

A receiver that does not hear stores noise only (the same noise realisation, without the signal), so
for every row ``heard ⟺ snr_db ≥ detection_snr_db`` (v2: the blind estimate and `detection.heard`); in
the astronomically unlikely event that pure noise measures above the threshold its noise is redrawn.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from heimdall.detection import heard as heard_rule
from heimdall.errors import UserError
from heimdall.simulate.propagation import mean_received_power_dbm
from heimdall.simulate.rendering import (
    Rendered,
    fading_ceiling,
    plausible_blind,
    plausible_known_noise,
    render_blind,
    render_known_noise,
)
from heimdall.simulate.scenario import (
    IQ_BYTES_PER_SAMPLE,
    MAX_IQ_BYTES_PER_RECEIVER,
    MAX_IQ_BYTES_PER_SESSION,
    SPEED_OF_LIGHT_M_S,
    Scenario,
    ScenarioError,
)
from heimdall.simulate.world import World, build_world

SESSION_NAMESPACE = uuid.UUID("5b0c7a3e-2f4d-5e61-9a8b-7c6d5e4f3a21")
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
SESSION_SPACING = timedelta(seconds=60)
MIN_SAMPLES = 256
MAX_ATTEMPTS = 100_000
_BATCH = 64
#: Most sessions one call simulates (shard bigger campaigns with `start`), and the largest session
#: index (start + n_sessions), which keeps every session's start time a valid date.
MAX_SESSIONS_PER_RUN = 1_000_000
MAX_SESSION_INDEX = 1_000_000_000


@dataclass(frozen=True, eq=False)
class SimulatedReceiver:
    """One receiver's recording and its measurement row values."""

    station_id: int
    iq: NDArray[np.complex64]  # (T,), sqrt(mW) units, read-only
    signal_strength_db: float  # 10·log10(mean|iq|²), dBm
    snr_db: float  # 10·log10(max(P̂/N − 1, 1e-3))
    frequency_offset_hz: float
    heard: bool  # ⟺ snr_db ≥ detection_snr_db
    mean_power_dbm: float  # s_r, the truth (not stored in measurement rows)
    rician_k_db: float


@dataclass(frozen=True, eq=False)
class SimulatedSession:
    """One kept session: the transmitter truth and one `SimulatedReceiver` per scenario receiver."""

    index: int
    session_id: uuid.UUID
    start: datetime
    latitude: float
    longitude: float
    enu: NDArray[np.float64]  # (2,)
    tx_power_dbm: float
    frequency_hz: float
    band_index: int
    content: str
    doppler_hz: float
    duration_s: float
    sample_rate_hz: float
    receivers: tuple[SimulatedReceiver, ...]
    speed_mps: float | None = None  # where the scenario draws a speed (v2); doppler_hz follows from it

    @property
    def n_heard(self) -> int:
        return sum(r.heard for r in self.receivers)


@dataclass(frozen=True, eq=False)
class Candidate:
    """The scalar draws of candidate (slot, attempt), before any IQ (exposed for distribution tests)."""

    slot: int
    attempt: int
    enu: NDArray[np.float64]
    latitude: float
    longitude: float
    band_index: int
    tx_power_dbm: float
    content: str
    doppler_hz: float
    speed_mps: float | None  # the transmitter's speed where the scenario draws one (v2), else None
    rician_k_db: NDArray[np.float64]  # (R,)
    frequency_offset_hz: NDArray[np.float64]  # (R,)
    dynamic_shadowing_db: NDArray[np.float64]  # (R,) ε_r
    mean_power_dbm: NDArray[np.float64]  # (R,) s_r
    rng: np.random.Generator  # continues into the IQ stage


def session_id_for(scenario: Scenario, seed: int, index: int) -> uuid.UUID:
    """Deterministic session id: uuid5 of ``"{scenario}/{seed}/{index}"`` (re-runs are idempotent)."""
    return uuid.uuid5(SESSION_NAMESPACE, f"{scenario.name}/{seed}/{index}")


def session_start_for(seed: int, index: int) -> datetime:
    """Deterministic UTC start time: a per-seed day (mod 10 years) plus one minute per session."""
    return EPOCH + timedelta(days=seed % 3650) + index * SESSION_SPACING


def _pick(cumulative: NDArray[np.float64], u: NDArray[np.float64]) -> NDArray[np.int64]:
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)


def _draw(world: World, seed: int, keys: list[tuple[int, int]]) -> list[Candidate]:
    """Candidates for (slot, attempt) keys; scalar draws per generator, physics vectorised over keys."""
    sc = world.scenario
    n_rx = world.n_receivers
    rngs = [np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=k))) for k in keys]
    u = np.stack([g.random(6 + 2 * n_rx) for g in rngs])
    eps = np.stack([g.standard_normal(n_rx) for g in rngs]) * sc.propagation.dynamic_shadowing_sigma_db

    a = world.area
    enu = np.column_stack([a.east_min + u[:, 0] * a.width_m, a.north_min + u[:, 1] * a.height_m])
    lat, lon = world.frame.to_latlon(enu)
    band = _pick(np.cumsum(world.band_probabilities), u[:, 2])
    tx = sc.transmitter
    power = tx.power_dbm_min + u[:, 3] * (tx.power_dbm_max - tx.power_dbm_min)
    contents = list(tx.content)
    content = _pick(np.cumsum([tx.content[c] for c in contents]), u[:, 4])
    fad = sc.fading
    if fad.by_speed:  # v2: the speed is drawn, the Doppler follows on the session's carrier
        lo, hi = float(fad.speed_kmh_min) / 3.6, float(fad.speed_kmh_max) / 3.6  # type: ignore[arg-type]
        speed = lo + u[:, 5] * (hi - lo)
        doppler = speed * world.band_frequencies_hz[band] / SPEED_OF_LIGHT_M_S
    else:
        speed = np.full(len(keys), np.nan)
        doppler = fad.doppler_hz_min + u[:, 5] * (fad.doppler_hz_max - fad.doppler_hz_min)  # type: ignore[operator]
    k_db = fad.k_db_min + u[:, 6 : 6 + n_rx] * (fad.k_db_max - fad.k_db_min)
    f_off = (2.0 * u[:, 6 + n_rx :] - 1.0) * sc.frequency_offset_max_hz
    s = mean_received_power_dbm(world, lat, lon, band, power) + eps
    return [
        Candidate(
            slot=k[0],
            attempt=k[1],
            enu=enu[i],
            latitude=float(lat[i]),
            longitude=float(lon[i]),
            band_index=int(band[i]),
            tx_power_dbm=float(power[i]),
            content=contents[content[i]],
            doppler_hz=float(doppler[i]),
            speed_mps=float(speed[i]) if fad.by_speed else None,
            rician_k_db=k_db[i],
            frequency_offset_hz=f_off[i],
            dynamic_shadowing_db=eps[i],
            mean_power_dbm=s[i],
            rng=rngs[i],
        )
        for i, k in enumerate(keys)
    ]


def draw_candidates(scenario: Scenario, seed: int, slots: Iterable[int], attempt: int = 0) -> list[Candidate]:
    """Candidate draws (before the keep rule) of `slots` at one attempt: unbiased by the network."""
    return _draw(build_world(scenario), seed, [(int(s), attempt) for s in slots])


def _is_plausible(world: World, cand: Candidate, n_samples: int) -> bool:
    """Can the candidate be heard by enough receivers (before any IQ; exact, see `rendering`)?"""
    sc = world.scenario
    if sc.snr_estimator == "blind":
        ceiling_mw = 10.0 ** (cand.mean_power_dbm / 10.0) * fading_ceiling(cand.rician_k_db)
        plausible = plausible_blind(world, ceiling_mw, n_samples)
    else:
        plausible = plausible_known_noise(world, cand.mean_power_dbm)
    return int(plausible.sum()) >= sc.min_receivers_heard


def _first_plausible(
    world: World, seed: int, slots: list[int], attempt0: int, n_samples: int
) -> dict[int, Candidate]:
    found: dict[int, Candidate] = {}
    pending, attempt = list(slots), attempt0
    while pending:
        if attempt - attempt0 > MAX_ATTEMPTS:
            raise ScenarioError(
                f"scenario {world.scenario.name!r}: no candidate heard by >= "
                f"{world.scenario.min_receivers_heard} receivers in {MAX_ATTEMPTS} attempts: the scenario's "
                "transmitters are too weak or its area too large"
            )
        for cand in _draw(world, seed, [(s, attempt) for s in pending]):
            if _is_plausible(world, cand, n_samples):
                found[cand.slot] = cand
        pending = [s for s in pending if s not in found]
        attempt += 1
    return found


def _render(world: World, cand: Candidate, n_samples: int) -> Rendered | None:
    """IQ ``(R, T)``, measured power and SNR of a candidate by the scenario's rule; None if too few hear."""
    render = render_blind if world.scenario.snr_estimator == "blind" else render_known_noise
    return render(
        world,
        cand.rng,
        cand.content,
        cand.mean_power_dbm,
        cand.rician_k_db,
        cand.doppler_hz,
        cand.frequency_offset_hz,
        n_samples,
    )


def _session(
    world: World, seed: int, cand: Candidate, rendered: Rendered, duration_s: float
) -> SimulatedSession:
    sc = world.scenario
    iq, power, snr = rendered
    blind = sc.snr_estimator == "blind"
    receivers = tuple(
        SimulatedReceiver(
            station_id=world.receiver_ids[r],
            iq=iq[r],
            signal_strength_db=float(10.0 * np.log10(power[r])),
            snr_db=float(snr[r]),
            frequency_offset_hz=float(cand.frequency_offset_hz[r]),
            heard=bool(heard_rule(snr[r])) if blind else bool(snr[r] >= sc.detection_snr_db),
            mean_power_dbm=float(cand.mean_power_dbm[r]),
            rician_k_db=float(cand.rician_k_db[r]),
        )
        for r in range(world.n_receivers)
    )
    enu = cand.enu.copy()
    enu.flags.writeable = False
    return SimulatedSession(
        index=cand.slot,
        session_id=session_id_for(sc, seed, cand.slot),
        start=session_start_for(seed, cand.slot),
        latitude=cand.latitude,
        longitude=cand.longitude,
        enu=enu,
        tx_power_dbm=cand.tx_power_dbm,
        frequency_hz=float(world.band_frequencies_hz[cand.band_index]),
        band_index=cand.band_index,
        content=cand.content,
        doppler_hz=cand.doppler_hz,
        speed_mps=cand.speed_mps,
        duration_s=duration_s,
        sample_rate_hz=sc.sample_rate_hz,
        receivers=receivers,
    )


def _generate(
    world: World, seed: int, slots: range, n_samples: int, duration_s: float
) -> Iterator[SimulatedSession]:
    for b0 in range(slots.start, slots.stop, _BATCH):
        batch = list(range(b0, min(b0 + _BATCH, slots.stop)))
        first = _first_plausible(world, seed, batch, 0, n_samples)
        for slot in batch:
            cand = first[slot]
            while (rendered := _render(world, cand, n_samples)) is None:
                cand = _first_plausible(world, seed, [slot], cand.attempt + 1, n_samples)[slot]
            yield _session(world, seed, cand, rendered, duration_s)


def check_iq_size(scenario: Scenario, n_samples: int, what: str) -> None:
    """Refuse recordings above the documented caps (64 MiB of IQ per receiver, 512 MiB per session)."""
    fs = scenario.sample_rate_hz
    per_rx = n_samples * IQ_BYTES_PER_SAMPLE
    per_session = per_rx * len(scenario.receivers)
    if per_rx > MAX_IQ_BYTES_PER_RECEIVER or per_session > MAX_IQ_BYTES_PER_SESSION:
        longest = (
            min(MAX_IQ_BYTES_PER_RECEIVER, MAX_IQ_BYTES_PER_SESSION // len(scenario.receivers))
            // IQ_BYTES_PER_SAMPLE
        )
        raise UserError(
            f"{what} at {fs:g} Hz is {n_samples:,} samples per receiver: {_mib(per_rx)} of IQ per receiver, "
            f"{_mib(per_session)} per session of {len(scenario.receivers)} receivers; the caps are "
            f"{_mib(MAX_IQ_BYTES_PER_RECEIVER)} per receiver and {_mib(MAX_IQ_BYTES_PER_SESSION)} per "
            f"session (at most {longest / fs:.6g} s here)"
        )


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 2**40 else f"{n / 2**40:,.0f} TiB"


def simulate_sessions(
    scenario: Scenario,
    n_sessions: int,
    seed: int,
    duration_s: float | None = None,
    start: int = 0,
) -> Iterator[SimulatedSession]:
    """Kept sessions ``start … start + n_sessions − 1`` of the run `seed`, in index order (lazy).

    ``duration_s`` defaults to the scenario's; the recording has ``round(duration_s·fs)`` samples and
    the session reports that exact length as its duration.

    Arguments are validated eagerly: UserError (a ValueError) for a negative count, seed or start, a
    non-positive duration, one shorter than 256 samples, or sizes above the caps: more than
    `MAX_SESSIONS_PER_RUN` sessions, a session index beyond `MAX_SESSION_INDEX`, recordings above
    64 MiB of complex64 IQ per receiver or 512 MiB per session (see :func:`check_iq_size`).
    """
    if int(n_sessions) != n_sessions or n_sessions < 0:
        raise UserError(f"n_sessions must be a non-negative integer, got {n_sessions!r}")
    if int(seed) != seed or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if int(start) != start or start < 0:
        raise UserError(f"start must be a non-negative integer, got {start!r}")
    if n_sessions > MAX_SESSIONS_PER_RUN:
        raise UserError(
            f"n_sessions={n_sessions} is more than {MAX_SESSIONS_PER_RUN:,} sessions in one run; "
            "simulate a bigger campaign in shards with start"
        )
    if start + n_sessions > MAX_SESSION_INDEX:
        raise UserError(
            f"start + n_sessions = {start + n_sessions} exceeds the largest session index "
            f"{MAX_SESSION_INDEX:,}"
        )
    duration = scenario.default_duration_s if duration_s is None else float(duration_s)
    if not (duration > 0.0 and math.isfinite(duration)):
        raise UserError(f"duration_s must be a finite number > 0, got {duration_s!r}")
    n_samples = round(duration * scenario.sample_rate_hz)
    if n_samples < MIN_SAMPLES:
        raise UserError(
            f"duration_s={duration} gives {n_samples} samples at {scenario.sample_rate_hz:g} Hz;"
            f" at least {MIN_SAMPLES} are needed"
        )
    check_iq_size(scenario, n_samples, f"duration_s={duration:g}")
    world = build_world(scenario)
    slots = range(int(start), int(start) + int(n_sessions))
    return _generate(world, int(seed), slots, n_samples, n_samples / scenario.sample_rate_hz)
