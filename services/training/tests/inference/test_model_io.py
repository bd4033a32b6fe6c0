"""Loading what a user hands us (truncated, foreign or absurd model files), and the permissions of what
we write."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from exported_models import CFG, NETWORK, Exported, scalar_example, tiny_graph

from heimdall.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    default_file_mode,
    removed_on_failure,
)
from heimdall.inference.contract import NotAHeimdallModelError
from heimdall.inference.graph import model_metadata
from heimdall.inference.localizer import OnnxLocalizer
from heimdall.inference.onnx_export import export_onnx
from heimdall.inference.publish import upload_model
from heimdall.storage.objectstore import FileObjectStore

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


# --------------------------------------------------------------------------------------------------------
# Loading what a user hands us, and the permissions of what we write
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def umask_002() -> Iterator[int]:
    """umask 002 for one test: the expected mode 0664 differs from mkstemp's 0600."""
    old = os.umask(0o002)
    try:
        yield 0o002
    finally:
        os.umask(old)


def test_exported_model_has_ordinary_permissions(tmp_path: Path, umask_002: int) -> None:
    path = export_onnx(
        tiny_graph(), scalar_example(), tmp_path / "model.onnx", model_metadata(NETWORK, CFG, "m")
    )
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask_002
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left


def test_atomic_writes_have_ordinary_permissions(tmp_path: Path, umask_002: int) -> None:
    target = tmp_path / "report.json"
    atomic_write_text(target, "{}")
    atomic_write_bytes(tmp_path / "blob", b"\x00")
    for p in (target, tmp_path / "blob"):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask_002
    assert default_file_mode() == 0o664
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "report.json"]


def test_removed_on_failure_only_removes_what_it_made(tmp_path: Path) -> None:
    made = tmp_path / "new" / "deeper"
    with pytest.raises(ValueError), removed_on_failure(made):
        made.mkdir(parents=True)
        (made / "partial.png").write_bytes(b"x")
        raise ValueError("late failure")
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "run"
    with pytest.raises(ValueError), removed_on_failure(kept, keep_files=True):
        (kept / "checkpoints").mkdir(parents=True)
        (kept / "empty").mkdir()
        (kept / "checkpoints" / "last.ckpt").write_bytes(b"weights")
        raise ValueError("failure after a checkpoint")
    left = [str(p.relative_to(kept)) for p in sorted(kept.rglob("*"))]
    assert left == ["checkpoints", "checkpoints/last.ckpt"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(ValueError), removed_on_failure(existing):
        (existing / "x").write_bytes(b"x")
        raise ValueError("boom")
    assert (existing / "x").exists()  # a folder that existed before is never removed
    with pytest.raises(ValueError, match="is not a directory"):
        check_output_dir(existing / "x" / "sub")


@pytest.mark.parametrize("kind", ["truncated", "random", "text", "empty"])
def test_unreadable_onnx_file_is_one_clear_error(scalar_model: Exported, tmp_path: Path, kind: str) -> None:
    good = scalar_model.path.read_bytes()
    data = {
        "truncated": good[: len(good) // 2],
        "random": np.random.default_rng(3).bytes(4096),
        "text": b"not a model\n",
        "empty": b"",
    }[kind]
    bad = tmp_path / "model.onnx"
    bad.write_bytes(data)
    with pytest.raises(NotAHeimdallModelError, match=rf"{bad}.* not a readable ONNX model") as err:
        OnnxLocalizer(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxLocalizer(tmp_path / "missing.onnx")
    if kind != "empty":  # an empty protobuf parses (as an empty model): the contract check refuses it
        with pytest.raises(NotAHeimdallModelError, match="not a readable ONNX model"):
            upload_model(FileObjectStore(tmp_path / "store"), "models", "m1", bad)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("n_receivers", str(10**9), "n_receivers=1000000000"),
        ("n_receivers", "seven", "malformed Heimdall metadata"),
        ("station_ids", "[1, 2", "malformed Heimdall metadata"),
        ("n_samples", str(10**12), "n_samples=1000000000000 is outside"),
    ],
)
def test_metadata_cannot_ask_for_absurd_inputs(
    scalar_model: Exported, tmp_path: Path, key: str, value: str, match: str
) -> None:
    proto = onnx.load(str(scalar_model.path))
    props = {p.key: p.value for p in proto.metadata_props}
    props[key] = value
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(NotAHeimdallModelError, match=match):
        OnnxLocalizer(path)
