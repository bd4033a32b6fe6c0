"""Fixtures of the evaluation tests: a small simulated dataset (see simdata.py)."""

from simdata import cache_root, sim_services  # noqa: F401
