"""RESULTS.md's summary table and reading notes, computed from the evaluations (no figure typed in)."""

from __future__ import annotations

from typing import Any

ORACLE = "bayes_oracle"  # the oracle's method name in an evaluation (also used by _results)
BASELINES = ("knn_fingerprint", "log_distance_nls", "weighted_centroid")
COVERAGE = (0.393, 0.865)


def f0(x: float) -> str:
    return f"{x:,.0f}"


def summary_table(finals: list[Any], powder: list[Any]) -> list[str]:
    """One row per regime: the shipped localiser, model/oracle, model/best baseline, coverage."""
    lines = [
        "## Summary (every regime, test set touched once per final model)",
        "",
        "| regime | shipped localiser | model RMSE m | × oracle | × best baseline (name) | median × oracle | "
        "1σ / 2σ coverage |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in [*finals, *powder]:
        ev = run.evaluation
        if ev is None:
            continue
        m, o = ev.methods["model"], ev.methods.get(ORACLE)
        base = {n: ev.methods[n] for n in BASELINES if n in ev.methods}
        best = min(base, key=lambda n: base[n].rmse_m) if base else None
        vs = f"×{m.rmse_m / base[best].rmse_m:.3f} ({best})" if best else "–"
        loc = (run.report.get("localizer") or {}).get("localizer", "network")
        cov = f"{100 * m.coverage_1sigma:.1f} / {100 * m.coverage_2sigma:.1f} %"
        lines.append(
            f"| {run.name} | {loc} | {f0(m.rmse_m)} | {f'×{m.rmse_m / o.rmse_m:.3f}' if o else '–'} | "
            f"{vs} | "
            f"{f'×{m.median_error_m / o.median_error_m:.3f}' if o else '–'} | {cov} |"
        )
    return [*lines, ""]


def reading_notes(finals: dict[str, Any], powder: list[Any]) -> list[str]:
    """What the figures say, and for each unmet target the measurement that shows what limits it."""
    main = finals.get("nw-italy-10k")
    if main is None or main.evaluation is None:
        return []
    lines = ["## Reading these results", ""]
    off = []
    for run in [*finals.values(), *powder]:
        ev = run.evaluation
        if ev is None:
            continue
        m = ev.methods["model"]
        if abs(m.coverage_1sigma - COVERAGE[0]) > 0.03 or abs(m.coverage_2sigma - COVERAGE[1]) > 0.03:
            off.append(f"{run.name} {100 * m.coverage_1sigma:.1f} / {100 * m.coverage_2sigma:.1f} %")
    lines.append(
        "- **Calibration.** Every shipped model's covariance scale is fitted on validation and baked into "
        "the ONNX graph. Rows outside ±3 points of 39.3 % / 86.5 %: "
        + (", ".join(off) if off else "none")
        + "."
        " A posterior that is far from Gaussian (curved or two-lobed with three receivers) cannot be "
        "summarised by one ellipse that covers 39.3 % and 86.5 % at once; the scale trades the two."
    )
    o = main.evaluation.methods.get(ORACLE)
    out = main.evaluation.outage or {}
    if out and o is not None:
        missed = [f"{r.station_name} ×{r.model_rmse_over_oracle:.3f}" for r in out.values()
                  if r.model_rmse_over_oracle is not None and r.model_rmse_over_oracle > 1.10]  # fmt: skip
        lines.append(
            "- **Outage.** Rows above 1.10 × the oracle with the same receivers: "
            + (", ".join(missed) if missed else "none")
            + ". The model sees an outage as receivers absent from the mask (the radio map simply drops "
            "their terms), so no retraining is needed for it."
        )
    for run in powder:
        ev = run.evaluation
        if ev is None:
            continue
        m, k = ev.methods["model"], ev.methods["knn_fingerprint"]
        chosen = (k.tuning or {}).get("chosen", {})
        lines.append(
            f"- **POWDER {run.name.split('-')[1]}.** Model mean {f0(m.mean_error_m)} m, tuned kNN "
            f"{f0(k.mean_error_m)} m (k = {chosen.get('k')}, chosen on validation carved by whole time "
            "blocks: no neighbour along a walk leaks into the choice). 37 receivers, 8 on buses whose "
            "position the radio map takes from each reading."
        )
    return [*lines, ""]
