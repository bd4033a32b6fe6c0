"""Which world the oracle uses: the scenario stored with the sessions, a matching user file, or a refusal.

And the outage rule: which sessions stay in the study once a receiver is removed.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from heimdall.data.network import ReceiverNetwork
from heimdall.evaluate.oracle_localizer import BayesOracleLocalizer, OracleScenarioError, is_faded
from heimdall.evaluate.outage import heard_rows, outage_sessions
from heimdall.simulate.scenario import Scenario, load_scenario


@pytest.fixture(scope="module")
def v1() -> Scenario:
    return load_scenario("nw-italy-v1")


@pytest.fixture(scope="module")
def network(v1: Scenario) -> ReceiverNetwork:
    rx = sorted(v1.receivers, key=lambda r: r.id)
    return ReceiverNetwork(
        tuple(r.id for r in rx),
        tuple(r.name for r in rx),
        tuple(r.latitude for r in rx),
        tuple(r.longitude for r in rx),
    )


def _arrays(network: ReceiverNetwork, labels: list[str], shas: list[str] | None, stored: dict | None):
    return SimpleNamespace(
        network=network,
        datasets=tuple(sorted(set(labels))),
        scenario_sha256=None if shas is None else np.array(shas, dtype=object),
        scenarios=stored,
    )


def test_the_stored_scenario_is_found_by_its_hash(v1: Scenario, network: ReceiverNetwork) -> None:
    mine = v1.model_copy(update={"name": "my-net", "world_seed": 7})
    arrays = _arrays(network, ["sim:my-net"], [mine.content_sha256] * 3, {mine.content_sha256: mine})
    oracle = BayesOracleLocalizer.for_arrays(arrays)
    assert oracle is not None and oracle.scenario.content_sha256 == mine.content_sha256
    assert oracle.mm.world.scenario.world_seed == 7 and not oracle.faded
    # another label (a held-out campaign's) does not matter: the hash decides
    assert (
        BayesOracleLocalizer.for_arrays(
            _arrays(network, ["campaign-b"], [mine.content_sha256], {mine.content_sha256: mine})
        )
        is not None
    )


def test_a_shipped_name_with_other_content_is_refused(v1: Scenario, network: ReceiverNetwork) -> None:
    edited = v1.model_copy(update={"world_seed": 8})  # still named nw-italy-v1
    arrays = _arrays(
        network, ["sim:nw-italy-v1"], [edited.content_sha256] * 2, {edited.content_sha256: edited}
    )
    with pytest.raises(OracleScenarioError, match="other content") as err:
        BayesOracleLocalizer.for_arrays(arrays)
    assert "\n" not in str(err.value)


def test_a_user_file_must_be_the_sessions_scenario(v1: Scenario, network: ReceiverNetwork) -> None:
    arrays = _arrays(network, ["sim:nw-italy-v1"], [v1.content_sha256] * 2, {v1.content_sha256: v1})
    assert BayesOracleLocalizer.for_arrays(arrays, v1) is not None
    other = load_scenario("nw-italy-v2")
    with pytest.raises(OracleScenarioError, match="is not the scenario these sessions"):
        BayesOracleLocalizer.for_arrays(arrays, other)
    with pytest.raises(OracleScenarioError, match="recorded: none"):
        BayesOracleLocalizer.for_arrays(_arrays(network, ["sim:nw-italy-v1"], None, None), v1)


def test_without_provenance_the_label_names_the_world(v1: Scenario, network: ReceiverNetwork) -> None:
    oracle = BayesOracleLocalizer.for_arrays(_arrays(network, ["sim:nw-italy-v1"], None, None))
    assert oracle is not None and oracle.scenario.content_sha256 == v1.content_sha256
    assert BayesOracleLocalizer.for_arrays(_arrays(network, ["powder"], None, None)) is None
    mixed = _arrays(network, ["sim:a"], ["ab" * 32, "cd" * 32], {})
    assert BayesOracleLocalizer.for_arrays(mixed) is None
    assert BayesOracleLocalizer.for_arrays(_arrays(network, ["sim:a"], ["", "ab" * 32], {})) is None


def test_v1_and_v2_likelihoods(v1: Scenario) -> None:
    assert not is_faded(v1) and is_faded(load_scenario("nw-italy-v2"))


def test_outage_keeps_sessions_still_heard_by_enough_remaining_receivers() -> None:
    """Hand-made rows: heard is SNR ≥ 6 dB, a power-only row (no SNR) is heard, a missing one is not."""
    nan = np.nan
    snr = np.array(
        [
            [10.0, 7.0, 6.0, 2.0],  # 3 heard: removing any heard one leaves 2
            [10.0, 9.0, 8.0, 7.0],  # 4 heard: survives any removal
            [nan, nan, nan, 3.0],  # power-only rows 0-2 (heard by having a reading), row 3 not heard
            [10.0, 9.0, 5.9, nan],  # receiver 3 missing; 5.9 dB is not heard
        ]
    )
    power = np.array([[-90.0] * 4, [-90.0] * 4, [-90.0] * 4, [-90.0, -90.0, -90.0, nan]])
    mask = np.isfinite(power)
    arrays = SimpleNamespace(mask=mask, row_snr_db=snr, row_power_db=power)
    idx = np.arange(4)
    np.testing.assert_array_equal(
        heard_rows(arrays, idx),
        [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]],
    )
    np.testing.assert_array_equal(outage_sessions(arrays, idx, drop=0, min_heard=3), [1])
    np.testing.assert_array_equal(outage_sessions(arrays, idx, drop=3, min_heard=3), [0, 1, 2])
    np.testing.assert_array_equal(outage_sessions(arrays, idx, drop=2, min_heard=2), [0, 1, 2, 3])
    np.testing.assert_array_equal(outage_sessions(arrays, idx, drop=1, min_heard=3), [1])
