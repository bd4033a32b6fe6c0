"""What the model needs vs what a recording has: identify, resample, crop, check the power, or refuse.

Every recording of a capture gets one :class:`ReceiverCheck`: *used* (possibly resampled and cropped,
said in ``notes``), *refused* (one ``reason`` in words; the other receivers go on) or *excluded* (the
user's ``--exclude``). The rules, in order:

1. **Receiver.** ``station_id`` from the file, else the model receiver within
   :data:`~heimdall.ingest.sigmf_format.STATION_MATCH_M` of the recording's position. A station the model
   does not know is refused by id/name; so is one recorded farther than that from the model's receiver of
   the same id (another network numbering its receivers alike), and a second recording of one station.
2. **Sample rate.** Equal to the model's: used as it is. Higher, by a ratio ``up/down`` of integers
   at most :data:`MAX_RESAMPLE_FACTOR`: resampled with :func:`scipy.signal.resample_poly` (its
   anti-aliasing filter keeps the model's band; the power inside it is unchanged). Lower: refused, since
   upsampling cannot restore the part of the band the receiver never recorded (the noise power and the
   spectrum the model reads would both be wrong). Any other ratio: refused.
3. **Length.** Longer than the model's ``n_samples``: the middle ``n_samples`` are kept (centred crop:
   the middle of a capture is inside the transmission and away from the resampling filter's edge
   transients). Shorter: refused, unless the model reads any length.
4. **Power** (the model reads absolute power: IQ must be calibrated to √mW). With
   ``N_th = -174 dBm/Hz + 10·log10(fs)`` the thermal noise in the model's band (kT at 290 K), refused when
   the blind noise-floor estimate is more than :data:`NOISE_BELOW_THERMAL_DB` below ``N_th`` (no calibrated
   receiver is quieter than thermal noise: the scale is wrong), more than :data:`NOISE_ABOVE_THERMAL_DB`
   above it (no front end is that noisy: typically raw ADC units read as mW), or when the mean power
   exceeds :data:`MAX_POWER_DBM` (more than any receiver input survives).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np

from heimdall.detection import heard
from heimdall.features import FeatureConfig, receiver_scalars_batch
from heimdall.geo import haversine_m
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.inference.recordings_in import Capture, UserRecording
from heimdall.ingest.sigmf_format import STATION_MATCH_M

__all__ = [
    "MAX_POWER_DBM",
    "MAX_RESAMPLE_FACTOR",
    "MIN_RECEIVERS",
    "NOISE_ABOVE_THERMAL_DB",
    "NOISE_BELOW_THERMAL_DB",
    "THERMAL_DBM_PER_HZ",
    "CheckedCapture",
    "ReceiverCheck",
    "check_capture",
    "thermal_noise_dbm",
]

THERMAL_DBM_PER_HZ = -174.0
#: Margin for the blind estimator's error on a short recording (its spread is a few tenths of a dB).
NOISE_BELOW_THERMAL_DB = 3.0
#: Man-made noise at VHF/UHF in a city is ~20-30 dB above thermal (ITU-R P.372); 60 dB is no receiver.
NOISE_ABOVE_THERMAL_DB = 60.0
#: 100 mW at the antenna input: above what receiver front ends are rated to survive.
MAX_POWER_DBM = 20.0
#: Largest ``up`` or ``down`` of a resampling ratio (the polyphase filter has 20·max(up, down)+1 taps).
MAX_RESAMPLE_FACTOR = 10_000
#: Fewest receivers a position is computed from (two give a line of ambiguity, not a point).
MIN_RECEIVERS = 3

Status = Literal["used", "refused", "excluded"]


def thermal_noise_dbm(sample_rate_hz: float) -> float:
    """kTB in dBm over the two-sided band of complex IQ sampled at ``sample_rate_hz`` (290 K)."""
    return THERMAL_DBM_PER_HZ + 10.0 * math.log10(sample_rate_hz)


@dataclass
class ReceiverCheck:
    """One recording's fate: used (with what was done to it), refused or excluded (with why)."""

    source: str
    station_id: int | None
    station_name: str | None
    status: Status
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    sample_rate_hz: float = 0.0
    n_samples: int = 0
    frequency_hz: float | None = None
    power_dbm: float | None = None
    noise_floor_dbm: float | None = None
    snr_db: float | None = None
    heard: bool | None = None


@dataclass
class CheckedCapture:
    """A capture after the checks: the model-ready recordings of the used receivers, and every check."""

    capture: Capture
    recordings: dict[int, np.ndarray]
    checks: list[ReceiverCheck]

    def with_status(self, status: Status) -> list[ReceiverCheck]:
        return [c for c in self.checks if c.status == status]


def _names(loc: OnnxLocalizer) -> dict[int, str]:
    if loc.station_names is None:
        return {}
    return dict(zip(loc.station_ids, loc.station_names, strict=True))


def _positions(loc: OnnxLocalizer) -> dict[int, tuple[float, float]]:
    if loc.receivers is None:
        return {}
    return {int(r["station_id"]): (float(r["latitude"]), float(r["longitude"])) for r in loc.receivers}


def _network(loc: OnnxLocalizer) -> str:
    names = _names(loc)
    return ", ".join(f"{s} {names[s]}" if s in names else str(s) for s in loc.station_ids)


def _identify(loc: OnnxLocalizer, rec: UserRecording) -> tuple[int | None, str | None]:
    """(station id, refusal): the file's station id checked against the model's receivers, else by place."""
    positions = _positions(loc)
    here = (rec.latitude, rec.longitude) if rec.latitude is not None and rec.longitude is not None else None
    if rec.station_id is None:
        if here is None:
            return None, "no station id and no position: cannot tell which receiver recorded it"
        if not positions:
            return None, "no station id, and this model records no receiver positions to match"
        sid, (lat, lon) = min(positions.items(), key=lambda kv: haversine_m(*here, *kv[1]))
        d = float(haversine_m(*here, lat, lon))
        if d > STATION_MATCH_M:
            return None, (
                f"recorded at ({here[0]:.5f}, {here[1]:.5f}), {d / 1000:.1f} km from the nearest receiver "
                f"of the model ({sid}): not in the model's network ({_network(loc)})"
            )
        return sid, None
    sid = rec.station_id
    if sid not in loc.station_ids:
        return sid, f"not in the model's network ({_network(loc)})"
    if here is not None and sid in positions:
        d = float(haversine_m(*here, *positions[sid]))
        if d > STATION_MATCH_M:
            return sid, (
                f"recorded at ({here[0]:.5f}, {here[1]:.5f}), {d / 1000:.1f} km from the model's station "
                f"{sid}: not the receiver the model knows"
            )
    return sid, None


def _resample(iq: np.ndarray, rate: float, target: float) -> tuple[np.ndarray | None, str]:
    """(recording at ``target``, note) or (None, refusal)."""
    if rate == target:
        return iq, ""
    if rate < target:
        return None, (
            f"sample rate {rate:g} Hz is below the model's {target:g} Hz: upsampling cannot restore the "
            "band the receiver did not record; record at ≥ the model's rate"
        )
    ratio = Fraction(target) / Fraction(rate)  # exact for the binary floats both rates are
    up, down = ratio.numerator, ratio.denominator
    if max(up, down) > MAX_RESAMPLE_FACTOR:
        return None, (
            f"sample rate {rate:g} Hz is not a ratio of small integers of the model's {target:g} Hz "
            f"(needs up/down ≤ {MAX_RESAMPLE_FACTOR}); resample it to {target:g} Hz yourself"
        )
    import scipy.signal

    out = scipy.signal.resample_poly(iq.astype(np.complex128), up, down)
    return out.astype(np.complex64), f"resampled {rate:g} → {target:g} Hz (×{up}/{down}, resample_poly)"


def crop_centred(iq: np.ndarray, n: int | None, rate: float) -> tuple[np.ndarray | None, str]:
    """The middle `n` samples of a longer recording (None and the reason for a shorter one) and a note."""
    if n is None or iq.size == n:
        return iq, ""
    if iq.size < n:
        return None, (
            f"{iq.size} samples ({iq.size / rate:.4g} s at {rate:g} Hz) but the model reads {n} "
            f"({n / rate:.4g} s): too short; use a model trained on recordings this short"
        )
    first = (iq.size - n) // 2
    note = f"cropped {iq.size} → {n} samples, centred (samples {first}…{first + n - 1})"
    return iq[first : first + n], note


def _power_refusal(power: float, noise: float, rate: float) -> str | None:
    floor = thermal_noise_dbm(rate)
    if power > MAX_POWER_DBM:
        return (
            f"mean power {power:.1f} dBm is above {MAX_POWER_DBM:g} dBm, more than any receiver input "
            "survives: is the IQ calibrated to √mW?"
        )
    if noise < floor - NOISE_BELOW_THERMAL_DB:
        return (
            f"noise floor {noise:.1f} dBm is below the thermal noise of the band ({floor:.1f} dBm at "
            f"{rate:g} Hz): the IQ is not calibrated to √mW"
        )
    if noise > floor + NOISE_ABOVE_THERMAL_DB:
        return (
            f"noise floor {noise:.1f} dBm is {noise - floor:.0f} dB above thermal noise ({floor:.1f} dBm): "
            "no receiver is that noisy; raw ADC units? calibrate the IQ to √mW"
        )
    return None


def _check_one(
    loc: OnnxLocalizer, cfg: FeatureConfig, rec: UserRecording, chk: ReceiverCheck
) -> np.ndarray | None:
    """Resample, crop and check one identified recording; fills ``chk``; the model-ready IQ or None."""
    iq, note = _resample(rec.iq, rec.sample_rate_hz, cfg.sample_rate)
    if iq is None:
        chk.status, chk.reason = "refused", note
        return None
    chk.notes += [note] if note else []
    iq, note = crop_centred(iq, loc.n_samples, cfg.sample_rate)
    if iq is None:
        chk.status, chk.reason = "refused", note
        return None
    chk.notes += [note] if note else []
    if iq.size < cfg.n_fft:
        chk.status, chk.reason = "refused", f"{iq.size} samples: shorter than one FFT frame ({cfg.n_fft})"
        return None
    power, noise, snr, _ = (float(v) for v in receiver_scalars_batch(iq[None], cfg)[0])
    chk.power_dbm, chk.noise_floor_dbm, chk.snr_db = power, noise, snr
    chk.heard = bool(heard(snr))
    refusal = _power_refusal(power, noise, cfg.sample_rate)
    if refusal is not None:
        chk.status, chk.reason = "refused", refusal
        return None
    return iq


def check_capture(loc: OnnxLocalizer, capture: Capture, exclude: Collection[int] = ()) -> CheckedCapture:
    """Check every recording of ``capture`` against ``loc``'s needs; see the module docstring."""
    cfg = loc.feature_config()
    names = _names(loc)
    used: dict[int, np.ndarray] = {}
    first_of: dict[int, str] = {}
    checks = []
    for rec in capture.recordings:
        sid, refusal = _identify(loc, rec)
        chk = ReceiverCheck(
            source=rec.source.name,
            station_id=sid,
            station_name=names.get(sid) if sid is not None else None,
            status="used",
            sample_rate_hz=rec.sample_rate_hz,
            n_samples=int(rec.iq.size),
            frequency_hz=rec.frequency_hz,
        )
        chk.station_name = chk.station_name or rec.station_name
        checks.append(chk)
        if refusal is not None:
            chk.status, chk.reason = "refused", refusal
            continue
        assert sid is not None
        if sid in exclude:
            chk.status, chk.reason = "excluded", "excluded by --exclude"
            continue
        if sid in first_of:
            chk.status, chk.reason = "refused", f"a second recording of this station (first: {first_of[sid]})"
            continue
        first_of[sid] = chk.source
        iq = _check_one(loc, cfg, rec, chk)
        if iq is not None:
            used[sid] = iq
    return CheckedCapture(capture, used, checks)
