"""Report figures: loss curves, error CDFs, and a map of predictions with their ellipses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_loss_curves(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        vals = [h.get(key, np.nan) for h in history]
        ax1.plot(epochs, vals, style, label=key)
    ax1.set(xlabel="epoch", ylabel="Gaussian NLL (nats)", title="loss")
    ax1.legend()
    ax2.plot(epochs, [h.get("val_median_error_m", np.nan) / 1000 for h in history])
    ax2.set(xlabel="epoch", ylabel="km", title="validation median error")
    return _save(fig, path)


def plot_error_cdf(errors_by_method: Mapping[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, err in errors_by_method.items():
        e = np.sort(np.asarray(err)) / 1000
        ax.step(e, np.arange(1, e.size + 1) / e.size, where="post", label=name)
    ax.set(xlabel="error (km)", ylabel="fraction of sessions", title="error CDF")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _ellipse(mean_km: np.ndarray, cov_km2: np.ndarray, n_sigma: float, **kw) -> Ellipse:
    vals, vecs = np.linalg.eigh(cov_km2)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    w, h = 2 * n_sigma * np.sqrt(np.maximum(vals[::-1], 0))
    return Ellipse(tuple(mean_km), w, h, angle=angle, **kw)


def plot_prediction_map(
    truth_enu_m: np.ndarray,
    pred_enu_m: np.ndarray,
    cov_m2: np.ndarray,
    receivers_enu_m: np.ndarray,
    receiver_names: Sequence[str],
    path: Path,
    max_sessions: int = 60,
) -> Path:
    """Truth → prediction arrows and 2σ ellipses (km east/north of the network centroid)."""
    fig, ax = plt.subplots(figsize=(7, 7))
    n = min(max_sessions, truth_enu_m.shape[0])
    t, p, c = truth_enu_m[:n] / 1000, pred_enu_m[:n] / 1000, cov_m2[:n] / 1e6
    for i in range(n):
        ax.add_patch(_ellipse(p[i], c[i], 2.0, fill=False, lw=0.6, color="tab:blue", alpha=0.5))
        ax.plot([t[i, 0], p[i, 0]], [t[i, 1], p[i, 1]], color="grey", lw=0.5)
    ax.scatter(t[:, 0], t[:, 1], s=12, c="tab:green", label="truth")
    ax.scatter(p[:, 0], p[:, 1], s=12, c="tab:blue", label="prediction (2σ ellipse)")
    r = receivers_enu_m / 1000
    ax.scatter(r[:, 0], r[:, 1], marker="^", s=60, c="tab:red", label="receivers")
    for (x, y), name in zip(r, receiver_names, strict=True):
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="east (km)", ylabel="north (km)", title=f"test predictions (first {n})", aspect="equal")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def plot_calibration(mahalanobis_sq_by_method: Mapping[str, np.ndarray], path: Path) -> Path:
    """Observed vs nominal coverage of the predicted ellipses (on the diagonal when calibrated)."""
    nominal = np.linspace(0.02, 0.99, 50)
    radius_sq = -2.0 * np.log(1.0 - nominal)  # χ²₂ quantiles
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
    for name, d2 in mahalanobis_sq_by_method.items():
        observed = (np.asarray(d2)[:, None] <= radius_sq[None, :]).mean(axis=0)
        ax.plot(nominal, observed, label=name)
    ax.set(xlabel="nominal coverage", ylabel="observed coverage", title="ellipse calibration", aspect="equal")
    ax.legend(fontsize=8)
    return _save(fig, path)
