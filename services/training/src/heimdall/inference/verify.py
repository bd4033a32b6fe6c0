"""Check an exported model against the training path and against PyTorch, and time it on one core.

Two checks, for two questions. :func:`parity_with_reference` compares the ONNX outputs from raw inputs
with reference predictions made elsewhere — in training, the numpy/cached features through the PyTorch
network, i.e. exactly what ``report.json``'s test figures were computed from — so a difference anywhere
(feature re-implementation, standardisation, export, calibration) shows. :func:`onnx_parity` compares
ONNX Runtime with the same torch graph, which isolates the exporter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from heimdall.inference.contract import OUTPUT_NAMES, TRUST_OUTPUT
from heimdall.inference.graph import InferenceGraph
from heimdall.inference.localizer import ort_session

__all__ = ["InputChunks", "measure_latency", "onnx_parity", "parity_with_reference"]


class InputChunks(Protocol):
    """Inputs of ``n`` sessions built chunk by chunk (e.g. IQ read from the store: a whole test split of
    IQ would not fit the memory a run may use)."""

    n: int

    def chunk(self, start: int, stop: int) -> Sequence[Tensor | ArrayLike]: ...


class _WholeInputs:
    def __init__(self, arrays: Sequence[Tensor | ArrayLike]) -> None:
        self.arrays = [_as_f32(x) for x in arrays]
        self.n = self.arrays[0].shape[0]

    def chunk(self, start: int, stop: int) -> Sequence[Tensor | ArrayLike]:
        return [a[start:stop] for a in self.arrays]


def _chunks(inputs: Sequence[Tensor | ArrayLike] | InputChunks) -> InputChunks:
    return inputs if hasattr(inputs, "chunk") else _WholeInputs(inputs)  # type: ignore[arg-type,return-value]


def _as_f32(x: Tensor | ArrayLike) -> NDArray[np.float32]:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _differences(
    pos: NDArray[np.floating],
    cov: NDArray[np.floating],
    ref_pos: NDArray[np.floating],
    ref_cov: NDArray[np.floating],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per session: Euclidean position distance (m) and ``‖Σ − Σ_ref‖_F / ‖Σ_ref‖_F``."""
    dist = np.linalg.norm(pos.astype(np.float64) - ref_pos, axis=-1)
    rel = np.linalg.norm(cov.astype(np.float64) - ref_cov, axis=(-2, -1)) / np.linalg.norm(
        ref_cov, axis=(-2, -1)
    )
    return dist, rel


#: sessions per ONNX Runtime call: its arena keeps the largest call's buffers (a radio map's grow with it)
PARITY_CHUNK = 64


def parity_with_reference(
    path: Path,
    inputs: Sequence[Tensor | ArrayLike] | InputChunks,
    ref_position: ArrayLike,
    ref_covariance: ArrayLike,
    chunk_size: int = PARITY_CHUNK,
) -> dict[str, float]:
    """ONNX Runtime on raw ``inputs`` against reference positions (N, 2) and covariances (N, 2, 2).

    Returns ``max_position_diff_m``, ``median_position_diff_m``, ``max_covariance_rel_diff``,
    ``worst_session`` (index of the largest position difference) and ``n_sessions``.
    """
    session = ort_session(path)
    names = [i.name for i in session.get_inputs()]
    source = _chunks(inputs)
    ref_pos = np.asarray(ref_position, np.float64)
    ref_cov = np.asarray(ref_covariance, np.float64)
    n = source.n
    if ref_pos.shape != (n, 2) or ref_cov.shape != (n, 2, 2):
        raise ValueError(f"reference shapes {ref_pos.shape}, {ref_cov.shape} do not fit {n} sessions")
    dists, rels = [], []
    for start in range(0, n, chunk_size):
        chunk = [_as_f32(a) for a in source.chunk(start, start + chunk_size)]
        if len(chunk) != len(names):
            raise ValueError(f"the model takes inputs {names}, got {len(chunk)} arrays")
        pos, cov = session.run(list(OUTPUT_NAMES[:2]), dict(zip(names, chunk, strict=True)))
        end = start + len(chunk[0])
        dist, rel = _differences(pos, cov, ref_pos[start:end], ref_cov[start:end])
        dists.append(dist)
        rels.append(rel)
    dist, rel = np.concatenate(dists), np.concatenate(rels)
    return {
        "max_position_diff_m": float(dist.max()),
        "median_position_diff_m": float(np.median(dist)),
        "max_covariance_rel_diff": float(rel.max()),
        "worst_session": float(np.argmax(dist)),
        "n_sessions": float(n),
    }


def onnx_parity(
    path: Path,
    graph: InferenceGraph,
    inputs: Sequence[Tensor | ArrayLike] | InputChunks,
    chunk_size: int = PARITY_CHUNK,
) -> dict[str, float]:
    """Run ONNX Runtime and PyTorch on the same inputs (e.g. a whole test split, in chunks).

    ``max_position_diff_m``: largest Euclidean distance between the two positions (metres).
    ``max_covariance_rel_diff``: largest ``‖Σ_onnx − Σ_torch‖_F / ‖Σ_torch‖_F`` per session (a
    per-element ratio would blow up on near-zero off-diagonal terms). ``max_trust_diff``: largest
    ``|receiver_trust_onnx − receiver_trust_torch|`` (0 or 1 where a set-aside decision differs; NaN when
    the file has no ``receiver_trust`` output: contracts 1 and 2).
    """
    session = ort_session(path)
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    has_trust = TRUST_OUTPUT in outputs
    source = _chunks(inputs)
    n = source.n
    max_pos = max_cov = max_trust = 0.0
    graph.eval()
    for start in range(0, n, chunk_size):
        chunk = [_as_f32(a) for a in source.chunk(start, start + chunk_size)]
        if len(chunk) != len(names):
            raise ValueError(f"the model takes inputs {names}, got {len(chunk)} arrays")
        got = session.run(list(OUTPUT_NAMES[: 3 if has_trust else 2]), dict(zip(names, chunk, strict=True)))
        with torch.no_grad():
            want = [t.double().numpy() for t in graph(*(torch.from_numpy(c) for c in chunk))]
        dist, rel = _differences(got[0], got[1], want[0], want[1])
        max_pos = max(max_pos, float(np.max(dist)))
        max_cov = max(max_cov, float(np.max(rel)))
        if has_trust:
            max_trust = max(max_trust, float(np.max(np.abs(got[2] - want[2]), initial=0.0)))
    return {
        "max_position_diff_m": max_pos,
        "max_covariance_rel_diff": max_cov,
        "max_trust_diff": max_trust if has_trust else float("nan"),
        "n_sessions": float(n),
    }


def measure_latency(
    path: Path,
    single_inputs: Sequence[Tensor | ArrayLike],
    runs: int = 200,
    warmup: int = 20,
    threads: int = 1,
) -> dict[str, float]:
    """Wall time of one ONNX Runtime call on one core (``threads`` intra- and inter-op threads).

    ``single_inputs`` is one session (B=1); one ORT session is built per call, warmed up ``warmup``
    times, then ``runs`` calls are timed. Medians are reported because scheduler hiccups skew means.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    session = ort_session(path, threads=threads)
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(names, (_as_f32(x) for x in single_inputs), strict=True))
    for _ in range(warmup):
        session.run(None, feeds)
    times = np.empty(runs)
    for k in range(runs):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times[k] = time.perf_counter() - t0
    times_ms = times * 1e3
    return {
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "mean_ms": float(np.mean(times_ms)),
    }
