"""torch's thread counts follow the cores a process may really use: affinity and the cgroup CPU quota."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heimdall.training.distributed import cgroup_cpu_limit


@pytest.mark.parametrize(
    ("text", "cores"),
    [("max 100000\n", None), ("150000 100000\n", 2), ("200000 100000\n", 2), ("50000 100000\n", 1)],
)
def test_cgroup_v2_quota(tmp_path: Path, text: str, cores: int | None) -> None:
    (tmp_path / "cpu.max").write_text(text)
    assert cgroup_cpu_limit((tmp_path / "cpu.max",)) == cores


def test_cgroup_v1_quota_and_no_cgroup(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    assert cgroup_cpu_limit((tmp_path / "cpu.max", v1 / "cpu.cfs_quota_us")) == 3  # v2 file absent
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit((v1 / "cpu.cfs_quota_us",)) is None
    (tmp_path / "cpu.max").write_text("garbage")
    assert cgroup_cpu_limit((tmp_path / "cpu.max", tmp_path / "missing")) is None


PROBE = """
import json, torch
from heimdall.training.distributed import available_cores, limit_torch_threads
before = (torch.get_num_threads(), torch.get_num_interop_threads())
after = limit_torch_threads({processes})
print(json.dumps({{"cores": available_cores(), "before": before, "after": after,
                  "again": limit_torch_threads({processes})}}))
"""


@pytest.mark.parametrize("processes", [1, 2])
def test_threads_are_capped_at_this_process_share(processes: int) -> None:
    """A fresh interpreter (inter-op threads can be set once, before torch's first parallel work):
    both counts end at min(torch's own, cores // processes); a second call changes nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(processes=processes)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    share = max(1, got["cores"] // processes)
    assert got["after"] == [min(got["before"][0], share), min(got["before"][1], share)]
    assert got["again"] == got["after"]


def test_an_explicit_lower_count_is_kept() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(processes=1)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["after"][0] == 1
