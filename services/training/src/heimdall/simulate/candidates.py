"""Candidates: the seeded scalar draws of (slot, attempt) keys and the exact pre-check before any IQ.

The randomness is described in :mod:`heimdall.simulate.session`: candidate ``(k, j)`` draws everything
from ``Generator(PCG64(SeedSequence(seed, spawn_key=(k, j))))``, and a slot's first candidate that enough
receivers could hear goes on to be rendered. With fixed sites (:mod:`heimdall.simulate.sites`) slot k's
site comes from ``SeedSequence(seed, spawn_key=(k,))`` and its candidates stand there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heimdall.simulate.propagation import mean_received_power_dbm
from heimdall.simulate.rendering import fading_ceiling, plausible_blind, plausible_known_noise
from heimdall.simulate.scenario import SPEED_OF_LIGHT_M_S, Scenario, ScenarioError
from heimdall.simulate.sites import Sites, SitesError
from heimdall.simulate.world import World, build_world

MAX_ATTEMPTS = 100_000
#: Candidates drawn at once while a few slots still reject (the same first candidates, in fewer passes).
MAX_KEYS_PER_DRAW = 1024


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
    site: int | None = None  # index into the run's `Sites` (fixed-site runs), else None


@dataclass(frozen=True, eq=False)
class PlacedSites:
    """A run's sites in the world: exact positions as given, ENU, and fixed power (NaN: drawn)."""

    sites: Sites
    latitude: NDArray[np.float64]  # (S,)
    longitude: NDArray[np.float64]
    enu: NDArray[np.float64]  # (S, 2)
    power_dbm: NDArray[np.float64]  # (S,)


def place_sites(world: World, sites: Sites) -> PlacedSites:
    """Sites in the world's frame; one outside the simulated area is a SitesError (no terrain there)."""
    lat = np.array([s.latitude for s in sites.sites], np.float64)
    lon = np.array([s.longitude for s in sites.sites], np.float64)
    enu = world.frame.to_enu(lat, lon)
    outside = np.flatnonzero(~world.area.contains(enu))
    if outside.size:
        sc = world.scenario
        raise SitesError(
            f"{sites.describe(int(outside[0]))} lies outside the area of scenario {sc.name!r} (the "
            f"receivers' bounding box grown by area_margin_m = {sc.area_margin_m:g} m), which has no "
            "terrain there" + (f" ({outside.size} sites are outside)" if outside.size > 1 else "")
        )
    power = np.array([np.nan if s.power_dbm is None else s.power_dbm for s in sites.sites], np.float64)
    return PlacedSites(sites, lat, lon, enu, power)


def site_indices(seed: int, slots: Iterable[int], n_sites: int) -> dict[int, int]:
    """Each slot's site: uniform over `n_sites`, from the slot's own generator (not its candidates')."""
    out: dict[int, int] = {}
    for k in slots:
        g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(int(k),))))
        out[int(k)] = int(g.integers(n_sites))
    return out


def _pick(cumulative: NDArray[np.float64], u: NDArray[np.float64]) -> NDArray[np.int64]:
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)


def draw_keys(
    world: World,
    seed: int,
    keys: list[tuple[int, int]],
    placed: PlacedSites | None = None,
    site_of: dict[int, int] | None = None,
) -> list[Candidate]:
    """Candidates for (slot, attempt) keys; scalar draws per generator, physics vectorised over keys.

    With `placed`, slot k's transmitter is at site ``site_of[k]`` (and has its power where it gives one).
    """
    sc = world.scenario
    n_rx = world.n_receivers
    rngs = [np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=k))) for k in keys]
    u = np.stack([g.random(6 + 2 * n_rx) for g in rngs])
    eps = np.stack([g.standard_normal(n_rx) for g in rngs]) * sc.propagation.dynamic_shadowing_sigma_db

    band = _pick(np.cumsum(world.band_probabilities), u[:, 2])
    tx = sc.transmitter
    power = tx.power_dbm_min + u[:, 3] * (tx.power_dbm_max - tx.power_dbm_min)
    site: NDArray[np.int64] | None = None
    if placed is None:
        a = world.area
        enu = np.column_stack([a.east_min + u[:, 0] * a.width_m, a.north_min + u[:, 1] * a.height_m])
        lat, lon = world.frame.to_latlon(enu)
    else:
        assert site_of is not None
        site = np.array([site_of[k[0]] for k in keys], np.int64)
        enu, lat, lon = placed.enu[site], placed.latitude[site], placed.longitude[site]
        fixed = placed.power_dbm[site]
        power = np.where(np.isnan(fixed), power, fixed)
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
            site=None if site is None else int(site[i]),
        )
        for i, k in enumerate(keys)
    ]


def draw_candidates(
    scenario: Scenario, seed: int, slots: Iterable[int], attempt: int = 0, sites: Sites | None = None
) -> list[Candidate]:
    """Candidate draws (before the keep rule) of `slots` at one attempt: unbiased by the network."""
    world = build_world(scenario)
    keys = [(int(s), attempt) for s in slots]
    if sites is None:
        return draw_keys(world, seed, keys)
    site_of = site_indices(seed, [k for k, _ in keys], len(sites))
    return draw_keys(world, seed, keys, place_sites(world, sites), site_of)


def plausible(world: World, cands: list[Candidate], n_samples: int) -> NDArray[np.bool_]:
    """Which candidates enough receivers could hear (before any IQ; exact, see `rendering`).

    Vectorised over candidates: every operation is elementwise, so each verdict is the one a single
    candidate gets (the blind allowance, which costs milliseconds, is computed once per call)."""
    sc = world.scenario
    mean = np.stack([c.mean_power_dbm for c in cands])
    if sc.snr_estimator == "blind":
        ceiling_mw = 10.0 ** (mean / 10.0) * fading_ceiling(np.stack([c.rician_k_db for c in cands]))
        plausible = plausible_blind(world, ceiling_mw, n_samples)
    else:
        plausible = plausible_known_noise(world, mean)
    return plausible.sum(axis=1) >= sc.min_receivers_heard


def site_not_heard(world: World, sites: Sites, index: int, within: str, others: int = 0) -> SitesError:
    """The one-line refusal of a site that no candidate made heard `within` its budget."""
    sc = world.scenario
    more = f" (and {others} more sites)" if others else ""
    return SitesError(
        f"{sites.describe(index)}{more}: no candidate heard by >= {sc.min_receivers_heard} receivers in "
        f"{within} of scenario {sc.name!r}; move it nearer the receivers or give it more power_w"
    )


def _exhausted(
    world: World, placed: PlacedSites | None, site_of: dict[int, int] | None, pending: list[int]
) -> Exception:
    sc = world.scenario
    if placed is None or site_of is None:
        return ScenarioError(
            f"scenario {sc.name!r}: no candidate heard by >= {sc.min_receivers_heard} receivers in "
            f"{MAX_ATTEMPTS} attempts: the scenario's transmitters are too weak or its area too large"
        )
    dead = sorted({site_of[s] for s in pending})
    return site_not_heard(world, placed.sites, dead[0], f"{MAX_ATTEMPTS} attempts", len(dead) - 1)


def first_plausible(
    world: World,
    seed: int,
    slots: list[int],
    attempt0: int,
    n_samples: int,
    placed: PlacedSites | None = None,
    site_of: dict[int, int] | None = None,
    last: int | None = None,
) -> dict[int, Candidate]:
    """Each slot's first plausible candidate from `attempt0` on (attempts up to `last`, by default
    ``attempt0 + MAX_ATTEMPTS``). Slots still rejecting get several attempts per draw, doubling, which
    finds the same first candidate (each has its own generator) in far fewer passes."""
    last = attempt0 + MAX_ATTEMPTS if last is None else last
    found: dict[int, Candidate] = {}
    pending, attempt, width = list(slots), attempt0, 1
    while pending:
        if attempt > last:
            raise _exhausted(world, placed, site_of, pending)
        width = min(width, max(1, MAX_KEYS_PER_DRAW // len(pending)), last + 1 - attempt)
        keys = [(s, a) for s in pending for a in range(attempt, attempt + width)]
        cands = draw_keys(world, seed, keys, placed, site_of)
        for cand, ok in zip(cands, plausible(world, cands, n_samples), strict=True):
            if ok and cand.slot not in found:  # keys run in attempt order within a slot
                found[cand.slot] = cand
        pending = [s for s in pending if s not in found]
        attempt += width
        width *= 2
    return found
