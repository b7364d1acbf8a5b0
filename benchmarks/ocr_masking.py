"""Does masking text for the model lower its accuracy? Validation images, four ways.

    python -m benchmarks.ocr_masking --data ../shared/data/ham10000 [--n 300] [--json OUT]

A seeded sample of the validation split, each image classified (the portal's path: PIL ->
preprocessing -> ONNX model) as

- `real`: as it is;
- `real, masked`: with whatever RapidOCR reads in it (rulers, scales) filled with the median
  colour, as the portal does (lesions/ocr.py);
- `labelled`: with a generated label or burnt-in overlay (inference/ocr_testset.render);
- `labelled, masked`: that, with the text RapidOCR found masked.

Prints accuracy, balanced accuracy and malignant AUC per condition, and how often something
was masked.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from inference.classifier import get_classifier
from inference.evaluation import decode_image, read_images, read_metadata_rows
from inference.metrics import summarise
from inference.ocr import RapidOcrEngine, mask_text
from inference.ocr_testset import available_fonts, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    rows = read_metadata_rows(args.data, split="val")
    random.Random(args.seed).shuffle(rows)
    rows = rows[: args.n]
    blobs = read_images(args.data, [r["image_id"] for r in rows])
    classifier = get_classifier()
    classes = list(classifier.classes)
    labels = np.array([classes.index(r["dx"]) for r in rows])
    engine = RapidOcrEngine()
    fonts = available_fonts()
    rng = random.Random(args.seed)
    conditions: dict[str, list] = {"real": [], "real, masked": [], "labelled": [], "labelled, masked": []}
    masked_real = masked_labelled = 0
    for i, row in enumerate(rows):
        real = decode_image(blobs[row["image_id"]]).convert("RGB")
        boxes = [b.box for b in engine.read(real).boxes]
        masked_real += bool(boxes)
        labelled, _truth = render(real, rng, fonts, scale=2)
        label_boxes = [b.box for b in engine.read(labelled).boxes]
        masked_labelled += bool(label_boxes)
        conditions["real"].append(real)
        conditions["real, masked"].append(mask_text(real, boxes))
        conditions["labelled"].append(labelled)
        conditions["labelled, masked"].append(mask_text(labelled, label_boxes))
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(rows)}", file=sys.stderr)
    results = {}
    for name, images in conditions.items():
        probabilities = np.concatenate(
            [classifier.predict(images[k : k + 32]) for k in range(0, len(images), 32)], axis=0
        )
        s = summarise(labels, probabilities, classes)
        results[name] = {k: s[k] for k in ("n", "accuracy", "balanced_accuracy", "malignant_auc")}
    print("| condition | n | accuracy | balanced accuracy | malignant AUC |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['malignant_auc']:.3f} |")
    n = len(rows)
    print(f"\nRapidOCR masked something on {masked_real}/{n} real and {masked_labelled}/{n} labelled images")
    results["masked_counts"] = {"real": masked_real, "labelled": masked_labelled, "n": len(rows)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
