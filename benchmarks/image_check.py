"""How well `inference.image_check` tells images it cannot judge from validation images (issue #10).

    python -m benchmarks.image_check [--data ../shared/data/ham10000] [--bad-captures 100] [--seed 0]
                                     [--threads 2] [--json OUT.json]

Negatives: every validation image (they must pass: goal <= 2 % refused).
Positives (must be refused), all built here, deterministically:
- natural photographs shipped with scikit-image (astronaut, coffee, chelsea, rocket, retina, ...),
  each whole and as two crops (a phone photo is rarely framed like the original);
- generated documents: text pages, forms and tables on white or cream paper, some with a
  coloured header;
- synthetic bad captures of `--bad-captures` seeded validation images: very dark (x0.15),
  overexposed (x3, clipped), heavily blurred (Gaussian radius 4 px of 200 x 150).
`--json` writes the report; saved as inference/models/image_check_report.json it goes into the
model card (`python -m inference.training.model_card`). Prints, per group: n, share refused,
the reasons given and the AUROC of `ImageCheckResult.score`
against the validation split; then the AUROC of all positives together (goal >= 0.95).
Extra rows (not positives): seeded validation images under the robustness shifts, to show how
often a device difference alone gets an image refused.
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
import random
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from inference.classifier import LesionClassifier, ModelLoadError, default_metadata_path
from inference.evaluation import EvaluationDataError, decode_image, read_images, read_metadata_rows
from inference.image_check import ImageChecker
from inference.metrics import roc_auc
from inference.shifts import apply_shift, blur, brightness

GOAL_AUROC = 0.95
GOAL_MAX_REFUSED = 0.02
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000"
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "camera",
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
    "coins",
    "horse",
    "logo",
    "cell",
    "clock",
    "moon",
)
EXTRA_SHIFTS = ("vignette", "white_balance_cool", "blur_2px", "jpeg_q30", "rotate_45")


def natural_photographs() -> list[tuple[str, Image.Image]]:
    import skimage.data

    out = []
    for name in SKIMAGE_PHOTOS:
        try:
            arr = np.asarray(getattr(skimage.data, name)())
        except Exception:
            continue
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        image = Image.fromarray(arr[..., :3].astype(np.uint8), "RGB")
        w, h = image.size
        out.append((name, image))
        out.append((f"{name}/centre", image.crop((w // 5, h // 5, w - w // 5, h - h // 5))))
        out.append((f"{name}/corner", image.crop((0, 0, w * 3 // 5, h * 3 // 5))))
    return out


def documents(n: int, seed: int) -> list[tuple[str, Image.Image]]:
    rng = random.Random(seed)
    font = ImageFont.load_default()
    words = [
        "patient",
        "lesion",
        "follow-up",
        "referral",
        "clinic",
        "dermatology",
        "report",
        "date",
        "signature",
        "result",
    ]
    out = []
    for i in range(n):
        w, h = rng.choice([(620, 877), (877, 620), (400, 300), (800, 600)])
        paper = rng.choice([(255, 255, 255), (250, 247, 238), (242, 242, 242)])
        image = Image.new("RGB", (w, h), paper)
        draw = ImageDraw.Draw(image)
        y = 20
        if rng.random() < 0.5:  # a coloured letterhead
            colour = tuple(rng.randint(0, 200) for _ in range(3))
            draw.rectangle((0, 0, w, rng.randint(40, 90)), fill=colour)
            y = 100
        ink = rng.choice([(0, 0, 0), (20, 30, 90), (60, 60, 60)])
        while y < h - 20:
            if rng.random() < 0.15:  # a table row
                for x in range(20, w - 20, rng.randint(60, 140)):
                    draw.rectangle((x, y, x + 50, y + 18), outline=ink)
            else:
                line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
                draw.text((20, y), line, fill=ink, font=font)
            y += rng.randint(14, 24)
        out.append((f"document {i}", image))
    return out


def _reasons(codes: list[list[str]]) -> str:
    counts = Counter(c for cs in codes for c in cs)
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def bad_captures(val: list[tuple[str, Image.Image]], n: int, seed: int) -> dict[str, list[tuple[str, Image.Image]]]:
    picked = [
        val[i] for i in sorted(np.random.default_rng(seed).choice(len(val), size=min(n, len(val)), replace=False))
    ]
    return {
        "very dark (x0.15)": [(i, brightness(im, 0.15)) for i, im in picked],
        "overexposed (x3)": [(i, brightness(im, 3.0)) for i, im in picked],
        "heavily blurred (r=4)": [(i, blur(im, 4.0)) for i, im in picked],
    }


def run(data_dir: Path, bad_n: int, seed: int, classifier: LesionClassifier) -> dict:
    checker = ImageChecker(classifier)
    rows = sorted(read_metadata_rows(data_dir, "val"), key=lambda r: r["image_id"])
    blobs = read_images(data_dir, [r["image_id"] for r in rows])
    val = [(r["image_id"], decode_image(blobs[r["image_id"]])) for r in rows]
    groups: dict[str, list[tuple[str, Image.Image]]] = {
        "natural photographs (skimage)": natural_photographs(),
        "documents (generated)": documents(30, seed),
        **bad_captures(val, bad_n, seed),
    }
    picked = [
        val[i]
        for i in sorted(np.random.default_rng(seed + 1).choice(len(val), size=min(bad_n, len(val)), replace=False))
    ]
    extra = {f"val + {s}": [(i, apply_shift(s, im)) for i, im in picked] for s in EXTRA_SHIFTS}

    def assess(items):
        results = checker.check_batch([im for _, im in items])
        return np.array([r.score for r in results]), [r.codes for r in results]

    val_scores, val_codes = assess(val)
    table = [
        {
            "group": "validation split (must pass)",
            "role": "negative",
            "n": len(val),
            "refused": float(np.mean([bool(c) for c in val_codes])),
            "auroc_vs_validation": "-",
            "reasons": _reasons(val_codes),
        }
    ]
    not_refused: dict[str, list[str]] = {}
    all_pos = []
    for role, source in (("positive", groups), ("shifted", extra)):
        for name, items in source.items():
            scores, codes = assess(items)
            if role == "positive":
                all_pos.append(scores)
            labels = np.r_[np.zeros(len(val_scores)), np.ones(len(scores))]
            table.append(
                {
                    "group": name,
                    "role": role,
                    "n": len(items),
                    "refused": float(np.mean([bool(c) for c in codes])),
                    "auroc_vs_validation": roc_auc(labels, np.r_[val_scores, scores]),
                    "reasons": _reasons(codes),
                }
            )
            if role == "positive":
                not_refused[name] = [i for (i, _), c in zip(items, codes, strict=True) if not c]
    pos = np.concatenate(all_pos)
    overall = roc_auc(np.r_[np.zeros(len(val_scores)), np.ones(len(pos))], np.r_[val_scores, pos])
    return {
        "model": {"name": classifier.name, "version": classifier.version, "sha256": classifier.sha256},
        "model_checks_used": checker.model_checks_used,
        "notes": checker.notes,
        "seed": seed,
        "n_positive": len(pos),
        "auroc_all_positives": overall,
        "validation_refused": table[0]["refused"],
        "not_refused": not_refused,
        "model_sha256": classifier.sha256,
        "description": (
            f"`python -m benchmarks.image_check` (seed {seed}): all {len(pos)} images that must be refused "
            f"(photographs, documents, bad captures) against the {len(val)} validation images: AUROC {overall:.3f} "
            f"(goal >= {GOAL_AUROC}); validation images refused {table[0]['refused']:.1%} (goal <= "
            f"{GOAL_MAX_REFUSED:.0%}). Rows marked 'shifted' are validation images under a device shift, shown "
            "for how often a shift alone is refused."
            + ("" if checker.model_checks_used else " Out-of-distribution check OFF: " + "; ".join(checker.notes))
        ),
        "goal_auroc": GOAL_AUROC,
        "goal_max_refused": GOAL_MAX_REFUSED,
        "rows": table,
    }


def format_table(result: dict) -> str:
    model = result["model"]
    lines = [
        f"model {model['name']} {model['version']} (sha256 {model['sha256'][:12]}); "
        f"out-of-distribution check {'on' if result['model_checks_used'] else 'OFF'}",
        *[f"note: {n}" for n in result["notes"]],
        "",
        f"| {'group':<30} | {'n':>5} | refused | AUROC vs val | reasons given |",
        f"|{'-' * 32}|-------|---------|--------------|---------------|",
    ]
    for row in result["rows"]:
        auroc = row["auroc_vs_validation"]
        auroc = auroc if isinstance(auroc, str) else f"{auroc:.3f}"
        reasons = row["reasons"]
        label = row["group"] + (" *" if row["role"] == "shifted" else "")
        lines.append(f"| {label:<30} | {row['n']:>5} | {row['refused']:>6.1%} | {auroc:>12} | {reasons} |")
    ok_auc = result["auroc_all_positives"] >= GOAL_AUROC
    ok_ref = result["validation_refused"] <= GOAL_MAX_REFUSED
    lines += [
        "",
        f"all {result['n_positive']} positives vs validation: AUROC {result['auroc_all_positives']:.3f} "
        f"(goal >= {GOAL_AUROC}: {'met' if ok_auc else 'NOT met'}); validation refused "
        f"{result['validation_refused']:.1%} (goal <= {GOAL_MAX_REFUSED:.0%}: {'met' if ok_ref else 'NOT met'})",
        "* not positives: validation images under a device shift (how often a shift alone is refused)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--bad-captures", type=int, default=100, help="validation images per bad-capture kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        result = run(
            args.data, args.bad_captures, args.seed, LesionClassifier(default_metadata_path(), threads=args.threads)
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
