"""Receivers + recordings (or power rows) → model inputs: the one way, with no database and no object store.

Every path that feeds a Heimdall model builds its inputs here: training's ONNX parity check, ``heimdall
evaluate``, ``heimdall predict`` (through a thin adapter that reads a stored session) and the handoff
example (``examples/infer_sample.py``, from a ``.npz``).

* IQ models: receiver ``k`` of the model is ``station_ids[k]``; its calibrated complex recording
  (``mean|x|²`` = power in mW, exactly ``n_samples`` long) becomes ``inputs[0, k] = (I, Q)``.
* Power-only models: a recording becomes its :data:`~heimdall.features.SCALAR_NAMES` (computed with the
  model's feature configuration); a power row (``[power_dbm, noise_floor_dbm, snr_db, heard, …]``, NaN =
  unknown) is used as it is. Channels past the row's length (a moving receiver's offsets) stay 0.
* ``receiver_mask`` is 1 where a receiver delivered something the model reads, 0 elsewhere (its input
  stays zero). Stations the model does not know are reported as ignored; a recording wins over a power
  row of the same station; an IQ model cannot use a power row.
* The session's carrier (``frequency_hz``, ONNX contract 2) travels beside them; None = unknown, which
  the model reads as its training median carrier.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.errors import DataError, UserError
from heimdall.features import SCALAR_NAMES, FeatureConfig, iq_complex_to_real, receiver_scalars_batch

__all__ = [
    "InputSpec",
    "PowerRows",
    "Recordings",
    "SessionInputs",
    "batch_inputs",
    "check_frequency",
    "model_inputs",
]

#: station id → complex recording ``(T,)``
Recordings = Mapping[int, ArrayLike]
#: station id → raw scalars ``[power_dbm, noise_floor_dbm, snr_db, heard, …]``
PowerRows = Mapping[int, ArrayLike]


@dataclass(frozen=True)
class InputSpec:
    """What a model reads: its receivers in order, the input kind and sizes (from the model's metadata)."""

    station_ids: tuple[int, ...]
    input_kind: str = "iq"  # "iq" or "scalars"
    n_samples: int | None = None  # IQ models: T; None = the recordings' own length
    n_scalars: int = len(SCALAR_NAMES)  # power-only models: S
    feature_config: FeatureConfig | None = None  # power-only models fed IQ: the scalars' settings

    def __post_init__(self) -> None:
        if self.input_kind not in ("iq", "scalars"):
            raise ValueError(f"input_kind must be 'iq' or 'scalars', got {self.input_kind!r}")
        object.__setattr__(self, "station_ids", tuple(int(s) for s in self.station_ids))


@dataclass
class SessionInputs:
    """One session as the model reads it: a batch of one."""

    session_id: str | None
    inputs: NDArray[np.float32]  # (1, R, 2, T) IQ or (1, R, S) scalars
    receiver_mask: NDArray[np.float32]  # (1, R)
    used_stations: list[int] = field(default_factory=list)
    absent_stations: list[int] = field(default_factory=list)
    ignored_stations: list[int] = field(default_factory=list)  # measured, but not a receiver of this model
    truth_latlon: tuple[float, float] | None = None
    frequency_hz: float | None = None  # the session's carrier in Hz; None = unknown

    @property
    def frequencies(self) -> NDArray[np.float32]:
        """The ``frequency_hz (1,)`` input: the carrier, NaN when unknown."""
        return np.array([math.nan if self.frequency_hz is None else self.frequency_hz], np.float32)


def _empty(spec: InputSpec, batch: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    r = len(spec.station_ids)
    tail = (2, int(spec.n_samples or 0)) if spec.input_kind == "iq" else (spec.n_scalars,)
    return np.zeros((batch, r, *tail), np.float32), np.zeros((batch, r), np.float32)


def _fill(
    spec: InputSpec,
    x: NDArray[np.float32],
    mask: NDArray[np.float32],
    recordings: Recordings,
    power: PowerRows,
    where: str,
) -> set[int]:
    """Write one session into ``x`` (R, …) and ``mask`` (R,); returns the stations the model ignores."""
    index = {sid: k for k, sid in enumerate(spec.station_ids)}
    iq_model = spec.input_kind == "iq"
    ignored: set[int] = set()
    for sid, rec in recordings.items():
        k = index.get(int(sid))
        if k is None:
            ignored.add(int(sid))
            continue
        iq = np.asarray(rec)
        if iq_model:
            if iq.size != spec.n_samples:
                raise UserError(
                    f"{where}station {sid}: recording has {iq.size} samples, the model reads exactly "
                    f"{spec.n_samples}; use a model trained on recordings of this length"
                )
            x[k] = iq_complex_to_real(iq.reshape(-1))
        else:
            cfg = spec.feature_config or FeatureConfig()
            x[k, : len(SCALAR_NAMES)] = receiver_scalars_batch(iq.reshape(1, -1), cfg)[0]
        mask[k] = 1.0
    for sid, row in power.items():
        k = index.get(int(sid))
        if k is None:
            ignored.add(int(sid))
            continue
        if iq_model or mask[k] > 0:
            continue  # an IQ model cannot use a power row; a recording of the station wins
        values = np.asarray(row, np.float32).reshape(-1)
        if values.size > spec.n_scalars:
            raise ValueError(f"{where}station {sid}: {values.size} scalars, the model reads {spec.n_scalars}")
        x[k, : values.size] = values
        mask[k] = 1.0
    return ignored


def _with_length(spec: InputSpec, sessions: Sequence[Recordings]) -> InputSpec:
    """An IQ spec without ``n_samples`` takes the length of the first recording of a known receiver."""
    if spec.input_kind != "iq" or spec.n_samples is not None:
        return spec
    known = set(spec.station_ids)
    for recs in sessions:
        for sid, rec in recs.items():
            if int(sid) in known:
                return replace(spec, n_samples=int(np.asarray(rec).size))
    return spec


def check_frequency(frequency_hz: float | None, where: str = "") -> float | None:
    """A session's carrier as the model input takes it: None (or NaN) = unknown, else a finite value > 0 Hz
    (anything else is a :class:`~heimdall.errors.UserError`)."""
    if frequency_hz is None:
        return None
    f = float(frequency_hz)
    if math.isnan(f):
        return None
    if not (math.isfinite(f) and f > 0):
        raise UserError(f"{where}carrier frequency {frequency_hz!r} Hz is not a frequency > 0 Hz")
    return f


def model_inputs(
    spec: InputSpec,
    recordings: Recordings | None = None,
    power: PowerRows | None = None,
    *,
    measured: Collection[int] = (),
    session_id: str | None = None,
    truth_latlon: tuple[float, float] | None = None,
    frequency_hz: float | None = None,
    require_any: bool = True,
) -> SessionInputs:
    """One session's inputs (a batch of one) for the model described by ``spec``.

    ``measured``: further stations that took part (e.g. rows with neither IQ nor power), reported as
    ignored when the model does not know them. With ``require_any``, a session of which no receiver of
    the model delivered anything usable is a :class:`~heimdall.errors.UserError`. ``frequency_hz``: the
    session's carrier (None or NaN = unknown; ≤ 0 or infinite is a UserError).
    """
    where = f"session {session_id}, " if session_id is not None else ""
    carrier = check_frequency(frequency_hz, where)
    recordings = {} if recordings is None else recordings
    power = {} if power is None else power
    spec = _with_length(spec, [recordings])
    x, mask = _empty(spec, 1)
    ignored = _fill(spec, x[0], mask[0], recordings, power, where)
    known = set(spec.station_ids)
    ignored.update(int(s) for s in measured if int(s) not in known)
    used = [sid for k, sid in enumerate(spec.station_ids) if mask[0, k] > 0]
    if require_any and not used:
        what = f"session {session_id}" if session_id is not None else "the session"
        raise UserError(f"{what} has no usable recording from the model's receivers {list(spec.station_ids)}")
    return SessionInputs(
        session_id=session_id,
        inputs=x,
        receiver_mask=mask,
        used_stations=used,
        absent_stations=[s for s in spec.station_ids if s not in used],
        ignored_stations=sorted(ignored),
        truth_latlon=truth_latlon,
        frequency_hz=carrier,
    )


def batch_inputs(
    spec: InputSpec,
    recordings: Sequence[Recordings] | None = None,
    power: Sequence[PowerRows] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Many sessions at once: ``(inputs (B, R, …), receiver_mask (B, R))``, float32, as :func:`model_inputs`.

    ``recordings`` and/or ``power`` hold one mapping per session (same length when both are given).
    An IQ model given no recording at all is a :class:`~heimdall.errors.DataError`.
    """
    if recordings is None and power is None:
        raise ValueError("give recordings and/or power rows")
    n = len(recordings) if recordings is not None else len(power or ())
    recs: Sequence[Recordings] = recordings if recordings is not None else [{}] * n
    rows: Sequence[PowerRows] = power if power is not None else [{}] * n
    if len(recs) != len(rows):
        raise ValueError(f"{len(recs)} sessions of recordings, {len(rows)} of power rows")
    spec = _with_length(spec, recs)
    if spec.input_kind == "iq" and spec.n_samples is None:
        raise DataError(
            "no IQ recordings found for the requested sessions: an IQ model needs sessions with IQ "
            "(power-only sessions, e.g. POWDER, need a power-only model)"
        )
    x, mask = _empty(spec, n)
    for b in range(n):
        _fill(spec, x[b], mask[b], recs[b], rows[b], "")
    return x, mask
