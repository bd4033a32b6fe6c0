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

Fixed sites (`heimdall.simulate.sites`, ``--sites FILE``). Slot k's site is drawn once, uniformly, from
its own generator ``SeedSequence(s, spawn_key=(k,))``, so the keep rule never biases which site a session
has; the slot's candidates then put the transmitter at that site (the two position draws are made and
unused, so every other draw keeps its place in the stream) and take the site's `power_w` where it gives
one. A site no candidate makes heard within `MAX_ATTEMPTS` attempts (and `MAX_SITE_RENDERS` renders) is
a SitesError naming it, found before any session is drawn (:func:`check_sites_heard`, run eagerly by
`simulate_sessions`). Session ids then also carry the sites' content hash, so a sites run never takes
the ids (or the idempotent skip) of a uniform run.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from heimdall.detection import heard as heard_rule
from heimdall.errors import UserError
from heimdall.simulate.candidates import (
    MAX_ATTEMPTS,
    MAX_KEYS_PER_DRAW,
    Candidate,
    PlacedSites,
    draw_candidates,
    first_plausible,
    place_sites,
    site_indices,
    site_not_heard,
)
from heimdall.simulate.rendering import Rendered, render_blind, render_known_noise
from heimdall.simulate.scenario import (
    IQ_BYTES_PER_SAMPLE,
    MAX_IQ_BYTES_PER_RECEIVER,
    MAX_IQ_BYTES_PER_SESSION,
    Scenario,
)
from heimdall.simulate.sites import Sites
from heimdall.simulate.world import World, build_world

__all__ = [
    "MAX_ATTEMPTS",
    "Candidate",
    "SimulatedReceiver",
    "SimulatedSession",
    "check_iq_size",
    "check_sites_heard",
    "draw_candidates",
    "session_id_for",
    "session_start_for",
    "simulate_sessions",
    "site_indices",
]

SESSION_NAMESPACE = uuid.UUID("5b0c7a3e-2f4d-5e61-9a8b-7c6d5e4f3a21")
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
SESSION_SPACING = timedelta(seconds=60)
MIN_SAMPLES = 256
_BATCH = 64
#: A fixed site's slot renders at most this many plausible candidates: where the pre-check is loose
#: (short recordings) it cannot rule a dead site out, and `MAX_ATTEMPTS` renders would take minutes.
MAX_SITE_RENDERS = 1000
#: Most sessions one call simulates (shard bigger campaigns with `start`), and the largest session
#: index (start + n_sessions), which keeps every session's start time a valid date.
MAX_SESSIONS_PER_RUN = 1_000_000
MAX_SESSION_INDEX = 1_000_000_000
#: :func:`check_sites_heard` probes site i in slot ``_PROBE_SLOT + i``, beyond every session's slot.
_PROBE_SLOT = MAX_SESSION_INDEX


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
    site: int | None = None  # index into the run's `Sites` (fixed-site runs), else None

    @property
    def n_heard(self) -> int:
        return sum(r.heard for r in self.receivers)


def session_id_for(scenario: Scenario, seed: int, index: int, sites: Sites | None = None) -> uuid.UUID:
    """Deterministic session id: uuid5 of ``"{scenario}/{seed}/{index}"`` (re-runs are idempotent);
    a fixed-site run appends ``"/sites/{sites.sha256}"``."""
    key = f"{scenario.name}/{seed}/{index}" + ("" if sites is None else f"/sites/{sites.sha256}")
    return uuid.uuid5(SESSION_NAMESPACE, key)


def session_start_for(seed: int, index: int) -> datetime:
    """Deterministic UTC start time: a per-seed day (mod 10 years) plus one minute per session."""
    return EPOCH + timedelta(days=seed % 3650) + index * SESSION_SPACING


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
    world: World, seed: int, cand: Candidate, rendered: Rendered, duration_s: float, sites: Sites | None
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
        session_id=session_id_for(sc, seed, cand.slot, sites),
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
        site=cand.site,
    )


def _kept(
    world: World,
    seed: int,
    cand: Candidate,
    n_samples: int,
    placed: PlacedSites | None,
    site_of: dict[int, int] | None,
) -> tuple[Candidate, Rendered]:
    """Render the slot's plausible candidates from `cand` on until one is heard (the keep rule).

    A fixed site's slot has `MAX_ATTEMPTS` attempts in all and at most `MAX_SITE_RENDERS` renders."""
    renders = 0
    while (rendered := _render(world, cand, n_samples)) is None:
        renders += 1
        last = None
        if placed is not None and site_of is not None:
            if renders >= MAX_SITE_RENDERS:
                within = f"{MAX_SITE_RENDERS} rendered candidates"
                raise site_not_heard(world, placed.sites, site_of[cand.slot], within)
            last = MAX_ATTEMPTS
        cand = first_plausible(world, seed, [cand.slot], cand.attempt + 1, n_samples, placed, site_of, last)[
            cand.slot
        ]
    return cand, rendered


def _generate(
    world: World, seed: int, slots: range, n_samples: int, duration_s: float, placed: PlacedSites | None
) -> Iterator[SimulatedSession]:
    sites = None if placed is None else placed.sites
    for b0 in range(slots.start, slots.stop, _BATCH):
        batch = list(range(b0, min(b0 + _BATCH, slots.stop)))
        site_of = None if sites is None else site_indices(seed, batch, len(sites))
        first = first_plausible(world, seed, batch, 0, n_samples, placed, site_of)
        for slot in batch:
            cand, rendered = _kept(world, seed, first[slot], n_samples, placed, site_of)
            yield _session(world, seed, cand, rendered, duration_s, sites)


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


def _n_samples(scenario: Scenario, duration_s: float | None) -> int:
    """Samples per recording of `duration_s` (default the scenario's), checked against the bounds."""
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
    return n_samples


def check_sites_heard(scenario: Scenario, sites: Sites, seed: int, duration_s: float | None = None) -> None:
    """Refuse (SitesError naming it) a site outside the area or one no candidate can make heard in
    `MAX_ATTEMPTS` attempts; :func:`simulate_sessions` does this eagerly for a fixed-site run."""
    world = build_world(scenario)
    _check_heard(world, place_sites(world, sites), int(seed), _n_samples(scenario, duration_s))


_HEARD: dict[tuple[str, str, int, int], None] = {}  # probes passed in this process (a few kept)


def _check_heard(world: World, placed: PlacedSites, seed: int, n_samples: int) -> None:
    """Keep one probe session per site, in slots no session uses: the pre-check vectorised over sites
    (seconds for a site it rules out), then a render until heard (where the pre-check is loose, at short
    durations, up to `MAX_SITE_RENDERS`). Milliseconds per site that can be heard; once per process and
    run (shards and batches reuse it)."""
    key = (world.scenario.content_sha256, placed.sites.sha256, seed, n_samples)
    if key in _HEARD:
        return
    n = len(placed.sites)
    for b0 in range(0, n, MAX_KEYS_PER_DRAW):
        probe = {_PROBE_SLOT + i: i for i in range(b0, min(b0 + MAX_KEYS_PER_DRAW, n))}
        first = first_plausible(world, seed, list(probe), 0, n_samples, placed, probe, MAX_ATTEMPTS)
        for slot in probe:
            _kept(world, seed, first[slot], n_samples, placed, probe)
    if len(_HEARD) >= 16:
        _HEARD.pop(next(iter(_HEARD)))
    _HEARD[key] = None


def simulate_sessions(
    scenario: Scenario,
    n_sessions: int,
    seed: int,
    duration_s: float | None = None,
    start: int = 0,
    sites: Sites | None = None,
) -> Iterator[SimulatedSession]:
    """Kept sessions ``start … start + n_sessions − 1`` of the run `seed`, in index order (lazy).

    ``duration_s`` defaults to the scenario's; the recording has ``round(duration_s·fs)`` samples and
    the session reports that exact length as its duration. With `sites`, every session's transmitter is
    at one of them (see the module docstring).

    Arguments are validated eagerly: UserError (a ValueError) for a negative count, seed or start, a
    non-positive duration, one shorter than 256 samples, or sizes above the caps: more than
    `MAX_SESSIONS_PER_RUN` sessions, a session index beyond `MAX_SESSION_INDEX`, recordings above
    64 MiB of complex64 IQ per receiver or 512 MiB per session (see :func:`check_iq_size`); SitesError
    for a site outside the scenario's area or one no draw can make heard (:func:`check_sites_heard`).
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
    n_samples = _n_samples(scenario, duration_s)
    world = build_world(scenario)
    placed = None if sites is None else place_sites(world, sites)
    if placed is not None and n_sessions > 0:
        _check_heard(world, placed, int(seed), n_samples)
    slots = range(int(start), int(start) + int(n_sessions))
    return _generate(world, int(seed), slots, n_samples, n_samples / scenario.sample_rate_hz, placed)
