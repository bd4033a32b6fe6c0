"""Accuracy benchmarks of docs/EVALUATION.md, Targets in one command; writes benchmarks/RESULTS.md.

Run from the repository root:  .venv/bin/python services/training/benchmarks/accuracy.py
Stages (each skipped when its output exists; --force redoes them), all on the embedded default
under services/training/benchmarks/out/:
  1. simulate nw-italy-v2: 11,000 sessions (seed 101, train + validation), 2,000 (seed 202, test) and
     1,500 at the 15 fixed sites of scenarios/nw-italy-sites.csv (seed 303, the fixed-sites regime);
  2. train the ablation variants (3k sessions of the training label only) and choose the variant with
     the lowest *validation* RMSE — the benchmark's test set is never seen by that choice;
  3. train the final models (10k, 1k, 300, 100 uniform; the fixed sites, alone and fine-tuned from the
     10k model) with the chosen variant — each ships the localiser (network, radio map or fusion) that
     its validation chose — and evaluate each once on the same test set (the oracle, the outage study
     for 10k, the baselines tuned on validation, the calibration shipped in the model);
  4. import the vendored POWDER set, train + evaluate on its random and grid splits;
  5. write RESULTS.md with every table, the date, the machine and the exact commands.
The nw-italy-v1 figures of the previous code are kept verbatim in RESULTS-nw-italy-v1.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from heimdall.evaluate.report import EvaluationReport

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import Run, write_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = HERE / "out"
CONFIGS = HERE / "configs"
HEIMDALL = [str(ROOT / ".venv" / "bin" / "heimdall")]
POWDER_CSV = HERE.parent / "datasets" / "powder-462.7" / "single_tx.csv"  # vendored (MIT licence beside it)
SCENARIO = "nw-italy-v2"
DATA = [  # (label, seed, sessions)
    (f"sim:{SCENARIO}:train", 101, 11000),
    (f"sim:{SCENARIO}:test", 202, 2000),
]
#: the fixed-sites regime: 1,500 sessions at the 15 sites of this file (heimdall simulate --sites)
SITES = (
    HERE.parent / "src" / "heimdall" / "scenarios" / "nw-italy-sites.csv",
    f"sim:{SCENARIO}:sites",
    303,
    1500,
)
ABLATIONS = ("ablation-base", "ablation-spectrogram", "ablation-diagonal", "ablation-mean-pooling")
FINALS = {  # name: evaluate options (all evaluated on the same 2,000 uniform test sessions)
    "nw-italy-10k": {"outage": True, "oracle": True},
    "nw-italy-1k": {"outage": False, "oracle": True},
    "nw-italy-300": {"outage": False, "oracle": True},
    "nw-italy-100": {"outage": False, "oracle": True},
    "nw-italy-sites": {"outage": False, "oracle": True},
    "nw-italy-sites-finetune": {"outage": False, "oracle": True},
}
#: fine-tuned finals and the final whose model they start from (heimdall train --init-from)
INIT_FROM = {"nw-italy-sites-finetune": "nw-italy-10k"}
POWDER_RUNS = ("powder-random", "powder-grid")
COMMANDS: list[str] = []


def rel(p: Path) -> str:
    return os.path.relpath(p, ROOT)


def sh(args: list[str], run: bool = True) -> None:
    """Record the exact command (for RESULTS.md) and run it unless its output is already there."""
    shown = " ".join(rel(Path(a)) if os.path.isabs(a) else a for a in args)
    COMMANDS.append(
        f"HEIMDALL_DATA_DIR={rel(OUT / 'data')} {shown}" + ("" if run else "  # output present: reused")
    )
    print(f"$ {COMMANDS[-1]}", flush=True)
    if run:
        env = {**os.environ, "HEIMDALL_DATA_DIR": str(OUT / "data")}
        subprocess.run(args, check=True, env=env, cwd=ROOT)


def stage_data() -> None:
    for label, seed, n in DATA:
        sh(
            [
                *HEIMDALL,
                "simulate",
                "--scenario",
                SCENARIO,
                "--sessions",
                str(n),
                "--seed",
                str(seed),
                "--dataset",
                label,
                "--no-progress",
            ]
        )
    sites, label, seed, n = SITES
    sh([*HEIMDALL, "simulate", "--scenario", SCENARIO, "--sites", str(sites), "--sessions", str(n),
        "--seed", str(seed), "--dataset", label, "--no-progress"])  # fmt: skip
    if POWDER_CSV.is_file():
        sh([*HEIMDALL, "import", "powder", str(POWDER_CSV)])


def train(name: str, config: Path, force: bool) -> Run:
    model_dir = OUT / "models" / name
    args = [*HEIMDALL, "train", "--config", str(config), "--output-dir", str(model_dir)]
    sh([*args, "--no-progress", "--no-tracking"], run=force or not (model_dir / "report.json").is_file())
    return Run(name, json.loads((model_dir / "report.json").read_text()), None)


def evaluate(run: Run, outage: bool, oracle: bool, force: bool) -> Run:
    model_dir, eval_dir = OUT / "models" / run.name, OUT / "eval" / run.name
    args = [
        *HEIMDALL,
        "evaluate",
        "--model",
        str(model_dir),
        "--split",
        "test",
        "--output-dir",
        str(eval_dir),
    ]
    args += ["--outage", "--outage-sessions", "500"] if outage else ["--no-outage"]
    args += ["--oracle" if oracle else "--no-oracle"]
    sh(args, run=force or not (eval_dir / "evaluation.json").is_file())
    ev = EvaluationReport.model_validate(json.loads((eval_dir / "evaluation.json").read_text()))
    return Run(run.name, run.report, ev)


def validation_rmse(run: Run) -> float:
    return float(run.report["validation"]["rmse_m"])


def final_config(name: str, model_block: dict[str, Any]) -> Path:
    """The committed config with the model block of the variant chosen on validation (and init_from)."""
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    cfg["model"] = model_block
    if name in INIT_FROM:
        cfg["init_from"] = rel(OUT / "models" / INIT_FROM[name])
    path = OUT / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# generated by benchmarks/accuracy.py: configs/{name}.yaml + the model block chosen on validation\n"
        + yaml.safe_dump(cfg, sort_keys=False)
    )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="retrain and re-evaluate every stage")
    ap.add_argument("--no-powder", action="store_true", help="skip the POWDER stages")
    args = ap.parse_args()
    t0 = time.perf_counter()
    stage_data()
    ablations = [train(n, CONFIGS / f"{n}.yaml", args.force) for n in ABLATIONS]
    chosen = min(ablations, key=validation_rmse)
    model_block = yaml.safe_load((CONFIGS / f"{chosen.name}.yaml").read_text()).get("model", {})
    print(f"chosen on validation: {chosen.name} {model_block}", flush=True)
    finals = []
    for name, opts in FINALS.items():
        run = train(name, final_config(name, model_block), args.force)
        finals.append(evaluate(run, opts["outage"], opts["oracle"], args.force))
    powder = []
    if not args.no_powder and POWDER_CSV.is_file():
        for name in POWDER_RUNS:
            run = train(name, CONFIGS / f"{name}.yaml", args.force)
            powder.append(evaluate(run, outage=False, oracle=False, force=args.force))
    path = write_results(
        HERE,
        ROOT,
        elapsed_s=time.perf_counter() - t0,
        scenario=SCENARIO,
        ablations=ablations,
        chosen=chosen.name,
        model_block=model_block,
        finals=finals,
        powder=powder,
        commands=COMMANDS,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
