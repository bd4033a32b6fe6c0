"""Report figures: loss curves, error CDFs, calibration, and per-session maps in latitude/longitude.

Every method has one colour in every figure (:func:`method_colour`), and every figure says in its title
how many sessions it shows. Session maps (:func:`plot_session_map`) draw the same
ellipse rings as the GeoJSON and HTML maps.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse

from heimdall.features import SCALAR_NAMES
from heimdall.geo import LocalFrame
from heimdall.inference.maps import ELLIPSE_LEVELS, SNR_COLOUR_RANGE_DB, ellipse_ring

if TYPE_CHECKING:
    from heimdall.data.arrays import SessionArrays

#: one colour per method, the same in every plot (names as the evaluation table spells them)
METHOD_COLOURS: dict[str, str] = {
    "model": "tab:blue",
    "bayes_oracle": "tab:purple",
    "weighted_centroid": "tab:orange",
    "log_distance_nls": "tab:red",
    "knn_fingerprint": "tab:brown",
}
_SPARE_COLOURS = ("tab:pink", "tab:olive", "tab:cyan", "tab:gray", "gold", "navy")


def method_colour(name: str) -> str:
    """The colour of method ``name`` ("weighted centroid" = "weighted_centroid"); a method outside the
    palette gets one picked by a hash of its name, so it too is the same in every plot and run."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key in METHOD_COLOURS:
        return METHOD_COLOURS[key]
    return _SPARE_COLOURS[zlib.crc32(key.encode()) % len(_SPARE_COLOURS)]


def _sessions(counts: Sequence[int]) -> str:
    lo, hi = min(counts, default=0), max(counts, default=0)
    n = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return f"{n} session{'' if hi == 1 else 's'}"


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
        ax.step(e, np.arange(1, e.size + 1) / e.size, where="post", label=name, color=method_colour(name))
    n = _sessions([np.asarray(e).size for e in errors_by_method.values()])
    ax.set(xlabel="error (km)", ylabel="fraction of sessions", title=f"error CDF ({n})")
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
    """Truth → prediction lines and 2σ ellipses of the first ``max_sessions`` sessions (km east/north of
    the network centroid); an overview only: :func:`plot_session_maps`
    draws one readable map per session."""
    fig, ax = plt.subplots(figsize=(7, 7))
    n = min(max_sessions, truth_enu_m.shape[0])
    colour = method_colour("model")
    t, p, c = truth_enu_m[:n] / 1000, pred_enu_m[:n] / 1000, cov_m2[:n] / 1e6
    for i in range(n):
        ax.add_patch(_ellipse(p[i], c[i], 2.0, fill=False, lw=0.6, color=colour, alpha=0.5))
        ax.plot([t[i, 0], p[i, 0]], [t[i, 1], p[i, 1]], color="grey", lw=0.5)
    ax.scatter(t[:, 0], t[:, 1], s=12, c="k", marker="*", label="truth")
    ax.scatter(p[:, 0], p[:, 1], s=12, c=colour, label="model (2σ ellipse)")
    r = receivers_enu_m / 1000
    ax.scatter(r[:, 0], r[:, 1], marker="^", s=60, c="tab:red", label="receivers")
    for (x, y), name in zip(r, receiver_names, strict=True):
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    total = truth_enu_m.shape[0]
    shown = f"{n} session{'' if n == 1 else 's'}" + (f" of {total}" if n < total else "")
    ax.set(xlabel="east (km)", ylabel="north (km)", title=f"test predictions ({shown})", aspect="equal")
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
        ax.plot(nominal, observed, label=name, color=method_colour(name))
    n = _sessions([np.asarray(d).size for d in mahalanobis_sq_by_method.values()])
    ax.set(xlabel="nominal coverage", ylabel="observed coverage", aspect="equal")
    ax.set_title(f"ellipse calibration ({n})")
    ax.legend(fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------------
# One session in latitude/longitude
# --------------------------------------------------------------------------------------------------------

#: the ellipses a session map draws for each method: 1σ solid, 95 % dashed
_SESSION_LEVELS = (("1sigma", "-"), ("95pct", "--"))


def plot_session_map(
    path: Path,
    *,
    frame: LocalFrame,
    session_label: str,
    receivers_latlon: np.ndarray,
    receiver_names: Sequence[str],
    snr_db: np.ndarray,
    heard: np.ndarray,
    estimates: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    truth_latlon: tuple[float, float] | None = None,
) -> Path:
    """One session on latitude/longitude axes (metric aspect): receivers coloured by SNR (colour bar;
    hollow = no reading, thin edge = not heard), each method's estimate with its 1σ and 95 % ellipses
    in the method's colour, and the truth. ``estimates``: method → (position ENU m, covariance m² or
    None), in ``frame``; ``snr_db`` NaN marks a receiver without a reading."""
    lo, hi = SNR_COLOUR_RANGE_DB
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    rx = np.asarray(receivers_latlon, float)
    snr = np.asarray(snr_db, float)
    have = np.isfinite(snr)
    heard_b = np.asarray(heard, bool) & have
    sc = ax.scatter(
        rx[have, 1],
        rx[have, 0],
        c=np.clip(snr[have], lo, hi),
        cmap="viridis",
        vmin=lo,
        vmax=hi,
        marker="^",
        s=np.where(heard_b[have], 110, 70),
        edgecolors="k",
        linewidths=np.where(heard_b[have], 1.2, 0.4),
        zorder=3,
    )
    ax.scatter(rx[~have, 1], rx[~have, 0], marker="^", s=70, facecolors="white", edgecolors="grey", zorder=3)
    fig.colorbar(sc, ax=ax, shrink=0.8, label=f"receiver SNR (dB, clipped to {lo:g}…{hi:g})")
    for (lat, lon), name in zip(rx, receiver_names, strict=True):
        ax.annotate(name, (lon, lat), fontsize=7, xytext=(4, 4), textcoords="offset points")
    for name, (pos, cov) in estimates.items():
        colour = method_colour(name)
        lat, lon = frame.to_latlon(np.asarray(pos, float))
        ax.plot(lon, lat, marker="X", ms=9, color=colour, mec="white", ls="none", label=name, zorder=4)
        if cov is None:
            continue
        for level, style in _SESSION_LEVELS:
            ring = np.array(ellipse_ring(frame, pos, cov, ELLIPSE_LEVELS[level]))
            ax.plot(ring[:, 0], ring[:, 1], style, color=colour, lw=1.1, zorder=2)
    if truth_latlon is not None:
        ax.plot(
            truth_latlon[1], truth_latlon[0], marker="*", ms=15, color="k", ls="none", label="truth", zorder=5
        )
    ax.margins(0.12)
    ax.set_aspect(1.0 / np.cos(np.radians(frame.origin_lat)))  # a degree of longitude is shorter
    ax.set(xlabel="longitude (°)", ylabel="latitude (°)")
    ax.set_title(f"1 session: {session_label}\nellipses: 1σ solid, 95 % dashed", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_session_maps(
    folder: Path,
    arrays: SessionArrays,
    idx: np.ndarray,
    estimates: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    max_sessions: int = 4,
) -> list[str]:
    """``session_map_<k>.png`` for the first ``max_sessions`` sessions of ``idx``, in order, each with
    every method's estimate; ``estimates``: method → (positions (n, 2), covariances (n, 2, 2) or None)
    aligned with ``idx``. Returns the file names written."""
    network = arrays.network
    frame = network.frame
    snr_col, heard_col = SCALAR_NAMES.index("snr_db"), SCALAR_NAMES.index("heard")
    names: list[str] = []
    for k, i in enumerate(np.asarray(idx)[:max_sessions]):
        enu = arrays.receiver_enu_m[i] if arrays.receiver_enu_m is not None else network.positions_enu_m()
        lat, lon = frame.to_latlon(enu)
        reading = arrays.mask[i]
        snr = np.where(reading, arrays.scalars[i, :, snr_col], np.nan)
        name = f"session_map_{k + 1}.png"
        plot_session_map(
            folder / name,
            frame=frame,
            session_label=str(arrays.session_ids[i]),
            receivers_latlon=np.stack([lat, lon], axis=1),
            receiver_names=network.names,
            snr_db=snr,
            heard=reading & (np.nan_to_num(arrays.scalars[i, :, heard_col]) >= 0.5),
            estimates={m: (pos[k], None if cov is None else cov[k]) for m, (pos, cov) in estimates.items()},
            truth_latlon=(float(arrays.truth_latlon[i, 0]), float(arrays.truth_latlon[i, 1])),
        )
        names.append(name)
    return names
