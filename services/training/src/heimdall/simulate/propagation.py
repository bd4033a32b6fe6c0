"""Large-scale propagation and the simulator's exact measurement model (docs/SIMULATOR.md, EVALUATION.md).

Path loss (pinned): free space ``FSPL(d, f) = 20·log10(4π d f / c)`` up to the 1 km breakpoint, then
``FSPL(1 km, f) + 35·log10(d / 1 km)``; distances below 1 m are clamped to 1 m. `path_loss_db` is the
distance law only: the 10 dB clutter loss is subtracted separately in `received_power_field_db`.
The distance is the great-circle (haversine) ground distance between transmitter and receiver site;
antenna heights (1.5 m, 10 m) and site altitudes do not enter the pinned law.

The noiseless mean received-power field of receiver r for a transmitter at x on band b is

    field_r(x, b) = G_tx + G_rx,r − PL(d_r(x), f_b) − clutter + S_r,b(x) + g_r        [dB, at 0 dBm]

with S the world's static shadowing and g_r the receiver's fixed gain offset;
`mean_received_power_dbm` adds the transmit power P_tx (dBm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.geo import haversine_m
from heimdall.simulate.scenario import SPEED_OF_LIGHT_M_S
from heimdall.simulate.world import Area, World

MIN_DISTANCE_M = 1.0


def free_space_path_loss_db(distance_m: ArrayLike, frequency_hz: ArrayLike) -> NDArray[np.float64]:
    """Friis free-space loss ``20·log10(4π d f / c)`` (d clamped to ≥ 1 m)."""
    d = np.maximum(np.asarray(distance_m, np.float64), MIN_DISTANCE_M)
    return 20.0 * np.log10(4.0 * np.pi * d * np.asarray(frequency_hz, np.float64) / SPEED_OF_LIGHT_M_S)


def path_loss_db(
    distance_m: ArrayLike,
    frequency_hz: ArrayLike,
    breakpoint_m: float = 1000.0,
    slope_db_per_decade: float = 35.0,
) -> NDArray[np.float64]:
    """Dual-slope loss: free space to the breakpoint, `slope_db_per_decade` beyond (clutter excluded)."""
    d = np.maximum(np.asarray(distance_m, np.float64), MIN_DISTANCE_M)
    near = free_space_path_loss_db(d, frequency_hz)
    far = free_space_path_loss_db(breakpoint_m, frequency_hz) + slope_db_per_decade * np.log10(
        np.maximum(d, breakpoint_m) / breakpoint_m
    )
    return np.where(d <= breakpoint_m, near, far)


def link_distance_m(world: World, tx_lat: ArrayLike, tx_lon: ArrayLike) -> NDArray[np.float64]:
    """Haversine ground distance ``(N, R)`` from each transmitter position to each receiver."""
    lat = np.atleast_1d(np.asarray(tx_lat, np.float64)).reshape(-1, 1)
    lon = np.atleast_1d(np.asarray(tx_lon, np.float64)).reshape(-1, 1)
    return haversine_m(lat, lon, world.receiver_latitude[None, :], world.receiver_longitude[None, :])


def received_power_field_db(
    world: World, tx_lat: ArrayLike, tx_lon: ArrayLike, band_index: int | ArrayLike
) -> NDArray[np.float64]:
    """``field_r(x, b)`` of the module docstring, ``(N, R)``: mean received dBm for a 0 dBm transmitter.

    `band_index` is one band for all positions or an ``(N,)`` array (one band per position).
    """
    lat = np.atleast_1d(np.asarray(tx_lat, np.float64)).ravel()
    lon = np.atleast_1d(np.asarray(tx_lon, np.float64)).ravel()
    lat, lon = np.broadcast_arrays(lat, lon)
    band = np.broadcast_to(np.asarray(band_index, np.int64), lat.shape)
    if np.any((band < 0) | (band >= world.n_bands)):
        raise ValueError(f"band_index out of range 0..{world.n_bands - 1}")
    scenario = world.scenario
    prop = scenario.propagation
    freq = world.band_frequencies_hz[band][:, None]
    pl = path_loss_db(link_distance_m(world, lat, lon), freq, prop.breakpoint_m, prop.slope_db_per_decade)
    shadow = world.static_shadowing_db(world.frame.to_enu(lat, lon), band)
    gains = scenario.transmitter.gain_dbi + world.rx_gain_dbi + world.gain_offset_db
    return gains[None, :] - pl - prop.clutter_db + shadow


def mean_received_power_dbm(
    world: World,
    tx_lat: ArrayLike,
    tx_lon: ArrayLike,
    band_index: int | ArrayLike,
    tx_power_dbm: ArrayLike,
) -> NDArray[np.float64]:
    """Noiseless mean received power ``(N, R)`` in dBm: ``P_tx + field_r(x, b)`` (vectorised over N)."""
    field = received_power_field_db(world, tx_lat, tx_lon, band_index)
    p = np.atleast_1d(np.asarray(tx_power_dbm, np.float64)).ravel()
    return field + p[:, None]


@dataclass(frozen=True, eq=False)
class MeasurementModel:
    """Everything the Bayes oracle needs; the simulator draws measurements exactly like this.

    Per session (transmitter at x, band b, power P_tx) and receiver r:

    * ``s_r = field_r(x, b) + P_tx + ε_r``, ``ε_r ~ N(0, dynamic_shadowing_sigma_db²)`` independent per
      receiver and session (dynamic shadowing). ``s_r`` is the session-mean received power (dBm).
    * IQ (units sqrt(mW), so ``10·log10(mean|iq|²)`` is dBm):
      ``iq_r(t) = sqrt(10^(s_r/10))·h_r(t)·u(t)·exp(j2π f_off,r t) + n_r(t)`` with ``|u| = 1`` (FM),
      ``mean_t |h_r|² = 1`` exactly (fading only redistributes power within the recording), and
      ``n_r`` circular white Gaussian of power ``N_r = 10^(noise_floor_dbm_r/10)``.
    * Measured: ``P̂_r = mean|iq_r|²``, ``signal_strength_db = 10·log10(P̂_r)``,
      ``snr_db = 10·log10(max(P̂_r/N_r − 1, 1e-3))``. Hence ``P̂_r − N_r = 10^(s_r/10)`` up to a
      zero-mean fluctuation of standard deviation ``sqrt((N_r² + 2·S_r·N_r)/T)`` (T samples; < 0.05 dB
      at the 6 dB threshold for T = 6250): to that precision a heard receiver reveals s_r itself.
    * Heard iff ``snr_db ≥ detection_snr_db``, i.e. (same precision) iff
      ``s_r ≥ detection_threshold_dbm_r = noise_floor_dbm_r + detection_snr_db``. A receiver that does not
      hear stores noise only, so its row carries only the fact ``s_r < threshold``:
      likelihood ``Φ((threshold_r − field_r − P_tx)/σ)``; a heard one ``φ((s_r − field_r − P_tx)/σ)/σ``.
    * Sessions are kept iff at least `min_receivers_heard` receivers hear (a selection every method
      sees equally). Priors: x uniform over `area` (ENU), P_tx uniform in dBm on
      [`tx_power_dbm_min`, `tx_power_dbm_max`] (log-uniform in watts), band b with `band_probabilities`.
    * ``nw-italy-v2`` (``fading_normalised`` False, ``snr_estimator`` "blind") differs in two places: the
      recorded signal power is ``10^(s_r/10)·F_r`` with ``F_r = mean_t |h_r|²`` the time-averaged fading
      residual (mean 1; its law depends on K_r and fd·T only, K_r and fd being the session's truth), and
      ``snr_db`` is the blind estimate ``P̂/N̂ − 1`` with N̂ estimated from the recording
      (:func:`heimdall.features.receiver_scalars_batch`), heard ⟺ :func:`heimdall.detection.heard`.
    """

    world: World
    receiver_ids: tuple[int, ...]
    noise_floor_dbm: NDArray[np.float64]  # (R,)
    detection_snr_db: float
    dynamic_shadowing_sigma_db: float
    min_receivers_heard: int
    tx_power_dbm_min: float
    tx_power_dbm_max: float
    area: Area
    band_frequencies_hz: NDArray[np.float64]
    band_probabilities: NDArray[np.float64]
    sample_rate_hz: float
    fading_normalised: bool = True  # False: the recording keeps mean_t |h|² (v2)
    snr_estimator: str = "known_noise"  # "blind": rows carry the features' SNR estimate (v2)

    @classmethod
    def from_world(cls, world: World) -> MeasurementModel:
        sc = world.scenario
        return cls(
            world=world,
            receiver_ids=world.receiver_ids,
            noise_floor_dbm=world.noise_floor_dbm,
            detection_snr_db=sc.detection_snr_db,
            dynamic_shadowing_sigma_db=sc.propagation.dynamic_shadowing_sigma_db,
            min_receivers_heard=sc.min_receivers_heard,
            tx_power_dbm_min=sc.transmitter.power_dbm_min,
            tx_power_dbm_max=sc.transmitter.power_dbm_max,
            area=world.area,
            band_frequencies_hz=world.band_frequencies_hz,
            band_probabilities=world.band_probabilities,
            sample_rate_hz=sc.sample_rate_hz,
            fading_normalised=sc.fading.normalise,
            snr_estimator=sc.snr_estimator,
        )

    @property
    def detection_threshold_dbm(self) -> NDArray[np.float64]:
        """``noise_floor_dbm + detection_snr_db`` per receiver: the s_r above which a receiver hears."""
        return self.noise_floor_dbm + self.detection_snr_db

    def band_index(self, frequency_hz: float) -> int:
        """Index of the band whose centre frequency is nearest `frequency_hz` (rows store frequency)."""
        return int(np.argmin(np.abs(self.band_frequencies_hz - frequency_hz)))

    def field_db(
        self, tx_lat: ArrayLike, tx_lon: ArrayLike, band_index: int | ArrayLike
    ) -> NDArray[np.float64]:
        """``field_r(x, b)`` ``(N, R)`` (dB re a 0 dBm transmitter); see `received_power_field_db`."""
        return received_power_field_db(self.world, tx_lat, tx_lon, band_index)

    def field_db_enu(self, enu: ArrayLike, band_index: int | ArrayLike) -> NDArray[np.float64]:
        """Same field at local ENU positions ``(N, 2)`` (converted to lat/lon in float64 first)."""
        lat, lon = self.world.frame.to_latlon(np.asarray(enu, np.float64).reshape(-1, 2))
        return received_power_field_db(self.world, lat, lon, band_index)


def measurement_model(world: World) -> MeasurementModel:
    """Shorthand for `MeasurementModel.from_world`."""
    return MeasurementModel.from_world(world)
