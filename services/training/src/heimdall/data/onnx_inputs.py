"""Raw model inputs as the inference service would feed them: IQ (or row scalars) plus a mask."""

from __future__ import annotations

import numpy as np
import torch

from heimdall.data.arrays import SessionArrays
from heimdall.errors import DataError
from heimdall.features import iq_complex_to_real
from heimdall.services import Services
from heimdall.storage.iq import load_iq
from heimdall.storage.queries import get_session


def onnx_inputs_for(
    services: Services, arrays: SessionArrays, indices: np.ndarray, from_iq: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(iq (B,R,2,T) or raw scalars (B,R,4), receiver_mask (B,R) float32) for the given sessions."""
    mask = torch.from_numpy(arrays.mask[indices].astype(np.float32))
    if not from_iq:
        return torch.from_numpy(arrays.scalars[indices].astype(np.float32)), mask
    index = arrays.network.index()
    batch: np.ndarray | None = None
    for b, i in enumerate(indices):
        session = get_session(services.db, arrays.session_ids[i])
        for m in session.measurements:
            loc = m.iq_bucket_key
            if loc is None or not arrays.mask[i, index[m.station_id]]:
                continue
            iq = load_iq(
                services.store,
                *loc,
                m.iq_samples_count,
                context=f"session {session.id}, station {m.station_id}",
            )
            if batch is None:
                batch = np.zeros((len(indices), arrays.network.size, 2, iq.size), np.float32)
            batch[b, index[m.station_id]] = iq_complex_to_real(iq)
    if batch is None:
        raise DataError(
            "no IQ recordings found for the requested sessions: an IQ model needs sessions with IQ "
            "(power-only sessions, e.g. POWDER, need a power-only model)"
        )
    return torch.from_numpy(batch), mask
