"""The oracle's spatial machinery, shared by the v1 and the faded (v2) likelihoods.

A grid of cells ≤ `MAX_CELL_M` tiling the scenario's area, with the noiseless field at every coarse
centre and at every `refine` × `refine` sub-cell; the screening thresholds (nats) that decide which
coarse cells are dropped, kept coarse or refined; the posterior over the resulting mixed-resolution
cells (each cell's uniform spread added to the covariance); and running sessions over threads. See
:mod:`heimdall.evaluate.oracle` for why these resolutions are enough.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from heimdall.simulate.propagation import MeasurementModel
from heimdall.simulate.world import Area, World

T = TypeVar("T")

MAX_CELL_M = 1000.0
SCREEN_NATS = 30.0
REFINE_NATS = 15.0
CORE_NATS = 9.0
N_TOP_SEED = 32


@dataclass(frozen=True, eq=False)
class _Grid:
    """Coarse cells tiling the area and their `refine`² sub-cells, with the field at every centre."""

    nx: int
    ny: int
    refine: int
    hx: float  # coarse cell width/height (m)
    hy: float
    coarse_centres: NDArray[np.float64]  # (ny*nx, 2)
    coarse_field: NDArray[np.float64]  # (B, ny*nx, R)
    fine_centres: NDArray[np.float64]  # (ny*nx*refine², 2), grouped by coarse cell
    fine_field: NDArray[np.float32]  # (B, ny*nx*refine², R), same order


def _centres(lo: float, n: int, h: float) -> NDArray[np.float64]:
    return lo + (np.arange(n) + 0.5) * h


_GRID_CACHE: weakref.WeakKeyDictionary[World, dict[tuple[float, int, Area], _Grid]] = (
    weakref.WeakKeyDictionary()
)


def _grid(model: MeasurementModel, cell_m: float, refine: int) -> _Grid:
    """The oracle grid for this world (cached: the fine field takes a few seconds)."""
    per_world = _GRID_CACHE.setdefault(model.world, {})
    key = (float(cell_m), int(refine), model.area)
    if key in per_world:
        return per_world[key]
    a = model.area
    nx, ny = math.ceil(a.width_m / cell_m), math.ceil(a.height_m / cell_m)
    hx, hy = a.width_m / nx, a.height_m / ny
    cx, cy = _centres(a.east_min, nx, hx), _centres(a.north_min, ny, hy)
    coarse = np.stack(np.meshgrid(cx, cy), axis=-1).reshape(-1, 2)  # row-major: index iy*nx + ix
    # sub-cell offsets inside a coarse cell, then grouped per coarse cell: (ny*nx, refine², 2)
    sub = (np.arange(refine) + 0.5) / refine - 0.5
    off = np.stack(np.meshgrid(sub * hx, sub * hy), axis=-1).reshape(-1, 2)
    fine = (coarse[:, None, :] + off[None, :, :]).reshape(-1, 2)
    bands = range(len(model.band_frequencies_hz))
    grid = _Grid(
        nx=nx,
        ny=ny,
        refine=refine,
        hx=hx,
        hy=hy,
        coarse_centres=coarse,
        coarse_field=np.stack([model.field_db_enu(coarse, b) for b in bands]),
        fine_centres=fine,
        fine_field=np.stack([model.field_db_enu(fine, b).astype(np.float32) for b in bands]),
    )
    per_world[key] = grid
    return grid


def _lse(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """logsumexp over the last axis (rows of −inf give −inf); leaner than scipy's for small rows."""
    m = x.max(axis=-1)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - m_safe[..., None]).sum(axis=-1)) + m_safe


@dataclass(frozen=True)
class GridPosterior:
    """One session's posterior on grid cells: centres, cell sizes and normalised weights."""

    centres_enu_m: NDArray[np.float64]  # (M, 2)
    cell_size_m: NDArray[np.float64]  # (M, 2) width, height
    weights: NDArray[np.float64]  # (M,), sum 1

    def mean_cov(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Posterior mean and covariance, including each cell's uniform spread (size²/12)."""
        w = self.weights
        mean = w @ self.centres_enu_m
        r = self.centres_enu_m - mean
        cov = (r * w[:, None]).T @ r + np.diag(w @ (self.cell_size_m**2 / 12.0))
        return mean, cov


def _dilate(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Grow a 2-D boolean mask by one cell in all eight directions."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def assemble_posterior(
    grid: _Grid,
    cand: NDArray[np.int64],
    refined: NDArray[np.int64],
    fine_idx: NDArray[np.int64],
    ll_c: NDArray[np.float64],
    ll_f: NDArray[np.float64],
) -> GridPosterior:
    """The posterior over the refined sub-cells and the candidate coarse cells that were not refined."""
    k = grid.refine**2
    keep = ~np.isin(cand, refined)
    hf = np.array([grid.hx, grid.hy]) / grid.refine
    hc = np.array([grid.hx, grid.hy])
    logw = np.concatenate([ll_f, ll_c[keep] + math.log(k)])  # coarse cells are k fine cells in area
    w = np.exp(logw - _lse(logw))
    centres = np.concatenate([grid.fine_centres[fine_idx], grid.coarse_centres[cand[keep]]])
    sizes = np.concatenate([np.broadcast_to(hf, (fine_idx.size, 2)), np.broadcast_to(hc, (keep.sum(), 2))])
    return GridPosterior(centres, sizes, w)


def check_grid(cell_m: float, refine: int) -> None:
    """ValueError unless ``0 < cell_m ≤ MAX_CELL_M`` and `refine` is a positive integer."""
    if not (0.0 < cell_m <= MAX_CELL_M):
        raise ValueError(f"cell_m must be in (0, {MAX_CELL_M:g}] m, got {cell_m}")
    if int(refine) != refine or refine < 1:
        raise ValueError(f"refine must be a positive integer, got {refine}")


def map_sessions(one: Callable[[int], T], n: int, workers: int | None) -> list[T]:
    """``[one(0), …, one(n − 1)]``, spread over threads (results do not depend on their number)."""
    n_workers = min(n, workers if workers is not None else (os.cpu_count() or 1))
    if n_workers <= 1:
        return [one(i) for i in range(n)]
    # numpy/scipy release the GIL inside the big array kernels, so threads share the cores well
    with ThreadPoolExecutor(n_workers) as pool:
        return list(pool.map(one, range(n)))


def map_moments(
    one: Callable[[int], GridPosterior], n: int, workers: int | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The moments of ``one(i)`` for every session, each posterior dropped once summarised: memory
    stays that of a few grids, not of every evaluated session's (2.7 GB for 1,000 v2 sessions)."""
    return _stack(map_sessions(lambda i: one(i).mean_cov(), n, workers))


def _stack(
    moments: list[tuple[NDArray[np.float64], NDArray[np.float64]]],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    mean = np.empty((len(moments), 2))
    cov = np.empty((len(moments), 2, 2))
    for i, (m, c) in enumerate(moments):
        mean[i], cov[i] = m, c
    return mean, cov


def refine_posterior(
    grid: _Grid,
    band: int,
    cand: NDArray[np.int64],
    ll_c: NDArray[np.float64],
    ll: Callable[[NDArray[np.float64]], NDArray[np.float64]],
) -> GridPosterior:
    """Refine the candidate coarse cells that matter and assemble the posterior.

    Cells within `CORE_NATS` of the best, and their neighbours, plus every cell within `REFINE_NATS`,
    are split into `refine`² sub-cells whose log-likelihoods `ll` computes from their field values; the
    other candidates keep their coarse value `ll_c`. Shared by the v1 and the faded likelihoods.
    """
    core = np.zeros(grid.ny * grid.nx, bool)
    core[cand[ll_c >= ll_c.max() - CORE_NATS]] = True
    refine_mask = _dilate(core.reshape(grid.ny, grid.nx)).ravel()
    refine_mask[cand[ll_c >= ll_c.max() - REFINE_NATS]] = True
    refined = np.flatnonzero(refine_mask)
    k = grid.refine**2
    fine_idx = (refined[:, None] * k + np.arange(k)[None, :]).ravel()
    ll_f = ll(grid.fine_field[band][fine_idx].astype(np.float64))
    return assemble_posterior(grid, cand, refined, fine_idx, ll_c, ll_f)
