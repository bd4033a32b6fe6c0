"""The figures a command's summary prints: distances in km and a verdict against a reference method."""

from __future__ import annotations


def km(metres: float) -> str:
    """``38.5 km`` (one decimal; metres below 100 m keep two)."""
    value = metres / 1000.0
    return f"{value:.2f} km" if abs(value) < 0.1 else f"{value:.1f} km"


def verdict(model_rmse_m: float, name: str, baseline_rmse_m: float) -> str:
    """``model RMSE 38.5 km vs weighted centroid 42.2 km: better by 3.7 km`` (or worse by, or on par)."""
    diff = baseline_rmse_m - model_rmse_m
    better = "better" if diff > 0 else "worse"
    judged = "on par" if abs(diff) < 1.0 else f"{better} by {km(abs(diff))}"  # under a metre: the same
    return f"model RMSE {km(model_rmse_m)} vs {name} {km(baseline_rmse_m)}: {judged}"


def label(method: str) -> str:
    """``weighted_centroid`` → ``weighted centroid``."""
    return method.replace("_", " ")
