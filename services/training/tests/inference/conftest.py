"""Fixtures of the inference tests: one small IQ model and one briefly trained power-only model, exported."""

from __future__ import annotations

import pytest
from exported_models import Exported, export_iq_model, export_scalar_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="session")
def iq_model(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return export_iq_model(tmp_path_factory.mktemp("iq"))


@pytest.fixture(scope="session")
def scalar_model(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return export_scalar_model(tmp_path_factory.mktemp("scalars"))
