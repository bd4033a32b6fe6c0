#!/usr/bin/env bash
# The main job on the embedded default (SQLite + a local folder, no servers):
# set up .venv, simulate a small nw-italy-v2 dataset (realistic fading), train, export ONNX and evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HEIMDALL_DATA_DIR="${HEIMDALL_DATA_DIR:-heimdall-data}"
SESSIONS="${QUICKSTART_SESSIONS:-2000}"
.venv/bin/heimdall simulate --scenario nw-italy-v2 --sessions "$SESSIONS" --seed 7
.venv/bin/heimdall train --dataset sim:nw-italy-v2 --epochs "${QUICKSTART_EPOCHS:-40}" --batch-size 32 --learning-rate 1e-3 --output-dir models
.venv/bin/heimdall evaluate --model models --split test --output-dir models/evaluation
