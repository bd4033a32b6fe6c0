"""The evaluation as a typed model: what ``evaluation.json`` holds, field for field.

``EvaluationReport.as_json()`` is exactly the JSON ``heimdall evaluate`` writes (evaluation.json is
that dump with sorted keys). Optional parts (a method's tuning, its uncertainty figures, the outage
study) are left out of the dump when the evaluation did not produce them, as before. Figures a later
version adds are kept (``extra="allow"``), so an evaluation round-trips through this model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")


class PairedDifference(_Part):
    """A statistic minus the reference method's, on the same bootstrap draws, with its 95 % interval."""

    reference: str
    value: float
    ci95_low: float
    ci95_high: float


class BootstrapInterval(_Part):
    """One statistic of one method: its value and 95 % paired-bootstrap interval."""

    value: float
    ci95_low: float
    ci95_high: float
    diff_vs_reference: PairedDifference | None = None


class MethodResult(_Part):
    """One method on the split: errors (metres), intervals, its tuning and, with covariances, calibration."""

    rmse_m: float
    median_error_m: float
    mean_error_m: float
    p68_error_m: float
    p90_error_m: float
    p95_error_m: float
    bootstrap: dict[str, BootstrapInterval]
    #: a classical baseline's validation grid and choice
    tuning: dict[str, Any] | None = None
    #: the model's covariance multiplier fitted on validation
    covariance_scale: dict[str, Any] | None = None
    #: the Bayes oracle's frame note
    frame: str | None = None
    coverage_1sigma: float | None = None
    coverage_2sigma: float | None = None
    coverage_95: float | None = None
    nll: float | None = None
    mean_ellipse_area_km2: float | None = None


class OutageFigures(_Part):
    """One method's errors with one receiver removed."""

    rmse_m: float
    median_error_m: float


class OutageRow(BaseModel):
    """One removed receiver: its name, every method's figures (keyed by method name), model / oracle."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")

    __pydantic_extra__: dict[str, OutageFigures] = Field(init=False)

    station_name: str
    #: sessions still heard by enough of the remaining receivers (the study's selection)
    n_sessions: int | None = None
    model_rmse_over_oracle: float | None = None

    @property
    def methods(self) -> dict[str, OutageFigures]:
        """Every method's figures for this row, by method name."""
        return dict(self.__pydantic_extra__ or {})


class EvaluationReport(_Part):
    """One evaluation of a model on one split (evaluation.json)."""

    model: str
    model_id: str
    split: str
    n_sessions: int
    datasets: list[str]
    n_train: int
    n_val: int
    methods: dict[str, MethodResult]
    outage: dict[str, OutageRow] | None = None
    outage_n_sessions: int | None = None
    plots: list[str]
    reference_for_ratios: str

    def as_json(self) -> dict[str, Any]:
        """The evaluation as evaluation.json holds it (absent optional parts stay absent)."""
        return self.model_dump(mode="json", exclude_unset=True)
