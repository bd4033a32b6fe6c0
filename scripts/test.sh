#!/usr/bin/env bash
# The test command: set up .venv, lint, then run the suite with its coverage gate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd services/training
../../.venv/bin/ruff check src tests benchmarks
../../.venv/bin/python -m pytest tests/ --cov=heimdall --cov-report=term "$@"
