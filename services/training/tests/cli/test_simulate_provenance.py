"""`heimdall simulate` stores its scenario: another content under a stored name is refused (exit 2)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from heimdall.cli import app
from heimdall.simulate import load_scenario

runner = CliRunner()
V2 = Path(__file__).resolve().parents[2] / "src" / "heimdall" / "scenarios" / "nw-italy-v2.yaml"


def _scenario(path: Path, description: str) -> Path:
    text = re.sub(r"(?m)^name: .*$", "name: my-v2", V2.read_text(encoding="utf-8"))
    text = re.sub(r"(?m)^description: >-\n(  .*\n)+", f"description: {description}\n", text)
    path.write_text(text, encoding="utf-8")
    return path


def test_renamed_content_is_refused_with_one_line(embedded_env: Path, tmp_path: Path) -> None:
    first = _scenario(tmp_path / "a.yaml", "first")
    args = ["simulate", "--sessions", "2", "--duration", "0.1", "--no-progress", "--scenario"]
    r = runner.invoke(app, [*args, str(first)])
    assert r.exit_code == 0, r.output
    # the same content with other comments and layout is the same scenario: a re-run, not a clash
    relaid = tmp_path / "b.yaml"
    relaid.write_text(
        "# a comment\n" + first.read_text(encoding="utf-8").replace(": ", ":   "), encoding="utf-8"
    )
    assert load_scenario(relaid).content_sha256 == load_scenario(first).content_sha256
    r = runner.invoke(app, [*args, str(relaid)])
    assert r.exit_code == 0 and "0 written, 2 already present" in r.output, r.output
    edited = _scenario(tmp_path / "c.yaml", "second")
    r = runner.invoke(app, [*args, str(edited)])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in r.output, r.output
    sha = load_scenario(first).content_sha256
    assert f"scenario 'my-v2' in this store has different content (sha {sha[:12]}" in errors[0]
    assert errors[0].endswith("rename your scenario")
