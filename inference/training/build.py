"""The one command that rebuilds the committed model from the data.

    python -m inference.training.build --data ../shared/data/ham10000 [train options] [--skip-train]

1. trains EfficientNet-Lite0 (inference.training.train; every option it does not know itself is
   passed on to train, e.g. --epochs 22), or with --skip-train reuses the chosen checkpoint of
   <work>/train_log.json;
2. exports it (inference.training.export): temperature calibration, alert threshold, ONNX
   export, onnxruntime-vs-torch parity, int8 attempt, metadata, CAM weights and MODEL_CARD.md
   into --out (default inference/models), then re-evaluates the written model through the
   portal's code path.

Needs requirements/train.txt. Checkpoints and logs stay in --work (artifacts/, not committed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--work", type=Path, default=Path("artifacts/training"))
    parser.add_argument("--out", type=Path, default=Path("inference/models"))
    parser.add_argument("--skip-train", action="store_true", help="reuse <work>/train_log.json's chosen checkpoint")
    parser.add_argument("--version", default="1.0.0", help="model version written to the metadata")
    parser.add_argument("--export-threads", type=int, default=0, help="threads for export (0: all cores)")
    parser.add_argument("--no-quantise", action="store_true", help="export: skip the int8 attempt")
    args, train_args = parser.parse_known_args(argv)

    from inference.training import export, train

    if args.skip_train:
        log_path = args.work / "train_log.json"
        if not log_path.is_file():
            parser.error(f"--skip-train: {log_path} does not exist; run without --skip-train first")
        log = json.loads(log_path.read_text())
        if "chosen_checkpoint" not in log:
            parser.error(f"--skip-train: {log_path} has no chosen_checkpoint (training still running or interrupted)")
        if train_args:
            parser.error(f"--skip-train: training options {train_args} would be ignored")
        checkpoint = args.work / log["chosen_checkpoint"]
    else:
        checkpoint = train.main(["--data", str(args.data), "--work", str(args.work), *train_args])

    export_argv = [
        "--data",
        str(args.data),
        "--work",
        str(args.work),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(args.out),
        "--version",
        args.version,
        "--threads",
        str(args.export_threads),
    ]
    if args.no_quantise:
        export_argv.append("--no-quantise")
    return export.main(export_argv)


if __name__ == "__main__":
    main(sys.argv[1:])
