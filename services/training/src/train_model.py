"""The seed's entry point, kept verbatim-compatible: `python services/training/src/train_model.py
--epochs 100 --batch_size 32 --learning_rate 1e-3 --output-dir ./models` runs `heimdall train`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the heimdall package beside this file

from heimdall.cli import app


def main(argv: list[str] | None = None) -> None:
    app(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
