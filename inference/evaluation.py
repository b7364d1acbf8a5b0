"""Evaluates the committed classifier on any folder in the HAM10000 format.

A folder holds `images.tar` (members named `<image_id>.jpg`, any folder prefix ignored) and
`metadata.csv` with at least the columns `image_id` and `dx`; a `split` column is optional.
Images go through exactly the portal's path: JPEG bytes -> PIL -> inference.preprocessing
-> the ONNX model -> softmax(logits / T).

    python manage.py evaluate_model DATA_DIR [--split val] [--json OUT.json] [--predictions OUT.csv]
    python -m inference.evaluation DATA_DIR ...      # the same, without Django
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image

from inference.classifier import LesionClassifier, ModelLoadError, get_classifier
from inference.metrics import summarise


class EvaluationDataError(ValueError):
    """The data folder is not in the expected format."""


def decode_image(data: bytes) -> Image.Image:
    """JPEG (or any Pillow format) bytes -> PIL image, as an upload is opened in the portal."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def images_to_input(blobs: Sequence[bytes], classifier: LesionClassifier) -> np.ndarray:
    """Encoded images -> the model input, through the classifier's own preprocessing."""
    return classifier.preprocess([decode_image(b) for b in blobs])


def read_metadata_rows(data_dir: Path, split: str | None = None) -> list[dict[str, str]]:
    path = Path(data_dir) / "metadata.csv"
    if not path.is_file():
        raise EvaluationDataError(f"{path} not found: a data folder needs metadata.csv and images.tar")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing = [c for c in ("image_id", "dx") if c not in columns]
        if missing:
            raise EvaluationDataError(f"{path} lacks the column(s) {', '.join(missing)} (has: {', '.join(columns)})")
        if split is not None and "split" not in columns:
            raise EvaluationDataError(
                f"--split {split} was given but {path} has no 'split' column; leave out --split to use every row"
            )
        rows = [row for row in reader if split is None or row["split"] == split]
    if not rows:
        raise EvaluationDataError(f"{path} has no rows" + (f" with split == {split!r}" if split else ""))
    return rows


def read_images(data_dir: Path, image_ids: Sequence[str]) -> dict[str, bytes]:
    path = Path(data_dir) / "images.tar"
    if not path.is_file():
        raise EvaluationDataError(f"{path} not found: a data folder needs metadata.csv and images.tar")
    wanted = set(image_ids)
    found: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            image_id = Path(member.name).stem
            if image_id in wanted and image_id not in found:
                fh = tar.extractfile(member)
                assert fh is not None
                found[image_id] = fh.read()
    absent = [i for i in image_ids if i not in found]
    if absent:
        shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
        raise EvaluationDataError(f"{len(absent)} image(s) listed in metadata.csv are not in {path}: {shown}")
    return found


def evaluate(
    data_dir: str | Path,
    split: str | None = None,
    classifier: LesionClassifier | None = None,
    batch_size: int = 32,
) -> tuple[dict, list[str], np.ndarray]:
    """Runs the classifier over the folder; returns (metrics, image ids, N x C probabilities)."""
    data_dir = Path(data_dir)
    classifier = classifier or get_classifier()
    rows = read_metadata_rows(data_dir, split)
    unknown = sorted({r["dx"] for r in rows} - set(classifier.classes))
    if unknown:
        raise EvaluationDataError(
            f"labels {unknown} in {data_dir / 'metadata.csv'} are not model classes {classifier.classes}"
        )
    image_ids = [r["image_id"] for r in rows]
    blobs = read_images(data_dir, image_ids)
    labels = np.array([classifier.classes.index(r["dx"]) for r in rows])
    chunks = []
    for start in range(0, len(image_ids), batch_size):
        batch = images_to_input([blobs[i] for i in image_ids[start : start + batch_size]], classifier)
        chunks.append(classifier.predict_arrays(batch)[0])
    probabilities = np.concatenate(chunks)
    metrics = summarise(labels, probabilities, classifier.classes, threshold=classifier.alert_threshold)
    metrics["model"] = {"name": classifier.name, "version": classifier.version, "sha256": classifier.sha256}
    metrics["temperature"] = classifier.temperature
    metrics["data_dir"] = str(data_dir)
    metrics["split"] = split
    metrics["classes"] = list(classifier.classes)
    return metrics, image_ids, probabilities


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def format_report(metrics: dict) -> str:
    classes = metrics.get("classes") or list(metrics["per_class"])
    model = metrics.get("model", {})
    lines = []
    if model:
        lines.append(f"model      {model.get('name')} {model.get('version')} (sha256 {model.get('sha256', '')[:12]})")
    if "data_dir" in metrics:
        lines.append(
            f"data       {metrics['data_dir']}" + (f" split={metrics['split']}" if metrics.get("split") else "")
        )
    lines += [
        f"n                       {metrics['n']}",
        f"accuracy                {_f(metrics['accuracy'])}",
        f"balanced accuracy       {_f(metrics['balanced_accuracy'])}",
        f"macro F1                {_f(metrics['macro_f1'])}",
        f"malignant ROC AUC       {_f(metrics['malignant_auc'])}   (risk = P(mel)+P(bcc)+P(akiec) vs the rest)",
    ]
    if "threshold" in metrics:
        lines += [
            f"alert threshold         {metrics['threshold']:.4f}",
            f"melanoma sensitivity    {_f(metrics['melanoma_sensitivity'])}",
            f"melanoma specificity    {_f(metrics['melanoma_specificity'])}",
            f"malignant sensitivity   {_f(metrics['malignant_sensitivity'])}",
            f"alert rate              {_f(metrics['alert_rate'])}",
        ]
    lines.append(f"ECE (15 bins, top-1)    {_f(metrics['ece'], 4)}")
    lines += ["", f"{'class':<8}{'support':>8}{'precision':>11}{'recall':>8}"]
    for c in classes:
        pc = metrics["per_class"][c]
        lines.append(f"{c:<8}{pc['support']:>8}{_f(pc['precision']):>11}{_f(pc['recall']):>8}")
    width = max(6, *(len(c) for c in classes)) + 1
    lines += [
        "",
        "confusion matrix (rows: true, columns: predicted)",
        " " * width + "".join(f"{c:>{width}}" for c in classes),
    ]
    for c, row in zip(classes, metrics["confusion_matrix"], strict=True):
        lines.append(f"{c:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def write_predictions_csv(
    path: str | Path, image_ids: Sequence[str], probabilities: np.ndarray, classes: Sequence[str]
) -> None:
    if len(image_ids) != len(probabilities):
        raise ValueError(f"{len(image_ids)} image ids but {len(probabilities)} probability rows")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", *classes])
        for image_id, row in zip(image_ids, probabilities, strict=True):
            writer.writerow([image_id, *(f"{p:.6f}" for p in row)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, help="folder with images.tar and metadata.csv (image_id, dx[, split])")
    parser.add_argument("--split", default=None, help="only rows whose 'split' column equals this (e.g. val)")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="write the metrics as JSON here")
    parser.add_argument("--predictions", type=Path, default=None, help="write per-image probabilities (CSV) here")
    parser.add_argument("--batch-size", type=int, default=32)


def json_safe(value):
    """NaN (a class absent from the folder) -> null, so the JSON stays strict."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def run(
    data_dir: Path,
    split: str | None,
    json_out: Path | None,
    predictions: Path | None,
    batch_size: int,
    stdout: TextIO,
    classifier: LesionClassifier | None = None,
) -> dict:
    classifier = classifier or get_classifier()
    metrics, image_ids, probabilities = evaluate(data_dir, split=split, classifier=classifier, batch_size=batch_size)
    stdout.write(format_report(metrics) + "\n")
    if json_out is not None:
        json_out.write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False))
        stdout.write(f"metrics written to {json_out}\n")
    if predictions is not None:
        write_predictions_csv(predictions, image_ids, probabilities, classifier.classes)
        stdout.write(f"predictions written to {predictions}\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args.data_dir, args.split, args.json_out, args.predictions, args.batch_size, sys.stdout)
    except (EvaluationDataError, ModelLoadError) as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
