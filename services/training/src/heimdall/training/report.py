"""The training report as a typed model: what ``report.json`` holds, field for field.

``TrainReport.model_dump(mode="json")`` is exactly the JSON ``heimdall train`` writes (report.json is
that dump with sorted keys). Figures a later version adds are kept (``extra="allow"``), so a report
round-trips through this model without losing anything.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")


class ErrorSummary(_Part):
    """Position errors of one method on the test split (metres)."""

    rmse_m: float
    median_error_m: float
    mean_error_m: float
    p68_error_m: float
    p90_error_m: float
    p95_error_m: float


class TestMetrics(ErrorSummary):
    """The model's errors and the calibration of its covariance."""

    __test__ = False  # not a pytest class

    coverage_1sigma: float
    coverage_2sigma: float
    coverage_95: float
    nll: float
    mean_ellipse_area_km2: float


class BaselineSummary(ErrorSummary):
    """A classical baseline on the test split, tuned on validation."""

    tuning: dict[str, Any]
    chosen: dict[str, Any]


class Baselines(_Part):
    weighted_centroid: BaselineSummary


class Calibration(_Part):
    """The covariance scale that ships inside model.onnx, fitted on validation (never on test)."""

    covariance_scale: float
    fitted_on: str
    applied_in_graph: bool
    grid: list[float]
    val_nll: list[float]
    chosen: float
    on_grid_edge: bool
    n_sessions: int
    #: the test coverage/NLL the network's own covariance would have had (the report's ``test`` is calibrated)
    test_uncalibrated: dict[str, float] | None = None


class OnnxSummary(_Part):
    """The exported model: where it is, its inputs, parity with the training path, size and latency.

    ``max_position_diff_m`` compares ONNX Runtime on raw inputs with the training path (cached numpy
    features → PyTorch network) on ``parity_n_sessions`` test sessions: the predictions behind ``test``.
    """

    path: str
    object_key: str
    inputs: str
    max_position_diff_m: float
    max_covariance_rel_diff: float
    median_position_diff_m: float | None = None
    parity_n_sessions: int | None = None
    parity_reference: str | None = None
    parity_tolerance_m: float | None = None
    parity_ok: bool | None = None
    max_position_diff_vs_torch_graph_m: float | None = None
    #: largest |receiver_trust ONNX − torch| on the test split: 1 = a set-aside decision differs
    max_trust_diff_vs_torch_graph: float | None = None
    covariance_scale_in_graph: float | None = None
    size_bytes: int
    latency_ms_p50: float
    latency_ms_p90: float


class SplitSnapshot(_Part):
    """Sessions of one split and the hash of their ids."""

    n: int
    ids_sha256_16: str


class FrameOrigin(_Part):
    latitude: float
    longitude: float


class Timing(_Part):
    load_seconds: float
    fit_seconds: float
    seconds_per_epoch: float


class TrainReport(_Part):
    """One training run's report (report.json)."""

    model_id: str
    datasets: list[str]
    feature_config_hash: str
    data_snapshot: dict[str, SplitSnapshot]
    #: the shipped model on the validation split: what every model choice is made on (absent in old reports)
    validation: TestMetrics | None = None
    test: TestMetrics
    #: absent in reports written before calibration shipped
    calibration: Calibration | None = None
    baselines: Baselines
    #: which localiser ships (network, radio map or fusion) and every candidate's validation RMSE
    localizer: dict[str, Any] | None = None
    onnx: OnnxSummary
    frame_origin: FrameOrigin
    network: dict[str, Any]
    config: dict[str, Any]
    n_train: int
    n_val: int
    n_test: int
    skipped_sessions: dict[str, int]
    effective_batch_size: int
    epochs_run: int
    best_epoch: int | None = None  # 1-based epoch with the lowest val_loss (best.ckpt)
    stopped_early: bool = False  # early stopping ended training before the configured epochs
    resumed: bool
    resumed_from_epoch: int | None
    best_checkpoint: str
    timing: Timing
    history: list[dict[str, float]]

    def as_json(self) -> dict[str, Any]:
        """The report as report.json holds it."""
        return self.model_dump(mode="json")
