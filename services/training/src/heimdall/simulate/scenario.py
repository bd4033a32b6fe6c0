"""Declarative simulation scenarios (docs/SIMULATOR.md): the network, the bands and the propagation physics.

A scenario is a small YAML file validated by pydantic. It fixes the *world* (through `world_seed`:
static shadowing fields and receiver gain offsets) as well as the distributions sessions are drawn
from; the `--seed` of a simulation run only draws sessions inside that world. The shipped
`nw-italy-v1` lives in `heimdall/scenarios/`; users point `load_scenario` at their own file.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from heimdall.detection import HEARD_SNR_DB
from heimdall.errors import UserError, validation_problem, yaml_problem
from heimdall.geo import LocalFrame
from heimdall.simulate.signals import CONTENTS

_PROB_TOL = 1e-6
#: Speed of light in vacuum (m/s): the Doppler of a transmitter moving at v is v·f/c.
SPEED_OF_LIGHT_M_S = 299_792_458.0
#: The maximum-Doppler range (Hz) of a scenario that gives neither a Doppler nor a speed range.
DEFAULT_DOPPLER_HZ = (0.0, 5.0)
_MAX_AUDIO_HZ = 3000.0  # highest audio frequency any content carries (voice band edge)

# Bounds on every size a scenario implies, so a typo cannot ask for terabytes.
#: A simulated recording is complex64: 8 bytes per sample.
IQ_BYTES_PER_SAMPLE = 8
#: One receiver's recording of one session, and all receivers' of one session together.
MAX_IQ_BYTES_PER_RECEIVER = 64 * 2**20
MAX_IQ_BYTES_PER_SESSION = 512 * 2**20
#: The world: static shadowing grids plus the circulant-embedding torus used to draw them.
MAX_WORLD_BYTES = 4 * 2**30
#: Receiver ids are `websdr_stations.id`, a 32-bit integer column.
MAX_STATION_ID = 2**31 - 1
#: Must match heimdall.simulate.world (torus padding, in decorrelation lengths).
_EMBED_DECORRELATION_LENGTHS = 8.0
_TORUS_BYTES_PER_CELL = 64  # float64 covariance and eigenvalues, complex FFT work arrays


class ScenarioError(UserError):
    """A scenario could not be found, parsed or validated; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReceiverSpec(_Strict):
    """One fixed receiver; `id` is the `websdr_stations.id` measurement rows reference."""

    id: int = Field(ge=1, le=MAX_STATION_ID)
    name: str = Field(min_length=1)
    latitude: float = Field(ge=-90.0, le=90.0)
    longitude: float = Field(ge=-180.0, le=180.0)
    altitude_asl: float
    antenna_gain_dbi: float = 2.0
    antenna_height_m: float = Field(default=10.0, ge=0.0)
    noise_figure_db: float = Field(default=6.0, ge=0.0)


class Band(_Strict):
    frequency_hz: float = Field(gt=0.0)
    probability: float = Field(ge=0.0, le=1.0)


class TransmitterSpec(_Strict):
    """Transmitter draws: power log-uniform in watts, content by probability, NBFM deviation."""

    power_w_min: float = Field(default=1.0, gt=0.0)
    power_w_max: float = Field(default=50.0, gt=0.0)
    antenna_height_m: float = Field(default=1.5, ge=0.0)
    gain_dbi: float = 0.0
    content: dict[str, float] = Field(
        default_factory=lambda: {"voice": 0.5, "ctcss_tone": 0.25, "afsk1200": 0.25}
    )
    fm_deviation_hz: float = Field(default=2500.0, gt=0.0)

    @field_validator("content")
    @classmethod
    def _content_known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(CONTENTS))
        if unknown:
            raise ValueError(f"unknown content {unknown}; known: {list(CONTENTS)}")
        if any(p < 0 for p in v.values()):
            raise ValueError("content probabilities must be >= 0")
        if not v or abs(sum(v.values()) - 1.0) > _PROB_TOL:
            raise ValueError(f"content probabilities must sum to 1 (got {sum(v.values()):.6g})")
        return v

    @model_validator(mode="after")
    def _power_order(self) -> TransmitterSpec:
        if self.power_w_max < self.power_w_min:
            raise ValueError("power_w_max must be >= power_w_min")
        return self

    @property
    def power_dbm_min(self) -> float:
        return 10.0 * math.log10(self.power_w_min * 1000.0)

    @property
    def power_dbm_max(self) -> float:
        return 10.0 * math.log10(self.power_w_max * 1000.0)


class PropagationSpec(_Strict):
    """Dual-slope path loss, clutter, static (world) and dynamic (per-session) shadowing."""

    breakpoint_m: float = Field(default=1000.0, gt=0.0)
    slope_db_per_decade: float = Field(default=35.0, gt=0.0)
    clutter_db: float = Field(default=10.0, ge=0.0)
    static_shadowing_sigma_db: float = Field(default=7.0, ge=0.0)
    decorrelation_m: float = Field(default=4000.0, gt=0.0)
    band_correlation: float = Field(default=0.7, ge=-1.0, le=1.0)
    grid_spacing_m: float = Field(default=250.0, gt=0.0)
    dynamic_shadowing_sigma_db: float = Field(default=3.0, ge=0.0)


class FadingSpec(_Strict):
    """Per-link Rician K (dB, uniform) and the per-session maximum Doppler, drawn one of two ways.

    * ``doppler_hz_min/max`` (`nw-italy-v1`): the maximum Doppler itself uniform in Hz, whatever the band.
    * ``speed_kmh_min/max`` (`nw-italy-v2`): the transmitter's speed uniform in km/h, and the maximum
      Doppler ``fd = v·f_carrier / c`` of the session's band.

    Give one pair or neither (then ``doppler_hz`` 0-5 Hz). ``normalise`` rescales each recording's fading
    to unit mean power (v1); ``false`` keeps the time-averaged residual ``mean_t |h|²`` a real capture has.
    """

    k_db_min: float = 0.0
    k_db_max: float = 10.0
    doppler_hz_min: float | None = Field(default=None, ge=0.0)
    doppler_hz_max: float | None = Field(default=None, ge=0.0)
    speed_kmh_min: float | None = Field(default=None, ge=0.0)
    speed_kmh_max: float | None = Field(default=None, ge=0.0)
    normalise: bool = True

    @model_validator(mode="before")
    @classmethod
    def _default_doppler(cls, data: Any) -> Any:
        keys = ("doppler_hz_min", "doppler_hz_max", "speed_kmh_min", "speed_kmh_max")
        if isinstance(data, dict) and all(data.get(k) is None for k in keys):
            return {**data, "doppler_hz_min": DEFAULT_DOPPLER_HZ[0], "doppler_hz_max": DEFAULT_DOPPLER_HZ[1]}
        return data

    @model_validator(mode="after")
    def _ranges(self) -> FadingSpec:
        if self.k_db_max < self.k_db_min:
            raise ValueError("k_db_max must be >= k_db_min")
        doppler = (self.doppler_hz_min, self.doppler_hz_max)
        speed = (self.speed_kmh_min, self.speed_kmh_max)
        if any(v is not None for v in doppler) and any(v is not None for v in speed):
            raise ValueError("give either doppler_hz_min/max or speed_kmh_min/max, not both")
        for lo, hi, what in ((*doppler, "doppler_hz"), (*speed, "speed_kmh")):
            if (lo is None) != (hi is None):
                raise ValueError(f"give both {what}_min and {what}_max")
            if lo is not None and hi is not None and hi < lo:
                raise ValueError(f"{what}_max must be >= {what}_min")
        return self

    @property
    def by_speed(self) -> bool:
        """True when the Doppler follows from a drawn speed (v2), False when it is drawn in Hz (v1)."""
        return self.speed_kmh_min is not None

    def max_doppler_hz(self, frequency_hz: float) -> float:
        """The largest maximum Doppler a session on `frequency_hz` can draw."""
        if self.by_speed:
            return float(self.speed_kmh_max) / 3.6 * frequency_hz / SPEED_OF_LIGHT_M_S  # type: ignore[arg-type]
        return float(self.doppler_hz_max)  # type: ignore[arg-type]


class Scenario(_Strict):
    """A complete, validated simulation scenario (see the module docstring)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    world_seed: int = Field(ge=0)
    receivers: list[ReceiverSpec] = Field(min_length=3)
    gain_offset_max_db: float = Field(default=2.0, ge=0.0)
    frequency_offset_max_hz: float = Field(default=50.0, ge=0.0)
    sample_rate_hz: float = Field(default=12_500.0, gt=0.0)
    default_duration_s: float = Field(default=0.5, gt=0.0)
    detection_snr_db: float = 6.0
    # How a row's SNR (and so "heard") is measured: "known_noise" divides by the receiver's true noise
    # power (v1); "blind" is the features' estimator on the recording alone, heard ⟺ detection.heard (v2).
    snr_estimator: Literal["known_noise", "blind"] = "known_noise"
    min_receivers_heard: int = Field(default=3, ge=1)
    bands: list[Band] = Field(
        default_factory=lambda: [
            Band(frequency_hz=145.5e6, probability=0.8),
            Band(frequency_hz=433.5e6, probability=0.2),
        ],
        min_length=1,
    )
    area_margin_m: float = Field(default=20_000.0, ge=0.0)
    transmitter: TransmitterSpec = Field(default_factory=TransmitterSpec)
    propagation: PropagationSpec = Field(default_factory=PropagationSpec)
    fading: FadingSpec = Field(default_factory=FadingSpec)

    @field_validator("receivers")
    @classmethod
    def _unique_receivers(cls, v: list[ReceiverSpec]) -> list[ReceiverSpec]:
        for attr in ("id", "name"):
            values = [getattr(r, attr) for r in v]
            dup = sorted({x for x in values if values.count(x) > 1}, key=str)
            if dup:
                raise ValueError(f"duplicate receiver {attr}s: {dup}")
        return v

    @field_validator("bands")
    @classmethod
    def _band_probabilities(cls, v: list[Band]) -> list[Band]:
        total = sum(b.probability for b in v)
        if abs(total - 1.0) > _PROB_TOL:
            raise ValueError(f"band probabilities must sum to 1 (got {total:.6g})")
        freqs = [b.frequency_hz for b in v]
        if len(set(freqs)) != len(freqs):
            raise ValueError("band frequencies must be unique")
        return v

    @model_validator(mode="after")
    def _consistency(self) -> Scenario:
        carson_hz = 2.0 * (self.transmitter.fm_deviation_hz + _MAX_AUDIO_HZ)
        if self.sample_rate_hz < carson_hz:
            raise ValueError(
                f"sample_rate_hz ({self.sample_rate_hz:g}) must hold the NBFM signal's Carson bandwidth"
                f" 2·(fm_deviation_hz + {_MAX_AUDIO_HZ:g}) = {carson_hz:g} Hz"
            )
        if self.min_receivers_heard > len(self.receivers):
            raise ValueError(
                f"min_receivers_heard ({self.min_receivers_heard}) exceeds the number of receivers"
                f" ({len(self.receivers)})"
            )
        if self.snr_estimator == "blind" and self.detection_snr_db != HEARD_SNR_DB:
            raise ValueError(
                f"snr_estimator 'blind' uses the one heard rule (heimdall.detection, {HEARD_SNR_DB:g} dB): "
                f"detection_snr_db must be {HEARD_SNR_DB:g}, got {self.detection_snr_db:g}"
            )
        fd_max = max(self.fading.max_doppler_hz(b.frequency_hz) for b in self.bands)
        if not fd_max < self.sample_rate_hz / 2:
            raise ValueError(
                f"the fading's largest maximum Doppler ({fd_max:.6g} Hz) must be below half the sample "
                f"rate ({self.sample_rate_hz / 2:g} Hz)"
            )
        n_samples = self.default_duration_s * self.sample_rate_hz
        per_rx = n_samples * IQ_BYTES_PER_SAMPLE
        if per_rx > MAX_IQ_BYTES_PER_RECEIVER or per_rx * len(self.receivers) > MAX_IQ_BYTES_PER_SESSION:
            raise ValueError(
                f"default_duration_s ({self.default_duration_s:g}) at sample_rate_hz "
                f"({self.sample_rate_hz:g}) is {n_samples:.4g} samples per receiver: "
                f"{per_rx / 2**20:.4g} MiB of IQ per receiver, "
                f"{per_rx * len(self.receivers) / 2**20:.4g} MiB per session; the caps are "
                f"{MAX_IQ_BYTES_PER_RECEIVER // 2**20} MiB per receiver and "
                f"{MAX_IQ_BYTES_PER_SESSION // 2**20} MiB per session"
            )
        world = self.world_bytes()
        if not world <= MAX_WORLD_BYTES:
            raise ValueError(
                f"the world's shadowing grid (area_margin_m, propagation.grid_spacing_m, "
                f"propagation.decorrelation_m, receivers, bands) needs about {world / 2**30:.4g} GiB; "
                f"the cap is {MAX_WORLD_BYTES // 2**30} GiB: use a coarser grid_spacing_m or a smaller area"
            )
        return self

    def world_bytes(self) -> float:
        """Approximate memory to build the world (heimdall.simulate.world): grids plus embedding torus."""
        lat = [r.latitude for r in self.receivers]
        lon = [r.longitude for r in self.receivers]
        enu = LocalFrame.centred_on(lat, lon).to_enu(lat, lon)
        dx = self.propagation.grid_spacing_m
        width = float(enu[:, 0].max() - enu[:, 0].min()) + 2 * self.area_margin_m
        height = float(enu[:, 1].max() - enu[:, 1].min()) + 2 * self.area_margin_m
        nx, ny = (width + 2 * dx) / dx + 2, (height + 2 * dx) / dx + 2
        pad = _EMBED_DECORRELATION_LENGTHS * self.propagation.decorrelation_m / dx
        torus = (2 * ny + pad) * (2 * nx + pad)
        grids = len(self.receivers) * len(self.bands) * ny * nx * 4
        return grids + torus * _TORUS_BYTES_PER_CELL

    @property
    def dataset_label(self) -> str:
        """The `recording_sessions.dataset` label of sessions simulated from this scenario."""
        return f"sim:{self.name}"

    def canonical_json(self) -> str:
        """Every field as canonical JSON (sorted keys, no spaces): what a store keeps of the scenario.

        Comments, layout and key order of the YAML do not enter; an omitted field enters with its value.
        ``Scenario.model_validate(json.loads(text))`` gives the scenario back exactly.
        """
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def content_sha256(self) -> str:
        """SHA-256 hex of :meth:`canonical_json`: the scenario's identity in stores, caches and truth rows."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def content_hash(self) -> str:
        """:attr:`content_sha256` (the world cache's key)."""
        return self.content_sha256


def available_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    folder = resources.files("heimdall").joinpath("scenarios")
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.endswith((".yaml", ".yml"))


def parse_scenario(text: str, source: str) -> Scenario:
    """Parse and validate YAML text; errors name `source` (the file) and the offending field."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: malformed YAML: {yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a YAML mapping, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: invalid scenario: {validation_problem(exc)}") from exc


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a shipped scenario by bare name (e.g. ``nw-italy-v1``) or any scenario file by path."""
    name = str(name_or_path)
    available = available_scenarios()
    if (
        isinstance(name_or_path, Path)
        or _looks_like_path(name)
        or (name not in available and Path(name).is_file())
    ):
        path = Path(name_or_path)
        if not path.is_file():
            raise ScenarioError(f"{path}: scenario file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"{path}: cannot read scenario file: {exc}") from exc
        return parse_scenario(text, str(path))
    if name not in available:
        raise ScenarioError(f"unknown scenario '{name}'; available: {', '.join(available) or '(none)'}")
    resource = resources.files("heimdall").joinpath("scenarios", f"{name}.yaml")
    return parse_scenario(resource.read_text(encoding="utf-8"), f"heimdall/scenarios/{name}.yaml")
