"""report.json's ONNX parity is measured against the training path, so a feature drift in the graph shows.

A run whose exported graph computes one feature differently from the numpy features (here: the received
power 1 dB high, as an uncorrected gain in a re-implementation would) must report a parity failure;
the old check against the same torch graph cannot see it (it stays at centimetres).
"""

from __future__ import annotations

import torch
from torch import nn

from heimdall.features import SCALAR_NAMES, TorchFeatures
from heimdall.inference.graph import InferenceGraph
from heimdall.training.config import load_config
from heimdall.training.runner import run_training
from heimdall.training.shipping import PARITY_TOLERANCE_M

POWER = SCALAR_NAMES.index("power_dbm")
DRIFT_DB = 1.0


class _Drifted(nn.Module):
    """The graph's features with ``power_dbm`` DRIFT_DB high."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.inner = features
        self.register_buffer(
            "drift", torch.zeros(len(SCALAR_NAMES)).index_fill(0, torch.tensor([POWER]), DRIFT_DB)
        )

    def forward(self, iq: torch.Tensor) -> TorchFeatures:
        f = self.inner(iq)
        return TorchFeatures(f.log_mel, f.mfcc, f.scalars + self.drift)


def _drifted_graph(*args, **kwargs) -> InferenceGraph:  # type: ignore[no-untyped-def]
    graph = InferenceGraph(*args, **kwargs)
    graph.features = _Drifted(graph.features)
    return graph


def _train(sim_services, out):  # type: ignore[no-untyped-def]
    # the network: a common feature drift is a transmit-power offset to the radio map, which absorbs it
    cfg = load_config(
        None, {"epochs": 2, "batch_size": 16, "output_dir": out, "seed": 5, "model": {"localizer": "network"}}
    )
    return run_training(cfg, sim_services, progress=False).report


def test_a_feature_drift_in_the_graph_fails_parity(sim_services, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("heimdall.training.shipping.InferenceGraph", _drifted_graph)
    report = _train(sim_services, tmp_path / "drift")
    onnx = report.onnx
    print(
        f"drift {DRIFT_DB} dB: vs training path {onnx.max_position_diff_m:.3g} m, "
        f"vs torch graph {onnx.max_position_diff_vs_torch_graph_m:.3g} m"
    )
    assert onnx.parity_ok is False and onnx.max_position_diff_m > PARITY_TOLERANCE_M
    assert onnx.max_position_diff_vs_torch_graph_m < PARITY_TOLERANCE_M  # blind to it: same graph both sides
