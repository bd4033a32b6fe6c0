"""``heimdall locate`` on bad input: one ``error:`` line naming the file, exit status 2, nothing written
and no data store created."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sigmf
from typer.testing import CliRunner

from heimdall.cli import app

runner = CliRunner()


def sigmf_pair(folder: Path, name: str = "rx1") -> Path:
    """A valid one-receiver SigMF recording (complex64, 12.5 kHz, with a position and a capture time)."""
    rng = np.random.default_rng(0)
    iq = (1e-7 * (rng.normal(size=1250) + 1j * rng.normal(size=1250))).astype("<c8")
    rec = sigmf.fromarray(iq)
    rec.set_global_info(
        {
            sigmf.SAMPLE_RATE_KEY: 12500.0,
            sigmf.GEOLOCATION_KEY: {"type": "Point", "coordinates": [7.69, 45.07]},
        }
    )
    rec.add_capture(0, {sigmf.FREQUENCY_KEY: 145.5e6, sigmf.DATETIME_KEY: "2025-05-01T12:00:00Z"})
    rec.tofile(folder / name, overwrite=True)
    return folder / f"{name}.sigmf-meta"


def npy_pair(folder: Path, array: np.ndarray, sidecar: dict | None) -> Path:
    np.save(folder / "rx.npy", array)
    if sidecar is not None:
        (folder / "rx.json").write_text(json.dumps(sidecar))
    return folder / "rx.npy"


SIDE = {"station_id": 3, "sample_rate_hz": 12500, "capture_start": "2025-05-01T12:00:00Z"}
GOOD_IQ = np.full(1250, 1e-7 + 1e-7j, np.complex64)


def _missing_data(d: Path) -> list[str]:
    meta = sigmf_pair(d)
    meta.with_suffix(".sigmf-data").unlink()
    return [str(meta)]


def _corrupt_meta(d: Path) -> list[str]:
    meta = sigmf_pair(d)
    meta.write_text('{"global": {')
    return [str(d)]


def _text_file(d: Path) -> list[str]:
    (d / "notes.txt").write_text("not IQ")
    return [str(d / "notes.txt")]


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing data file": (_missing_data, r"rx1\.sigmf-meta: its data file .*rx1\.sigmf-data is missing"),
    "corrupt meta": (_corrupt_meta, r"rx1\.sigmf-meta: metadata is not valid JSON"),
    "wrong dtype": (
        lambda d: [str(npy_pair(d, GOOD_IQ.real.copy(), SIDE))],
        r"rx\.npy: dtype float32, expected complex64 or complex128",
    ),
    "no sidecar": (lambda d: [str(npy_pair(d, GOOD_IQ, None))], r"rx\.npy: its sidecar rx\.json is missing"),
    "sidecar typo": (
        lambda d: [str(npy_pair(d, GOOD_IQ, {**SIDE, "samplerate": 1}))],
        r"rx\.json: unknown key\(s\) \['samplerate'\]",
    ),
    "sidecar without time zone": (
        lambda d: [str(npy_pair(d, GOOD_IQ, {**SIDE, "capture_start": "2025-05-01T12:00:00"}))],
        r"capture_start '2025-05-01T12:00:00' has no time zone",
    ),
    "all-zero IQ": (
        lambda d: [str(npy_pair(d, np.zeros(1250, np.complex64), SIDE))],
        r"rx\.npy: IQ recording is all zeros",
    ),
    "no such file": (lambda d: [str(d / "nothing.sigmf-meta")], r"nothing\.sigmf-meta: no such recording"),
    "empty folder": (lambda d: [str(d)], r"no recordings here"),
    "not a recording": (_text_file, r"notes\.txt: not a recording"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(case: str, embedded_env: Path, tmp_path: Path) -> None:
    make, message = CASES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    args = make(folder)
    before = sorted(p.name for p in folder.iterdir())
    result = runner.invoke(app, ["locate", *args, "--model", str(tmp_path / "no-model.onnx")])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and re.search(message, line), line
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    assert not embedded_env.exists()  # no data store


def test_bad_exclude_and_a_missing_model(embedded_env: Path, tmp_path: Path) -> None:
    meta = sigmf_pair(tmp_path)
    bad = runner.invoke(app, ["locate", str(meta), "--exclude", "3,x", "--model", str(tmp_path)])
    assert bad.exit_code == 2 and "--exclude '3,x': give station ids separated by commas" in bad.stderr
    missing = runner.invoke(app, ["locate", str(meta), "--model", str(tmp_path / "m.onnx")])
    assert missing.exit_code == 2 and missing.stdout == ""
    assert "m.onnx does not exist" in missing.stderr and len(missing.stderr.splitlines()) == 1
    assert not embedded_env.exists()
