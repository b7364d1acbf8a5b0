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

from inference.classifier import LesionClassifier, sha256_file, softmax, tta_views
from inference.evaluation import decode_image, evaluate
from inference.metrics import CLASS_NAMES, MALIGNANT_CLASSES, malignancy_risk, summarise
from inference.preprocessing import PIXEL_MEAN, PIXEL_SCALE, Size, input_wh, to_model_input
from inference.training.data import read_image_bytes, read_metadata
from inference.training.model_card import write_model_card
from inference.training.network import EfficientNetLite0
from inference.training.train import CLASSES

MODEL_NAME = "dermatrack-lesion-classifier"
ONNX_FILE = "lesion_classifier.onnx"
METADATA_FILE = "lesion_classifier.json"
CAM_FILE = "lesion_classifier_cam.npy"
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
    "width",
    "height",
)


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


def ort_logits_tta(session, x: np.ndarray, kind: str, batch: int = 16) -> np.ndarray:
    """Mean logits over the test-time views, exactly as `LesionClassifier.predict_arrays` does."""
    if kind == "none":
        return ort_logits(session, x)
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        logits = session.run(["logits"], {"image": tta_views(xb, kind)})[0]
        out.append(logits.reshape(-1, len(xb), logits.shape[1]).mean(axis=0))
    return np.concatenate(out)


def export_onnx(model: EfficientNetLite0, path: Path, size: Size) -> None:
    width, height = input_wh(size)
    example = torch.from_numpy(np.zeros((2, 3, height, width), dtype=np.float32))
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


def preprocess(blobs: list[bytes], size: Size, colour_constancy: bool, batch: int = 128) -> np.ndarray:
    """Bytes -> model input through the portal's decode and preprocessing."""
    return np.concatenate(
        [
            to_model_input([decode_image(b) for b in blobs[i : i + batch]], size, colour_constancy)
            for i in range(0, len(blobs), batch)
        ]
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
    parser.add_argument(
        "--tta",
        choices=("auto", "none", "flips", "dihedral"),
        default="auto",
        help="test-time views the portal averages; calibration and threshold are fitted on them "
        "(auto: the 4 flips for a 4:3 input, none for model 1's square input)",
    )
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
        if not train_log.get("chosen_checkpoint"):
            raise SystemExit(f"{log_path} has no chosen_checkpoint (training unfinished?); pass --checkpoint")
        checkpoint = args.work / train_log["chosen_checkpoint"]
    train_args = train_log.get("args", {})
    # Model 2's training (--width/--height) always applies Shades of Gray; model 1's (--size) never did.
    if "width" in train_args:
        size: Size = (int(train_args["width"]), int(train_args["height"]))
        colour_constancy = True
    else:
        size, colour_constancy = int(train_args.get("size", 160)), False
    tta = args.tta if args.tta != "auto" else ("flips" if not isinstance(size, int) else "none")
    print(f"checkpoint {checkpoint}, input size {size}, colour constancy {colour_constancy}, TTA {tta}", flush=True)

    samples = read_metadata(args.data)
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    calib_samples = select_calibration(train, args.calibration_images, args.seed)
    images = read_image_bytes(args.data, {s.image_id for s in val} | {s.image_id for s in calib_samples})
    index = {c: i for i, c in enumerate(CLASSES)}
    labels = np.array([index[s.dx] for s in val])
    x_val = preprocess([images[s.image_id] for s in val], size, colour_constancy)
    x_cal = preprocess([images[s.image_id] for s in calib_samples], size, colour_constancy)
    print(f"{len(val)} validation images, {len(calib_samples)} calibration images preprocessed", flush=True)

    model = load_checkpoint(checkpoint, len(CLASSES))
    fp32_path = scratch / "lesion_classifier.fp32.onnx"
    export_onnx(model, fp32_path, size)
    fp32 = ort_session(fp32_path, threads)
    print("exported", fp32_path, flush=True)

    # fp32: calibrate first so that parity is also reported on calibrated probabilities.
    fp32_logits = ort_logits_tta(fp32, x_val, tta)
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
        int8_logits = ort_logits_tta(ort_session(int8_path, threads), x_val, tta)
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
    # What test-time augmentation adds: the same model on the single unflipped view, with its
    # own temperature and a threshold chosen by the same rule.
    single_logits = ort_logits(ort_session(kept_path, threads), x_val) if tta != "none" else kept_logits
    single_t = fit_temperature(single_logits, labels)
    single_probs = _probabilities(single_logits, single_t)
    single_threshold = choose_threshold(malignancy_risk(single_probs, CLASSES), is_mel, args.target_sensitivity)
    single_view = summarise(labels, single_probs, CLASSES, threshold=single_threshold)
    single_view.update(temperature=single_t)
    if validation["melanoma_sensitivity"] < args.required_sensitivity:
        raise RuntimeError(f"melanoma sensitivity {validation['melanoma_sensitivity']} below the requirement")

    onnx_out = args.out / ONNX_FILE
    cam_out = args.out / CAM_FILE
    shutil.copyfile(kept_path, onnx_out)
    # One plain array (no archive): C x (K + 1), the linear layer's weights then its bias column.
    np.save(
        cam_out,
        np.concatenate([model._fc.weight.detach().numpy(), model._fc.bias.detach().numpy()[:, None]], axis=1).astype(
            np.float32
        ),
        allow_pickle=False,
    )

    import onnx
    import onnxruntime
    import onnxscript

    epochs = train_log.get("epochs", [])
    reproduce_args = " ".join(
        f"--{k.replace('_', '-')} {train_args[k]}" for k in REPRODUCE_TRAIN_ARGS if k in train_args
    )
    if args.no_quantise:
        reproduce_args += " --no-quantise"
    width, height = input_wh(size)
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
        "input_size": size if isinstance(size, int) else [width, height],
        "colour_constancy": "shades_of_gray" if colour_constancy else "none",
        "tta": tta,
        "resize": "squash",
        "resample": "bilinear",
        "exif_transpose": True,
        "normalisation": {"mean": PIXEL_MEAN, "scale": PIXEL_SCALE},
        "outputs": {
            "logits": ["N", len(CLASSES)],
            "features": ["N", 1280, math.ceil(height / 32), math.ceil(width / 32)],
        },
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
        "validation_metrics_single_view": single_view,
        "parity": parity,
        "quantisation": quant,
        "training_data": describe_data(samples, args.data),
        "training": {
            "checkpoint": checkpoint.name,
            "checkpoint_sha256": sha256_file(checkpoint),
            "epochs_run": len(epochs),
            "best_smoothed_val_balanced_accuracy": train_log.get("best_smoothed_val_balanced_accuracy"),
            "wall_time_s": train_log.get("wall_time_s", epochs[-1]["elapsed_s"] if epochs else None),
            "finished": bool(train_log.get("finished", "chosen_checkpoint" in train_log)),
            "selection": train_log.get("selection", "best 3-epoch smoothed validation balanced accuracy"),
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
                        "val_recall",
                        "elapsed_s",
                    )
                    if k in e
                }
                for e in epochs
            ],
            "reproduce_command": (
                f"python -m inference.training.build --data {args.data} --version {args.version} {reproduce_args}"
            ).strip(),
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
    write_model_card(args.out)

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
