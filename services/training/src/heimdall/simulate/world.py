"""The simulated world: everything fixed by the scenario alone (docs/SIMULATOR.md), never by a run's seed.

* Local frame: ENU tangent plane at the receiver centroid (`LocalFrame.centred_on`).
* Area: the ENU bounding box of the receivers grown by `area_margin_m`; transmitters live there.
* Receivers: ENU positions, antenna gains, noise floor ``-174 + 10·log10(fs) + NF`` dBm (thermal
  noise kT over the full complex bandwidth fs), and a fixed calibration offset uniform ±2 dB.
* Static shadowing ("terrain"): per receiver and band a zero-mean Gaussian field over *transmitter*
  position, σ = 7 dB, covariance ``σ²·exp(-d/4 km)``. It is sampled exactly in distribution on a
  `grid_spacing_m` grid covering the area plus one cell by circulant embedding: the covariance is
  embedded in a periodic torus at least twice the grid plus eight decorrelation lengths in each
  direction (so no lag inside the grid wraps), its 2-D FFT gives the eigenvalues, and
  ``FFT(sqrt(λ/M)·(Z1 + jZ2))`` yields two independent fields (real and imaginary parts). Tiny negative
  eigenvalues from the truncated tail are clipped; the clipped fraction of the spectrum is recorded and
  must be < 1e-6. Band k ≥ 1 = ρ·band 0 + sqrt(1-ρ²)·independent (ρ = 0.7), so every band keeps σ.
  Between grid nodes the field is interpolated bilinearly; that interpolated surface *is* the world's
  field (the oracle evaluates the same function), at most ~3 % below σ at cell centres.

Random streams: ``SeedSequence(world_seed).spawn(R)``; receiver r's stream draws its gain offset, then
its fields, so adding a receiver at the end leaves the others' terrain unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.typing import ArrayLike, NDArray

from heimdall.geo import LocalFrame
from heimdall.simulate.scenario import Scenario, ScenarioError

THERMAL_NOISE_DBM_PER_HZ = -174.0
MAX_CLIPPED_FRACTION = 1e-6
_EMBED_DECORRELATION_LENGTHS = 8.0


@dataclass(frozen=True)
class Area:
    """ENU rectangle (metres) that transmitter positions are drawn from."""

    east_min: float
    east_max: float
    north_min: float
    north_max: float

    @property
    def width_m(self) -> float:
        return self.east_max - self.east_min

    @property
    def height_m(self) -> float:
        return self.north_max - self.north_min

    def contains(self, enu: ArrayLike) -> NDArray[np.bool_]:
        e = np.asarray(enu, float)
        return (
            (e[..., 0] >= self.east_min)
            & (e[..., 0] <= self.east_max)
            & (e[..., 1] >= self.north_min)
            & (e[..., 1] <= self.north_max)
        )


@dataclass(frozen=True, eq=False)
class World:
    """Deterministic function of the scenario; build with `build_world` (cached per content hash)."""

    scenario: Scenario
    content_hash: str
    frame: LocalFrame
    receiver_ids: tuple[int, ...]
    receiver_latitude: NDArray[np.float64]  # (R,)
    receiver_longitude: NDArray[np.float64]  # (R,)
    receiver_enu: NDArray[np.float64]  # (R, 2)
    rx_gain_dbi: NDArray[np.float64]  # (R,)
    gain_offset_db: NDArray[np.float64]  # (R,)
    noise_floor_dbm: NDArray[np.float64]  # (R,)
    area: Area
    band_frequencies_hz: NDArray[np.float64]  # (B,)
    band_probabilities: NDArray[np.float64]  # (B,)
    grid_origin_enu: NDArray[np.float64]  # (2,) ENU of grid node [0, 0]
    grid_spacing_m: float
    shadowing_grid_db: NDArray[np.float32]  # (R, B, ny, nx), node [iy, ix] at origin + spacing·(ix, iy)
    embedding_clipped_fraction: float

    @property
    def n_receivers(self) -> int:
        return len(self.receiver_ids)

    @property
    def n_bands(self) -> int:
        return len(self.band_frequencies_hz)

    @property
    def noise_power_mw(self) -> NDArray[np.float64]:
        return 10.0 ** (self.noise_floor_dbm / 10.0)

    def static_shadowing_db(
        self, enu: ArrayLike, band_index: int | ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """Bilinear static shadowing at transmitter positions ``enu (N, 2)``.

        ``band_index=None`` → ``(N, R, B)``; an int or an ``(N,)`` array of band indices → ``(N, R)``.
        Positions outside the grid are clamped to its edge (the grid covers the area plus a cell).
        """
        e = np.asarray(enu, np.float64).reshape(-1, 2)
        _, _, ny, nx = self.shadowing_grid_db.shape
        fx = np.clip((e[:, 0] - self.grid_origin_enu[0]) / self.grid_spacing_m, 0.0, nx - 1.0)
        fy = np.clip((e[:, 1] - self.grid_origin_enu[1]) / self.grid_spacing_m, 0.0, ny - 1.0)
        ix = np.minimum(fx.astype(np.int64), nx - 2)
        iy = np.minimum(fy.astype(np.int64), ny - 2)
        wx, wy = fx - ix, fy - iy
        flat = self.shadowing_grid_db.reshape(self.n_receivers, self.n_bands, ny * nx)
        k00 = iy * nx + ix
        weights = ((1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy)
        corners = (k00, k00 + 1, k00 + nx, k00 + nx + 1)
        if band_index is None:
            out = sum(w[None, None, :] * flat[:, :, k] for w, k in zip(weights, corners, strict=True))
            return np.moveaxis(out, -1, 0)  # (N, R, B)
        b = np.broadcast_to(np.asarray(band_index, np.int64), (e.shape[0],))
        if np.any((b < 0) | (b >= self.n_bands)):
            raise ValueError(f"band_index out of range 0..{self.n_bands - 1}")
        out = sum(w[None, :] * flat[:, b, k] for w, k in zip(weights, corners, strict=True))
        return out.T  # (N, R)


def _torus_eigenvalues(
    shape: tuple[int, int], spacing: float, sigma: float, corr_len: float
) -> tuple[NDArray[np.float64], float]:
    """Eigenvalues of the exponential covariance embedded in a periodic torus, and the clipped fraction."""
    my, mx = shape
    lag_x = np.minimum(np.arange(mx), mx - np.arange(mx)) * spacing
    lag_y = np.minimum(np.arange(my), my - np.arange(my)) * spacing
    cov = sigma**2 * np.exp(-np.hypot(lag_y[:, None], lag_x[None, :]) / corr_len)
    eig = scipy.fft.fft2(cov, workers=-1).real
    negative = -eig[eig < 0].sum()
    clipped = float(negative / np.abs(eig).sum()) if negative > 0 else 0.0
    return np.maximum(eig, 0.0), clipped


def _gaussian_field_pairs(
    rng: np.random.Generator, sqrt_eig: NDArray[np.float32], n_fields: int, ny: int, nx: int
) -> list[NDArray[np.float64]]:
    """`n_fields` independent stationary Gaussian fields on the (ny, nx) grid corner of the torus."""
    fields: list[NDArray[np.float64]] = []
    shape = sqrt_eig.shape
    while len(fields) < n_fields:
        z = np.empty(shape, np.complex64)
        z.real = rng.standard_normal(shape, dtype=np.float32)
        z.imag = rng.standard_normal(shape, dtype=np.float32)
        w = scipy.fft.fft2(z * sqrt_eig, workers=-1, overwrite_x=True)[:ny, :nx]
        fields.extend([w.real.astype(np.float64), w.imag.astype(np.float64)])
    return fields[:n_fields]


def _build(scenario: Scenario) -> World:
    rx = scenario.receivers
    lat = np.array([r.latitude for r in rx], np.float64)
    lon = np.array([r.longitude for r in rx], np.float64)
    frame = LocalFrame.centred_on(lat, lon)
    enu = frame.to_enu(lat, lon)
    margin = scenario.area_margin_m
    area = Area(
        float(enu[:, 0].min() - margin),
        float(enu[:, 0].max() + margin),
        float(enu[:, 1].min() - margin),
        float(enu[:, 1].max() + margin),
    )

    prop = scenario.propagation
    dx = prop.grid_spacing_m
    origin = np.array([area.east_min - dx, area.north_min - dx])
    nx = math.ceil((area.width_m + 2 * dx) / dx) + 1
    ny = math.ceil((area.height_m + 2 * dx) / dx) + 1
    pad = math.ceil(_EMBED_DECORRELATION_LENGTHS * prop.decorrelation_m / dx)
    torus = (scipy.fft.next_fast_len(2 * ny + pad), scipy.fft.next_fast_len(2 * nx + pad))
    eig, clipped = _torus_eigenvalues(torus, dx, prop.static_shadowing_sigma_db, prop.decorrelation_m)
    if clipped > MAX_CLIPPED_FRACTION:
        raise ScenarioError(
            f"scenario {scenario.name!r}: the static shadowing field cannot be drawn on this grid (circulant "
            f"embedding clipped fraction {clipped:.2e} > {MAX_CLIPPED_FRACTION:g}); change "
            "propagation.grid_spacing_m or propagation.decorrelation_m"
        )
    sqrt_eig = np.sqrt(eig / (torus[0] * torus[1])).astype(np.float32)
    del eig

    n_bands = len(scenario.bands)
    rho = prop.band_correlation
    grids = np.empty((len(rx), n_bands, ny, nx), np.float32)
    offsets = np.empty(len(rx))
    for r, child in enumerate(np.random.SeedSequence(scenario.world_seed).spawn(len(rx))):
        rng = np.random.default_rng(child)
        offsets[r] = rng.uniform(-scenario.gain_offset_max_db, scenario.gain_offset_max_db)
        base = _gaussian_field_pairs(rng, sqrt_eig, n_bands, ny, nx)
        grids[r, 0] = base[0]
        for b in range(1, n_bands):
            grids[r, b] = rho * base[0] + math.sqrt(1.0 - rho * rho) * base[b]

    nf = np.array([r.noise_figure_db for r in rx], np.float64)
    arrays = {
        "receiver_latitude": lat,
        "receiver_longitude": lon,
        "receiver_enu": enu,
        "rx_gain_dbi": np.array([r.antenna_gain_dbi for r in rx], np.float64),
        "gain_offset_db": offsets,
        "noise_floor_dbm": THERMAL_NOISE_DBM_PER_HZ + 10.0 * np.log10(scenario.sample_rate_hz) + nf,
        "band_frequencies_hz": np.array([b.frequency_hz for b in scenario.bands], np.float64),
        "band_probabilities": np.array([b.probability for b in scenario.bands], np.float64),
        "grid_origin_enu": origin,
        "shadowing_grid_db": grids,
    }
    for a in arrays.values():
        a.flags.writeable = False
    return World(
        scenario=scenario,
        content_hash=scenario.content_hash(),
        frame=frame,
        receiver_ids=tuple(r.id for r in rx),
        area=area,
        grid_spacing_m=dx,
        embedding_clipped_fraction=clipped,
        **arrays,
    )


_CACHE: dict[str, World] = {}
_CACHE_SIZE = 4


def build_world(scenario: Scenario) -> World:
    """The scenario's world, built once per content hash (a handful are kept in memory)."""
    key = scenario.content_hash()
    world = _CACHE.get(key)
    if world is None:
        world = _build(scenario)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = world
    return world


def clear_world_cache() -> None:
    """Forget cached worlds (tests use it to check that two builds are identical)."""
    _CACHE.clear()
