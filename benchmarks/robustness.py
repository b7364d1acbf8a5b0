"""Robustness of the committed classifier to synthetic device shifts (issue #10).

    python -m benchmarks.robustness [--data ../shared/data/ham10000] [--split val] [--json OUT.json]
                                    [--limit N] [--seed 0] [--threads 2]

Scores the validation split clean and under each shift of `inference.shifts.SHIFTS`
(dermatoscope vignette, white balance +-15 % both ways, blur, JPEG quality 30, half
resolution, rotation by 90 and 45 degrees) and prints, for each: the malignant-vs-benign AUC
(risk = calibrated P(mel)+P(bcc)+P(akiec), mel/bcc/akiec vs the rest), the melanoma-vs-nevus
AUC (P(mel), mel vs nv images only), each with its change from clean, and the alert rate at
the model's threshold. Goal: no shift costs more than 0.03 AUC.

Images go through the classifier's own `preprocess()` and `predict_arrays()`, so the table
is right for whatever model is committed (square model 1, 4:3 model 2 with colour constancy).
The shifts are fixed functions and `--limit` draws its subset with `--seed`, so a run is
reproduced exactly. `--json` writes the table for the model card generator
(`inference.training.model_card` reads inference/models/robustness.json):
{"model": {...}, "model_sha256", "description", "split", "n", "seed", "goal_max_auc_drop",
"rows": [{"shift", "description", "malignant_auc", "malignant_auc_drop", "melanoma_vs_nevus_auc",
"melanoma_vs_nevus_auc_drop", "alert_rate"}, ...]} (a drop is clean minus shifted: positive = worse).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `import inference` find the package, not this script
    _here = Path(__file__).resolve().parent
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np

from inference.classifier import LesionClassifier, ModelLoadError, default_metadata_path
from inference.evaluation import EvaluationDataError, decode_image, read_images, read_metadata_rows
from inference.metrics import MALIGNANT_CLASSES, roc_auc
from inference.shifts import DESCRIPTIONS, SHIFTS, apply_shift

GOAL_MAX_AUC_DROP = 0.03
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000"


def choose_rows(rows: list[dict[str, str]], limit: int, seed: int) -> list[dict[str, str]]:
    """All rows sorted by image id, or a seeded random `limit` of them (same seed, same subset)."""
    rows = sorted(rows, key=lambda r: r["image_id"])
    if limit and limit < len(rows):
        picked = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
        rows = [rows[i] for i in sorted(picked)]
    return rows


def predict_shifted(
    classifier: LesionClassifier, blobs: Sequence[bytes], shift: str, batch_size: int = 32
) -> np.ndarray:
    """N x C calibrated probabilities of the shifted images, through the classifier's preprocessing."""
    chunks = []
    for start in range(0, len(blobs), batch_size):
        images = [apply_shift(shift, decode_image(b)) for b in blobs[start : start + batch_size]]
        chunks.append(classifier.predict_arrays(classifier.preprocess(images))[0])
    return np.concatenate(chunks) if chunks else np.zeros((0, len(classifier.classes)), dtype=np.float32)


def score(probabilities: np.ndarray, dx: Sequence[str], classes: Sequence[str], threshold: float) -> dict:
    classes = list(classes)
    dx = np.asarray(dx)
    risk = probabilities[:, [classes.index(c) for c in MALIGNANT_CLASSES]].sum(axis=1)
    mel_nv = np.isin(dx, ("mel", "nv"))
    return {
        "malignant_auc": roc_auc(np.isin(dx, MALIGNANT_CLASSES), risk),
        "melanoma_vs_nevus_auc": roc_auc(dx[mel_nv] == "mel", probabilities[mel_nv, classes.index("mel")]),
        "alert_rate": float((risk >= threshold).mean()),
    }


def run(
    data_dir: Path,
    split: str,
    shifts: Sequence[str],
    limit: int = 0,
    seed: int = 0,
    classifier: LesionClassifier | None = None,
    batch_size: int = 32,
    progress=None,
) -> dict:
    classifier = classifier or LesionClassifier(default_metadata_path())
    rows = choose_rows(read_metadata_rows(data_dir, split), limit, seed)
    blobs_by_id = read_images(data_dir, [r["image_id"] for r in rows])
    blobs = [blobs_by_id[r["image_id"]] for r in rows]
    dx = [r["dx"] for r in rows]
    table = []
    clean = None
    for name in ["clean", *shifts]:
        started = time.perf_counter()
        probabilities = predict_shifted(classifier, blobs, name, batch_size)
        row = {
            "shift": name,
            "description": DESCRIPTIONS.get(name, ""),
            **score(probabilities, dx, classifier.classes, classifier.alert_threshold),
        }
        if clean is None:
            clean = row
        row["malignant_auc_drop"] = clean["malignant_auc"] - row["malignant_auc"]
        row["melanoma_vs_nevus_auc_drop"] = clean["melanoma_vs_nevus_auc"] - row["melanoma_vs_nevus_auc"]
        table.append(row)
        if progress is not None:
            progress(f"{name}: {time.perf_counter() - started:.1f} s")
    worst = max(table, key=lambda r: max(r["malignant_auc_drop"], r["melanoma_vs_nevus_auc_drop"]))
    return {
        "model": {"name": classifier.name, "version": classifier.version, "sha256": classifier.sha256},
        "model_sha256": classifier.sha256,
        "description": (
            f"Validation split ({len(rows)} images, {dx.count('mel')} melanomas) under fixed synthetic device shifts "
            "(`python -m benchmarks.robustness --json`); drop = clean AUC minus shifted AUC, positive = worse; "
            f"goal: no drop above {GOAL_MAX_AUC_DROP}. Worst: {worst['shift']} "
            f"({max(worst['malignant_auc_drop'], worst['melanoma_vs_nevus_auc_drop']):+.3f})."
        ),
        "data_dir": str(data_dir),
        "split": split,
        "n": len(rows),
        "n_malignant": int(np.isin(dx, MALIGNANT_CLASSES).sum()),
        "n_melanoma": dx.count("mel"),
        "n_nevus": dx.count("nv"),
        "seed": seed,
        "limit": limit,
        "goal_max_auc_drop": GOAL_MAX_AUC_DROP,
        "rows": table,
    }


def format_table(result: dict) -> str:
    model = result["model"]
    lines = [
        f"model {model['name']} {model['version']} (sha256 {model['sha256'][:12]}), split={result['split']}, "
        f"n={result['n']} ({result['n_malignant']} malignant, {result['n_melanoma']} mel, {result['n_nevus']} nv)",
        "",
        f"| {'shift':<20} | malignant AUC | drop   | mel-vs-nv AUC | drop   | alert rate |",
        f"|{'-' * 22}|---------------|--------|---------------|--------|------------|",
    ]
    for row in result["rows"]:
        flag = " !" if max(row["malignant_auc_drop"], row["melanoma_vs_nevus_auc_drop"]) > GOAL_MAX_AUC_DROP else ""
        lines.append(
            f"| {row['shift']:<20} | {row['malignant_auc']:>13.3f} | {row['malignant_auc_drop']:>+6.3f} "
            f"| {row['melanoma_vs_nevus_auc']:>13.3f} | {row['melanoma_vs_nevus_auc_drop']:>+6.3f} "
            f"| {row['alert_rate']:>10.3f} |{flag}"
        )
    worst = max(result["rows"], key=lambda r: max(r["malignant_auc_drop"], r["melanoma_vs_nevus_auc_drop"]))
    worst_drop = max(worst["malignant_auc_drop"], worst["melanoma_vs_nevus_auc_drop"])
    lines += [
        "",
        "drop = clean AUC minus shifted AUC (positive = worse); '!' marks a drop above the goal "
        f"of {GOAL_MAX_AUC_DROP:.2f}.",
        f"worst: {worst['shift']} ({worst_drop:+.3f}); goal {'met' if worst_drop <= GOAL_MAX_AUC_DROP else 'NOT met'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HAM10000-format folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--shifts", default=",".join(SHIFTS), help="comma-separated subset of: " + ", ".join(SHIFTS))
    parser.add_argument("--limit", type=int, default=0, help="score a seeded random subset of this many images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args(argv)
    shifts = [s for s in args.shifts.split(",") if s]
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown:
        parser.error(f"unknown shift(s) {unknown}; known: {', '.join(SHIFTS)}")
    try:
        classifier = LesionClassifier(default_metadata_path(), threads=args.threads)
        result = run(
            args.data,
            args.split,
            shifts,
            args.limit,
            args.seed,
            classifier,
            args.batch_size,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    except (EvaluationDataError, ModelLoadError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(format_table(result))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"table written to {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
