"""Fixed transmitter sites in the simulator (heimdall.simulate.session / candidates with `sites`).

Every session stands exactly at one of the sites, with the site's power where it gives one; the site
is picked uniformly per slot whatever the keep rule does; runs are byte-identical per seed and
shardable; ids never collide with a uniform run's; a site outside the area or one no draw can make
heard is refused, naming it.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pytest

from heimdall.simulate import Scenario, SimulatedSession, build_world, load_scenario, simulate_sessions
from heimdall.simulate.candidates import MAX_ATTEMPTS, draw_keys, first_plausible, place_sites, plausible
from heimdall.simulate.session import check_sites_heard, session_id_for, site_indices
from heimdall.simulate.sites import Sites, SitesError, parse_sites_csv, parse_sites_yaml

SEED = 5
DURATION_S = 0.1
SITES_CSV = """latitude,longitude,power_w,name
45.080,7.767,25,Superga
44.900,8.207,,Asti
45.186,9.156,,Pavia
"""
SITES_YAML = """
- {latitude: 45.080, longitude: 7.767, power_w: 25, name: Superga}
- {latitude: 44.900, longitude: 8.207, name: Asti}
- {latitude: 45.186, longitude: 9.156, name: Pavia}
"""
DEAD = "44.30,9.30,0.000001,Dead end"  # inside the area, a microwatt: no draw can be heard


@pytest.fixture(scope="module")
def v2() -> Scenario:
    return load_scenario("nw-italy-v2")


@pytest.fixture(scope="module")
def sites() -> Sites:
    return parse_sites_csv(SITES_CSV, "sites.csv")


@pytest.fixture(scope="module")
def sessions(v2: Scenario, sites: Sites) -> list[SimulatedSession]:
    return list(simulate_sessions(v2, 90, SEED, DURATION_S, sites=sites))


def _digest(sessions: list[SimulatedSession]) -> str:
    h = hashlib.sha256()
    for s in sessions:
        h.update(repr([str(s.session_id), s.site, s.latitude, s.longitude, s.tx_power_dbm]).encode())
        h.update(repr([s.band_index, s.content, s.doppler_hz]).encode())
        for r in s.receivers:
            h.update(r.iq.tobytes() + repr([r.snr_db, r.signal_strength_db, r.heard]).encode())
    return h.hexdigest()


def test_every_session_stands_at_its_site(
    v2: Scenario, sites: Sites, sessions: list[SimulatedSession]
) -> None:
    frame = build_world(v2).frame
    assert {s.site for s in sessions} == {0, 1, 2}
    for s in sessions:
        site = sites.sites[s.site]
        assert (s.latitude, s.longitude) == (site.latitude, site.longitude)  # the exact position given
        np.testing.assert_allclose(s.enu, frame.to_enu(site.latitude, site.longitude), atol=1e-6)
        assert s.n_heard >= v2.min_receivers_heard  # the scenario's keep rule still holds


def test_power_is_the_sites_where_given_else_the_scenarios_draw(
    v2: Scenario, sites: Sites, sessions: list[SimulatedSession]
) -> None:
    fixed = [s.tx_power_dbm for s in sessions if s.site == 0]
    assert fixed and set(fixed) == {10.0 * math.log10(25.0 * 1000.0)}
    drawn = [s.tx_power_dbm for s in sessions if s.site != 0]
    tx = v2.transmitter
    assert all(tx.power_dbm_min <= p <= tx.power_dbm_max for p in drawn)
    assert len(set(drawn)) == len(drawn)  # drawn per session, not per site


def test_the_site_is_picked_uniformly_per_slot_whatever_the_keep_rule(
    sites: Sites, sessions: list[SimulatedSession]
) -> None:
    picks = site_indices(SEED, [s.index for s in sessions], len(sites))
    assert [s.site for s in sessions] == [picks[s.index] for s in sessions]
    counts = np.bincount(list(site_indices(SEED, range(30_000), 3).values()), minlength=3)
    chi2 = float(((counts - 10_000) ** 2 / 10_000).sum())
    assert chi2 < 13.8, counts  # chi-square, 2 degrees of freedom, p = 0.001


def test_other_draws_keep_their_place_in_the_stream(v2: Scenario, sites: Sites) -> None:
    """At a site, a candidate's band, content, fading, offsets and shadowing are the uniform run's."""
    world = build_world(v2)
    keys = [(k, 0) for k in range(40)]
    uniform = draw_keys(world, SEED, keys)
    placed = draw_keys(world, SEED, keys, place_sites(world, sites), site_indices(SEED, range(40), 3))
    for a, b in zip(uniform, placed, strict=True):
        assert (a.band_index, a.content, a.doppler_hz) == (b.band_index, b.content, b.doppler_hz)
        np.testing.assert_array_equal(a.rician_k_db, b.rician_k_db)
        np.testing.assert_array_equal(a.dynamic_shadowing_db, b.dynamic_shadowing_db)
        assert a.site is None and b.site is not None
        assert (a.latitude, a.longitude) != (b.latitude, b.longitude)


def test_same_seed_same_bytes_shards_and_formats(
    v2: Scenario, sites: Sites, sessions: list[SimulatedSession]
) -> None:
    again = list(simulate_sessions(v2, 20, SEED, DURATION_S, sites=sites))
    assert _digest(again) == _digest(sessions[:20])
    shard = list(simulate_sessions(v2, 6, SEED, DURATION_S, start=70, sites=sites))
    assert _digest(shard) == _digest(sessions[70:76])
    as_yaml = list(simulate_sessions(v2, 20, SEED, DURATION_S, sites=parse_sites_yaml(SITES_YAML, "s.yaml")))
    assert _digest(as_yaml) == _digest(again)  # the same sites as YAML: the same sessions and ids
    assert _digest(list(simulate_sessions(v2, 20, SEED + 1, DURATION_S, sites=sites))) != _digest(again)


def test_session_ids_are_apart_from_uniform_runs_and_other_sites(v2: Scenario, sites: Sites) -> None:
    moved = parse_sites_csv(SITES_CSV.replace("44.900", "44.901"), "moved.csv")
    ids = {
        session_id_for(v2, SEED, 3),
        session_id_for(v2, SEED, 3, sites),
        session_id_for(v2, SEED, 3, moved),
    }
    assert len(ids) == 3
    uniform = next(iter(simulate_sessions(v2, 1, SEED, DURATION_S)))
    assert uniform.site is None and uniform.session_id == session_id_for(v2, SEED, 0)


def test_first_plausible_in_growing_chunks_finds_the_first_attempt(v2: Scenario) -> None:
    """A hard site rejects hundreds of candidates: the chunked search must pick the very first plausible
    attempt, the one an attempt-by-attempt scan (here: one big vectorised draw) finds."""
    world = build_world(v2)
    hard = parse_sites_csv("latitude,longitude,power_w\n44.30,9.30,0.003\n", "hard.csv")
    placed = place_sites(world, hard)
    slots = [11, 12, 13, 14]
    site_of = dict.fromkeys(slots, 0)
    n_samples = round(DURATION_S * v2.sample_rate_hz)
    found = first_plausible(world, SEED, slots, 0, n_samples, placed, site_of)
    for slot in slots:
        scan = draw_keys(world, SEED, [(slot, a) for a in range(6000)], placed, site_of)
        first = int(np.argmax(plausible(world, scan, n_samples)))
        assert found[slot].attempt == first > 0
        np.testing.assert_array_equal(found[slot].mean_power_dbm, scan[first].mean_power_dbm)
    assert max(found[s].attempt for s in slots) > 64  # the doubling chunks were exercised


def test_a_site_outside_the_area_is_refused_naming_it(v2: Scenario) -> None:
    far = parse_sites_csv(SITES_CSV + "41.9,12.5,,Roma\n", "far.csv")
    with pytest.raises(
        SitesError, match=r"^far\.csv: site 'Roma' \(line 5, 41\.90000, 12\.50000\) lies outside"
    ):
        simulate_sessions(v2, 5, SEED, DURATION_S, sites=far)  # eager: nothing iterated


def test_a_site_no_draw_can_make_heard_is_refused_naming_it(v2: Scenario) -> None:
    dead = parse_sites_csv(SITES_CSV + DEAD + "\n", "dead.csv")
    t0 = time.perf_counter()
    with pytest.raises(SitesError) as info:
        simulate_sessions(v2, 5, SEED, DURATION_S, sites=dead)  # eager: before any session is drawn
    message = str(info.value)
    assert message.startswith("dead.csv: site 'Dead end' (line 5, 44.30000, 9.30000): ")
    assert f"no candidate heard by >= 3 receivers in {MAX_ATTEMPTS} attempts" in message
    assert "\n" not in message and time.perf_counter() - t0 < 60  # the whole budget, but no hang
    check_sites_heard(v2, parse_sites_csv(SITES_CSV, "fine.csv"), SEED, DURATION_S)  # the others pass
