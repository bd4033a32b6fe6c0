"""The soft "heard" feature on the threshold: numpy, PyTorch and ONNX Runtime agree where a step would flip.

Recordings are built so that their *estimated* SNR (the blind estimator of the features) sits exactly on
the rule's 6 dB and 0.01 dB either side; the expected feature there is known without the code under test:
the ramp of width 1 dB centred on 6 dB gives 0.5 and 0.5 ± 0.01.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heimdall.detection import HEARD_RAMP_DB, HEARD_SNR_DB, heard, heard_weight
from heimdall.features import (
    FeatureConfig,
    TorchFeatureExtractor,
    extract_features_batch,
    heard_scalar,
    iq_complex_to_real,
    receiver_scalars,
)

FS = 12500.0
T = 1250  # 0.1 s, the length of the shipped sample session
CFG = FeatureConfig()
NOISE_DBM = -127.0
OFFSETS_DB = (-0.01, 0.0, 0.01)
N_REALISATIONS = 6


def _recording(rng: np.random.Generator, target_snr_db: float) -> np.ndarray:
    """Noise plus a tone whose level is bisected until the numpy estimate of its SNR is `target_snr_db`."""
    sigma = np.sqrt(10 ** (NOISE_DBM / 10) / 2)
    noise = sigma * (rng.standard_normal(T) + 1j * rng.standard_normal(T))
    freq = rng.uniform(-3000.0, 3000.0)
    tone = np.sqrt(10 ** (NOISE_DBM / 10)) * np.exp(2j * np.pi * freq * np.arange(T) / FS)
    lo, hi = -10.0, 30.0  # tone gain in dB relative to the noise power
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        snr = receiver_scalars(noise + 10 ** (mid / 20) * tone, CFG).snr_db
        lo, hi = (mid, hi) if snr < target_snr_db else (lo, mid)
    return noise + 10 ** (hi / 20) * tone


@pytest.fixture(scope="module")
def on_threshold() -> tuple[np.ndarray, np.ndarray]:
    """Recordings ``(N, T)`` complex and the SNR each was built for."""
    rng = np.random.default_rng(2024)
    targets = np.array([HEARD_SNR_DB + d for _ in range(N_REALISATIONS) for d in OFFSETS_DB])
    return np.stack([_recording(rng, t) for t in targets]), targets


def test_the_feature_is_the_detection_ramp() -> None:
    snr = np.array([-30.0, 5.0, 5.5, 5.99, 6.0, 6.01, 6.5, 7.0, 60.0])
    want = np.clip((snr - 6.0) / 1.0 + 0.5, 0.0, 1.0)  # width 1 dB centred on 6 dB, written out
    assert HEARD_SNR_DB == 6.0 and HEARD_RAMP_DB == 1.0 and CFG.heard_snr_db == 6.0
    np.testing.assert_array_equal(heard_scalar(snr, CFG), want)
    np.testing.assert_array_equal(heard_weight(snr), want)
    moved = FeatureConfig(heard_snr_db=4.0)
    np.testing.assert_allclose(heard_scalar(snr - 2.0, moved), want, atol=1e-12)


def test_numpy_estimates_sit_on_the_threshold(on_threshold) -> None:
    iq, targets = on_threshold
    scalars = extract_features_batch(iq, CFG)[2]
    np.testing.assert_allclose(scalars[:, 2], targets, atol=2e-4)
    np.testing.assert_allclose(scalars[:, 3], 0.5 + (targets - HEARD_SNR_DB), atol=2e-4)
    # the baselines' reading of the feature is the rule on the stored SNR
    np.testing.assert_array_equal(scalars[:, 3] >= 0.5, heard(scalars[:, 2]))


def test_numpy_torch_and_onnx_agree_on_the_threshold(on_threshold, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    iq, _ = on_threshold
    ref = extract_features_batch(iq, CFG)[2][:, 3]
    module = TorchFeatureExtractor(CFG).eval()
    real = iq_complex_to_real(iq)
    with torch.no_grad():
        from_torch = module(torch.from_numpy(real)).scalars[:, 3].numpy()
        path = tmp_path / "features.onnx"
        torch.onnx.export(
            module,
            (torch.from_numpy(real[:2]),),
            str(path),
            dynamo=True,
            input_names=["iq"],
            output_names=["log_mel", "mfcc", "scalars"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    from_onnx = session.run(["scalars"], {"iq": real})[0][:, 3]
    for got in (from_torch, from_onnx):
        assert np.abs(got - ref).max() <= 0.05
        # no step in the graph: ±0.01 dB moves the feature by ~0.01, never by 1
        assert ((got > 0.4) & (got < 0.6)).all()
    np.testing.assert_allclose(from_onnx, from_torch, atol=1e-3)
