"""report.md: the training report for a reader (what report.json holds, as prose and two tables)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heimdall.training.champion import localizer_line
from heimdall.training.report import TrainReport

__all__ = ["render_report_md"]


def _calibration_lines(cal: Mapping[str, Any] | None) -> list[str]:
    """The shipped covariance scale, where it was fitted, and whether it sits on its grid's edge."""
    if not cal:
        return []
    grid = cal.get("grid") or [cal["covariance_scale"]]
    edge = " — on the grid's edge: the best scale may lie outside" if cal.get("on_grid_edge") else ""
    return [
        f"Covariance scale {cal['covariance_scale']:g} fitted on {cal.get('n_sessions', '?')} validation "
        f"sessions over {len(grid)} values in [{grid[0]:g}, {grid[-1]:g}]{edge}; it is part of model.onnx "
        "and applied in every figure above.",
        "",
    ]


def _row(name: str, m: dict[str, float]) -> str:
    cols = ("rmse_m", "median_error_m", "mean_error_m", "p90_error_m")
    return f"| {name} | " + " | ".join(f"{m[c]:.0f}" for c in cols) + " |"


def render_report_md(report: TrainReport | Mapping[str, Any]) -> str:
    if isinstance(report, TrainReport):
        report = report.as_json()
    t, b = report["test"], report["baselines"]["weighted_centroid"]
    o = report["onnx"]
    exponent = b["chosen"]["power_weight_exponent"]
    skipped = report["skipped_sessions"] or "none"
    lines = [
        f"# Heimdall training report — model `{report['model_id']}`",
        "",
        f"Datasets: {', '.join(report['datasets'])}; sessions train/val/test: "
        f"{report['n_train']}/{report['n_val']}/{report['n_test']}; skipped: {skipped}.",
        "",
        "## Test split",
        "",
        "| method | RMSE (m) | median (m) | mean (m) | p90 (m) |",
        "|---|---|---|---|---|",
        _row(f"model ({(report.get('localizer') or {}).get('localizer', 'network')})", t),
        _row(f"weighted centroid (exponent {exponent})", b),
        "",
        f"Calibration: 1σ coverage {t['coverage_1sigma']:.3f} (nominal 0.393), "
        f"2σ {t['coverage_2sigma']:.3f} (0.865), 95 % {t['coverage_95']:.3f}; NLL {t['nll']:.2f}; "
        f"mean 95 % ellipse {t['mean_ellipse_area_km2']:.1f} km².",
        "",
        *([localizer_line(report["localizer"]), ""] if report.get("localizer") else []),
        *_calibration_lines(report.get("calibration")),
        f"Weighted-centroid exponent tuned on validation over {b['tuning']['grid']}.",
        "",
        "## ONNX",
        "",
        f"`{o['path']}` ({o['size_bytes'] / 1e6:.2f} MB, object `{o['object_key']}`): "
        f"max position difference vs the training path (cached numpy features → PyTorch) "
        f"{o['max_position_diff_m']:.3g} m over {o.get('parity_n_sessions', report['n_test'])} test sessions"
        f"{'' if o.get('parity_ok', True) else ' (ABOVE TOLERANCE: the file is not the measured model)'}; "
        f"ONNX Runtime p50 {o['latency_ms_p50']:.2f} ms per session on one thread.",
        "",
        f"Training: {report['epochs_run']} epochs"
        f"{' (early stopping)' if report.get('stopped_early') else ''}, best epoch "
        f"{report.get('best_epoch') or '-'}, {report['timing']['seconds_per_epoch']:.2f} s/epoch.",
        "",
        "Plots: loss_curves.png, error_cdf.png, prediction_map.png.",
        "",
    ]
    return "\n".join(lines)
