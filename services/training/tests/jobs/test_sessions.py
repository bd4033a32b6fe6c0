"""heimdall.jobs.sessions: listing sessions and approving or rejecting them, all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimdall.errors import UserError
from heimdall.jobs.sessions import ApproveRequest, ListSessionsRequest, approve, list_sessions
from heimdall.jobs.simulate import SimulateRequest, simulate
from heimdall.settings import Settings

UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "heimdall-data")
    simulate(SimulateRequest(sessions=6, seed=3, duration=0.1), s)
    simulate(SimulateRequest(sessions=4, seed=4, duration=0.1, dataset="campaign-b"), s)
    return s


def test_list_all_and_filtered(settings: Settings) -> None:
    everything = list_sessions(ListSessionsRequest(), settings)
    assert everything.missing is None and everything.database.startswith("sqlite")
    assert len(everything.sessions) == 10
    assert [s.start for s in everything.sessions] == sorted(s.start for s in everything.sessions)
    assert all(s.status == "approved" and s.has_truth and s.receivers_heard >= 3 for s in everything.sessions)
    b = list_sessions(ListSessionsRequest(datasets=["campaign-b"]), settings).sessions
    assert len(b) == 4 and {s.dataset for s in b} == {"campaign-b"}
    both = list_sessions(ListSessionsRequest(datasets=["campaign-b", "sim:nw-italy-v1"], limit=3), settings)
    earliest = sorted(everything.sessions, key=lambda s: (s.start, str(s.id)))[:3]  # across both datasets
    assert [s.id for s in both.sessions] == [s.id for s in earliest]
    a = list_sessions(ListSessionsRequest(datasets=["sim:nw-italy-v1"]), settings).sessions
    assert {s.id for s in a} | {s.id for s in b} == {s.id for s in everything.sessions} and len(a) == 6
    assert list_sessions(ListSessionsRequest(status="pending"), settings).sessions == []


def test_reject_then_approve_is_one_transaction_and_idempotent(settings: Settings) -> None:
    ids = [str(s.id) for s in list_sessions(ListSessionsRequest(limit=3), settings).sessions]
    out = approve(ApproveRequest(ids=ids, reject=True), settings)
    assert (out.status, out.sessions, out.changed) == ("rejected", 3, 3)
    rejected = list_sessions(ListSessionsRequest(status="rejected"), settings).sessions
    assert sorted(str(s.id) for s in rejected) == sorted(ids)
    assert approve(ApproveRequest(ids=ids, reject=True), settings).changed == 0
    with pytest.raises(UserError) as err:
        approve(ApproveRequest(ids=[*ids, UNKNOWN]), settings)
    assert UNKNOWN in str(err.value) and "nothing changed" in str(err.value)
    assert len(list_sessions(ListSessionsRequest(status="rejected"), settings).sessions) == 3  # untouched
    assert approve(ApproveRequest(ids=ids), settings).changed == 3
    assert list_sessions(ListSessionsRequest(status="rejected"), settings).sessions == []


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (ApproveRequest(ids=["not-a-uuid", UNKNOWN]), "not a session id.*'not-a-uuid'"),
        (ApproveRequest(ids=[]), "at least one session id"),
    ],
)
def test_bad_ids(tmp_path: Path, request_: ApproveRequest, match: str) -> None:
    with pytest.raises(UserError, match=match):
        approve(request_, Settings(data_dir=tmp_path / "hd"))
    assert not (tmp_path / "hd").exists()


@pytest.mark.parametrize(
    ("request_", "match"),
    [(ListSessionsRequest(limit=0), "--limit must be"), (ListSessionsRequest(datasets=[" "]), "non-empty")],
)
def test_bad_list_request(tmp_path: Path, request_: ListSessionsRequest, match: str) -> None:
    with pytest.raises(UserError, match=match):
        list_sessions(request_, Settings(data_dir=tmp_path / "hd"))


def test_no_database_is_reported_and_not_created(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "hd")
    out = list_sessions(ListSessionsRequest(), s)
    assert (
        out.sessions == []
        and out.missing == f"no database at {s.data_dir / 'heimdall.db'} (nothing imported or simulated yet)"
    )
    with pytest.raises(UserError, match=f"unknown session id.*{UNKNOWN}.*no database at"):
        approve(ApproveRequest(ids=[UNKNOWN]), s)
    assert not s.data_dir.exists()
